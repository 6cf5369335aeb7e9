//! Local directory storage: write under a temporary name in the same
//! directory, fsync, rename. A backup's name never holds a partial file.
//! The sha256 lives in a `<name>.sha256` sidecar in `sha256sum` format,
//! written before the backup appears, so `sha256sum -c` works by hand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::fs;
use tokio::io::AsyncWriteExt;

use super::{ObjectInfo, ObjectMeta, ObjectReader};
use crate::error::{JobError, Stage};
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

    pub fn describe(&self) -> String {
        self.root.display().to_string()
    }

    pub fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub async fn create(&self, key: &str) -> Result<LocalWriter, JobError> {
        let path = self.path_of(key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_err(Stage::Upload, "creating", &dir, e))?;
        let base = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("backup");
        // Hidden, and not of the backup name shape: retention and list ignore it.
        let tmp = dir.join(format!(".{base}.{:016x}.partial", rand::random::<u64>()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
            .map_err(|e| io_err(Stage::Upload, "creating", &tmp, e))?;
        Ok(LocalWriter {
            file: Some(file),
            tmp,
            path,
            dir,
        })
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, JobError> {
        // A backup name has no '/' after the prefix, so only the prefix's own
        // directory needs reading.
        let (sub, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let dir = self.root.join(sub);
        let mut out = Vec::new();
        let mut rd = match fs::read_dir(&dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(Stage::Retention, "listing", &dir, e)),
        };
        while let Some(entry) = rd
            .next_entry()
            .await
            .map_err(|e| io_err(Stage::Retention, "listing", &dir, e))?
        {
            let Some(name) = entry.file_name().to_str().map(String::from) else {
                continue;
            };
            let key = if sub.is_empty() {
                name
            } else {
                format!("{sub}/{name}")
            };
            if !key.starts_with(prefix) {
                continue;
            }
            let Ok(md) = entry.metadata().await else {
                continue;
            };
            if !md.is_file() {
                continue;
            }
            out.push(ObjectInfo {
                key,
                size: md.len(),
                last_modified: md.modified().ok().map(DateTime::<Utc>::from),
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    pub async fn delete(&self, keys: &[String]) -> Result<Vec<(String, String)>, JobError> {
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

    pub async fn head(&self, key: &str) -> Result<ObjectMeta, JobError> {
        let path = self.path_of(key);
        let md = fs::metadata(&path)
            .await
            .map_err(|e| io_err(Stage::Verify, "reading", &path, e))?;
        let side = self.path_of(&naming::sidecar_name(key));
        let sha256 = match fs::read_to_string(&side).await {
            Ok(s) => s.split_whitespace().next().unwrap_or("").to_string(),
            Err(_) => String::new(),
        };
        let mut extra = BTreeMap::new();
        extra.insert("stored-bytes".to_string(), md.len().to_string());
        Ok(ObjectMeta { sha256, extra })
    }

    pub async fn get(&self, key: &str) -> Result<ObjectReader, JobError> {
        let path = self.path_of(key);
        let f = fs::File::open(&path)
            .await
            .map_err(|e| io_err(Stage::Restore, "opening", &path, e))?;
        Ok(Box::new(f))
    }
}

pub struct LocalWriter {
    file: Option<fs::File>,
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
}

impl LocalWriter {
    pub async fn write_part(&mut self, part: Bytes) -> Result<(), JobError> {
        let f = self.file.as_mut().expect("open until commit");
        f.write_all(&part)
            .await
            .map_err(|e| io_err(Stage::Upload, "writing", &self.tmp, e))
    }

    pub async fn commit(mut self, meta: &ObjectMeta) -> Result<(), JobError> {
        let res = self.finish(meta).await;
        if res.is_err() {
            self.abort().await;
        }
        res
    }

    async fn finish(&mut self, meta: &ObjectMeta) -> Result<(), JobError> {
        let mut f = self.file.take().expect("open until commit");
        f.flush()
            .await
            .map_err(|e| io_err(Stage::Upload, "writing", &self.tmp, e))?;
        f.sync_all()
            .await
            .map_err(|e| io_err(Stage::Upload, "syncing", &self.tmp, e))?;
        drop(f);
        // Sidecar first: once the backup's name exists, so does its checksum.
        let name = self.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let side = self.dir.join(naming::sidecar_name(name));
        let side_tmp = self.dir.join(format!(".{name}.sha256.partial"));
        write_synced(&side_tmp, format!("{}  {name}\n", meta.sha256).as_bytes())
            .await
            .map_err(|e| io_err(Stage::Upload, "writing", &side_tmp, e))?;
        fs::rename(&side_tmp, &side)
            .await
            .map_err(|e| io_err(Stage::Upload, "renaming", &side_tmp, e))?;
        fs::rename(&self.tmp, &self.path)
            .await
            .map_err(|e| io_err(Stage::Upload, "renaming", &self.tmp, e))?;
        // Make the renames durable.
        if let Ok(d) = fs::File::open(&self.dir).await {
            let _ = d.sync_all().await;
        }
        Ok(())
    }

    pub async fn abort(mut self) {
        self.file.take();
        let _ = fs::remove_file(&self.tmp).await;
    }
}

async fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = fs::File::create(path).await?;
    f.write_all(data).await?;
    f.sync_all().await
}

fn io_err(stage: Stage, what: &str, path: &Path, e: std::io::Error) -> JobError {
    let msg = if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EFBIG) {
        format!("{what} {}: {e} (out of space?)", path.display())
    } else {
        format!("{what} {}: {e}", path.display())
    };
    JobError::permanent(stage, msg)
}
