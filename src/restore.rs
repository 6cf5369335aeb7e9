//! Restoring a backup into a database: download -> sha256 -> decompression
//! -> pg_restore (custom) or psql (plain), streamed, in one transaction that
//! commits only after the stored checksum matched.
//!
//! Why nothing commits early:
//! - custom: `pg_restore --single-transaction` commits only after reading the
//!   archive's last bytes, and those are held back until the checksum matched
//!   ([`crate::archive::HoldBack`]). Any EOF before them is a fatal error
//!   for pg_restore, so it rolls back even if pgbackup itself dies.
//! - plain: psql gets `BEGIN;`, the dump, and `COMMIT;` only after the
//!   checksum matched and pg_dump's completion marker was seen. psql's own
//!   `--single-transaction` is not used: it commits at EOF, and EOF is also
//!   what psql sees when a download breaks off or pgbackup is killed.
//!   pg_dump wraps large objects in `BEGIN;`/`COMMIT;` of their own, which
//!   would end the outer transaction early; those two lines are left out.
//! - tar (the Railway template's imported `.tar.gz` backups): streamed to
//!   pg_restore like custom, gunzipped on the way. They carry no sha256, so
//!   the last bytes are held back until gzip's own CRC-32 and length checked
//!   out; pg_restore reads a tar archive in order, and a truncated stream
//!   fails inside a member and rolls back.
//! - `--jobs N`: pg_restore's parallel mode needs a seekable file and cannot
//!   run in one transaction. The dump is spooled to an unlinked temp file
//!   (checked against free space first), its data offsets are filled in
//!   ([`crate::seekable`]), and it is restored only once the checksum
//!   matched; a failure during the parallel restore leaves what was restored.
//!
//! The target's password reaches the tools as PGPASSWORD, never in argv.

use std::io::{self, BufWriter, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::{Child, ChildStdin};
use tokio::task::JoinHandle;
use tokio_util::io::SyncIoBridge;

use crate::archive::{HoldBack, PlainScanner, TocEntry};
use crate::backoff;
use crate::catalog::Backup;
use crate::config::{Database, Format};
use crate::crypto::Identities;
use crate::error::{one_line, JobError, Stage};
use crate::fetch::{self, Failure, Sink, Stored, Streamed};
use crate::pg::{self, pg_err, quote_ident, ServerInfo, Tools};
use crate::seekable::OffsetRecorder;
use crate::storage::ObjectStore;

/// Bytes of a custom archive held back until the checksum matched.
const HOLD: usize = 64 * 1024;

/// Empties a database of everything a restore would bring: every schema
/// but the system ones is dropped with its contents; `public` is dropped and
/// recreated with its owner and privileges (pg_dump assumes it exists);
/// large objects are unlinked. Plain dumps carry no DROP statements, so this
/// is `--clean` for them.
pub const EMPTY_SQL: &str = r#"DO $pgbackup_clean$
DECLARE
  s text;
  own text;
  acl aclitem[];
  g record;
BEGIN
  FOR s IN SELECT nspname FROM pg_catalog.pg_namespace
           WHERE nspname NOT LIKE 'pg\_%' AND nspname NOT IN ('information_schema', 'public') LOOP
    EXECUTE pg_catalog.format('DROP SCHEMA %I CASCADE', s);
  END LOOP;
  SELECT nspowner::pg_catalog.regrole::text, nspacl INTO own, acl
    FROM pg_catalog.pg_namespace WHERE nspname = 'public';
  IF FOUND THEN
    DROP SCHEMA public CASCADE;
    CREATE SCHEMA public;
    EXECUTE pg_catalog.format('ALTER SCHEMA public OWNER TO %s', own);
    FOR g IN SELECT * FROM pg_catalog.aclexplode(acl) LOOP
      EXECUTE pg_catalog.format('GRANT %s ON SCHEMA public TO %s%s', g.privilege_type,
        CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::pg_catalog.regrole::text END,
        CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
  END IF;
  PERFORM pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata;
END
$pgbackup_clean$;
"#;

/// User relations (tables, views, sequences...), extension members aside.
const USER_RELATIONS: &str = "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) \
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relkind IN ('r','p','v','m','f','S') \
      AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' \
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
        WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e') \
    ORDER BY 1";

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Stops the restore: the tools are killed (nothing commits) and a
    /// database the restore created is dropped.
    pub cancel: tokio_util::sync::CancellationToken,
    /// Replace what the target holds (custom: `pg_restore --clean
    /// --if-exists`; plain: [`EMPTY_SQL`] first, in the same transaction).
    pub clean: bool,
    /// pg_restore's parallel jobs; `None` or 1 streams in one transaction.
    pub jobs: Option<u32>,
    /// `pg_restore --no-owner`: the restoring role owns every object, so a
    /// target without the backup's roles still restores. Custom and tar
    /// archives only: a plain dump's owners are in its SQL.
    pub no_owner: bool,
    /// Decrypts an encrypted backup; without it one is refused up front.
    pub identity: Option<Arc<Identities>>,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub key: String,
    pub database: String,
    /// host:port of the target.
    pub server: String,
    /// The database did not exist and was created.
    pub created: bool,
    pub streamed: Streamed,
    pub duration: Duration,
}

/// What the restore tool is told to do beyond restoring.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ToolFlags {
    /// Replace what the target holds.
    pub clean: bool,
    /// pg_restore `--no-owner` (never for plain dumps).
    pub no_owner: bool,
}

