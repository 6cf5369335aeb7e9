//! One backup: pg_dump -> compress [-> encrypt] + sha256 -> parts -> storage.
//!
//! pg_dump's stdout is read on a blocking thread that compresses, encrypts
//! (age, when recipients are configured) and hashes on the fly and cuts
//! fixed-size parts; the async side uploads them with
//! bounded memory (a full channel stops reading, a full pipe stops pg_dump).
//! The object is committed only after pg_dump exited 0 with a non-empty dump;
//! every other ending aborts it. Nothing touches local disk on the way.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
use rustix::process::{Pid, Signal};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Compression, Config, Format};
use crate::crypto::Recipients;
use crate::error::{JobError, Stage};
use crate::pg;
use crate::storage::{self, ObjectMeta, ObjectStore};

/// What a successful backup produced; metrics and notifications read this.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub key: String,
    pub dump_bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
    pub server_version: String,
    pub pg_dump_version: String,
}

/// The end of one attempt, successful or not.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub database: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub duration: Duration,
    pub result: Result<BackupReport, JobError>,
}

/// How a backup shares the CPU with the rest of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// As started (`pgbackup backup`: somebody is waiting for it).
    Normal,
    /// pg_dump and the compressor at nice 10 (`pgbackup run`): on a busy
    /// host the daemon's /metrics and health endpoints keep answering fast
    /// while a backup runs (bench/results/daemon.md).
    Background,
}

impl Priority {
    pub(crate) const BACKGROUND_NICE: i32 = 10;

    fn nice(self) -> Option<i32> {
        match self {
            Priority::Normal => None,
            Priority::Background => Some(Self::BACKGROUND_NICE),
        }
    }
}

/// Lowers the calling thread's priority (Linux: setpriority with a thread id
/// affects that thread only). Failure only means normal priority.
pub(crate) fn renice_this_thread(nice: i32) {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice);
}

/// What a backup dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `pg_dump` of the configured database.
    Database,
    /// `pg_dumpall --globals-only`: roles and tablespaces, as SQL.
    Globals { no_passwords: bool },
}

/// One backup: what it dumps, and the time its name carries (a run of
/// several databases names all its objects after its start).
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub source: Source,
    pub at: Option<DateTime<Utc>>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            source: Source::Database,
            at: None,
        }
    }
}

/// Runs one backup to the end (or until `cancel` fires) and reports it.
pub async fn run(
    cfg: &Config,
    storage: &dyn ObjectStore,
    cancel: &CancellationToken,
    priority: Priority,
) -> Outcome {
    run_spec(cfg, storage, cancel, priority, Spec::default()).await
}

/// [`run`] of any [`Spec`].
pub async fn run_spec(
    cfg: &Config,
    storage: &dyn ObjectStore,
    cancel: &CancellationToken,
    priority: Priority,
    spec: Spec,
) -> Outcome {
    let started = Utc::now();
    let t0 = Instant::now();
    let result = backup(cfg, storage, cancel, priority, spec).await;
    Outcome {
        database: cfg.dump.database.name().to_string(),
        started,
        finished: Utc::now(),
        duration: t0.elapsed(),
        result,
    }
}

/// What a backup knows before pg_dump starts.
struct Prepared {
    server: pg::ServerInfo,
    tools: pg::Tools,
    key: String,
    snapshot: Option<pg::Snapshot>,
    /// Held until the backup ends.
    _lock: crate::lock::PrefixLock,
}

