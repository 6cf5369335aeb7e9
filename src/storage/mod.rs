//! Where backups live, behind one trait: S3-compatible object storage, a
//! local directory, or memory (tests). Callers hold a `dyn ObjectStore` and
//! never ask which one it is.
//!
//! A writer takes a stream of parts and makes the object visible under its
//! name only on `commit`, which the job calls after pg_dump exited 0, and
//! never over an existing object. Anything else ends in `abort`: no partial
//! object, no pending upload. Errors are [`StoreError`]s: not found,
//! already exists, transient, permanent or missing credentials, each with
//! its source; the caller attaches its own stage.

pub mod conformance;
pub mod faulty;
pub mod local;
pub mod memory;
pub mod s3;

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;

use crate::config::StorageConfig;

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

/// What travels with each stored object (S3 user metadata; sidecar locally).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Hex sha256 of the stored bytes; empty: the object carries none.
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
type Source = Arc<dyn StdError + Send + Sync + 'static>;

/// A storage failure. The message is one line naming the operation and the
/// object; the source is the SDK or I/O error it came from.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The object does not exist.
    NotFound {
        message: String,
        source: Option<Source>,
    },
    /// A commit found its name taken; the existing object is untouched.
    AlreadyExists {
        message: String,
        source: Option<Source>,
    },
    /// May succeed if tried again: network, 5xx, throttling, timeouts.
    Transient {
        message: String,
        source: Option<Source>,
    },
    /// Will fail again: permissions, missing bucket, full disk.
    Permanent {
        message: String,
        source: Option<Source>,
    },
    /// No credentials at all: a configuration problem, not a service one.
    Credentials {
        message: String,
        source: Option<Source>,
    },
}

