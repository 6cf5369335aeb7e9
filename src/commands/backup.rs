//! `pgbackup backup`: one backup now, then retention; exits with the
//! backup's outcome (a retention failure is logged, not fatal). Waits for
//! the notifications before exiting.

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::job;
use crate::notify::Notifications;
use crate::pg::human_bytes;
use crate::retention;

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let storage = super::open_storage(&cfg.store).await;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        on_signal.cancel();
    });
    let notifications = Notifications::from_config(&cfg);
    let outcome = job::run(&cfg, storage.as_ref(), &cancel, job::Priority::Normal).await;
    let result = match &outcome.result {
        Ok(r) => {
            tracing::info!(
                database = %outcome.database,
                object = %r.key,
                stored_bytes = r.stored_bytes,
                dump_bytes = r.dump_bytes,
                duration_s = format!("{:.2}", outcome.duration.as_secs_f64()),
                "backup succeeded"
            );
            println!(
                "{}/{}  {} stored ({} dumped) in {:.1}s  sha256 {}",
                storage.describe(),
                r.key,
                human_bytes(r.stored_bytes),
                human_bytes(r.dump_bytes),
                outcome.duration.as_secs_f64(),
                r.sha256
            );
            // Only after a success; its failure is logged there and not fatal.
            if let Ok(rep) = retention::after_backup(
                &cfg.store.prefix,
                &cfg.retention,
                storage.as_ref(),
                &r.key,
                chrono::Utc::now(),
            )
            .await
            {
                println!(
                    "retention: deleted {} old backup(s), {} kept ({})",
                    rep.deleted.len(),
                    rep.stored_objects,
                    human_bytes(rep.stored_bytes)
                );
            }
            Ok(())
        }
        Err(e) => {
            tracing::error!(database = %outcome.database, stage = %e.stage, error = %e.message, "backup failed");
            Err(e.clone().into())
        }
    };
    // One-shot: the previous outcome is unknown and nothing is scheduled.
    notifications.after_attempt(&outcome, None, None).await;
    result
}