/// Credentials, the server and its tools, the prefix lock, a free name and
/// the snapshot: everything that may fail before any dump starts.
async fn prepare(
    cfg: &Config,
    storage: &dyn ObjectStore,
    cancel: &CancellationToken,
    spec: Spec,
) -> Result<Prepared, JobError> {
    // Missing credentials fail here, in one line, before any dump starts.
    cancellable(cancel, async {
        storage
            .probe_credentials()
            .await
            .map_err(|e| JobError::storage(Stage::Upload, e))
    })
    .await?;
    let server = cancellable(cancel, pg::server_info(&cfg.dump.database)).await?;
    let tools = pg::find_tools(server.major(), cfg.dump.pg_bin_dir.as_deref()).await?;
    tracing::debug!(server = %server.version, pg_dump = %tools.version_line, "versions");
    // One run per store and prefix on this host, then a name nobody holds:
    // a backup never replaces another (the store's commit checks again).
    let Some(lock) = crate::lock::acquire(&storage.describe(), &cfg.store.prefix, cancel).await
    else {
        return Err(cancelled());
    };
    let at = spec.at.unwrap_or_else(Utc::now);
    let key = cancellable(cancel, free_name(storage, cfg, at)).await?;
    // The manifest reads the dump's own snapshot, unless the user chose one
    // (globals have neither).
    let own_snapshot = spec.source != Source::Database
        || cfg
            .dump
            .pg_dump_options
            .iter()
            .any(|o| o.starts_with("--snapshot") || o == "--serializable-deferrable");
    let snapshot = if own_snapshot {
        None
    } else {
        cancellable(cancel, async {
            Ok(pg::export_snapshot(&cfg.dump.database).await)
        })
        .await?
    };
    Ok(Prepared {
        server,
        tools,
        key,
        snapshot,
        _lock: lock,
    })
}

/// pg_dump as this backup runs it: our compression, the exported
/// snapshot, the user's options, its own process group, maybe reniced.
/// For globals, `pg_dumpall --globals-only` instead.
fn pg_dump_command(
    cfg: &Config,
    tools: &pg::Tools,
    snapshot: Option<&pg::Snapshot>,
    priority: Priority,
    source: Source,
) -> tokio::process::Command {
    let mut cmd = match source {
        Source::Database => {
            let mut cmd = tools.command("pg_dump", &cfg.dump.database);
            cmd.arg("--no-password")
                .arg(format!("--format={}", cfg.dump.format.as_str()));
            if cfg.dump.format == Format::Custom {
                // We compress the stream ourselves, faster and in one place.
                cmd.arg("--compress=0");
            }
            if let Some(s) = snapshot {
                cmd.arg(format!("--snapshot={}", s.id));
            }
            cmd.args(&cfg.dump.pg_dump_options);
            cmd
        }
        Source::Globals { no_passwords } => {
            let mut cmd = tools.command("pg_dumpall", &cfg.dump.database);
            cmd.arg("--no-password").arg("--globals-only");
            if no_passwords {
                cmd.arg("--no-role-passwords");
            }
            cmd
        }
    };
    cmd.arg(format!(
        "--dbname={}",
        cfg.dump.database.url_without_password()
    ))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // Its own process group, so that stopping it also stops anything it
    // started (wrapper scripts): no orphans.
    .process_group(0);
    if let Some(nice) = priority.nice() {
        // SAFETY: the closure runs in the forked child before exec, where
        // only async-signal-safe work is allowed: it makes one setpriority
        // syscall, with no allocation or lock, and ignores its result.
        unsafe {
            cmd.pre_exec(move || {
                let _ = rustix::process::setpriority_process(None, nice);
                Ok(())
            });
        }
    }
    cmd
}

