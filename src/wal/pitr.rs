//! `pgbackup restore --to-time <RFC 3339|latest> --target-dir DIR [--start]`:
//! a data directory that recovers to that time.
//!
//! Picks the newest base backup that ended at or before the target, unpacks
//! it into an empty directory (streamed: store -> sha256 -> age -> zstd ->
//! tar), and writes `recovery.signal` and the recovery settings. WAL comes
//! through `restore_command = '<this binary> wal-fetch ...'`; the storage
//! settings reach it through a 0600 file beside the data directory, never
//! through postgresql.auto.conf (which a later base backup would copy).
//!
//! PostgreSQL 13 and later stop with a fatal error when a recovery target
//! is never reached, so a target outside the recovery window is refused
//! here, with the window: from the end of the oldest base backup to the
//! last transaction in the stored WAL, or to when WAL was last stored if
//! nothing was committed since (a target there recovers to the end of the
//! archive, which is the same state).

use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

use super::base::{self, BaseInfo};
use super::{fetch, record, select_wal, wal_prefix, Segment, StoredWal, WalObject};
use crate::crypto::Identities;
use crate::error::{JobError, Stage};
use crate::storage::ObjectStore;

const STAGE: Stage = Stage::Restore;

/// Where recovery should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Time(DateTime<Utc>),
    Latest,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("latest") {
            return Ok(Target::Latest);
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Target::Time(t.with_timezone(&Utc)))
            .map_err(|e| format!("{s:?} is neither `latest` nor an RFC 3339 time such as 2026-11-30T17:00:00Z: {e}"))
    }
}

/// From the oldest point a restore can reach to the newest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub oldest: DateTime<Utc>,
    /// The last commit or abort found in the stored WAL.
    pub last_transaction: Option<DateTime<Utc>>,
    /// When the newest WAL object was stored.
    pub stored_at: Option<DateTime<Utc>>,
}

impl Window {
    pub fn newest(&self) -> DateTime<Utc> {
        [Some(self.oldest), self.last_transaction, self.stored_at]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(self.oldest)
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to {}",
            self.oldest.to_rfc3339_opts(SecondsFormat::Secs, true),
            self.newest().to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    }
}

/// How recovery is told to stop, decided from the target and the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// recovery_target_time.
    Time(DateTime<Utc>),
    /// To the end of the stored WAL (`latest`, or a time after the last
    /// transaction but within what the store is known to hold).
    End,
}

/// Pure: the plan for `target`, or why it cannot be reached.
pub fn plan(target: Target, w: &Window) -> Result<Plan, String> {
    match target {
        Target::Latest => Ok(Plan::End),
        Target::Time(t) if t < w.oldest => Err(format!(
            "{} is before the recovery window ({w}): the oldest base backup ended at {}",
            t.to_rfc3339_opts(SecondsFormat::Secs, true),
            w.oldest.to_rfc3339_opts(SecondsFormat::Secs, true)
        )),
        Target::Time(t) if w.last_transaction.is_some_and(|l| t <= l) => Ok(Plan::Time(t)),
        Target::Time(t) if t <= w.newest() => Ok(Plan::End),
        Target::Time(t) => Err(format!(
            "{} is after the recovery window ({w}): no stored WAL reaches it; `--to-time latest` recovers everything stored",
            t.to_rfc3339_opts(SecondsFormat::Secs, true)
        )),
    }
}

/// The newest base backup that ended at or before `target`.
pub fn pick_base(bases: &[BaseInfo], target: Target) -> Option<&BaseInfo> {
    bases
        .iter()
        .filter(|b| match target {
            Target::Latest => true,
            Target::Time(t) => b.finished <= t,
        })
        .max_by_key(|b| b.finished)
}

/// The last transaction end in the stored WAL: the newest objects are read
/// until one holds a commit or an abort (a few at most).
async fn last_transaction(
    store: &dyn ObjectStore,
    wal: &[StoredWal],
    identity: Option<&Identities>,
) -> Result<Option<DateTime<Utc>>, JobError> {
    let newest: Vec<&StoredWal> = wal
        .iter()
        .rev()
        .filter(|w| !matches!(w.object, WalObject::History(_)))
        .take(4)
        .collect();
    for w in newest {
        let bytes = fetch::read(store, w, identity).await?;
        let scan = record::scan(&bytes)
            .map_err(|e| JobError::permanent(STAGE, format!("{} is not WAL: {e}", w.key)))?;
        if let Some(x) = scan.xact_ends.last() {
            return Ok(Some(x.time));
        }
    }
    Ok(None)
}

