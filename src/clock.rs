//! Wall-clock time, injectable. The daemon, retention and health read the
//! time through a [`Clock`]: in production the system clock, in tests a
//! clock that follows tokio's (paused) time, so schedules, catch-up runs
//! and health rules are tested in milliseconds without sleeping.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time that moves with tokio's clock from a chosen start, plus any
/// jumps a test makes (a suspended machine, an NTP step).
#[derive(Debug)]
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
    jumped: Mutex<chrono::Duration>,
}

impl TokioClock {
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
            jumped: Mutex::new(chrono::Duration::zero()),
        }
    }

    /// Moves the wall clock without any time passing for timers.
    pub fn jump(&self, by: chrono::Duration) {
        *self.jumped.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.start.elapsed()).unwrap_or_default();
        self.base + elapsed + *self.jumped.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_time_and_jumps() {
        let base = DateTime::parse_from_rfc3339("2026-01-25T02:59:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let c = TokioClock::starting_at(base);
        assert_eq!(c.now(), base);
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(c.now(), base + chrono::Duration::seconds(90));
        c.jump(chrono::Duration::days(2));
        assert_eq!(
            c.now(),
            base + chrono::Duration::days(2) + chrono::Duration::seconds(90)
        );
    }
}