async fn backup(
    cfg: &Config,
    storage: &dyn ObjectStore,
    cancel: &CancellationToken,
    priority: Priority,
    spec: Spec,
) -> Result<BackupReport, JobError> {
    let Prepared {
        server,
        tools,
        key,
        snapshot,
        _lock,
    } = prepare(cfg, storage, cancel, spec).await?;
    let cmd = pg_dump_command(cfg, &tools, snapshot.as_ref(), priority, spec.source);
    let tool = match spec.source {
        Source::Database => "pg_dump",
        Source::Globals { .. } => "pg_dumpall",
    };
    let upload = |e| JobError::storage(Stage::Upload, e);
    let mut writer = storage.create(&key).await.map_err(upload)?;
    let finished = stream_child(
        cmd,
        &tools.bin(tool),
        Streaming {
            compression: cfg.dump.compression,
            workers: 0,
            recipients: cfg.encryption.recipients.clone(),
            priority,
            tap: None,
        },
        writer.as_mut(),
        cancel,
    )
    .await
    .map(|(counts, _)| counts);

    match finished {
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
        Ok(counts) => {
            let meta = object_meta(cfg, &counts, &server, &tools, spec.source);
            if cancel.is_cancelled() {
                writer.abort().await;
                return Err(cancelled());
            }
            match spec.source {
                Source::Database => {
                    crate::manifest::commit_with_manifest(
                        cfg,
                        storage,
                        &key,
                        writer,
                        &meta,
                        snapshot.as_ref().map(|s| &s.client),
                    )
                    .await?
                }
                Source::Globals { .. } => writer.commit(&meta).await.map_err(upload)?,
            }
            Ok(BackupReport {
                key,
                dump_bytes: counts.dump_bytes,
                stored_bytes: counts.stored_bytes,
                sha256: counts.sha256,
                server_version: server.version,
                pg_dump_version: tools.version_line,
            })
        }
    }
}

/// Runs `cmd` (a dump tool, its stdout piped), and streams its output
/// compressed, maybe encrypted, hashed, into `writer`. Returns the counts
/// and the end of what the tool said on stderr. Every ending other than
/// success kills the tool's process group and reaps it; the caller aborts
/// or commits the object.
pub(crate) async fn stream_child(
    mut cmd: tokio::process::Command,
    bin: &std::path::Path,
    how: Streaming,
    writer: &mut dyn storage::ObjectWriter,
    cancel: &CancellationToken,
) -> Result<(Counts, String), JobError> {
    let Streaming {
        compression,
        workers,
        recipients,
        priority,
        tap,
    } = how;
    let tool = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut child = cmd.spawn().map_err(|e| {
        JobError::permanent(Stage::Dump, format!("cannot start {}: {e}", bin.display()))
    })?;
    let mut group = GroupGuard(child.id().and_then(|p| Pid::from_raw(p as i32)));
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    // A bigger pipe means fewer wakeups on a fast dump; failure is harmless.
    let _ = rustix::pipe::fcntl_setpipe_size(&stdout, 1 << 20);
    // Drain stderr concurrently: a full stderr pipe would block the tool.
    let stderr_task = tokio::spawn(pg::drain_tail(stderr));

    let (tx, mut rx) = mpsc::channel::<Bytes>(1);
    // The compressor reads the pipe with plain blocking reads on a thread of
    // its own: no runtime wakeups per read, and its priority can be lowered
    // without touching a pooled thread.
    let reader = blocking_reader(stdout)
        .map_err(|e| JobError::permanent(Stage::Dump, format!("{tool}'s output: {e}")))?;
    let (done, compressor) = tokio::sync::oneshot::channel();
    let nice = priority.nice();
    std::thread::Builder::new()
        .name("pgbackup-compress".into())
        .spawn(move || {
            if let Some(n) = nice {
                renice_this_thread(n);
            }
            let r = match tap {
                Some(tap) => compress_with(
                    Tapped { inner: reader, tap },
                    compression,
                    workers,
                    recipients.as_deref(),
                    tx,
                ),
                None => compress_with(reader, compression, workers, recipients.as_deref(), tx),
            };
            let _ = done.send(r);
        })
        .map_err(|e| {
            JobError::transient(Stage::Compress, format!("cannot start the compressor: {e}"))
        })?;

    let upload = |e| JobError::storage(Stage::Upload, e);
    let uploaded: Result<(), JobError> = async {
        loop {
            tokio::select! {
                part = rx.recv() => match part {
                    Some(p) => writer.write_part(p).await.map_err(upload)?,
                    None => return Ok(()),
                },
                _ = cancel.cancelled() => return Err(cancelled()),
            }
        }
    }
    .await;
    drop(rx);

    let mut said = String::new();
    let finished = match uploaded {
        Err(e) => {
            group.kill();
            Err(e)
        }
        Ok(()) => {
            let counts = compressor.await;
            let status = tokio::select! {
                s = child.wait() => s,
                _ = cancel.cancelled() => { group.kill(); Err(std::io::Error::other("cancelled")) }
            };
            said = stderr_task.await.unwrap_or_default();
            check_dump(status, counts, &said, cancel, &tool)
        }
    };
    if finished.is_err() {
        group.kill();
    }
    // Reap the tool in every case: no zombie, no orphan.
    let _ = child.wait().await;
    group.0 = None;
    finished.map(|c| (c, said))
}