/// The window of what the store holds, and the base backups and WAL.
pub async fn survey(
    store: &dyn ObjectStore,
    prefix: &str,
    identity: Option<&Identities>,
) -> Result<(Vec<BaseInfo>, Vec<StoredWal>, Option<Window>), JobError> {
    let bases = base::list(store, prefix, STAGE).await?;
    let listing = store
        .list(&wal_prefix(prefix))
        .await
        .map_err(|e| JobError::storage(STAGE, e))?;
    let wal = select_wal(prefix, &listing);
    let Some(oldest) = bases.iter().map(|b| b.finished).min() else {
        return Ok((bases, wal, None));
    };
    let stored_at = listing
        .iter()
        .filter(|o| super::parse_wal_key(prefix, &o.key).is_some())
        .filter_map(|o| o.last_modified)
        .max();
    let last = last_transaction(store, &wal, identity).await?;
    Ok((
        bases,
        wal,
        Some(Window {
            oldest,
            last_transaction: last,
            stored_at,
        }),
    ))
}

/// What `restore --to-time` needs.
pub struct Options {
    pub target: Target,
    pub dir: PathBuf,
    /// Start the server on this port and wait for recovery to end.
    pub start: Option<u16>,
    pub identity: Option<std::sync::Arc<Identities>>,
    pub pg_bin_dir: Option<PathBuf>,
    /// The storage settings wal-fetch needs, NAME=value.
    pub wal_fetch_env: Vec<(String, String)>,
    pub cancel: CancellationToken,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Report {
    pub base: String,
    pub plan: Plan,
    pub window: Window,
    pub env_file: PathBuf,
    pub start_command: String,
    pub unpacked: Duration,
    pub recovered: Option<Duration>,
}

pub async fn restore(
    store: &dyn ObjectStore,
    prefix: &str,
    o: &Options,
) -> Result<Report, JobError> {
    check_target_dir(&o.dir)?;
    let identity = o.identity.as_deref();
    let (bases, wal, window) = survey(store, prefix, identity).await?;
    let Some(window) = window else {
        return Err(JobError::permanent(
            STAGE,
            format!(
                "no base backup under {}: take one with `pgbackup basebackup`",
                super::base_prefix(prefix)
            ),
        ));
    };
    let plan = plan(o.target, &window).map_err(|m| JobError::config(STAGE, m))?;
    let base = pick_base(&bases, o.target).ok_or_else(|| {
        JobError::config(
            STAGE,
            format!("no base backup ended before the target; the recovery window is {window}"),
        )
    })?;
    // The WAL from the base backup's start to its end must be stored, or
    // the cluster never becomes consistent.
    let from = base.start_segment();
    let gap = super::first_gap(&wal, from, base.seg_size);
    let stop_seg = Segment::of(base.timeline, base.stop, base.seg_size);
    if gap <= stop_seg.number {
        let missing = Segment {
            timeline: base.timeline,
            number: gap,
        }
        .name(base.seg_size);
        return Err(JobError::permanent(
            STAGE,
            format!(
                "the WAL that makes {} consistent is not stored: {missing} is missing (is the daemon streaming WAL?)",
                base.base.key
            ),
        ));
    }
    if base.base.encrypted && identity.is_none() {
        return Err(JobError::config(
            STAGE,
            crate::crypto::identity_needed(&base.base.key, "restoring it"),
        ));
    }
    let t0 = std::time::Instant::now();
    tracing::info!(base = %base.base.key, dir = %o.dir.display(), "unpacking the base backup");
    if let Err(e) = unpack(store, base, o.identity.clone(), &o.dir).await {
        empty_dir(&o.dir);
        return Err(e);
    }
    let unpacked = t0.elapsed();
    let owner = std::fs::metadata(&o.dir)
        .map(|m| (m.uid(), m.gid()))
        .map_err(|e| JobError::permanent(STAGE, format!("{}: {e}", o.dir.display())))?;
    let env_file = env_file_path(&o.dir);
    let written = write_recovery(&o.dir, &env_file, plan, &o.wal_fetch_env, owner);
    if let Err(e) = written {
        empty_dir(&o.dir);
        let _ = std::fs::remove_file(&env_file);
        return Err(e);
    }
    let pg_ctl = pg_ctl_path(o.pg_bin_dir.as_deref(), &o.dir, Path::new(DEBIAN_PG));
    let start_command = format!(
        "{} -D {} -l {} start",
        pg_ctl.display(),
        shell_words::quote(&o.dir.to_string_lossy()),
        shell_words::quote(&o.dir.join("recovery.log").to_string_lossy()),
    );
    let mut report = Report {
        base: base.base.key.clone(),
        plan,
        window,
        env_file,
        start_command,
        unpacked,
        recovered: None,
    };
    if let Some(port) = o.start {
        let t1 = std::time::Instant::now();
        start_and_wait(&pg_ctl, &o.dir, port, owner, &o.cancel).await?;
        report.recovered = Some(t1.elapsed());
        // Segments read ahead past the target are of no further use.
        let ahead = o.dir.join("pg_wal").join(super::prefetch::DIR_NAME);
        tokio::task::spawn_blocking(move || {
            super::prefetch::remove(&ahead, Duration::from_secs(10))
        })
        .await
        .ok();
    }
    Ok(report)
}

/// Refuses anything but an empty (or missing) directory: a restore never
/// overwrites a cluster.
fn check_target_dir(dir: &Path) -> Result<(), JobError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(JobError::config(
                    STAGE,
                    format!("--target-dir {} is not empty; a restore never writes over a directory's contents", dir.display()),
                ));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| {
                JobError::config(
                    STAGE,
                    format!("cannot create --target-dir {}: {e}", dir.display()),
                )
            })?;
        }
        Err(e) => {
            return Err(JobError::config(
                STAGE,
                format!("--target-dir {}: {e}", dir.display()),
            ))
        }
    }
    // PostgreSQL refuses a data directory others can read.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| JobError::config(STAGE, format!("--target-dir {}: {e}", dir.display())))
}

