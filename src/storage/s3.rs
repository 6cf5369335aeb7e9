//! S3-compatible storage (AWS S3, Cloudflare R2, MinIO, Garage, Ceph).
//!
//! A dump that fits one part is a single PutObject; larger ones use multipart
//! upload with a bounded number of parts in flight, each retried with backoff
//! on transient errors. The sha256 is known only at the end, while multipart
//! metadata is fixed when the upload starts, so multipart objects get their
//! metadata by an in-place server-side copy right after completion.
//!
//! SUPPORT_OBJECT_LOCK: S3 Object Lock buckets refuse an upload without an
//! integrity header. The SDK's own checksums are off for custom endpoints
//! (many S3-compatible stores reject them), so with the switch on every
//! PutObject and every UploadPart carries a Content-MD5 of its body, which
//! every S3-compatible store accepts.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use aws_sdk_s3::Client;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::task::JoinSet;

use async_trait::async_trait;

use super::{
    ObjectInfo, ObjectMeta, ObjectReader, ObjectStore, ObjectWriter, PendingUpload, Presigned,
    StoreError,
};
use crate::backoff;

/// Parts uploading at once. With 8 MiB parts this bounds upload memory to
/// about (IN_FLIGHT + 2) * 8 MiB.
const IN_FLIGHT: usize = 2;
/// CopyObject's limit; larger objects are copied part by part.
const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;
const COPY_PART: u64 = 1024 * 1024 * 1024;
const SHA256_KEY: &str = "sha256";

#[derive(Clone)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    /// SUPPORT_OBJECT_LOCK: Content-MD5 on uploads, locked deletes are kept.
    object_lock: bool,
}

impl S3Storage {
    /// `credentials`: an access key id and secret given to pgbackup (its
    /// environment or `_FILE`s); without them, the AWS default chain.
    pub async fn new(
        bucket: &str,
        endpoint: Option<&str>,
        region: &str,
        path_style: bool,
        credentials: Option<(&str, &str, Option<&str>)>,
    ) -> Self {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.to_string()));
        if let Some((id, secret, token)) = credentials {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                id,
                secret,
                token.map(String::from),
                None,
                "pgbackup",
            ));
        }
        let sdk = loader.load().await;
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
            credentials: sdk.credentials_provider(),
            object_lock: false,
        }
    }

    /// For S3 Object Lock buckets (SUPPORT_OBJECT_LOCK).
    pub fn with_object_lock(mut self, on: bool) -> Self {
        self.object_lock = on;
        self
    }

    /// The Content-MD5 header an Object Lock bucket requires, when enabled.
    fn content_md5(&self, body: &[u8]) -> Option<String> {
        self.object_lock.then(|| content_md5(body))
    }

    /// Over an existing client (tests, or callers with their own credentials).
    pub fn from_client(client: Client, bucket: &str) -> Self {
        S3Storage {
            credentials: None,
            client,
            bucket: bucket.to_string(),
            object_lock: false,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn writer(&self, key: &str) -> S3Writer {
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

    fn object(&self, key: &str) -> String {
        format!("{}/{key}", self.bucket)
    }
}

#[async_trait]
impl ObjectStore for S3Storage {
    fn describe(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    fn checksum_place(&self) -> &'static str {
        "S3 metadata x-amz-meta-sha256"
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        Ok(Box::new(self.writer(key)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("ListObjectsV2", &self.bucket, e))?;
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

    async fn delete(&self, keys: &[String]) -> Result<Vec<(String, String)>, StoreError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let mut failed = Vec::new();
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::permanent("DeleteObjects: bad request", e))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StoreError::permanent("DeleteObjects: bad request", e))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| s3_error("DeleteObjects", &self.bucket, e))?;
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

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("HeadObject", &self.object(key), e))?;
        Ok(object_meta(out.metadata(), out.content_length()))
    }

    async fn get_with_meta(&self, key: &str) -> Result<(ObjectMeta, ObjectReader), StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("GetObject", &self.object(key), e))?;
        let meta = object_meta(out.metadata(), out.content_length());
        Ok((meta, Box::new(out.body.into_async_read())))
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StoreError> {
        Ok(self.get_with_meta(key).await?.1)
    }

    /// Multipart uploads still open under `prefix`, all pages. S3 pages
    /// this listing with a pair of markers, so the SDK has no paginator.
    async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, StoreError> {
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
                .map_err(|e| s3_error("ListMultipartUploads", &self.bucket, e))?;
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
    async fn abort_pending(&self, upload: &PendingUpload) -> Result<(), StoreError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .send()
            .await
            .map_err(|e| s3_error("AbortMultipartUpload", &self.object(&upload.key), e))?;
        Ok(())
    }

    async fn presign(&self, key: &str, expires: Duration) -> Result<Presigned, StoreError> {
        let conf = PresigningConfig::expires_in(expires)
            .map_err(|e| StoreError::permanent(format!("presigning {key}: {e}"), e))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(conf)
            .await
            .map_err(|e| s3_error("presigning GetObject", &self.object(key), e))?;
        Ok(Presigned::Url(req.uri().to_string()))
    }

    /// A refused delete is a lock when the store says so in its message
    /// (AWS: "Access Denied because object protected by object lock",
    /// MinIO: "Object is WORM protected"), or when it is an AccessDenied and
    /// the object has a retention date in the future or a legal hold. Any
    /// other AccessDenied is a permission problem and stays a failure. Only
    /// with SUPPORT_OBJECT_LOCK: without it no bucket is expected to lock.
    async fn locked(&self, key: &str, reason: &str) -> Option<String> {
        if !self.object_lock {
            return None;
        }
        let lower = reason.to_ascii_lowercase();
        if ["object lock", "worm", "locked", "retention"]
            .iter()
            .any(|w| lower.contains(w))
        {
            return Some(format!("locked ({reason})"));
        }
        if !reason.starts_with("AccessDenied") {
            return None;
        }
        if let Ok(out) = self
            .client
            .get_object_retention()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            let until = out
                .retention()
                .and_then(|r| r.retain_until_date())
                .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), 0));
            if let Some(until) = until.filter(|t| *t > Utc::now()) {
                return Some(format!("locked until {}", until.to_rfc3339()));
            }
        }
        let hold = self
            .client
            .get_object_legal_hold()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .ok()?;
        let on = hold
            .legal_hold()
            .and_then(|h| h.status())
            .is_some_and(|s| s.as_str() == "ON");
        on.then(|| "under a legal hold".to_string())
    }

    async fn probe_credentials(&self) -> Result<(), StoreError> {
        use aws_credential_types::provider::ProvideCredentials;
        // A client built elsewhere brought its own credentials.
        let Some(p) = &self.credentials else {
            return Ok(());
        };
        p.provide_credentials()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Credentials {
                message: NO_CREDENTIALS.to_string(),
                source: Some(std::sync::Arc::new(e)),
            })
    }
}

