//! A store wrapped with faults, for unit tests of failure paths that would
//! otherwise need a TCP proxy: fail the Nth call of an operation, slow every
//! call down, or cut reads mid-stream.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};

use super::{
    ObjectInfo, ObjectMeta, ObjectReader, ObjectStore, ObjectWriter, PendingUpload, Presigned,
    StoreError,
};

/// The operations a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Create,
    WritePart,
    Commit,
    List,
    Head,
    Get,
    Delete,
    PendingUploads,
    AbortPending,
    Presign,
}

#[derive(Default)]
struct Plan {
    calls: BTreeMap<Op, usize>,
    /// (op, nth call, 1-based) -> transient?
    fail: BTreeMap<(Op, usize), bool>,
    /// Every call of these ops fails until healed.
    down: BTreeMap<Op, bool>,
    delay: Option<Duration>,
    cut_reads_after: Option<u64>,
    /// Calls under way, and the most there ever were at once.
    in_flight: BTreeMap<Op, usize>,
    max_in_flight: BTreeMap<Op, usize>,
}

/// Wraps `S`; faults are set on the shared plan, also while in use.
#[derive(Clone)]
pub struct Faulty<S> {
    inner: S,
    plan: Arc<Mutex<Plan>>,
}

impl<S: ObjectStore> Faulty<S> {
    pub fn new(inner: S) -> Self {
        Faulty {
            inner,
            plan: Arc::default(),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The `nth` call (1-based, counted from now on) of `op` fails.
    pub fn fail_nth(&self, op: Op, nth: usize, transient: bool) -> &Self {
        let mut p = self.lock();
        let base = p.calls.get(&op).copied().unwrap_or(0);
        p.fail.insert((op, base + nth), transient);
        self
    }

    /// Every call of `op` fails until [`Faulty::heal`].
    pub fn fail_always(&self, op: Op, transient: bool) -> &Self {
        self.lock().down.insert(op, transient);
        self
    }

    /// Every call waits this long first (paused time makes it free).
    pub fn delay(&self, d: Duration) -> &Self {
        self.lock().delay = Some(d);
        self
    }

    /// Reads from `get` fail after this many bytes, as a dropped connection.
    pub fn cut_reads_after(&self, bytes: u64) -> &Self {
        self.lock().cut_reads_after = Some(bytes);
        self
    }

    /// Removes every fault.
    pub fn heal(&self) {
        let mut p = self.lock();
        p.fail.clear();
        p.down.clear();
        p.delay = None;
        p.cut_reads_after = None;
    }

    /// The most calls of `op` that were ever under way at once.
    pub fn max_in_flight(&self, op: Op) -> usize {
        self.lock().max_in_flight.get(&op).copied().unwrap_or(0)
    }

    /// How often `op` was called.
    pub fn calls(&self, op: Op) -> usize {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a call of `op`, waits, and fails it if planned. The guard
    /// marks the call under way until the caller drops it.
    async fn enter(&self, op: Op) -> Result<Call<'_>, StoreError> {
        let (delay, fault) = {
            let mut p = self.lock();
            let n = {
                let c = p.calls.entry(op).or_insert(0);
                *c += 1;
                *c
            };
            let now = {
                let f = p.in_flight.entry(op).or_insert(0);
                *f += 1;
                *f
            };
            let most = p.max_in_flight.entry(op).or_insert(0);
            *most = (*most).max(now);
            let fault = p.fail.remove(&(op, n)).or(p.down.get(&op).copied());
            (p.delay, fault)
        };
        let call = Call {
            plan: &self.plan,
            op,
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        match fault {
            None => Ok(call),
            Some(transient) => Err(injected(op, transient)),
        }
    }
}

struct Call<'a> {
    plan: &'a Mutex<Plan>,
    op: Op,
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        let mut p = self.plan.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = p.in_flight.get_mut(&self.op) {
            *f = f.saturating_sub(1);
        }
    }
}

fn injected(op: Op, transient: bool) -> StoreError {
    let e = std::io::Error::other(format!("injected fault in {op:?}"));
    if transient {
        StoreError::transient(format!("{op:?}: injected transient fault"), e)
    } else {
        StoreError::permanent(format!("{op:?}: injected permanent fault"), e)
    }
}

#[async_trait]
impl<S: ObjectStore + Clone + 'static> ObjectStore for Faulty<S> {
    fn describe(&self) -> String {
        format!("faulty {}", self.inner.describe())
    }

