//! `pgbackup wal-fetch <FILE> <PATH>`: PostgreSQL's restore_command.
//!
//! Exit statuses carry meaning for the server: 0 the file is at PATH; 1 it
//! is not stored, and recovery ends cleanly at the last WAL it has; any
//! status above 125 makes recovery stop with a fatal error. A corrupt
//! object, an unreachable store or a missing identity must never read as
//! "not stored": the server would then promote early and lose what the
//! archive holds. So those exit [`FATAL_EXIT`].

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::{is_history_name, is_segment_name, select_wal, wal_prefix, StoredWal, WalObject};
use crate::crypto::Identities;
use crate::error::{JobError, Stage};
use crate::storage::ObjectStore;

/// Above 125: PostgreSQL treats the restore_command as having failed
/// hard and stops recovery, rather than taking the file as missing.
pub const FATAL_EXIT: u8 = 255;

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Written to PATH, from this object.
    Stored(String),
    /// Not in the store.
    Missing,
}

/// The object that serves `name`: the completed segment, else the longest
/// partial of it (served under the full name, so recovery reaches the last
/// flushed commit), or the history file.
pub fn pick<'a>(wal: &'a [StoredWal], name: &str) -> Option<&'a StoredWal> {
    let complete = wal
        .iter()
        .find(|w| matches!(&w.object, WalObject::Segment(s) | WalObject::History(s) if s == name));
    complete.or_else(|| {
        wal.iter()
            .filter(|w| matches!(&w.object, WalObject::Partial(s, _) if s == name))
            .max_by_key(|w| match &w.object {
                WalObject::Partial(_, off) => *off,
                _ => 0,
            })
    })
}

/// Fetches `name` into `dest`, verified, or says it is not stored.
pub async fn fetch(
    store: &dyn ObjectStore,
    prefix: &str,
    identity: Option<&Identities>,
    name: &str,
    dest: &Path,
) -> Result<Fetched, JobError> {
    let stage = Stage::Restore;
    // Backup history files and anything else PostgreSQL may ask for are
    // not stored: "missing" is the right answer for them.
    if !is_segment_name(name) && !is_history_name(name) {
        return Ok(Fetched::Missing);
    }
    let listing = store
        .list(&format!("{}{name}", wal_prefix(prefix)))
        .await
        .map_err(|e| JobError::storage(stage, e))?;
    let wal = select_wal(prefix, &listing);
    let Some(found) = pick(&wal, name) else {
        return Ok(Fetched::Missing);
    };
    let plain = read(store, found, identity).await?;
    write_atomically(dest, &plain)
        .map_err(|e| JobError::permanent(stage, format!("cannot write {}: {e}", dest.display())))?;
    Ok(Fetched::Stored(found.key.clone()))
}

/// One stored WAL object, verified against its sha256, decrypted and
/// decompressed; a partial comes back segment-sized.
pub async fn read(
    store: &dyn ObjectStore,
    found: &StoredWal,
    identity: Option<&Identities>,
) -> Result<Vec<u8>, JobError> {
    let stage = Stage::Restore;
    let (meta, mut body) = store
        .get_with_meta(&found.key)
        .await
        .map_err(|e| JobError::storage(stage, e))?;
    let mut stored = Vec::with_capacity(found.size as usize);
    body.read_to_end(&mut stored)
        .await
        .map_err(|e| JobError::transient(stage, format!("reading {}: {e}", found.key)))?;
    let sha = hex::encode(Sha256::digest(&stored));
    let want = meta.sha256.trim().to_ascii_lowercase();
    if want.len() != 64 {
        return Err(JobError::permanent(
            stage,
            format!(
                "{} carries no sha256; refusing to replay unverified WAL",
                found.key
            ),
        ));
    }
    if sha != want {
        return Err(JobError::permanent(
            stage,
            format!(
                "{} is corrupt: its sha256 is {sha}, stored as {want}",
                found.key
            ),
        ));
    }
    let compressed = if found.encrypted {
        let ids = identity.ok_or_else(|| {
            JobError::config(
                stage,
                crate::crypto::identity_needed(&found.key, "replaying it"),
            )
        })?;
        ids.decrypt_bytes(&stored)
            .map_err(|e| JobError::permanent(stage, format!("cannot decrypt {}: {e}", found.key)))?
    } else {
        stored
    };
    let mut plain = zstd::decode_all(&compressed[..]).map_err(|e| {
        JobError::permanent(stage, format!("{} does not decompress: {e}", found.key))
    })?;
    let file_bytes = meta
        .extra
        .get("file-bytes")
        .and_then(|v| v.trim().parse::<usize>().ok());
    if let WalObject::Partial(..) = found.object {
        // Stored up to its last complete record; PostgreSQL wants a
        // segment-sized file, and zeros read as the end of WAL.
        let size = file_bytes.unwrap_or(super::DEFAULT_SEGMENT_SIZE as usize);
        if plain.len() > size {
            return Err(JobError::permanent(
                stage,
                format!("{} is longer than a segment", found.key),
            ));
        }
        plain.resize(size, 0);
    } else if let Some(n) = file_bytes {
        if plain.len() != n {
            return Err(JobError::permanent(
                stage,
                format!("{} holds {} bytes, stored as {n}", found.key, plain.len()),
            ));
        }
    }
    Ok(plain)
}

/// Writes beside `dest` and renames: the server never sees half a file.
/// No fsync: the server replays the file at once and removes it, and after
/// a crash recovery asks for it again.
fn write_atomically(dest: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = dest.with_extension("pgbackup-tmp");
    let r = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        std::fs::rename(&tmp, dest)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal(keys: &[&str]) -> Vec<StoredWal> {
        crate::wal::listing("p/", keys)
    }

    #[test]
    fn the_completed_segment_wins_then_the_longest_partial() {
        let w = wal(&[
            "000000010000000000000004.partial.00001000.zst",
            "000000010000000000000004.partial.00200000.zst",
            "000000010000000000000004.partial.00003000.zst",
            "000000010000000000000003.partial.00001000.zst",
            "000000010000000000000003.zst",
            "00000002.history.zst",
        ]);
        let k = |n: &str| pick(&w, n).map(|s| s.key.as_str());
        assert_eq!(
            k("000000010000000000000003"),
            Some("p/wal/000000010000000000000003.zst")
        );
        assert_eq!(
            k("000000010000000000000004"),
            Some("p/wal/000000010000000000000004.partial.00200000.zst")
        );
        assert_eq!(k("00000002.history"), Some("p/wal/00000002.history.zst"));
        assert_eq!(k("000000010000000000000005"), None);
    }
}
