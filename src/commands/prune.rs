//! `pgbackup prune [--dry-run] [--database DB]`: retention now. Prints each
//! backup it deletes (or would delete); exits 1 if any deletion failed.
//! With several databases, each database and the globals are pruned on
//! their own, as after their own backups.

use chrono::Utc;

use crate::batch::{self, Command};
use crate::catalog::{self, Scope};
use crate::config::{BatchConfig, Database, RetentionSettings, StoreConfig};
use crate::error::Stage;
use crate::metrics::Metrics;
use crate::naming;
use crate::pg::human_bytes;
use crate::retention;

pub async fn run(
    store: &StoreConfig,
    settings: &RetentionSettings,
    batch_cfg: &BatchConfig,
    database: Option<&Database>,
    only: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let storage = super::open_storage(store).await;
    // Which prefixes: today's single database, each stored database of
    // several, and the globals; or the one database asked for.
    let scopes: Vec<Scope> = match only {
        Some(db) => vec![Scope::Database(db.to_string())],
        None => {
            let mut found: Vec<Scope> =
                catalog::list_all(storage.as_ref(), &store.prefix, Stage::Retention)
                    .await
                    .map_err(|e| anyhow::anyhow!("prune failed: {}", e.message))?
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect();
            found.dedup();
            // Nothing stored yet: the single prefix still gets its pass
            // (stale uploads, the summary).
            if found.is_empty() {
                found.push(Scope::Single);
            }
            found
        }
    };
    let many = scopes.iter().any(|s| *s != Scope::Single);
    let mut first_error = None;
    let mut metrics: Option<Metrics> = None;
    for scope in &scopes {
        if many {
            match scope {
                Scope::Single => {
                    println!("== {} (single database)", store.prefix)
                }
                Scope::Database(d) => println!("== database {d:?}"),
                Scope::Globals => println!("== globals"),
            }
        }
        if let Err(e) = prune_one(
            storage.as_ref(),
            &store.prefix,
            scope,
            settings,
            batch_cfg,
            database,
            dry_run,
            &mut metrics,
        )
        .await
        {
            first_error.get_or_insert(e);
        }
    }
    // Base backups and WAL, when there are any (point-in-time recovery).
    if only.is_none() {
        if let Err(e) = prune_physical(storage.as_ref(), &store.prefix, settings, dry_run).await {
            first_error.get_or_insert(e);
        }
    }
    // A dry run changes nothing, so it publishes nothing.
    if let (Some(m), false) = (&metrics, dry_run) {
        batch::publish(batch_cfg, Command::Prune, m, &[]).await;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Base backups by the same rules, and the WAL no base backup left needs.
async fn prune_physical(
    storage: &dyn crate::storage::ObjectStore,
    prefix: &str,
    settings: &RetentionSettings,
    dry_run: bool,
) -> anyhow::Result<()> {
    let listing = storage
        .list(&crate::wal::base_prefix(prefix))
        .await
        .map_err(|e| anyhow::anyhow!("prune failed: {e}"))?;
    if crate::wal::base::select(prefix, &listing).is_empty() {
        return Ok(());
    }
    println!("== base backups and WAL");
    let p = crate::wal::retention::apply(storage, prefix, settings, Utc::now(), dry_run).await?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    for key in &p.bases_deleted {
        println!("{verb:<12}  {key}");
    }
    println!(
        "{verb:<12}  {} WAL objects older than the oldest base backup kept",
        p.wal_deleted.len()
    );
    for b in &p.bases_left {
        println!(
            "kept          {}  (recovers from {})",
            b.base.key,
            b.finished.to_rfc3339()
        );
    }
    for (k, why) in &p.failed {
        println!("failed        {k}: {why}");
    }
    if !p.failed.is_empty() {
        anyhow::bail!(
            "retention failed: {} deletions were refused",
            p.failed.len()
        );
    }
    Ok(())
}

/// Retention of one prefix; its series are recorded into `metrics` (the
/// first scope creates it) when one-shot metrics are on.
#[allow(clippy::too_many_arguments)]
async fn prune_one(
    storage: &dyn crate::storage::ObjectStore,
    base: &str,
    scope: &Scope,
    settings: &RetentionSettings,
    batch_cfg: &BatchConfig,
    database: Option<&Database>,
    dry_run: bool,
    metrics: &mut Option<Metrics>,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let prefix = &scope.prefix(base);
    let pass = retention::apply(storage, prefix, settings, now, dry_run).await;
    // The globals have no `database` series of their own.
    let label = match scope {
        Scope::Single => Some(super::database_label(database, storage, prefix).await),
        Scope::Database(d) => Some(d.clone()),
        Scope::Globals => None,
    };
    if let (true, false, Some(db)) = (batch_cfg.is_enabled(), dry_run, label) {
        let view = match metrics {
            Some(m) => m.for_database(&db),
            None => {
                let m = Metrics::new(&db, "unknown");
                *metrics = Some(m.clone());
                m
            }
        };
        let metrics = view;
        match &pass {
            Ok(r) => {
                metrics.add_retention_deleted(r.deleted.len() as u64);
                metrics.set_stored(r.stored_objects, r.stored_bytes);
                if r.error().is_some() {
                    metrics.count_failure(Stage::Retention);
                }
            }
            Err(_) => metrics.count_failure(Stage::Retention),
        }
    }
    let report = pass?;
    let age = |key: &str| {
        naming::parse(prefix, key)
            .or_else(|| naming::parse_template(prefix, key))
            .map(|p| match (now - p.time).num_days() {
                1 => "1 day old".to_string(),
                d => format!("{d} days old"),
            })
            .unwrap_or_default()
    };
    let verb = if dry_run { "would delete" } else { "deleted" };
    for key in &report.deleted {
        println!("{verb:<12}  {key}  ({})", age(key));
    }
    if dry_run {
        for k in &report.kept {
            let why: Vec<String> = k.kept_by.iter().map(|r| r.to_string()).collect();
            println!(
                "{:<12}  {}  ({}; kept by {})",
                "keep",
                k.key,
                age(&k.key),
                why.join(", ")
            );
        }
    }
    for (key, hold) in &report.locked {
        println!("{:<12}  {key}: {hold}", "kept");
    }
    for (key, why) in &report.failed {
        println!("{:<12}  {key}: {why}", "failed");
    }
    println!(
        "retention{}: {verb} {} backup(s) ({}), {} kept ({}) in {}",
        if dry_run { " (dry run)" } else { "" },
        report.deleted.len(),
        human_bytes(report.deleted_bytes),
        report.stored_objects,
        human_bytes(report.stored_bytes),
        storage.describe()
    );
    if report.aborted_uploads > 0 {
        println!(
            "{} {} abandoned multipart upload(s)",
            if dry_run { "would abort" } else { "aborted" },
            report.aborted_uploads
        );
    }
    match report.error() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
