//! `pgbackup restore <NAME|latest> --target-url URL [--database DB]
//! [--clean] [--jobs N] [--no-owner]`, and `pgbackup restore latest --all
//! --target-url postgres://host:port/` for a whole server.

use crate::catalog;
use crate::config::{Database, DumpConfig, EncryptionConfig, Format, StoreConfig, Vars};
use crate::error::{ConfigError, Stage};
use crate::naming;
use crate::recover;
use crate::restore::{self, RestoreOptions};
use crate::wal::pitr;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The backup, as `pgbackup list` prints it, or `latest`.
    #[arg(value_name = "NAME|latest", required_unless_present = "to_time")]
    pub name: Option<String>,
    /// postgres:// URL of the database to restore into; created when missing.
    /// Leave the password out to take it from PGPASSWORD, off the command line.
    #[arg(long, value_name = "URL", required_unless_present = "to_time")]
    pub target_url: Option<String>,
    /// Point-in-time recovery: a data directory that recovers to this time
    /// (RFC 3339, e.g. 2026-11-30T17:00:00Z) or to the end of the stored
    /// WAL (`latest`), from a base backup and the WAL streamed by `run`.
    #[arg(long, value_name = "RFC3339|latest", requires = "target_dir",
          conflicts_with_all = ["name", "target_url", "clean", "jobs", "database", "all", "no_owner"])]
    pub to_time: Option<String>,
    /// With --to-time: the new data directory, empty or missing.
    #[arg(long, value_name = "DIR", requires = "to_time")]
    pub target_dir: Option<std::path::PathBuf>,
    /// With --to-time: start the server (as the directory's owner) and wait
    /// until recovery has ended.
    #[arg(long, requires = "to_time")]
    pub start: bool,
    /// The port --start runs the server on.
    #[arg(long, value_name = "PORT", default_value_t = 5432, requires = "start")]
    pub port: u16,
    /// Replace what the target holds (custom: pg_restore --clean --if-exists;
    /// plain: its schemas are dropped first). Still one transaction.
    #[arg(long)]
    pub clean: bool,
    /// Parallel pg_restore jobs (custom format): spools the dump to TMPDIR
    /// and gives up the single transaction.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// One database of several (BACKUP_DATABASES): restore its backup.
    #[arg(long, value_name = "DB", conflicts_with = "all")]
    pub database: Option<String>,
    /// A whole server: roles and tablespaces, then every database of the
    /// newest run, each into a database of its own name on the target's
    /// server (the URL's database is used only to connect). NAME must be
    /// `latest`.
    #[arg(long)]
    pub all: bool,
    /// Restore without the backup's owners (pg_restore --no-owner): every
    /// object belongs to the restoring role, so the target needs none of
    /// the original roles. Custom format only; refused for plain dumps.
    #[arg(long)]
    pub no_owner: bool,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    if let Some(t) = a.to_time.clone() {
        return to_time(a, &t).await;
    }
    let name = a.name.clone().unwrap_or_default();
    let target_url = a.target_url.clone().unwrap_or_default();
    let vars = Vars::from_env()?;
    let store = StoreConfig::read(&vars)?;
    let pg_bin_dir = DumpConfig::read_pg_bin_dir(&vars)?;
    let identity = EncryptionConfig::read(&vars)?.identity;
    let prefix = match &a.database {
        Some(db) => naming::database_prefix(&store.prefix, db),
        None => store.prefix.clone(),
    };
    if a.all && name.trim() != "latest" {
        return Err(ConfigError::new(
            "--all",
            "restores the newest run of every database: give `latest` as the name",
        )
        .into());
    }
    let wanted = catalog::wanted(&prefix, &name)?;
    let target = target_database(&target_url, std::env::var("PGPASSWORD").ok())?;
    let storage = super::open_storage(&store).await;
    let opts = RestoreOptions {
        clean: a.clean,
        jobs: a.jobs,
        no_owner: a.no_owner,
        identity,
        cancel: super::cancel_on_signal(),
    };
    if a.all {
        return restore_all(
            pg_bin_dir.as_deref(),
            storage.as_ref(),
            &store.prefix,
            &target,
            &opts,
        )
        .await;
    }
    let backup = catalog::resolve(storage.as_ref(), &prefix, &wanted, Stage::Restore).await?;
    if a.jobs.unwrap_or(1) > 1 && backup.format != Format::Custom {
        return Err(ConfigError::new(
            "--jobs",
            format!(
                "{} is a {} format dump, which is restored in one stream; --jobs needs a custom-format backup",
                backup.key,
                backup.format.as_str()
            ),
        )
        .into());
    }
    if a.no_owner && backup.format == Format::Plain {
        return Err(ConfigError::new("--no-owner", restore::no_owner_plain(&backup.key)).into());
    }
    let r = restore::restore(
        pg_bin_dir.as_deref(),
        storage.as_ref(),
        &backup,
        &target,
        &opts,
    )
    .await?;
    tracing::info!(
        object = %r.key,
        database = %r.database,
        server = %r.server,
        created = r.created,
        duration_s = format!("{:.2}", r.duration.as_secs_f64()),
        "restore succeeded"
    );
    println!(
        "restored {} into {:?} at {}{}  {} read ({} restored) in {:.1}s  sha256 {}",
        r.key,
        r.database,
        r.server,
        if r.created { " (created)" } else { "" },
        crate::pg::human_bytes(r.streamed.stored_bytes),
        crate::pg::human_bytes(r.streamed.dump_bytes),
        r.duration.as_secs_f64(),
        if r.streamed.checksum_verified {
            "verified"
        } else {
            "not stored: unverified"
        }
    );
    Ok(())
}

