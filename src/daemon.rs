//! `pgbackup run`: the schedule loop, the HTTP server, and what happens
//! after each backup (metrics, health status, log line, retention,
//! notifications).
//!
//! The HTTP server listens first; the start-up probes (pg_dump's version,
//! the backups already stored) run behind it, and `/health` says
//! `starting` until they end. The next firing is computed from the wall
//! clock each time, so a clock jump or a suspended machine gives one
//! catch-up run, never a burst. Two backups never overlap: a firing while
//! one runs is skipped, logged and counted. Retention passes and
//! notifications are tracked tasks: passes run one at a time, and shutdown
//! waits for them within its budget. Shutdown is a parameter (a future), as
//! in mini-redis: `main` passes SIGTERM/SIGINT, tests pass anything.
//!
//! The time comes from a [`Clock`] and the work from a [`Runner`], so the
//! rules here are unit-tested in paused time against the memory store.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::error::{JobError, Stage};
use crate::http::{self, AppState, LastError, Status};
use crate::job::{self, Outcome};
use crate::metrics::Metrics;
use crate::notify::Notifications;
use crate::storage::ObjectStore;
use crate::verify::{self, DrillReport};
use crate::{naming, pg, retention, schedule};

/// When a drill started, and how it ended.
type DrillResult = (DateTime<Utc>, Result<DrillReport, JobError>);

/// Longest sleep between looks at the wall clock.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// How long an in-flight backup gets to stop cleanly at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(8);
/// All of shutdown, retention and notifications included: `docker stop`
/// allows 10 s before SIGKILL.
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(9500);
/// The start-up probe of the database and pg_dump.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The work the daemon schedules. The real one runs pg_dump and drills;
/// tests pass one that writes to the memory store.
#[async_trait]
pub trait Runner: Send + Sync + 'static {
    /// One backup to its end (or until `cancel`).
    async fn backup(&self, cancel: CancellationToken) -> Outcome;
    /// One restore drill of the newest backup.
    async fn drill(&self, cancel: CancellationToken) -> Result<DrillReport, JobError>;
    /// pg_dump's version for `backup_build_info` ("unknown" if not found).
    async fn pg_dump_version(&self) -> String;
}

/// pg_dump, the store and a scratch database: what `pgbackup run` does.
pub struct JobRunner {
    cfg: Arc<Config>,
    store: Arc<dyn ObjectStore>,
}

#[async_trait]
impl Runner for JobRunner {
    async fn backup(&self, cancel: CancellationToken) -> Outcome {
        job::run(
            &self.cfg,
            self.store.as_ref(),
            &cancel,
            job::Priority::Background,
        )
        .await
    }

    async fn drill(&self, cancel: CancellationToken) -> Result<DrillReport, JobError> {
        verify::drill_until(&self.cfg.drill(), self.store.as_ref(), "latest", &cancel).await
    }

    async fn pg_dump_version(&self) -> String {
        let cfg = &self.cfg;
        let probe = async {
            let server = pg::server_info(&cfg.dump.database).await?;
            let tools = pg::find_tools(server.major(), cfg.dump.pg_bin_dir.as_deref()).await?;
            Ok::<_, JobError>(tools.version_line)
        };
        match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(line)) => pg::tool_version(&line).unwrap_or("unknown").to_string(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot determine the pg_dump version at start-up");
                "unknown".into()
            }
            Err(_) => "unknown".into(),
        }
    }
}

pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    let security = http::Security::new(cfg.daemon.web.as_ref())?;
    let listener = std::net::TcpListener::bind(cfg.daemon.listen).with_context(|| {
        format!(
            "cannot listen on BACKUP_LISTEN_ADDRESS {}",
            cfg.daemon.listen
        )
    })?;
    let store = crate::storage::open(&cfg.store.backend).await;
    let runner = Arc::new(JobRunner {
        cfg: cfg.clone(),
        store: store.clone(),
    });
    let daemon = Daemon::new(
        cfg.clone(),
        Arc::new(SystemClock),
        store,
        runner,
        Notifications::from_config(&cfg),
    );
    let stop_http = CancellationToken::new();
    let server = http::spawn(listener, daemon.state.clone(), security, stop_http.clone())
        .context("cannot start the HTTP server")?;
    tracing::info!(
        listen = %cfg.daemon.listen,
        serving = %cfg.daemon.web.as_ref().map(|w| w.describe()).unwrap_or_else(|| "http, no basic auth".into()),
        schedule = %cfg.schedule.cron,
        storage = %daemon.store.describe(),
        database = %cfg.dump.database.name(),
        "pgbackup daemon started"
    );
    daemon.serve(shutdown).await;
    stop_http.cancel();
    let _ = server.await;
    Ok(())
}

