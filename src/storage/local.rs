//! Local directory storage: write under a temporary name in the same
//! directory, fsync, then link it into place, which fails rather than
//! replace an existing backup. A backup's name never holds a partial file.
//! The sha256 lives in a `<name>.sha256` sidecar in `sha256sum` format,
//! claimed exclusively and written before the backup appears, so
//! `sha256sum -c` works by hand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::fs;
use tokio::io::AsyncWriteExt;

use super::{
    ObjectInfo, ObjectMeta, ObjectReader, ObjectStore, ObjectWriter, Presigned, StoreError,
};
use crate::naming;

pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub fn new(root: &Path) -> Self {
        LocalStorage {
            root: root.to_path_buf(),
        }
    }

    pub fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

#[async_trait]
impl ObjectStore for LocalStorage {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn checksum_place(&self) -> &'static str {
        "sidecar .sha256"
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        let path = self.path_of(key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_err("creating", &dir, e))?;
        let base = file_name(&path).to_string();
        // Hidden, and not of the backup name shape: retention and list ignore it.
        let tmp = dir.join(format!(".{base}.{:016x}.partial", rand::random::<u64>()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
            .map_err(|e| io_err("creating", &tmp, e))?;
        Ok(Box::new(LocalWriter {
            file: Some(file),
            tmp,
            path,
            dir,
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        // Start in the prefix's own directory; nothing above it can match.
        let (sub, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let mut out = Vec::new();
        let mut dirs = vec![sub.to_string()];
        while let Some(rel) = dirs.pop() {
            let dir = self.root.join(&rel);
            let mut rd = match fs::read_dir(&dir).await {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("listing", &dir, e)),
            };
            while let Some(entry) = rd
                .next_entry()
                .await
                .map_err(|e| io_err("listing", &dir, e))?
            {
                let Some(name) = entry.file_name().to_str().map(String::from) else {
                    continue;
                };
                let key = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let Ok(md) = entry.metadata().await else {
                    continue;
                };
                if md.is_dir() {
                    // Descend only where keys can still start with the prefix.
                    let as_dir = format!("{key}/");
                    if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                        dirs.push(key);
                    }
                    continue;
                }
                // Temp files of writes in progress are not objects yet.
                let temp = key.rsplit('/').next().is_some_and(|n| n.starts_with('.'))
                    && key.ends_with(".partial");
                if !md.is_file() || !key.starts_with(prefix) || temp {
                    continue;
                }
                out.push(ObjectInfo {
                    key,
                    size: md.len(),
                    last_modified: md.modified().ok().map(DateTime::<Utc>::from),
                });
            }
        }
        // A sidecar travels with its object and is not one itself; a sidecar
        // whose object is gone is listed, as the foreign file it now is.
        let keys: std::collections::HashSet<String> = out.iter().map(|o| o.key.clone()).collect();
        out.retain(|o| {
            o.key
                .strip_suffix(naming::SIDECAR_SUFFIX)
                .is_none_or(|object| !keys.contains(object))
        });
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, keys: &[String]) -> Result<Vec<(String, String)>, StoreError> {
        let mut failed = Vec::new();
        for key in keys {
            let path = self.path_of(key);
            match fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    failed.push((key.clone(), e.to_string()));
                    continue;
                }
            }
            let _ = fs::remove_file(self.path_of(&naming::sidecar_name(key))).await;
        }
        Ok(failed)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let path = self.path_of(key);
        let md = fs::metadata(&path)
            .await
            .map_err(|e| io_err("reading", &path, e))?;
        let side = self.path_of(&naming::sidecar_name(key));
        let sha256 = match fs::read_to_string(&side).await {
            Ok(s) => s.split_whitespace().next().unwrap_or("").to_string(),
            Err(_) => String::new(),
        };
        let mut extra = BTreeMap::new();
        extra.insert("stored-bytes".to_string(), md.len().to_string());
        Ok(ObjectMeta { sha256, extra })
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let path = self.path_of(key);
        let f = fs::File::open(&path)
            .await
            .map_err(|e| io_err("opening", &path, e))?;
        Ok(Box::new(f))
    }

    async fn presign(&self, key: &str, _expires: Duration) -> Result<Presigned, StoreError> {
        let p = self.path_of(key);
        fs::metadata(&p)
            .await
            .map_err(|e| io_err("reading", &p, e))?;
        Ok(Presigned::Path(std::path::absolute(&p).unwrap_or(p)))
    }
}

struct LocalWriter {
    file: Option<fs::File>,
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
}

#[async_trait]
impl ObjectWriter for LocalWriter {
    async fn write_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        let Some(f) = self.file.as_mut() else {
            return Err(StoreError::invalid("write after commit"));
        };
        f.write_all(&part)
            .await
            .map_err(|e| io_err("writing", &self.tmp, e))
    }

