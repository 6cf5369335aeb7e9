//! `pgbackup list [--json]`: the backups in storage, newest first.

use crate::catalog;
use crate::config::StoreConfig;
use crate::error::Stage;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print a JSON array of {name, time, size, format, compression, encrypted, imported}.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let store = StoreConfig::from_env()?;
    let storage = super::open_storage(&store).await;
    let backups = catalog::list(storage.as_ref(), &store.prefix, Stage::Verify)
        .await
        .map_err(|e| anyhow::anyhow!("list failed: {}", e.message))?;
    if a.json {
        let items: Vec<serde_json::Value> = backups
            .iter()
            .map(|b| {
                serde_json::json!({
                    "name": b.key,
                    "time": b.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "size": b.size,
                    "format": b.format.as_str(),
                    "compression": b.compression,
                    "encrypted": b.encrypted,
                    "imported": b.imported,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    if backups.is_empty() {
        eprintln!(
            "no backups under {:?} in {}",
            store.prefix,
            storage.describe()
        );
        return Ok(());
    }
    let width = backups
        .iter()
        .map(|b| b.key.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:<19}  {:>10}  FORMAT",
        "NAME", "TIME (UTC)", "SIZE"
    );
    for b in &backups {
        println!(
            "{:<width$}  {}  {:>10}  {} ({}){}{}",
            b.key,
            b.time.format("%Y-%m-%d %H:%M:%S"),
            crate::pg::human_bytes(b.size),
            b.format.as_str(),
            b.compression,
            if b.encrypted { ", encrypted (age)" } else { "" },
            if b.imported {
                "  imported (Railway template)"
            } else {
                ""
            }
        );
    }
    Ok(())
}