    fn checksum_place(&self) -> &'static str {
        self.inner.checksum_place()
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        let _call = self.enter(Op::Create).await?;
        let inner = self.inner.create(key).await?;
        Ok(Box::new(FaultyWriter {
            store: Faulty {
                inner: self.inner.clone(),
                plan: self.plan.clone(),
            },
            inner,
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let _call = self.enter(Op::List).await?;
        self.inner.list(prefix).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let _call = self.enter(Op::Head).await?;
        self.inner.head(key).await
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let call = self.enter(Op::Get).await?;
        let r = self.inner.get(key).await?;
        drop(call);
        Ok(match self.lock().cut_reads_after {
            Some(left) => Box::new(CutReader { inner: r, left }),
            None => r,
        })
    }

    async fn delete(&self, keys: &[String]) -> Result<Vec<(String, String)>, StoreError> {
        let _call = self.enter(Op::Delete).await?;
        self.inner.delete(keys).await
    }

    async fn locked(&self, key: &str, reason: &str) -> Option<String> {
        self.inner.locked(key, reason).await
    }

    async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, StoreError> {
        let _call = self.enter(Op::PendingUploads).await?;
        self.inner.pending_uploads(prefix).await
    }

    async fn abort_pending(&self, upload: &PendingUpload) -> Result<(), StoreError> {
        let _call = self.enter(Op::AbortPending).await?;
        self.inner.abort_pending(upload).await
    }

    async fn presign(&self, key: &str, expires: Duration) -> Result<Presigned, StoreError> {
        let _call = self.enter(Op::Presign).await?;
        self.inner.presign(key, expires).await
    }
}

struct FaultyWriter<S> {
    store: Faulty<S>,
    inner: Box<dyn ObjectWriter>,
}

#[async_trait]
impl<S: ObjectStore> ObjectWriter for FaultyWriter<S> {
    async fn write_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        let _call = self.store.enter(Op::WritePart).await?;
        self.inner.write_part(part).await
    }

    async fn commit(self: Box<Self>, meta: &ObjectMeta) -> Result<(), StoreError> {
        if let Err(e) = self.store.enter(Op::Commit).await.map(drop) {
            // A failed commit leaves nothing, as the real stores promise.
            self.inner.abort().await;
            return Err(e);
        }
        self.inner.commit(meta).await
    }

    async fn abort(self: Box<Self>) {
        self.inner.abort().await
    }
}

/// Fails with ConnectionReset once `left` bytes have been read.
struct CutReader {
    inner: ObjectReader,
    left: u64,
}

impl AsyncRead for CutReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected: connection cut mid-stream",
            )));
        }
        let want = buf.remaining().min(self.left as usize);
        let mut limited = buf.take(want);
        let before = limited.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, &mut limited) {
            Poll::Ready(Ok(())) => {
                let n = limited.filled().len() - before;
                // SAFETY: `limited` is a view into `buf`'s unfilled part; the
                // inner reader initialized and filled these `n` bytes.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                self.left -= n as u64;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_nth_call_fails_then_calls_succeed_again() {
        let s = Faulty::new(MemoryStore::new());
        s.fail_nth(Op::List, 2, true);
        assert!(s.list("").await.is_ok());
        let e = s.list("").await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(s.list("").await.is_ok());
        assert_eq!(s.calls(Op::List), 3);
    }

    #[tokio::test]
    async fn a_failed_commit_leaves_no_object_and_no_pending_upload() {
        let s = Faulty::new(MemoryStore::new());
        s.fail_always(Op::Commit, false);
        let mut w = s.create("k").await.unwrap();
        w.write_part(Bytes::from_static(b"x")).await.unwrap();
        assert!(w.commit(&ObjectMeta::default()).await.is_err());
        assert!(s.inner().keys().is_empty());
        assert!(s.pending_uploads("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn reads_are_cut_mid_stream() {
        let s = Faulty::new(MemoryStore::new());
        s.inner().insert(
            "k",
            vec![7u8; 10_000],
            ObjectMeta::default(),
            chrono::Utc::now(),
        );
        s.cut_reads_after(4096);
        let mut r = s.get("k").await.unwrap();
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
        assert_eq!(out.len(), 4096);
    }

    #[tokio::test(start_paused = true)]
    async fn delays_follow_the_clock() {
        let s = Faulty::new(MemoryStore::new());
        s.delay(Duration::from_secs(30));
        let t0 = tokio::time::Instant::now();
        s.list("").await.unwrap();
        assert!(t0.elapsed() >= Duration::from_secs(30));
    }
}
