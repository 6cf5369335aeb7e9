//! Real services for the integration tests: PostgreSQL (Debian's binaries,
//! initdb into a temp dir) and Garage (a real S3-compatible store), each
//! started once per test binary on free loopback ports. Every test gets its
//! own database and bucket.
//!
//! Cleanup: services run as children with PR_SET_PDEATHSIG, spawned from one
//! long-lived thread (the signal follows the spawning *thread*), so they die
//! with the test process however it ends; an atexit hook stops them and
//! removes their directories on a normal exit, and directories left by a
//! killed run are swept at the next start.
//!
//! - `process`: cleanup, spawning services, `Guard`, the /proc walkers;
//! - `postgres`: the PostgreSQL clusters and the standard client tools;
//! - `garage`: the S3 store and an independent S3 client;
//! - `http`: an HTTP client for the daemon's endpoints, metrics text;
//! - `cli`: running pgbackup, and the command-line tools beside it;
//! - `prometheus`: Debian's Prometheus with a test's scrape configuration.
//!
//! Everything is re-exported here: tests `use crate::harness::*`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::sync::OnceLock;

mod cli;
mod garage;
mod http;
mod postgres;
mod process;
mod prometheus;

pub use cli::*;
pub use garage::*;
pub use http::*;
pub use postgres::*;
pub use process::*;
pub use prometheus::*;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// A unique lower-case name for a database or bucket.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", random_hex(5))
}

pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}
