//! Continuous WAL archiving: `pg_receivewal` on a physical slot writes into
//! a spool directory, and this loop stores what it finds there.
//!
//! Why pg_receivewal rather than a replication client of our own: it is
//! PostgreSQL's own, maintained with the protocol, and handles timeline
//! switches, TLS and every authentication method the server offers. Its
//! one catch is that it tells the slot "flushed" once WAL is fsynced in
//! its directory, not once it is in the store. So the spool is a volume
//! that outlives the process (BACKUP_WAL_SPOOL_DIR): a crash or a store
//! outage leaves the WAL there, and the next start stores it before
//! anything else. The spool is bounded: at BACKUP_WAL_SPOOL_MAX_SEGMENTS
//! pg_receivewal is stopped, and the slot keeps the rest on the server
//! until the store has caught up. The spool is the only place pgbackup
//! writes WAL to local disk; a file leaves it once stored.
//!
//! Completed segments are stored as they appear; the segment in progress
//! (`.partial`) at least every BACKUP_WAL_FLUSH_SECONDS, cut at its last
//! complete record, under a name carrying how far it reaches.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use super::{record, select_wal, stored_end, wal_prefix, Lsn, Segment, WalObject};
use crate::config::{Config, Database};
use crate::crypto::Recipients;
use crate::error::{JobError, Kind, Stage};
use crate::metrics::Metrics;
use crate::pg;
use crate::storage::{ObjectMeta, ObjectStore};

/// How often the spool is looked at.
const TICK: Duration = Duration::from_secs(1);
/// How often the server's WAL position is sampled for the lag series.
const SAMPLE: Duration = Duration::from_secs(5);
/// Niceness of pg_receivewal and of WAL compression: that of dumps in `run`.
const BACKGROUND_NICE: i32 = crate::job::Priority::BACKGROUND_NICE;
/// zstd level for WAL: mostly page images and tuples; level 1 keeps up with
/// any write rate a single server reaches.
const ZSTD_LEVEL: i32 = 1;

/// What WAL archiving needs on the server, for every start-up error.
pub fn replication_hint(db: &Database) -> String {
    let user = db.url_without_password().username();
    let user = if user.is_empty() { "<user>" } else { user };
    format!(
        "WAL archiving needs: the REPLICATION privilege (ALTER ROLE {user} REPLICATION), \
         a free replication slot (max_replication_slots, wal_level = replica) and a \
         pg_hba.conf line for replication connections, e.g. \
         `host replication {user} <pgbackup's address>/32 scram-sha-256`"
    )
}

/// Why pg_receivewal refused, in words that say what to change.
fn explain(said: &str, db: &Database, slot: &str) -> String {
    let s = said.to_ascii_lowercase();
    let what = if s.contains("superuser or replication role")
        || s.contains("permission denied to start wal sender")
        || s.contains("must have the replication")
    {
        "the role has no REPLICATION privilege".to_string()
    } else if s.contains("no pg_hba.conf entry") {
        "pg_hba.conf has no line for this replication connection".to_string()
    } else if s.contains("all replication slots are in use") {
        "all replication slots are in use: raise max_replication_slots (needs a restart) or drop an unused slot".to_string()
    } else if s.contains("max_replication_slots") {
        "the server allows no replication slots: set max_replication_slots (needs a restart)"
            .to_string()
    } else if s.contains("wal_level") {
        "wal_level is minimal: set wal_level = replica (needs a restart)".to_string()
    } else if s.contains("is active for pid") {
        format!("slot {slot:?} is in use by another client (a second pgbackup?): each needs a BACKUP_WAL_SLOT of its own")
    } else if s.contains("number of requested standby connections exceeds")
        || s.contains("max_wal_senders")
    {
        "no free WAL sender: raise max_wal_senders (needs a restart)".to_string()
    } else {
        String::new()
    };
    let said = crate::error::one_line(said);
    if what.is_empty() {
        format!("{said}; {}", replication_hint(db))
    } else {
        format!("{what} ({said}); {}", replication_hint(db))
    }
}