/// Leaves `dir` empty again after a failure: no half-restored cluster.
fn empty_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// `<dir>.wal-fetch.env`: beside the data directory, so that neither a
/// later base backup nor a copy of the data directory carries it.
pub fn env_file_path(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    dir.with_file_name(format!("{name}.wal-fetch.env"))
}

/// Counts the stored bytes and their sha256 as they are read.
struct Hashing<R> {
    inner: R,
    sha: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

/// Streams the base backup into `dir` and checks its sha256. One thread:
/// a version that decompressed on a second thread measured no faster
/// (bench/results/pitr-unpack.md); the CPU is not what limits it.
async fn unpack(
    store: &dyn ObjectStore,
    base: &BaseInfo,
    identity: Option<std::sync::Arc<Identities>>,
    dir: &Path,
) -> Result<(), JobError> {
    let reader = store
        .get(&base.base.key)
        .await
        .map_err(|e| JobError::storage(STAGE, e))?;
    let key = base.base.key.clone();
    let want = base.sha256.clone();
    let dir = dir.to_path_buf();
    let encrypted = base.base.encrypted;
    tokio::task::spawn_blocking(move || -> Result<(), JobError> {
        let bad = |what: String| JobError::permanent(STAGE, format!("{key}: {what}"));
        let mut hashing = Hashing {
            inner: SyncIoBridge::new(reader),
            sha: Sha256::new(),
        };
        let unpacked = unpack_stream(&mut hashing, encrypted, identity.as_deref(), &dir);
        // The tar ends before the stream does, and the rest is hashed too:
        // even after a failure, as a corrupt object is the cause to name.
        let end = io::copy(&mut hashing, &mut io::sink());
        let got = hex::encode(hashing.sha.finalize());
        if end.is_ok() && want.len() == 64 && got != want {
            return Err(bad(format!(
                "corrupt: its sha256 is {got}, stored as {want}"
            )));
        }
        unpacked.map_err(bad)?;
        end.map(drop)
            .map_err(|e| bad(format!("reading its end: {e}")))
    })
    .await
    .map_err(|e| JobError::permanent(STAGE, format!("the unpacking thread died: {e}")))?
}

/// Decrypts, decompresses and unpacks the tar into `dir`.
fn unpack_stream(
    hashing: &mut Hashing<impl Read>,
    encrypted: bool,
    identity: Option<&Identities>,
    dir: &Path,
) -> Result<(), String> {
    let plain: Box<dyn Read + '_> = if encrypted {
        let ids = identity.expect("checked before");
        Box::new(
            ids.decrypt(io::BufReader::new(hashing))
                .map_err(|e| format!("cannot decrypt: {e}"))?,
        )
    } else {
        Box::new(hashing)
    };
    let mut z =
        zstd::stream::read::Decoder::new(plain).map_err(|e| format!("cannot decompress: {e}"))?;
    let mut archive = tar::Archive::new(&mut z);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(false);
    archive
        .unpack(dir)
        .map_err(|e| format!("cannot unpack into {}: {e}", dir.display()))?;
    io::copy(&mut z, &mut io::sink()).map_err(|e| format!("reading its end: {e}"))?;
    Ok(())
}

