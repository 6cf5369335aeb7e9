//! pgbackup: streams pg_dump into S3-compatible storage or a local directory.
//!
//! # Layout
//! Data flows one way: schedule -> job -> dump stream -> compress -> upload
//! -> record (metrics, notify). A module uses only those listed below it.
//!
//! - [`commands`]: one file per subcommand; the only place that prints.
//! - [`job`]: one backup, pg_dump -> compression + sha256 -> storage parts,
//!   returning an [`job::Outcome`] that others read.
//! - [`pg`]: server version, choice of client tools, their commands and
//!   how they ended.
//! - [`storage`]: S3 multipart and local directory behind one type.
//! - [`retention`]: which backups to delete (a pure plan), then deleting them.
//! - [`notify`]: webhook and heartbeat after an attempt, read from its outcome.
//! - [`config`]: the environment, validated once into [`config::Config`].
//! - [`naming`], [`schedule`], [`backoff`]: pure logic, unit-tested without I/O.
//! - [`restore`], [`verify`]: restore, integrity check and restore drill,
//!   over [`fetch`] (download -> sha256 -> decompression), [`catalog`] (our
//!   backups, `latest`), [`archive`] (what a dump says while it streams) and
//!   [`manifest`] (row counts recorded at backup time); [`presign`] URLs;
//!   [`seekable`] fills in a spooled archive's data offsets for `--jobs`.
//! - [`error`]: typed errors that know their stage and whether a retry may help.

pub mod archive;
pub mod backoff;
pub mod catalog;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod error;
pub mod fetch;
pub mod http;
pub mod job;
pub mod lock;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod naming;
pub mod notify;
pub mod pg;
pub mod presign;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod seekable;
pub mod storage;
pub mod verify;
