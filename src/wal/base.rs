//! Base backups: `pg_basebackup --format=tar --wal-method=none` streamed
//! into the store (no local copy), compressed, maybe encrypted, hashed,
//! like a dump. The tar holds the backup manifest; the WAL it needs comes
//! from the stream (the slot is created first, so that WAL is held until
//! streamed even if the daemon starts later). The WAL positions that
//! restore needs ride in the object's metadata.

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{archiver, base_prefix, Lsn, Segment, DEFAULT_SEGMENT_SIZE};
use crate::config::{Compression, Config};
use crate::error::{JobError, Stage};
use crate::job::{self, Priority};
use crate::naming;
use crate::storage::{ObjectInfo, ObjectMeta, ObjectStore};

const EXT: &str = ".tar.zst";
/// zstd threads for a base backup: two, as `zstd -T2` and pgBackRest's
/// process-max=2 use.
const BASE_ZSTD_WORKERS: u32 = 2;

/// A stored base backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub key: String,
    /// The time in its name: when it started.
    pub time: DateTime<Utc>,
    pub size: u64,
    pub encrypted: bool,
}

/// What a base backup's metadata says (read with `head`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseInfo {
    pub base: Base,
    pub start: Lsn,
    pub stop: Lsn,
    pub timeline: u32,
    /// When pg_basebackup ended: the earliest time it can recover to.
    pub finished: DateTime<Utc>,
    pub sha256: String,
    pub seg_size: u64,
}

impl BaseInfo {
    pub fn start_segment(&self) -> Segment {
        Segment::of(self.timeline, self.start, self.seg_size)
    }
}

pub fn parse_key(prefix: &str, key: &str) -> Option<Base> {
    let rest = key.strip_prefix(&base_prefix(prefix))?;
    let (rest, encrypted) = match rest.strip_suffix(crate::crypto::SUFFIX) {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let time = naming::parse_timestamp(rest.strip_suffix(EXT)?)?;
    Some(Base {
        key: key.to_string(),
        time,
        size: 0,
        encrypted,
    })
}

/// The base backups of a listing, oldest first.
pub fn select(prefix: &str, objects: &[ObjectInfo]) -> Vec<Base> {
    let mut out: Vec<Base> = objects
        .iter()
        .filter_map(|o| {
            let mut b = parse_key(prefix, &o.key)?;
            b.size = o.size;
            Some(b)
        })
        .collect();
    out.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.key.cmp(&b.key)));
    out
}

/// Reads what a base backup's metadata says.
pub async fn info(
    storage: &dyn ObjectStore,
    base: &Base,
    stage: Stage,
) -> Result<BaseInfo, JobError> {
    let meta = storage
        .head(&base.key)
        .await
        .map_err(|e| JobError::storage(stage, e))?;
    let get = |k: &str| meta.extra.get(k).map(|v| v.trim().to_string());
    let bad = |what: &str| {
        JobError::permanent(
            stage,
            format!(
                "{}: its metadata has no valid {what}; not a base backup of pgbackup's",
                base.key
            ),
        )
    };
    let start = get("start-lsn")
        .and_then(|v| Lsn::parse(&v))
        .ok_or_else(|| bad("start-lsn"))?;
    let stop = get("stop-lsn")
        .and_then(|v| Lsn::parse(&v))
        .ok_or_else(|| bad("stop-lsn"))?;
    let timeline = get("timeline")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("timeline"))?;
    let finished = get("finished")
        .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| bad("finished"))?;
    let seg_size = get("segment-bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEGMENT_SIZE);
    Ok(BaseInfo {
        base: base.clone(),
        start,
        stop,
        timeline,
        finished,
        sha256: meta.sha256.trim().to_ascii_lowercase(),
        seg_size,
    })
}

