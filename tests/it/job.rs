//! One backup in-process against a real PostgreSQL and a store with
//! injected faults: the failure paths that once needed a TCP proxy.

use pgbackup::config::Config;
use pgbackup::error::Stage;
use pgbackup::job::{self, Priority};
use pgbackup::storage::faulty::{Faulty, Op};
use pgbackup::storage::memory::MemoryStore;
use pgbackup::storage::ObjectStore;
use tokio_util::sync::CancellationToken;

use crate::harness::*;

fn config(db: &str) -> Config {
    Config::from_vars(vars(&[
        ("BACKUP_DATABASE_URL", &pg().url(db)),
        ("BACKUP_LOCAL_DIR", "/nonexistent"),
    ]))
    .unwrap()
}

fn backup_into(store: &dyn ObjectStore, cfg: &Config) -> job::Outcome {
    rt().block_on(job::run(
        cfg,
        store,
        &CancellationToken::new(),
        Priority::Normal,
    ))
}

/// Runs one backup into `store`; checks that nothing of it is left.
fn fails_cleanly(store: &Faulty<MemoryStore>, cfg: &Config, stage: Stage) {
    let outcome = backup_into(store, cfg);
    let e = outcome.result.expect_err("the fault fails the backup");
    assert_eq!(e.stage, stage, "{e}");
    assert!(
        store.inner().keys().is_empty(),
        "{:?}",
        store.inner().keys()
    );
    let pending = rt().block_on(store.pending_uploads("")).unwrap();
    assert!(pending.is_empty(), "{pending:?}");
}

#[test]
fn a_failing_store_leaves_nothing_behind_at_each_step() {
    let db = pg().fresh_db("jobfault");
    load_fixture(pg(), &db, 2_000);
    let cfg = config(&db);
    for (op, nth) in [(Op::Create, 1), (Op::WritePart, 1), (Op::Commit, 2)] {
        let store = Faulty::new(MemoryStore::new());
        // Commit 1 is the manifest's: the backup's own commit is the 2nd.
        store.fail_nth(op, nth, false);
        fails_cleanly(&store, &cfg, Stage::Upload);
        assert_eq!(store.calls(op), nth, "{op:?}");
    }
    // Healed, the same store takes a whole backup and its manifest.
    let store = Faulty::new(MemoryStore::new());
    let outcome = backup_into(&store, &cfg);
    let r = outcome.result.expect("backup");
    let keys = store.inner().keys();
    assert_eq!(
        keys,
        vec![r.key.clone(), format!("{}.manifest.json", r.key)]
    );
    assert_eq!(
        store.inner().bytes(&r.key).unwrap().len() as u64,
        r.stored_bytes
    );
}

/// A name taken by an earlier backup moves the new one to the next second.
#[test]
fn a_taken_name_moves_to_the_next_second() {
    let db = pg().fresh_db("jobname");
    load_fixture(pg(), &db, 100);
    let cfg = config(&db);
    let store = MemoryStore::new();
    let now = chrono::Utc::now();
    // Every name of the coming three seconds is taken.
    for s in 0..3 {
        let t = now + chrono::Duration::seconds(s);
        let key = pgbackup::naming::object_name(
            &cfg.store.prefix,
            t,
            cfg.dump.format,
            cfg.dump.compression,
        );
        store.insert(&key, b"theirs".to_vec(), Default::default(), t);
    }
    let before = store.keys();
    let outcome = backup_into(&store, &cfg);
    let r = outcome.result.expect("backup");
    assert!(
        !before.contains(&r.key),
        "{} replaced an earlier backup",
        r.key
    );
    for k in &before {
        assert_eq!(store.bytes(k).unwrap().as_ref(), b"theirs", "{k} untouched");
    }
}