/// How [`stream_child`] treats the tool's output.
pub(crate) struct Streaming {
    pub compression: Compression,
    /// zstd worker threads (0: compress on the reading thread).
    pub workers: u32,
    pub recipients: Option<std::sync::Arc<Recipients>>,
    pub priority: Priority,
    pub tap: Option<Tap>,
}

/// Sees every byte of a tool's output on its way to the compressor.
pub(crate) type Tap = Box<dyn FnMut(&[u8]) + Send>;

struct Tapped<R> {
    inner: R,
    tap: Tap,
}

impl<R: Read> Read for Tapped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.tap)(&buf[..n]);
        Ok(n)
    }
}

/// How many later seconds a run may move its name to when its own is taken.
const NAME_TRIES: i64 = 60;

/// The object name for a backup at `at`, or the first later second whose
/// name nobody holds (a run just before, in the same second).
async fn free_name(
    storage: &dyn ObjectStore,
    cfg: &Config,
    at: DateTime<Utc>,
) -> Result<String, JobError> {
    free_key(storage, at, "backup", |t| {
        let mut key =
            crate::naming::object_name(&cfg.store.prefix, t, cfg.dump.format, cfg.dump.compression);
        if cfg.encryption.recipients.is_some() {
            key.push_str(crate::crypto::SUFFIX);
        }
        key
    })
    .await
}

/// `key_at(at)`, or that of the first later second whose key nobody
/// holds: a new object never replaces another (the store's commit checks
/// again). `what` names the object in messages.
pub(crate) async fn free_key(
    storage: &dyn ObjectStore,
    at: DateTime<Utc>,
    what: &str,
    key_at: impl Fn(DateTime<Utc>) -> String,
) -> Result<String, JobError> {
    for s in 0..NAME_TRIES {
        let key = key_at(at + chrono::Duration::seconds(s));
        match storage.head(&key).await {
            Err(e) if e.is_not_found() => return Ok(key),
            Ok(_) => {
                tracing::info!(object = %key, "name taken by an earlier {what}; trying the next second")
            }
            // A write-only key may not look; the store's commit still refuses
            // to replace an object.
            Err(e) => {
                tracing::debug!(error = %e, "cannot look for an earlier {what} of the same name");
                return Ok(key);
            }
        }
    }
    Err(JobError::permanent(
        Stage::Upload,
        format!("no free {what} name in the {NAME_TRIES} s after {at}"),
    ))
}

/// What travels with the stored backup.
fn object_meta(
    cfg: &Config,
    counts: &Counts,
    server: &pg::ServerInfo,
    tools: &pg::Tools,
    source: Source,
) -> ObjectMeta {
    let mut meta = ObjectMeta {
        sha256: counts.sha256.clone(),
        ..Default::default()
    };
    for (k, v) in [
        ("dump-bytes", counts.dump_bytes.to_string()),
        ("format", cfg.dump.format.as_str().to_string()),
        ("compression", cfg.dump.compression.as_str().to_string()),
        ("encryption", cfg.encryption.label().to_string()),
        (
            "kind",
            match source {
                Source::Database => "database",
                Source::Globals { .. } => "globals",
            }
            .to_string(),
        ),
        ("database", cfg.dump.database.name().to_string()),
        ("server-version", server.version.clone()),
        ("pg-dump-version", tools.major.to_string()),
        ("pgbackup-version", env!("CARGO_PKG_VERSION").to_string()),
    ] {
        meta.extra.insert(k.to_string(), ascii_only(&v));
    }
    meta
}