/// What to say when the credential chain finds nothing. The SDK's own
/// error is a page-long account of every provider it tried.
const NO_CREDENTIALS: &str = "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an AWS profile, web identity or instance role provides them";

/// An upload in progress. Holds the first part back until a second one
/// arrives: a dump that fits one part becomes a single PutObject.
pub struct S3Writer {
    s3: S3Storage,
    key: String,
    first: Option<Bytes>,
    upload_id: Option<String>,
    next_part: i32,
    in_flight: JoinSet<Result<CompletedPart, StoreError>>,
    done: Vec<CompletedPart>,
    bytes: u64,
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        self.write(part).await
    }

    async fn commit(mut self: Box<Self>, meta: &ObjectMeta) -> Result<(), StoreError> {
        // Conditional writes (If-None-Match) protect where the store honours
        // them; this check also covers stores that ignore them (Garage 2.5)
        // for runs that follow each other, and runs on one host never race
        // (the job holds a lock per prefix).
        let res = match self.s3.head(&self.key).await {
            Ok(_) => Err(StoreError::already_exists(format!(
                "{} exists: a backup is never replaced",
                self.s3.object(&self.key)
            ))),
            // A write-only key may not look: the conditional write decides.
            Err(_) => self.finish(meta).await,
        };
        if res.is_err() {
            self.cancel().await;
        }
        res
    }

    async fn abort(mut self: Box<Self>) {
        self.cancel().await
    }
}

