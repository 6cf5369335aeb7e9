//! The daemon's rules in paused time, against the memory store: the
//! schedule, skipped and catch-up runs, drills, health, retention turns
//! and shutdown. A fake runner stands in for pg_dump; everything else
//! (retention, metrics, health) is the real code.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::clock::TokioClock;
use crate::config::{Compression, Format};
use crate::http::health_of;
use crate::job::BackupReport;
use crate::storage::faulty::{Faulty, Op};
use crate::storage::memory::MemoryStore;
use crate::storage::ObjectMeta;

use super::*;

const PREFIX: &str = "backup_";

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn config(extra: &[(&str, &str)]) -> Arc<Config> {
    let mut vars: Vec<(String, String)> = [
        ("BACKUP_DATABASE_URL", "postgres://app@db.invalid/app"),
        ("BACKUP_LOCAL_DIR", "/nonexistent"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.dedup_by(|a, b| a.0 == b.0);
    Arc::new(Config::from_vars(vars).expect("test configuration"))
}

/// Writes a backup into the memory store after `took`, as pg_dump would.
struct FakeRunner {
    clock: Arc<TokioClock>,
    store: MemoryStore,
    took: Duration,
    probe_took: Duration,
    fail: AtomicBool,
    backups: AtomicUsize,
    finished: AtomicUsize,
    drills: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
    /// Several databases (BACKUP_DATABASES): the ones found; None: one.
    several: std::sync::Mutex<Option<Vec<String>>>,
    /// Databases whose backups fail.
    failing: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl Runner for FakeRunner {
    async fn backup(&self, cancel: CancellationToken) -> Run {
        let started = self.clock.now();
        self.backups.fetch_add(1, Ordering::SeqCst);
        let now_running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now_running, Ordering::SeqCst);
        let stopped = tokio::select! {
            _ = tokio::time::sleep(self.took) => false,
            _ = cancel.cancelled() => true,
        };
        self.running.fetch_sub(1, Ordering::SeqCst);
        let finished = self.clock.now();
        let several = self.several.lock().unwrap().clone();
        let dbs = several.clone().unwrap_or_else(|| vec!["app".to_string()]);
        let failing = self.failing.lock().unwrap().clone();
        let mut outcomes = Vec::new();
        for db in &dbs {
            let result = if stopped {
                Err(JobError::cancelled(
                    Stage::Dump,
                    "backup stopped by shutdown",
                ))
            } else if self.fail.load(Ordering::SeqCst) || failing.contains(db) {
                Err(JobError::permanent(
                    Stage::Dump,
                    "pg_dump exited with status 1",
                ))
            } else {
                self.finished.fetch_add(1, Ordering::SeqCst);
                let prefix = match &several {
                    Some(_) => naming::database_prefix(PREFIX, db),
                    None => PREFIX.to_string(),
                };
                let key =
                    naming::object_name(&prefix, started, Format::Custom, Compression::DEFAULT);
                self.store
                    .insert(&key, vec![1u8; 100], ObjectMeta::default(), finished);
                Ok(BackupReport {
                    key,
                    dump_bytes: 300,
                    stored_bytes: 100,
                    sha256: String::new(),
                    server_version: "15.0".into(),
                    pg_dump_version: "pg_dump (PostgreSQL) 15.0".into(),
                })
            };
            outcomes.push(Outcome {
                database: db.clone(),
                started,
                finished,
                duration: (finished - started).to_std().unwrap_or_default(),
                result,
            });
        }
        Run {
            databases: outcomes,
            globals: None,
            found: several,
        }
    }

    async fn databases(&self) -> Option<Vec<String>> {
        self.several.lock().unwrap().clone()
    }

    async fn drill(
        &self,
        _cancel: CancellationToken,
    ) -> Vec<(String, Result<DrillReport, JobError>)> {
        self.drills.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        vec![(
            "app".into(),
            Err(JobError::permanent(
                Stage::Restore,
                "table sales.orders is empty",
            )),
        )]
    }

    async fn pg_dump_version(&self) -> String {
        tokio::time::sleep(self.probe_took).await;
        "15.0".into()
    }
}

struct Setup {
    daemon: Arc<Daemon>,
    runner: Arc<FakeRunner>,
    clock: Arc<TokioClock>,
    store: Faulty<MemoryStore>,
}

fn setup(base: &str, extra: &[(&str, &str)]) -> Setup {
    setup_with(base, extra, |_| {})
}

fn setup_with(base: &str, extra: &[(&str, &str)], tune: impl FnOnce(&mut FakeRunner)) -> Setup {
    let cfg = config(extra);
    let clock = Arc::new(TokioClock::starting_at(t(base)));
    let memory = MemoryStore::new();
    let store = Faulty::new(memory.clone());
    let mut runner = FakeRunner {
        clock: clock.clone(),
        store: memory,
        took: Duration::from_secs(10),
        probe_took: Duration::ZERO,
        fail: AtomicBool::new(false),
        backups: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        drills: AtomicUsize::new(0),
        running: AtomicUsize::new(0),
        max_running: AtomicUsize::new(0),
        several: Default::default(),
        failing: Default::default(),
    };
    tune(&mut runner);
    let runner = Arc::new(runner);
    let daemon = Arc::new(Daemon::new(
        cfg.clone(),
        clock.clone(),
        Arc::new(store.clone()),
        runner.clone(),
        Notifications::from_config(&cfg),
    ));
    Setup {
        daemon,
        runner,
        clock,
        store,
    }
}

impl Setup {
    /// The daemon as started by `setup`, but with a changed runner.
    fn rebuild(self, extra: &[(&str, &str)]) -> Self {
        let cfg = config(extra);
        let daemon = Arc::new(Daemon::new(
            cfg.clone(),
            self.clock.clone(),
            Arc::new(self.store.clone()),
            self.runner.clone(),
            Notifications::from_config(&cfg),
        ));
        Setup { daemon, ..self }
    }

    /// Runs the daemon until `for_` has passed, then shuts it down.
    async fn run_for(&self, for_: Duration) {
        self.daemon.serve(tokio::time::sleep(for_)).await;
    }

    fn metric(&self, series: &str) -> f64 {
        let text = self.daemon.metrics().encode();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    fn health(&self) -> (bool, String) {
        let st = self.daemon.state().status.lock().unwrap().clone();
        let state = self.daemon.state();
        health_of(&st, state.started, state.max_age, self.clock.now())
    }

    fn backups(&self) -> Vec<String> {
        self.store
            .inner()
            .keys()
            .into_iter()
            .filter(|k| naming::parse(PREFIX, k).is_some())
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn fires_on_schedule_and_publishes_the_next_run() {
    let s = setup(
        "2026-01-25T02:59:30Z",
        &[("BACKUP_CRON_SCHEDULE", "0 3 * * *")],
    );
    s.run_for(Duration::from_secs(120)).await;
    assert_eq!(s.runner.backups.load(Ordering::SeqCst), 1);
    assert_eq!(s.backups(), vec!["backup_2026-01-25_03-00-00.dump.zst"]);
    let next = s.metric("backup_next_run_timestamp_seconds{database=\"app\"}");
    assert_eq!(next, t("2026-01-26T03:00:00Z").timestamp() as f64);
    let last = s.metric("backup_last_success_timestamp_seconds{database=\"app\"}");
    assert_eq!(last, t("2026-01-25T03:00:10Z").timestamp() as f64);
    assert_eq!(s.metric("backup_attempts_total{database=\"app\"}"), 1.0);
    assert!(s.health().0);
}

#[tokio::test(start_paused = true)]
async fn a_firing_while_a_backup_runs_is_skipped_and_shutdown_cancels_without_a_failure() {
    let s = setup_with(
        "2026-01-25T02:59:30Z",
        &[("BACKUP_CRON_SCHEDULE", "* * * * *")],
        |r| r.took = Duration::from_secs(150),
    );
    // 03:00 starts (until 03:02:30), 03:01 and 03:02 are skipped, 03:03
    // starts, 03:04 is skipped, and the shutdown at 03:04:30 stops it.
    s.run_for(Duration::from_secs(300)).await;
    assert_eq!(s.runner.backups.load(Ordering::SeqCst), 2);
    assert_eq!(s.runner.finished.load(Ordering::SeqCst), 1);
    assert_eq!(
        s.runner.max_running.load(Ordering::SeqCst),
        1,
        "never two at once"
    );
    assert_eq!(s.metric("backup_skipped_runs_total{database=\"app\"}"), 3.0);
    // The cancelled run is neither an attempt nor a failure.
    assert_eq!(s.metric("backup_attempts_total{database=\"app\"}"), 1.0);
    let text = s.daemon.metrics().encode();
    assert!(
        !text.contains("stage=\"cancelled\""),
        "cancellation is not a stage:\n{text}"
    );
    assert!(text
        .lines()
        .filter(|l| l.starts_with("backup_failures_total"))
        .all(|l| l.ends_with(" 0")));
    assert_eq!(s.metric("backup_last_status{database=\"app\"}"), 1.0);
    assert_eq!(s.backups().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_clock_jump_gives_one_catch_up_run_not_a_burst() {
    let s = setup(
        "2026-01-25T02:00:00Z",
        &[("BACKUP_CRON_SCHEDULE", "0 3 * * *")],
    );
    let clock = s.clock.clone();
    // The machine sleeps for three days ten seconds in.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        clock.jump(chrono::Duration::days(3));
    });
    s.run_for(Duration::from_secs(120)).await;
    assert_eq!(
        s.runner.backups.load(Ordering::SeqCst),
        1,
        "three missed firings give one run"
    );
    let next = s.metric("backup_next_run_timestamp_seconds{database=\"app\"}");
    assert_eq!(next, t("2026-01-28T03:00:00Z").timestamp() as f64);
}

#[tokio::test(start_paused = true)]
async fn run_on_startup_runs_once_before_the_schedule() {
    let s = setup(
        "2026-01-25T10:00:00Z",
        &[
            ("BACKUP_CRON_SCHEDULE", "0 3 * * *"),
            ("RUN_ON_STARTUP", "true"),
        ],
    );
    s.run_for(Duration::from_secs(60)).await;
    assert_eq!(s.runner.backups.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn drills_run_on_their_own_schedule_and_failures_count_under_verify() {
    let s = setup(
        "2026-01-25T02:59:30Z",
        &[
            ("BACKUP_CRON_SCHEDULE", "0 3 * * *"),
            ("BACKUP_VERIFY_CRON_SCHEDULE", "30 3 * * *"),
        ],
    );
    s.run_for(Duration::from_secs(45 * 60)).await;
    assert_eq!(s.runner.backups.load(Ordering::SeqCst), 1);
    assert_eq!(s.runner.drills.load(Ordering::SeqCst), 1);
    assert_eq!(
        s.metric("backup_failures_total{database=\"app\",stage=\"verify\"}"),
        1.0
    );
    assert_eq!(
        s.metric("backup_last_verified_timestamp_seconds{database=\"app\"}"),
        0.0
    );
}

#[tokio::test(start_paused = true)]
async fn health_says_starting_then_waits_for_the_first_run_then_turns_503() {
    let s = setup_with(
        "2026-01-25T00:00:00Z",
        &[
            ("BACKUP_CRON_SCHEDULE", "0 3 * * *"),
            ("BACKUP_MAX_AGE_HOURS", "1"),
        ],
        |r| r.probe_took = Duration::from_secs(20),
    );
    let d = s.daemon.clone();
    let served = tokio::spawn(async move {
        d.serve(tokio::time::sleep(Duration::from_secs(4 * 3600)))
            .await
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(s.health(), (true, "starting".to_string()));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (ok, why) = s.health();
    assert!(ok && why.contains("no backup yet"), "{why}");
    // 01:01: older than the maximum age with no success at all.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let (ok, why) = s.health();
    assert!(!ok && why.contains("no successful backup"), "{why}");
    // 03:00 succeeds: healthy again.
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    assert!(s.health().0, "{:?}", s.health());
    served.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_backup_turns_health_503_and_counts_its_stage() {
    let s = setup(
        "2026-01-25T02:59:30Z",
        &[("BACKUP_CRON_SCHEDULE", "0 3 * * *")],
    );
    s.runner.fail.store(true, Ordering::SeqCst);
    s.run_for(Duration::from_secs(120)).await;
    let (ok, why) = s.health();
    assert!(!ok && why.contains("stage dump"), "{why}");
    assert_eq!(
        s.metric("backup_failures_total{database=\"app\",stage=\"dump\"}"),
        1.0
    );
    assert_eq!(s.metric("backup_last_status{database=\"app\"}"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_restart_seeds_the_last_success_from_storage() {
    let s = setup(
        "2026-01-25T12:00:00Z",
        &[("BACKUP_CRON_SCHEDULE", "0 3 * * *")],
    );
    s.store.inner().insert(
        "backup_2026-01-25_03-00-00.dump.zst",
        vec![0u8; 10],
        ObjectMeta::default(),
        t("2026-01-25T03:00:05Z"),
    );
    s.run_for(Duration::from_secs(1)).await;
    assert_eq!(
        s.metric("backup_last_success_timestamp_seconds{database=\"app\"}"),
        t("2026-01-25T03:00:00Z").timestamp() as f64
    );
    assert_eq!(s.metric("backup_stored_objects{database=\"app\"}"), 1.0);
    assert!(s.health().0);
}

/// Old backups that retention deletes after the next success.
fn old_backups(s: &Setup, n: i64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let at = t("2026-01-01T03:00:00Z") + chrono::Duration::days(i);
            let key = naming::object_name(PREFIX, at, Format::Custom, Compression::DEFAULT);
            s.store
                .inner()
                .insert(&key, vec![0u8; 10], ObjectMeta::default(), at);
            key
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_a_retention_pass_within_its_budget() {
    let retention = [
        ("BACKUP_CRON_SCHEDULE", "0 3 * * *"),
        ("BACKUP_RETENTION_DAYS", "7"),
        ("BACKUP_RETENTION_MIN_COUNT", "1"),
    ];
    let s = setup_with("2026-01-25T02:59:50Z", &retention, |r| {
        r.took = Duration::from_secs(1)
    });
    let old = old_backups(&s, 3);
    // Every store call takes 4 s: the pass (list, delete, manifests,
    // uploads: 16 s from 03:00:01) is still running when shutdown comes at
    // 03:00:12.
    s.store.delay(Duration::from_secs(4));
    s.run_for(Duration::from_secs(22)).await;
    let left = s.backups();
    assert!(
        old.iter().all(|k| !left.contains(k)),
        "the pass finished before exit: {left:?}"
    );
    assert_eq!(
        s.metric("backup_retention_deleted_total{database=\"app\"}"),
        3.0
    );

    // A pass that cannot finish in time does not hold the exit.
    let s = s.rebuild(&retention);
    old_backups(&s, 3);
    s.store.delay(Duration::from_secs(60));
    let t0 = tokio::time::Instant::now();
    let shutdown_at = Duration::from_secs(24 * 3600);
    s.run_for(shutdown_at).await;
    let stop_took = t0.elapsed() - shutdown_at;
    assert!(stop_took <= SHUTDOWN_BUDGET, "{stop_took:?}");
}

#[tokio::test(start_paused = true)]
async fn retention_passes_never_overlap() {
    let s = setup_with(
        "2026-01-25T02:58:00Z",
        &[
            ("BACKUP_CRON_SCHEDULE", "* * * * *"),
            ("BACKUP_RETENTION_DAYS", "7"),
        ],
        |r| r.took = Duration::from_secs(1),
    );
    // Each pass takes minutes; backups finish every minute from 03:00.
    s.store.delay(Duration::from_secs(100));
    s.run_for(Duration::from_secs(8 * 60)).await;
    assert!(s.runner.finished.load(Ordering::SeqCst) >= 5);
    assert!(s.store.calls(Op::List) >= 2, "passes ran");
    assert_eq!(s.store.max_in_flight(Op::List), 1, "one pass at a time");
}

#[tokio::test(start_paused = true)]
async fn several_databases_each_have_series_and_a_dropped_one_leaves() {
    let s = setup_with(
        "2026-01-25T02:59:30Z",
        &[
            ("BACKUP_CRON_SCHEDULE", "0 3 * * *"),
            ("BACKUP_DATABASES", "all"),
        ],
        |r| {
            *r.several.lock().unwrap() = Some(vec!["app".into(), "shop".into()]);
            *r.failing.lock().unwrap() = vec!["shop".into()];
        },
    );
    // Before any run: both found at start-up, both exported.
    s.run_for(Duration::from_secs(20)).await;
    for db in ["app", "shop"] {
        assert_eq!(
            s.metric(&format!("backup_attempts_total{{database=\"{db}\"}}")),
            0.0
        );
    }
    s.run_for(Duration::from_secs(120)).await;
    assert_eq!(s.metric("backup_last_status{database=\"app\"}"), 1.0);
    assert_eq!(s.metric("backup_last_status{database=\"shop\"}"), 0.0);
    assert_eq!(
        s.metric("backup_failures_total{database=\"shop\",stage=\"dump\"}"),
        1.0
    );
    assert_eq!(
        s.metric("backup_failures_total{database=\"app\",stage=\"dump\"}"),
        0.0
    );
    // Each database's backup under its own prefix; one failing fails /health.
    let keys = s.store.inner().keys();
    assert!(keys
        .iter()
        .any(|k| k.starts_with("backup_db/app/2026-01-25_03-00-00")));
    assert!(!keys.iter().any(|k| k.starts_with("backup_db/shop/")));
    assert!(!s.health().0);

    // `shop` is dropped: after the next run its series are gone.
    *s.runner.several.lock().unwrap() = Some(vec!["app".into()]);
    s.run_for(Duration::from_secs(24 * 3600)).await;
    let text = s.daemon.metrics().encode();
    assert!(!text.contains("database=\"shop\""), "{text}");
    assert_eq!(s.metric("backup_attempts_total{database=\"app\"}"), 2.0);
    assert!(s.health().0);
}
