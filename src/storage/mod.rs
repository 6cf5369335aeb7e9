//! Where backups live: S3-compatible object storage or a local directory.
//!
//! Both take a stream of fixed-size parts and make the object visible under
//! its name only on `commit`, which the job calls after pg_dump exited 0.
//! Anything else ends in `abort`: no partial object, no pending upload.

pub mod local;
pub mod s3;

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;

use crate::config::{Config, StorageConfig};
use crate::error::JobError;

/// S3's minimum part size (all but the last part).
pub const MIN_PART: usize = 5 * 1024 * 1024;
/// S3's maximum number of parts in one upload.
pub const MAX_PARTS: u32 = 10_000;
const BASE_PART: usize = 8 * 1024 * 1024;
const MAX_PART: usize = 256 * 1024 * 1024;
const PARTS_PER_STEP: u32 = 1_000;

/// Size of part `index` (0-based). The stream's length is unknown up front,
/// so parts start small (8 MiB: small dumps keep memory low) and double every
/// 1,000 parts up to 256 MiB, so that 10,000 parts hold about 1.5 TiB.
pub fn part_size(index: u32) -> usize {
    let step = (index / PARTS_PER_STEP).min(16);
    (BASE_PART << step).min(MAX_PART)
}

/// What travels with each stored backup (S3 user metadata; sidecar locally).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Hex sha256 of the stored (compressed) bytes.
    pub sha256: String,
    /// Other key/values: dump size, versions, format.
    pub extra: BTreeMap<String, String>,
}

/// One object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
}

/// A multipart upload that was started and never completed or aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<DateTime<Utc>>,
}

pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

pub enum Storage {
    S3(s3::S3Storage),
    Local(local::LocalStorage),
}

impl Storage {
    pub async fn from_config(cfg: &Config) -> Result<Storage, JobError> {
        Ok(match &cfg.store.backend {
            StorageConfig::S3 {
                bucket,
                endpoint,
                region,
                force_path_style,
            } => Storage::S3(
                s3::S3Storage::new(bucket, endpoint.as_deref(), region, *force_path_style).await,
            ),
            StorageConfig::Local { dir } => Storage::Local(local::LocalStorage::new(dir)),
        })
    }

    /// `s3://bucket` or the directory, for messages.
    pub fn describe(&self) -> String {
        match self {
            Storage::S3(s) => s.describe(),
            Storage::Local(l) => l.describe(),
        }
    }

    pub async fn create(&self, key: &str) -> Result<Writer, JobError> {
        Ok(match self {
            Storage::S3(s) => Writer::S3(s.create(key)),
            Storage::Local(l) => Writer::Local(l.create(key).await?),
        })
    }

    /// Every object whose key starts with `prefix`, all pages.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, JobError> {
        match self {
            Storage::S3(s) => s.list(prefix).await,
            Storage::Local(l) => l.list(prefix).await,
        }
    }

    /// Deletes keys (and their sidecars); returns the keys that failed, with why.
    pub async fn delete(&self, keys: &[String]) -> Result<Vec<(String, String)>, JobError> {
        match self {
            Storage::S3(s) => s.delete(keys).await,
            Storage::Local(l) => l.delete(keys).await,
        }
    }

    /// Multipart uploads left open under `prefix` (S3 only; a local
    /// directory has none: its temp files are never ours to judge).
    pub async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, JobError> {
        match self {
            Storage::S3(s) => s.pending_uploads(prefix).await,
            Storage::Local(_) => Ok(Vec::new()),
        }
    }

    pub async fn abort_pending(&self, upload: &PendingUpload) -> Result<(), JobError> {
        match self {
            Storage::S3(s) => s.abort_pending(upload).await,
            Storage::Local(_) => Ok(()),
        }
    }

    pub async fn head(&self, key: &str) -> Result<ObjectMeta, JobError> {
        match self {
            Storage::S3(s) => s.head(key).await,
            Storage::Local(l) => l.head(key).await,
        }
    }

    pub async fn get(&self, key: &str) -> Result<ObjectReader, JobError> {
        match self {
            Storage::S3(s) => s.get(key).await,
            Storage::Local(l) => l.get(key).await,
        }
    }
}

/// An object being written.
pub enum Writer {
    S3(s3::S3Writer),
    Local(local::LocalWriter),
}

impl Writer {
    pub async fn write_part(&mut self, part: Bytes) -> Result<(), JobError> {
        match self {
            Writer::S3(w) => w.write_part(part).await,
            Writer::Local(w) => w.write_part(part).await,
        }
    }

    /// Makes the object visible under its name, with its metadata.
    pub async fn commit(self, meta: &ObjectMeta) -> Result<(), JobError> {
        match self {
            Writer::S3(w) => w.commit(meta).await,
            Writer::Local(w) => w.commit(meta).await,
        }
    }

    /// Removes every trace of the object. Best effort; failures are logged.
    pub async fn abort(self) {
        match self {
            Writer::S3(w) => w.abort().await,
            Writer::Local(w) => w.abort().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_large_enough_and_10000_hold_a_tebibyte() {
        let mut total: u64 = 0;
        for i in 0..MAX_PARTS {
            let p = part_size(i);
            assert!((MIN_PART..=MAX_PART).contains(&p));
            assert!(i == 0 || p >= part_size(i - 1), "never shrinks");
            total += p as u64;
        }
        assert!(total >= 1 << 40, "10,000 parts hold only {total} bytes");
        // Dumps of a few GB stay on 8 MiB parts, so memory stays flat.
        assert_eq!(part_size(0), 8 << 20);
        assert_eq!(part_size(999), 8 << 20);
        assert_eq!(part_size(1000), 16 << 20);
        assert_eq!(part_size(u32::MAX), MAX_PART);
    }

    #[test]
    fn a_one_tebibyte_stream_fits_in_the_part_limit() {
        // Walk a 1 TiB stream through the sizing as the uploader would.
        let mut left: u64 = 1 << 40;
        let mut parts = 0u32;
        while left > 0 {
            left = left.saturating_sub(part_size(parts) as u64);
            parts += 1;
        }
        assert!(parts <= MAX_PARTS, "{parts} parts");
    }
}
