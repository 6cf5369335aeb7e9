//! Is a backup good? [`verify`] checks integrity: the stored sha256 over
//! every stored byte, decompression to the end, and an archive that reads to
//! its end (custom: `pg_restore -f /dev/null` reads every data block, where
//! `--list` would stop after the table of contents; plain: pg_dump's
//! completion marker). [`drill`] restores into a scratch database and checks
//! what came back: every table in the archive exists, every table that had
//! rows at backup time (per the manifest) has rows, and BACKUP_VERIFY_SQL,
//! when set, returns true.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::io::AsyncReadExt;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

use crate::archive::{self, PlainScanner, TocEntry};
use crate::catalog::{self, Backup};
use crate::config::{Database, DrillConfig, Format};
use crate::crypto::Identities;
use crate::error::{JobError, Stage};
use crate::fetch::{self, Failure, Sink, Stored, Streamed};
use crate::manifest;
use crate::pg::{self, ServerInfo, Tools};
use crate::pg::{pg_err, quote_ident};
use crate::restore;
use crate::storage::ObjectStore;

/// What an integrity check found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub key: String,
    pub format: Format,
    pub streamed: Streamed,
    /// Tables in a plain dump (None for custom: not counted).
    pub tables: Option<usize>,
    pub duration: Duration,
}

/// The result of a successful restore drill.
#[derive(Debug, Clone)]
pub struct DrillReport {
    pub key: String,
    /// The scratch database restored into.
    pub scratch: String,
    /// host:port of the scratch database.
    pub server: String,
    pub started: DateTime<Utc>,
    /// Time to recover: from the start of the download until the restore
    /// committed in the scratch database.
    pub time_to_recover: Duration,
    /// The whole drill, checks and clean-up included.
    pub duration: Duration,
    /// Tables in the archive; all exist after the restore.
    pub tables: usize,
    /// Tables the manifest says had rows; all have rows after the restore.
    pub tables_with_rows: usize,
    /// The backup had a manifest (without one, rows are not checked).
    pub manifest: bool,
    /// BACKUP_VERIFY_SQL ran and returned true.
    pub verify_sql: bool,
    pub streamed: Streamed,
}

/// A plain dump read only to see it end.
struct Scan(PlainScanner<io::Sink>);

