//! pgbackup: streams pg_dump into S3-compatible storage or a local directory.
//!
//! # Layout
//! Data flows one way: schedule -> job -> dump stream -> compress -> upload
//! -> record (metrics, notify). A module uses only those listed below it.
//!
//! - [`commands`]: one file per subcommand; the only place that prints.
//! - [`job`]: one backup, pg_dump -> compression + sha256 -> storage parts,
//!   returning an [`job::Outcome`] that others read.
//! - [`pg`]: server version, choice of client tools, their commands.
//! - [`storage`]: S3 multipart and local directory behind one type.
//! - [`retention`]: which backups to delete (a pure plan), then deleting them.
//! - [`notify`]: webhook and heartbeat after an attempt, read from its outcome.
//! - [`config`]: the environment, validated once into [`config::Config`].
//! - [`naming`], [`schedule`], [`backoff`]: pure logic, unit-tested without I/O.
//! - [`error`]: typed errors that know their stage and whether a retry may help.

pub mod backoff;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod error;
pub mod http;
pub mod job;
pub mod logging;
pub mod metrics;
pub mod naming;
pub mod notify;
pub mod pg;
pub mod retention;
pub mod schedule;
pub mod storage;
