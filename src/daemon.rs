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
use crate::{databases, naming, pg, retention, schedule};

/// When the drills started, and how each database's ended.
type DrillResults = (DateTime<Utc>, Vec<(String, Result<DrillReport, JobError>)>);

/// Longest sleep between looks at the wall clock.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// How long an in-flight backup gets to stop cleanly at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(8);
/// All of shutdown, retention and notifications included: `docker stop`
/// allows 10 s before SIGKILL.
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(9500);
/// The start-up probe of the database and pg_dump.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// What one scheduled run did: one outcome per database (one, unless
/// BACKUP_DATABASES), the globals' when they are on, and the databases
/// found when several are backed up (None when they could not be found).
#[derive(Debug)]
pub struct Run {
    pub databases: Vec<Outcome>,
    pub globals: Option<Outcome>,
    pub found: Option<Vec<String>>,
}

impl From<Outcome> for Run {
    fn from(o: Outcome) -> Run {
        Run {
            databases: vec![o],
            globals: None,
            found: None,
        }
    }
}

/// The work the daemon schedules. The real one runs pg_dump and drills;
/// tests pass one that writes to the memory store.
#[async_trait]
pub trait Runner: Send + Sync + 'static {
    /// One run to its end (or until `cancel`).
    async fn backup(&self, cancel: CancellationToken) -> Run;
    /// Restore drills of the newest backup of each database.
    async fn drill(
        &self,
        cancel: CancellationToken,
    ) -> Vec<(String, Result<DrillReport, JobError>)>;
    /// pg_dump's version for `backup_build_info` ("unknown" if not found).
    async fn pg_dump_version(&self) -> String;
    /// With several databases, those found at start-up, so that their
    /// series exist before the first run; None otherwise.
    async fn databases(&self) -> Option<Vec<String>> {
        None
    }
}

/// pg_dump, the store and a scratch database: what `pgbackup run` does.
pub struct JobRunner {
    cfg: Arc<Config>,
    store: Arc<dyn ObjectStore>,
}

#[async_trait]
impl Runner for JobRunner {
    async fn backup(&self, cancel: CancellationToken) -> Run {
        let cfg = &self.cfg;
        let priority = job::Priority::Background;
        if !cfg.databases.is_multi() {
            return job::run(cfg, self.store.as_ref(), &cancel, priority)
                .await
                .into();
        }
        let started = Utc::now();
        match databases::run(cfg, self.store.as_ref(), &cancel, priority).await {
            Ok(r) => Run {
                found: Some(r.databases.iter().map(|o| o.database.clone()).collect()),
                databases: r.databases,
                globals: r.globals,
            },
            // Without the list of databases there is nothing to back up:
            // one failure, under the database pgbackup connects to.
            Err(e) => Outcome {
                database: cfg.dump.database.name().to_string(),
                started,
                finished: Utc::now(),
                duration: (Utc::now() - started).to_std().unwrap_or_default(),
                result: Err(e),
            }
            .into(),
        }
    }

    async fn drill(
        &self,
        cancel: CancellationToken,
    ) -> Vec<(String, Result<DrillReport, JobError>)> {
        let cfg = &self.cfg;
        let base = cfg.drill();
        if !cfg.databases.is_multi() {
            let r = verify::drill_until(&base, self.store.as_ref(), "latest", &cancel).await;
            return vec![(cfg.dump.database.name().to_string(), r)];
        }
        let names = match databases::discover(cfg).await {
            Ok(n) => n,
            Err(e) => return vec![(cfg.dump.database.name().to_string(), Err(e))],
        };
        let mut out = Vec::new();
        for name in names {
            if cancel.is_cancelled() {
                break;
            }
            let mut d = base.clone();
            d.prefix = naming::database_prefix(&cfg.store.prefix, &name);
            d.source = d.source.map(|s| s.with_database(&name));
            let r = verify::drill_until(&d, self.store.as_ref(), "latest", &cancel).await;
            out.push((name, r));
        }
        out
    }

