//! `pgbackup backup`: one backup now, then retention; exits with the
//! backup's outcome (a retention failure is logged, not fatal). Waits for
//! the notifications, then publishes the run's metrics (Pushgateway,
//! textfile) before exiting.

use chrono::Utc;

use crate::batch::{self, Command};
use crate::catalog;
use crate::config::Config;
use crate::databases;
use crate::error::Stage;
use crate::job::{self, Outcome};
use crate::metrics::Metrics;
use crate::notify::{Delivery, Notifications};
use crate::pg::human_bytes;
use crate::retention::{self, RetentionReport};
use crate::storage::ObjectStore;

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    if cfg.databases.is_multi() {
        return run_many(cfg).await;
    }
    let storage = super::open_storage(&cfg.store).await;
    let cancel = super::cancel_on_signal();
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
        let pg_dump = pg_dump_version(std::slice::from_ref(&outcome));
        let metrics = Metrics::new(&outcome.database, &pg_dump);
        let from_store = run_metrics(
            &cfg,
            &cfg.store.prefix,
            &metrics,
            storage.as_ref(),
            &outcome,
            retention_pass,
            delivery,
        )
        .await;
        let unknown: &[&str] = if from_store {
            &[]
        } else {
            &[batch::LAST_SUCCESS]
        };
        batch::publish(&cfg.batch, Command::Backup, &metrics, unknown).await;
    }
    result
}

/// pg_dump's version, from the first attempt that found it.
fn pg_dump_version(outcomes: &[Outcome]) -> String {
    outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok())
        .find_map(|r| crate::pg::tool_version(&r.pg_dump_version))
        .unwrap_or("unknown")
        .to_string()
}

/// Several databases (BACKUP_DATABASES): one line per database, retention
/// per database after its own success, exit 1 if any database failed.
async fn run_many(cfg: Config) -> anyhow::Result<()> {
    let storage = super::open_storage(&cfg.store).await;
    let cancel = super::cancel_on_signal();
    let notifications = Notifications::from_config(&cfg);
    let report = databases::run(&cfg, storage.as_ref(), &cancel, job::Priority::Normal).await?;
    if report.databases.is_empty() {
        anyhow::bail!(
            "backup failed: BACKUP_DATABASES found no database to back up on {}",
            crate::pg::host_label(cfg.dump.database.url_without_password())
        );
    }
    if let Some(g) = &report.globals {
        match &g.result {
            Ok(r) => {
                println!(
                    "globals   {}/{}  {} stored in {:.1}s  sha256 {}",
                    storage.describe(),
                    r.key,
                    human_bytes(r.stored_bytes),
                    g.duration.as_secs_f64(),
                    r.sha256
                );
                let gc = databases::globals_config(&cfg);
                let _ = retention::after_backup(
                    &gc.store.prefix,
                    &cfg.retention,
                    storage.as_ref(),
                    &r.key,
                    Utc::now(),
                )
                .await;
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => println!("globals   not stored (warning): {e}"),
        }
    }
    let pg_dump = pg_dump_version(&report.databases);
    let base = Metrics::new(&report.databases[0].database, &pg_dump);
    let mut from_store = true;
    let mut failed = Vec::new();
    for o in &report.databases {
        let dc = databases::database_config(&cfg, &o.database);
        let mut pass = None;
        match &o.result {
            Ok(r) => {
                tracing::info!(database = %o.database, object = %r.key, "backup succeeded");
                println!(
                    "database  {:?}  {}/{}  {} stored ({} dumped) in {:.1}s  sha256 {}",
                    o.database,
                    storage.describe(),
                    r.key,
                    human_bytes(r.stored_bytes),
                    human_bytes(r.dump_bytes),
                    o.duration.as_secs_f64(),
                    r.sha256
                );
                // This database's own retention, after its own success.
                pass = Some(
                    retention::after_backup(
                        &dc.store.prefix,
                        &dc.retention,
                        storage.as_ref(),
                        &r.key,
                        Utc::now(),
                    )
                    .await,
                );
            }
            Err(e) => {
                tracing::error!(database = %o.database, stage = %e.stage, error = %e.message, "backup failed");
                println!("database  {:?}  FAILED  {e}", o.database);
                failed.push(o.database.clone());
            }
        }
        let delivery = notifications.after_attempt(o, None, None).await;
        if cfg.batch.is_enabled() && !matches!(&o.result, Err(e) if e.is_cancelled()) {
            let view = base.for_database(&o.database);
            from_store &= run_metrics(
                &dc,
                &dc.store.prefix,
                &view,
                storage.as_ref(),
                o,
                pass,
                delivery,
            )
            .await;
        }
    }
    if let Some(g) = &report.globals {
        base.record_globals(g);
    }
    if cfg.batch.is_enabled() && !cancel.is_cancelled() {
        let unknown: &[&str] = if from_store {
            &[]
        } else {
            &[batch::LAST_SUCCESS]
        };
        batch::publish(&cfg.batch, Command::Backup, &base, unknown).await;
    }
    if cancel.is_cancelled() {
        anyhow::bail!("cancelled: backup stopped by a signal");
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "backup failed: {}; the others were stored",
            super::failed_databases(&failed, report.databases.len())
        );
    }
    Ok(())
}

/// The series the daemon would serve after this attempt, recorded into
/// `metrics` (one database's view). A failed run still carries the time of
/// the last success: from the store, or when the store cannot say, from the
/// previous textfile; `false` when the store could not say, so that a push
/// merges rather than erases it.
async fn run_metrics(
    cfg: &Config,
    prefix: &str,
    metrics: &Metrics,
    storage: &dyn ObjectStore,
    outcome: &Outcome,
    retention_pass: Option<Result<RetentionReport, crate::error::JobError>>,
    delivery: Option<Delivery>,
) -> bool {
    let mut from_store = true;
    if outcome.result.is_err() {
        match catalog::list(storage, prefix, Stage::Upload).await {
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
    from_store
}
