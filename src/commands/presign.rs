//! `pgbackup presign <NAME|latest> [--expires 1h]`: a URL to fetch a backup
//! with any HTTP client (local storage: the file's path).

use crate::catalog;
use crate::config::StoreConfig;
use crate::error::{ConfigError, Stage};
use crate::presign;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The backup, as `pgbackup list` prints it, or `latest`.
    #[arg(value_name = "NAME|latest")]
    pub name: String,
    /// How long the URL works: e.g. 30m, 1h, 7d (at most 7d).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub expires: String,
    /// One database of several (BACKUP_DATABASES).
    #[arg(long, value_name = "DB")]
    pub database: Option<String>,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let mut store = StoreConfig::from_env()?;
    if let Some(db) = &a.database {
        store.prefix = crate::naming::database_prefix(&store.prefix, db);
    }
    let wanted = catalog::wanted(&store.prefix, &a.name)?;
    let expires =
        presign::parse_expiry(&a.expires).map_err(|m| ConfigError::new("--expires", m))?;
    let storage = super::open_storage(&store).await;
    let failed = |e: crate::error::JobError| anyhow::anyhow!("presign failed: {}", e.message);
    let backup = catalog::resolve(storage.as_ref(), &store.prefix, &wanted, Stage::Restore)
        .await
        .map_err(failed)?;
    let url = presign::presign(storage.as_ref(), &backup.key, expires)
        .await
        .map_err(failed)?;
    println!("{url}");
    if backup.encrypted {
        // stdout stays the URL alone, for scripts; the advice goes to stderr.
        let file = backup.key.rsplit('/').next().unwrap_or(&backup.key);
        let plain = file.strip_suffix(crate::crypto::SUFFIX).unwrap_or(file);
        eprintln!(
            "note: {} is encrypted: the URL serves age ciphertext. Decrypt where the identity lives: age -d -i key.txt -o {plain} {file}",
            backup.key
        );
    }
    Ok(())
}