    async fn databases(&self) -> Option<Vec<String>> {
        if !self.cfg.databases.is_multi() {
            return None;
        }
        match tokio::time::timeout(PROBE_TIMEOUT, databases::discover(&self.cfg)).await {
            Ok(Ok(names)) => Some(names),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot list the server's databases at start-up");
                None
            }
            Err(_) => None,
        }
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
    // Point-in-time recovery: the slot is checked before anything else, so
    // a missing privilege stops start-up with what to grant.
    let stop_physical = CancellationToken::new();
    let mut physical = Vec::new();
    if cfg.wal.archive {
        daemon.metrics.enable_physical();
        let mut archiver = crate::wal::archiver::Archiver::new(
            cfg.clone(),
            daemon.store.clone(),
            daemon.metrics.clone(),
        );
        let tools = archiver
            .prepare()
            .await
            .map_err(|e| anyhow::Error::new(e).context("WAL archiving cannot start"))?;
        physical.push(tokio::spawn(archiver.run(tools, stop_physical.clone())));
        physical.push(tokio::spawn(crate::wal::base::schedule(
            cfg.wal.basebackup_cron.schedule().clone(),
            daemon.clock.clone(),
            Arc::new(crate::wal::base::StoreBaseRunner {
                cfg: cfg.clone(),
                storage: daemon.store.clone(),
            }),
            daemon.metrics.clone(),
            stop_physical.clone(),
        )));
    }
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
    stop_physical.cancel();
    for t in physical {
        // What is left in the spool is stored at the next start.
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
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
    /// The databases whose series are exported: the one database, or with
    /// several, those found so far (a dropped one leaves after a run).
    known: Mutex<std::collections::BTreeSet<String>>,
}

impl Daemon {
    pub fn new(
        cfg: Arc<Config>,
        clock: Arc<dyn Clock>,
        store: Arc<dyn ObjectStore>,
        runner: Arc<dyn Runner>,
        notifications: Notifications,
    ) -> Daemon {
        let mut known = std::collections::BTreeSet::new();
        let metrics = if cfg.databases.is_multi() {
            Metrics::without_series("unknown")
        } else {
            known.insert(cfg.dump.database.name().to_string());
            Metrics::new(cfg.dump.database.name(), "unknown")
        };
        let state = Arc::new(AppState {
            database: if cfg.databases.is_multi() {
                "(several: BACKUP_DATABASES)".to_string()
            } else {
                cfg.dump.database.name().to_string()
            },
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
            known: Mutex::new(known),
        }
    }

    /// Database `name`'s view of the metrics, its series exported from now.
    fn view(&self, name: &str) -> Metrics {
        self.known.lock().expect("known").insert(name.to_string());
        self.metrics.for_database(name)
    }

    /// Every exported database's view.
    fn views(&self) -> Vec<Metrics> {
        let known = self.known.lock().expect("known");
        known.iter().map(|d| self.metrics.for_database(d)).collect()
    }

    /// Stops exporting databases a run no longer found (dropped ones).
    fn keep_only(&self, found: &[String]) {
        let mut known = self.known.lock().expect("known");
        known.retain(|d| {
            let keep = found.contains(d);
            if !keep {
                tracing::info!(database = %d, "database no longer found: its series are no longer exported");
                self.metrics.for_database(d).forget();
            }
            keep
        });
    }

    /// Where database `name`'s backups live.
    fn prefix_of(&self, name: &str) -> String {
        if self.cfg.databases.is_multi() {
            naming::database_prefix(&self.cfg.store.prefix, name)
        } else {
            self.cfg.store.prefix.clone()
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
        if let Some(names) = self.runner.databases().await {
            for n in names {
                self.view(&n);
            }
        }
        self.seed_from_storage().await;
        self.state.status.lock().expect("status").starting = false;
    }

    /// The schedule loop; returns the deadline by which shutdown must end.
    async fn schedule(&self, shutdown: impl Future<Output = ()>) -> tokio::time::Instant {
        let cfg = &self.cfg;
        let stop = CancellationToken::new();
        let mut running: Option<JoinHandle<Run>> = None;
        if cfg.schedule.run_on_startup {
            running = Some(self.start_job(&stop));
        }
        let sched = cfg.schedule.cron.schedule();
        let mut next = schedule::next_after(sched, self.clock.now());
        self.publish_next(next);
        // Restore drills on their own schedule (off unless configured).
        let drill_sched = cfg.schedule.verify_cron.as_ref().map(|c| c.schedule());
        let mut next_drill = drill_sched.and_then(|s| schedule::next_after(s, self.clock.now()));
        let mut drill: Option<JoinHandle<DrillResults>> = None;
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
                            self.views().iter().for_each(Metrics::count_skipped);
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

    fn start_drill(&self, stop: &CancellationToken) -> JoinHandle<DrillResults> {
        let (runner, cancel, clock) = (self.runner.clone(), stop.child_token(), self.clock.clone());
        let db = self.cfg.dump.database.name().to_string();
        tokio::spawn(async move {
            let started = clock.now();
            tracing::info!(database = %db, "restore drill started");
            (started, runner.drill(cancel).await)
        })
    }

    fn start_job(&self, stop: &CancellationToken) -> JoinHandle<Run> {
        let (runner, cancel) = (self.runner.clone(), stop.child_token());
        for v in self.views() {
            v.set_in_progress(true);
        }
        self.state.status.lock().expect("status").in_progress = true;
        let db = self.cfg.dump.database.name().to_string();
        tokio::spawn(async move {
            tracing::info!(database = %db, "backup started");
            runner.backup(cancel).await
        })
    }

    /// After each run: record each database's attempt, then its retention
    /// (after its own success) and notifications as tracked tasks that
    /// never delay the schedule.
    fn after_job(&self, run: Run, next: Option<DateTime<Utc>>) {
        let previous_ok = self.state.status.lock().expect("status").last_attempt_ok;
        if let Some(found) = &run.found {
            self.keep_only(found);
        }
        let several = run.databases.len() > 1;
        let all_ok = run.databases.iter().all(|o| o.result.is_ok());
        for o in run.databases {
            let view = self.view(&o.database);
            record(&o, &view, &self.state, next);
            if let Ok(report) = &o.result {
                self.spawn_retention(
                    self.prefix_of(&o.database),
                    report.key.clone(),
                    Some(view.clone()),
                );
            }
            // A backup stopped by our own shutdown is not news to anyone.
            if !matches!(&o.result, Err(e) if e.is_cancelled()) {
                self.notify(o, previous_ok, next, view);
            }
        }
        if let Some(g) = run.globals {
            self.metrics.record_globals(&g);
            if let Ok(report) = &g.result {
                let prefix = naming::globals_prefix(&self.cfg.store.prefix);
                self.spawn_retention(prefix, report.key.clone(), None);
            }
        }
        if several {
            // /health speaks for the whole run.
            let mut st = self.state.status.lock().expect("status");
            if st.last_attempt_ok.is_some() {
                st.last_attempt_ok = Some(all_ok);
            }
        }
    }

    /// One retention pass of `prefix` after `key` was stored, queued behind
    /// any other pass; its counts go to `view` (none for the globals).
    fn spawn_retention(&self, prefix: String, key: String, view: Option<Metrics>) {
        let (cfg, store, turn, clock) = (
            self.cfg.clone(),
            self.store.clone(),
            self.retention_turn.clone(),
            self.clock.clone(),
        );
        self.tasks.spawn(async move {
            let _turn = turn.lock().await;
            let pass =
                retention::after_backup(&prefix, &cfg.retention, store.as_ref(), &key, clock.now())
                    .await;
            match (pass, view) {
                (Ok(r), Some(m)) => {
                    m.add_retention_deleted(r.deleted.len() as u64);
                    m.set_stored(r.stored_objects, r.stored_bytes);
                }
                // Logged by retention itself; the backup stays a success.
                (Err(_), Some(m)) => m.count_failure(Stage::Retention),
                (_, None) => {}
            }
        });
    }

    /// Sends what the outcome calls for on a tracked task, and counts the delivery.
    fn notify(
        &self,
        o: Outcome,
        previous_ok: Option<bool>,
        next: Option<DateTime<Utc>>,
        metrics: Metrics,
    ) {
        let notifications = self.notifications.clone();
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
        results: Vec<(String, Result<DrillReport, JobError>)>,
        next: Option<DateTime<Utc>>,
    ) {
        for (db, result) in results {
            self.after_one_drill(started, &db, result, next);
        }
    }

    fn after_one_drill(
        &self,
        started: DateTime<Utc>,
        db: &str,
        result: Result<DrillReport, JobError>,
        next: Option<DateTime<Utc>>,
    ) {
        let view = self.view(db);
        match result {
            Ok(r) => {
                view.set_verified(self.clock.now());
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
                view.count_failure(Stage::Verify);
                tracing::error!(database = %db, error = %e.message, "restore drill failed");
                let now = self.clock.now();
                let o = Outcome {
                    database: db.to_string(),
                    started,
                    finished: now,
                    duration: (now - started).to_std().unwrap_or_default(),
                    result: Err(e.at(Stage::Verify)),
                };
                self.notify(o, None, next, view);
            }
        }
    }

    fn publish_next(&self, next: Option<DateTime<Utc>>) {
        for v in self.views() {
            v.set_next_run(next);
        }
        self.state.status.lock().expect("status").next_run = next;
    }

    /// After a restart, the newest backup in storage is the last success:
    /// the metrics should not claim that no backup ever succeeded.
    async fn seed_from_storage(&self) {
        if self.cfg.databases.is_multi() {
            return self.seed_several().await;
        }
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

impl Daemon {
    /// [`Daemon::seed_from_storage`] with several databases: each found
    /// database's newest backup and count, and the globals'.
    async fn seed_several(&self) {
        let all = match crate::catalog::list_all(
            self.store.as_ref(),
            &self.cfg.store.prefix,
            Stage::Upload,
        )
        .await
        {
            Ok(a) => a,
            Err(e) => return tracing::warn!(error = %e, "cannot list existing backups at start-up"),
        };
        let known: Vec<String> = self.known.lock().expect("known").iter().cloned().collect();
        let mut oldest_newest: Option<DateTime<Utc>> = None;
        for db in &known {
            let mine: Vec<_> = all
                .iter()
                .filter(|(s, _)| matches!(s, crate::catalog::Scope::Database(d) if d == db))
                .map(|(_, b)| b)
                .collect();
            let view = self.metrics.for_database(db);
            view.set_stored(mine.len() as u64, mine.iter().map(|b| b.size).sum());
            if let Some(newest) = mine.first() {
                view.seed_last_success(newest.time);
                oldest_newest = Some(oldest_newest.map_or(newest.time, |t| t.min(newest.time)));
            }
        }
        if let Some((_, g)) = all
            .iter()
            .find(|(s, _)| *s == crate::catalog::Scope::Globals)
        {
            self.metrics.seed_globals(g.time);
        }
        if let Some(t) = oldest_newest {
            self.state.status.lock().expect("status").last_success = Some(t);
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
