//! `pgbackup backup`: one backup now; exits with its outcome.

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::job;
use crate::storage::Storage;

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let storage = Storage::from_config(&cfg).await?;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        on_signal.cancel();
    });
    let outcome = job::run(&cfg, &storage, &cancel).await;
    match &outcome.result {
        Ok(r) => {
            tracing::info!(
                database = %outcome.database,
                object = %r.key,
                stored_bytes = r.stored_bytes,
                dump_bytes = r.dump_bytes,
                duration_s = format!("{:.2}", outcome.duration.as_secs_f64()),
                "backup succeeded"
            );
            println!(
                "{}/{}  {} stored ({} dumped) in {:.1}s  sha256 {}",
                storage.describe(),
                r.key,
                human_bytes(r.stored_bytes),
                human_bytes(r.dump_bytes),
                outcome.duration.as_secs_f64(),
                r.sha256
            );
            Ok(())
        }
        Err(e) => {
            tracing::error!(database = %outcome.database, stage = %e.stage, error = %e.message, "backup failed");
            Err(e.clone().into())
        }
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
