//! `pgbackup healthcheck`: the container health check. Exit 0 when the
//! daemon on this host answers `/healthz` with 200, else 1 with one line.
//! Never 2, not even for a bad configuration: Docker reserves exit code 2
//! of a HEALTHCHECK command.

use anyhow::anyhow;

use crate::config::HealthcheckConfig;
use crate::probe;

pub async fn run() -> anyhow::Result<()> {
    // Into a plain error: a ConfigError would make main exit 2.
    let cfg = HealthcheckConfig::from_env().map_err(|e| anyhow!("unhealthy: {e}"))?;
    probe::healthz(&cfg)
        .await
        .map_err(|e| anyhow!("unhealthy: {e}"))
}
