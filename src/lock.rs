//! One backup at a time per store and prefix on this host. A manual
//! `pgbackup backup` beside the daemon (the common case: the same
//! container) waits for the daemon's run instead of racing it for the same
//! object name. The lock is an advisory `flock` on a file in the temp
//! directory, released when the process ends however it ends. Runs on
//! other hosts are not covered: conditional writes are their guard
//! (README, "Two writers on one prefix").

use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// Held for as long as the backup runs; dropping it unlocks.
#[derive(Debug)]
pub struct PrefixLock {
    _file: Option<File>,
}

/// The lock file of `store` (its description) and `prefix`.
pub fn path(store: &str, prefix: &str) -> PathBuf {
    let mut h = Sha256::new();
    h.update(store.as_bytes());
    h.update([0]);
    h.update(prefix.as_bytes());
    let id = hex::encode(&h.finalize()[..8]);
    std::env::temp_dir().join(format!("pgbackup-{id}.lock"))
}

/// How often a waiting run looks again.
const POLL: Duration = Duration::from_millis(250);

/// Waits for the lock of `store` and `prefix`. `None` when cancelled. A
/// lock file that cannot be opened (read-only temp directory) is logged and
/// the backup goes on unlocked: conditional writes still guard the object.
pub async fn acquire(store: &str, prefix: &str, cancel: &CancellationToken) -> Option<PrefixLock> {
    let p = path(store, prefix);
    let file = match OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
    {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "cannot open the backup lock file; going on without it");
            return Some(PrefixLock { _file: None });
        }
    };
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Some(PrefixLock { _file: Some(file) }),
            Err(TryLockError::WouldBlock) => {
                if !told {
                    tracing::info!(
                        prefix,
                        "another backup of this prefix is running on this host; waiting for it"
                    );
                    told = true;
                }
            }
            Err(TryLockError::Error(e)) => {
                tracing::warn!(path = %p.display(), error = %e, "cannot lock the backup lock file; going on without it");
                return Some(PrefixLock { _file: None });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = cancel.cancelled() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_run_waits_until_the_first_ends() {
        let prefix = format!("lock-test-{:016x}/", rand::random::<u64>());
        let cancel = CancellationToken::new();
        let first = acquire("memory", &prefix, &cancel).await.unwrap();
        assert!(first._file.is_some());
        let second = tokio::spawn({
            let (prefix, cancel) = (prefix.clone(), cancel.clone());
            async move { acquire("memory", &prefix, &cancel).await }
        });
        tokio::time::sleep(POLL * 3).await;
        assert!(!second.is_finished(), "the second run must wait");
        drop(first);
        let second = tokio::time::timeout(POLL * 8, second)
            .await
            .unwrap()
            .unwrap();
        assert!(second.is_some());
        // Other prefixes never wait.
        assert!(acquire("memory", "other/", &cancel).await.is_some());
        let _ = std::fs::remove_file(path("memory", &prefix));
    }

    #[tokio::test]
    async fn waiting_ends_on_cancel() {
        let prefix = format!("lock-test-{:016x}/", rand::random::<u64>());
        let cancel = CancellationToken::new();
        let _held = acquire("memory", &prefix, &cancel).await.unwrap();
        let waiting = tokio::spawn({
            let (prefix, cancel) = (prefix.clone(), cancel.clone());
            async move { acquire("memory", &prefix, &cancel).await }
        });
        cancel.cancel();
        assert!(waiting.await.unwrap().is_none());
        let _ = std::fs::remove_file(path("memory", &prefix));
    }
}
