//! Typed errors. Every failure knows the stage it happened in (for the
//! `backup_failures_total{stage}` metric and the one-line message) and whether
//! trying again could help (the same split drives S3 part and webhook retries).

use std::fmt;

/// Where in a job a failure happened. The names are the `stage` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Config,
    Connect,
    Version,
    Dump,
    Compress,
    Upload,
    Retention,
    Verify,
    Restore,
    Notify,
    Cancelled,
}

impl Stage {
    pub const ALL: [Stage; 11] = [
        Stage::Config,
        Stage::Connect,
        Stage::Version,
        Stage::Dump,
        Stage::Compress,
        Stage::Upload,
        Stage::Retention,
        Stage::Verify,
        Stage::Restore,
        Stage::Notify,
        Stage::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Config => "config",
            Stage::Connect => "connect",
            Stage::Version => "version",
            Stage::Dump => "dump",
            Stage::Compress => "compress",
            Stage::Upload => "upload",
            Stage::Retention => "retention",
            Stage::Verify => "verify",
            Stage::Restore => "restore",
            Stage::Notify => "notify",
            Stage::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether repeating the same operation may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Network blips, 5xx, throttling, timeouts.
    Transient,
    /// Bad credentials, missing bucket, pg_dump errors: the same call fails again.
    Permanent,
}

/// A failed job step: one line, never containing a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{stage} failed: {message}")]
pub struct JobError {
    pub stage: Stage,
    pub retry: Retry,
    pub message: String,
}

impl JobError {
    pub fn new(stage: Stage, retry: Retry, message: impl Into<String>) -> Self {
        JobError {
            stage,
            retry,
            message: one_line(&message.into()),
        }
    }

    pub fn permanent(stage: Stage, message: impl Into<String>) -> Self {
        Self::new(stage, Retry::Permanent, message)
    }

    pub fn transient(stage: Stage, message: impl Into<String>) -> Self {
        Self::new(stage, Retry::Transient, message)
    }

    pub fn is_retryable(&self) -> bool {
        self.retry == Retry::Transient
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

    #[test]
    fn messages_are_one_line() {
        let e = JobError::permanent(Stage::Dump, "pg_dump: error: x\n\n  detail: y\n");
        assert_eq!(e.to_string(), "dump failed: pg_dump: error: x; detail: y");
        assert!(!e.is_retryable());
        assert!(JobError::transient(Stage::Upload, "503").is_retryable());
    }
}