impl StoreError {
    fn parts(&self) -> (&str, &Option<Source>) {
        match self {
            StoreError::NotFound { message, source }
            | StoreError::AlreadyExists { message, source }
            | StoreError::Transient { message, source }
            | StoreError::Permanent { message, source }
            | StoreError::Credentials { message, source } => (message, source),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        StoreError::NotFound {
            message: message.into(),
            source: None,
        }
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        StoreError::AlreadyExists {
            message: message.into(),
            source: None,
        }
    }

    pub fn transient(
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        StoreError::Transient {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    pub fn permanent(
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        StoreError::Permanent {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// A permanent failure with nothing underneath (a bad reply, a bad name).
    pub fn invalid(message: impl Into<String>) -> Self {
        StoreError::Permanent {
            message: message.into(),
            source: None,
        }
    }

    pub fn credentials(message: impl Into<String>) -> Self {
        StoreError::Credentials {
            message: message.into(),
            source: None,
        }
    }

    /// From an I/O error: its kind decides which variant.
    pub fn io(message: impl Into<String>, e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let message = message.into();
        let source: Option<Source> = Some(Arc::new(e));
        let kind = source
            .as_ref()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .map(|e| e.kind());
        match kind {
            Some(K::NotFound) => StoreError::NotFound { message, source },
            Some(K::AlreadyExists) => StoreError::AlreadyExists { message, source },
            Some(
                K::Interrupted
                | K::TimedOut
                | K::WouldBlock
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::BrokenPipe
                | K::UnexpectedEof,
            ) => StoreError::Transient { message, source },
            _ => StoreError::Permanent { message, source },
        }
    }

    pub fn message(&self) -> &str {
        self.parts().0
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    pub fn is_already_exists(&self) -> bool {
        matches!(self, StoreError::AlreadyExists { .. })
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient { .. })
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.parts().0)
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.parts()
            .1
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl crate::error::Classified for StoreError {
    fn kind(&self) -> crate::error::Kind {
        use crate::error::Kind;
        match self {
            StoreError::Transient { .. } => Kind::Transient,
            StoreError::Credentials { .. } => Kind::Config,
            StoreError::NotFound { .. }
            | StoreError::AlreadyExists { .. }
            | StoreError::Permanent { .. } => Kind::Permanent,
        }
    }

    fn stage(&self) -> Option<crate::error::Stage> {
        match self {
            StoreError::Credentials { .. } => Some(crate::error::Stage::Credentials),
            _ => None,
        }
    }
}

/// What a presign gives: a URL anyone can GET, or a path on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presigned {
    Url(String),
    Path(std::path::PathBuf),
}

/// The contract every store keeps; [`conformance`] proves it.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// `s3://bucket` or the directory, for messages.
    fn describe(&self) -> String;

    /// Where the sha256 of an object lives, for messages.
    fn checksum_place(&self) -> &'static str;

    /// Starts writing `key`; nothing is visible under it until `commit`.
    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError>;

    /// Every object whose key starts with `prefix`, all pages, by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;

    /// An object's metadata; `NotFound` when it does not exist.
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError>;

    /// An object's bytes; `NotFound` when it does not exist.
    async fn get(&self, key: &str) -> Result<ObjectReader, StoreError>;

    /// An object's metadata and bytes. Two requests unless the store
    /// answers both in one (S3's GetObject does): WAL is read this way, a
    /// segment at a time.
    async fn get_with_meta(&self, key: &str) -> Result<(ObjectMeta, ObjectReader), StoreError> {
        let meta = self.head(key).await?;
        Ok((meta, self.get(key).await?))
    }

    /// Deletes keys (and what travels with them); a missing key is not an
    /// error. Returns the keys that could not be deleted, with why.
    async fn delete(&self, keys: &[String]) -> Result<Vec<(String, String)>, StoreError>;

    /// Uploads left open under `prefix` (only stores that have them).
    async fn pending_uploads(&self, _prefix: &str) -> Result<Vec<PendingUpload>, StoreError> {
        Ok(Vec::new())
    }

    /// Aborts one pending upload, once (the caller decides about retrying).
    async fn abort_pending(&self, _upload: &PendingUpload) -> Result<(), StoreError> {
        Ok(())
    }

    /// A way to GET `key` without pgbackup for `expires`.
    async fn presign(&self, key: &str, expires: Duration) -> Result<Presigned, StoreError>;

    /// Whether a delete of `key` that failed with `reason` was refused
    /// because the object is still locked (S3 Object Lock, R2 bucket locks):
    /// Some(what holds it), and retention counts it as kept, not failed.
    /// Stores without locks say None.
    async fn locked(&self, _key: &str, _reason: &str) -> Option<String> {
        None
    }

    /// Checks that the store can be reached with the credentials at hand,
    /// before any work (`check`, start-up).
    async fn probe_credentials(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// A small object in one call, committed like any other.
    async fn put(&self, key: &str, body: Bytes, meta: &ObjectMeta) -> Result<(), StoreError> {
        let mut w = self.create(key).await?;
        if let Err(e) = w.write_part(body).await {
            w.abort().await;
            return Err(e);
        }
        w.commit(meta).await
    }
}

/// An object being written.
#[async_trait]
pub trait ObjectWriter: Send {
    async fn write_part(&mut self, part: Bytes) -> Result<(), StoreError>;

    /// Makes the object visible under its name, with its metadata. Fails
    /// with `AlreadyExists`, leaving the existing object alone, when the
    /// name is taken. On any error nothing of this object is left.
    async fn commit(self: Box<Self>, meta: &ObjectMeta) -> Result<(), StoreError>;

    /// Removes every trace of the object. Best effort; failures are logged.
    async fn abort(self: Box<Self>);
}

/// The store a configuration names.
pub async fn open(cfg: &StorageConfig) -> Arc<dyn ObjectStore> {
    match cfg {
        StorageConfig::S3 {
            bucket,
            endpoint,
            region,
            force_path_style,
            credentials,
            object_lock,
        } => Arc::new(
            s3::S3Storage::new(
                bucket,
                endpoint.as_deref(),
                region,
                *force_path_style,
                credentials.as_ref().map(|(id, secret, token)| {
                    (
                        id.expose(),
                        secret.expose(),
                        token.as_ref().map(|t| t.expose()),
                    )
                }),
            )
            .await
            .with_object_lock(*object_lock),
        ),
        StorageConfig::Local { dir } => Arc::new(local::LocalStorage::new(dir)),
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
