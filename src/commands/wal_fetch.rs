//! `pgbackup wal-fetch <FILE> <PATH> [--env-file F]`: PostgreSQL's
//! restore_command. Exit 1 means "not stored" to the server; every other
//! failure exits above 125, which stops recovery (see `wal::fetch`).

use std::path::PathBuf;

use crate::config::{EncryptionConfig, StoreConfig, Vars};
use crate::wal::fetch::{self, Fetched};

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
    match fetch_one(&a).await {
        Ok(Fetched::Stored(key)) => {
            tracing::debug!(object = %key, file = %a.name, "WAL fetched");
            Ok(())
        }
        Ok(Fetched::Missing) => Err(NotStored(a.name).into()),
        Err(e) => Err(Fatal(super::error_line(&e)).into()),
    }
}

async fn fetch_one(a: &Args) -> anyhow::Result<Fetched> {
    let vars = match &a.env_file {
        Some(f) => Vars::from_env_and_file(f)?,
        None => Vars::from_env()?,
    };
    let store = StoreConfig::read(&vars)?;
    let identity = EncryptionConfig::read(&vars)?.identity;
    let storage = super::open_storage(&store).await;
    Ok(fetch::fetch(
        storage.as_ref(),
        &store.prefix,
        identity.as_deref(),
        &a.name,
        &a.path,
    )
    .await?)
}
