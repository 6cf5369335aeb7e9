//! S3-compatible storage (AWS S3, Cloudflare R2, MinIO, Garage, Ceph).
//!
//! A dump that fits one part is a single PutObject; larger ones use multipart
//! upload with a bounded number of parts in flight, each retried with backoff
//! on transient errors. The sha256 is known only at the end, while multipart
//! metadata is fixed when the upload starts, so multipart objects get their
//! metadata by an in-place server-side copy right after completion.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use aws_sdk_s3::Client;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::task::JoinSet;

use super::{ObjectInfo, ObjectMeta, ObjectReader, PendingUpload};
use crate::backoff;
use crate::error::{JobError, Retry, Stage};

/// Parts uploading at once. With 8 MiB parts this bounds upload memory to
/// about (IN_FLIGHT + 2) * 8 MiB.
const IN_FLIGHT: usize = 2;
/// Retries of one part after its first attempt (on top of the SDK's own).
const PART_RETRIES: u32 = 4;
/// CopyObject's limit; larger objects are copied part by part.
const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;
const COPY_PART: u64 = 1024 * 1024 * 1024;
const SHA256_KEY: &str = "sha256";

#[derive(Clone)]
pub struct S3Storage {
    client: Client,
    bucket: String,
}

impl S3Storage {
    pub async fn new(bucket: &str, endpoint: Option<&str>, region: &str, path_style: bool) -> Self {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .load()
            .await;
        let mut b = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(path_style)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(ep) = endpoint {
            // Since aws-sdk-s3 1.69 the SDK sends CRC32 checksums and
            // aws-chunked bodies by default; R2, older MinIO, Ceph and Garage
            // reject them in different ways.
            b = b
                .endpoint_url(ep)
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        S3Storage {
            client: Client::from_conf(b.build()),
            bucket: bucket.to_string(),
        }
    }

    /// Over an existing client (tests, or callers with their own credentials).
    pub fn from_client(client: Client, bucket: &str) -> Self {
        S3Storage {
            client,
            bucket: bucket.to_string(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn describe(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    pub fn create(&self, key: &str) -> S3Writer {
        S3Writer {
            s3: self.clone(),
            key: key.to_string(),
            first: None,
            upload_id: None,
            next_part: 1,
            in_flight: JoinSet::new(),
            done: Vec::new(),
            bytes: 0,
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, JobError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| s3_error(Stage::Upload, "ListObjectsV2", &self.bucket, e))?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                out.push(ObjectInfo {
                    key: key.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: o
                        .last_modified()
                        .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), 0)),
                });
            }
        }
        Ok(out)
    }

    pub async fn delete(&self, keys: &[String]) -> Result<Vec<(String, String)>, JobError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let mut failed = Vec::new();
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| JobError::permanent(Stage::Retention, e.to_string()))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| JobError::permanent(Stage::Retention, e.to_string()))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| s3_error(Stage::Retention, "DeleteObjects", &self.bucket, e))?;
            for e in out.errors() {
                failed.push((
                    e.key().unwrap_or("?").to_string(),
                    format!(
                        "{}: {}",
                        e.code().unwrap_or("error"),
                        e.message().unwrap_or("")
                    ),
                ));
            }
        }
        Ok(failed)
    }

    pub async fn head(&self, key: &str) -> Result<ObjectMeta, JobError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(Stage::Verify, "HeadObject", &self.object(key), e))?;
        let mut extra: std::collections::BTreeMap<String, String> = out
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let sha256 = extra.remove(SHA256_KEY).unwrap_or_default();
        if let Some(len) = out.content_length() {
            extra.insert("stored-bytes".into(), len.to_string());
        }
        Ok(ObjectMeta { sha256, extra })
    }

    pub async fn get(&self, key: &str) -> Result<ObjectReader, JobError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(Stage::Restore, "GetObject", &self.object(key), e))?;
        Ok(Box::new(out.body.into_async_read()))
    }

    fn object(&self, key: &str) -> String {
        format!("{}/{key}", self.bucket)
    }

    /// Multipart uploads still open under `prefix`, all pages. S3 pages
    /// this listing with a pair of markers, so the SDK has no paginator.
    pub async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, JobError> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| s3_error(Stage::Retention, "ListMultipartUploads", &self.bucket, e))?;
            for u in page.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                out.push(PendingUpload {
                    key: key.to_string(),
                    upload_id: id.to_string(),
                    initiated: u
                        .initiated()
                        .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), 0)),
                });
            }
            key_marker = page.next_key_marker().map(String::from);
            id_marker = page.next_upload_id_marker().map(String::from);
            // A store that says "truncated" without markers would loop forever.
            if page.is_truncated() != Some(true) || (key_marker.is_none() && id_marker.is_none()) {
                return Ok(out);
            }
        }
    }

    /// Aborts one pending upload, once (the caller decides about retrying).
    pub async fn abort_pending(&self, upload: &PendingUpload) -> Result<(), JobError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .send()
            .await
            .map_err(|e| {
                s3_error(
                    Stage::Retention,
                    "AbortMultipartUpload",
                    &self.object(&upload.key),
                    e,
                )
            })?;
        Ok(())
    }
}

