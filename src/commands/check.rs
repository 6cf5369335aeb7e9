//! `pgbackup check`: the preflight. Each step prints one line; the first
//! failure stops the check with exit code 1.

use bytes::Bytes;

use crate::config::Config;
use crate::error::{JobError, Stage};
use crate::pg;
use crate::storage::ObjectMeta;

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    println!(
        "config      ok (database {:?}, storage {})",
        cfg.dump.database.name(),
        storage_label(&cfg)
    );
    // Credentials before anything slow: a forgotten variable is the most
    // common first-run mistake, and it is a configuration error (exit 2).
    let storage = super::open_storage(&cfg.store).await;
    storage
        .probe_credentials()
        .await
        .map_err(|e| JobError::storage(Stage::Upload, e))?;
    let server = pg::server_info(&cfg.dump.database).await?;
    println!(
        "database    ok ({} at {}, PostgreSQL {})",
        cfg.dump.database.name(),
        pg::host_label(cfg.dump.database.url_without_password()),
        server.version
    );
    if cfg.databases.is_multi() {
        let names = crate::databases::discover(&cfg).await?;
        let shown: Vec<String> = names.iter().take(10).map(|n| format!("{n:?}")).collect();
        println!(
            "databases   ok ({} to back up: {}{}; globals {})",
            names.len(),
            shown.join(", "),
            if names.len() > shown.len() {
                ", ..."
            } else {
                ""
            },
            match cfg.databases.globals {
                crate::config::Globals::Off => "off",
                crate::config::Globals::On => "on",
                crate::config::Globals::NoPasswords => "on, without passwords",
            }
        );
    }
    let tools = pg::find_tools(server.major(), cfg.dump.pg_bin_dir.as_deref()).await?;
    println!(
        "pg_dump     ok ({} in {})",
        tools.version_line,
        tools.bin_dir.display()
    );

    let failed = |e| JobError::storage(Stage::Upload, e);
    // A name outside the backup shape, so retention never counts it.
    let key = format!(
        "{}.pgbackup-check-{:016x}",
        cfg.store.prefix,
        rand::random::<u64>()
    );
    let meta = ObjectMeta {
        sha256: "0".repeat(64),
        ..Default::default()
    };
    storage
        .put(&key, Bytes::from_static(b"pgbackup check\n"), &meta)
        .await
        .map_err(failed)?;
    let listed = storage
        .list(&key)
        .await
        .map_err(failed)?
        .iter()
        .any(|o| o.key == key);
    let failed = storage
        .delete(std::slice::from_ref(&key))
        .await
        .map_err(failed)?;
    if !listed {
        anyhow::bail!("storage check failed: wrote {key} but the listing does not show it");
    }
    if let Some((k, why)) = failed.first() {
        anyhow::bail!("storage check failed: cannot delete {k}: {why}");
    }
    println!(
        "storage     ok (write, list, delete in {})",
        storage.describe()
    );
    if cfg.wal.archive {
        // The same door `run` uses: the privilege, a slot, pg_hba.conf.
        crate::wal::archiver::ensure_slot(&cfg.dump.database, &tools, &cfg.wal.slot).await?;
        println!(
            "wal         ok (slot {:?} on the server; spool {})",
            cfg.wal.slot,
            cfg.wal.spool.display()
        );
    }
    if let Some(r) = &cfg.encryption.recipients {
        println!(
            "encryption  ok (age, {} recipient{}; the identity is not needed here)",
            r.len(),
            if r.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

fn storage_label(cfg: &Config) -> String {
    match &cfg.store.backend {
        crate::config::StorageConfig::S3 {
            bucket, endpoint, ..
        } => {
            format!("s3://{bucket} at {}", endpoint.as_deref().unwrap_or("AWS"))
        }
        crate::config::StorageConfig::Local { dir } => dir.display().to_string(),
    }
}