/// The daemon's state and what it needs; [`Daemon::serve`] is its life.
pub struct Daemon {
    cfg: Arc<Config>,
    clock: Arc<dyn Clock>,
    store: Arc<dyn ObjectStore>,
    runner: Arc<dyn Runner>,
    metrics: Metrics,
    state: Arc<AppState>,
    notifications: Notifications,
    /// Retention passes and notification deliveries.
    tasks: TaskTracker,
    /// Held by each retention pass: passes queue, never overlap.
    retention_turn: Arc<tokio::sync::Mutex<()>>,
}

impl Daemon {
    pub fn new(
        cfg: Arc<Config>,
        clock: Arc<dyn Clock>,
        store: Arc<dyn ObjectStore>,
        runner: Arc<dyn Runner>,
        notifications: Notifications,
    ) -> Daemon {
        let metrics = Metrics::new(cfg.dump.database.name(), "unknown");
        let state = Arc::new(AppState {
            database: cfg.dump.database.name().to_string(),
            metrics: metrics.clone(),
            status: Mutex::new(Status {
                starting: true,
                ..Status::default()
            }),
            max_age: cfg.daemon.max_age,
            started: clock.now(),
            clock: clock.clone(),
        });
        Daemon {
            cfg,
            clock,
            store,
            runner,
            metrics,
            state,
            notifications,
            tasks: TaskTracker::new(),
            retention_turn: Arc::default(),
        }
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Start-up probes, then the schedule until `shutdown`, then a stop
    /// within the shutdown budget (9.5 s).
    pub async fn serve(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        tokio::select! {
            _ = self.start_up() => {}
            _ = &mut shutdown => {
                tracing::info!("shutting down during start-up");
                return;
            }
        }
        let deadline = self.schedule(shutdown).await;
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                "retention or notifications still running at the end of the shutdown budget"
            );
        }
    }

    async fn start_up(&self) {
        let version = self.runner.pg_dump_version().await;
        self.metrics.set_pg_dump_version(&version);
        self.seed_from_storage().await;
        self.state.status.lock().expect("status").starting = false;
    }

    /// The schedule loop; returns the deadline by which shutdown must end.
    async fn schedule(&self, shutdown: impl Future<Output = ()>) -> tokio::time::Instant {
        let cfg = &self.cfg;
        let stop = CancellationToken::new();
        let mut running: Option<JoinHandle<Outcome>> = None;
        if cfg.schedule.run_on_startup {
            running = Some(self.start_job(&stop));
        }
        let sched = cfg.schedule.cron.schedule();
        let mut next = schedule::next_after(sched, self.clock.now());
        self.publish_next(next);
        // Restore drills on their own schedule (off unless configured).
        let drill_sched = cfg.schedule.verify_cron.as_ref().map(|c| c.schedule());
        let mut next_drill = drill_sched.and_then(|s| schedule::next_after(s, self.clock.now()));
        let mut drill: Option<JoinHandle<DrillResult>> = None;
        tokio::pin!(shutdown);

        loop {
            let now = self.clock.now();
            let nap = schedule::sleep_before(next, now, MAX_SLEEP)
                .min(schedule::sleep_before(next_drill, now, MAX_SLEEP));
            tokio::select! {
                _ = tokio::time::sleep(nap) => {
                    let now = self.clock.now();
                    if schedule::is_due(next_drill, now) {
                        if drill.is_some() {
                            tracing::warn!("scheduled restore drill skipped: the previous one is still running");
                        } else {
                            drill = Some(self.start_drill(&stop));
                        }
                        next_drill = drill_sched.and_then(|s| schedule::next_after(s, now));
                    }
                    if schedule::is_due(next, now) {
                        if running.is_some() {
                            self.metrics.count_skipped();
                            tracing::warn!(database = %cfg.dump.database.name(), "scheduled run skipped: the previous backup is still running");
                        } else {
                            running = Some(self.start_job(&stop));
                        }
                        next = schedule::next_after(sched, now);
                        self.publish_next(next);
                    }
                }
                res = async { running.as_mut().expect("guarded").await }, if running.is_some() => {
                    running = None;
                    match res {
                        Ok(outcome) => self.after_job(outcome, next),
                        Err(e) => tracing::error!(error = %e, "backup task panicked"),
                    }
                }
                res = async { drill.as_mut().expect("guarded").await }, if drill.is_some() => {
                    drill = None;
                    match res {
                        Ok((started, result)) => self.after_drill(started, result, next),
                        Err(e) => tracing::error!(error = %e, "drill task panicked"),
                    }
                }
                _ = &mut shutdown => break,
            }
        }

        tracing::info!("shutting down");
        let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET;
        stop.cancel();
        if let Some(job) = running {
            match tokio::time::timeout(STOP_GRACE, job).await {
                Ok(Ok(outcome)) => self.after_job(outcome, None),
                Ok(Err(e)) => tracing::error!(error = %e, "backup task panicked"),
                Err(_) => tracing::error!("the running backup did not stop within {STOP_GRACE:?}"),
            }
        }
        if let Some(d) = drill {
            // drill_until drops its scratch database when cancelled.
            let _ = tokio::time::timeout_at(deadline, d).await;
        }
        deadline
    }

    fn start_drill(&self, stop: &CancellationToken) -> JoinHandle<DrillResult> {
        let (runner, cancel, clock) = (self.runner.clone(), stop.child_token(), self.clock.clone());
        let db = self.cfg.dump.database.name().to_string();
        tokio::spawn(async move {
            let started = clock.now();
            tracing::info!(database = %db, "restore drill started");
            (started, runner.drill(cancel).await)
        })
    }

    fn start_job(&self, stop: &CancellationToken) -> JoinHandle<Outcome> {
        let (runner, cancel) = (self.runner.clone(), stop.child_token());
        self.metrics.set_in_progress(true);
        self.state.status.lock().expect("status").in_progress = true;
        let db = self.cfg.dump.database.name().to_string();
        tokio::spawn(async move {
            tracing::info!(database = %db, "backup started");
            runner.backup(cancel).await
        })
    }

    /// After each attempt: record it, then retention (after a success) and
    /// notifications as tracked tasks that never delay the schedule.
    fn after_job(&self, o: Outcome, next: Option<DateTime<Utc>>) {
        let previous_ok = self.state.status.lock().expect("status").last_attempt_ok;
        record(&o, &self.metrics, &self.state, next);
        if let Ok(report) = &o.result {
            let (cfg, store, metrics, key, turn, clock) = (
                self.cfg.clone(),
                self.store.clone(),
                self.metrics.clone(),
                report.key.clone(),
                self.retention_turn.clone(),
                self.clock.clone(),
            );
            self.tasks.spawn(async move {
                let _turn = turn.lock().await;
                let pass = retention::after_backup(
                    &cfg.store.prefix,
                    &cfg.retention,
                    store.as_ref(),
                    &key,
                    clock.now(),
                )
                .await;
                match pass {
                    Ok(r) => {
                        metrics.add_retention_deleted(r.deleted.len() as u64);
                        metrics.set_stored(r.stored_objects, r.stored_bytes);
                    }
                    // Logged by retention itself; the backup stays a success.
                    Err(_) => metrics.count_failure(Stage::Retention),
                }
            });
        }
        // A backup stopped by our own shutdown is not news to anyone.
        if matches!(&o.result, Err(e) if e.is_cancelled()) {
            return;
        }
        self.notify(o, previous_ok, next);
    }

    /// Sends what the outcome calls for on a tracked task, and counts the delivery.
    fn notify(&self, o: Outcome, previous_ok: Option<bool>, next: Option<DateTime<Utc>>) {
        let (notifications, metrics) = (self.notifications.clone(), self.metrics.clone());
        self.tasks.spawn(async move {
            if let Some(d) = notifications.after_attempt(&o, previous_ok, next).await {
                metrics.count_delivery(matches!(d, crate::notify::Delivery::Delivered));
            }
        });
    }

    /// A drill's result: the verified timestamp, or a `verify` failure that
    /// is notified like a failed backup.
    fn after_drill(
        &self,
        started: DateTime<Utc>,
        result: Result<DrillReport, JobError>,
        next: Option<DateTime<Utc>>,
    ) {
        let db = self.cfg.dump.database.name();
        match result {
            Ok(r) => {
                self.metrics.set_verified(self.clock.now());
                tracing::info!(
                    database = %db,
                    object = %r.key,
                    time_to_recover_s = format!("{:.2}", r.time_to_recover.as_secs_f64()),
                    tables = r.tables,
                    "restore drill passed"
                );
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                self.metrics.count_failure(Stage::Verify);
                tracing::error!(database = %db, error = %e.message, "restore drill failed");
                let now = self.clock.now();
                let o = Outcome {
                    database: db.to_string(),
                    started,
                    finished: now,
                    duration: (now - started).to_std().unwrap_or_default(),
                    result: Err(e.at(Stage::Verify)),
                };
                self.notify(o, None, next);
            }
        }
    }

    fn publish_next(&self, next: Option<DateTime<Utc>>) {
        self.metrics.set_next_run(next);
        self.state.status.lock().expect("status").next_run = next;
    }

    /// After a restart, the newest backup in storage is the last success:
    /// the metrics should not claim that no backup ever succeeded.
    async fn seed_from_storage(&self) {
        let prefix = &self.cfg.store.prefix;
        match self.store.list(prefix).await {
            Ok(objects) => {
                let ours: Vec<_> = objects
                    .iter()
                    .filter_map(|o| naming::parse(prefix, &o.key).map(|p| (p.time, o.size)))
                    .collect();
                self.metrics
                    .set_stored(ours.len() as u64, ours.iter().map(|(_, s)| s).sum());
                if let Some((newest, _)) = ours.iter().max_by_key(|(t, _)| *t) {
                    self.metrics.seed_last_success(*newest);
                    self.state.status.lock().expect("status").last_success = Some(*newest);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list existing backups at start-up"),
        }
    }
}

/// Records what a backup did: metrics, /health, one log line.
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

#[cfg(test)]
mod tests;
