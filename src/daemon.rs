//! `pgbackup run`: the schedule loop, the HTTP server, and what happens
//! after each backup (metrics, health status, log line).
//!
//! The next firing is computed from the wall clock each time, so a clock
//! jump or a suspended machine gives one catch-up run, never a burst. Two
//! backups never overlap: a firing while one runs is skipped, logged and
//! counted. Shutdown is a parameter (a future), as in mini-redis: `main`
//! passes SIGTERM/SIGINT, tests pass anything.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{self, AppState, LastError, Status};
use crate::job::{self, Outcome};
use crate::metrics::Metrics;
use crate::notify::Notifications;
use crate::storage::ObjectStore;
use crate::verify::{self, DrillReport};
use crate::{naming, pg, retention, schedule};

/// When a drill started, and how it ended.
type DrillResult = (DateTime<Utc>, Result<DrillReport, crate::error::JobError>);

/// Longest sleep between looks at the wall clock.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// How long an in-flight backup gets to stop cleanly at shutdown; `docker
/// stop` allows 10 s before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(8);

pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    let storage = crate::storage::open(&cfg.store.backend).await;
    let listener = std::net::TcpListener::bind(cfg.daemon.listen).with_context(|| {
        format!(
            "cannot listen on BACKUP_LISTEN_ADDRESS {}",
            cfg.daemon.listen
        )
    })?;

    let metrics = Metrics::new(cfg.dump.database.name(), &pg_dump_version(&cfg).await);
    let state = Arc::new(AppState {
        database: cfg.dump.database.name().to_string(),
        metrics: metrics.clone(),
        status: Mutex::new(Status::default()),
        max_age: cfg.daemon.max_age,
        started: Utc::now(),
    });
    seed_from_storage(&cfg, storage.as_ref(), &state).await;

    let notifications = Notifications::from_config(&cfg);
    let after = After {
        cfg: cfg.clone(),
        storage: storage.clone(),
        metrics: metrics.clone(),
        state: state.clone(),
        notifications,
    };

    let stop = CancellationToken::new();
    let server = http::spawn(listener, state.clone(), stop.clone())
        .context("cannot start the HTTP server")?;
    tracing::info!(
        listen = %cfg.daemon.listen,
        schedule = %cfg.schedule.cron,
        storage = %storage.describe(),
        database = %cfg.dump.database.name(),
        "pgbackup daemon started"
    );

    let mut running: Option<JoinHandle<Outcome>> = None;
    if cfg.schedule.run_on_startup {
        running = Some(start_job(&cfg, &storage, &metrics, &state, &stop));
    }
    let mut next = schedule::next_after(cfg.schedule.cron.schedule(), Utc::now());
    publish_next(&metrics, &state, next);
    // Restore drills on their own schedule (off unless configured).
    let drill_sched = cfg.schedule.verify_cron.as_ref().map(|c| c.schedule());
    let mut next_drill = drill_sched.and_then(|s| schedule::next_after(s, Utc::now()));
    let mut drill: Option<JoinHandle<DrillResult>> = None;
    tokio::pin!(shutdown);

    loop {
        let now = Utc::now();
        let nap = schedule::sleep_before(next, now, MAX_SLEEP)
            .min(schedule::sleep_before(next_drill, now, MAX_SLEEP));
        tokio::select! {
            _ = tokio::time::sleep(nap) => {
                let now = Utc::now();
                if schedule::is_due(next_drill, now) {
                    if drill.is_some() {
                        tracing::warn!("scheduled restore drill skipped: the previous one is still running");
                    } else {
                        drill = Some(start_drill(&cfg, &storage, &stop));
                    }
                    next_drill = drill_sched.and_then(|s| schedule::next_after(s, now));
                }
                if schedule::is_due(next, now) {
                    if running.is_some() {
                        metrics.count_skipped();
                        tracing::warn!(database = %cfg.dump.database.name(), "scheduled run skipped: the previous backup is still running");
                    } else {
                        running = Some(start_job(&cfg, &storage, &metrics, &state, &stop));
                    }
                    next = schedule::next_after(cfg.schedule.cron.schedule(), now);
                    publish_next(&metrics, &state, next);
                }
            }
            res = async { running.as_mut().expect("guarded").await }, if running.is_some() => {
                running = None;
                match res {
                    Ok(outcome) => after.job(outcome, next),
                    Err(e) => tracing::error!(error = %e, "backup task panicked"),
                }
            }
            res = async { drill.as_mut().expect("guarded").await }, if drill.is_some() => {
                drill = None;
                match res {
                    Ok((started, result)) => after.drill(started, result, next),
                    Err(e) => tracing::error!(error = %e, "drill task panicked"),
                }
            }
            _ = &mut shutdown => break,
        }
    }

    tracing::info!("shutting down");
    stop.cancel();
    if let Some(job) = running {
        match tokio::time::timeout(STOP_GRACE, job).await {
            Ok(Ok(outcome)) => after.job(outcome, None),
            Ok(Err(e)) => tracing::error!(error = %e, "backup task panicked"),
            Err(_) => tracing::error!("the running backup did not stop within {STOP_GRACE:?}"),
        }
    }
    if let Some(d) = drill {
        // drill_until drops its scratch database when cancelled.
        let _ = tokio::time::timeout(STOP_GRACE, d).await;
    }
    let _ = server.await;
    Ok(())
}

