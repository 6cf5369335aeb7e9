//! The subcommands, one file each. Exit codes: 0 success, 1 the work failed,
//! 2 bad configuration or usage.

mod backup;
mod check;
mod prune;
mod run;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::error::ConfigError;

#[derive(Parser, Debug)]
#[command(
    name = "pgbackup",
    version,
    about = "PostgreSQL backups to S3-compatible storage, with Prometheus metrics"
)]
#[command(after_help = "Configuration comes from the environment; see README.md.")]
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
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run => run::run(load_config()?).await,
        Command::Backup => backup::run(load_config()?).await,
        Command::Check => check::run(load_config()?).await,
        Command::Prune { dry_run } => prune::run(load_config()?, dry_run).await,
    }
}

fn load_config() -> Result<Config, ConfigError> {
    Config::from_env()
}

/// 2 for configuration and usage errors, 1 for everything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<ConfigError>()) {
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