/// An upload in progress. Holds the first part back until a second one
/// arrives: a dump that fits one part becomes a single PutObject.
pub struct S3Writer {
    s3: S3Storage,
    key: String,
    first: Option<Bytes>,
    upload_id: Option<String>,
    next_part: i32,
    in_flight: JoinSet<Result<CompletedPart, JobError>>,
    done: Vec<CompletedPart>,
    bytes: u64,
}

impl S3Writer {
    pub async fn write_part(&mut self, part: Bytes) -> Result<(), JobError> {
        self.bytes += part.len() as u64;
        if self.upload_id.is_none() {
            if self.first.is_none() {
                self.first = Some(part);
                return Ok(());
            }
            let out = self
                .s3
                .client
                .create_multipart_upload()
                .bucket(&self.s3.bucket)
                .key(&self.key)
                .send()
                .await
                .map_err(|e| {
                    s3_error(
                        Stage::Upload,
                        "CreateMultipartUpload",
                        &self.s3.object(&self.key),
                        e,
                    )
                })?;
            let id = out.upload_id().unwrap_or_default().to_string();
            if id.is_empty() {
                return Err(JobError::permanent(
                    Stage::Upload,
                    "CreateMultipartUpload returned no upload id",
                ));
            }
            self.upload_id = Some(id);
            let first = self.first.take().expect("held first part");
            self.spawn_part(first).await?;
        }
        self.spawn_part(part).await
    }

    async fn spawn_part(&mut self, body: Bytes) -> Result<(), JobError> {
        while self.in_flight.len() >= IN_FLIGHT {
            self.join_one().await?;
        }
        let n = self.next_part;
        self.next_part += 1;
        let s3 = self.s3.clone();
        let key = self.key.clone();
        let id = self.upload_id.clone().expect("multipart started");
        self.in_flight
            .spawn(async move { upload_part(&s3, &key, &id, n, body).await });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), JobError> {
        match self.in_flight.join_next().await {
            None => Ok(()),
            Some(Ok(Ok(part))) => {
                self.done.push(part);
                Ok(())
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => Err(JobError::permanent(
                Stage::Upload,
                format!("part upload task: {e}"),
            )),
        }
    }

    pub async fn commit(mut self, meta: &ObjectMeta) -> Result<(), JobError> {
        let metadata = to_metadata(meta);
        let Some(id) = self.upload_id.clone() else {
            let body = self.first.take().unwrap_or_default();
            return self
                .s3
                .client
                .put_object()
                .bucket(&self.s3.bucket)
                .key(&self.key)
                .content_length(body.len() as i64)
                .body(ByteStream::from(body))
                .set_metadata(Some(metadata))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s3_error(Stage::Upload, "PutObject", &self.s3.object(&self.key), e));
        };
        let finished = async {
            while !self.in_flight.is_empty() {
                self.join_one().await?;
            }
            let mut parts = std::mem::take(&mut self.done);
            parts.sort_by_key(|p| p.part_number());
            self.s3
                .client
                .complete_multipart_upload()
                .bucket(&self.s3.bucket)
                .key(&self.key)
                .upload_id(&id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| {
                    s3_error(
                        Stage::Upload,
                        "CompleteMultipartUpload",
                        &self.s3.object(&self.key),
                        e,
                    )
                })
        }
        .await;
        if let Err(e) = finished {
            self.abort().await;
            return Err(e);
        }
        // The upload is complete; now attach the checksum. If that fails the
        // object is deleted so that a failed backup leaves nothing behind.
        if let Err(e) = self.set_metadata(metadata).await {
            let _ = self.s3.delete(std::slice::from_ref(&self.key)).await;
            return Err(e);
        }
        Ok(())
    }

