//! Read-ahead for `wal-fetch`. Recovery asks for one segment at a time and
//! waits for each, so with one download per request the store's latency,
//! the decompression and the replay take turns instead of overlapping.
//! After each request wal-fetch notes the segment asked for and starts a
//! detached read-ahead (`wal-fetch --prefetch`) unless one is running: it
//! keeps the next BACKUP_WAL_PREFETCH_SEGMENTS completed segments, verified,
//! in `pg_wal/pgbackup-prefetch/`, so that the next requests are a rename.
//!
//! Only completed segments are read ahead: once stored they never change,
//! while the newest partial may still grow, so partials are always fetched
//! when asked for. Files the replay has passed are removed at each request,
//! so the directory holds at most that many segments plus one in writing;
//! `restore --to-time --start` removes it when recovery has ended. The
//! read-ahead is bounded: with its window full it waits for the next
//! request (one process serves the whole recovery, instead of one started
//! per segment), and it exits when no request came for IDLE, when its
//! directory or the request file is removed, at the first segment not
//! stored, or on any error (the request itself then meets the error and
//! reports it).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::fetch::read;
use super::{select_wal, wal_prefix, Segment, StoredWal, WalObject, DEFAULT_SEGMENT_SIZE};
use crate::crypto::Identities;
use crate::error::{JobError, Stage};
use crate::storage::ObjectStore;

/// Beside the WAL file PostgreSQL asks for (`%p`, in `pg_wal/`): the same
/// file system, so handing a segment over is a rename.
pub const DIR_NAME: &str = "pgbackup-prefetch";
/// The segment most recently asked for.
const REQUESTED: &str = "requested";
/// Held by the running read-ahead.
const LOCK: &str = "lock";
/// A segment being written; renamed to its name when verified and complete.
const PART: &str = ".part";
/// Downloads at once: enough to hide a remote store's latency.
const IN_FLIGHT: usize = 2;
/// How long a request waits for a segment the read-ahead is writing.
const WAIT: Duration = Duration::from_secs(60);
/// How long a read-ahead with a full window waits for the next request.
const IDLE: Duration = Duration::from_secs(10);
/// How often it looks: small beside the replay of a segment.
const POLL: Duration = Duration::from_millis(5);

/// The read-ahead directory for a `%p` of `pg_wal/RECOVERYXLOG`.
pub fn dir_for(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(DIR_NAME),
        _ => PathBuf::from(DIR_NAME),
    }
}

/// The `depth` segments after `seg` on its timeline.
pub fn ahead(seg: Segment, depth: u32) -> Vec<Segment> {
    (1..=u64::from(depth))
        .map(|i| Segment {
            timeline: seg.timeline,
            number: seg.number + i,
        })
        .collect()
}

/// Of the files in the directory, the read-ahead copies that recovery has
/// passed (before `requested`, whatever their timeline: the request for a
/// segment may try a newer timeline first) and the leftovers of an
/// interrupted write.
pub fn passed(files: &[String], requested: Segment) -> Vec<String> {
    files
        .iter()
        .filter(|f| {
            let name = f.strip_suffix(PART).unwrap_or(f);
            match Segment::parse(name, DEFAULT_SEGMENT_SIZE) {
                Some(s) => s.number < requested.number,
                None => false,
            }
        })
        .cloned()
        .collect()
}

