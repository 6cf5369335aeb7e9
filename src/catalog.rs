//! The backups in storage: only names of the contract's shape under the
//! prefix, newest first, and the one resolver of a `<NAME|latest>` argument
//! that list, restore, verify, presign and the drill share.
//!
//! The Railway template's old backups under the same prefix location
//! ([`naming::parse_template`]) are listed too, marked `imported`, so that
//! a user who switches image can still restore them. `latest` is the newest
//! backup of either kind: on the day of the switch it is the template's last
//! one, from the first pgbackup backup on it is pgbackup's.

use chrono::{DateTime, Utc};

use crate::config::Format;
use crate::error::{ConfigError, JobError, Stage};
use crate::naming;
use crate::storage::ObjectStore;

/// One backup as the listing shows it; time, format and compression come from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub key: String,
    pub time: DateTime<Utc>,
    pub size: u64,
    pub format: Format,
    /// `zstd`, `gzip` or `none`.
    pub compression: &'static str,
    /// Encrypted with age: reading inside needs the identity.
    pub encrypted: bool,
    /// Written by the Railway template (no sha256, no manifest).
    pub imported: bool,
}

/// What a `<NAME|latest>` argument asks for, checked before any I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    Latest,
    Key(String),
}

/// Parses a NAME argument: `latest`, a full key as `list` prints it, or the
/// key without the prefix. Anything else is a usage error (exit 2).
pub fn wanted(prefix: &str, name: &str) -> Result<Wanted, ConfigError> {
    let name = name.trim();
    if name == "latest" {
        return Ok(Wanted::Latest);
    }
    let folder = &prefix[..prefix.rfind('/').map_or(0, |i| i + 1)];
    for key in [
        name.to_string(),
        format!("{prefix}{name}"),
        format!("{folder}{name}"),
    ] {
        if parse_any(prefix, &key).is_some() {
            return Ok(Wanted::Key(key));
        }
    }
    Err(ConfigError::new(
        "NAME",
        format!(
            "{name:?} is not a backup name: expected `latest` or {prefix}YYYY-MM-DD_HH-MM-SS.<dump|sql>[.zst|.gz][.age] (or an imported <prefix>-<ISO time>.tar.gz) as `pgbackup list` prints it"
        ),
    ))
}

/// One of ours, else one of the template's.
fn parse_any(prefix: &str, key: &str) -> Option<naming::ParsedName> {
    naming::parse(prefix, key).or_else(|| naming::parse_template(prefix, key))
}

/// What to list so that both our names and the template's are in it: the
/// longest prefix they all share.
pub fn listing_prefix(prefix: &str) -> String {
    let mut common = prefix.to_string();
    for p in naming::template_prefixes(prefix) {
        let n = common
            .char_indices()
            .zip(p.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, a), _)| i + a.len_utf8());
        common.truncate(n);
    }
    common
}

/// Our backups under `prefix` and the template's imported ones, newest
/// first. Errors carry `stage`.
pub async fn list(
    storage: &dyn ObjectStore,
    prefix: &str,
    stage: Stage,
) -> Result<Vec<Backup>, JobError> {
    let objects = storage
        .list(&listing_prefix(prefix))
        .await
        .map_err(|e| JobError::storage(stage, e))?;
    Ok(select(
        prefix,
        objects.into_iter().map(|o| (o.key, o.size)).collect(),
    ))
}

/// Keeps the contract-shaped names and the template's, and orders them
/// newest first (ties: by name).
pub fn select(prefix: &str, objects: Vec<(String, u64)>) -> Vec<Backup> {
    let mut out: Vec<Backup> = objects
        .into_iter()
        .filter_map(|(key, size)| {
            let p = parse_any(prefix, &key)?;
            Some(Backup {
                key,
                time: p.time,
                size,
                format: p.format,
                compression: p.compression,
                encrypted: p.encrypted,
                imported: p.imported,
            })
        })
        .collect();
    out.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.key.cmp(&a.key)));
    out
}

/// Whose backups: today's single database, one of several databases
/// (BACKUP_DATABASES), or the globals.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Single,
    Database(String),
    Globals,
}

impl Scope {
    /// The prefix its backups live under, below the configured one.
    pub fn prefix(&self, base: &str) -> String {
        match self {
            Scope::Single => base.to_string(),
            Scope::Database(d) => naming::database_prefix(base, d),
            Scope::Globals => naming::globals_prefix(base),
        }
    }

    /// `database` or `globals`, as `list --json` says.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Globals => "globals",
            _ => "database",
        }
    }
}

/// Every backup under `base`, each with its scope: one listing, no
/// database connection. Newest first within a scope.
pub async fn list_all(
    storage: &dyn ObjectStore,
    base: &str,
    stage: Stage,
) -> Result<Vec<(Scope, Backup)>, JobError> {
    let objects: Vec<(String, u64)> = storage
        .list(&listing_prefix(base))
        .await
        .map_err(|e| JobError::storage(stage, e))?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    Ok(group(base, objects))
}

/// [`list_all`]'s pure part.
pub fn group(base: &str, objects: Vec<(String, u64)>) -> Vec<(Scope, Backup)> {
    let mut scopes = vec![Scope::Single];
    scopes.extend(
        naming::stored_databases(base, objects.iter().map(|(k, _)| k.as_str()))
            .into_iter()
            .map(Scope::Database),
    );
    scopes.push(Scope::Globals);
    let mut out = Vec::new();
    for scope in scopes {
        let prefix = scope.prefix(base);
        let mine: Vec<(String, u64)> = objects
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) || scope == Scope::Single)
            .cloned()
            .collect();
        out.extend(
            select(&prefix, mine)
                .into_iter()
                .map(|b| (scope.clone(), b)),
        );
    }
    out
}

