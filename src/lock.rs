//! One backup at a time per store and prefix on this host. A manual
//! `pgbackup backup` beside the daemon (the common case: the same
//! container) waits for the daemon's run instead of racing it for the same
//! object name. The lock is an advisory `flock` on a file in `/dev/shm`
//! (a tmpfs on every Linux, in containers too: taking the lock writes
//! nothing to disk), else `/run/lock`, else the temp directory. It is
//! released when the process ends however it ends; the holder
//! removes the file when done, and a waiter that finds its file removed
//! opens the new one, so removal never lets two runs in. Runs on other
//! hosts are not covered: conditional writes are their guard (README,
//! "Two writers on one prefix").

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// Held for as long as the backup runs; dropping it unlocks.
#[derive(Debug)]
pub struct PrefixLock {
    held: Option<(File, PathBuf)>,
}

impl Drop for PrefixLock {
    fn drop(&mut self) {
        // Removed while still locked: a waiter then sees its file is gone.
        if let Some((file, path)) = self.held.take() {
            let _ = std::fs::remove_file(&path);
            drop(file);
        }
    }
}

/// The lock file of `store` (its description) and `prefix`.
pub fn path(store: &str, prefix: &str) -> PathBuf {
    let mut h = Sha256::new();
    h.update(store.as_bytes());
    h.update([0]);
    h.update(prefix.as_bytes());
    let id = hex::encode(&h.finalize()[..8]);
    lock_dir().join(format!("pgbackup-{id}.lock"))
}

/// The first of `/dev/shm` and `/run/lock` this process may write in, else
/// the temp directory. Runs on one host (or in one container) make the
/// same choice, so they meet on one file.
fn lock_dir() -> PathBuf {
    ["/dev/shm", "/run/lock"]
        .into_iter()
        .map(Path::new)
        .find(|d| d.is_dir() && rustix::fs::access(*d, rustix::fs::Access::WRITE_OK).is_ok())
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

/// How often a waiting run looks again.
const POLL: Duration = Duration::from_millis(250);

/// Whether `file` is still the one at `path` (not removed by its holder).
fn still_linked(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Waits for the lock of `store` and `prefix`. `None` when cancelled. A
/// lock file that cannot be opened (read-only temp directory) is logged and
/// the backup goes on unlocked: conditional writes still guard the object.
pub async fn acquire(store: &str, prefix: &str, cancel: &CancellationToken) -> Option<PrefixLock> {
    let p = path(store, prefix);
    let unlocked = |e: std::io::Error| {
        tracing::warn!(path = %p.display(), error = %e, "cannot use the backup lock file; going on without it");
        Some(PrefixLock { held: None })
    };
    let mut told = false;
    loop {
        let file = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
        {
            Ok(f) => f,
            Err(e) => return unlocked(e),
        };
        match file.try_lock() {
            Ok(()) if still_linked(&file, &p) => {
                return Some(PrefixLock {
                    held: Some((file, p)),
                })
            }
            // Its holder removed it as we locked it: open the new one.
            Ok(()) => continue,
            Err(TryLockError::WouldBlock) => {
                if !told {
                    tracing::info!(
                        prefix,
                        "another backup of this prefix is running on this host; waiting for it"
                    );
                    told = true;
                }
            }
            Err(TryLockError::Error(e)) => return unlocked(e),
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

    fn unique_prefix() -> String {
        format!("lock-test-{:016x}/", rand::random::<u64>())
    }

    #[tokio::test]
    async fn a_second_run_waits_until_the_first_ends() {
        let prefix = unique_prefix();
        let cancel = CancellationToken::new();
        let first = acquire("memory", &prefix, &cancel).await.unwrap();
        assert!(first.held.is_some());
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
            .unwrap()
            .unwrap();
        assert!(second.held.is_some());
        assert!(path("memory", &prefix).exists(), "the holder's file");
        // Other prefixes never wait.
        assert!(acquire("memory", &unique_prefix(), &cancel).await.is_some());
        drop(second);
        assert!(!path("memory", &prefix).exists(), "removed when released");
    }

    #[tokio::test]
    async fn three_runs_take_turns_one_at_a_time() {
        let prefix = unique_prefix();
        let cancel = CancellationToken::new();
        let inside = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (prefix, cancel, inside) = (prefix.clone(), cancel.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let _l = acquire("memory", &prefix, &cancel).await.unwrap();
                let n = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                assert_eq!(n, 0, "two runs held the lock at once");
                tokio::time::sleep(POLL).await;
                inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(!path("memory", &prefix).exists());
    }

    #[tokio::test]
    async fn waiting_ends_on_cancel() {
        let prefix = unique_prefix();
        let cancel = CancellationToken::new();
        let _held = acquire("memory", &prefix, &cancel).await.unwrap();
        let waiting = tokio::spawn({
            let (prefix, cancel) = (prefix.clone(), cancel.clone());
            async move { acquire("memory", &prefix, &cancel).await }
        });
        cancel.cancel();
        assert!(waiting.await.unwrap().is_none());
    }
}
