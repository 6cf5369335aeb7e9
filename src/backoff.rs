//! Exponential backoff with jitter, as a pure function so it is testable
//! without sleeping. Used for S3 part retries, webhook deliveries and
//! dropping a database after a restore.

use std::time::Duration;

/// Delay before retry number `retry` (0 = the first retry): `base * 2^retry`,
/// capped at `max`, plus up to 25 % jitter (`jitter` in 0..1). The jitter is
/// added, never subtracted, so successive gaps always grow until the cap.
pub fn delay(retry: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX));
    let capped = exp.min(max);
    capped + capped.mul_f64(jitter.clamp(0.0, 1.0) * 0.25)
}

/// `delay` with a random jitter.
pub fn jittered(retry: u32, base: Duration, max: Duration) -> Duration {
    delay(retry, base, max, rand::random::<f64>())
}

/// How often and how patiently to retry one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Retries after the first attempt.
    pub retries: u32,
    pub base: Duration,
    pub max: Duration,
}

/// The one retry loop: runs `op` until it succeeds, fails with an error
/// `retryable` rejects, or `policy.retries` retries are spent. `on_retry`
/// sees each error before its jittered wait (for a log line).
pub async fn retry<T, E, Fut>(
    policy: Policy,
    op: impl FnMut() -> Fut,
    retryable: impl Fn(&E) -> bool,
    on_retry: impl FnMut(&E, u32, Duration),
) -> Result<T, E>
where
    Fut: std::future::Future<Output = Result<T, E>>,
{
    retry_at_least(policy, op, retryable, |_| Duration::ZERO, on_retry).await
}

/// [`retry`], where the wait after an error lasts at least `min_wait` of
/// it (a server's Retry-After); `on_retry` sees the wait actually taken.
pub async fn retry_at_least<T, E, Fut>(
    policy: Policy,
    mut op: impl FnMut() -> Fut,
    retryable: impl Fn(&E) -> bool,
    min_wait: impl Fn(&E) -> Duration,
    mut on_retry: impl FnMut(&E, u32, Duration),
) -> Result<T, E>
where
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < policy.retries && retryable(&e) => {
                let wait = jittered(attempt, policy.base, policy.max).max(min_wait(&e));
                on_retry(&e, attempt + 1, wait);
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        retries: 3,
        base: Duration::from_secs(1),
        max: Duration::from_secs(10),
    };

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_then_gives_up() {
        let mut calls = 0;
        let mut waits = Vec::new();
        let r: Result<(), &str> = retry(
            P,
            || {
                calls += 1;
                async { Err("503") }
            },
            |_| true,
            |_, n, w| waits.push((n, w)),
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 4, "the first attempt and three retries");
        assert_eq!(waits.iter().map(|w| w.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(waits[2].1 >= 4 * S && waits[2].1 <= 5 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_success_or_a_permanent_error() {
        let mut calls = 0;
        let r: Result<u32, &str> = retry(
            P,
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 2 {
                        Err("blip")
                    } else {
                        Ok(n)
                    }
                }
            },
            |_| true,
            |_, _, _| {},
        )
        .await;
        assert_eq!(r, Ok(2));
        let mut calls = 0;
        let r: Result<(), &str> = retry(
            P,
            || {
                calls += 1;
                async { Err("403") }
            },
            |e| *e != "403",
            |_, _, _| {},
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_minimum_wait_lengthens_only_shorter_waits() {
        let mut waits = Vec::new();
        let r: Result<(), u64> = retry_at_least(
            P,
            || async { Err(3) },
            |_| true,
            |e| Duration::from_secs(*e),
            |_, _, w| waits.push(w),
        )
        .await;
        assert_eq!(r, Err(3));
        assert_eq!(waits[0], 3 * S, "1 s backoff, 3 s asked for");
        assert_eq!(waits[1], 3 * S, "2 s backoff, 3 s asked for");
        assert!(
            waits[2] >= 4 * S && waits[2] <= 5 * S,
            "4 s backoff is longer"
        );
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_from_base() {
        let d: Vec<_> = (0..4).map(|r| delay(r, 2 * S, 60 * S, 0.0)).collect();
        assert_eq!(d, vec![2 * S, 4 * S, 8 * S, 16 * S]);
    }

    #[test]
    fn jitter_adds_at_most_a_quarter_and_gaps_still_grow() {
        assert_eq!(delay(0, 4 * S, 60 * S, 1.0), 5 * S);
        for r in 0..4 {
            assert!(delay(r, S, 60 * S, 1.0) < delay(r + 1, S, 60 * S, 0.0));
        }
    }

    #[test]
    fn capped_and_never_overflows() {
        assert_eq!(delay(40, S, 30 * S, 0.0), 30 * S);
        assert_eq!(delay(u32::MAX, Duration::MAX, 30 * S, 0.0), 30 * S);
        assert_eq!(delay(3, Duration::ZERO, 30 * S, 1.0), Duration::ZERO);
    }
}