/// `--to-time`: a data directory that recovers to a point in time.
async fn to_time(a: Args, t: &str) -> anyhow::Result<()> {
    let target = pitr::Target::parse(t).map_err(|m| ConfigError::new("--to-time", m))?;
    let vars = Vars::from_env()?;
    let store = StoreConfig::read(&vars)?;
    let opts = pitr::Options {
        target,
        dir: std::path::absolute(a.target_dir.as_deref().unwrap_or(std::path::Path::new(".")))?,
        start: a.start.then_some(a.port),
        identity: EncryptionConfig::read(&vars)?.identity,
        pg_bin_dir: DumpConfig::read_pg_bin_dir(&vars)?,
        wal_fetch_env: vars.export(crate::config::WAL_FETCH_VARIABLES),
        cancel: super::cancel_on_signal(),
    };
    let storage = super::open_storage(&store).await;
    let r = pitr::restore(storage.as_ref(), &store.prefix, &opts).await?;
    let to = match r.plan {
        pitr::Plan::Time(t) => t.to_rfc3339(),
        pitr::Plan::End => "the end of the stored WAL".to_string(),
    };
    println!("recovery window: {}", r.window);
    println!(
        "unpacked {} into {} in {:.1}s; it recovers to {to}",
        r.base,
        opts.dir.display(),
        r.unpacked.as_secs_f64()
    );
    println!(
        "storage settings for wal-fetch: {} (0600; delete it after recovery)",
        r.env_file.display()
    );
    match r.recovered {
        Some(d) => println!(
            "recovery ended in {:.1}s; the server runs on port {} (stop it with: pg_ctl -D {} stop)",
            d.as_secs_f64(),
            a.port,
            opts.dir.display()
        ),
        None => {
            println!("start it as the directory's owner with:\n  {}", r.start_command);
            println!(
                "after recovery, also delete {} (WAL read ahead of recovery)",
                opts.dir
                    .join("pg_wal")
                    .join(crate::wal::prefetch::DIR_NAME)
                    .display()
            );
        }
    }
    Ok(())
}

/// `--all`: the whole server, one line per database.
async fn restore_all(
    pg_bin_dir: Option<&std::path::Path>,
    storage: &dyn crate::storage::ObjectStore,
    base: &str,
    target: &Database,
    opts: &RestoreOptions,
) -> anyhow::Result<()> {
    let r = recover::restore_server(pg_bin_dir, storage, base, target, opts).await?;
    println!("run of {}", r.run.format("%Y-%m-%d %H:%M:%S UTC"));
    match &r.globals {
        Some(g) => println!(
            "globals   {}: {} role(s) created, {} already there and left as they were{}{}",
            g.key,
            g.created,
            g.existing.len(),
            if g.existing.is_empty() {
                String::new()
            } else {
                format!(" ({})", g.existing.join(", "))
            },
            if g.errors.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} statement(s) failed: {}",
                    g.errors.len(),
                    g.errors.join(" | ")
                )
            }
        ),
        None => println!("globals   none stored in this run: roles must exist on the target"),
    }
    let mut failed = Vec::new();
    for (name, res) in &r.databases {
        match res {
            Ok(d) => println!(
                "database  {name:?}  restored {} into {:?} at {}{} in {:.1}s",
                d.key,
                d.database,
                d.server,
                if d.created { " (created)" } else { "" },
                d.duration.as_secs_f64()
            ),
            Err(e) => {
                println!("database  {name:?}  FAILED  {e}");
                failed.push(name.clone());
            }
        }
    }
    for (name, key) in &r.not_in_run {
        println!(
            "database  {name:?}  not in this run (newest: {key}): failed in it or dropped before it; restore it alone with --database if it is wanted"
        );
    }
    if opts.cancel.is_cancelled() {
        anyhow::bail!("cancelled: restore stopped by a signal");
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "restore failed: {}",
            super::failed_databases(&failed, r.databases.len())
        );
    }
    Ok(())
}

/// Parses --target-url; a URL without a password takes PGPASSWORD's.
fn target_database(raw: &str, pgpassword: Option<String>) -> Result<Database, ConfigError> {
    let db = Database::parse("--target-url", raw)?;
    match pgpassword.filter(|p| !p.is_empty()) {
        Some(pw) if db.password().is_none() => {
            let mut url = db.url_without_password().clone();
            let _ = url.set_password(Some(&pw));
            Database::parse("--target-url", url.as_str())
        }
        _ => Ok(db),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpassword_fills_in_a_missing_password() {
        let d = target_database("postgres://u@h/db", Some("p@ss:w/rd".into())).unwrap();
        assert_eq!(d.password().unwrap().expose(), "p@ss:w/rd");
        assert_eq!(d.url_without_password().as_str(), "postgres://u@h/db");
        let d = target_database("postgres://u:own@h/db", Some("other".into())).unwrap();
        assert_eq!(d.password().unwrap().expose(), "own");
        assert!(target_database("postgres://u@h/db", None)
            .unwrap()
            .password()
            .is_none());
        let e = target_database("mysql://u:secret@h/db", None).unwrap_err();
        assert_eq!(e.var, "--target-url");
        assert!(!e.to_string().contains("secret"));
    }
}