/// A restore's result from the tools' side.
pub(crate) struct Restored {
    pub streamed: Streamed,
    /// Tables named by a plain dump's comments (custom: read separately).
    pub toc: Option<Vec<TocEntry>>,
}

/// Why `--no-owner` is refused for a plain dump.
pub fn no_owner_plain(key: &str) -> String {
    format!(
        "{key} is a plain format dump: its SQL sets every owner itself (ALTER ... OWNER TO), \
         which pg_restore's --no-owner cannot leave out; create the roles on the target \
         first, or restore a custom-format backup"
    )
}

/// Restores `backup` into `target`: creates the database when missing,
/// refuses one that holds user tables unless `clean`, and drops a database
/// it created when the restore fails.
pub async fn restore(
    pg_bin_dir: Option<&Path>,
    storage: &dyn ObjectStore,
    backup: &Backup,
    target: &Database,
    opts: &RestoreOptions,
) -> Result<RestoreReport, JobError> {
    let t0 = Instant::now();
    let stage = Stage::Restore;
    let jobs = opts.jobs.filter(|j| *j > 1);
    if jobs.is_some() && backup.format != Format::Custom {
        return Err(JobError::permanent(
            stage,
            format!(
                "--jobs needs a custom-format backup; {} is {} format",
                backup.key,
                backup.format.as_str()
            ),
        ));
    }
    if opts.no_owner && backup.format == Format::Plain {
        return Err(JobError::config(stage, no_owner_plain(&backup.key)));
    }
    // Before the target is touched: an encrypted backup needs its identity.
    let stored = fetch::stored(storage, backup, opts.identity.as_ref(), stage).await?;
    stored.need_identity(stage, "restoring it")?;
    let (client, server, created) = open_target(target, stage).await?;
    let label = pg::host_label(target.url_without_password());
    if !opts.clean {
        let existing = user_relations(&client, stage).await?;
        if !existing.is_empty() {
            return Err(JobError::permanent(
                stage,
                format!(
                    "target database {:?} at {label} already holds {} ({}); pass --clean to replace them",
                    target.name(),
                    tables(existing.len()),
                    examples(&existing)
                ),
            ));
        }
    }
    drop(client);
    let flags = ToolFlags {
        clean: opts.clean,
        no_owner: opts.no_owner,
    };
    let work = async {
        let tools = restore_tools(&server, &stored, pg_bin_dir).await?;
        tracing::info!(
            object = %backup.key,
            database = %target.name(),
            server = %label,
            tool = %tools.bin_dir.display(),
            "restoring"
        );
        match jobs {
            Some(j) => run_parallel(&tools, storage, &stored, target, flags, j, stage).await,
            None => run_streamed(
                &tools,
                storage,
                &stored,
                backup.format,
                target,
                flags,
                stage,
            )
            .await
            .map(|r| r.streamed),
        }
    };
    // Cancelling drops `work`: its tools die with their handles (kill_on_drop).
    let result = tokio::select! {
        r = work => r,
        _ = opts.cancel.cancelled() => Err(stopped(stage)),
    };
    match result {
        Ok(streamed) => {
            if !streamed.checksum_verified {
                tracing::warn!(object = %backup.key, "the object carries no sha256: restored without an integrity check");
            }
            Ok(RestoreReport {
                key: backup.key.clone(),
                database: target.name().to_string(),
                server: label,
                created,
                streamed,
                duration: t0.elapsed(),
            })
        }
        Err(e) if created => {
            let maintenance = target.with_database("postgres");
            match drop_database(&maintenance, target.name(), &server).await {
                Ok(()) => Err(e),
                Err(d) => Err(JobError::permanent(
                    e.stage,
                    format!(
                        "{}; the database it created could not be dropped: {}",
                        e.message, d.message
                    ),
                )),
            }
        }
        Err(e) => Err(e),
    }
}