/// Notes that `name` was asked for and removes what recovery has passed.
/// Creates the directory: only requests do, so a read-ahead still running
/// after `restore` removed it writes nothing.
pub fn note_request(dir: &Path, name: &str) -> io::Result<()> {
    let seg = Segment::parse(name, DEFAULT_SEGMENT_SIZE)
        .ok_or_else(|| io::Error::other(format!("{name} is not a segment name")))?;
    std::fs::create_dir_all(dir)?;
    let files: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    for f in passed(&files, seg) {
        // A write in progress (.part) belongs to the running read-ahead,
        // which removes it itself when its download fails.
        if !f.ends_with(PART) {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
    let tmp = dir.join(format!("{REQUESTED}{PART}"));
    std::fs::write(&tmp, name)?;
    std::fs::rename(&tmp, dir.join(REQUESTED))
}

fn requested(dir: &Path) -> Option<Segment> {
    let s = std::fs::read_to_string(dir.join(REQUESTED)).ok()?;
    Segment::parse(s.trim(), DEFAULT_SEGMENT_SIZE)
}

/// The lock, when no other read-ahead holds it.
fn try_lock(dir: &Path) -> io::Result<Option<File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Whether a read-ahead is running on `dir`.
pub fn running(dir: &Path) -> bool {
    matches!(try_lock(dir), Ok(None))
}

/// Hands the read-ahead copy of `name` over to `dest`, waiting while the
/// read-ahead is still writing it. False when there is none: the caller
/// fetches it itself.
pub fn take(dir: &Path, name: &str, dest: &Path) -> bool {
    let ready = dir.join(name);
    let part = dir.join(format!("{name}{PART}"));
    let deadline = Instant::now() + WAIT;
    loop {
        if std::fs::rename(&ready, dest).is_ok() {
            return true;
        }
        if !part.exists() || !running(dir) || Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts `exe wal-fetch --prefetch` on `dir`, detached: recovery does not
/// wait for it, and it ends by itself (see the module's comment).
pub fn spawn(exe: &Path, env_file: Option<&Path>, name: &str, dir: &Path) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut c = Command::new(exe);
    c.arg("wal-fetch").arg("--prefetch");
    if let Some(f) = env_file {
        c.arg("--env-file").arg(f);
    }
    c.arg(name)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a signal for the restore_command does
        // not cut a download in the middle of a write.
        .process_group(0);
    c.spawn().map(drop)
}

/// Removes the directory once no read-ahead is running (at most `wait`).
pub fn remove(dir: &Path, wait: Duration) {
    // A read-ahead waiting for the next request stops at once.
    let _ = std::fs::remove_file(dir.join(REQUESTED));
    let deadline = Instant::now() + wait;
    while dir.exists() && running(dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Removes a `.part` file unless it was renamed.
struct PartGuard(PathBuf);

impl Drop for PartGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Completed segments the store holds, from one listing of the WAL prefix
/// narrowed to a log file (the first 22 characters of a segment name: 256
/// segments of 16 MiB), so that reading ahead is one request per segment
/// rather than a listing, a HEAD and a GET.
struct Listed {
    prefix: String,
    wal: Vec<StoredWal>,
}

/// The stored object of completed segment `name`, listing again when the
/// listing at hand is of another log file or older than the segment.
async fn find(
    store: &dyn ObjectStore,
    prefix: &str,
    listed: &mut Option<Listed>,
    name: &str,
) -> Result<Option<StoredWal>, JobError> {
    let narrow = format!("{}{}", wal_prefix(prefix), &name[..name.len().min(22)]);
    let hit = |listed: &Option<Listed>| {
        listed
            .as_ref()
            .filter(|l| l.prefix == narrow)?
            .wal
            .iter()
            .find(|w| matches!(&w.object, WalObject::Segment(s) if s == name))
            .cloned()
    };
    if let Some(w) = hit(listed) {
        return Ok(Some(w));
    }
    let listing = store
        .list(&narrow)
        .await
        .map_err(|e| JobError::storage(Stage::Restore, e))?;
    *listed = Some(Listed {
        prefix: narrow.clone(),
        wal: select_wal(prefix, &listing),
    });
    Ok(hit(listed))
}

/// The read-ahead itself: fills the window after the newest request until
/// it is full or the store has no more completed segments.
pub async fn run(
    store: &dyn ObjectStore,
    prefix: &str,
    identity: Option<&Identities>,
    dir: &Path,
    depth: u32,
) -> Result<(), JobError> {
    let stage = Stage::Restore;
    let io_err = |e: io::Error| JobError::permanent(stage, format!("{}: {e}", dir.display()));
    let Some(_lock) = try_lock(dir).map_err(io_err)? else {
        return Ok(());
    };
    let mut listed = None;
    loop {
        let Some(req) = requested(dir) else {
            return Ok(());
        };
        let want: Vec<Segment> = ahead(req, depth)
            .into_iter()
            .filter(|s| !dir.join(s.name(DEFAULT_SEGMENT_SIZE)).exists())
            .collect();
        if want.is_empty() {
            if next_request(dir, req, IDLE).await.is_none() {
                return Ok(());
            }
            continue;
        }
        // Up to the first segment not stored (yet): the end of what there
        // is, where a later request starts anew.
        let mut found = Vec::new();
        for name in want.iter().map(|s| s.name(DEFAULT_SEGMENT_SIZE)) {
            match find(store, prefix, &mut listed, &name).await? {
                Some(w) => found.push((name, w)),
                None => break,
            }
        }
        let end = found.len() < want.len();
        let mut downloads = futures::stream::iter(found)
            .map(|(name, w)| one(store, identity, dir, name, w))
            .buffered(IN_FLIGHT);
        while let Some(r) = downloads.next().await {
            r?;
        }
        if end {
            return Ok(());
        }
    }
}

/// Waits for a request other than `after`; `None` after `idle` without
/// one, or once the request file is gone (`remove` deletes it first).
async fn next_request(dir: &Path, after: Segment, idle: Duration) -> Option<Segment> {
    let deadline = tokio::time::Instant::now() + idle;
    loop {
        match requested(dir) {
            None => return None,
            Some(r) if r != after => return Some(r),
            Some(_) if tokio::time::Instant::now() >= deadline => return None,
            Some(_) => tokio::time::sleep(POLL).await,
        }
    }
}

async fn one(
    store: &dyn ObjectStore,
    identity: Option<&Identities>,
    dir: &Path,
    name: String,
    found: StoredWal,
) -> Result<(), JobError> {
    let stage = Stage::Restore;
    let part = dir.join(format!("{name}{PART}"));
    // Created before the download, so that a request for this segment
    // waits for it instead of downloading it a second time.
    File::create(&part)
        .map_err(|e| JobError::permanent(stage, format!("{}: {e}", part.display())))?;
    let guard = PartGuard(part);
    let plain = read(store, &found, identity).await?;
    let write = || -> io::Result<()> {
        let mut f = File::create(&guard.0)?;
        f.write_all(&plain)?;
        std::fs::rename(&guard.0, dir.join(&name))
    };
    write().map_err(|e| JobError::permanent(stage, format!("{}: {e}", guard.0.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            let d = std::env::temp_dir().join(format!("pgbackup-ahead-{}", rand::random::<u64>()));
            std::fs::create_dir_all(&d).unwrap();
            Scratch(d)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn seg(name: &str) -> Segment {
        Segment::parse(name, DEFAULT_SEGMENT_SIZE).unwrap()
    }

    fn names(v: &[Segment]) -> Vec<String> {
        v.iter().map(|s| s.name(DEFAULT_SEGMENT_SIZE)).collect()
    }

    #[test]
    fn the_window_crosses_into_the_next_log_file() {
        assert_eq!(
            names(&ahead(seg("0000000200000003000000FE"), 3)),
            [
                "0000000200000003000000FF",
                "000000020000000400000000",
                "000000020000000400000001"
            ]
        );
        assert!(ahead(seg("000000010000000000000001"), 0).is_empty());
    }

    #[test]
    fn what_recovery_has_passed_goes_and_the_rest_stays() {
        let files: Vec<String> = [
            "000000010000000000000004",
            "000000010000000000000005",
            "000000010000000000000006.part",
            "000000010000000000000003.part",
            "000000020000000000000004",
            "requested",
            "lock",
        ]
        .map(String::from)
        .to_vec();
        let mut gone = passed(&files, seg("000000020000000000000005"));
        gone.sort();
        assert_eq!(
            gone,
            [
                "000000010000000000000003.part",
                "000000010000000000000004",
                "000000020000000000000004"
            ]
        );
        // The segment asked for stays, on any timeline.
        assert_eq!(
            passed(&files, seg("000000020000000000000003")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_directory_sits_beside_the_requested_file() {
        assert_eq!(
            dir_for(Path::new("pg_wal/RECOVERYXLOG")),
            Path::new("pg_wal/pgbackup-prefetch")
        );
        assert_eq!(dir_for(Path::new("RECOVERYXLOG")), Path::new(DIR_NAME));
    }

    #[test]
    fn a_request_is_handed_the_copy_and_clears_what_it_passed() {
        let tmp = Scratch::new();
        let dir = tmp.path().join(DIR_NAME);
        note_request(&dir, "000000010000000000000003").unwrap();
        std::fs::write(dir.join("000000010000000000000004"), b"four").unwrap();
        std::fs::write(dir.join("000000010000000000000005"), b"five").unwrap();
        note_request(&dir, "000000010000000000000005").unwrap();
        assert_eq!(requested(&dir), Some(seg("000000010000000000000005")));
        let dest = tmp.path().join("RECOVERYXLOG");
        // Passed at this request: removed, not handed over.
        assert!(!dir.join("000000010000000000000004").exists());
        assert!(!take(&dir, "000000010000000000000004", &dest));
        assert!(take(&dir, "000000010000000000000005", &dest));
        assert_eq!(std::fs::read(&dest).unwrap(), b"five");
        assert!(!dir.join("000000010000000000000005").exists());
        // Nothing there and nobody writing: no wait.
        let t = Instant::now();
        assert!(!take(&dir, "000000010000000000000006", &dest));
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn segments_are_found_from_one_listing_per_log_file() {
        use crate::storage::memory::MemoryStore;
        use crate::storage::ObjectMeta;
        let store = MemoryStore::new();
        let key = |name: &str| format!("{}{name}.zst", wal_prefix("p/"));
        let put = |name: &str| {
            store.insert(
                &key(name),
                vec![1u8],
                ObjectMeta::default(),
                chrono::Utc::now(),
            )
        };
        let (s5, s6, s7, s8) = (
            "000000010000000000000005",
            "000000010000000000000006",
            "000000010000000000000007",
            "000000010000000000000008",
        );
        put(s5);
        put(s6);
        let mut listed = None;
        let found = find(&store, "p/", &mut listed, s5).await.unwrap();
        assert_eq!(found.unwrap().key, key(s5));
        // Answered from the listing at hand: gone from the store since, and
        // still found (the download would then meet the error).
        store.delete(&[key(s6)]).await.unwrap();
        assert!(find(&store, "p/", &mut listed, s6).await.unwrap().is_some());
        // Stored after the listing: the miss lists again.
        put(s7);
        assert_eq!(
            find(&store, "p/", &mut listed, s7)
                .await
                .unwrap()
                .unwrap()
                .key,
            key(s7)
        );
        assert!(find(&store, "p/", &mut listed, s8).await.unwrap().is_none());
        // The next log file has a listing of its own.
        let next = "000000010000000100000000";
        put(next);
        assert!(find(&store, "p/", &mut listed, next)
            .await
            .unwrap()
            .is_some());
        assert_eq!(listed.unwrap().prefix, "p/wal/0000000100000001000000");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_window_waits_for_the_next_request_until_idle_or_removed() {
        let d = Scratch::new();
        let (a, b) = ("000000010000000000000005", "000000010000000000000006");
        note_request(d.path(), a).unwrap();
        // No new request: gives up after the idle time, not before.
        let t0 = tokio::time::Instant::now();
        assert_eq!(next_request(d.path(), seg(a), IDLE).await, None);
        assert!(t0.elapsed() >= IDLE);
        // A new request is picked up at the next look.
        note_request(d.path(), b).unwrap();
        let t0 = tokio::time::Instant::now();
        assert_eq!(next_request(d.path(), seg(a), IDLE).await, Some(seg(b)));
        assert!(t0.elapsed() <= POLL);
        // remove() deletes the request file first, which stops the wait.
        remove(d.path(), Duration::ZERO);
        assert!(!d.path().exists());
        let t0 = tokio::time::Instant::now();
        assert_eq!(next_request(d.path(), seg(b), IDLE).await, None);
        assert!(t0.elapsed() < POLL);
    }

    #[test]
    fn a_stale_part_without_a_running_read_ahead_is_not_waited_for() {
        let tmp = Scratch::new();
        let dir = tmp.path().join(DIR_NAME);
        note_request(&dir, "000000010000000000000003").unwrap();
        std::fs::write(dir.join("000000010000000000000004.part"), b"").unwrap();
        let t = Instant::now();
        assert!(!take(
            &dir,
            "000000010000000000000004",
            &tmp.path().join("RECOVERYXLOG")
        ));
        assert!(t.elapsed() < Duration::from_secs(1));
        // While a read-ahead holds the lock, the request waits for the file.
        let lock = try_lock(&dir).unwrap().expect("free");
        let d = dir.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            std::fs::write(d.join("000000010000000000000004"), b"four").unwrap();
            std::fs::remove_file(d.join("000000010000000000000004.part")).unwrap();
            drop(lock);
        });
        assert!(take(
            &dir,
            "000000010000000000000004",
            &tmp.path().join("RECOVERYXLOG")
        ));
        writer.join().unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join("RECOVERYXLOG")).unwrap(),
            b"four"
        );
    }
}