/// A value for postgresql.conf: single quotes doubled.
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn write_recovery(
    dir: &Path,
    env_file: &Path,
    plan: Plan,
    env: &[(String, String)],
    (uid, gid): (u32, u32),
) -> Result<(), JobError> {
    let io_err = |what: &Path, e: io::Error| {
        JobError::permanent(STAGE, format!("cannot write {}: {e}", what.display()))
    };
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| JobError::permanent(STAGE, format!("cannot find this binary's path: {e}")))?;
    // The env file: storage settings only, readable by the server's user alone.
    let mut text = String::from(
        "# Storage settings for `pgbackup wal-fetch` (restore_command). Delete after recovery.\n",
    );
    for (k, v) in env {
        if v.contains('\n') {
            continue;
        }
        text.push_str(&format!("{k}={v}\n"));
    }
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(env_file)
            .map_err(|e| io_err(env_file, e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| io_err(env_file, e))?;
        f.sync_all().map_err(|e| io_err(env_file, e))?;
    }
    let restore_command = format!(
        "{} wal-fetch --env-file {} %f %p",
        shell_words::quote(&exe.to_string_lossy()),
        shell_words::quote(&env_file.to_string_lossy())
    );
    let mut conf = String::from("\n# Added by pgbackup restore --to-time\n");
    conf.push_str(&format!(
        "restore_command = {}\n",
        conf_quote(&restore_command)
    ));
    if let Plan::Time(t) = plan {
        conf.push_str(&format!(
            "recovery_target_time = {}\n",
            conf_quote(&t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        ));
    }
    conf.push_str("recovery_target_action = 'promote'\n");
    // Nothing to inspect during recovery (it promotes at the target), and
    // without hot standby the server does not insist on max_connections and
    // the like being at least the source's (a source started with `-c`
    // flags, as container images often are, would otherwise refuse).
    conf.push_str("hot_standby = off\n");
    let auto = dir.join("postgresql.auto.conf");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&auto)
            .map_err(|e| io_err(&auto, e))?;
        f.write_all(conf.as_bytes()).map_err(|e| io_err(&auto, e))?;
    }
    let signal = dir.join("recovery.signal");
    std::fs::write(&signal, b"").map_err(|e| io_err(&signal, e))?;
    // Running as root: everything belongs to the directory's owner, the
    // user the server runs as.
    if rustix::process::geteuid().is_root() {
        chown_tree(dir, uid, gid).map_err(|e| io_err(dir, e))?;
        std::os::unix::fs::lchown(env_file, Some(uid), Some(gid))
            .map_err(|e| io_err(env_file, e))?;
    }
    Ok(())
}

