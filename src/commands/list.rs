//! `pgbackup list [--database DB] [--json]`: the backups in storage, newest
//! first; with several databases, grouped by database, then the globals.

use crate::catalog::{self, Backup, Scope};
use crate::config::{DumpConfig, StoreConfig, Vars};
use crate::error::Stage;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this database's backups (several databases: BACKUP_DATABASES).
    #[arg(long, value_name = "DB")]
    pub database: Option<String>,
    /// Print a JSON array of {database, kind, name, time, size, format,
    /// compression, encrypted, imported}.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let vars = Vars::from_env()?;
    let store = StoreConfig::read(&vars)?;
    // Today's single-database names carry no database name; the configured
    // one, when there is one, is theirs.
    let single = DumpConfig::read_database(&vars)
        .ok()
        .flatten()
        .map(|d| d.name().to_string());
    let storage = super::open_storage(&store).await;
    let all = catalog::list_all(storage.as_ref(), &store.prefix, Stage::Verify)
        .await
        .map_err(|e| anyhow::anyhow!("list failed: {}", e.message))?;
    let database_of = |s: &Scope| -> Option<String> {
        match s {
            Scope::Single => single.clone(),
            Scope::Database(d) => Some(d.clone()),
            Scope::Globals => None,
        }
    };
    let backups: Vec<&(Scope, Backup)> = all
        .iter()
        .filter(|(s, _)| match &a.database {
            None => true,
            Some(want) => database_of(s).as_deref() == Some(want.as_str()),
        })
        .collect();
    // Base backups (point-in-time recovery) belong to no database.
    let bases = if a.database.is_none() {
        let listing = storage
            .list(&crate::wal::base_prefix(&store.prefix))
            .await
            .map_err(|e| anyhow::anyhow!("list failed: {e}"))?;
        crate::wal::base::select(&store.prefix, &listing)
    } else {
        Vec::new()
    };
    if a.json {
        let mut items: Vec<serde_json::Value> = backups
            .iter()
            .map(|(s, b)| {
                serde_json::json!({
                    "database": database_of(s),
                    "kind": s.kind(),
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
        items.extend(bases.iter().rev().map(|b| {
            serde_json::json!({
                "database": null,
                "kind": "base",
                "name": b.key,
                "time": b.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "size": b.size,
                "format": "tar",
                "compression": "zstd",
                "encrypted": b.encrypted,
                "imported": false,
            })
        }));
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    if !bases.is_empty() {
        print_bases(&bases);
        if backups.is_empty() {
            return Ok(());
        }
        println!();
    }
    if backups.is_empty() {
        eprintln!(
            "no backups{} under {:?} in {}",
            a.database
                .as_deref()
                .map(|d| format!(" of database {d:?}"))
                .unwrap_or_default(),
            store.prefix,
            storage.describe()
        );
        return Ok(());
    }
    let many = backups.iter().any(|(s, _)| *s != Scope::Single);
    let label = |s: &Scope| match s {
        Scope::Globals => "(globals)".to_string(),
        s => database_of(s).unwrap_or_default(),
    };
    let dbw = if many {
        backups
            .iter()
            .map(|(s, _)| label(s).chars().count())
            .max()
            .unwrap_or(0)
            .max(8)
    } else {
        0
    };
    let width = backups
        .iter()
        .map(|(_, b)| b.key.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let db_col = |s: String| {
        if many {
            format!("{s:<dbw$}  ")
        } else {
            String::new()
        }
    };
    println!(
        "{}{:<width$}  {:<19}  {:>10}  FORMAT",
        db_col("DATABASE".into()),
        "NAME",
        "TIME (UTC)",
        "SIZE"
    );
    for (s, b) in &backups {
        println!(
            "{}{:<width$}  {}  {:>10}  {} ({}){}{}",
            db_col(label(s)),
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

/// Base backups, newest first: what `restore --to-time` starts from.
fn print_bases(bases: &[crate::wal::base::Base]) {
    let width = bases.iter().map(|b| b.key.len()).max().unwrap_or(4).max(4);
    println!(
        "{:<width$}  {:<19}  {:>10}  BASE BACKUP",
        "NAME", "TIME (UTC)", "SIZE"
    );
    for b in bases.iter().rev() {
        println!(
            "{:<width$}  {}  {:>10}  tar (zstd){}",
            b.key,
            b.time.format("%Y-%m-%d %H:%M:%S"),
            crate::pg::human_bytes(b.size),
            if b.encrypted { ", encrypted (age)" } else { "" }
        );
    }
}
