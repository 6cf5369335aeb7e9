//! Several databases of one server (BACKUP_DATABASES): which ones, and one
//! run of them all.
//!
//! Each database is its own backup ([`job`]): dumped alone in its own
//! format, under its own prefix ([`naming::database_prefix`]), with its own
//! manifest, sha256 and retention, so that it restores alone and one
//! failing never stops or deletes another. At most BACKUP_PARALLEL dump at
//! once. The globals (`pg_dumpall --globals-only`) are one more backup under
//! [`naming::globals_prefix`]. Every object of a run carries the run's start
//! time in its name, which is how `restore --all` finds a run's databases.

use chrono::Utc;
use futures::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Format, Globals, Selection};
use crate::error::{JobError, Stage};
use crate::job::{self, Outcome, Priority, Source, Spec};
use crate::naming;
use crate::pg::{self, pg_err};
use crate::storage::ObjectStore;

/// Databases that take connections and are not templates: what `all` means.
const ALL_DATABASES: &str = "SELECT datname FROM pg_catalog.pg_database \
    WHERE datallowconn AND NOT datistemplate ORDER BY datname";

/// What one run of several databases did.
#[derive(Debug)]
pub struct RunReport {
    /// One outcome per database, in the order they were found.
    pub databases: Vec<Outcome>,
    /// The globals' backup; None when BACKUP_GLOBALS is off.
    pub globals: Option<Outcome>,
}

impl RunReport {
    /// Every database's backup succeeded (globals are a warning, not a failure).
    pub fn all_ok(&self) -> bool {
        self.databases.iter().all(|o| o.result.is_ok())
    }
}

/// The databases this run backs up: the list as given, or `all` found now.
pub async fn discover(cfg: &Config) -> Result<Vec<String>, JobError> {
    match &cfg.databases.selection {
        Selection::Single => Ok(vec![cfg.dump.database.name().to_string()]),
        Selection::List(names) => Ok(names.clone()),
        Selection::All { exclude } => {
            let c = pg::connect(&cfg.dump.database).await?;
            let rows = c
                .query(ALL_DATABASES, &[])
                .await
                .map_err(|e| pg_err(Stage::Connect, "listing the server's databases", &e))?;
            Ok(rows
                .iter()
                .map(|r| r.get::<_, String>(0))
                .filter(|n| !exclude.contains(n))
                .collect())
        }
    }
}

/// The configuration of one database's backup: same server and settings,
/// that database, its own prefix.
pub fn database_config(cfg: &Config, name: &str) -> Config {
    let mut c = cfg.clone();
    c.dump.database = cfg.dump.database.with_database(name);
    c.store.prefix = naming::database_prefix(&cfg.store.prefix, name);
    c
}

/// The configuration of the globals' backup: plain SQL under their prefix,
/// read through the configured database's connection.
pub fn globals_config(cfg: &Config) -> Config {
    let mut c = cfg.clone();
    c.dump.format = Format::Plain;
    c.store.prefix = naming::globals_prefix(&cfg.store.prefix);
    c
}

/// Backs up the globals (when on), then every database, at most
/// BACKUP_PARALLEL at once. Fails as a whole only when the databases cannot
/// be found; otherwise each database's outcome is its own.
pub async fn run(
    cfg: &Config,
    storage: &dyn ObjectStore,
    cancel: &CancellationToken,
    priority: Priority,
) -> Result<RunReport, JobError> {
    let at = Utc::now();
    let names = tokio::select! {
        r = discover(cfg) => r?,
        _ = cancel.cancelled() => {
            return Err(JobError::cancelled(Stage::Connect, "stopped by shutdown"))
        }
    };
    let globals = match cfg.databases.globals {
        Globals::Off => None,
        g => {
            let spec = Spec {
                source: Source::Globals {
                    no_passwords: g == Globals::NoPasswords,
                },
                at: Some(at),
            };
            let gc = globals_config(cfg);
            let o = job::run_spec(&gc, storage, cancel, priority, spec).await;
            if let Err(e) = &o.result {
                if !e.is_cancelled() {
                    tracing::warn!(
                        error = %e,
                        "roles and tablespaces were not stored; the databases still are. If the role may not read pg_authid (managed servers), set BACKUP_GLOBALS=no-passwords, or BACKUP_GLOBALS=false"
                    );
                }
            }
            Some(o)
        }
    };
    let spec = Spec {
        source: Source::Database,
        at: Some(at),
    };
    let configs: Vec<Config> = names.iter().map(|n| database_config(cfg, n)).collect();
    // A fair semaphore: dumps start in the order found, at most
    // BACKUP_PARALLEL at once.
    let slots = tokio::sync::Semaphore::new(cfg.databases.parallel);
    let mut dumps = Vec::with_capacity(configs.len());
    for c in &configs {
        let slots = &slots;
        dumps.push(async move {
            let _slot = slots.acquire().await;
            job::run_spec(c, storage, cancel, priority, spec).await
        });
    }
    Ok(RunReport {
        databases: join_all(dumps).await,
        globals,
    })
}
