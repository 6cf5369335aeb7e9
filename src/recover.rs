//! A whole server back from its newest run (`restore latest --all`): the
//! globals first, so that owners exist, then every database of that run.
//!
//! The run is the newest time any database or the globals were named
//! after ([`crate::databases`] names a run's objects after its start). A
//! database whose newest backup is older did not succeed in that run, or was
//! dropped before it: it is reported, not restored, since the two cannot be
//! told apart from storage.
//!
//! Roles that already exist on the target are left as they are: their
//! `CREATE ROLE` and `ALTER ROLE` lines are skipped, so a restore never
//! changes the target's own superuser or its password.

use std::io::{self, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::io::AsyncWriteExt;

use crate::catalog::{self, Backup, Scope};
use crate::config::Database;
use crate::crypto::Identities;
use crate::error::{JobError, Stage};
use crate::fetch::{self, Failure, Sink};
use crate::pg::{self, pg_err};
use crate::restore::{self, RestoreOptions, RestoreReport};
use crate::storage::ObjectStore;

/// The most of a globals object read into memory: roles and tablespaces
/// are kilobytes; anything near this is not a globals dump.
const GLOBALS_LIMIT: usize = 64 << 20;

/// What `restore --all` did.
#[derive(Debug)]
pub struct ServerReport {
    /// The run restored.
    pub run: DateTime<Utc>,
    pub globals: Option<GlobalsReport>,
    /// Every database of the run, in name order, and how its restore ended.
    pub databases: Vec<(String, Result<RestoreReport, JobError>)>,
    /// Databases with backups, but none from this run: (name, newest backup).
    pub not_in_run: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct GlobalsReport {
    pub key: String,
    pub created: usize,
    /// Roles the target already had, left unchanged.
    pub existing: Vec<String>,
    /// Statements the server refused (e.g. a tablespace whose directory
    /// does not exist there); the restore goes on.
    pub errors: Vec<String>,
}

/// A run of several databases: its time, its globals and each database's backup.
pub type Run = (DateTime<Utc>, Option<Backup>, Vec<(String, Backup)>);

/// The newest run's backups.
pub fn newest_run(all: Vec<(Scope, Backup)>) -> Option<Run> {
    let run = all
        .iter()
        .filter(|(s, b)| *s != Scope::Single && !b.imported)
        .map(|(_, b)| b.time)
        .max()?;
    let mut globals = None;
    let mut dbs = Vec::new();
    for (s, b) in all {
        if b.time != run {
            continue;
        }
        match s {
            Scope::Globals => globals = Some(b),
            Scope::Database(d) => dbs.push((d, b)),
            Scope::Single => {}
        }
    }
    dbs.sort_by(|a, b| a.0.cmp(&b.0));
    Some((run, globals, dbs))
}

/// Restores the newest run into the server `target` names (its database
/// part is used only to connect).
pub async fn restore_server(
    pg_bin_dir: Option<&Path>,
    storage: &dyn ObjectStore,
    base: &str,
    target: &Database,
    opts: &RestoreOptions,
) -> Result<ServerReport, JobError> {
    let stage = Stage::Restore;
    let all = catalog::list_all(storage, base, stage).await?;
    let newest_of: std::collections::BTreeMap<String, Backup> = {
        let mut m = std::collections::BTreeMap::new();
        for (s, b) in &all {
            if let Scope::Database(d) = s {
                m.entry(d.clone()).or_insert_with(|| b.clone());
            }
        }
        m
    };
    let Some((run, globals, dbs)) = newest_run(all) else {
        return Err(JobError::permanent(
            stage,
            format!(
                "no backups of several databases under {base:?} in {} (BACKUP_DATABASES writes them); restore a single database without --all",
                storage.describe()
            ),
        ));
    };
    let not_in_run = newest_of
        .into_iter()
        .filter(|(d, _)| !dbs.iter().any(|(n, _)| n == d))
        .map(|(d, b)| (d, b.key))
        .collect();
    // Refuse before any work when the identity is missing.
    for b in globals.iter().chain(dbs.iter().map(|(_, b)| b)) {
        if b.encrypted && opts.identity.is_none() {
            return Err(JobError::config(
                stage,
                crate::crypto::identity_needed(&b.key, "restoring it"),
            ));
        }
    }
    let globals = match globals {
        Some(g) => {
            Some(apply_globals(pg_bin_dir, storage, &g, target, opts.identity.as_ref()).await?)
        }
        None => None,
    };
    let mut databases = Vec::new();
    for (name, backup) in dbs {
        if opts.cancel.is_cancelled() {
            break;
        }
        let db = target.with_database(&name);
        let r = restore::restore(pg_bin_dir, storage, &backup, &db, opts).await;
        databases.push((name, r));
    }
    Ok(ServerReport {
        run,
        globals,
        databases,
        not_in_run,
    })
}

/// A sink that keeps the whole (small) stream.
struct Collect(Vec<u8>);

impl Write for Collect {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.0.len() + b.len() > GLOBALS_LIMIT {
            return Err(io::Error::other("larger than a globals dump can be"));
        }
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for Collect {
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Downloads the globals, leaves out the roles the target has, and runs the
/// rest through psql, statement errors reported rather than fatal.
async fn apply_globals(
    pg_bin_dir: Option<&Path>,
    storage: &dyn ObjectStore,
    backup: &Backup,
    target: &Database,
    identity: Option<&Arc<Identities>>,
) -> Result<GlobalsReport, JobError> {
    let stage = Stage::Restore;
    let stored = fetch::stored(storage, backup, identity, stage).await?;
    let reader = fetch::open(storage, &stored.key, stage).await?;
    let opts = fetch::Options {
        stage,
        drain_limit: 0,
        accept: |_: &Collect| None,
    };
    let (res, sink) = fetch::pump(reader, &stored, Collect(Vec::new()), opts).await;
    match res {
        Ok(_) => {}
        Err(Failure::Job(e)) => return Err(e),
        Err(Failure::Sink(e)) => {
            return Err(JobError::permanent(stage, format!("{}: {e}", backup.key)))
        }
    }
    let sql = String::from_utf8(sink.map(|s| s.0).unwrap_or_default())
        .map_err(|_| JobError::permanent(stage, format!("{} is not SQL text", backup.key)))?;
    let c = pg::connect(target).await?;
    let existing: Vec<String> = c
        .query("SELECT rolname FROM pg_catalog.pg_roles", &[])
        .await
        .map_err(|e| pg_err(stage, "listing the target's roles", &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let server = restore::server_info(&c).await?;
    drop(c);
    let plan = filter_globals(&sql, &existing);
    let tools = pg::find_tools(server.major(), pg_bin_dir).await?;
    let mut cmd = tools.command("psql", target);
    cmd.args(["--no-psqlrc", "--quiet", "--no-password"])
        .arg(format!("--dbname={}", target.url_without_password()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        JobError::permanent(
            stage,
            format!("cannot start {}: {e}", tools.bin("psql").display()),
        )
    })?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let err = tokio::spawn(async move {
        let mut s = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut s).await;
        s
    });
    stdin
        .write_all(plan.sql.as_bytes())
        .await
        .map_err(|e| JobError::permanent(stage, format!("psql stopped reading: {e}")))?;
    drop(stdin);
    let status = child.wait().await;
    let said = err.await.unwrap_or_default();
    restore::check_status(status, &said, "psql", stage)?;
    let errors: Vec<String> = said
        .lines()
        .filter(|l| l.contains("ERROR:"))
        .map(|l| l.trim().to_string())
        .collect();
    for e in &errors {
        tracing::warn!(object = %backup.key, error = %e, "a globals statement failed; the restore goes on");
    }
    Ok(GlobalsReport {
        key: backup.key.clone(),
        created: plan.created,
        existing: plan.skipped,
        errors,
    })
}

/// The globals SQL to run, and what it leaves out.
#[derive(Debug, PartialEq)]
pub struct GlobalsPlan {
    pub sql: String,
    pub created: usize,
    pub skipped: Vec<String>,
}

/// Drops `CREATE ROLE` and `ALTER ROLE` lines of roles in `existing`.
/// pg_dumpall writes each of these statements on one line.
pub fn filter_globals(sql: &str, existing: &[String]) -> GlobalsPlan {
    let mut out = String::with_capacity(sql.len());
    let mut created = 0;
    let mut skipped = Vec::new();
    for line in sql.split_inclusive('\n') {
        let role = line
            .strip_prefix("CREATE ROLE ")
            .map(|r| (true, r))
            .or_else(|| line.strip_prefix("ALTER ROLE ").map(|r| (false, r)));
        if let Some((create, rest)) = role {
            if let Some(name) = leading_ident(rest) {
                if existing.contains(&name) {
                    if create {
                        skipped.push(name);
                    }
                    continue;
                }
                if create {
                    created += 1;
                }
            }
        }
        out.push_str(line);
    }
    GlobalsPlan {
        sql: out,
        created,
        skipped,
    }
}

/// The SQL identifier at the start of `s`, quoted or not.
fn leading_ident(s: &str) -> Option<String> {
    if let Some(q) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = q.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    name.push('"');
                } else {
                    return Some(name);
                }
            } else {
                name.push(c);
            }
        }
        None
    } else {
        let end = s
            .find(|c: char| c == ';' || c.is_whitespace())
            .unwrap_or(s.len());
        (end > 0).then(|| s[..end].to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_roles_are_left_alone() {
        let sql = "SET client_encoding = 'UTF8';\n\
            CREATE ROLE app_owner;\n\
            ALTER ROLE app_owner WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$x';\n\
            CREATE ROLE postgres;\n\
            ALTER ROLE postgres WITH SUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$y';\n\
            CREATE ROLE \"Ops \"\"team\"\"\";\n\
            ALTER ROLE \"Ops \"\"team\"\"\" WITH NOLOGIN;\n\
            GRANT app_owner TO \"Ops \"\"team\"\"\" GRANTED BY postgres;\n";
        let plan = filter_globals(sql, &["postgres".to_string()]);
        assert_eq!(plan.created, 2);
        assert_eq!(plan.skipped, vec!["postgres".to_string()]);
        assert!(!plan.sql.contains("ROLE postgres"));
        assert!(plan.sql.contains("CREATE ROLE app_owner;"));
        assert!(plan.sql.contains("GRANT app_owner"));
        let plan = filter_globals(sql, &["Ops \"team\"".to_string()]);
        assert!(
            !plan.sql.contains("CREATE ROLE \"Ops") && !plan.sql.contains("ALTER ROLE \"Ops"),
            "{}",
            plan.sql
        );
        assert_eq!(plan.skipped, vec!["Ops \"team\"".to_string()]);
        assert_eq!(leading_ident("\"a b\" WITH"), Some("a b".into()));
        assert_eq!(leading_ident("x;"), Some("x".into()));
        assert_eq!(leading_ident("\"open"), None);
    }

    #[test]
    fn the_newest_run_is_the_newest_time_of_several_databases() {
        let b = |k: &str, t: &str| Backup {
            key: k.into(),
            time: chrono::DateTime::parse_from_rfc3339(t).unwrap().into(),
            size: 1,
            format: crate::config::Format::Custom,
            compression: "zstd",
            encrypted: false,
            imported: false,
        };
        let all = vec![
            (Scope::Single, b("s", "2026-02-01T00:00:00Z")),
            (Scope::Database("a".into()), b("a2", "2026-01-02T00:00:00Z")),
            (Scope::Database("a".into()), b("a1", "2026-01-01T00:00:00Z")),
            (Scope::Database("b".into()), b("b1", "2026-01-01T00:00:00Z")),
            (Scope::Globals, b("g2", "2026-01-02T00:00:00Z")),
        ];
        let (run, g, dbs) = newest_run(all).unwrap();
        assert_eq!(run.to_rfc3339(), "2026-01-02T00:00:00+00:00");
        assert_eq!(g.unwrap().key, "g2");
        assert_eq!(
            dbs.iter()
                .map(|(d, b)| (d.as_str(), b.key.as_str()))
                .collect::<Vec<_>>(),
            vec![("a", "a2")]
        );
        assert!(newest_run(vec![(Scope::Single, b("s", "2026-02-01T00:00:00Z"))]).is_none());
    }
}
