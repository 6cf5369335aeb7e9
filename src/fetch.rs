//! Reading a stored backup back: download -> sha256 -> [decryption ->]
//! decompression -> a sink (pg_restore, psql, a spool file, or a scanner), on a blocking thread
//! with bounded memory, nothing on disk.
//!
//! The sha256 is known only when the last stored byte was read, so every
//! sink has a last step, [`Sink::finish`], taken only after the checksum
//! matched: releasing the tail that pg_restore needs to commit, or sending
//! psql the COMMIT. A sink dropped without it never commits.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};
use tokio_util::io::SyncIoBridge;

use std::sync::Arc;

use crate::catalog::Backup;
use crate::crypto::{self, Identities, OpenError};
use crate::error::{JobError, Kind, Stage};
use crate::storage::{ObjectReader, ObjectStore};

/// After the sink failed (pg_restore exited, say) the rest of the object is
/// still read to tell corruption from other causes, but only this much of it.
pub const DRAIN_LIMIT: u64 = 256 << 20;

/// A stored backup and what its metadata promises.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: String,
    pub compression: &'static str,
    /// Hex sha256 of the stored bytes; None when the object carries none.
    pub sha256: Option<String>,
    pub stored_bytes: Option<u64>,
    pub dump_bytes: Option<u64>,
    /// Major version of the pg_dump that wrote it.
    pub dump_major: Option<u32>,
    /// Encrypted with age (its name ends in `.age`).
    pub encrypted: bool,
    /// What decrypts it; an encrypted object without one can only be hashed.
    pub identity: Option<Arc<Identities>>,
}

impl Stored {
    /// Encrypted, and no identity to look inside: only its stored bytes
    /// can be checked.
    pub fn sealed(&self) -> bool {
        self.encrypted && self.identity.is_none()
    }

    /// Fails, as a configuration error, when the caller must look inside
    /// and cannot: before any work starts.
    pub fn need_identity(&self, stage: Stage, what: &str) -> Result<(), JobError> {
        if self.sealed() {
            return Err(JobError::config(
                stage,
                crypto::identity_needed(&self.key, what),
            ));
        }
        Ok(())
    }
}

/// Reads a backup's metadata (S3 user metadata, or the local sidecar).
/// An encrypted backup's age header is read too when there is an
/// identity, so a wrong key fails here, before any work starts.
pub async fn stored(
    storage: &dyn ObjectStore,
    b: &Backup,
    identity: Option<&Arc<Identities>>,
    stage: Stage,
) -> Result<Stored, JobError> {
    let meta = storage
        .head(&b.key)
        .await
        .map_err(|e| JobError::storage(stage, e))?;
    let num = |k: &str| meta.extra.get(k).and_then(|v| v.trim().parse::<u64>().ok());
    let sha = meta.sha256.trim().to_ascii_lowercase();
    let identity = identity.filter(|_| b.encrypted).cloned();
    if let Some(ids) = &identity {
        check_identity(storage, &b.key, ids, stage).await?;
    }
    Ok(Stored {
        key: b.key.clone(),
        compression: b.compression,
        sha256: (sha.len() == 64 && sha.bytes().all(|c| c.is_ascii_hexdigit())).then_some(sha),
        stored_bytes: num("stored-bytes").or(Some(b.size)),
        dump_bytes: num("dump-bytes"),
        dump_major: num("pg-dump-version").map(|v| v as u32),
        encrypted: b.encrypted,
        identity,
    })
}

/// Reads the head of `key` and unwraps its file key with `ids`.
async fn check_identity(
    storage: &dyn ObjectStore,
    key: &str,
    ids: &Arc<Identities>,
    stage: Stage,
) -> Result<(), JobError> {
    // The header is a few hundred bytes per recipient.
    const HEAD: u64 = 64 * 1024;
    let reader = open(storage, key, stage).await?;
    let ids = ids.clone();
    let key = key.to_string();
    let head = tokio::task::spawn_blocking(move || {
        let r = io::BufReader::new(SyncIoBridge::new(reader).take(HEAD));
        ids.decrypt(r).map(drop).map_err(|e| match e {
            OpenError::Io(e) => {
                JobError::transient(stage, format!("reading the age header of {key}: {e}"))
            }
            e @ OpenError::WrongIdentity(_) => {
                JobError::config(stage, format!("cannot decrypt {key}: {e}"))
            }
            e => JobError::permanent(stage, format!("cannot decrypt {key}: {e}")),
        })
    });
    head.await
        .map_err(|e| JobError::permanent(stage, format!("reading the age header: {e}")))?
}