/// The client tools for the server behind `db`.
pub async fn tools_for(db: &Database, pg_bin_dir: Option<&Path>) -> Result<pg::Tools, JobError> {
    let server = pg::server_info(db).await?;
    pg::find_tools(server.major(), pg_bin_dir).await
}

/// Creates the slot unless it exists, over a replication connection: the
/// same door the stream uses, so a missing privilege, slot or pg_hba.conf
/// line fails here, at start-up, with what to grant.
pub async fn ensure_slot(db: &Database, tools: &pg::Tools, slot: &str) -> Result<(), JobError> {
    let out = tools
        .command("pg_receivewal", db)
        .arg("--create-slot")
        .arg("--if-not-exists")
        .arg(format!("--slot={slot}"))
        .arg("--no-password")
        .arg(format!("--dbname={}", db.url_without_password()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .map_err(|e| {
            JobError::permanent(
                Stage::Connect,
                format!("cannot start {}: {e}", tools.bin("pg_receivewal").display()),
            )
        })?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let kind = if said.contains("could not connect") && !said.contains("FATAL") {
        Kind::Transient
    } else {
        Kind::Config
    };
    Err(JobError::new(
        Stage::Connect,
        kind,
        format!(
            "cannot create replication slot {slot:?}: {}",
            explain(&said, db, slot)
        ),
    ))
}

/// Compresses, encrypts and hashes a WAL file: what is stored, and its
/// sha256. Small (one segment), so in memory.
pub fn seal(plain: &[u8], recipients: Option<&Recipients>) -> std::io::Result<(Vec<u8>, String)> {
    let z = zstd::bulk::compress(plain, ZSTD_LEVEL)?;
    let out = match recipients {
        Some(r) => r.encrypt_bytes(&z)?,
        None => z,
    };
    let sha = hex::encode(Sha256::digest(&out));
    Ok((out, sha))
}

/// The files pg_receivewal leaves in the spool.
#[derive(Debug, Default, PartialEq, Eq)]
struct Spool {
    segments: Vec<String>,
    histories: Vec<String>,
    partial: Option<String>,
}

fn read_spool(dir: &Path) -> std::io::Result<Spool> {
    let mut s = Spool::default();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if super::is_segment_name(&name) {
            s.segments.push(name);
        } else if super::is_history_name(&name) {
            s.histories.push(name);
        } else if let Some(seg) = name.strip_suffix(".partial") {
            if super::is_segment_name(seg) && s.partial.as_deref().is_none_or(|p| seg > p) {
                s.partial = Some(seg.to_string());
            }
        }
    }
    s.segments.sort();
    s.histories.sort();
    Ok(s)
}

/// The archiver's state between ticks.
pub struct Archiver {
    cfg: Arc<Config>,
    store: Arc<dyn ObjectStore>,
    metrics: Metrics,
    /// How far the store holds WAL.
    stored: Lsn,
    /// Partial objects stored per segment (deleted once superseded).
    partials: std::collections::BTreeMap<String, Vec<String>>,
    last_partial: Option<Instant>,
    /// pg_receivewal's segment size, from the first file read.
    seg_size: u64,
    failing: bool,
}

impl Archiver {
    pub fn new(cfg: Arc<Config>, store: Arc<dyn ObjectStore>, metrics: Metrics) -> Archiver {
        Archiver {
            cfg,
            store,
            metrics,
            stored: Lsn(0),
            partials: Default::default(),
            last_partial: None,
            seg_size: super::DEFAULT_SEGMENT_SIZE,
            failing: false,
        }
    }

    fn prefix(&self) -> &str {
        &self.cfg.store.prefix
    }

    /// Start-up: the slot (the one failure that stops the daemon), the
    /// spool directory, and what the store already holds.
    pub async fn prepare(&mut self) -> Result<pg::Tools, JobError> {
        let db = &self.cfg.dump.database;
        let tools = tools_for(db, self.cfg.dump.pg_bin_dir.as_deref()).await?;
        ensure_slot(db, &tools, &self.cfg.wal.slot).await?;
        let spool = &self.cfg.wal.spool;
        std::fs::create_dir_all(spool).map_err(|e| {
            JobError::config(
                Stage::Config,
                format!(
                    "cannot create BACKUP_WAL_SPOOL_DIR {}: {e}",
                    spool.display()
                ),
            )
        })?;
        let listing = self
            .store
            .list(&wal_prefix(self.prefix()))
            .await
            .map_err(|e| JobError::storage(Stage::Upload, e))?;
        let wal = select_wal(self.prefix(), &listing);
        for w in &wal {
            if let WalObject::Partial(seg, _) = &w.object {
                self.partials
                    .entry(seg.clone())
                    .or_default()
                    .push(w.key.clone());
            }
        }
        if let Some((_, end)) = stored_end(&wal, self.seg_size) {
            self.stored = end;
        }
        if let Some(t) = listing
            .iter()
            .filter(|o| super::parse_wal_key(self.prefix(), &o.key).is_some())
            .filter_map(|o| o.last_modified)
            .max()
        {
            self.metrics.wal_seed_archived(t);
        }
        Ok(tools)
    }

    /// Runs until `cancel`: supervises pg_receivewal and stores the spool.
    pub async fn run(mut self, tools: pg::Tools, cancel: CancellationToken) {
        let mut receiver: Option<Child> = None;
        let mut restarts = 0u32;
        let mut next_start = Instant::now();
        let mut sampler = Sampler::default();
        let mut last_sample = Instant::now() - SAMPLE;
        loop {
            let queued = self.spool_segments();
            let full = queued >= self.cfg.wal.spool_max_segments as usize;
            if let Some(child) = receiver.as_mut() {
                if full {
                    tracing::warn!(
                        spool = %self.cfg.wal.spool.display(),
                        max = self.cfg.wal.spool_max_segments,
                        "WAL spool full: pg_receivewal paused until the store catches up; the slot holds the rest on the server"
                    );
                    stop(child).await;
                    receiver = None;
                } else if let Ok(Some(status)) = child.try_wait() {
                    let said = drain_stderr(child).await;
                    restarts += 1;
                    let wait = crate::backoff::jittered(
                        restarts.saturating_sub(1).min(5),
                        Duration::from_secs(1),
                        Duration::from_secs(30),
                    );
                    tracing::warn!(
                        status = %pg::exit_description(status),
                        said = %crate::error::one_line(&said),
                        retry_in = ?wait,
                        "pg_receivewal stopped; restarting it"
                    );
                    next_start = Instant::now() + wait;
                    receiver = None;
                }
            }
            let resume = queued < (self.cfg.wal.spool_max_segments as usize / 2).max(1);
            if receiver.is_none()
                && resume
                && Instant::now() >= next_start
                && !cancel.is_cancelled()
            {
                match self.start_receiver(&tools) {
                    Ok(c) => {
                        tracing::info!(slot = %self.cfg.wal.slot, "WAL streaming started");
                        receiver = Some(c);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start pg_receivewal");
                        next_start = Instant::now() + Duration::from_secs(10);
                    }
                }
            }
            if receiver
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
            {
                // Up for a while: the next failure starts the backoff afresh.
                if Instant::now() > next_start + Duration::from_secs(60) {
                    restarts = 0;
                }
            }

            self.store_spool(&cancel).await;
            if last_sample.elapsed() >= SAMPLE {
                last_sample = Instant::now();
                sampler.sample(&self.cfg, self.stored, &self.metrics).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = cancel.cancelled() => break,
            }
        }
        if let Some(mut c) = receiver {
            stop(&mut c).await;
        }
        // What pg_receivewal wrote last, before it stopped: stored now
        // rather than at the next start, within the shutdown budget.
        self.last_partial = None;
        self.store_spool(&CancellationToken::new()).await;
        tracing::info!("WAL streaming stopped");
    }

    fn start_receiver(&self, tools: &pg::Tools) -> std::io::Result<Child> {
        let db = &self.cfg.dump.database;
        let mut cmd = tools.command("pg_receivewal", db);
        cmd.arg(format!("--directory={}", self.cfg.wal.spool.display()))
            .arg(format!("--slot={}", self.cfg.wal.slot))
            .arg("--no-loop")
            .arg("--no-password")
            .arg("--status-interval=10")
            .arg(format!("--dbname={}", db.url_without_password()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        // At a lower priority than the server's own work, as dumps run:
        // on a busy host the transactions come first, the stream catches up.
        // SAFETY: the closure runs in the forked child before exec and makes
        // one setpriority syscall, with no allocation or lock.
        unsafe {
            cmd.pre_exec(|| {
                let _ = rustix::process::setpriority_process(None, BACKGROUND_NICE);
                Ok(())
            });
        }
        cmd.spawn()
    }

    fn spool_segments(&self) -> usize {
        read_spool(&self.cfg.wal.spool)
            .map(|s| s.segments.len())
            .unwrap_or(0)
    }

    /// Stores what the spool holds: histories, completed segments in
    /// order, then the partial when it is due.
    async fn store_spool(&mut self, cancel: &CancellationToken) {
        let spool = match read_spool(&self.cfg.wal.spool) {
            Ok(s) => s,
            Err(e) => {
                self.fail(&JobError::permanent(
                    Stage::Upload,
                    format!(
                        "cannot read BACKUP_WAL_SPOOL_DIR {}: {e}",
                        self.cfg.wal.spool.display()
                    ),
                ));
                return;
            }
        };
        for h in &spool.histories {
            let path = self.cfg.wal.spool.join(h);
            if let Err(e) = self.store_file(&path, WalObject::History(h.clone())).await {
                return self.fail(&e);
            }
            let _ = std::fs::remove_file(&path);
        }
        for s in &spool.segments {
            if cancel.is_cancelled() {
                return;
            }
            let path = self.cfg.wal.spool.join(s);
            if let Err(e) = self.store_segment(s, &path).await {
                return self.fail(&e);
            }
        }
        let due = self
            .last_partial
            .is_none_or(|t| t.elapsed() >= self.cfg.wal.flush);
        if let (Some(seg), true) = (spool.partial, due) {
            match self.store_partial(&seg).await {
                Ok(()) => self.last_partial = Some(Instant::now()),
                Err(e) => return self.fail(&e),
            }
        }
        if self.failing {
            self.failing = false;
            tracing::info!(stored = %self.stored, "WAL archiving caught up");
        }
    }

    fn fail(&mut self, e: &JobError) {
        // One line per outage, not one per tick.
        if !self.failing {
            tracing::error!(error = %e, "WAL archiving: cannot store WAL; keeping it in the spool and retrying");
        } else {
            tracing::debug!(error = %e, "WAL archiving still failing");
        }
        self.failing = true;
    }

    async fn store_segment(&mut self, name: &str, path: &Path) -> Result<(), JobError> {
        let seg_size = self
            .store_file(path, WalObject::Segment(name.to_string()))
            .await?;
        self.seg_size = seg_size;
        // Its partials are superseded; a failed delete only leaves a
        // redundant object that the next pass or retention removes.
        if let Some(old) = self.partials.remove(name) {
            self.delete(&old).await;
        }
        std::fs::remove_file(path).map_err(|e| {
            JobError::permanent(
                Stage::Upload,
                format!("cannot remove {} from the spool: {e}", path.display()),
            )
        })?;
        if let Some(seg) = Segment::parse(name, seg_size) {
            self.stored = self.stored.max(seg.end(seg_size));
        }
        self.metrics.wal_archived(Utc::now(), true);
        Ok(())
    }

    async fn store_partial(&mut self, seg_name: &str) -> Result<(), JobError> {
        let path = self.cfg.wal.spool.join(format!("{seg_name}.partial"));
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            // Renamed to a completed segment in between: stored next tick.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(JobError::permanent(
                    Stage::Upload,
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        };
        let scan = match record::scan(&bytes) {
            Ok(s) => s,
            // Nothing written yet (a fresh file is zeros).
            Err(_) => return Ok(()),
        };
        if scan.end_lsn <= self.stored.0 || scan.end_lsn <= scan.start_lsn {
            return Ok(());
        }
        let offset = (scan.end_lsn - scan.start_lsn) as usize;
        let object = WalObject::Partial(seg_name.to_string(), offset as u32);
        let key = self.key(&object);
        if self
            .partials
            .get(seg_name)
            .is_some_and(|v| v.contains(&key))
        {
            return Ok(());
        }
        let file_size = bytes.len() as u64;
        let mut bytes = bytes;
        bytes.truncate(offset);
        self.put(&key, bytes, file_size, Some(offset as u64))
            .await?;
        let old = self.partials.insert(seg_name.to_string(), vec![key]);
        if let Some(old) = old {
            self.delete(&old).await;
        }
        self.stored = self.stored.max(Lsn(scan.end_lsn));
        self.metrics.wal_archived(Utc::now(), false);
        Ok(())
    }

    fn key(&self, object: &WalObject) -> String {
        let mut key = object.key(self.prefix());
        if self.cfg.encryption.recipients.is_some() {
            key.push_str(crate::crypto::SUFFIX);
        }
        key
    }

    /// Stores a whole file; returns its size (a segment's: the segment size).
    async fn store_file(&mut self, path: &Path, object: WalObject) -> Result<u64, JobError> {
        let bytes = tokio::fs::read(path).await.map_err(|e| {
            JobError::permanent(
                Stage::Upload,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let key = self.key(&object);
        let size = bytes.len() as u64;
        self.put(&key, bytes, size, None).await?;
        Ok(size)
    }

    /// Takes the file's bytes: a segment is 16 MiB, and a copy of it would
    /// double the daemon's memory while streaming.
    async fn put(
        &self,
        key: &str,
        plain: Vec<u8>,
        file_size: u64,
        end: Option<u64>,
    ) -> Result<(), JobError> {
        let recipients = self.cfg.encryption.recipients.clone();
        // A thread of its own, so that its lower priority touches no pooled
        // thread.
        let (done, sealed) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("pgbackup-wal".into())
            .spawn(move || {
                crate::job::renice_this_thread(BACKGROUND_NICE);
                let _ = done.send(seal(&plain, recipients.as_deref()));
            })
            .map_err(|e| {
                JobError::transient(Stage::Compress, format!("cannot start the compressor: {e}"))
            })?;
        let (body, sha) = sealed
            .await
            .map_err(|_| JobError::permanent(Stage::Compress, "the compressor died"))?
            .map_err(|e| JobError::permanent(Stage::Compress, format!("compressing WAL: {e}")))?;
        let mut meta = ObjectMeta {
            sha256: sha.clone(),
            ..Default::default()
        };
        meta.extra.insert("kind".into(), "wal".into());
        meta.extra
            .insert("file-bytes".into(), file_size.to_string());
        if let Some(end) = end {
            meta.extra.insert("valid-bytes".into(), end.to_string());
        }
        meta.extra.insert("compression".into(), "zstd".into());
        meta.extra.insert(
            "pgbackup-version".into(),
            env!("CARGO_PKG_VERSION").to_string(),
        );
        match self.store.put(key, Bytes::from(body), &meta).await {
            Ok(()) => Ok(()),
            // Already stored (received again after a restart): the same
            // bytes are fine; anything else is kept and reported.
            Err(e) if e.is_already_exists() => {
                let have = self
                    .store
                    .head(key)
                    .await
                    .map_err(|e| JobError::storage(Stage::Upload, e))?;
                if have.sha256.eq_ignore_ascii_case(&sha) || key.contains(".history") {
                    Ok(())
                } else {
                    Err(JobError::permanent(
                        Stage::Upload,
                        format!(
                            "{key} is already stored with other contents; keeping the stored one"
                        ),
                    ))
                }
            }
            Err(e) => Err(JobError::storage(Stage::Upload, e)),
        }
    }

    async fn delete(&self, keys: &[String]) {
        match self.store.delete(keys).await {
            Ok(failed) => {
                for (k, why) in failed {
                    tracing::warn!(object = %k, error = %why, "cannot delete a superseded partial WAL object");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot delete superseded partial WAL objects"),
        }
    }
}

/// Stops pg_receivewal the way it expects (it flushes and exits on
/// SIGTERM), then makes sure it is gone.
async fn stop(child: &mut Child) {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

async fn drain_stderr(child: &mut Child) -> String {
    match child.stderr.take() {
        Some(s) => pg::drain_tail(s).await,
        None => String::new(),
    }
}

/// The lag series: the server's position against what is stored, and
/// what the slot holds back. A connection kept between samples.
#[derive(Default)]
struct Sampler {
    client: Option<tokio_postgres::Client>,
}

impl Sampler {
    async fn sample(&mut self, cfg: &Config, stored: Lsn, metrics: &Metrics) {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = match tokio::time::timeout(
                Duration::from_secs(10),
                pg::connect(&cfg.dump.database),
            )
            .await
            {
                Ok(Ok(c)) => Some(c),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cannot sample the WAL position");
                    None
                }
                Err(_) => None,
            };
        }
        let Some(c) = &self.client else { return };
        let q = c
            .query_one(
                "SELECT pg_current_wal_lsn()::text, \
                 (SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1)",
                &[&cfg.wal.slot],
            )
            .await;
        match q {
            Ok(row) => {
                let current: Option<String> = row.get(0);
                let restart: Option<String> = row.get(1);
                let Some(current) = current.as_deref().and_then(Lsn::parse) else {
                    return;
                };
                let restart = restart.as_deref().and_then(Lsn::parse);
                let retained = restart.map(|r| current.0.saturating_sub(r.0));
                // Nothing stored yet: what is owed is what the slot holds,
                // not the server's whole history.
                let from = match (stored, restart) {
                    (Lsn(0), Some(r)) => r,
                    _ => stored,
                };
                metrics.set_wal_lag(current.0.saturating_sub(from.0), retained);
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot sample the WAL position");
                self.client = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spool_is_read_by_name_and_nothing_else_is_taken() {
        let d = tempdir();
        for f in [
            "000000010000000000000003",
            "000000010000000000000002",
            "000000010000000000000004.partial",
            "00000002.history",
            "000000010000000000000004.partial.tmp",
            "notes.txt",
        ] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        let s = read_spool(&d).unwrap();
        assert_eq!(
            s.segments,
            vec!["000000010000000000000002", "000000010000000000000003"]
        );
        assert_eq!(s.histories, vec!["00000002.history"]);
        assert_eq!(s.partial.as_deref(), Some("000000010000000000000004"));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn sealed_wal_round_trips_and_its_hash_is_of_the_stored_bytes() {
        let plain = vec![7u8; 1 << 16];
        let (stored, sha) = seal(&plain, None).unwrap();
        assert!(stored.len() < plain.len() / 10);
        assert_eq!(sha, hex::encode(Sha256::digest(&stored)));
        assert_eq!(zstd::decode_all(&stored[..]).unwrap(), plain);
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("pgbackup-spool-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