fn start_drill(
    cfg: &Arc<Config>,
    storage: &Arc<dyn ObjectStore>,
    stop: &CancellationToken,
) -> JoinHandle<DrillResult> {
    let (cfg, storage, cancel) = (cfg.clone(), storage.clone(), stop.child_token());
    tokio::spawn(async move {
        let started = Utc::now();
        tracing::info!(database = %cfg.dump.database.name(), "restore drill started");
        (
            started,
            verify::drill_until(&cfg.drill(), storage.as_ref(), "latest", &cancel).await,
        )
    })
}

fn start_job(
    cfg: &Arc<Config>,
    storage: &Arc<dyn ObjectStore>,
    metrics: &Metrics,
    state: &Arc<AppState>,
    stop: &CancellationToken,
) -> JoinHandle<Outcome> {
    let (cfg, storage, metrics, state) =
        (cfg.clone(), storage.clone(), metrics.clone(), state.clone());
    let cancel = stop.child_token();
    metrics.set_in_progress(true);
    state.status.lock().expect("status").in_progress = true;
    tokio::spawn(async move {
        tracing::info!(database = %cfg.dump.database.name(), "backup started");
        job::run(&cfg, storage.as_ref(), &cancel, job::Priority::Background).await
    })
}

/// What happens after each attempt. Retention and notifications run on
/// their own tasks: they never delay the schedule.
struct After {
    cfg: Arc<Config>,
    storage: Arc<dyn ObjectStore>,
    metrics: Metrics,
    state: Arc<AppState>,
    notifications: Notifications,
}

impl After {
    fn job(&self, o: Outcome, next: Option<DateTime<Utc>>) {
        let previous_ok = self.state.status.lock().expect("status").last_attempt_ok;
        record(&o, &self.metrics, &self.state, next);
        if let Ok(report) = &o.result {
            let (cfg, storage, metrics, report) = (
                self.cfg.clone(),
                self.storage.clone(),
                self.metrics.clone(),
                report.clone(),
            );
            tokio::spawn(async move {
                match retention::after_backup(&cfg, storage.as_ref(), &report.key).await {
                    Ok(r) => {
                        metrics.add_retention_deleted(r.deleted.len() as u64);
                        metrics.set_stored(r.stored_objects, r.stored_bytes);
                    }
                    // Logged by retention itself; the backup stays a success.
                    Err(_) => metrics.count_failure(crate::error::Stage::Retention),
                }
            });
        }
        // A backup stopped by our own shutdown is not news to anyone.
        if matches!(&o.result, Err(e) if e.is_cancelled()) {
            return;
        }
        self.notify(o, previous_ok, next);
    }

    /// Sends what the outcome calls for on its own task, and counts the delivery.
    fn notify(&self, o: Outcome, previous_ok: Option<bool>, next: Option<DateTime<Utc>>) {
        let (notifications, metrics) = (self.notifications.clone(), self.metrics.clone());
        tokio::spawn(async move {
            if let Some(d) = notifications.after_attempt(&o, previous_ok, next).await {
                metrics.count_delivery(matches!(d, crate::notify::Delivery::Delivered));
            }
        });
    }
}