impl Write for Scan {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Sink for Scan {
    fn finish(&mut self) -> io::Result<()> {
        self.0.flush_line()
    }
}

/// Checks a backup's integrity without restoring it. An encrypted backup
/// without `identity` is only hashed: its stored sha256 covers the
/// ciphertext, so integrity is still checked, but not the archive inside.
pub async fn verify(
    pg_bin_dir: Option<&Path>,
    storage: &dyn ObjectStore,
    backup: &Backup,
    identity: Option<&Arc<Identities>>,
) -> Result<VerifyReport, JobError> {
    let t0 = Instant::now();
    let stage = Stage::Verify;
    let stored = fetch::stored(storage, backup, identity, stage).await?;
    // The template's imported backups never had one: check what can be
    // checked (gzip's CRC, a tar archive pg_restore reads to its end) and
    // say that the sha256 was not.
    if stored.sha256.is_none() && !backup.imported {
        return Err(JobError::permanent(
            stage,
            format!(
                "{} carries no sha256 ({}): its integrity cannot be verified",
                backup.key,
                storage.checksum_place()
            ),
        ));
    }
    let (streamed, tables) = match backup.format {
        _ if stored.sealed() => {
            let reader = fetch::open(storage, &stored.key, stage).await?;
            let opts = fetch::Options {
                stage,
                drain_limit: u64::MAX,
                accept: |_: &io::Sink| None,
            };
            match fetch::pump(reader, &stored, io::sink(), opts).await.0 {
                Ok(s) => (s, None),
                Err(Failure::Job(e)) => return Err(e),
                Err(Failure::Sink(e)) => return Err(JobError::permanent(stage, e.to_string())),
            }
        }
        Format::Custom | Format::Tar => {
            let tools = reader_tools(&stored, pg_bin_dir).await?;
            let reader = fetch::open(storage, &stored.key, stage).await?;
            let tool = "pg_restore";
            let mut cmd = tokio::process::Command::new(tools.bin(tool));
            cmd.arg("--file=/dev/null").kill_on_drop(true);
            if backup.format == Format::Tar {
                cmd.arg("--format=tar");
            }
            let (mut child, stdin, err) = restore::spawn(cmd, &tools, tool, stage)?;
            let sink = BufWriter::with_capacity(256 * 1024, SyncIoBridge::new(stdin));
            let opts = fetch::Options {
                stage,
                drain_limit: fetch::DRAIN_LIMIT,
                accept: |_: &BufWriter<_>| None,
            };
            let (res, sink) = fetch::pump(reader, &stored, sink, opts).await;
            let s = restore::finish_tool(&mut child, sink, res, err, tool, stage).await?;
            (s, None)
        }
        Format::Plain => {
            let reader = fetch::open(storage, &stored.key, stage).await?;
            let opts = fetch::Options {
                stage,
                drain_limit: u64::MAX,
                accept: |s: &Scan| {
                    (!s.0.complete).then(|| {
                        "the plain dump lacks pg_dump's completion marker: it is incomplete"
                            .to_string()
                    })
                },
            };
            let (res, sink) = fetch::pump(
                reader,
                &stored,
                Scan(PlainScanner::new(io::sink(), false)),
                opts,
            )
            .await;
            let s = match res {
                Ok(s) => s,
                Err(Failure::Job(e)) => return Err(e),
                Err(Failure::Sink(e)) => return Err(JobError::permanent(stage, e.to_string())),
            };
            let tables = sink.map(|s| s.0.toc.iter().filter(|e| !e.data).count());
            (s, tables)
        }
    };
    Ok(VerifyReport {
        key: backup.key.clone(),
        format: backup.format,
        streamed,
        tables,
        duration: t0.elapsed(),
    })
}

/// pg_restore new enough to read what pg_dump `dump_major` wrote.
async fn reader_tools(stored: &Stored, pg_bin_dir: Option<&Path>) -> Result<Tools, JobError> {
    let need = stored.dump_major.unwrap_or(0);
    pg::find_tools(need, pg_bin_dir).await.map_err(|e| {
        JobError::permanent(
            e.stage,
            format!(
                "{} was written by pg_dump {need}; reading it needs pg_restore {need} or newer: install postgresql-client-{need}{}",
                stored.key,
                if pg_bin_dir.is_some() { " or point PG_BIN_DIR at it" } else { "" }
            ),
        )
    })
}

/// Where a drill restores, and how it cleans up.
struct Scratch {
    db: Database,
    server: ServerInfo,
    /// Drop it afterwards through this database (we created it), else
    /// empty it (it was given, and empty, before the drill).
    drop_via: Option<Database>,
}

/// The restore drill: restores backup `name` (or `latest`) into a scratch
/// database, checks it, and removes what it restored, also on failure.
///
/// The scratch database is BACKUP_VERIFY_DATABASE_URL (created when missing
/// and then dropped; if it exists it must be empty, and is emptied again), or
/// else `pgbackup_drill_<time>_<random>`, created on BACKUP_DATABASE_URL's
/// server (the role needs CREATEDB) and always dropped.
pub async fn drill(
    cfg: &DrillConfig,
    storage: &dyn ObjectStore,
    name: &str,
) -> Result<DrillReport, JobError> {
    drill_until(cfg, storage, name, &CancellationToken::new()).await
}

/// [`drill`] that stops when `cancel` fires (e.g. at shutdown): the restore
/// is killed and the scratch database still removed before it returns.
pub async fn drill_until(
    cfg: &DrillConfig,
    storage: &dyn ObjectStore,
    name: &str,
    cancel: &CancellationToken,
) -> Result<DrillReport, JobError> {
    let started = Utc::now();
    let t0 = Instant::now();
    let stage = Stage::Verify;
    let wanted = catalog::wanted(&cfg.prefix, name)
        .map_err(|e| JobError::permanent(stage, e.to_string()))?;
    let backup = catalog::resolve(storage, &cfg.prefix, &wanted, stage).await?;
    let stored = fetch::stored(storage, &backup, cfg.identity.as_ref(), stage).await?;
    stored.need_identity(stage, "a restore drill")?;
    let scratch = open_scratch(cfg).await?;
    tracing::info!(object = %backup.key, scratch = %scratch.db.name(), "restore drill");

    let result = tokio::select! {
        r = run_drill(cfg, storage, &backup, &stored, &scratch, t0) => r,
        _ = cancel.cancelled() => Err(restore::stopped(stage)),
    };

    let cleaned = match &scratch.drop_via {
        Some(via) => restore::drop_database(via, scratch.db.name(), &scratch.server).await,
        None => empty(&scratch.db).await,
    };
    match (result, cleaned) {
        (Ok(mut r), Ok(())) => {
            r.started = started;
            r.duration = t0.elapsed();
            Ok(r)
        }
        (Ok(_), Err(c)) => Err(JobError::permanent(
            stage,
            format!(
                "the drill passed but its scratch database {:?} could not be removed: {}",
                scratch.db.name(),
                c.message
            ),
        )),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(c)) => Err(JobError::permanent(
            e.stage,
            format!(
                "{}; and the scratch database {:?} could not be removed: {}",
                e.message,
                scratch.db.name(),
                c.message
            ),
        )),
    }
}

