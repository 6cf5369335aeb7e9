//! `pgbackup verify <NAME|latest> [--restore]`.

use crate::batch::{self, Command};
use crate::catalog;
use crate::config::{BatchConfig, DrillConfig, DumpConfig, EncryptionConfig, StoreConfig, Vars};
use crate::error::Stage;
use crate::metrics::Metrics;
use crate::verify;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The backup, as `pgbackup list` prints it, or `latest`.
    #[arg(value_name = "NAME|latest")]
    pub name: String,
    /// Also restore it into a scratch database and check what came back
    /// (BACKUP_VERIFY_DATABASE_URL, or a temporary database on
    /// BACKUP_DATABASE_URL's server, dropped afterwards).
    #[arg(long)]
    pub restore: bool,
    /// One database of several (BACKUP_DATABASES).
    #[arg(long, value_name = "DB")]
    pub database: Option<String>,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let vars = Vars::from_env()?;
    let mut store = StoreConfig::read(&vars)?;
    if let Some(db) = &a.database {
        store.prefix = crate::naming::database_prefix(&store.prefix, db);
    }
    let wanted = catalog::wanted(&store.prefix, &a.name)?;
    // The drill's settings, checked before anything is fetched.
    let mut drill = a.restore.then(|| DrillConfig::read(&vars)).transpose()?;
    if let (Some(d), Some(db)) = (drill.as_mut(), &a.database) {
        d.prefix = store.prefix.clone();
        // The scratch database goes on the same server; the metrics and
        // messages name this database, which it must not be.
        d.source = d.source.take().map(|s| s.with_database(db));
        d.verify.check_scratch(d.source.as_ref())?;
    }
    let storage = super::open_storage(&store).await;
    let cancel = super::cancel_on_signal();
    if let Some(drill) = drill {
        let result = verify::drill_until(&drill, storage.as_ref(), &a.name, &cancel).await;
        let batch_cfg = BatchConfig::read(&vars)?;
        let stopped = matches!(&result, Err(e) if e.is_cancelled());
        if batch_cfg.is_enabled() && !stopped {
            let db =
                super::database_label(drill.source.as_ref(), storage.as_ref(), &store.prefix).await;
            let metrics = Metrics::new(&db, "unknown");
            let unknown: &[&str] = match &result {
                Ok(_) => {
                    metrics.set_verified(chrono::Utc::now());
                    &[]
                }
                // A failed drill must not erase the time of the last good one.
                Err(_) => {
                    metrics.count_failure(Stage::Verify);
                    if let Some(t) =
                        batch::previous(&batch_cfg, Command::Verify, batch::LAST_VERIFIED)
                    {
                        metrics.set_verified(t);
                    }
                    &[batch::LAST_VERIFIED]
                }
            };
            batch::publish(&batch_cfg, Command::Verify, &metrics, unknown).await;
        }
        let r = result?;
        tracing::info!(
            object = %r.key,
            scratch = %r.scratch,
            time_to_recover_s = format!("{:.2}", r.time_to_recover.as_secs_f64()),
            "restore drill passed"
        );
        println!(
            "drill ok: {} restored into {:?} at {} in {:.1}s (time to recover); {} tables present, {}, {}; scratch database removed; {:.1}s in all",
            r.key,
            r.scratch,
            r.server,
            r.time_to_recover.as_secs_f64(),
            r.tables,
            if r.manifest {
                format!("{} with rows at backup time still have rows", r.tables_with_rows)
            } else {
                "rows not checked (no manifest)".to_string()
            },
            if r.verify_sql {
                "BACKUP_VERIFY_SQL true"
            } else {
                "no BACKUP_VERIFY_SQL"
            },
            r.duration.as_secs_f64()
        );
        return Ok(());
    }
    let pg_bin_dir = DumpConfig::read_pg_bin_dir(&vars)?;
    let identity = EncryptionConfig::read(&vars)?.identity;
    let backup = catalog::resolve(storage.as_ref(), &store.prefix, &wanted, Stage::Verify).await?;
    let r = tokio::select! {
        r = verify::verify(pg_bin_dir.as_deref(), storage.as_ref(), &backup, identity.as_ref()) => r?,
        _ = cancel.cancelled() => return Err(crate::restore::stopped(Stage::Verify).into()),
    };
    if !r.streamed.looked_inside {
        println!(
            "ok: {}  sha256 {} matches over {}; encrypted: the archive inside was not read (set BACKUP_ENCRYPTION_IDENTITY_FILE to decrypt and check it)  ({:.1}s)",
            r.key,
            r.streamed.sha256,
            crate::pg::human_bytes(r.streamed.stored_bytes),
            r.duration.as_secs_f64()
        );
        return Ok(());
    }
    let checksum = if r.streamed.checksum_verified {
        format!("sha256 {} matches", r.streamed.sha256)
    } else {
        "no sha256 stored (imported from the Railway template): checksum not checked, gzip CRC checked".to_string()
    };
    println!(
        "ok: {}  {checksum} over {}; decompressed {}; {}  ({:.1}s)",
        r.key,
        crate::pg::human_bytes(r.streamed.stored_bytes),
        crate::pg::human_bytes(r.streamed.dump_bytes),
        match r.tables {
            Some(n) => format!("plain dump complete, {n} tables"),
            None => "pg_restore read the archive to its end".to_string(),
        },
        r.duration.as_secs_f64()
    );
    Ok(())
}