/// Kills pg_dump's whole process group when stopped early, including when
/// the job's future is dropped.
/// The group id is pg_dump's pid: a child not yet reaped, so not reused.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// S3 user metadata must be ASCII; database names may not be.
fn ascii_only(s: &str) -> String {
    if s.is_ascii() {
        s.to_string()
    } else {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    }
}

fn cancelled() -> JobError {
    JobError::cancelled(Stage::Dump, "backup stopped by shutdown")
}

async fn cancellable<T>(
    cancel: &CancellationToken,
    f: impl std::future::Future<Output = Result<T, JobError>>,
) -> Result<T, JobError> {
    tokio::select! {
        r = f => r,
        _ = cancel.cancelled() => Err(cancelled()),
    }
}

/// pg_dump's stdout as a blocking file: tokio hands it over non-blocking.
fn blocking_reader(stdout: tokio::process::ChildStdout) -> std::io::Result<std::fs::File> {
    let fd: OwnedFd = stdout.into_owned_fd()?;
    let flags = fcntl_getfl(&fd)?;
    fcntl_setfl(&fd, flags - OFlags::NONBLOCK)?;
    Ok(std::fs::File::from(fd))
}

fn check_dump(
    status: std::io::Result<std::process::ExitStatus>,
    counts: Result<Result<Counts, JobError>, tokio::sync::oneshot::error::RecvError>,
    stderr_tail: &str,
    cancel: &CancellationToken,
    tool: &str,
) -> Result<Counts, JobError> {
    if cancel.is_cancelled() {
        return Err(cancelled());
    }
    let status = status
        .map_err(|e| JobError::permanent(Stage::Dump, format!("waiting for pg_dump: {e}")))?;
    let said = crate::error::one_line(stderr_tail);
    if !status.success() {
        let how = pg::exit_description(status);
        let said = if said.is_empty() {
            String::new()
        } else {
            format!(": {said}")
        };
        return Err(JobError::permanent(
            Stage::Dump,
            format!("{tool} {how}{said}"),
        ));
    }
    let counts = counts
        .map_err(|_| JobError::permanent(Stage::Compress, "the compressor thread died"))??;
    if counts.dump_bytes == 0 {
        return Err(JobError::permanent(
            Stage::Dump,
            format!(
                "{tool} exited 0 but wrote nothing{}",
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            ),
        ));
    }
    Ok(counts)
}

#[derive(Debug, Clone)]
pub struct Counts {
    pub dump_bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
}

/// Reads the dump, compresses, encrypts (with `recipients`) and hashes it,
/// and sends fixed-size parts. Runs on a blocking thread.
pub fn compress(
    reader: impl Read,
    compression: Compression,
    recipients: Option<&Recipients>,
    tx: mpsc::Sender<Bytes>,
) -> Result<Counts, JobError> {
    compress_with(reader, compression, 0, recipients, tx)
}

/// [`compress`] with `workers` zstd threads beside the reading one (0: zstd
/// on the reading thread itself).
pub fn compress_with(
    mut reader: impl Read,
    compression: Compression,
    workers: u32,
    recipients: Option<&Recipients>,
    tx: mpsc::Sender<Bytes>,
) -> Result<Counts, JobError> {
    let sink = match recipients {
        None => Sealed::Plain(PartSink::new(tx)),
        Some(r) => Sealed::Age(r.encrypt(PartSink::new(tx)).map_err(encrypt_err)?),
    };
    let mut dump_bytes = 0u64;
    let sink = match compression {
        Compression::Zstd { level } => {
            let mut enc = zstd::stream::write::Encoder::new(sink, level).map_err(compress_err)?;
            if workers > 0 {
                enc.multithread(workers).map_err(compress_err)?;
            }
            dump_bytes = pump(&mut reader, &mut enc)?;
            enc.finish().map_err(compress_err)?
        }
        Compression::Gzip { level } => {
            let mut enc = flate2::write::GzEncoder::new(sink, flate2::Compression::new(level));
            dump_bytes = pump(&mut reader, &mut enc)?;
            enc.finish().map_err(compress_err)?
        }
        Compression::None => {
            let mut sink = sink;
            dump_bytes += pump(&mut reader, &mut sink)?;
            sink
        }
    };
    let (stored_bytes, sha256) = sink.finish()?.finish()?;
    Ok(Counts {
        dump_bytes,
        stored_bytes,
        sha256,
    })
}