impl S3Writer {
    async fn write(&mut self, part: Bytes) -> Result<(), StoreError> {
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
                .map_err(|e| s3_error("CreateMultipartUpload", &self.s3.object(&self.key), e))?;
            let id = out.upload_id().unwrap_or_default().to_string();
            if id.is_empty() {
                return Err(StoreError::invalid(format!(
                    "CreateMultipartUpload on {}: no upload id in the reply",
                    self.s3.object(&self.key)
                )));
            }
            self.upload_id = Some(id);
            let first = self.first.take().expect("held first part");
            self.spawn_part(first).await?;
        }
        self.spawn_part(part).await
    }

    async fn spawn_part(&mut self, body: Bytes) -> Result<(), StoreError> {
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

    async fn join_one(&mut self) -> Result<(), StoreError> {
        match self.in_flight.join_next().await {
            None => Ok(()),
            Some(Ok(Ok(part))) => {
                self.done.push(part);
                Ok(())
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => Err(StoreError::permanent("part upload task", e)),
        }
    }

    /// Completes the upload; on error the caller aborts what is left.
    async fn finish(&mut self, meta: &ObjectMeta) -> Result<(), StoreError> {
        let metadata = to_metadata(meta);
        let Some(id) = self.upload_id.clone() else {
            let body = self.first.take().unwrap_or_default();
            return self
                .s3
                .client
                .put_object()
                .bucket(&self.s3.bucket)
                .key(&self.key)
                .if_none_match("*")
                .content_length(body.len() as i64)
                .set_content_md5(self.s3.content_md5(&body))
                .body(ByteStream::from(body))
                .set_metadata(Some(metadata))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s3_error("PutObject", &self.s3.object(&self.key), e));
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
                .if_none_match("*")
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| s3_error("CompleteMultipartUpload", &self.s3.object(&self.key), e))
        }
        .await;
        finished?;
        self.upload_id = None;
        // The upload is complete and ours; now attach the checksum. If that fails the
        // object is deleted so that a failed backup leaves nothing behind.
        if let Err(e) = self.set_metadata(metadata).await {
            let _ = self.s3.delete(std::slice::from_ref(&self.key)).await;
            return Err(e);
        }
        Ok(())
    }

    async fn set_metadata(&self, metadata: HashMap<String, String>) -> Result<(), StoreError> {
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
                .map_err(|e| s3_error("CopyObject (metadata)", &what, e))?;
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
            .map_err(|e| s3_error("CreateMultipartUpload (copy)", &what, e))?;
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
                    .map_err(|e| s3_error("UploadPartCopy", &what, e))?;
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
                .map_err(|e| s3_error("CompleteMultipartUpload (copy)", &what, e))?;
            Ok::<(), StoreError>(())
        }
        .await;
        if copied.is_err() {
            abort_upload(s3, &self.key, &id).await;
        }
        copied
    }

    async fn cancel(&mut self) {
        // Stop in-flight parts first, so none lands after the abort.
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        if let Some(id) = self.upload_id.take() {
            abort_upload(&self.s3, &self.key, &id).await;
        }
    }
}

/// A failed abort is retried: an upload left open costs storage until
/// the next start-up sweep.
const ABORT_RETRIES: backoff::Policy = backoff::Policy {
    retries: 2,
    base: Duration::from_millis(500),
    max: Duration::from_secs(5),
};
/// Retries of one part after its first attempt (on top of the SDK's own).
const PART_RETRIES: backoff::Policy = backoff::Policy {
    retries: 4,
    base: Duration::from_secs(1),
    max: Duration::from_secs(20),
};