/// What streaming a backup measured.
#[derive(Debug, Clone)]
pub struct Streamed {
    pub stored_bytes: u64,
    pub dump_bytes: u64,
    pub sha256: String,
    /// The object carried a sha256 and it matched.
    pub checksum_verified: bool,
    /// The content was read (decrypted and decompressed), not only hashed.
    pub looked_inside: bool,
}

/// Why streaming failed.
#[derive(Debug)]
pub enum Failure {
    /// Storage, checksum, decompression or a rejected stream: the message is final.
    Job(JobError),
    /// Writing into the sink failed (the tool at its other end exited): its
    /// own exit status and stderr say why, so the caller words the error.
    Sink(io::Error),
}

/// The end of a stream: [`Sink::finish`] runs only after the verdict was good.
pub trait Sink: Write + Send + 'static {
    fn finish(&mut self) -> io::Result<()>;
}

impl Sink for io::Sink {
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Sink for io::BufWriter<W> {
    fn finish(&mut self) -> io::Result<()> {
        self.flush()
    }
}

impl<W: Write + Send + 'static> Sink for crate::seekable::OffsetRecorder<W> {
    fn finish(&mut self) -> io::Result<()> {
        self.flush()
    }
}

impl<W: Write + Send + 'static> Sink for crate::archive::HoldBack<W> {
    fn finish(&mut self) -> io::Result<()> {
        self.release()
    }
}

/// How a stream is judged.
pub struct Options<S> {
    pub stage: Stage,
    /// How far to read on after a sink or decompression failure.
    pub drain_limit: u64,
    /// A last check of the sink before it is finished (e.g. the plain dump's
    /// completion marker); Some(reason) rejects the stream.
    pub accept: fn(&S) -> Option<String>,
}

/// Opens the object for reading.
pub async fn open(
    storage: &dyn ObjectStore,
    key: &str,
    stage: Stage,
) -> Result<ObjectReader, JobError> {
    storage
        .get(key)
        .await
        .map_err(|e| JobError::storage(stage, e))
}

/// Streams `reader` into `sink` and judges the result. The sink comes back
/// (unless the thread panicked) so the caller decides when its far end sees
/// EOF: after killing the tool, when the stream failed.
pub async fn pump<S: Sink>(
    reader: ObjectReader,
    stored: &Stored,
    sink: S,
    opts: Options<S>,
) -> (Result<Streamed, Failure>, Option<S>) {
    let raw = SyncIoBridge::new(reader);
    let stored = stored.clone();
    let stage = opts.stage;
    let handle = tokio::task::spawn_blocking(move || {
        let mut sink = sink;
        let r = pump_blocking(raw, &stored, &mut sink, &opts);
        (r, sink)
    });
    match handle.await {
        Ok((r, sink)) => (r, Some(sink)),
        // The unwinding dropped the sink unfinished: its far end never commits.
        Err(e) => (
            Err(Failure::Job(JobError::permanent(
                stage,
                format!("stream thread failed: {e}"),
            ))),
            None,
        ),
    }
}

/// Drops a sink on a blocking thread: a BufWriter flushes on drop, and a
/// flush through SyncIoBridge must not run on the async runtime.
pub async fn drop_sink<S: Send + 'static>(sink: Option<S>) {
    if let Some(s) = sink {
        let _ = tokio::task::spawn_blocking(move || drop(s)).await;
    }
}

/// Counts and hashes every stored byte read, whoever reads it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
    failed: bool,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hash.update(&buf[..n]);
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
}

/// The reading side of the stored bytes: decryption when the object is
/// encrypted and can be opened, then decompression. A sealed object (no
/// identity) is passed through as it is stored: only hashed.
fn decoder<'a, R: Read + 'a>(
    raw: &'a mut Hashing<R>,
    stored: &Stored,
) -> Result<Box<dyn Read + 'a>, String> {
    if stored.sealed() {
        return Ok(Box::new(raw));
    }
    let plain: Box<dyn Read + 'a> = match &stored.identity {
        Some(ids) if stored.encrypted => {
            let buffered = io::BufReader::with_capacity(256 * 1024, raw);
            Box::new(
                ids.decrypt(buffered)
                    .map_err(|e| format!("cannot decrypt {}: {e}", stored.key))?,
            )
        }
        _ => Box::new(raw),
    };
    Ok(match stored.compression {
        "zstd" => Box::new(
            zstd::stream::read::Decoder::new(plain).map_err(|e| format!("zstd decoder: {e}"))?,
        ),
        "gzip" => Box::new(flate2::read::GzDecoder::new(plain)),
        _ => plain,
    })
}

enum First {
    Decompress(io::Error),
    Sink(io::Error),
}

