//! The daemon through the faults of the matrix, one test each: while the
//! fault holds, every scheduled attempt fails at its stage, is counted, turns
//! /health to 503, logs one line naming the stage, and stores nothing; once
//! the fault is gone, the next scheduled backup succeeds in the same
//! process. After a clean stop nothing is pending, no pg_dump is left, and
//! the stored backup verifies.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

/// Where the daemon under test stores its backups.
enum Store {
    Bucket(String),
    Dir(PathBuf),
}

impl Store {
    fn bucket(prefix: &str) -> Store {
        Store::Bucket(garage().bucket(prefix))
    }

    fn env(&self) -> Vec<(String, String)> {
        match self {
            Store::Bucket(b) => garage().env(b),
            Store::Dir(d) => vars(&[("BACKUP_LOCAL_DIR", d.to_str().unwrap())]),
        }
    }

    /// Everything under a final name: objects, or files not hidden as temp.
    fn stored(&self) -> Vec<String> {
        match self {
            Store::Bucket(b) => garage().keys(b),
            Store::Dir(d) => names(d, false),
        }
    }

    /// Half-written leftovers: pending multipart uploads, or temp files.
    fn leftovers(&self) -> Vec<String> {
        match self {
            Store::Bucket(b) => match garage().pending_uploads(b) {
                0 => vec![],
                n => vec![format!("{n} pending multipart upload(s)")],
            },
            Store::Dir(d) => names(d, true),
        }
    }
}

/// The file names in `dir`: the hidden ones (local storage's temp files) or
/// the others.
fn names(dir: &std::path::Path, hidden: bool) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') == hidden)
        .collect()
}

/// One fault, seen through a running daemon.
struct Fault<'a> {
    db: String,
    stage: &'a str,
    /// What the logged error must say.
    cause: &'a str,
    store: Store,
    /// Variables on top of the database URL and the store's.
    env: Vec<(String, String)>,
    /// Secrets that must not reach the daemon's log.
    secrets: Vec<String>,
}

impl Fault<'_> {
    /// Starts the daemon with the fault in place (`tweak` adjusts its
    /// command), waits for two failed attempts (the start-up run and a
    /// scheduled one), calls `heal` with the daemon's pid, and waits for a
    /// scheduled success.
    fn run(self, tweak: impl FnOnce(&mut Command), heal: impl FnOnce(i32)) {
        let pg = pg();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut env = vars(&[
            ("BACKUP_DATABASE_URL", &pg.url(&self.db)),
            ("BACKUP_LISTEN_ADDRESS", &addr),
            ("BACKUP_CRON_SCHEDULE", "*/3 * * * * *"),
            ("RUN_ON_STARTUP", "true"),
        ]);
        env.extend(self.store.env());
        for (k, v) in &self.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        let log = temp_dir("recovery-log").join("daemon.log");
        let mut cmd = pgbackup_cmd(&["run"], &env);
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        tweak(&mut cmd);
        let mut daemon = Guard::spawn(&mut cmd);
        wait_http(&addr, "/healthz");

        let db = &self.db;
        let failures = format!(
            "backup_failures_total{{database=\"{db}\",stage=\"{}\"}}",
            self.stage
        );
        let status = format!("backup_last_status{{database=\"{db}\"}}");
        // pg_dump runs as the daemon's child, leader of its own group:
        // remember every group seen, to check none outlives the daemon.
        let mut groups = std::collections::BTreeSet::new();
        eventually(
            "two failed attempts while the fault holds",
            Duration::from_secs(60),
            || {
                groups.extend(children_of(daemon.pid()));
                let text = http_get(&addr, "/metrics").1;
                assert!(
                    self.store.stored().is_empty(),
                    "a failed attempt stored something: {:?}",
                    self.store.stored()
                );
                assert_ne!(metric(&text, &status), Some(1.0), "no success while faulty");
                metric(&text, &failures).unwrap_or(0.0) >= 2.0
            },
        );
        assert_eq!(http_get(&addr, "/health").0, 503);
        assert!(
            daemon.wait_timeout(Duration::from_millis(10)).is_none(),
            "the daemon kept running"
        );

        heal(daemon.pid());
        eventually(
            "a scheduled backup to succeed once the fault is gone",
            Duration::from_secs(60),
            || {
                groups.extend(children_of(daemon.pid()));
                metric(&http_get(&addr, "/metrics").1, &status) == Some(1.0)
            },
        );
        assert_eq!(http_get(&addr, "/health").0, 200);

        daemon.signal(libc::SIGTERM);
        let exit = daemon
            .wait_timeout(Duration::from_secs(10))
            .expect("the daemon stops within 10 s");
        assert_eq!(exit.code(), Some(0));
        assert_eq!(self.store.leftovers(), Vec::<String>::new(), "half-written");
        for g in groups {
            assert!(group_members(g).is_empty(), "pg_dump group {g} outlived it");
        }
        let verified = pgbackup(&["verify", "latest"], &env);
        assert_eq!(
            verified.code,
            0,
            "the stored backup verifies: {}",
            verified.all()
        );

        let log = std::fs::read_to_string(&log).unwrap();
        let line = log
            .lines()
            .find(|l| l.contains("backup failed"))
            .unwrap_or_else(|| panic!("no failure logged:\n{log}"));
        assert!(line.contains(&format!("stage={}", self.stage)), "{line}");
        assert!(
            line.contains(self.cause),
            "cause {:?} not named: {line}",
            self.cause
        );
        for s in self.secrets.iter().chain([&pg.password, &garage().secret]) {
            assert!(!log.contains(s.as_str()), "a secret reached the log");
        }
    }
}