fn pump(r: &mut impl Read, w: &mut impl Write) -> Result<u64, JobError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(JobError::permanent(
                    Stage::Dump,
                    format!("reading pg_dump output: {e}"),
                ))
            }
        };
        total += n as u64;
        w.write_all(&buf[..n]).map_err(compress_err)?;
    }
}

fn compress_err(e: std::io::Error) -> JobError {
    JobError::permanent(Stage::Compress, e.to_string())
}

fn encrypt_err(e: std::io::Error) -> JobError {
    JobError::permanent(Stage::Compress, format!("encrypting: {e}"))
}

/// The compressor's output: the parts as they are, or age-encrypted first.
enum Sealed {
    Plain(PartSink),
    Age(age::stream::StreamWriter<PartSink>),
}

impl Sealed {
    /// Ends the age stream (its last chunk is written only here).
    fn finish(self) -> Result<PartSink, JobError> {
        match self {
            Sealed::Plain(s) => Ok(s),
            Sealed::Age(w) => w.finish().map_err(encrypt_err),
        }
    }
}

impl Write for Sealed {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Sealed::Plain(s) => s.write(data),
            Sealed::Age(w) => w.write(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sealed::Plain(s) => s.flush(),
            Sealed::Age(w) => w.flush(),
        }
    }
}

/// The compressed side: hashes every byte and cuts parts of `part_size(i)`.
struct PartSink {
    tx: mpsc::Sender<Bytes>,
    buf: BytesMut,
    index: u32,
    total: u64,
    hash: Sha256,
}

impl PartSink {
    fn new(tx: mpsc::Sender<Bytes>) -> Self {
        PartSink {
            tx,
            buf: BytesMut::with_capacity(storage::part_size(0)),
            index: 0,
            total: 0,
            hash: Sha256::new(),
        }
    }

    fn send(&mut self, part: Bytes) -> std::io::Result<()> {
        self.index += 1;
        self.tx
            .blocking_send(part)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload stopped"))
    }

    fn finish(mut self) -> Result<(u64, String), JobError> {
        let last = self.buf.split().freeze();
        if !last.is_empty() {
            self.send(last).map_err(compress_err)?;
        }
        Ok((self.total, hex::encode(self.hash.finalize())))
    }
}

