//! The subcommands, one file each. Exit codes: 0 success, 1 the work failed,
//! 2 bad configuration or usage.

mod backup;
mod basebackup;
mod check;
mod healthcheck;
mod list;
mod presign;
mod prune;
mod restore;
mod run;
mod verify;
mod wal_fetch;

use clap::{Parser, Subcommand};

use std::sync::Arc;

use crate::config::{BatchConfig, Config, DumpConfig, RetentionSettings, StoreConfig, Vars};
use crate::error::ConfigError;
use crate::storage::ObjectStore;

#[derive(Parser, Debug)]
#[command(
    name = "pgbackup",
    version,
    about = "PostgreSQL backups to S3-compatible storage, with Prometheus metrics"
)]
#[command(after_help = "Configuration comes from the environment; see docs/configuration.md.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The daemon: cron schedule, HTTP server for /metrics and /health.
    Run,
    /// One backup now, then retention; exits with its outcome.
    Backup,
    /// Preflight: config, database reachable, pg_dump fits the server, storage round trip.
    Check,
    /// Apply retention now: delete backups the rules no longer keep.
    Prune {
        /// Print what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this database of several (BACKUP_DATABASES).
        #[arg(long, value_name = "DB")]
        database: Option<String>,
    },
    /// The backups in storage, newest first: name, time, size, format.
    List(list::Args),
    /// Restore a backup into a database; refuses a non-empty target unless --clean.
    Restore(restore::Args),
    /// Check a backup's integrity; --restore also restores it into a scratch database.
    Verify(verify::Args),
    /// Print a presigned GET URL for a backup (local storage: its path).
    Presign(presign::Args),
    /// Container health check: exit 0 when the daemon here answers /healthz, else 1.
    Healthcheck,
    /// One physical base backup now (point-in-time recovery), then retention.
    Basebackup,
    /// restore_command: fetch and verify one WAL file. Exit 1: not stored.
    WalFetch(wal_fetch::Args),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run => run::run(load_config()?).await,
        Command::Backup => backup::run(load_config()?).await,
        Command::Check => check::run(load_config()?).await,
        Command::Prune {
            dry_run,
            database: only,
        } => {
            let vars = Vars::from_env()?;
            let store = StoreConfig::read(&vars)?;
            let settings = RetentionSettings::read(&vars)?;
            let batch = BatchConfig::read(&vars)?;
            let database = DumpConfig::read_database(&vars)?;
            prune::run(
                &store,
                &settings,
                &batch,
                database.as_ref(),
                only.as_deref(),
                dry_run,
            )
            .await
        }
        Command::List(a) => list::run(a).await,
        Command::Restore(a) => restore::run(a).await,
        Command::Verify(a) => verify::run(a).await,
        Command::Presign(a) => presign::run(a).await,
        Command::Healthcheck => healthcheck::run().await,
        Command::Basebackup => basebackup::run(load_config()?).await,
        Command::WalFetch(a) => wal_fetch::run(a).await,
    }
}

fn load_config() -> Result<Config, ConfigError> {
    Config::from_env()
}

/// A token cancelled by SIGTERM or SIGINT: a one-shot command then stops
/// its tools and cleans up instead of dying mid-write.
fn cancel_on_signal() -> tokio_util::sync::CancellationToken {
    let cancel = tokio_util::sync::CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    cancel
}

/// "2 of 5 databases failed (\"a\", \"b\")", for the last line of a run
/// over several databases.
fn failed_databases(failed: &[String], total: usize) -> String {
    let names: Vec<String> = failed.iter().map(|d| format!("{d:?}")).collect();
    format!(
        "{} of {total} databases failed ({})",
        failed.len(),
        names.join(", ")
    )
}

/// Storage from its own settings: the commands that only read or delete
/// backups (list, prune, restore, verify, presign) need no database, so that
/// restoring after the server is lost does not need its URL.
async fn open_storage(store: &StoreConfig) -> Arc<dyn ObjectStore> {
    crate::storage::open(&store.backend).await
}

/// The `database` label of a command that needs no database: the URL's
/// database when one is configured, else the one the newest backup names.
async fn database_label(
    configured: Option<&crate::config::Database>,
    storage: &dyn ObjectStore,
    prefix: &str,
) -> String {
    if let Some(db) = configured {
        return db.name().to_string();
    }
    let newest = crate::catalog::list(storage, prefix, crate::error::Stage::Verify)
        .await
        .ok()
        .and_then(|b| b.into_iter().next());
    match newest {
        Some(b) => storage
            .head(&b.key)
            .await
            .ok()
            .and_then(|m| m.extra.get("database").cloned())
            .map(|d| {
                percent_encoding::percent_decode_str(&d)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_else(|| "unknown".into()),
        None => "unknown".into(),
    }
}

/// The one line printed for a failed command: the chain of contexts down
/// to the first of our own typed errors, whose message already sums up its
/// sources (an SDK's page-long account of every credential provider it
/// tried stays out of the line).
pub fn error_line(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for c in e.chain() {
        parts.push(c.to_string());
        if c.is::<crate::error::JobError>()
            || c.is::<crate::storage::StoreError>()
            || c.is::<ConfigError>()
        {
            break;
        }
    }
    crate::error::one_line(&parts.join(": "))
}

/// The last line a failed command prints: `error: ...`, except for
/// wal-fetch's "not stored", which is an answer, not an error (PostgreSQL
/// logs it at every end of recovery).
pub fn report_line(e: &anyhow::Error) -> String {
    if e.is::<wal_fetch::NotStored>() {
        return format!("pgbackup wal-fetch: {e}");
    }
    format!("error: {}", error_line(e))
}

/// 2 for configuration and usage errors, 1 for everything else; for
/// wal-fetch, 1 only for "not stored" and [`crate::wal::fetch::FATAL_EXIT`]
/// for every failure, which PostgreSQL must not take as "not stored".
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.is::<wal_fetch::Fatal>() {
        return crate::wal::fetch::FATAL_EXIT;
    }
    let config = |c: &(dyn std::error::Error + 'static)| {
        c.is::<ConfigError>()
            || c.downcast_ref::<crate::error::JobError>()
                .is_some_and(|j| j.kind == crate::error::Kind::Config)
    };
    if e.chain().any(config) {
        2
    } else {
        1
    }
}

/// Resolves on SIGTERM (docker stop, systemd) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