    async fn set_metadata(&self, metadata: HashMap<String, String>) -> Result<(), JobError> {
        let s3 = &self.s3;
        let source = copy_source(&s3.bucket, &self.key);
        let what = s3.object(&self.key);
        if self.bytes <= MAX_COPY {
            s3.client
                .copy_object()
                .bucket(&s3.bucket)
                .key(&self.key)
                .copy_source(&source)
                .metadata_directive(MetadataDirective::Replace)
                .set_metadata(Some(metadata))
                .send()
                .await
                .map_err(|e| s3_error(Stage::Upload, "CopyObject (metadata)", &what, e))?;
            return Ok(());
        }
        let out = s3
            .client
            .create_multipart_upload()
            .bucket(&s3.bucket)
            .key(&self.key)
            .set_metadata(Some(metadata))
            .send()
            .await
            .map_err(|e| s3_error(Stage::Upload, "CreateMultipartUpload (copy)", &what, e))?;
        let id = out.upload_id().unwrap_or_default().to_string();
        let copied = async {
            let mut parts = Vec::new();
            let mut start = 0u64;
            let mut n = 1;
            while start < self.bytes {
                let end = (start + COPY_PART).min(self.bytes) - 1;
                let out = s3
                    .client
                    .upload_part_copy()
                    .bucket(&s3.bucket)
                    .key(&self.key)
                    .upload_id(&id)
                    .part_number(n)
                    .copy_source(&source)
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .send()
                    .await
                    .map_err(|e| s3_error(Stage::Upload, "UploadPartCopy", &what, e))?;
                let etag = out
                    .copy_part_result()
                    .and_then(|r| r.e_tag())
                    .map(String::from);
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(etag)
                        .build(),
                );
                start = end + 1;
                n += 1;
            }
            s3.client
                .complete_multipart_upload()
                .bucket(&s3.bucket)
                .key(&self.key)
                .upload_id(&id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| s3_error(Stage::Upload, "CompleteMultipartUpload (copy)", &what, e))?;
            Ok::<(), JobError>(())
        }
        .await;
        if copied.is_err() {
            abort_upload(s3, &self.key, &id).await;
        }
        copied
    }

    pub async fn abort(mut self) {
        // Stop in-flight parts first, so none lands after the abort.
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        if let Some(id) = self.upload_id.take() {
            abort_upload(&self.s3, &self.key, &id).await;
        }
    }
}

async fn abort_upload(s3: &S3Storage, key: &str, id: &str) {
    for attempt in 0..3 {
        match s3
            .client
            .abort_multipart_upload()
            .bucket(&s3.bucket)
            .key(key)
            .upload_id(id)
            .send()
            .await
        {
            Ok(_) => return,
            Err(e) => {
                let e = s3_error(Stage::Upload, "AbortMultipartUpload", &s3.object(key), e);
                tracing::warn!(error = %e, attempt, "could not abort multipart upload");
                tokio::time::sleep(backoff::jittered(
                    attempt,
                    Duration::from_millis(500),
                    Duration::from_secs(5),
                ))
                .await;
            }
        }
    }
}

async fn upload_part(
    s3: &S3Storage,
    key: &str,
    id: &str,
    n: i32,
    body: Bytes,
) -> Result<CompletedPart, JobError> {
    let mut retry = 0;
    loop {
        let res = s3
            .client
            .upload_part()
            .bucket(&s3.bucket)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body.clone()))
            .send()
            .await;
        match res {
            Ok(out) => {
                return Ok(CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(out.e_tag().map(String::from))
                    .build())
            }
            Err(e) => {
                let e = s3_error(
                    Stage::Upload,
                    &format!("UploadPart {n}"),
                    &s3.object(key),
                    e,
                );
                if !e.is_retryable() || retry >= PART_RETRIES {
                    return Err(e);
                }
                let wait =
                    backoff::jittered(retry, Duration::from_secs(1), Duration::from_secs(20));
                tracing::warn!(error = %e, retry = retry + 1, wait_ms = wait.as_millis() as u64, "retrying part");
                tokio::time::sleep(wait).await;
                retry += 1;
            }
        }
    }
}

fn to_metadata(meta: &ObjectMeta) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = meta
        .extra
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    m.insert(SHA256_KEY.to_string(), meta.sha256.clone());
    m
}

/// `bucket/key` with the key URL-encoded (slashes kept), as CopySource wants.
fn copy_source(bucket: &str, key: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!(
        "{bucket}/{}",
        percent_encoding::utf8_percent_encode(key, SET)
    )
}

/// One line that says what failed and whether retrying makes sense.
pub fn s3_error<E>(stage: Stage, op: &str, what: &str, e: SdkError<E, HttpResponse>) -> JobError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("error");
            let msg = err.message().unwrap_or("");
            let status = Some(se.raw().status().as_u16());
            let transient = matches!(status, Some(s) if s >= 500 || s == 429)
                || matches!(
                    code,
                    "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable"
                );
            let hint = match code {
                "NoSuchBucket" => " (does the bucket exist? check AWS_S3_BUCKET)",
                "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "Forbidden" => {
                    " (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the key's bucket permissions)"
                }
                _ => "",
            };
            let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
            JobError::new(
                stage,
                if transient {
                    Retry::Transient
                } else {
                    Retry::Permanent
                },
                format!(
                    "{op} on {what}: {code}{}{msg}{status}{hint}",
                    if msg.is_empty() { "" } else { ": " }
                ),
            )
        }
        SdkError::ConstructionFailure(_) => JobError::permanent(
            stage,
            format!("{op} on {what}: {}", DisplayErrorContext(&e)),
        ),
        _ => JobError::transient(
            stage,
            format!(
                "{op} on {what}: cannot reach the S3 endpoint: {}",
                DisplayErrorContext(&e)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_encodes_the_key() {
        assert_eq!(
            copy_source("b", "db/backup_2026-01-25_03-00-00.dump.zst"),
            "b/db/backup_2026-01-25_03-00-00.dump.zst"
        );
        assert_eq!(copy_source("b", "a b+c"), "b/a%20b%2Bc");
    }
}