fn pump_blocking<R: Read, S: Sink>(
    raw: R,
    stored: &Stored,
    sink: &mut S,
    opts: &Options<S>,
) -> Result<Streamed, Failure> {
    let stage = opts.stage;
    let key = &stored.key;
    let read_err = |bytes: u64, e: &io::Error| {
        Failure::Job(JobError::new(
            stage,
            Kind::Transient,
            format!("reading {key} from storage failed after {bytes} bytes: {e}"),
        ))
    };
    let mut raw = Hashing {
        inner: raw,
        hash: Sha256::new(),
        bytes: 0,
        failed: false,
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut dump_bytes = 0u64;
    let mut first = None;
    {
        // Layers above `raw` may read ahead; what they hold was hashed
        // already, so the drain below continues from `raw` itself.
        let mut dec = match decoder(&mut raw, stored) {
            Ok(d) => d,
            Err(m) => return Err(Failure::Job(JobError::permanent(stage, m))),
        };
        loop {
            let n = match dec.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    first = Some(First::Decompress(e));
                    break;
                }
            };
            dump_bytes += n as u64;
            if let Err(e) = sink.write_all(&buf[..n]) {
                first = Some(First::Sink(e));
                break;
            }
        }
    }
    if raw.failed {
        let e = match first {
            Some(First::Decompress(e)) => e,
            _ => io::Error::other("the download broke off"),
        };
        return Err(read_err(raw.bytes, &e));
    }
    // Read what the decoder left (trailing bytes, or the rest after a
    // failure) so the checksum covers the whole object.
    let limit = if first.is_some() {
        opts.drain_limit
    } else {
        u64::MAX
    };
    let mut drained = 0u64;
    let whole = loop {
        if drained >= limit {
            break false;
        }
        let want = buf
            .len()
            .min((limit - drained).min(usize::MAX as u64) as usize);
        match raw.read(&mut buf[..want]) {
            Ok(0) => break true,
            Ok(n) => drained += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(raw.bytes, &e)),
        }
    };
    let stored_bytes = raw.bytes;
    let sha256 = hex::encode(std::mem::take(&mut raw.hash).finalize());
    if whole {
        if let Some(want) = &stored.sha256 {
            if *want != sha256 {
                let dumped = match stored.dump_bytes {
                    Some(d) if dump_bytes < d => {
                        format!(", decompressed {dump_bytes} of the dump's {d} bytes: truncated")
                    }
                    _ => String::new(),
                };
                return Err(Failure::Job(JobError::permanent(
                    stage,
                    format!(
                        "checksum mismatch on {key}: stored sha256 {}, read {} over {stored_bytes} bytes{dumped}; the object is corrupt or truncated",
                        short(want),
                        short(&sha256)
                    ),
                )));
            }
        }
    }
    let not_checked = if whole {
        ""
    } else {
        " (checksum not checked: stopped reading early)"
    };
    match first {
        Some(First::Decompress(e)) => {
            let what = if stored.encrypted {
                format!("age decryption or {} decompression", stored.compression)
            } else {
                format!("{} decompression", stored.compression)
            };
            return Err(Failure::Job(JobError::permanent(
                stage,
                format!("{what} of {key} failed after {dump_bytes} bytes: {e}{not_checked}"),
            )));
        }
        Some(First::Sink(e)) => return Err(Failure::Sink(e)),
        None => {}
    }
    if stored.sha256.is_none() && !stored.sealed() {
        if let Some(d) = stored.dump_bytes {
            if d != dump_bytes {
                return Err(Failure::Job(JobError::permanent(
                    stage,
                    format!("{key} decompressed to {dump_bytes} bytes but the dump had {d}: corrupt or truncated"),
                )));
            }
        }
    }
    if let Some(why) = (opts.accept)(sink) {
        return Err(Failure::Job(JobError::permanent(
            stage,
            format!("{key}: {why}"),
        )));
    }
    sink.finish().map_err(Failure::Sink)?;
    Ok(Streamed {
        stored_bytes,
        dump_bytes,
        sha256,
        checksum_verified: stored.sha256.is_some(),
        looked_inside: !stored.sealed(),
    })
}

