//! `pgbackup prune [--dry-run]`: retention now. Prints each backup it
//! deletes (or would delete); exits 1 if any deletion failed.

use chrono::Utc;

use crate::batch::{self, Command};
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
    dry_run: bool,
) -> anyhow::Result<()> {
    let storage = super::open_storage(store).await;
    let now = Utc::now();
    let pass = retention::apply(storage.as_ref(), &store.prefix, settings, now, dry_run).await;
    // A dry run changes nothing, so it publishes nothing.
    if batch_cfg.is_enabled() && !dry_run {
        let db = super::database_label(database, storage.as_ref(), &store.prefix).await;
        let metrics = Metrics::new(&db, "unknown");
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
        batch::publish(batch_cfg, Command::Prune, &metrics, &[]).await;
    }
    let report = pass?;
    let age = |key: &str| {
        naming::parse(&store.prefix, key)
            .or_else(|| naming::parse_template(&store.prefix, key))
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