async fn open_scratch(cfg: &DrillConfig) -> Result<Scratch, JobError> {
    let stage = Stage::Verify;
    // DrillConfig checked that this is not the database being backed up.
    if let Some(db) = &cfg.verify.verify_database {
        let (c, server, created) = restore::open_target(db, stage).await?;
        if !created {
            let existing = restore::user_relations(&c, stage).await?;
            if !existing.is_empty() {
                return Err(JobError::permanent(
                    stage,
                    format!(
                        "scratch database {:?} (BACKUP_VERIFY_DATABASE_URL) already holds {} ({}); a drill restores only into an empty database: empty it, or drop it and the drill creates it",
                        db.name(),
                        restore::tables(existing.len()),
                        restore::examples(&existing)
                    ),
                ));
            }
        }
        return Ok(Scratch {
            db: db.clone(),
            server,
            drop_via: created.then(|| db.with_database("postgres")),
        });
    }
    let name = format!(
        "pgbackup_drill_{}_{:08x}",
        Utc::now().format("%Y%m%d%H%M%S"),
        rand::random::<u32>()
    );
    let source = cfg.source.as_ref().ok_or_else(|| {
        JobError::permanent(
            Stage::Config,
            "BACKUP_DATABASE_URL is not set: the drill creates its scratch database on that server (or set BACKUP_VERIFY_DATABASE_URL)",
        )
    })?;
    let db = source.with_database(&name);
    let c = pg::connect(source).await?;
    let server = restore::server_info(&c).await?;
    restore::create_database(&c, &db, stage).await.map_err(|e| {
        JobError::permanent(
            stage,
            format!("{} (the drill needs CREATEDB on BACKUP_DATABASE_URL's server, or set BACKUP_VERIFY_DATABASE_URL)", e.message),
        )
    })?;
    Ok(Scratch {
        db,
        server,
        drop_via: Some(source.clone()),
    })
}

async fn empty(db: &Database) -> Result<(), JobError> {
    let c = pg::connect(db).await?;
    c.batch_execute(restore::EMPTY_SQL)
        .await
        .map_err(|e| pg_err(Stage::Verify, &format!("emptying {:?}", db.name()), &e))
}

