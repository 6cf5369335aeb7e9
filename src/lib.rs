//! pgbackup: streams pg_dump into S3-compatible storage or a local directory.
//!
//! # Layout
//! Data flows one way: schedule -> job -> dump stream -> compress -> upload
//! -> record (metrics, notify). A module uses only those listed below it
//! (tests aside).
//!
//! - [`commands`]: one file per subcommand; the only place that prints.
//! - [`batch`]: a one-shot run's metrics, pushed to a Pushgateway or written
//!   for node_exporter's textfile collector.
//! - [`daemon`]: `pgbackup run`: the schedule, start-up, tracked retention
//!   and notification tasks, shutdown; over a [`clock::Clock`] and a
//!   [`daemon::Runner`] so its rules are tested in paused time.
//! - [`probe`]: `pgbackup healthcheck`'s one request to the daemon.
//! - [`http`]: `/metrics`, `/health`, `/healthz` on a runtime of their own,
//!   with TLS and basic auth from [`webconfig`].
//! - [`metrics`]: the Prometheus series, read from a job's [`job::Outcome`].
//! - [`notify`]: webhook and heartbeat after an attempt, read from its outcome.
//! - [`wal`]: point-in-time recovery: WAL streamed from a replication slot
//!   (`wal::archiver`), base backups (`wal::base`), their retention,
//!   `wal-fetch` and `restore --to-time` (`wal::pitr`).
//! - [`recover`]: a whole server from its newest run: globals, then every
//!   database (`restore --all`).
//! - [`verify`]: integrity check and restore drill, over [`restore`].
//! - [`restore`]: restore into a database, streamed or spooled for `--jobs`.
//! - [`fetch`]: download -> sha256 -> decompression, into a sink.
//! - [`presign`]: presigned URLs.
//! - [`retention`]: which backups to delete (a pure plan), then deleting them.
//! - [`databases`]: several databases of one server: which ones, and one
//!   run of them all (parallel dumps, globals, one name time).
//! - [`job`]: one backup, pg_dump -> compression + sha256 -> storage parts,
//!   returning an [`job::Outcome`] that others read.
//! - [`manifest`]: row counts recorded at backup time, in the dump's snapshot.
//! - [`catalog`]: our backups in a store, newest first; `latest`.
//! - [`lock`]: one backup at a time per store and prefix on this host.
//! - [`pg`]: server version, client tools, their commands, how they ended,
//!   connections and their errors.
//! - [`storage`]: the [`storage::ObjectStore`] trait; S3, local directory
//!   and memory stores; a fault-injecting wrapper; the conformance suite;
//!   [`storage::StoreError`].
//! - [`archive`], [`seekable`]: what a dump says while it streams; filling in
//!   a spooled archive's data offsets.
//! - [`naming`]: object names, pure.
//! - [`config`]: the environment, validated once per concern.
//! - [`crypto`]: age encryption of stored objects: recipients on the backup
//!   host, identities where restores run.
//! - [`webconfig`]: BACKUP_WEB_CONFIG_FILE (exporter-toolkit's format): TLS
//!   with certificates re-read on change, basic auth in constant time.
//! - [`schedule`], [`backoff`], [`clock`]: pure logic and time.
//! - [`error`]: [`error::JobError`] with a stage and a kind that decides
//!   retries and exit codes; [`error::ConfigError`].
//! - [`logging`]: the tracing subscriber.

pub mod archive;
pub mod backoff;
pub mod batch;
pub mod catalog;
pub mod clock;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod databases;
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
pub mod probe;
pub mod recover;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod seekable;
pub mod storage;
pub mod verify;
pub mod wal;
pub mod webconfig;