/// A pg_dump that misbehaves with `fault` while `switch` exists and is the
/// real one otherwise.
fn switchable_pg_dump(fault: &str) -> (PathBuf, PathBuf) {
    let switch = temp_dir("fault-switch").join("on");
    std::fs::write(&switch, "").unwrap();
    let bin = fake_pg_dump(
        pg(),
        &format!(
            "if [ -e {s} ]; then\n{fault}\nfi\nexec $REAL \"$@\"",
            s = switch.display()
        ),
    );
    (bin, switch)
}

#[test]
fn pg_dump_killed_mid_stream_then_the_next_scheduled_backup_succeeds() {
    let pg = pg();
    let db = pg.fresh_db("rec_kill");
    load_fixture(pg, &db, 300_000);
    // ~10 MB uncompressed: more than one part, so a multipart upload is open.
    let (bin, switch) = switchable_pg_dump("$REAL \"$@\" | head -c 10000000\nkill -9 $$");
    Fault {
        db,
        stage: "dump",
        store: Store::bucket("rec-kill"),
        cause: "killed by signal 9",
        env: vars(&[
            ("PG_BIN_DIR", bin.to_str().unwrap()),
            ("BACKUP_COMPRESSION", "none"),
        ]),
        secrets: vec![],
    }
    .run(|_| {}, |_| std::fs::remove_file(&switch).unwrap());
}

#[test]
fn empty_dump_then_the_next_scheduled_backup_succeeds() {
    let pg = pg();
    let db = pg.fresh_db("rec_empty");
    load_fixture(pg, &db, 1000);
    let (bin, switch) = switchable_pg_dump("exit 0");
    Fault {
        db,
        stage: "dump",
        store: Store::bucket("rec-empty"),
        cause: "wrote nothing",
        env: vars(&[("PG_BIN_DIR", bin.to_str().unwrap())]),
        secrets: vec![],
    }
    .run(|_| {}, |_| std::fs::remove_file(&switch).unwrap());
}

#[test]
fn disk_full_then_the_next_scheduled_backup_succeeds() {
    let pg = pg();
    let db = pg.fresh_db("rec_disk");
    load_fixture(pg, &db, 100_000);
    // A 1 MiB file size limit on the daemon stands in for a full disk
    // (writes fail with EFBIG, as with ENOSPC); raising it frees the disk.
    let set_limit = |pid: i32, cur: libc::rlim_t| {
        let lim = libc::rlimit {
            rlim_cur: cur,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: `lim` is a valid rlimit for the call; a null old-limit pointer is allowed.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    Fault {
        db,
        stage: "upload",
        store: Store::Dir(temp_dir("rec-disk")),
        cause: "out of space",
        env: vars(&[("BACKUP_COMPRESSION", "none")]),
        secrets: vec![],
    }
    .run(
        // SAFETY: between fork and exec the hook only calls signal(2) and prlimit(2), both
        // async-signal-safe (set_limit formats a message only when prlimit fails).
        |cmd| unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                set_limit(0, 1 << 20);
                Ok(())
            });
        },
        |pid| set_limit(pid, libc::RLIM_INFINITY),
    );
}

#[test]
fn database_password_rotated_then_restored_the_next_scheduled_backup_succeeds() {
    let pg = pg();
    let db = pg.fresh_db("rec_pw");
    load_fixture(pg, &db, 1000);
    let role = unique("rec_role").replace('-', "_");
    let known = format!("known-{}", random_hex(8));
    let rotated = format!("rotated-{}", random_hex(8));
    // The daemon knows `known`; the server has moved on to `rotated`.
    pg.psql(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{rotated}'"),
    );
    let url = format!("postgres://{role}:{known}@127.0.0.1:{}/{db}", pg.port);
    Fault {
        db,
        stage: "connect",
        store: Store::bucket("rec-pw"),
        cause: "password authentication failed",
        env: vars(&[("BACKUP_DATABASE_URL", &url)]),
        secrets: vec![known.clone(), rotated],
    }
    .run(
        |_| {},
        |_| {
            pg.psql("postgres", &format!("ALTER ROLE {role} PASSWORD '{known}'"));
        },
    );
}

#[test]
fn store_access_revoked_then_granted_the_next_scheduled_backup_succeeds() {
    let pg = pg();
    let db = pg.fresh_db("rec_s3");
    load_fixture(pg, &db, 1000);
    let g = garage();
    let bucket = g.bucket("rec-s3");
    // The daemon gets a key of its own; the test's key keeps reading.
    let (key, secret) = (format!("GK{}", random_hex(12)), random_hex(32));
    g.cli(&["key", "import", "--yes", "-n", "rec-s3", &key, &secret]);
    let perms = |verb: &str| {
        g.cli(&[
            "bucket", verb, "--read", "--write", "--owner", &bucket, "--key", &key,
        ]);
    };
    // The key still exists but may no longer use the bucket, as when a
    // token expires or its grant is withdrawn: S3 answers 403.
    perms("allow");
    perms("deny");
    Fault {
        db,
        stage: "upload",
        env: vars(&[
            ("AWS_ACCESS_KEY_ID", &key),
            ("AWS_SECRET_ACCESS_KEY", &secret),
        ]),
        secrets: vec![secret.clone()],
        store: Store::Bucket(bucket.clone()),
        cause: "AccessDenied",
    }
    .run(|_| {}, |_| perms("allow"));
}
