//! `pgbackup wal-fetch <FILE> <PATH> [--env-file F]`: PostgreSQL's
//! restore_command. Exit 1 means "not stored" to the server; every other
//! failure exits above 125, which stops recovery (see `wal::fetch`).
//! Segments are read ahead of recovery (`wal::prefetch`).

use std::path::{Path, PathBuf};

use crate::config::{self, EncryptionConfig, StoreConfig, Vars};
use crate::wal::fetch::{self, Fetched};
use crate::wal::{is_segment_name, prefetch};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The file PostgreSQL asks for (%f): a segment or a timeline history file.
    #[arg(value_name = "SEGMENT")]
    pub name: String,
    /// Where to write it (%p).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// NAME=value lines of storage settings, read over the environment
    /// (`restore --to-time` writes one beside the data directory).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// The read-ahead that wal-fetch starts itself: PATH is its directory,
    /// and it follows the newest request noted there.
    #[arg(long, hide = true)]
    pub prefetch: bool,
}

/// The file is not in the store: recovery ends at the WAL before it.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not stored")]
pub struct NotStored(pub String);

/// Anything else: recovery must stop rather than promote early.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

pub async fn run(a: Args) -> anyhow::Result<()> {
    if a.prefetch {
        // Quiet on failure: the request for that segment meets the same
        // error and reports it where the server logs it.
        let _ = read_ahead(&a).await;
        return Ok(());
    }
    match fetch_one(&a).await {
        Ok(Fetched::Stored(key)) => {
            tracing::debug!(object = %key, file = %a.name, "WAL fetched");
            Ok(())
        }
        Ok(Fetched::Missing) => Err(NotStored(a.name).into()),
        Err(e) => Err(Fatal(super::error_line(&e)).into()),
    }
}

fn vars(a: &Args) -> anyhow::Result<Vars> {
    Ok(match &a.env_file {
        Some(f) => Vars::from_env_and_file(f)?,
        None => Vars::from_env()?,
    })
}

/// The store the WAL is read from, as the settings name it.
struct Source {
    prefix: String,
    identity: Option<std::sync::Arc<crate::crypto::Identities>>,
    storage: std::sync::Arc<dyn crate::storage::ObjectStore>,
}

async fn open(vars: &Vars) -> anyhow::Result<Source> {
    let store = StoreConfig::read(vars)?;
    let identity = EncryptionConfig::read(vars)?.identity;
    let storage = super::open_storage(&store).await;
    Ok(Source {
        prefix: store.prefix,
        identity,
        storage,
    })
}

async fn fetch_one(a: &Args) -> anyhow::Result<Fetched> {
    let vars = vars(a)?;
    let depth = config::wal_prefetch_segments(&vars)?;
    // The read-ahead is an optimisation: if its directory cannot be
    // written, fetch as without it.
    let ahead = Some(prefetch::dir_for(&a.path))
        .filter(|_| depth > 0 && is_segment_name(&a.name))
        .filter(|dir| prefetch::note_request(dir, &a.name).is_ok());
    if let Some(dir) = &ahead {
        if prefetch::take(dir, &a.name, &a.path) {
            start_read_ahead(a, dir);
            return Ok(Fetched::Stored(format!("{}/{}", dir.display(), a.name)));
        }
    }
    let src = open(&vars).await?;
    let fetched = fetch::fetch(
        src.storage.as_ref(),
        &src.prefix,
        src.identity.as_deref(),
        &a.name,
        &a.path,
    )
    .await?;
    if let (Some(dir), Fetched::Stored(_)) = (&ahead, &fetched) {
        start_read_ahead(a, dir);
    }
    Ok(fetched)
}

fn start_read_ahead(a: &Args, dir: &Path) {
    if prefetch::running(dir) {
        return;
    }
    let started = std::env::current_exe()
        .and_then(|exe| prefetch::spawn(&exe, a.env_file.as_deref(), &a.name, dir));
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot start the WAL read-ahead; fetching one segment at a time");
    }
}

async fn read_ahead(a: &Args) -> anyhow::Result<()> {
    let vars = vars(a)?;
    let depth = config::wal_prefetch_segments(&vars)?;
    let src = open(&vars).await?;
    prefetch::run(
        src.storage.as_ref(),
        &src.prefix,
        src.identity.as_deref(),
        &a.path,
        depth,
    )
    .await?;
    Ok(())
}