/// Every base backup of the store with its metadata, oldest first.
pub async fn list(
    storage: &dyn ObjectStore,
    prefix: &str,
    stage: Stage,
) -> Result<Vec<BaseInfo>, JobError> {
    let listing = storage
        .list(&base_prefix(prefix))
        .await
        .map_err(|e| JobError::storage(stage, e))?;
    let mut out = Vec::new();
    for b in select(prefix, &listing) {
        match info(storage, &b, stage).await {
            Ok(i) => out.push(i),
            Err(e) if e.kind == crate::error::Kind::Permanent => {
                tracing::warn!(error = %e, "skipping a base backup whose metadata cannot be read")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// What a base backup did.
#[derive(Debug, Clone)]
pub struct BaseReport {
    pub key: String,
    pub start: Lsn,
    pub stop: Lsn,
    pub timeline: u32,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub stored_bytes: u64,
    pub cluster_bytes: u64,
}

/// The WAL range a backup needs, from its backup manifest's `WAL-Ranges`
/// (pg_basebackup says it only when it fetches WAL itself):
/// `{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }`.
pub fn parse_positions(manifest_tail: &str) -> Option<(Lsn, u32, Lsn)> {
    let ranges = &manifest_tail[manifest_tail.rfind("\"WAL-Ranges\"")?..];
    let field = |name: &str| -> Option<&str> {
        let rest = &ranges[ranges.find(&format!("\"{name}\""))? + name.len() + 2..];
        let rest = rest.trim_start().strip_prefix(':')?.trim_start();
        let end = rest.find([',', '}', '\n'])?;
        Some(rest[..end].trim().trim_matches('"'))
    };
    let timeline = field("Timeline")?.parse().ok()?;
    let start = Lsn::parse(field("Start-LSN")?)?;
    let stop = Lsn::parse(field("End-LSN")?)?;
    Some((start, timeline, stop))
}

/// Follows pg_basebackup's tar stream as it goes by and keeps the end of
/// its `backup_manifest` (the last entry; its WAL range is at its end).
#[derive(Debug, Default)]
pub struct TarWatch {
    header: Vec<u8>,
    /// Bytes of the current entry's data still to come, then its padding.
    data_left: u64,
    pad_left: u64,
    capturing: bool,
    ended: bool,
    pub manifest_tail: Vec<u8>,
}

/// Enough of the manifest's end for its WAL range and checksum.
const MANIFEST_TAIL: usize = 64 * 1024;

impl TarWatch {
    pub fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() && !self.ended {
            if self.data_left > 0 {
                let n = (self.data_left as usize).min(buf.len());
                if self.capturing {
                    self.manifest_tail.extend_from_slice(&buf[..n]);
                    if self.manifest_tail.len() > 2 * MANIFEST_TAIL {
                        self.manifest_tail
                            .drain(..self.manifest_tail.len() - MANIFEST_TAIL);
                    }
                }
                self.data_left -= n as u64;
                buf = &buf[n..];
            } else if self.pad_left > 0 {
                let n = (self.pad_left as usize).min(buf.len());
                self.pad_left -= n as u64;
                buf = &buf[n..];
            } else {
                let n = (512 - self.header.len()).min(buf.len());
                self.header.extend_from_slice(&buf[..n]);
                buf = &buf[n..];
                if self.header.len() == 512 {
                    self.start_entry();
                }
            }
        }
    }

    fn start_entry(&mut self) {
        let h = std::mem::take(&mut self.header);
        if h.iter().all(|&b| b == 0) {
            self.ended = true;
            return;
        }
        let name = String::from_utf8_lossy(&h[..100]);
        let name = name.trim_end_matches('\0');
        let size = tar_size(&h[124..136]);
        self.capturing = name == "backup_manifest";
        if self.capturing {
            self.manifest_tail.clear();
        }
        self.data_left = size;
        self.pad_left = (512 - size % 512) % 512;
    }
}

/// A tar size field: octal, or base-256 when its first byte has the high bit.
fn tar_size(f: &[u8]) -> u64 {
    if f[0] & 0x80 != 0 {
        f[1..]
            .iter()
            .fold(u64::from(f[0] & 0x7f), |a, &b| (a << 8) | u64::from(b))
    } else {
        let s = String::from_utf8_lossy(f);
        u64::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap_or(0)
    }
}

/// One base backup now.
pub async fn take(
    cfg: &Config,
    storage: &dyn ObjectStore,
    cancel: &CancellationToken,
    priority: Priority,
) -> Result<BaseReport, JobError> {
    storage
        .probe_credentials()
        .await
        .map_err(|e| JobError::storage(Stage::Upload, e))?;
    let db = &cfg.dump.database;
    let tools = archiver::tools_for(db, cfg.dump.pg_bin_dir.as_deref()).await?;
    // The WAL from this backup's start is held from here on.
    archiver::ensure_slot(db, &tools, &cfg.wal.slot).await?;
    let started = Utc::now();
    let key = free_name(cfg, storage, started).await?;
    let mut cmd = tools.command("pg_basebackup", db);
    cmd.arg("--pgdata=-")
        .arg("--format=tar")
        .arg("--wal-method=none")
        // Start now, not at the next spread checkpoint.
        .arg("--checkpoint=fast")
        .arg("--verbose")
        .arg("--no-password")
        .arg(format!("--dbname={}", db.url_without_password()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    let mut writer = storage
        .create(&key)
        .await
        .map_err(|e| JobError::storage(Stage::Upload, e))?;
    let watch = std::sync::Arc::new(std::sync::Mutex::new(TarWatch::default()));
    let watch_in = watch.clone();
    let streamed = job::stream_child(
        cmd,
        &tools.bin("pg_basebackup"),
        job::Streaming {
            compression: Compression::Zstd {
                level: crate::config::ZSTD_DEFAULT_LEVEL,
            },
            // A cluster is read faster than one thread compresses it
            // (pg_basebackup alone: 0.4x the time of zstd 1 on one core).
            workers: BASE_ZSTD_WORKERS,
            recipients: cfg.encryption.recipients.clone(),
            priority,
            tap: Some(Box::new(move |b: &[u8]| {
                watch_in.lock().unwrap_or_else(|p| p.into_inner()).feed(b)
            })),
        },
        writer.as_mut(),
        cancel,
    )
    .await;
    let (counts, said) = match streamed {
        Ok(v) => v,
        Err(e) => {
            writer.abort().await;
            return Err(e);
        }
    };
    let tail = String::from_utf8_lossy(
        &watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .manifest_tail,
    )
    .into_owned();
    let Some((start, timeline, stop)) = parse_positions(&tail) else {
        writer.abort().await;
        return Err(JobError::permanent(
            Stage::Dump,
            format!(
                "pg_basebackup's output holds no backup manifest with a WAL range (is --no-manifest in effect?): {}",
                crate::error::one_line(&said)
            ),
        ));
    };
    let finished = Utc::now();
    let mut meta = ObjectMeta {
        sha256: counts.sha256.clone(),
        ..Default::default()
    };
    for (k, v) in [
        ("kind", "base".to_string()),
        ("start-lsn", start.to_string()),
        ("stop-lsn", stop.to_string()),
        ("timeline", timeline.to_string()),
        ("started", started.to_rfc3339()),
        ("finished", finished.to_rfc3339()),
        ("segment-bytes", DEFAULT_SEGMENT_SIZE.to_string()),
        ("dump-bytes", counts.dump_bytes.to_string()),
        ("compression", "zstd".to_string()),
        ("encryption", cfg.encryption.label().to_string()),
        ("pg-basebackup-version", tools.major.to_string()),
        ("pgbackup-version", env!("CARGO_PKG_VERSION").to_string()),
    ] {
        meta.extra.insert(k.to_string(), v);
    }
    if cancel.is_cancelled() {
        writer.abort().await;
        return Err(JobError::cancelled(
            Stage::Dump,
            "base backup stopped by shutdown",
        ));
    }
    writer
        .commit(&meta)
        .await
        .map_err(|e| JobError::storage(Stage::Upload, e))?;
    Ok(BaseReport {
        key,
        start,
        stop,
        timeline,
        started,
        finished,
        stored_bytes: counts.stored_bytes,
        cluster_bytes: counts.dump_bytes,
    })
}

/// The newest and oldest base backups in the store, into the metrics (at
/// start-up and after each pass).
pub fn record(metrics: &crate::metrics::Metrics, bases: &[BaseInfo]) {
    if let Some(newest) = bases.iter().map(|b| b.finished).max() {
        metrics.set_basebackup(newest);
    }
    metrics.set_oldest_base(bases.iter().map(|b| b.finished).min());
}

/// What the base backup schedule does at a firing: the real one runs
/// pg_basebackup against the store; tests pass a fake.
#[async_trait::async_trait]
pub trait BaseRunner: Send + Sync + 'static {
    /// The base backups in the store, at start-up.
    async fn stored(&self) -> Result<Vec<BaseInfo>, JobError>;
    async fn take(&self, cancel: &CancellationToken) -> Result<BaseReport, JobError>;
    /// Retention of base backups and WAL after a base backup.
    async fn prune(&self) -> Result<super::retention::Pruned, JobError>;
}

/// pg_basebackup into the store, then retention.
pub struct StoreBaseRunner {
    pub cfg: std::sync::Arc<Config>,
    pub storage: std::sync::Arc<dyn ObjectStore>,
}

#[async_trait::async_trait]
impl BaseRunner for StoreBaseRunner {
    async fn stored(&self) -> Result<Vec<BaseInfo>, JobError> {
        list(
            self.storage.as_ref(),
            &self.cfg.store.prefix,
            Stage::Retention,
        )
        .await
    }

    async fn take(&self, cancel: &CancellationToken) -> Result<BaseReport, JobError> {
        take(
            &self.cfg,
            self.storage.as_ref(),
            cancel,
            Priority::Background,
        )
        .await
    }

    async fn prune(&self) -> Result<super::retention::Pruned, JobError> {
        super::retention::apply(
            self.storage.as_ref(),
            &self.cfg.store.prefix,
            &self.cfg.retention,
            Utc::now(),
            false,
        )
        .await
    }
}

/// `run`'s base backups on BACKUP_BASEBACKUP_CRON_SCHEDULE, each followed
/// by retention of base backups and WAL, until `cancel`. The next firing is
/// computed from the wall clock each time, as for dumps: a suspended
/// machine gives one catch-up base backup, not a burst. A failure is logged
/// and waits for the next firing.
pub async fn schedule(
    cron: crate::schedule::Schedule,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    runner: std::sync::Arc<dyn BaseRunner>,
    metrics: crate::metrics::Metrics,
    cancel: CancellationToken,
) {
    match runner.stored().await {
        Ok(b) => record(&metrics, &b),
        Err(e) => tracing::warn!(error = %e, "cannot list the stored base backups at start-up"),
    }
    let mut next = crate::schedule::next_after(&cron, clock.now());
    loop {
        let wait =
            crate::schedule::sleep_before(next, clock.now(), std::time::Duration::from_secs(30));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
        if !crate::schedule::is_due(next, clock.now()) {
            continue;
        }
        match runner.take(&cancel).await {
            Ok(r) => {
                tracing::info!(object = %r.key, start = %r.start, stop = %r.stop, stored_bytes = r.stored_bytes, "base backup succeeded");
                metrics.set_basebackup(r.finished);
            }
            Err(e) if e.is_cancelled() => return,
            Err(e) => {
                tracing::error!(error = %e, "base backup failed");
                next = crate::schedule::next_after(&cron, clock.now());
                continue;
            }
        }
        next = crate::schedule::next_after(&cron, clock.now());
        match runner.prune().await {
            Ok(p) => {
                for (k, why) in &p.failed {
                    tracing::warn!(object = %k, error = %why, "retention could not delete");
                }
                tracing::info!(
                    bases_deleted = p.bases_deleted.len(),
                    wal_deleted = p.wal_deleted.len(),
                    bases_kept = p.bases_left.len(),
                    "retention of base backups and WAL"
                );
                record(&metrics, &p.bases_left);
            }
            Err(e) => tracing::error!(error = %e, "retention of base backups and WAL failed"),
        }
    }
}

/// A base backup's name at `at`, or the first later free second.
async fn free_name(
    cfg: &Config,
    storage: &dyn ObjectStore,
    at: DateTime<Utc>,
) -> Result<String, JobError> {
    job::free_key(storage, at, "base backup", |t| {
        let mut key = format!(
            "{}{}{EXT}",
            base_prefix(&cfg.store.prefix),
            naming::timestamp(t)
        );
        if cfg.encryption.recipients.is_some() {
            key.push_str(crate::crypto::SUFFIX);
        }
        key
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, TokioClock};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Base backups that take a minute; the first `fail` of them fail.
    struct Fake {
        clock: Arc<TokioClock>,
        taken: AtomicUsize,
        pruned: AtomicUsize,
        fail: usize,
    }

    fn info(at: DateTime<Utc>) -> BaseInfo {
        BaseInfo {
            base: Base {
                key: format!("p/base/{}.tar.zst", naming::timestamp(at)),
                time: at,
                size: 1,
                encrypted: false,
            },
            start: Lsn(0x100_0028),
            stop: Lsn(0x100_0100),
            timeline: 1,
            finished: at,
            sha256: String::new(),
            seg_size: DEFAULT_SEGMENT_SIZE,
        }
    }

    #[async_trait::async_trait]
    impl BaseRunner for Fake {
        async fn stored(&self) -> Result<Vec<BaseInfo>, JobError> {
            Ok(vec![info(self.clock.now() - chrono::Duration::days(3))])
        }
        async fn take(&self, cancel: &CancellationToken) -> Result<BaseReport, JobError> {
            let started = self.clock.now();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                _ = cancel.cancelled() => return Err(JobError::cancelled(Stage::Dump, "stopped")),
            }
            let n = self.taken.fetch_add(1, Ordering::SeqCst);
            if n < self.fail {
                return Err(JobError::permanent(
                    Stage::Dump,
                    "pg_basebackup exited with status 1",
                ));
            }
            Ok(BaseReport {
                key: "k".into(),
                start: Lsn(1),
                stop: Lsn(2),
                timeline: 1,
                started,
                finished: self.clock.now(),
                stored_bytes: 1,
                cluster_bytes: 1,
            })
        }
        async fn prune(&self) -> Result<super::super::retention::Pruned, JobError> {
            self.pruned.fetch_add(1, Ordering::SeqCst);
            Ok(super::super::retention::Pruned {
                bases_left: vec![info(self.clock.now() - chrono::Duration::days(1))],
                ..Default::default()
            })
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn value(m: &crate::metrics::Metrics, name: &str) -> f64 {
        let text = m.encode();
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{}} ")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[tokio::test(start_paused = true)]
    async fn base_backups_fire_on_their_schedule_and_a_failure_waits_for_the_next() {
        let clock = Arc::new(TokioClock::starting_at(at("2026-11-30T02:58:00Z")));
        let fake = Arc::new(Fake {
            clock: clock.clone(),
            taken: AtomicUsize::new(0),
            pruned: AtomicUsize::new(0),
            fail: 1,
        });
        let metrics = crate::metrics::Metrics::new("app", "unknown");
        metrics.enable_physical();
        let cancel = CancellationToken::new();
        let cron = crate::schedule::parse("0 3 * * *").unwrap();
        let task = tokio::spawn(schedule(
            cron,
            clock.clone(),
            fake.clone(),
            metrics.clone(),
            cancel.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Seeded from the store at start-up.
        let seeded = (clock.now() - chrono::Duration::days(3)).timestamp() as f64;
        assert!((value(&metrics, "backup_last_basebackup_timestamp_seconds") - seeded).abs() < 2.0);
        // 03:00 fails; nothing more until the next day, no retry burst.
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        assert_eq!(fake.taken.load(Ordering::SeqCst), 1);
        assert_eq!(fake.pruned.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_secs(23 * 3600)).await;
        assert_eq!(fake.taken.load(Ordering::SeqCst), 1);
        // The next day's succeeds, then retention; the series follow.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(fake.taken.load(Ordering::SeqCst), 2);
        assert_eq!(fake.pruned.load(Ordering::SeqCst), 1);
        let last = value(&metrics, "backup_last_basebackup_timestamp_seconds");
        assert_eq!(last, at("2026-12-01T03:01:00Z").timestamp() as f64);
        assert!(value(&metrics, "backup_recovery_window_seconds") >= 0.0);
        // Shutdown ends the loop at once, even mid-backup.
        // To 12-02 03:00:30, thirty seconds into the third.
        tokio::time::sleep(Duration::from_secs(23 * 3600 + 52 * 60 + 29)).await;
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the schedule stops at shutdown")
            .unwrap();
        assert_eq!(
            fake.taken.load(Ordering::SeqCst),
            2,
            "the cancelled one is not counted"
        );
    }

    const MANIFEST_END: &str = "{ \"Path\": \"global/pg_control\", \"Size\": 8192 }\n],\n\
        \"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n\
        \"Manifest-Checksum\": \"8f9e\"}\n";

    #[test]
    fn positions_come_from_the_backup_manifest() {
        assert_eq!(
            parse_positions(MANIFEST_END),
            Some((Lsn(0x2000028), 1, Lsn(0x2000100)))
        );
        assert_eq!(parse_positions("{ \"Files\": [] }"), None);
    }

    fn tar_entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let size = format!("{:011o}\0", data.len());
        h[124..136].copy_from_slice(size.as_bytes());
        h[156] = b'0';
        let mut out = h;
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    #[test]
    fn the_manifest_is_found_in_the_tar_stream_whatever_the_read_sizes() {
        let mut tar = tar_entry("postgresql.conf", b"port = 5432\n");
        tar.extend(tar_entry("base/1/1259", &vec![7u8; 9000]));
        tar.extend(tar_entry("backup_manifest", MANIFEST_END.as_bytes()));
        tar.extend(vec![0u8; 1024]);
        for chunk in [1, 7, 512, 4096, tar.len()] {
            let mut w = TarWatch::default();
            for c in tar.chunks(chunk) {
                w.feed(c);
            }
            assert_eq!(
                String::from_utf8_lossy(&w.manifest_tail),
                MANIFEST_END,
                "chunk {chunk}"
            );
        }
        assert_eq!(tar_size(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0]), 512);
    }

    #[test]
    fn base_names_parse_and_others_do_not() {
        let b = parse_key("p/", "p/base/2026-11-30_03-00-00.tar.zst").unwrap();
        assert_eq!(b.time.to_rfc3339(), "2026-11-30T03:00:00+00:00");
        assert!(!b.encrypted);
        assert!(
            parse_key("p/", "p/base/2026-11-30_03-00-00.tar.zst.age")
                .unwrap()
                .encrypted
        );
        for k in [
            "p/base/2026-11-30_03-00-00.tar.gz",
            "p/base/2026-11-30_3-00-00.tar.zst",
            "p/2026-11-30_03-00-00.tar.zst",
            "p/base/x/2026-11-30_03-00-00.tar.zst",
        ] {
            assert_eq!(parse_key("p/", k), None, "{k}");
        }
    }
}