impl Write for PartSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let written = data.len();
        self.hash.update(data);
        self.total += written as u64;
        let mut data = data;
        while !data.is_empty() {
            let size = storage::part_size(self.index);
            let take = (size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == size {
                let part = std::mem::replace(
                    &mut self.buf,
                    BytesMut::with_capacity(storage::part_size(self.index + 1)),
                );
                self.send(part.freeze())?;
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_compress(input: Vec<u8>, c: Compression) -> (Counts, Vec<Bytes>) {
        let (tx, mut rx) = mpsc::channel(1);
        let h = std::thread::spawn(move || compress(std::io::Cursor::new(input), c, None, tx));
        let mut parts = Vec::new();
        while let Some(p) = rx.blocking_recv() {
            parts.push(p);
        }
        (h.join().unwrap().unwrap(), parts)
    }

    #[test]
    fn zstd_workers_write_the_same_stream_format_and_hash() {
        let input = sample(20 << 20);
        let (tx, mut rx) = mpsc::channel(1);
        let data = input.clone();
        let h = std::thread::spawn(move || {
            compress_with(
                std::io::Cursor::new(data),
                Compression::DEFAULT,
                2,
                None,
                tx,
            )
        });
        let mut stored = Vec::new();
        while let Some(p) = rx.blocking_recv() {
            stored.extend_from_slice(&p);
        }
        let counts = h.join().unwrap().unwrap();
        assert_eq!(counts.dump_bytes, input.len() as u64);
        assert_eq!(counts.sha256, hex::encode(Sha256::digest(&stored)));
        assert_eq!(zstd::decode_all(&stored[..]).unwrap(), input);
    }

    fn sample(n: usize) -> Vec<u8> {
        // Half text, half noise: compressible but not trivially.
        (0..n)
            .map(|i| {
                if (i / 4096) % 2 == 0 {
                    b"abcdefgh"[i % 8]
                } else {
                    (i.wrapping_mul(2654435761) >> 13) as u8
                }
            })
            .collect()
    }

    #[test]
    fn parts_hash_and_decompress_back() {
        let input = sample(20 * 1024 * 1024);
        for c in [
            Compression::DEFAULT,
            Compression::Gzip { level: 1 },
            Compression::None,
        ] {
            let (counts, parts) = run_compress(input.clone(), c);
            let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            assert_eq!(counts.dump_bytes, input.len() as u64);
            assert_eq!(counts.stored_bytes, joined.len() as u64);
            assert_eq!(counts.sha256, hex::encode(Sha256::digest(&joined)));
            for p in &parts[..parts.len() - 1] {
                assert_eq!(
                    p.len(),
                    storage::part_size(0),
                    "{c:?}: all but the last part are full"
                );
            }
            let back = match c {
                Compression::Zstd { .. } => zstd::decode_all(&joined[..]).unwrap(),
                Compression::Gzip { .. } => {
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(&joined[..])
                        .read_to_end(&mut out)
                        .unwrap();
                    out
                }
                Compression::None => joined.clone(),
            };
            assert!(back == input, "{c:?} round trip");
        }
    }

    #[test]
    fn encrypted_parts_hash_the_ciphertext_and_decrypt_back() {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        let recipients = Recipients::parse("V", &id.to_public().to_string()).expect("recipient");
        let input = sample(12 * 1024 * 1024);
        let (tx, mut rx) = mpsc::channel(1);
        let data = input.clone();
        let h = std::thread::spawn(move || {
            compress(
                std::io::Cursor::new(data),
                Compression::DEFAULT,
                Some(&recipients),
                tx,
            )
        });
        let mut joined = Vec::new();
        while let Some(p) = rx.blocking_recv() {
            joined.extend_from_slice(&p);
        }
        let counts = h.join().unwrap().unwrap();
        assert_eq!(counts.dump_bytes, input.len() as u64);
        assert_eq!(counts.stored_bytes, joined.len() as u64);
        assert_eq!(counts.sha256, hex::encode(Sha256::digest(&joined)));
        assert!(joined.starts_with(b"age-encryption.org/v1\n"));
        assert!(
            !joined.windows(8).any(|w| w == b"abcdefgh"),
            "no plaintext in the stored bytes"
        );
        let path = std::env::temp_dir().join(format!("pgbackup-job-id-{}", std::process::id()));
        std::fs::write(&path, id.to_string().expose_secret()).unwrap();
        let ids = crate::crypto::Identities::from_file("V", &path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let zst = ids.decrypt_bytes(&joined).unwrap();
        assert!(zstd::decode_all(&zst[..]).unwrap() == input);
    }

    #[test]
    fn empty_input_gives_no_dump_bytes() {
        let (counts, _) = run_compress(Vec::new(), Compression::DEFAULT);
        assert_eq!(counts.dump_bytes, 0);
    }

    #[test]
    fn a_closed_upload_stops_the_compressor() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let e = compress(
            std::io::Cursor::new(sample(20 << 20)),
            Compression::None,
            None,
            tx,
        )
        .unwrap_err();
        assert_eq!(e.stage, Stage::Compress);
    }
}
