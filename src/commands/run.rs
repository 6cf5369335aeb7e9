//! `pgbackup run`: the daemon; with SINGLE_SHOT_MODE, one backup like `backup`.

use crate::config::Config;
use crate::daemon;

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    if cfg.schedule.single_shot {
        return super::backup::run(cfg).await;
    }
    daemon::run(cfg, super::shutdown_signal()).await
}
