//! A backup's manifest: which tables had rows when it was taken, so that a
//! restore drill can tell an archive that restores cleanly but empty from a
//! good one.
//!
//! Stored as `<backup name>.manifest.json` next to the backup (not a
//! backup-shaped name, so list and restore never take it for one; retention
//! deletes it with its backup). It names every table, so an encrypted
//! backup's manifest is encrypted too: `<name without .age>.manifest.json.age`. It is written before the backup object is
//! committed and deleted again if that commit fails, so a manifest never
//! outlives a failed backup. A manifest that cannot be captured or stored
//! costs the backup nothing: the drill then checks tables without row counts.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::config::{Config, Database};
use crate::crypto::{Identities, Recipients};
use crate::error::{JobError, Stage};
use crate::pg;
use crate::pg::{pg_err, quote_ident};
use crate::storage::{ObjectMeta, ObjectStore, ObjectWriter};

/// What follows a backup's name in its manifest's name.
pub const SUFFIX: &str = ".manifest.json";

/// The manifest object of backup `key`.
pub fn object_name(key: &str) -> String {
    match key.strip_suffix(crate::crypto::SUFFIX) {
        Some(base) => format!("{base}{SUFFIX}{}", crate::crypto::SUFFIX),
        None => format!("{key}{SUFFIX}"),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// The backup this manifest belongs to.
    pub backup: String,
    pub database: String,
    /// RFC 3339, UTC.
    pub captured_at: String,
    pub tables: Vec<TableStat>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableStat {
    pub schema: String,
    pub name: String,
    /// pg_class.reltuples, rounded; -1 when never analyzed.
    pub rows_estimate: i64,
    /// Whether the table had a row when the dump ended (None: not readable).
    pub has_rows: Option<bool>,
}

impl TableStat {
    /// The table must not be empty after a restore.
    pub fn expects_rows(&self) -> bool {
        self.has_rows.unwrap_or(self.rows_estimate > 0)
    }
}

/// Tables probed per query.
const PROBE_BATCH: usize = 200;
/// A catalog of many thousands of tables must not hold a backup up for long.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(120);

/// Reads the row estimates of every user table, and whether each has a row
/// (a direct probe: estimates are -1 until the first ANALYZE, and small
/// tables may never reach autovacuum's threshold).
///
/// On `snapshot`, the connection whose transaction exported the snapshot
/// pg_dump used, the counts are those of the dump itself; without it, a new
/// connection reads them as they are now.
pub async fn capture(
    db: &Database,
    snapshot: Option<&tokio_postgres::Client>,
    backup: &str,
) -> Result<Manifest, JobError> {
    tokio::time::timeout(CAPTURE_TIMEOUT, capture_inner(db, snapshot, backup))
        .await
        .unwrap_or_else(|_| {
            Err(JobError::transient(
                Stage::Dump,
                format!("manifest capture took over {}s", CAPTURE_TIMEOUT.as_secs()),
            ))
        })
}

async fn capture_inner(
    db: &Database,
    snapshot: Option<&tokio_postgres::Client>,
    backup: &str,
) -> Result<Manifest, JobError> {
    let stage = Stage::Dump;
    let own;
    let c = match snapshot {
        Some(c) => c,
        None => {
            own = pg::connect(db).await?;
            &own
        }
    };
    // Never wait behind a migration's lock, never run away.
    c.batch_execute("SET lock_timeout = '5s'; SET statement_timeout = '60s'")
        .await
        .map_err(|e| pg_err(stage, "manifest", &e))?;
    let rows = c
        .query(
            "SELECT n.nspname::text, c.relname::text, c.reltuples::float8, \
                    c.relkind = 'r' AND pg_catalog.has_table_privilege(c.oid, 'SELECT') \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r','p') AND c.relpersistence <> 't' \
               AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' \
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(|e| pg_err(stage, "manifest: listing tables", &e))?;
    let mut tables: Vec<TableStat> = Vec::with_capacity(rows.len());
    let mut probe: Vec<usize> = Vec::new();
    for r in &rows {
        let est: f64 = r.get(2);
        if r.get::<_, bool>(3) {
            probe.push(tables.len());
        }
        tables.push(TableStat {
            schema: r.get(0),
            name: r.get(1),
            rows_estimate: if est < 0.0 { -1 } else { est.round() as i64 },
            has_rows: None,
        });
    }
    for batch in probe.chunks(PROBE_BATCH) {
        let sql = batch
            .iter()
            .map(|&i| {
                let t = &tables[i];
                format!(
                    "SELECT {i}, EXISTS (SELECT 1 FROM {}.{})",
                    quote_ident(&t.schema),
                    quote_ident(&t.name)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let out = c
            .query(&sql, &[])
            .await
            .map_err(|e| pg_err(stage, "manifest: probing tables", &e))?;
        for r in out {
            let i: i32 = r.get(0);
            tables[i as usize].has_rows = Some(r.get(1));
        }
    }
    Ok(Manifest {
        version: 1,
        backup: backup.to_string(),
        database: db.name().to_string(),
        captured_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        tables,
    })
}

/// Writes the manifest of backup `key`, with its sha256 as any object
/// (S3 metadata, or a sidecar locally), encrypted when `recipients` are given.
pub async fn store(
    storage: &dyn ObjectStore,
    key: &str,
    m: &Manifest,
    recipients: Option<&Recipients>,
) -> Result<(), JobError> {
    let mut body = serde_json::to_vec_pretty(m)
        .map_err(|e| JobError::permanent(Stage::Upload, format!("manifest: {e}")))?;
    if let Some(r) = recipients {
        body = r.encrypt_bytes(&body).map_err(|e| {
            JobError::permanent(Stage::Upload, format!("encrypting the manifest: {e}"))
        })?;
    }
    let meta = ObjectMeta {
        sha256: hex::encode(Sha256::digest(&body)),
        ..Default::default()
    };
    storage
        .put(&object_name(key), Bytes::from(body), &meta)
        .await
        .map_err(|e| JobError::storage(Stage::Upload, e))
}

/// Reads the manifest of backup `key`; None when it has none. An encrypted
/// one is decrypted with `identity` (the caller checked it has one).
pub async fn load(
    storage: &dyn ObjectStore,
    key: &str,
    identity: Option<&Identities>,
    stage: Stage,
) -> Result<Option<Manifest>, JobError> {
    let name = object_name(key);
    let meta = match storage.head(&name).await {
        Ok(m) => m,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(JobError::storage(stage, e)),
    };
    let mut body = Vec::new();
    storage
        .get(&name)
        .await
        .map_err(|e| JobError::storage(stage, e))?
        .take(64 << 20)
        .read_to_end(&mut body)
        .await
        .map_err(|e| JobError::transient(stage, format!("reading {name}: {e}")).with_source(e))?;
    if !meta.sha256.is_empty() && meta.sha256 != hex::encode(Sha256::digest(&body)) {
        return Err(JobError::permanent(
            stage,
            format!("{name}: checksum mismatch"),
        ));
    }
    if name.ends_with(crate::crypto::SUFFIX) {
        let Some(ids) = identity else {
            return Err(JobError::config(
                stage,
                crate::crypto::identity_needed(&name, "reading it"),
            ));
        };
        body = ids
            .decrypt_bytes(&body)
            .map_err(|e| JobError::permanent(stage, format!("{name}: {e}")))?;
    }
    let m: Manifest = serde_json::from_slice(&body).map_err(|e| {
        JobError::permanent(stage, format!("{name} is not a manifest: {e}")).with_source(e)
    })?;
    Ok(Some(m))
}

/// The backup job's commit, with the manifest written just before it.
/// A manifest left by a failed commit is deleted again.
pub async fn commit_with_manifest(
    cfg: &Config,
    storage: &dyn ObjectStore,
    key: &str,
    writer: Box<dyn ObjectWriter>,
    meta: &ObjectMeta,
    snapshot: Option<&tokio_postgres::Client>,
) -> Result<(), JobError> {
    let stored = match capture(&cfg.dump.database, snapshot, key).await {
        Ok(m) => match store(storage, key, &m, cfg.encryption.recipients.as_deref()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "backup continues without a manifest: drills will not check row counts");
                false
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "backup continues without a manifest: drills will not check row counts");
            false
        }
    };
    let res = writer
        .commit(meta)
        .await
        .map_err(|e| JobError::storage(Stage::Upload, e));
    if res.is_err() && stored {
        let _ = storage.delete(&[object_name(key)]).await;
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_are_never_backup_names() {
        let key = "db/backup_2026-01-25_03-00-00.dump.zst";
        let m = object_name(key);
        assert_eq!(m, "db/backup_2026-01-25_03-00-00.dump.zst.manifest.json");
        assert!(crate::naming::parse("db/backup_", &m).is_none());
        let sealed = object_name(&format!("{key}.age"));
        assert_eq!(
            sealed,
            "db/backup_2026-01-25_03-00-00.dump.zst.manifest.json.age"
        );
        assert!(crate::naming::parse("db/backup_", &sealed).is_none());
    }

    #[test]
    fn expectations() {
        let t = |est, has| TableStat {
            schema: "s".into(),
            name: "t".into(),
            rows_estimate: est,
            has_rows: has,
        };
        assert!(t(-1, Some(true)).expects_rows());
        assert!(
            !t(500, Some(false)).expects_rows(),
            "the probe is the truth"
        );
        assert!(t(500, None).expects_rows());
        assert!(!t(-1, None).expects_rows());
        let m = Manifest {
            version: 1,
            backup: "b".into(),
            database: "d".into(),
            captured_at: "2026-01-25T03:00:00Z".into(),
            tables: vec![t(3, Some(true))],
        };
        let back: Manifest = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