    async fn commit(mut self: Box<Self>, meta: &ObjectMeta) -> Result<(), StoreError> {
        let res = self.finish(meta).await;
        // The temp name goes in every case: linked into place, or abandoned.
        let _ = fs::remove_file(&self.tmp).await;
        res
    }

    async fn abort(mut self: Box<Self>) {
        self.file.take();
        let _ = fs::remove_file(&self.tmp).await;
    }
}

impl LocalWriter {
    async fn finish(&mut self, meta: &ObjectMeta) -> Result<(), StoreError> {
        let Some(mut f) = self.file.take() else {
            return Err(StoreError::invalid("committed twice"));
        };
        f.flush()
            .await
            .map_err(|e| io_err("writing", &self.tmp, e))?;
        f.sync_all()
            .await
            .map_err(|e| io_err("syncing", &self.tmp, e))?;
        drop(f);
        let name = file_name(&self.path).to_string();
        let taken = || {
            StoreError::already_exists(format!(
                "{} exists: a backup is never replaced",
                self.path.display()
            ))
        };
        // Sidecar first, claimed exclusively: once the backup's name exists,
        // so does its checksum, and a losing run never touches the winner's.
        let side = self.dir.join(naming::sidecar_name(&name));
        let mut claimed_side = false;
        if !meta.sha256.is_empty() {
            match fs::try_exists(&self.path).await {
                Ok(true) => return Err(taken()),
                Ok(false) => {}
                Err(e) => return Err(io_err("reading", &self.path, e)),
            }
            let side_tmp = self.dir.join(format!(
                ".{name}.sha256.{:016x}.partial",
                rand::random::<u64>()
            ));
            let written =
                write_synced(&side_tmp, format!("{}  {name}\n", meta.sha256).as_bytes()).await;
            let linked = match written {
                Ok(()) => link_no_replace(&side_tmp, &side).await,
                Err(e) => Err(e),
            };
            let _ = fs::remove_file(&side_tmp).await;
            match linked {
                Ok(()) => claimed_side = true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(taken()),
                Err(e) => return Err(io_err("writing", &side, e)),
            }
        }
        if let Err(e) = link_no_replace(&self.tmp, &self.path).await {
            if claimed_side {
                let _ = fs::remove_file(&side).await;
            }
            return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                taken()
            } else {
                io_err("linking", &self.path, e)
            });
        }
        // Make the new names durable.
        if let Ok(d) = fs::File::open(&self.dir).await {
            let _ = d.sync_all().await;
        }
        Ok(())
    }
}

/// Gives `from` the name `to` unless `to` exists (AlreadyExists). A hard
/// link does that atomically; on file systems without hard links (some
/// network and FUSE mounts) it falls back to check-then-rename, which is
/// safe against runs on this host (they hold the prefix lock) only.
async fn link_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    match fs::hard_link(from, to).await {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
            ) =>
        {
            if fs::try_exists(to).await? {
                return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to).await
        }
        other => other,
    }
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("backup")
}

async fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await?;
    f.write_all(data).await?;
    f.sync_all().await
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    let full = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EFBIG));
    let msg = format!(
        "{what} {}: {e}{}",
        path.display(),
        if full { " (out of space?)" } else { "" }
    );
    StoreError::io(msg, e)
}