fn chown_tree(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Where Debian installs each major version's binaries.
const DEBIAN_PG: &str = "/usr/lib/postgresql";

/// The pg_ctl of the restored cluster's own major version (its `PG_VERSION`
/// file): a server of another major refuses the directory. PG_BIN_DIR when
/// set, else Debian's directory of that version, else `pg_ctl` from PATH.
fn pg_ctl_path(pg_bin_dir: Option<&Path>, data: &Path, debian: &Path) -> PathBuf {
    if let Some(d) = pg_bin_dir {
        return d.join("pg_ctl");
    }
    std::fs::read_to_string(data.join("PG_VERSION"))
        .ok()
        .map(|v| debian.join(v.trim()).join("bin/pg_ctl"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("pg_ctl"))
}

/// Starts the server on `port` (as the directory's owner when root) and
/// waits until recovery has ended: `recovery.signal` is gone once the
/// server promoted; a server that stopped instead failed.
async fn start_and_wait(
    pg_ctl: &Path,
    dir: &Path,
    port: u16,
    (uid, gid): (u32, u32),
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    let log = dir.join("recovery.log");
    let mut cmd = tokio::process::Command::new(pg_ctl);
    cmd.arg("-D")
        .arg(dir)
        .arg("-l")
        .arg(&log)
        .arg("-o")
        .arg(format!("-p {port}"))
        .arg("-w")
        .arg("-t")
        .arg("3600")
        .arg("start")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if rustix::process::geteuid().is_root() {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| JobError::permanent(STAGE, format!("cannot run {}: {e}", pg_ctl.display())))?;
    if !out.status.success() {
        return Err(JobError::permanent(
            STAGE,
            format!(
                "the server did not start: {}; its log: {}",
                crate::error::one_line(&String::from_utf8_lossy(&out.stderr)),
                log_tail(&log)
            ),
        ));
    }
    let signal = dir.join("recovery.signal");
    let pid = dir.join("postmaster.pid");
    loop {
        // recovery.signal goes at the end of recovery, a moment before the
        // server takes connections ("ready" in postmaster.pid).
        if !signal.exists() && accepting(&pid) {
            return Ok(());
        }
        if !pid.exists() {
            return Err(JobError::permanent(
                STAGE,
                format!(
                    "recovery failed and the server stopped; its log: {}",
                    log_tail(&log)
                ),
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = cancel.cancelled() => {
                return Err(JobError::cancelled(STAGE, "stopped while the server recovers; it keeps running"));
            }
        }
    }
}

/// postmaster.pid's status line (the 8th) says the server takes connections.
fn accepting(pid_file: &Path) -> bool {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.lines().nth(7).map(|l| l.trim() == "ready"))
        .unwrap_or(false)
}

/// The server log's FATAL/PANIC lines, or its last line.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let fatal: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("FATAL") || l.contains("PANIC"))
        .collect();
    let pick = if fatal.is_empty() {
        text.lines().last().unwrap_or("(empty)").to_string()
    } else {
        fatal.join(" | ")
    };
    crate::error::one_line(&pick)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn window() -> Window {
        Window {
            oldest: at("2026-11-30T03:01:00Z"),
            last_transaction: Some(at("2026-11-30T16:59:30Z")),
            stored_at: Some(at("2026-11-30T17:00:10Z")),
        }
    }

    #[test]
    fn a_target_inside_the_window_is_a_recovery_target() {
        let t = at("2026-11-30T12:00:00Z");
        assert_eq!(plan(Target::Time(t), &window()), Ok(Plan::Time(t)));
        let t = at("2026-11-30T16:59:30Z");
        assert_eq!(plan(Target::Time(t), &window()), Ok(Plan::Time(t)));
        assert_eq!(plan(Target::Latest, &window()), Ok(Plan::End));
    }

    #[test]
    fn after_the_last_transaction_but_stored_recovers_to_the_end() {
        // PostgreSQL would never reach a target after the last commit: the
        // end of the archive is the same state.
        let t = at("2026-11-30T17:00:05Z");
        assert_eq!(plan(Target::Time(t), &window()), Ok(Plan::End));
    }

    #[test]
    fn targets_outside_the_window_are_refused_with_the_window() {
        let e = plan(Target::Time(at("2026-11-30T02:00:00Z")), &window()).unwrap_err();
        assert!(
            e.contains("before the recovery window (2026-11-30T03:01:00Z to 2026-11-30T17:00:10Z)"),
            "{e}"
        );
        let e = plan(Target::Time(at("2026-11-30T18:00:00Z")), &window()).unwrap_err();
        assert!(e.contains("after the recovery window"), "{e}");
    }

    #[test]
    fn targets_parse_as_rfc3339_or_latest() {
        assert_eq!(Target::parse("latest"), Ok(Target::Latest));
        assert_eq!(
            Target::parse("2026-11-30T18:00:00+01:00"),
            Ok(Target::Time(at("2026-11-30T17:00:00Z")))
        );
        assert!(Target::parse("yesterday").is_err());
    }

    #[test]
    fn the_env_file_sits_beside_the_data_directory() {
        assert_eq!(
            env_file_path(Path::new("/var/lib/postgresql/restored")),
            PathBuf::from("/var/lib/postgresql/restored.wal-fetch.env")
        );
    }

    #[test]
    fn pg_ctl_is_that_of_the_clusters_major_version() {
        let root = std::env::temp_dir().join(format!("pgbackup-pgctl-{}", rand::random::<u64>()));
        let (data, debian) = (root.join("data"), root.join("pg"));
        for major in ["15", "17"] {
            let bin = debian.join(major).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("pg_ctl"), b"").unwrap();
        }
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("PG_VERSION"), b"15\n").unwrap();
        assert_eq!(
            pg_ctl_path(None, &data, &debian),
            debian.join("15/bin/pg_ctl")
        );
        assert_eq!(
            pg_ctl_path(Some(Path::new("/opt/pg/bin")), &data, &debian),
            PathBuf::from("/opt/pg/bin/pg_ctl")
        );
        std::fs::write(data.join("PG_VERSION"), b"16\n").unwrap();
        assert_eq!(pg_ctl_path(None, &data, &debian), PathBuf::from("pg_ctl"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn conf_values_are_quoted() {
        assert_eq!(conf_quote("a'b"), "'a''b'");
    }
}