/// Enough of a hash to tell two apart in a message.
fn short(h: &str) -> &str {
    &h[..h.len().min(16)]
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(Vec<u8>, bool);
    impl Write for Collect {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Sink for Collect {
        fn finish(&mut self) -> io::Result<()> {
            self.1 = true;
            Ok(())
        }
    }

    fn stored_for(data: &[u8], compression: &'static str, dump: u64) -> Stored {
        Stored {
            key: "k".into(),
            compression,
            sha256: Some(hex::encode(Sha256::digest(data))),
            stored_bytes: Some(data.len() as u64),
            dump_bytes: Some(dump),
            dump_major: Some(15),
            encrypted: false,
            identity: None,
        }
    }

    fn run(data: &[u8], stored: &Stored) -> (Result<Streamed, Failure>, Collect) {
        let mut sink = Collect(Vec::new(), false);
        let opts = Options {
            stage: Stage::Verify,
            drain_limit: DRAIN_LIMIT,
            accept: |_: &Collect| None,
        };
        let r = pump_blocking(data, stored, &mut sink, &opts);
        (r, sink)
    }

    fn msg(r: Result<Streamed, Failure>) -> String {
        match r {
            Err(Failure::Job(e)) => e.to_string(),
            Err(Failure::Sink(e)) => format!("sink: {e}"),
            Ok(_) => "ok".into(),
        }
    }

    #[test]
    fn good_streams_finish_and_bad_ones_do_not() {
        let dump: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let zst = zstd::encode_all(&dump[..], 3).unwrap();
        let (r, sink) = run(&zst, &stored_for(&zst, "zstd", dump.len() as u64));
        let s = r.map_err(|_| ()).unwrap();
        assert!(sink.1 && sink.0 == dump && s.checksum_verified);

        // A flipped byte: the checksum names it, whatever the decoder made of it.
        let mut bad = zst.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        let (r, sink) = run(&bad, &stored_for(&zst, "zstd", dump.len() as u64));
        assert!(msg(r).starts_with("verify failed: checksum mismatch on k"));
        assert!(!sink.1, "never finished");

        // Truncated: named as such.
        let cut = &zst[..zst.len() * 2 / 3];
        let (r, sink) = run(cut, &stored_for(&zst, "zstd", dump.len() as u64));
        let m = msg(r);
        assert!(
            m.contains("checksum mismatch") && m.contains("truncated"),
            "{m}"
        );
        assert!(!sink.1);

        // Trailing bytes after a gzip member are still part of the checksum.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&dump).unwrap();
        let gz = gz.finish().unwrap();
        let mut longer = gz.clone();
        longer.extend_from_slice(b"junk");
        let (r, _) = run(&longer, &stored_for(&gz, "gzip", dump.len() as u64));
        assert!(msg(r).contains("checksum mismatch"));
        let (r, _) = run(&gz, &stored_for(&gz, "gzip", dump.len() as u64));
        assert_eq!(msg(r), "ok");
    }

    #[test]
    fn encrypted_streams_decrypt_or_pass_through_sealed() {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        let r = crypto::Recipients::parse("V", &id.to_public().to_string()).unwrap();
        let path = std::env::temp_dir().join(format!("pgbackup-fetch-id-{}", std::process::id()));
        std::fs::write(&path, id.to_string().expose_secret()).unwrap();
        let ids = Arc::new(Identities::from_file("V", &path).unwrap());
        std::fs::remove_file(&path).unwrap();

        let dump: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let sealed = r
            .encrypt_bytes(&zstd::encode_all(&dump[..], 3).unwrap())
            .unwrap();
        let mut st = stored_for(&sealed, "zstd", dump.len() as u64);
        st.encrypted = true;
        st.identity = Some(ids);
        let (res, sink) = run(&sealed, &st);
        let s = res.map_err(|_| ()).unwrap();
        assert!(sink.0 == dump && s.looked_inside && s.checksum_verified);

        // A changed ciphertext byte: without a stored sha256 the age tag
        // still refuses it.
        let mut bad = sealed.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        st.sha256 = None;
        let (res, sink) = run(&bad, &st);
        let m = msg(res);
        assert!(m.contains("age decryption or zstd decompression"), "{m}");
        assert!(!sink.1);

        // No identity: only hashed, never decrypted.
        let mut st = stored_for(&sealed, "zstd", dump.len() as u64);
        st.encrypted = true;
        let (res, sink) = run(&sealed, &st);
        let s = res.map_err(|_| ()).unwrap();
        assert!(!s.looked_inside && s.checksum_verified && sink.0 == sealed);
        assert!(st
            .need_identity(Stage::Restore, "restoring it")
            .unwrap_err()
            .to_string()
            .contains("BACKUP_ENCRYPTION_IDENTITY_FILE"));
    }

    #[test]
    fn without_a_stored_checksum_the_dump_size_still_catches_truncation() {
        let dump = vec![7u8; 100_000];
        let mut s = stored_for(&dump, "none", dump.len() as u64);
        s.sha256 = None;
        let (r, _) = run(&dump[..50_000], &s);
        assert!(msg(r).contains("decompressed to 50000 bytes but the dump had 100000"));
        let (r, _) = run(&dump, &s);
        assert!(!r.map_err(|_| ()).unwrap().checksum_verified);
    }
}
