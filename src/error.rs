//! Typed errors for the job layer. A lower layer (storage) has its own error
//! type and tells its [`Kind`] through [`Classified`]; the job and the daemon
//! attach the [`Stage`] at their boundary. A [`Kind`] decides what the caller
//! does: retry (the same split drives S3 part and webhook retries), give up,
//! or exit 2 for a configuration problem. Cancellation is a kind, not a
//! stage, so a shutdown never counts as a failure.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// Where in a job a failure happened. The names are the `stage` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Config,
    Credentials,
    Connect,
    Version,
    Dump,
    Compress,
    Upload,
    Retention,
    Verify,
    Restore,
    Notify,
}

impl Stage {
    pub const ALL: [Stage; 11] = [
        Stage::Config,
        Stage::Credentials,
        Stage::Connect,
        Stage::Version,
        Stage::Dump,
        Stage::Compress,
        Stage::Upload,
        Stage::Retention,
        Stage::Verify,
        Stage::Restore,
        Stage::Notify,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Config => "config",
            Stage::Credentials => "credentials",
            Stage::Connect => "connect",
            Stage::Version => "version",
            Stage::Dump => "dump",
            Stage::Compress => "compress",
            Stage::Upload => "upload",
            Stage::Retention => "retention",
            Stage::Verify => "verify",
            Stage::Restore => "restore",
            Stage::Notify => "notify",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the caller should do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Network blips, 5xx, throttling, timeouts: the same call may succeed.
    Transient,
    /// Bad credentials, missing bucket, pg_dump errors: the same call fails again.
    Permanent,
    /// The configuration cannot work (exit 2): fix a variable, not the service.
    Config,
    /// Stopped by our own shutdown: not a failure, not news to anyone.
    Cancelled,
}

pub type BoxError = Arc<dyn StdError + Send + Sync + 'static>;

/// What an error of a lower layer says about itself, so that this module
/// needs to know none of them.
pub trait Classified: StdError + Send + Sync + 'static {
    fn kind(&self) -> Kind;
    /// A stage the error belongs to whatever the caller was doing (missing
    /// credentials are a `credentials` failure, not an `upload` one).
    fn stage(&self) -> Option<Stage> {
        None
    }
}

/// A failed job step: one line, never containing a secret, with the
/// underlying error kept as its source.
#[derive(Debug, Clone)]
pub struct JobError {
    pub stage: Stage,
    pub kind: Kind,
    pub message: String,
    source: Option<BoxError>,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Cancelled => write!(f, "cancelled: {}", self.message),
            _ => write!(f, "{} failed: {}", self.stage, self.message),
        }
    }
}

impl StdError for JobError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl JobError {
    pub fn new(stage: Stage, kind: Kind, message: impl Into<String>) -> Self {
        JobError {
            stage,
            kind,
            message: one_line(&message.into()),
            source: None,
        }
    }

    pub fn permanent(stage: Stage, message: impl Into<String>) -> Self {
        Self::new(stage, Kind::Permanent, message)
    }

    pub fn transient(stage: Stage, message: impl Into<String>) -> Self {
        Self::new(stage, Kind::Transient, message)
    }

    /// Missing or wrong configuration met while in `stage` (exit 2).
    pub fn config(stage: Stage, message: impl Into<String>) -> Self {
        Self::new(stage, Kind::Config, message)
    }

    /// Stopped by shutdown while in `stage`.
    pub fn cancelled(stage: Stage, message: impl Into<String>) -> Self {
        Self::new(stage, Kind::Cancelled, message)
    }

    /// A lower layer's error (storage), attached to the stage of the
    /// caller that met it; its message and kind are its own.
    pub fn storage(stage: Stage, e: impl Classified) -> Self {
        let kind = e.kind();
        let stage = e.stage().unwrap_or(stage);
        let message = e.to_string();
        Self::new(stage, kind, message).with_source(e)
    }

    /// Keeps `source` as the cause; the message stays the one line it was.
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The same failure reported under another stage (a drill's restore
    /// failure is a `verify` failure of the daemon).
    pub fn at(mut self, stage: Stage) -> Self {
        self.stage = stage;
        self
    }

    pub fn is_retryable(&self) -> bool {
        self.kind == Kind::Transient
    }

    pub fn is_cancelled(&self) -> bool {
        self.kind == Kind::Cancelled
    }
}

/// A bad environment variable or flag. Exit code 2.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(var: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            var,
            message: message.into(),
        }
    }
}

/// Collapses multi-line tool output (pg_dump stderr, SDK error chains) into
/// one line so that every failure is a single log line.
pub fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StoreError;

    #[test]
    fn messages_are_one_line() {
        let e = JobError::permanent(Stage::Dump, "pg_dump: error: x\n\n  detail: y\n");
        assert_eq!(e.to_string(), "dump failed: pg_dump: error: x; detail: y");
        assert!(!e.is_retryable());
        assert!(JobError::transient(Stage::Upload, "503").is_retryable());
    }

    #[test]
    fn cancellation_is_not_a_failure() {
        let e = JobError::cancelled(Stage::Upload, "backup stopped by shutdown");
        assert_eq!(e.to_string(), "cancelled: backup stopped by shutdown");
        assert!(e.is_cancelled() && !e.is_retryable());
    }

    #[test]
    fn storage_errors_take_the_callers_stage_and_keep_their_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = JobError::storage(
            Stage::Retention,
            StoreError::transient("listing s3://b", io),
        );
        assert_eq!(e.stage, Stage::Retention);
        assert!(e.is_retryable());
        let src = StdError::source(&e).expect("store error kept");
        let io_src = src.source().expect("io error kept");
        assert_eq!(io_src.to_string(), "reset by peer");

        let e = JobError::storage(Stage::Upload, StoreError::credentials("no credentials"));
        assert_eq!((e.stage, e.kind), (Stage::Credentials, Kind::Config));
    }

    /// docs/troubleshooting.md has a row for every `<stage> failed` line
    /// the code can print: each stage, and the commands' own lines.
    #[test]
    fn every_error_line_has_a_troubleshooting_row() {
        let doc = include_str!("../docs/troubleshooting.md");
        let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with('|')).collect();
        let own = ["list", "presign", "storage check"];
        for stage in Stage::ALL
            .iter()
            .map(|s| s.as_str())
            .chain(own.iter().copied())
        {
            let line = format!("`error: {stage} failed:");
            assert!(
                rows.iter().any(|r| r.contains(&line)),
                "docs/troubleshooting.md has no row for {line}`"
            );
        }
        for line in [
            "`error: invalid ",
            "`error: cancelled: ",
            "`error: cannot listen on ",
        ] {
            assert!(rows.iter().any(|r| r.contains(line)), "no row for {line}");
        }
    }
}
