//! `pgbackup prune [--dry-run]`: retention now. Prints each backup it
//! deletes (or would delete); exits 1 if any deletion failed.

use chrono::Utc;

use crate::config::{RetentionSettings, StoreConfig};
use crate::naming;
use crate::pg::human_bytes;
use crate::retention;

pub async fn run(
    store: &StoreConfig,
    settings: &RetentionSettings,
    dry_run: bool,
) -> anyhow::Result<()> {
    let storage = super::open_storage(store).await;
    let now = Utc::now();
    let report = retention::apply(storage.as_ref(), &store.prefix, settings, now, dry_run).await?;
    let age = |key: &str| {
        naming::parse(&store.prefix, key)
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
