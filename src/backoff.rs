//! Exponential backoff with jitter, as a pure function so it is testable
//! without sleeping. Used for S3 part retries and webhook deliveries.

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

#[cfg(test)]
mod tests {
    use super::*;

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