async fn abort_upload(s3: &S3Storage, key: &str, id: &str) {
    let res = backoff::retry(
        ABORT_RETRIES,
        || async {
            s3.client
                .abort_multipart_upload()
                .bucket(&s3.bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await
                .map_err(|e| s3_error("AbortMultipartUpload", &s3.object(key), e))
        },
        // Whatever the error, trying again costs little and may free the upload.
        |_| true,
        |e, retry, _| tracing::warn!(error = %e, retry, "could not abort multipart upload"),
    )
    .await;
    if let Err(e) = res {
        tracing::warn!(error = %e, "multipart upload left open; the next start-up sweep aborts it");
    }
}

async fn upload_part(
    s3: &S3Storage,
    key: &str,
    id: &str,
    n: i32,
    body: Bytes,
) -> Result<CompletedPart, StoreError> {
    let md5 = s3.content_md5(&body);
    let out = backoff::retry(
        PART_RETRIES,
        || async {
            s3.client
                .upload_part()
                .bucket(&s3.bucket)
                .key(key)
                .upload_id(id)
                .part_number(n)
                .content_length(body.len() as i64)
                .set_content_md5(md5.clone())
                .body(ByteStream::from(body.clone()))
                .send()
                .await
                .map_err(|e| s3_error(&format!("UploadPart {n}"), &s3.object(key), e))
        },
        StoreError::is_transient,
        |e, retry, wait| {
            tracing::warn!(error = %e, retry, wait_ms = wait.as_millis() as u64, "retrying part");
        },
    )
    .await?;
    Ok(CompletedPart::builder()
        .part_number(n)
        .set_e_tag(out.e_tag().map(String::from))
        .build())
}

/// Base64 of the body's MD5, as the Content-MD5 header carries it (RFC 1864).
pub fn content_md5(body: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

fn to_metadata(meta: &ObjectMeta) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = meta
        .extra
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !meta.sha256.is_empty() {
        m.insert(SHA256_KEY.to_string(), meta.sha256.clone());
    }
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

/// The metadata HeadObject and GetObject both return.
fn object_meta(
    user: Option<&std::collections::HashMap<String, String>>,
    len: Option<i64>,
) -> ObjectMeta {
    let mut extra: std::collections::BTreeMap<String, String> = user
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let sha256 = extra.remove(SHA256_KEY).unwrap_or_default();
    if let Some(len) = len {
        extra.insert("stored-bytes".into(), len.to_string());
    }
    ObjectMeta { sha256, extra }
}

/// One line that says what failed and whether retrying makes sense; the
/// SDK's error stays underneath as the source.
pub fn s3_error<E>(op: &str, what: &str, e: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if no_credentials(&e) {
        return StoreError::Credentials {
            message: NO_CREDENTIALS.to_string(),
            source: Some(std::sync::Arc::new(e)),
        };
    }
    let (message, kind) = match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let msg = err.message().unwrap_or("");
            let status = se.raw().status().as_u16();
            // HEAD replies have no body, hence no code: name the status.
            let code = err.code().unwrap_or(match status {
                403 => "Forbidden",
                404 => "NotFound",
                412 => "PreconditionFailed",
                _ => "error",
            });
            let hint = match code {
                "NoSuchBucket" => " (does the bucket exist? check AWS_S3_BUCKET)",
                "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "Forbidden" => {
                    " (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the key's bucket permissions)"
                }
                _ => "",
            };
            let kind = match (status, code) {
                (404, _) | (_, "NoSuchKey" | "NotFound") => Kind::NotFound,
                (412, _) | (_, "PreconditionFailed") => Kind::Exists,
                (500.., _)
                | (429, _)
                | (_, "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable") => {
                    Kind::Transient
                }
                _ => Kind::Permanent,
            };
            let sep = if msg.is_empty() { "" } else { ": " };
            (
                format!("{op} on {what}: {code}{sep}{msg} (HTTP {status}){hint}"),
                kind,
            )
        }
        SdkError::ConstructionFailure(_) => (
            format!(
                "{op} on {what}: {}",
                crate::error::one_line(&DisplayErrorContext(&e).to_string())
            ),
            Kind::Permanent,
        ),
        _ => (
            format!(
                "{op} on {what}: cannot reach the S3 endpoint: {}",
                crate::error::one_line(&DisplayErrorContext(&e).to_string())
            ),
            Kind::Transient,
        ),
    };
    let source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>> =
        Some(std::sync::Arc::new(e));
    match kind {
        Kind::NotFound => StoreError::NotFound { message, source },
        Kind::Exists => StoreError::AlreadyExists { message, source },
        Kind::Transient => StoreError::Transient { message, source },
        Kind::Permanent => StoreError::Permanent { message, source },
    }
}

enum Kind {
    NotFound,
    Exists,
    Transient,
    Permanent,
}

/// Whether the credential chain found nothing (identity resolution fails
/// before the request is sent, so the SDK reports it as a dispatch failure).
fn no_credentials(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.is::<aws_credential_types::provider::error::CredentialsError>() {
            return true;
        }
        cur = c.source();
    }
    false
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

    #[test]
    fn content_md5_is_base64_of_the_digest() {
        // RFC 1321's test vectors, in base64.
        assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
        assert_eq!(content_md5(b"abc"), "kAFQmDzST7DWlj99KOF/cg==");
    }
}