pub(crate) fn stopped(stage: Stage) -> JobError {
    JobError::cancelled(
        stage,
        format!("{stage} stopped by a signal before it finished"),
    )
}

/// Connects to the target, creating it (from template0, via the `postgres`
/// database on the same server) when it does not exist.
pub(crate) async fn open_target(
    target: &Database,
    stage: Stage,
) -> Result<(tokio_postgres::Client, ServerInfo, bool), JobError> {
    let first = match pg::connect(target).await {
        Ok(c) => {
            let info = server_info(&c).await?;
            return Ok((c, info, false));
        }
        Err(e) => e,
    };
    // Is it missing, or unreachable? Ask the server's `postgres` database
    // rather than parsing a (possibly translated) error message.
    let Ok(m) = pg::connect(&target.with_database("postgres")).await else {
        return Err(first);
    };
    let exists = m
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
            &[&target.name()],
        )
        .await
        .map_err(|e| pg_err(stage, "looking up the target database", &e))?
        .is_some();
    if exists {
        return Err(first);
    }
    create_database(&m, target, stage).await?;
    let info = server_info(&m).await?;
    let c = pg::connect(target).await?;
    Ok((c, info, true))
}

pub(crate) async fn create_database(
    via: &tokio_postgres::Client,
    db: &Database,
    stage: Stage,
) -> Result<(), JobError> {
    via.batch_execute(&format!(
        "CREATE DATABASE {} TEMPLATE template0",
        quote_ident(db.name())
    ))
    .await
    .map_err(|e| {
        pg_err(
            stage,
            &format!(
                "cannot create database {:?} at {}",
                db.name(),
                pg::host_label(db.url_without_password())
            ),
            &e,
        )
    })?;
    tracing::info!(database = %db.name(), "created database");
    Ok(())
}

/// Drops `name`, connected through `via` (another database on that server).
pub(crate) async fn drop_database(
    via: &Database,
    name: &str,
    server: &ServerInfo,
) -> Result<(), JobError> {
    let c = pg::connect(via).await?;
    // FORCE (13+) ends sessions a killed tool may still have open.
    let force = if server.version_num >= 130000 {
        " WITH (FORCE)"
    } else {
        ""
    };
    let sql = format!("DROP DATABASE IF EXISTS {}{force}", quote_ident(name));
    backoff::retry(
        DROP_RETRIES,
        || c.batch_execute(&sql),
        |_| true,
        |e, retry, wait| {
            let wait_ms = wait.as_millis() as u64;
            tracing::debug!(error = %e, retry, wait_ms, "cannot drop the database yet; retrying")
        },
    )
    .await
    .map_err(|e| pg_err(Stage::Restore, &format!("dropping database {name:?}"), &e))
}

/// A database is dropped once its last session has gone, which may take a
/// moment after the tool that used it stopped: about 5 s of tries.
const DROP_RETRIES: backoff::Policy = backoff::Policy {
    retries: 19,
    base: Duration::from_millis(250),
    max: Duration::from_millis(250),
};

pub(crate) async fn server_info(c: &tokio_postgres::Client) -> Result<ServerInfo, JobError> {
    pg::query_server_info(c)
        .await
        .map_err(|e| pg_err(Stage::Connect, "asking the server version", &e))
}

