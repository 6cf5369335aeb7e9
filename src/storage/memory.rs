//! A store in memory, for unit tests of everything above storage: the job,
//! retention and the daemon run against it with no service. It keeps the
//! same contract as the real stores (the conformance suite runs on it),
//! including open uploads that show as pending until committed or aborted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};

use super::{
    ObjectInfo, ObjectMeta, ObjectReader, ObjectStore, ObjectWriter, PendingUpload, Presigned,
    StoreError,
};

#[derive(Debug, Clone)]
struct Stored {
    body: Bytes,
    meta: ObjectMeta,
    modified: DateTime<Utc>,
}

#[derive(Default)]
struct Inner {
    objects: BTreeMap<String, Stored>,
    /// upload id -> (key, started)
    open: BTreeMap<String, (String, DateTime<Utc>)>,
    /// Keys under an Object Lock retention, until when: deletes are refused
    /// the way S3 refuses them.
    locked: BTreeMap<String, DateTime<Utc>>,
}

#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    next_id: Arc<AtomicU64>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts an object as if an earlier run (or another tool) had written it
    /// at `modified`.
    pub fn insert(
        &self,
        key: &str,
        body: impl Into<Bytes>,
        meta: ObjectMeta,
        modified: DateTime<Utc>,
    ) {
        self.lock().objects.insert(
            key.to_string(),
            Stored {
                body: body.into(),
                meta,
                modified,
            },
        );
    }

    /// Locks `key` until `until`, as S3 Object Lock's retention would.
    pub fn lock_until(&self, key: &str, until: DateTime<Utc>) {
        self.lock().locked.insert(key.to_string(), until);
    }

    /// Every key held, in order.
    pub fn keys(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    /// An object's bytes, if held.
    pub fn bytes(&self, key: &str) -> Option<Bytes> {
        self.lock().objects.get(key).map(|o| o.body.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock has already failed.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_string()
    }

    fn checksum_place(&self) -> &'static str {
        "object metadata"
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        let id = format!("mem-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        self.lock()
            .open
            .insert(id.clone(), (key.to_string(), Utc::now()));
        Ok(Box::new(MemoryWriter {
            store: self.clone(),
            key: key.to_string(),
            id,
            body: BytesMut::new(),
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        Ok(self
            .lock()
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| ObjectInfo {
                key: k.clone(),
                size: o.body.len() as u64,
                last_modified: Some(o.modified),
            })
            .collect())
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let inner = self.lock();
        let o = inner
            .objects
            .get(key)
            .ok_or_else(|| StoreError::not_found(format!("{key}: no such object in memory")))?;
        let mut meta = o.meta.clone();
        meta.extra
            .insert("stored-bytes".into(), o.body.len().to_string());
        Ok(meta)
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let body = self
            .bytes(key)
            .ok_or_else(|| StoreError::not_found(format!("{key}: no such object in memory")))?;
        Ok(Box::new(std::io::Cursor::new(body)))
    }

    async fn delete(&self, keys: &[String]) -> Result<Vec<(String, String)>, StoreError> {
        let mut inner = self.lock();
        let mut failed = Vec::new();
        for k in keys {
            if inner.locked.get(k).is_some_and(|t| *t > Utc::now()) {
                failed.push((
                    k.clone(),
                    "AccessDenied: Access Denied because object protected by object lock."
                        .to_string(),
                ));
                continue;
            }
            inner.objects.remove(k);
        }
        Ok(failed)
    }

    async fn locked(&self, key: &str, _reason: &str) -> Option<String> {
        let until = *self.lock().locked.get(key)?;
        (until > Utc::now()).then(|| format!("locked until {}", until.to_rfc3339()))
    }

    async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, StoreError> {
        Ok(self
            .lock()
            .open
            .iter()
            .filter(|(_, (k, _))| k.starts_with(prefix))
            .map(|(id, (k, t))| PendingUpload {
                key: k.clone(),
                upload_id: id.clone(),
                initiated: Some(*t),
            })
            .collect())
    }

    async fn abort_pending(&self, upload: &PendingUpload) -> Result<(), StoreError> {
        self.lock().open.remove(&upload.upload_id);
        Ok(())
    }

    async fn presign(&self, key: &str, _expires: Duration) -> Result<Presigned, StoreError> {
        self.head(key).await?;
        Ok(Presigned::Url(format!("memory:///{key}")))
    }
}

struct MemoryWriter {
    store: MemoryStore,
    key: String,
    id: String,
    body: BytesMut,
}

#[async_trait]
impl ObjectWriter for MemoryWriter {
    async fn write_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        self.body.extend_from_slice(&part);
        Ok(())
    }

    async fn commit(self: Box<Self>, meta: &ObjectMeta) -> Result<(), StoreError> {
        let mut inner = self.store.lock();
        inner.open.remove(&self.id);
        if inner.objects.contains_key(&self.key) {
            return Err(StoreError::already_exists(format!(
                "{}: an object of that name exists in memory",
                self.key
            )));
        }
        inner.objects.insert(
            self.key.clone(),
            Stored {
                body: self.body.freeze(),
                meta: meta.clone(),
                modified: Utc::now(),
            },
        );
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        self.store.lock().open.remove(&self.id);
    }
}
