//! `pgbackup basebackup`: one physical base backup now, then retention of
//! base backups and the WAL they no longer need.

use chrono::Utc;

use crate::config::Config;
use crate::job::Priority;
use crate::pg::human_bytes;
use crate::wal::{base, retention};

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let storage = super::open_storage(&cfg.store).await;
    let cancel = super::cancel_on_signal();
    let r = base::take(&cfg, storage.as_ref(), &cancel, Priority::Normal).await?;
    let secs = (r.finished - r.started).num_milliseconds() as f64 / 1000.0;
    tracing::info!(
        object = %r.key,
        start = %r.start,
        stop = %r.stop,
        timeline = r.timeline,
        stored_bytes = r.stored_bytes,
        duration_s = format!("{secs:.2}"),
        "base backup succeeded"
    );
    println!(
        "{}  {} stored ({} of cluster) in {:.1}s  WAL {} to {} on timeline {}",
        r.key,
        human_bytes(r.stored_bytes),
        human_bytes(r.cluster_bytes),
        secs,
        r.start,
        r.stop,
        r.timeline
    );
    if !cfg.wal.archive {
        println!(
            "note: restoring it needs the WAL from {} on: run `pgbackup run` with BACKUP_WAL_ARCHIVE=true (the slot {:?} holds it until then)",
            r.start, cfg.wal.slot
        );
    }
    match retention::apply(
        storage.as_ref(),
        &cfg.store.prefix,
        &cfg.retention,
        Utc::now(),
        false,
    )
    .await
    {
        Ok(p) => {
            for (k, why) in &p.failed {
                tracing::warn!(object = %k, error = %why, "retention could not delete");
            }
            if !p.bases_deleted.is_empty() || !p.wal_deleted.is_empty() {
                println!(
                    "retention: deleted {} base backups and {} WAL objects; {} base backups kept",
                    p.bases_deleted.len(),
                    p.wal_deleted.len(),
                    p.bases_left.len()
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "retention of base backups failed; the backup itself succeeded")
        }
    }
    Ok(())
}