/// Finds the backup `wanted` names in storage.
pub async fn resolve(
    storage: &dyn ObjectStore,
    prefix: &str,
    wanted: &Wanted,
    stage: Stage,
) -> Result<Backup, JobError> {
    let all = list(storage, prefix, stage).await?;
    pick(all, wanted).map_err(|m| {
        JobError::permanent(
            stage,
            format!("{m} in {} under {prefix:?}", storage.describe()),
        )
    })
}

fn pick(all: Vec<Backup>, wanted: &Wanted) -> Result<Backup, String> {
    match wanted {
        Wanted::Latest => all
            .into_iter()
            .next()
            .ok_or_else(|| "no backups".to_string()),
        Wanted::Key(k) => all
            .into_iter()
            .find(|b| &b.key == k)
            .ok_or_else(|| format!("backup {k} not found")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "db/backup_2026-01-25_03-00-00.dump.zst";
    const B: &str = "db/backup_2026-01-26_03-00-00.sql.gz";
    const C: &str = "db/backup_2025-12-31_23-59-59.dump";

    fn objects() -> Vec<(String, u64)> {
        [
            (A, 10),
            ("db/backup_latest.sql.gz", 1),
            (B, 20),
            ("db/backup_2026-01-26_03-00-00.sql.gz.manifest.json", 2),
            ("db/backup_2026-01-26_03-00-00.sql.gz.sha256", 3),
            (C, 30),
            ("db/notes.txt", 4),
        ]
        .into_iter()
        .map(|(k, s)| (k.to_string(), s))
        .collect()
    }

    #[test]
    fn only_our_names_newest_first() {
        let got: Vec<String> = select("db/backup_", objects())
            .into_iter()
            .map(|b| b.key)
            .collect();
        assert_eq!(got, vec![B, A, C]);
        let b = &select("db/backup_", objects())[0];
        assert_eq!(
            (b.format, b.compression, b.size),
            (Format::Plain, "gzip", 20)
        );
    }

    #[test]
    fn latest_is_the_newest_and_names_resolve() {
        let all = select("db/backup_", objects());
        assert_eq!(pick(all.clone(), &Wanted::Latest).unwrap().key, B);
        assert_eq!(pick(all.clone(), &Wanted::Key(C.into())).unwrap().key, C);
        assert!(pick(
            all,
            &Wanted::Key("db/backup_2020-01-01_00-00-00.dump".into())
        )
        .is_err());
        assert!(pick(Vec::new(), &Wanted::Latest).is_err());
    }

    #[test]
    fn the_templates_backups_are_listed_as_imported_and_can_be_latest() {
        const T: &str = "db/backup-2026-01-27T05-00-00-123Z.tar.gz";
        let mut objs = objects();
        objs.push((T.into(), 40));
        objs.push(("db/backup-2026-01-27T05-00-00-123Z.tar".into(), 5));
        let all = select("db/backup_", objs);
        let keys: Vec<&str> = all.iter().map(|b| b.key.as_str()).collect();
        assert_eq!(keys, vec![T, B, A, C]);
        assert!(all[0].imported && !all[1].imported);
        assert_eq!((all[0].format, all[0].compression), (Format::Tar, "gzip"));
        // Newest of either kind.
        assert_eq!(pick(all, &Wanted::Latest).unwrap().key, T);
        assert_eq!(wanted("db/backup_", T).unwrap(), Wanted::Key(T.into()));
        // The name as the template's folder holds it.
        assert_eq!(
            wanted("db/backup_", "backup-2026-01-27T05-00-00-123Z.tar.gz").unwrap(),
            Wanted::Key(T.into())
        );
        assert_eq!(listing_prefix("db/backup_"), "db/backup");
        assert_eq!(listing_prefix("db/x_"), "db/x_");
    }

    #[test]
    fn names_are_checked_before_any_io() {
        assert_eq!(wanted("db/backup_", "latest").unwrap(), Wanted::Latest);
        assert_eq!(wanted("db/backup_", A).unwrap(), Wanted::Key(A.into()));
        // The prefix may be left out.
        assert_eq!(
            wanted("db/backup_", "2026-01-25_03-00-00.dump.zst").unwrap(),
            Wanted::Key(A.into())
        );
        for bad in [
            "",
            "newest",
            "db/backup_latest.sql.gz",
            "db/notes.txt",
            "../x",
        ] {
            let e = wanted("db/backup_", bad).unwrap_err();
            assert_eq!(e.var, "NAME", "{bad}");
        }
    }

    #[test]
    fn every_scope_is_found_and_none_takes_anothers_backups() {
        let objects: Vec<(String, u64)> = [
            ("db/backup_2026-01-25_03-00-00.dump.zst", 1),
            ("db/backup_db/app/2026-01-25_03-00-00.dump.zst", 2),
            (
                "db/backup_db/app/2026-01-25_03-00-00.dump.zst.manifest.json",
                3,
            ),
            ("db/backup_db/my%20db/2026-01-26_03-00-00.dump.zst.age", 4),
            ("db/backup_globals/2026-01-26_03-00-00.sql.zst", 5),
            ("db/backup_db/x/notes.txt", 6),
        ]
        .into_iter()
        .map(|(k, s)| (k.to_string(), s))
        .collect();
        let got: Vec<(Scope, u64)> = group("db/backup_", objects)
            .into_iter()
            .map(|(s, b)| (s, b.size))
            .collect();
        assert_eq!(
            got,
            vec![
                (Scope::Single, 1),
                (Scope::Database("app".into()), 2),
                (Scope::Database("my db".into()), 4),
                (Scope::Globals, 5),
            ]
        );
    }
}
