//! Presigned GET URLs: a backup fetched with curl, no S3 tool or credentials.

use std::time::Duration;

use crate::error::{JobError, Stage};
use crate::storage::{ObjectStore, Presigned};

/// SigV4 presigned URLs live at most 7 days.
pub const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses `90s`, `30m`, `1h`, `7d`, or combinations like `1h30m` (any
/// duration `humantime` reads, in whole numbers and whole seconds).
pub fn parse_expiry(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty; use e.g. 30m, 1h or 7d".into());
    }
    if s.contains('.') {
        return Err(format!(
            "{s:?}: whole numbers only; combine units instead (e.g. 1h30m)"
        ));
    }
    let d = humantime::parse_duration(s).map_err(|e| match e {
        humantime::DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => {
            format!("{s:?}: the number needs a unit: s, m, h or d (e.g. {value}m)")
        }
        e => format!("{s:?}: {e}; use e.g. 30m, 1h or 7d"),
    })?;
    if d.is_zero() {
        return Err(format!("{s:?} is zero"));
    }
    if d.subsec_nanos() != 0 {
        return Err(format!("{s:?}: a presigned URL expires in whole seconds"));
    }
    if d > MAX_EXPIRY {
        return Err(format!(
            "{s:?} is longer than 7d, the most an S3 presigned URL allows"
        ));
    }
    Ok(d)
}

/// A URL that GETs `key` until `expires` from now; for local storage, the
/// file's absolute path.
pub async fn presign(
    storage: &dyn ObjectStore,
    key: &str,
    expires: Duration,
) -> Result<String, JobError> {
    match storage.presign(key, expires).await {
        Ok(Presigned::Url(u)) => Ok(u),
        Ok(Presigned::Path(p)) => Ok(p.display().to_string()),
        Err(e) => Err(JobError::storage(Stage::Restore, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries() {
        assert_eq!(parse_expiry("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_expiry("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_expiry("7d").unwrap(), MAX_EXPIRY);
        assert_eq!(parse_expiry("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_expiry(" 90s ").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_expiry("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_expiry("1d12h").unwrap(), Duration::from_secs(129_600));
        assert_eq!(parse_expiry("1w").unwrap(), MAX_EXPIRY);
        for bad in [
            "", "8d", "169h", "1x", "10", "0", "h", "0m", "-1h", "1.5h", "500ms", "1s500ms", "1M",
        ] {
            assert!(parse_expiry(bad).is_err(), "{bad}");
        }
        assert!(parse_expiry("10").unwrap_err().contains("needs a unit"));
    }
}