async fn run_drill(
    cfg: &DrillConfig,
    storage: &dyn ObjectStore,
    backup: &Backup,
    stored: &Stored,
    scratch: &Scratch,
    t0: Instant,
) -> Result<DrillReport, JobError> {
    let stage = Stage::Verify;
    let tools = restore::restore_tools(&scratch.server, stored, cfg.pg_bin_dir.as_deref()).await?;
    let restored = restore::run_streamed(
        &tools,
        storage,
        stored,
        backup.format,
        &scratch.db,
        restore::ToolFlags::default(),
        Stage::Restore,
    )
    .await?;
    let time_to_recover = t0.elapsed();
    if !restored.streamed.checksum_verified {
        tracing::warn!(object = %backup.key, "the object carries no sha256: restored without an integrity check");
    }
    let toc = match restored.toc {
        Some(t) => t,
        None => custom_toc(&tools, storage, stored, stage).await?,
    };
    let manifest = manifest::load(storage, &backup.key, cfg.identity.as_deref(), stage).await?;
    if manifest.is_none() {
        tracing::warn!(object = %backup.key, "no manifest: the drill checks tables but not their rows");
    }

    let c = pg::connect(&scratch.db).await?;
    let rows = c
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r','p') AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'",
            &[],
        )
        .await
        .map_err(|e| pg_err(stage, "listing the restored tables", &e))?;
    let restored_tables: Vec<(String, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();

    let mut problems = Vec::new();
    let mut tables = 0;
    for e in toc.iter().filter(|e| !e.data) {
        tables += 1;
        if archive::match_table(e, &restored_tables).is_none() {
            problems.push(format!(
                "table {} is in the archive but missing after the restore",
                e.label()
            ));
        }
    }
    let mut with_rows = 0;
    if let Some(m) = &manifest {
        for e in toc.iter().filter(|e| e.data) {
            let Some((s, n)) = archive::match_table(e, &restored_tables) else {
                continue;
            };
            let Some(stat) = m.tables.iter().find(|t| &t.schema == s && &t.name == n) else {
                continue;
            };
            if !stat.expects_rows() {
                continue;
            }
            with_rows += 1;
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM {}.{})",
                quote_ident(s),
                quote_ident(n)
            );
            let has: bool = c
                .query_one(&sql, &[])
                .await
                .map_err(|e| pg_err(stage, &format!("reading {s}.{n}"), &e))?
                .get(0);
            if !has {
                problems.push(format!(
                    "table {s}.{n} had rows at backup time (estimate {}) but is empty after the restore",
                    stat.rows_estimate
                ));
            }
        }
    }
    let verify_sql = match &cfg.verify.verify_sql {
        None => false,
        Some(sql) => {
            if let Some(p) = run_verify_sql(&c, sql).await {
                problems.push(p);
            }
            true
        }
    };
    drop(c);
    if !problems.is_empty() {
        let n = problems.len();
        let shown: Vec<String> = problems.into_iter().take(5).collect();
        return Err(JobError::permanent(
            stage,
            format!(
                "restore drill of {} found {n} problem{}: {}",
                backup.key,
                if n == 1 { "" } else { "s" },
                shown.join("; ")
            ),
        ));
    }
    Ok(DrillReport {
        key: backup.key.clone(),
        scratch: scratch.db.name().to_string(),
        server: pg::host_label(scratch.db.url_without_password()),
        started: Utc::now(),
        time_to_recover,
        duration: t0.elapsed(),
        tables,
        tables_with_rows: with_rows,
        manifest: manifest.is_some(),
        verify_sql,
        streamed: restored.streamed,
    })
}

/// Runs BACKUP_VERIFY_SQL; the first column of the last row must be true.
/// Returns the problem, if any.
async fn run_verify_sql(c: &tokio_postgres::Client, sql: &str) -> Option<String> {
    let msgs = match c.simple_query(sql).await {
        Ok(m) => m,
        Err(e) => {
            let why = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string());
            return Some(format!("BACKUP_VERIFY_SQL failed: {why}"));
        }
    };
    let last = msgs.iter().rev().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
        _ => None,
    });
    match last {
        None => Some("BACKUP_VERIFY_SQL returned no row; it must return true".to_string()),
        Some(Some(v)) if v == "t" || v.eq_ignore_ascii_case("true") => None,
        Some(v) => Some(format!(
            "BACKUP_VERIFY_SQL returned {}, not true",
            v.as_deref().unwrap_or("NULL")
        )),
    }
}

/// A custom archive's table of contents, from `pg_restore --list` fed only
/// the archive's head (the TOC comes first, so this reads little).
async fn custom_toc(
    tools: &Tools,
    storage: &dyn ObjectStore,
    stored: &Stored,
    stage: Stage,
) -> Result<Vec<TocEntry>, JobError> {
    let reader = fetch::open(storage, &stored.key, stage).await?;
    let tool = "pg_restore";
    let mut cmd = tokio::process::Command::new(tools.bin(tool));
    cmd.arg("--list")
        .kill_on_drop(true)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        JobError::permanent(
            stage,
            format!("cannot start {}: {e}", tools.bin(tool).display()),
        )
    })?;
    let stdin = child.stdin.take().expect("piped");
    // Read its output while feeding it: a large listing would otherwise fill
    // the pipe while we still write.
    let mut stdout = child.stdout.take().expect("piped");
    let out = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s).await;
        s
    });
    let err = tokio::spawn(crate::pg::drain_tail(child.stderr.take().expect("piped")));
    let sink = BufWriter::with_capacity(64 * 1024, SyncIoBridge::new(stdin));
    let opts = fetch::Options {
        stage,
        drain_limit: 0,
        accept: |_: &BufWriter<_>| None,
    };
    let (res, sink) = fetch::pump(reader, stored, sink, opts).await;
    fetch::drop_sink(sink).await;
    if let Err(Failure::Job(e)) = res {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Err(e);
    }
    // pg_restore --list stops reading after the TOC: a broken pipe is expected.
    let status = child.wait().await;
    let tail = err.await.unwrap_or_default();
    restore::check_status(status, &tail, "pg_restore --list", stage)?;
    Ok(archive::parse_toc_list(&out.await.unwrap_or_default()))
}