/// Records what a backup did: metrics, /health, one log line.
impl After {
    /// A drill's result: the verified timestamp, or a `verify` failure that
    /// is notified like a failed backup.
    fn drill(
        &self,
        started: DateTime<Utc>,
        result: Result<DrillReport, crate::error::JobError>,
        next: Option<DateTime<Utc>>,
    ) {
        match result {
            Ok(r) => {
                self.metrics.set_verified(Utc::now());
                tracing::info!(
                    database = %self.cfg.dump.database.name(),
                    object = %r.key,
                    time_to_recover_s = format!("{:.2}", r.time_to_recover.as_secs_f64()),
                    tables = r.tables,
                    "restore drill passed"
                );
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                self.metrics.count_failure(crate::error::Stage::Verify);
                tracing::error!(database = %self.cfg.dump.database.name(), error = %e.message, "restore drill failed");
                let o = Outcome {
                    database: self.cfg.dump.database.name().to_string(),
                    started,
                    finished: Utc::now(),
                    duration: (Utc::now() - started).to_std().unwrap_or_default(),
                    result: Err(e.at(crate::error::Stage::Verify)),
                };
                self.notify(o, None, next);
            }
        }
    }
}

fn record(o: &Outcome, metrics: &Metrics, state: &AppState, next: Option<DateTime<Utc>>) {
    metrics.set_in_progress(false);
    metrics.record(o);
    if let Err(e) = &o.result {
        if e.is_cancelled() {
            state.status.lock().expect("status").in_progress = false;
            tracing::info!(database = %o.database, "backup cancelled by shutdown; nothing was stored");
            return;
        }
    }
    let mut st = state.status.lock().expect("status");
    st.in_progress = false;
    st.last_attempt = Some(o.finished);
    st.last_attempt_ok = Some(o.result.is_ok());
    let next_s = next.map(|n| n.to_rfc3339()).unwrap_or_else(|| "-".into());
    match &o.result {
        Ok(r) => {
            st.last_success = Some(o.finished);
            st.last_object = Some(r.key.clone());
            tracing::info!(
                database = %o.database,
                outcome = "success",
                duration_s = format!("{:.2}", o.duration.as_secs_f64()),
                stored_bytes = r.stored_bytes,
                dump_bytes = r.dump_bytes,
                object = %r.key,
                next_run = %next_s,
                "backup succeeded"
            );
        }
        Err(e) => {
            st.last_error = Some(LastError {
                stage: e.stage.to_string(),
                message: e.message.clone(),
                at: o.finished,
            });
            tracing::error!(
                database = %o.database,
                outcome = "failure",
                duration_s = format!("{:.2}", o.duration.as_secs_f64()),
                stage = %e.stage,
                error = %e.message,
                next_run = %next_s,
                "backup failed"
            );
        }
    }
}

fn publish_next(metrics: &Metrics, state: &AppState, next: Option<DateTime<Utc>>) {
    metrics.set_next_run(next);
    state.status.lock().expect("status").next_run = next;
}

/// After a restart, the newest backup in storage is the last success: the
/// metrics should not claim that no backup ever succeeded.
async fn seed_from_storage(cfg: &Config, storage: &dyn ObjectStore, state: &AppState) {
    match storage.list(&cfg.store.prefix).await {
        Ok(objects) => {
            let ours: Vec<_> = objects
                .iter()
                .filter_map(|o| naming::parse(&cfg.store.prefix, &o.key).map(|p| (p.time, o.size)))
                .collect();
            state
                .metrics
                .set_stored(ours.len() as u64, ours.iter().map(|(_, s)| s).sum());
            if let Some((newest, _)) = ours.iter().max_by_key(|(t, _)| *t) {
                state.metrics.seed_last_success(*newest);
                state.status.lock().expect("status").last_success = Some(*newest);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list existing backups at start-up"),
    }
}

/// pg_dump's version for `backup_build_info`; "unknown" while the database
/// cannot be reached (the first backup reports why).
async fn pg_dump_version(cfg: &Config) -> String {
    let probe = async {
        let server = pg::server_info(&cfg.dump.database).await?;
        let tools = pg::find_tools(server.major(), cfg.dump.pg_bin_dir.as_deref()).await?;
        Ok::<_, crate::error::JobError>(tools.version_line)
    };
    match tokio::time::timeout(Duration::from_secs(15), probe).await {
        Ok(Ok(line)) => line
            .split(')')
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("unknown")
            .to_string(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot determine the pg_dump version at start-up");
            "unknown".into()
        }
        Err(_) => "unknown".into(),
    }
}
