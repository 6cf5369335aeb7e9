//! The Prometheus metrics of the contract, in OpenMetrics text.
//!
//! Metrics only read reports of what happened (a job's [`Outcome`], a
//! retention report, a delivery result); they never drive anything. Every
//! series that will ever exist is created at start-up with value 0, and the
//! label sets are fixed: `database`, plus `stage` or `result`.
//!
//! prometheus-client appends `_total` to counters and `_info` to info
//! metrics itself, so counters are registered without the suffix.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::error::Stage;
use crate::job::Outcome;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type F64Gauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Db {
    database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DbStage {
    database: String,
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DbResult {
    database: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: String,
    pg_dump_version: String,
}

/// Result label values of webhook deliveries.
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

/// Buckets for backup durations: seconds to hours.
const DURATION_BUCKETS: [f64; 13] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The series with no `database` label (the globals').
type NoLabels = Vec<(String, String)>;

/// All metrics, seen from one database: the methods record for that
/// database, [`Metrics::for_database`] gives another database's view of the
/// same registry. Cheap to clone (shared atomics).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    db: Db,
    /// Known once the start-up probe has found pg_dump; the HTTP server
    /// answers before that.
    pg_dump_version: Arc<RwLock<String>>,
    last_success: Family<Db, F64Gauge>,
    last_attempt: Family<Db, F64Gauge>,
    last_duration: Family<Db, F64Gauge>,
    last_size: Family<Db, Gauge>,
    last_dump: Family<Db, Gauge>,
    last_status: Family<Db, Gauge>,
    duration: Family<Db, Histogram, fn() -> Histogram>,
    attempts: Family<Db, Counter>,
    failures: Family<DbStage, Counter>,
    in_progress: Family<Db, Gauge>,
    next_run: Family<Db, F64Gauge>,
    stored_objects: Family<Db, Gauge>,
    stored_bytes: Family<Db, Gauge>,
    retention_deleted: Family<Db, Counter>,
    webhook: Family<DbResult, Counter>,
    last_verified: Family<Db, F64Gauge>,
    skipped: Family<Db, Counter>,
    globals_last_success: Family<NoLabels, F64Gauge>,
    globals_last_status: Family<NoLabels, Gauge>,
    physical: Physical,
}

/// Point-in-time recovery's series: cluster-wide, so no `database` label,
/// and exported only once WAL archiving or a base backup is in use.
#[derive(Clone, Default)]
struct Physical {
    wal_last_archived: Family<NoLabels, F64Gauge>,
    wal_segments: Family<NoLabels, Counter>,
    wal_lag: Family<NoLabels, Gauge>,
    wal_retained: Family<NoLabels, Gauge>,
    last_basebackup: Family<NoLabels, F64Gauge>,
    recovery_window: Family<NoLabels, F64Gauge>,
    /// End of the oldest kept base backup: the window's start.
    oldest_base: Arc<RwLock<Option<f64>>>,
}

impl Metrics {
    pub fn new(database: &str, pg_dump_version: &str) -> Metrics {
        let mut r = Registry::default();
        let db = Db {
            database: database.to_string(),
        };
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            db: db.clone(),
            pg_dump_version: Arc::new(RwLock::new(pg_dump_version.to_string())),
            last_success: Family::default(),
            last_attempt: Family::default(),
            last_duration: Family::default(),
            last_size: Family::default(),
            last_dump: Family::default(),
            last_status: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            attempts: Family::default(),
            failures: Family::default(),
            in_progress: Family::default(),
            next_run: Family::default(),
            stored_objects: Family::default(),
            stored_bytes: Family::default(),
            retention_deleted: Family::default(),
            webhook: Family::default(),
            last_verified: Family::default(),
            skipped: Family::default(),
            globals_last_success: Family::default(),
            globals_last_status: Family::default(),
            physical: Physical::default(),
        };
        r.register(
            "backup_last_success_timestamp_seconds",
            "End of the last successful backup (Unix time; 0 before any)",
            m.last_success.clone(),
        );
        r.register(
            "backup_last_attempt_timestamp_seconds",
            "End of the last backup attempt, whatever its outcome (Unix time)",
            m.last_attempt.clone(),
        );
        r.register(
            "backup_last_duration_seconds",
            "Duration of the last backup attempt",
            m.last_duration.clone(),
        );
        r.register(
            "backup_last_size_bytes",
            "Stored (compressed) size of the last successful backup",
            m.last_size.clone(),
        );
        r.register(
            "backup_last_dump_bytes",
            "Uncompressed size of the last successful dump",
            m.last_dump.clone(),
        );
        r.register(
            "backup_last_status",
            "1 if the last backup attempt succeeded, else 0",
            m.last_status.clone(),
        );
        r.register(
            "backup_duration_seconds",
            "Duration of every backup attempt",
            m.duration.clone(),
        );
        r.register("backup_attempts", "Backup attempts", m.attempts.clone());
        r.register(
            "backup_failures",
            "Failed backup attempts (and failed retention passes and drills), by stage",
            m.failures.clone(),
        );
        r.register(
            "backup_in_progress",
            "1 while a backup runs",
            m.in_progress.clone(),
        );
        r.register(
            "backup_next_run_timestamp_seconds",
            "When the schedule fires next (Unix time)",
            m.next_run.clone(),
        );
        r.register(
            "backup_stored_objects",
            "Backups in storage after the last retention pass",
            m.stored_objects.clone(),
        );
        r.register(
            "backup_stored_bytes",
            "Bytes of the backups in storage after the last retention pass",
            m.stored_bytes.clone(),
        );
        r.register(
            "backup_retention_deleted",
            "Backups deleted by retention",
            m.retention_deleted.clone(),
        );
        r.register(
            "backup_webhook_deliveries",
            "Webhook notifications, by result (delivered, failed)",
            m.webhook.clone(),
        );
        r.register(
            "backup_last_verified_timestamp_seconds",
            "End of the last successful restore drill (verify --restore; Unix time)",
            m.last_verified.clone(),
        );
        r.register(
            "backup_skipped_runs",
            "Scheduled runs skipped because a backup was still running",
            m.skipped.clone(),
        );
        // Globals (roles, tablespaces) are not a database: their own
        // series, without a `database` label a real database could share.
        r.register(
            "backup_globals_last_success_timestamp_seconds",
            "End of the last successful backup of roles and tablespaces (Unix time; 0 before any)",
            m.globals_last_success.clone(),
        );
        r.register(
            "backup_globals_last_status",
            "1 if the last backup of roles and tablespaces succeeded, else 0",
            m.globals_last_status.clone(),
        );
        let p = &m.physical;
        r.register(
            "backup_wal_last_archived_timestamp_seconds",
            "When WAL was last stored, a completed segment or the one in progress (Unix time)",
            p.wal_last_archived.clone(),
        );
        r.register(
            "backup_wal_archived_segments",
            "Completed WAL segments stored",
            p.wal_segments.clone(),
        );
        r.register(
            "backup_wal_archive_lag_bytes",
            "The server's current WAL position minus what the store holds",
            p.wal_lag.clone(),
        );
        r.register(
            "backup_wal_slot_retained_bytes",
            "WAL the replication slot holds back on the server",
            p.wal_retained.clone(),
        );
        r.register(
            "backup_last_basebackup_timestamp_seconds",
            "End of the newest stored base backup (Unix time; 0 before any)",
            p.last_basebackup.clone(),
        );
        r.register(
            "backup_recovery_window_seconds",
            "From the oldest point a restore --to-time can reach to the newest",
            p.recovery_window.clone(),
        );
        r.register_collector(Box::new(BuildInfo(m.pg_dump_version.clone())));
        let m = Metrics {
            registry: Arc::new(r),
            ..m
        };
        m.init_series();
        m
    }

    /// The registry with no database's series yet (several databases: each
    /// gets its series when it is first found, [`Metrics::for_database`]).
    pub fn without_series(pg_dump_version: &str) -> Metrics {
        let m = Metrics::new("", pg_dump_version);
        m.forget();
        m
    }

    /// Exports every series of this database, at 0 until something happens.
    fn init_series(&self) {
        let db = &self.db;
        let _ = self.last_success.get_or_create(db);
        let _ = self.last_attempt.get_or_create(db);
        let _ = self.last_duration.get_or_create(db);
        let _ = self.last_size.get_or_create(db);
        let _ = self.last_dump.get_or_create(db);
        let _ = self.last_status.get_or_create(db);
        let _ = self.duration.get_or_create(db);
        let _ = self.attempts.get_or_create(db);
        for s in Stage::ALL {
            let _ = self.failures.get_or_create(&self.stage(s));
        }
        let _ = self.in_progress.get_or_create(db);
        let _ = self.next_run.get_or_create(db);
        let _ = self.stored_objects.get_or_create(db);
        let _ = self.stored_bytes.get_or_create(db);
        let _ = self.retention_deleted.get_or_create(db);
        for res in [DELIVERED, FAILED] {
            let _ = self.webhook.get_or_create(&self.result(res));
        }
        let _ = self.last_verified.get_or_create(db);
        let _ = self.skipped.get_or_create(db);
    }

    /// The view of database `name`, its series exported from now on.
    pub fn for_database(&self, name: &str) -> Metrics {
        let m = Metrics {
            db: Db {
                database: name.to_string(),
            },
            ..self.clone()
        };
        m.init_series();
        m
    }

    /// Stops exporting this database's series (a dropped database): its
    /// alerts then see the series vanish rather than a stale value.
    pub fn forget(&self) {
        let db = &self.db;
        self.last_success.remove(db);
        self.last_attempt.remove(db);
        self.last_duration.remove(db);
        self.last_size.remove(db);
        self.last_dump.remove(db);
        self.last_status.remove(db);
        self.duration.remove(db);
        self.attempts.remove(db);
        for s in Stage::ALL {
            self.failures.remove(&self.stage(s));
        }
        self.in_progress.remove(db);
        self.next_run.remove(db);
        self.stored_objects.remove(db);
        self.stored_bytes.remove(db);
        self.retention_deleted.remove(db);
        for res in [DELIVERED, FAILED] {
            self.webhook.remove(&self.result(res));
        }
        self.last_verified.remove(db);
        self.skipped.remove(db);
    }

    /// The globals' backup: exported once there is one to report.
    pub fn record_globals(&self, o: &Outcome) {
        if matches!(&o.result, Err(e) if e.is_cancelled()) {
            return;
        }
        let none = NoLabels::new();
        let ok = o.result.is_ok();
        self.globals_last_status.get_or_create(&none).set(ok as i64);
        let success = self.globals_last_success.get_or_create(&none);
        if ok {
            success.set(ts(o.finished));
        }
    }

    /// The newest globals object in storage, after a restart.
    pub fn seed_globals(&self, at: DateTime<Utc>) {
        let none = NoLabels::new();
        let g = self.globals_last_success.get_or_create(&none);
        if g.get() < ts(at) {
            g.set(ts(at));
            self.globals_last_status.get_or_create(&none).set(1);
        }
    }

    /// pg_dump's version in `backup_build_info`, once probed.
    pub fn set_pg_dump_version(&self, v: &str) {
        *self
            .pg_dump_version
            .write()
            .unwrap_or_else(|p| p.into_inner()) = v.to_string();
    }

    fn stage(&self, s: Stage) -> DbStage {
        DbStage {
            database: self.db.database.clone(),
            stage: s.as_str().to_string(),
        }
    }

    fn result(&self, r: &str) -> DbResult {
        DbResult {
            database: self.db.database.clone(),
            result: r.to_string(),
        }
    }

    /// Records one finished attempt.
    pub fn record(&self, o: &Outcome) {
        // A shutdown is not an attempt that failed: nothing to record.
        if matches!(&o.result, Err(e) if e.is_cancelled()) {
            return;
        }
        let db = &self.db;
        let secs = o.duration.as_secs_f64();
        self.attempts.get_or_create(db).inc();
        self.last_attempt.get_or_create(db).set(ts(o.finished));
        self.last_duration.get_or_create(db).set(secs);
        self.duration.get_or_create(db).observe(secs);
        match &o.result {
            Ok(r) => {
                self.last_status.get_or_create(db).set(1);
                self.last_success.get_or_create(db).set(ts(o.finished));
                self.last_size.get_or_create(db).set(r.stored_bytes as i64);
                self.last_dump.get_or_create(db).set(r.dump_bytes as i64);
            }
            Err(e) => {
                self.last_status.get_or_create(db).set(0);
                self.failures.get_or_create(&self.stage(e.stage)).inc();
            }
        }
    }

    /// Counts a failure that is not a backup attempt (retention, drill, notify).
    pub fn count_failure(&self, stage: Stage) {
        self.failures.get_or_create(&self.stage(stage)).inc();
    }

    /// Seeds the last success from storage at start-up, so a restart does
    /// not look like a backup that never succeeded.
    pub fn seed_last_success(&self, at: DateTime<Utc>) {
        let g = self.last_success.get_or_create(&self.db);
        if g.get() < ts(at) {
            g.set(ts(at));
            self.last_status.get_or_create(&self.db).set(1);
        }
    }

    pub fn set_in_progress(&self, running: bool) {
        self.in_progress.get_or_create(&self.db).set(running as i64);
    }

    pub fn set_next_run(&self, at: Option<DateTime<Utc>>) {
        self.next_run
            .get_or_create(&self.db)
            .set(at.map(ts).unwrap_or(0.0));
    }

    pub fn set_stored(&self, objects: u64, bytes: u64) {
        self.stored_objects
            .get_or_create(&self.db)
            .set(objects as i64);
        self.stored_bytes.get_or_create(&self.db).set(bytes as i64);
    }

    pub fn add_retention_deleted(&self, n: u64) {
        self.retention_deleted.get_or_create(&self.db).inc_by(n);
    }

    pub fn count_delivery(&self, delivered: bool) {
        let r = if delivered { DELIVERED } else { FAILED };
        self.webhook.get_or_create(&self.result(r)).inc();
    }

    pub fn set_verified(&self, at: DateTime<Utc>) {
        self.last_verified.get_or_create(&self.db).set(ts(at));
    }

    pub fn count_skipped(&self) {
        self.skipped.get_or_create(&self.db).inc();
    }

    /// Exports the point-in-time recovery series (WAL archiving is on).
    pub fn enable_physical(&self) {
        let none = NoLabels::new();
        let p = &self.physical;
        let _ = p.wal_last_archived.get_or_create(&none);
        let _ = p.wal_segments.get_or_create(&none);
        let _ = p.wal_lag.get_or_create(&none);
        let _ = p.wal_retained.get_or_create(&none);
        let _ = p.last_basebackup.get_or_create(&none);
        let _ = p.recovery_window.get_or_create(&none);
    }

    /// WAL was stored at `at`; `segment`: a completed one.
    pub fn wal_archived(&self, at: DateTime<Utc>, segment: bool) {
        let none = NoLabels::new();
        let p = &self.physical;
        p.wal_last_archived.get_or_create(&none).set(ts(at));
        if segment {
            p.wal_segments.get_or_create(&none).inc();
        }
        self.update_window();
    }

    /// The newest WAL object in the store, at start-up.
    pub fn wal_seed_archived(&self, at: DateTime<Utc>) {
        let g = self
            .physical
            .wal_last_archived
            .get_or_create(&NoLabels::new());
        if g.get() < ts(at) {
            g.set(ts(at));
        }
        self.update_window();
    }

    pub fn set_wal_lag(&self, lag: u64, retained: Option<u64>) {
        let none = NoLabels::new();
        let p = &self.physical;
        p.wal_lag.get_or_create(&none).set(lag as i64);
        if let Some(r) = retained {
            p.wal_retained.get_or_create(&none).set(r as i64);
        }
    }

    /// The newest base backup ended at `at`.
    pub fn set_basebackup(&self, at: DateTime<Utc>) {
        let g = self
            .physical
            .last_basebackup
            .get_or_create(&NoLabels::new());
        if g.get() < ts(at) {
            g.set(ts(at));
        }
    }

    /// The oldest kept base backup ended at `at` (None: there is none).
    pub fn set_oldest_base(&self, at: Option<DateTime<Utc>>) {
        *self
            .physical
            .oldest_base
            .write()
            .unwrap_or_else(|p| p.into_inner()) = at.map(ts);
        self.update_window();
    }

    fn update_window(&self) {
        let p = &self.physical;
        let oldest = *p.oldest_base.read().unwrap_or_else(|p| p.into_inner());
        let newest = p.wal_last_archived.get_or_create(&NoLabels::new()).get();
        let window = match oldest {
            Some(o) if newest > o => newest - o,
            _ => 0.0,
        };
        p.recovery_window
            .get_or_create(&NoLabels::new())
            .set(window);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// `backup_build_info`, encoded with the pg_dump version as it is now.
#[derive(Debug)]
struct BuildInfo(Arc<RwLock<String>>);

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let info = Info::new(Build {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pg_dump_version: self.0.read().unwrap_or_else(|p| p.into_inner()).clone(),
        });
        let metric = encoder.encode_descriptor(
            "backup_build",
            "pgbackup and pg_dump versions",
            None,
            info.metric_type(),
        )?;
        info.encode(metric)
    }
}

fn ts(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::JobError;
    use crate::job::BackupReport;
    use std::time::Duration;

    fn outcome(ok: bool) -> Outcome {
        let t = DateTime::parse_from_rfc3339("2026-01-25T03:00:10Z")
            .unwrap()
            .with_timezone(&Utc);
        Outcome {
            database: "shop".into(),
            started: t,
            finished: t,
            duration: Duration::from_secs(10),
            result: if ok {
                Ok(BackupReport {
                    key: "k".into(),
                    dump_bytes: 1000,
                    stored_bytes: 100,
                    sha256: String::new(),
                    server_version: "15".into(),
                    pg_dump_version: "15".into(),
                })
            } else {
                Err(JobError::permanent(Stage::Upload, "x"))
            },
        }
    }

    /// The exposed names are what rules and dashboards use: check them, not
    /// the registered ones.
    #[test]
    fn every_contract_series_is_exported_from_startup() {
        let text = Metrics::new("shop", "15.20").encode();
        for line in [
            "backup_last_success_timestamp_seconds{database=\"shop\"} 0.0",
            "backup_last_attempt_timestamp_seconds{database=\"shop\"} 0.0",
            "backup_last_duration_seconds{database=\"shop\"} 0.0",
            "backup_last_size_bytes{database=\"shop\"} 0",
            "backup_last_dump_bytes{database=\"shop\"} 0",
            "backup_last_status{database=\"shop\"} 0",
            "backup_duration_seconds_count{database=\"shop\"} 0",
            "backup_attempts_total{database=\"shop\"} 0",
            "backup_failures_total{database=\"shop\",stage=\"upload\"} 0",
            "backup_failures_total{database=\"shop\",stage=\"retention\"} 0",
            "backup_in_progress{database=\"shop\"} 0",
            "backup_next_run_timestamp_seconds{database=\"shop\"} 0.0",
            "backup_stored_objects{database=\"shop\"} 0",
            "backup_stored_bytes{database=\"shop\"} 0",
            "backup_retention_deleted_total{database=\"shop\"} 0",
            "backup_webhook_deliveries_total{database=\"shop\",result=\"delivered\"} 0",
            "backup_webhook_deliveries_total{database=\"shop\",result=\"failed\"} 0",
            "backup_last_verified_timestamp_seconds{database=\"shop\"} 0.0",
            "backup_build_info{version=\"",
            "# TYPE backup_build info",
            "# TYPE backup_duration_seconds histogram",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("_total_total"));
        assert!(!text.contains("_seconds_seconds"));
    }

    #[test]
    fn outcomes_update_the_series() {
        let m = Metrics::new("shop", "15.20");
        m.record(&outcome(true));
        m.record(&outcome(false));
        let text = m.encode();
        assert!(
            text.contains("backup_last_success_timestamp_seconds{database=\"shop\"} 1769310010.0"),
            "{text}"
        );
        assert!(text.contains("backup_last_status{database=\"shop\"} 0"));
        assert!(text.contains("backup_last_size_bytes{database=\"shop\"} 100"));
        assert!(text.contains("backup_attempts_total{database=\"shop\"} 2"));
        assert!(text.contains("backup_failures_total{database=\"shop\",stage=\"upload\"} 1"));
        assert!(text.contains("backup_duration_seconds_count{database=\"shop\"} 2"));
    }
}
