//! `pgbackup backup`: one backup now, then retention; exits with the
//! backup's outcome (a retention failure is logged, not fatal). Waits for
//! the notifications, then publishes the run's metrics (Pushgateway,
//! textfile) before exiting.

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::batch::{self, Command};
use crate::catalog;
use crate::config::Config;
use crate::error::Stage;
use crate::job::{self, Outcome};
use crate::metrics::Metrics;
use crate::notify::{Delivery, Notifications};
use crate::pg::human_bytes;
use crate::retention::{self, RetentionReport};
use crate::storage::ObjectStore;

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
    let mut retention_pass = None;
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
            let pass = retention::after_backup(
                &cfg.store.prefix,
                &cfg.retention,
                storage.as_ref(),
                &r.key,
                Utc::now(),
            )
            .await;
            if let Ok(rep) = &pass {
                println!(
                    "retention: deleted {} old backup(s), {} kept ({})",
                    rep.deleted.len(),
                    rep.stored_objects,
                    human_bytes(rep.stored_bytes)
                );
            }
            retention_pass = Some(pass);
            Ok(())
        }
        Err(e) => {
            tracing::error!(database = %outcome.database, stage = %e.stage, error = %e.message, "backup failed");
            Err(e.clone().into())
        }
    };
    // One-shot: the previous outcome is unknown and nothing is scheduled.
    let delivery = notifications.after_attempt(&outcome, None, None).await;
    if cfg.batch.is_enabled() && !matches!(&outcome.result, Err(e) if e.is_cancelled()) {
        let (metrics, from_store) =
            run_metrics(&cfg, storage.as_ref(), &outcome, retention_pass, delivery).await;
        let unknown: &[&str] = if from_store {
            &[]
        } else {
            &[batch::LAST_SUCCESS]
        };
        batch::publish(&cfg.batch, Command::Backup, &metrics, unknown).await;
    }
    result
}

/// The series the daemon would serve after this attempt. A failed run
/// still carries the time of the last success: from the store, or when the
/// store cannot say, from the previous textfile; `false` when the store
/// could not say, so that a push merges rather than erases it.
async fn run_metrics(
    cfg: &Config,
    storage: &dyn ObjectStore,
    outcome: &Outcome,
    retention_pass: Option<Result<RetentionReport, crate::error::JobError>>,
    delivery: Option<Delivery>,
) -> (Metrics, bool) {
    let pg_dump = match &outcome.result {
        Ok(r) => crate::pg::tool_version(&r.pg_dump_version)
            .unwrap_or("unknown")
            .to_string(),
        Err(_) => "unknown".to_string(),
    };
    let metrics = Metrics::new(&outcome.database, &pg_dump);
    let mut from_store = true;
    if outcome.result.is_err() {
        match catalog::list(storage, &cfg.store.prefix, Stage::Upload).await {
            Ok(backups) => {
                // pgbackup's own: the metrics describe its backups.
                if let Some(newest) = backups.iter().find(|b| !b.imported) {
                    metrics.seed_last_success(newest.time);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list stored backups for the time of the last success");
                from_store = false;
                if let Some(t) = batch::previous(&cfg.batch, Command::Backup, batch::LAST_SUCCESS) {
                    metrics.seed_last_success(t);
                }
            }
        }
    }
    // After the seed: a failure sets the status back to 0.
    metrics.record(outcome);
    match retention_pass {
        Some(Ok(r)) => {
            metrics.add_retention_deleted(r.deleted.len() as u64);
            metrics.set_stored(r.stored_objects, r.stored_bytes);
        }
        Some(Err(_)) => metrics.count_failure(Stage::Retention),
        None => {}
    }
    if let Some(d) = delivery {
        metrics.count_delivery(matches!(d, Delivery::Delivered));
    }
    (metrics, from_store)
}
