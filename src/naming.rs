//! Object names: `<prefix><YYYY-MM-DD_HH-MM-SS>.<ext>[.age]`, UTC.
//!
//! Only names of exactly this shape under the prefix are ever listed,
//! restored or deleted; anything else in the bucket is left alone. The one
//! other shape read is the Railway template's (see [`parse_template`]),
//! whose old backups a user switching to pgbackup must still be able to
//! restore.

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

/// `YYYY-MM-DD_HH-MM-SS`, as every name of ours spells a time.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.format(TS_FORMAT).to_string()
}

/// The time of a [`timestamp`]; None for any other spelling.
pub fn parse_timestamp(ts: &str) -> Option<DateTime<Utc>> {
    let time = NaiveDateTime::parse_from_str(ts, TS_FORMAT).ok()?.and_utc();
    (time.format(TS_FORMAT).to_string() == ts).then_some(time)
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
    /// Written by the Railway template, not by pgbackup: no sha256, no
    /// manifest, and retention leaves it alone unless told otherwise.
    pub imported: bool,
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
        imported: false,
    })
}

/// The Railway template's default BACKUP_FILE_PREFIX.
pub const TEMPLATE_DEFAULT_PREFIX: &str = "backup";

/// The template's timestamp: JavaScript's `toISOString()` with `:` and `.`
/// replaced by `-`, e.g. `2025-03-01T05-00-00-123Z`.
const TEMPLATE_TS_FORMAT: &str = "%Y-%m-%dT%H-%M-%S-%3fZ";
const TEMPLATE_TS_LEN: usize = 24;
const TEMPLATE_EXT: &str = ".tar.gz";

/// The prefixes the Railway template may have written under pgbackup's
/// `prefix` (BUCKET_SUBFOLDER and BACKUP_FILE_PREFIX included): the same
/// BACKUP_FILE_PREFIX, which a user who set it keeps when switching; and,
/// when the prefix is pgbackup's default `backup_`, the template's default
/// `backup`, since a user who never set it has different defaults on each
/// side.
pub fn template_prefixes(prefix: &str) -> Vec<String> {
    let (folder, file) = prefix
        .rsplit_once('/')
        .map_or(("", prefix), |(d, f)| (&prefix[..d.len() + 1], f));
    let mut out = vec![prefix.to_string()];
    if file == "backup_" {
        out.push(format!("{folder}{TEMPLATE_DEFAULT_PREFIX}"));
    }
    out
}

/// Parses a full key of the Railway `postgres-s3-backups` template's shape,
/// `<template prefix>-<YYYY-MM-DDTHH-MM-SS-mmmZ>.tar.gz` (`pg_dump
/// --format=tar | gzip`), for one of [`template_prefixes`]`(prefix)`.
/// Exactly that shape, nothing else; `None` otherwise.
pub fn parse_template(prefix: &str, key: &str) -> Option<ParsedName> {
    let rest = template_prefixes(prefix)
        .iter()
        .find_map(|p| key.strip_prefix(p.as_str())?.strip_prefix('-'))?;
    let ts = rest.strip_suffix(TEMPLATE_EXT)?;
    if ts.len() != TEMPLATE_TS_LEN {
        return None;
    }
    let time = NaiveDateTime::parse_from_str(ts, TEMPLATE_TS_FORMAT)
        .ok()?
        .and_utc();
    if time.format(TEMPLATE_TS_FORMAT).to_string() != ts {
        return None;
    }
    Some(ParsedName {
        time,
        format: Format::Tar,
        compression: "gzip",
        imported: true,
        encrypted: false,
    })
}

/// With several databases (BACKUP_DATABASES), each has a prefix of its own
/// below the configured one, `<prefix>db/<encoded name>/`, and the globals
/// (roles, tablespaces) `<prefix>globals/`; below each, the usual names.
/// The two folders keep a database and the globals apart whatever the
/// databases are called.
const DATABASES_DIR: &str = "db/";
const GLOBALS_DIR: &str = "globals/";

/// The prefix of one database's backups.
pub fn database_prefix(prefix: &str, database: &str) -> String {
    format!("{prefix}{DATABASES_DIR}{}/", encode_database(database))
}

/// The prefix of the globals' backups.
pub fn globals_prefix(prefix: &str) -> String {
    format!("{prefix}{GLOBALS_DIR}")
}

