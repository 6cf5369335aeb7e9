//! Object names: `<prefix><YYYY-MM-DD_HH-MM-SS>.<ext>[.age]`, UTC.
//!
//! Only names of exactly this shape under the prefix are ever listed,
//! restored or deleted; anything else in the bucket is left alone.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::config::{Compression, Format};

const TS_FORMAT: &str = "%Y-%m-%d_%H-%M-%S";
const TS_LEN: usize = 19;

/// The extensions a backup may carry, longest first.
const EXTS: [(&str, Format, &str); 6] = [
    (".dump.zst", Format::Custom, "zstd"),
    (".dump.gz", Format::Custom, "gzip"),
    (".sql.zst", Format::Plain, "zstd"),
    (".sql.gz", Format::Plain, "gzip"),
    (".dump", Format::Custom, "none"),
    (".sql", Format::Plain, "none"),
];

pub fn object_name(prefix: &str, at: DateTime<Utc>, format: Format, c: Compression) -> String {
    format!(
        "{prefix}{}.{}{}",
        at.format(TS_FORMAT),
        format.ext(),
        c.ext()
    )
}

/// What a backup's name says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName {
    pub time: DateTime<Utc>,
    pub format: Format,
    /// `zstd`, `gzip` or `none`.
    pub compression: &'static str,
    /// Encrypted with age (the name ends in `.age`).
    pub encrypted: bool,
}

/// Parses a full key; `None` for anything that is not one of our backups.
pub fn parse(prefix: &str, key: &str) -> Option<ParsedName> {
    let rest = key.strip_prefix(prefix)?;
    if rest.len() < TS_LEN || !rest.is_char_boundary(TS_LEN) {
        return None;
    }
    let (ts, ext) = rest.split_at(TS_LEN);
    let (ext, encrypted) = match ext.strip_suffix(crate::crypto::SUFFIX) {
        Some(e) => (e, true),
        None => (ext, false),
    };
    let (_, format, compression) = EXTS.iter().find(|(e, _, _)| *e == ext)?;
    let time = NaiveDateTime::parse_from_str(ts, TS_FORMAT).ok()?.and_utc();
    // Reject non-canonical spellings that chrono would accept.
    if time.format(TS_FORMAT).to_string() != ts {
        return None;
    }
    Some(ParsedName {
        time,
        format: *format,
        compression,
        encrypted,
    })
}

/// What follows a local backup's name in its sidecar's name.
pub const SIDECAR_SUFFIX: &str = ".sha256";

/// Companion file of a local backup holding its sha256 (sha256sum format).
pub fn sidecar_name(key: &str) -> String {
    format!("{key}{SIDECAR_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 25, 3, 0, 0).unwrap()
    }

    #[test]
    fn names_match_the_contract() {
        let n = object_name("backup_", t(), Format::Custom, Compression::DEFAULT);
        assert_eq!(n, "backup_2026-01-25_03-00-00.dump.zst");
        let n = object_name("db/x_", t(), Format::Plain, Compression::Gzip { level: 6 });
        assert_eq!(n, "db/x_2026-01-25_03-00-00.sql.gz");
        assert_eq!(
            object_name("", t(), Format::Plain, Compression::None),
            "2026-01-25_03-00-00.sql"
        );
    }

    #[test]
    fn parse_round_trips() {
        for f in [Format::Custom, Format::Plain] {
            for c in [
                Compression::DEFAULT,
                Compression::Gzip { level: 1 },
                Compression::None,
            ] {
                let n = object_name("p/backup_", t(), f, c);
                let p = parse("p/backup_", &n).unwrap();
                assert_eq!((p.time, p.format, p.compression), (t(), f, c.as_str()));
                assert!(!p.encrypted);
                let sealed = parse("p/backup_", &format!("{n}.age")).unwrap();
                assert_eq!((sealed.time, sealed.format), (t(), f));
                assert!(sealed.encrypted);
            }
        }
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for key in [
            "backup_latest.sql.gz",
            "notes.txt",
            "backup_2026-01-25_03-00-00.dump.zst.sha256",
            "backup_2026-01-25_03-00-00.tar",
            "backup_2026-1-25_03-00-00.dump",
            "backup_2026-13-25_03-00-00.dump",
            "other_2026-01-25_03-00-00.dump",
            "backup_2026-01-25_03-00-00.dump.zst.partial",
            "backup_sub/2026-01-25_03-00-00.dump",
            "backup_2026-01-25_03-00-00",
            "backup_2026-01-25_03-00-0é.dump",
            "backup_2026-01-25_03-00-00.age",
            "backup_2026-01-25_03-00-00.dump.age.age",
            "backup_2026-01-25_03-00-00.dump.zst.age.sha256",
            "backup_2026-01-25_03-00-00.dump.age.zst",
        ] {
            assert_eq!(parse("backup_", key), None, "{key}");
        }
    }
}
