//! Presigned GET URLs: a backup fetched with curl, no S3 tool or credentials.

use std::time::Duration;

use crate::error::{JobError, Stage};
use crate::storage::{ObjectStore, Presigned};

/// SigV4 presigned URLs live at most 7 days.
pub const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses `90s`, `30m`, `1h`, `7d`, or combinations like `1h30m`.
pub fn parse_expiry(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty; use e.g. 30m, 1h or 7d".into());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => {
                return Err(format!(
                    "{s:?}: unknown unit {ch:?}; use s, m, h or d (e.g. 30m, 1h, 7d)"
                ))
            }
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: a number must come before {ch:?} (e.g. 30m, 1h, 7d)"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        num.clear();
    }
    if !num.is_empty() {
        return Err(format!(
            "{s:?}: the number needs a unit: s, m, h or d (e.g. {num}m)"
        ));
    }
    let d = Duration::from_secs(total);
    if d.is_zero() {
        return Err(format!("{s:?} is zero"));
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
        for bad in ["", "8d", "169h", "1x", "10", "h", "0m", "-1h", "1.5h"] {
            assert!(parse_expiry(bad).is_err(), "{bad}");
        }
    }
}