pub(crate) async fn user_relations(
    c: &tokio_postgres::Client,
    stage: Stage,
) -> Result<Vec<String>, JobError> {
    let rows = c
        .query(USER_RELATIONS, &[])
        .await
        .map_err(|e| pg_err(stage, "listing the target's tables", &e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// "1 user table", "3 user tables".
pub(crate) fn tables(n: usize) -> String {
    format!("{n} user table{}", if n == 1 { "" } else { "s" })
}

pub(crate) fn examples(names: &[String]) -> String {
    let mut s = names.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 3 {
        s.push_str(", ...");
    }
    s
}

/// Client tools for restoring `stored` into `server`: at least as new as the
/// server and as the pg_dump that wrote the backup (an older pg_restore
/// cannot read a newer archive).
pub(crate) async fn restore_tools(
    server: &ServerInfo,
    stored: &Stored,
    pg_bin_dir: Option<&Path>,
) -> Result<Tools, JobError> {
    let dumped = stored.dump_major.unwrap_or(0);
    let need = server.major().max(dumped);
    pg::find_tools(need, pg_bin_dir).await.map_err(|e| {
        if dumped > server.major() {
            JobError::permanent(
                e.stage,
                format!(
                    "{} was written by pg_dump {dumped}, which needs pg_restore/psql {dumped} or newer (the target is PostgreSQL {}): install postgresql-client-{dumped}{}",
                    stored.key,
                    server.major(),
                    if pg_bin_dir.is_some() { " or point PG_BIN_DIR at it" } else { "" }
                ),
            )
        } else {
            e
        }
    })
}

/// psql's input: `BEGIN;` (and [`EMPTY_SQL`] for --clean), the dump, and
/// `COMMIT;` only from [`Sink::finish`].
struct PsqlFeed {
    scan: PlainScanner<BufWriter<SyncIoBridge<ChildStdin>>>,
    prelude: Option<Vec<u8>>,
}

impl PsqlFeed {
    fn start(&mut self) -> io::Result<()> {
        if let Some(p) = self.prelude.take() {
            self.scan.get_mut().write_all(&p)?;
        }
        Ok(())
    }
}

impl Write for PsqlFeed {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.start()?;
        self.scan.write(data)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.scan.flush()
    }
}

impl Sink for PsqlFeed {
    fn finish(&mut self) -> io::Result<()> {
        self.start()?;
        self.scan.flush_line()?;
        self.scan.get_mut().write_all(b"\nCOMMIT;\n")?;
        self.scan.flush()
    }
}

/// Streams the backup into pg_restore or psql.
pub(crate) async fn run_streamed(
    tools: &Tools,
    storage: &dyn ObjectStore,
    stored: &Stored,
    format: Format,
    target: &Database,
    flags: ToolFlags,
    stage: Stage,
) -> Result<Restored, JobError> {
    let reader = fetch::open(storage, &stored.key, stage).await?;
    let dbname = format!("--dbname={}", target.url_without_password());
    match format {
        Format::Custom | Format::Tar => {
            let tool = "pg_restore";
            let mut cmd = tools.command(tool, target);
            cmd.args(["--no-password", "--exit-on-error", "--single-transaction"]);
            if format == Format::Tar {
                cmd.arg("--format=tar");
            }
            if flags.clean {
                cmd.args(["--clean", "--if-exists"]);
            }
            if flags.no_owner {
                cmd.arg("--no-owner");
            }
            cmd.arg(&dbname);
            let (mut child, stdin, err) = spawn(cmd, tools, tool, stage)?;
            let sink = HoldBack::new(SyncIoBridge::new(stdin), HOLD, stored.dump_bytes);
            let opts = fetch::Options {
                stage,
                drain_limit: fetch::DRAIN_LIMIT,
                accept: |_: &HoldBack<_>| None,
            };
            let (res, sink) = fetch::pump(reader, stored, sink, opts).await;
            let streamed = finish_tool(&mut child, sink, res, err, tool, stage).await?;
            Ok(Restored {
                streamed,
                toc: None,
            })
        }
        Format::Plain => {
            if flags.no_owner {
                return Err(JobError::config(stage, no_owner_plain(&stored.key)));
            }
            let tool = "psql";
            let mut cmd = tools.command(tool, target);
            cmd.args([
                "--no-psqlrc",
                "--quiet",
                "--no-password",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .arg(&dbname);
            let (mut child, stdin, err) = spawn(cmd, tools, tool, stage)?;
            let mut prelude = b"BEGIN;\n".to_vec();
            if flags.clean {
                prelude.extend_from_slice(EMPTY_SQL.as_bytes());
            }
            let sink = PsqlFeed {
                scan: PlainScanner::new(
                    BufWriter::with_capacity(256 * 1024, SyncIoBridge::new(stdin)),
                    true,
                ),
                prelude: Some(prelude),
            };
            let opts = fetch::Options {
                stage,
                drain_limit: fetch::DRAIN_LIMIT,
                accept: |f: &PsqlFeed| {
                    (!f.scan.complete).then(|| {
                        "the plain dump lacks pg_dump's completion marker: it is incomplete"
                            .to_string()
                    })
                },
            };
            let (res, mut sink) = fetch::pump(reader, stored, sink, opts).await;
            let toc = sink.as_mut().map(|s| std::mem::take(&mut s.scan.toc));
            let streamed = finish_tool(&mut child, sink, res, err, tool, stage).await?;
            Ok(Restored { streamed, toc })
        }
    }
}

/// `--jobs N`: spool to an unlinked temp file, verify, then `pg_restore -j N`.
async fn run_parallel(
    tools: &Tools,
    storage: &dyn ObjectStore,
    stored: &Stored,
    target: &Database,
    flags: ToolFlags,
    jobs: u32,
    stage: Stage,
) -> Result<Streamed, JobError> {
    let dir = std::env::temp_dir();
    check_space(&dir, stored.dump_bytes, stage)?;
    let file = spool_file(&dir).map_err(|e| {
        JobError::permanent(
            stage,
            format!("creating a spool file in {}: {e}", dir.display()),
        )
    })?;
    let reader = fetch::open(storage, &stored.key, stage).await?;
    let sink = OffsetRecorder::new(BufWriter::with_capacity(1 << 20, file));
    let opts = fetch::Options {
        stage,
        drain_limit: fetch::DRAIN_LIMIT,
        accept: |_: &OffsetRecorder<BufWriter<std::fs::File>>| None,
    };
    let (res, sink) = fetch::pump(reader, stored, sink, opts).await;
    let streamed = match res {
        Ok(s) => s,
        Err(Failure::Job(e)) => return Err(e),
        Err(Failure::Sink(e)) => {
            return Err(JobError::permanent(
                stage,
                format!("writing the spool file in {}: {e}", dir.display()),
            ))
        }
    };
    let (buf, patches) = sink.expect("returned on success").into_parts();
    let file = buf.into_inner().map_err(|e| {
        JobError::permanent(stage, format!("writing the spool file: {}", e.error()))
    })?;
    // Where each table's data starts, as pg_dump records it when it writes
    // to a file: pg_restore's workers then seek rather than scan.
    match patches {
        Ok(patches) => {
            use std::os::unix::fs::FileExt;
            for p in &patches {
                file.write_at(&p.bytes, p.at).map_err(|e| {
                    JobError::permanent(stage, format!("writing the spool file: {e}"))
                })?;
            }
            tracing::debug!(offsets = patches.len(), "data offsets filled in");
        }
        Err(why) => tracing::info!("restoring without data offsets ({why}); pg_restore will scan"),
    }
    let fd = file.as_raw_fd();
    let tool = "pg_restore";
    let mut cmd = tools.command(tool, target);
    cmd.args(["--no-password", "--exit-on-error"])
        .arg(format!("--jobs={jobs}"));
    if flags.clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    if flags.no_owner {
        cmd.arg("--no-owner");
    }
    cmd.arg(format!("--dbname={}", target.url_without_password()))
        .arg(format!("/dev/fd/{fd}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The file has no name; pg_restore and its workers reach it through
    // this inherited descriptor.
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe work is allowed: one fcntl syscall, no allocation or
    // lock. `fd` is open there: `file` stays open in the parent until the
    // child has exited, and fork copied it.
    unsafe {
        cmd.pre_exec(move || {
            rustix::io::fcntl_setfd(BorrowedFd::borrow_raw(fd), rustix::io::FdFlags::empty())?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| spawn_err(tools, tool, stage, e))?;
    let err = tokio::spawn(crate::pg::drain_tail(child.stderr.take().expect("piped")));
    let status = child.wait().await;
    let tail = err.await.unwrap_or_default();
    drop(file);
    check_status(status, &tail, tool, stage)?;
    Ok(streamed)
}

/// Creates a temp file and unlinks it at once: it vanishes with the process,
/// however that ends.
fn spool_file(dir: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!(
        ".pgbackup-restore-{:016x}.dump",
        rand::random::<u64>()
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// The spool file holds the whole uncompressed dump; say so up front rather
/// than fail with ENOSPC halfway.
fn check_space(dir: &Path, dump_bytes: Option<u64>, stage: Stage) -> Result<(), JobError> {
    let Some(need) = dump_bytes else {
        tracing::warn!("the backup's dump size is unknown: cannot check free space for --jobs");
        return Ok(());
    };
    let free = free_bytes(dir).map_err(|e| {
        JobError::permanent(
            stage,
            format!("checking free space in {}: {e}", dir.display()),
        )
    })?;
    let margin = need / 20 + (64 << 20);
    if free < need + margin {
        return Err(JobError::permanent(
            stage,
            format!(
                "--jobs spools the uncompressed dump ({need} bytes) to {}, which has {free} bytes free; set TMPDIR to a larger filesystem or restore without --jobs",
                dir.display()
            ),
        ));
    }
    Ok(())
}

pub(crate) fn free_bytes(dir: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail * st.f_frsize)
}

type Spawned = (Child, ChildStdin, JoinHandle<String>);

/// Starts a tool reading stdin, its stderr drained concurrently (a full
/// stderr pipe would stall it).
pub(crate) fn spawn(
    mut cmd: tokio::process::Command,
    tools: &Tools,
    tool: &str,
    stage: Stage,
) -> Result<Spawned, JobError> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| spawn_err(tools, tool, stage, e))?;
    let stdin = child.stdin.take().expect("piped");
    let err = tokio::spawn(crate::pg::drain_tail(child.stderr.take().expect("piped")));
    Ok((child, stdin, err))
}

fn spawn_err(tools: &Tools, tool: &str, stage: Stage, e: io::Error) -> JobError {
    JobError::permanent(
        stage,
        format!("cannot start {}: {e}", tools.bin(tool).display()),
    )
}

/// Ends a tool fed by [`fetch::pump`]: on success its input is closed and
/// its exit awaited; on failure it is killed before its input closes, so it
/// never sees a clean end of input. Always reaped.
pub(crate) async fn finish_tool<S: Send + 'static>(
    child: &mut Child,
    sink: Option<S>,
    res: Result<Streamed, Failure>,
    err: JoinHandle<String>,
    tool: &str,
    stage: Stage,
) -> Result<Streamed, JobError> {
    match res {
        Ok(streamed) => {
            fetch::drop_sink(sink).await;
            let status = child.wait().await;
            let tail = err.await.unwrap_or_default();
            check_status(status, &tail, tool, stage)?;
            Ok(streamed)
        }
        Err(Failure::Job(e)) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            fetch::drop_sink(sink).await;
            err.abort();
            Err(e)
        }
        Err(Failure::Sink(io)) => {
            // The tool stopped reading: it exited, or is about to; its own
            // words say why.
            let status = match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            fetch::drop_sink(sink).await;
            let tail = err.await.unwrap_or_default();
            check_status(status, &tail, tool, stage)?;
            Err(JobError::permanent(
                stage,
                format!("{tool} stopped reading its input: {io}"),
            ))
        }
    }
}

pub(crate) fn check_status(
    status: io::Result<std::process::ExitStatus>,
    stderr_tail: &str,
    tool: &str,
    stage: Stage,
) -> Result<(), JobError> {
    let status =
        status.map_err(|e| JobError::permanent(stage, format!("waiting for {tool}: {e}")))?;
    if status.success() {
        return Ok(());
    }
    let how = pg::exit_description(status);
    let said = last_lines(stderr_tail, 4);
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    Err(JobError::permanent(stage, format!("{tool} {how}{said}")))
}

/// The last `n` non-empty lines, as one line.
fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    one_line(&lines[lines.len().saturating_sub(n)..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_errors_are_one_line_and_end_with_the_cause() {
        let tail = "pg_restore: while PROCESSING TOC:\n\npg_restore: error: could not execute query: ERROR:  relation \"x\" already exists\nCommand was: CREATE TABLE x ();\n";
        assert_eq!(
            last_lines(tail, 4),
            "pg_restore: while PROCESSING TOC:; pg_restore: error: could not execute query: ERROR:  relation \"x\" already exists; Command was: CREATE TABLE x ();"
        );
        assert_eq!(
            examples(&["a".into(), "b".into(), "c".into(), "d".into()]),
            "a, b, c, ..."
        );
    }

    #[test]
    fn free_space_is_measured() {
        assert!(free_bytes(&std::env::temp_dir()).unwrap() > 0);
        let e = check_space(&std::env::temp_dir(), Some(u64::MAX / 4), Stage::Restore).unwrap_err();
        assert!(e.to_string().contains("TMPDIR"), "{e}");
    }
}