/// A database name as one key segment: letters, digits, `_` and `-` as
/// they are, every other byte of its UTF-8 as `%XX`. Injective, so two
/// databases never share a prefix; `/`, `.` and `%` never appear raw, so a
/// segment is never a folder, `.` or `..`; and it stays readable for the
/// common names (`app`, `analytics_2024`).
pub fn encode_database(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode_database`]; None for anything it cannot have made.
pub fn decode_database(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            if hex.bytes().any(|c| c.is_ascii_lowercase()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    (!name.is_empty() && encode_database(&name) == segment).then_some(name)
}

/// The databases that have at least one backup under `prefix`, from a
/// listing of keys: what list, restore and prune work from when there is
/// no database connection.
pub fn stored_databases<'a>(
    prefix: &str,
    keys: impl IntoIterator<Item = &'a str>,
) -> std::collections::BTreeSet<String> {
    let dir = format!("{prefix}{DATABASES_DIR}");
    keys.into_iter()
        .filter_map(|k| {
            let (segment, _) = k.strip_prefix(&dir)?.split_once('/')?;
            let name = decode_database(segment)?;
            parse(&database_prefix(prefix, &name), k).map(|_| name)
        })
        .collect()
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

    #[test]
    fn the_templates_names_parse_with_their_milliseconds() {
        let want = Utc.with_ymd_and_hms(2025, 3, 1, 5, 0, 0).unwrap()
            + chrono::Duration::milliseconds(123);
        for (prefix, key) in [
            // The template's default prefix, under pgbackup's default.
            ("backup_", "backup-2025-03-01T05-00-00-123Z.tar.gz"),
            // BUCKET_SUBFOLDER in front.
            (
                "pg/prod/backup_",
                "pg/prod/backup-2025-03-01T05-00-00-123Z.tar.gz",
            ),
            // A BACKUP_FILE_PREFIX the user set, and keeps.
            (
                "vlvt_backup_",
                "vlvt_backup_-2025-03-01T05-00-00-123Z.tar.gz",
            ),
            ("backup_", "backup_-2025-03-01T05-00-00-123Z.tar.gz"),
            ("db", "db-2025-03-01T05-00-00-123Z.tar.gz"),
        ] {
            let p = parse_template(prefix, key).unwrap_or_else(|| panic!("{key}"));
            assert_eq!(
                (p.time, p.format, p.compression, p.imported),
                (want, Format::Tar, "gzip", true),
                "{key}"
            );
            // Never one of pgbackup's own.
            assert_eq!(parse(prefix, key), None, "{key}");
        }
    }

    #[test]
    fn only_the_templates_exact_shape_is_imported() {
        for key in [
            "backup-2025-03-01T05-00-00-123Z.tar",
            "backup-2025-03-01T05-00-00-123Z.tar.gz.sha256",
            "backup-2025-03-01T05-00-00Z.tar.gz",
            "backup-2025-03-01T05:00:00.123Z.tar.gz",
            "backup-2025-03-01T05-00-00-1234Z.tar.gz",
            "backup-2025-3-01T05-00-00-123Z.tar.gz",
            "backup-2025-13-01T05-00-00-123Z.tar.gz",
            "backup-2025-03-01T05-00-00-123.tar.gz",
            "backup2025-03-01T05-00-00-123Z.tar.gz",
            "other-2025-03-01T05-00-00-123Z.tar.gz",
            "sub/backup-2025-03-01T05-00-00-123Z.tar.gz",
            "backup-latest.tar.gz",
            "backup_2026-01-25_03-00-00.dump.zst",
            "backup-2025-03-01T05-00-00-12éZ.tar.gz",
        ] {
            assert_eq!(parse_template("backup_", key), None, "{key}");
        }
        // The template's default is taken only where pgbackup's default is.
        assert_eq!(
            parse_template("db_", "backup-2025-03-01T05-00-00-123Z.tar.gz"),
            None
        );
        assert_eq!(
            template_prefixes("a/b/backup_"),
            ["a/b/backup_", "a/b/backup"]
        );
        assert_eq!(template_prefixes("x_"), ["x_"]);
    }

    #[test]
    fn every_database_name_has_its_own_prefix() {
        let names = [
            "app", "App", "my db", "a/b", "100%", "%25", "café", "日本", ".", "..", "db-1_x",
            "globals", "db", "a%2Fb",
        ];
        let mut prefixes = std::collections::BTreeSet::new();
        for n in names {
            let p = database_prefix("backup_", n);
            assert!(prefixes.insert(p.clone()), "{n:?} shares {p}");
            let seg = &p["backup_db/".len()..p.len() - 1];
            assert!(
                !seg.contains('/') && seg != "." && seg != "..",
                "{n:?}: {seg}"
            );
            assert_eq!(decode_database(seg).as_deref(), Some(n), "{seg}");
            assert!(!p.starts_with(&globals_prefix("backup_")));
        }
        assert_eq!(
            database_prefix("x/backup_", "my db"),
            "x/backup_db/my%20db/"
        );
        assert_eq!(database_prefix("backup_", "App"), "backup_db/App/");
        for bad in ["", "%2f", "%2", "a b", "%41", "%zz", "a.b", "%C3"] {
            assert_eq!(decode_database(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stored_databases_come_from_backup_names_only() {
        let keys = [
            "backup_db/app/2026-01-25_03-00-00.dump.zst",
            "backup_db/app/2026-01-25_03-00-00.dump.zst.manifest.json",
            "backup_db/my%20db/2026-01-25_03-00-00.dump.zst.age",
            "backup_db/only-notes/notes.txt",
            "backup_db/bad%2f/2026-01-25_03-00-00.dump",
            "backup_globals/2026-01-25_03-00-00.sql.zst",
            "backup_2026-01-25_03-00-00.dump.zst",
        ];
        let got: Vec<String> = stored_databases("backup_", keys).into_iter().collect();
        assert_eq!(got, vec!["app".to_string(), "my db".to_string()]);
        // Single-database names are never taken for another database's.
        assert!(parse("backup_", keys[0]).is_none());
        assert!(parse(&globals_prefix("backup_"), keys[5]).is_some());
    }
}
