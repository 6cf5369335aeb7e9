//! Integration tests against real PostgreSQL and a real S3 store (Garage).
//! See harness/mod.rs for how the services are started and cleaned up.

mod harness;

mod backup;
mod batch;
mod bundle;
mod config_cli;
mod daemon;
mod databases;
mod encryption;
mod faults;
mod imported;
mod job;
mod kubernetes;
pub mod notify;
mod pitr;
mod proxy;
mod recovery;
mod restore;
mod retention;
mod storage;
mod webconfig;
