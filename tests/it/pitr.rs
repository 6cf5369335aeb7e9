//! Point-in-time recovery against a real PostgreSQL and Garage: WAL
//! streamed by `pgbackup run`, base backups, `restore --to-time` into a new
//! data directory that a real server recovers, `wal-fetch` as its
//! restore_command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A dedicated cluster (its WAL is the test's own), a bucket and a spool.
struct Pitr {
    pg: Postgres,
    bucket: String,
    spool: PathBuf,
    addr: String,
}

impl Pitr {
    fn new(what: &str) -> Pitr {
        let pg = Postgres::start_dedicated();
        pg.psql(
            "postgres",
            "CREATE TABLE t (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), pad text)",
        );
        let spool = temp_dir("spool");
        Pitr {
            pg,
            bucket: garage().bucket(what),
            spool,
            addr: format!("127.0.0.1:{}", free_port()),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env = vars(&[
            ("BACKUP_DATABASE_URL", &self.pg.url("postgres")),
            ("BACKUP_LISTEN_ADDRESS", &self.addr),
            ("BACKUP_WAL_ARCHIVE", "true"),
            ("BACKUP_WAL_FLUSH_SECONDS", "1"),
            ("BACKUP_WAL_SPOOL_DIR", &self.spool.to_string_lossy()),
            // Base backups only when a test takes them.
            ("BACKUP_CRON_SCHEDULE", "0 3 1 1 *"),
        ]);
        env.extend(garage().env(&self.bucket));
        env
    }

    fn daemon(&self) -> Guard {
        self.daemon_with(&self.env())
    }

    fn daemon_with(&self, env: &[(String, String)]) -> Guard {
        let mut cmd = pgbackup_cmd(&["run"], env);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let g = Guard::spawn(&mut cmd);
        wait_http(&self.addr, "/healthz");
        g
    }

    fn metric(&self, name: &str) -> f64 {
        let (code, body) = http_get(&self.addr, "/metrics");
        assert_eq!(code, 200);
        metric(&body, &format!("{name}{{}}")).unwrap_or_else(|| panic!("{name} missing:\n{body}"))
    }

    fn basebackup(&self) -> String {
        let r = pgbackup(&["basebackup"], &self.env());
        assert_eq!(r.code, 0, "{}", r.all());
        r.stdout
    }

    /// Rows inserted one transaction each, `gap` apart.
    fn write(&self, n: usize, gap: Duration) {
        for _ in 0..n {
            self.pg
                .psql("postgres", "INSERT INTO t (pad) VALUES (repeat('x', 200))");
            std::thread::sleep(gap);
        }
    }

    fn now(&self) -> String {
        self.pg
            .psql("postgres", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
            .trim()
            .to_string()
    }

    fn ids(&self, filter: &str) -> Vec<i64> {
        ids(&self.pg.psql(
            "postgres",
            &format!("SELECT id FROM t {filter} ORDER BY id"),
        ))
    }

    /// Waits until the daemon has stored WAL after this moment.
    fn wait_archived(&self) {
        let after = chrono::Utc::now().timestamp_millis() as f64 / 1000.0 + 1.5;
        eventually("WAL to be stored", Duration::from_secs(60), || {
            self.metric("backup_wal_last_archived_timestamp_seconds") > after
        });
    }
}

fn ids(text: &str) -> Vec<i64> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// A data directory owned by the postgres user, and the server recovered
/// in it (stopped when the test ends).
struct Restored {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl Restored {
    fn dir_for(bin: &Path) -> Restored {
        let parent = temp_dir("restored");
        let (uid, gid) = postgres_user();
        std::os::unix::fs::chown(&parent, Some(uid), Some(gid)).unwrap();
        let dir = parent.join("data");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        Restored {
            dir,
            port: free_port(),
            bin: bin.to_path_buf(),
        }
    }

    /// `pgbackup restore --to-time <to> --target-dir <this dir> [extra]`.
    fn restore(&self, to: &str, env: &[(String, String)], extra: &[&str]) -> Run {
        let dir = self.dir.to_string_lossy().into_owned();
        let mut args = vec!["restore", "--to-time", to, "--target-dir", &dir];
        args.extend_from_slice(extra);
        pgbackup(&args, env)
    }

    fn psql(&self, sql: &str) -> String {
        run_ok(
            Command::new(self.bin.join("psql"))
                .args(["-h", "/var/run/postgresql", "-p", &self.port.to_string()])
                .args([
                    "-U", "postgres", "-X", "-q", "-At", "-d", "postgres", "-c", sql,
                ]),
        )
    }

    fn start(&self) {
        let (uid, gid) = postgres_user();
        use std::os::unix::process::CommandExt;
        let out = Command::new(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.dir)
            .arg("-l")
            .arg(self.dir.join("recovery.log"))
            .args(["-o", &format!("-p {}", self.port), "-w", "start"])
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", self.log());
        // recovery.signal goes at the end of recovery, a moment before the
        // server takes connections.
        eventually("recovery to end", Duration::from_secs(120), || {
            !self.dir.join("recovery.signal").exists()
                && std::fs::read_to_string(self.dir.join("postmaster.pid"))
                    .is_ok_and(|t| t.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("recovery.log")).unwrap_or_default()
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        if self.dir.join("postmaster.pid").exists() {
            let (uid, gid) = postgres_user();
            use std::os::unix::process::CommandExt;
            let _ = Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.dir)
                .args(["-m", "immediate", "-w", "stop"])
                .uid(uid)
                .gid(gid)
                .output();
        }
    }
}

fn postgres_user() -> (u32, u32) {
    let m = std::fs::metadata("/var/run/postgresql").unwrap();
    use std::os::unix::fs::MetadataExt;
    (m.uid(), m.gid())
}

#[test]
fn restores_a_cluster_to_a_chosen_second_with_exactly_the_rows_committed_by_then() {
    let p = Pitr::new("pitr");
    let _d = p.daemon();
    p.write(3, Duration::from_millis(50));
    let base = p.basebackup();
    assert!(base.contains("backup_base/"), "{base}");
    p.write(15, Duration::from_millis(100));
    // T falls in a pause between two commits.
    std::thread::sleep(Duration::from_millis(700));
    let t = p.now();
    std::thread::sleep(Duration::from_millis(700));
    p.write(15, Duration::from_millis(100));
    p.wait_archived();
    let before = p.ids(&format!("WHERE at <= '{t}'"));
    let all = p.ids("");
    assert!(
        before.len() >= 18 && before.len() < all.len(),
        "{before:?} / {all:?}"
    );

    let r = Restored::dir_for(&p.pg.bin);
    let mut env = p.env();
    env.push(("PG_BIN_DIR".into(), p.pg.bin.to_string_lossy().into_owned()));
    let out = r.restore(&t, &env, &["--start", "--port", &r.port.to_string()]);
    assert_eq!(out.code, 0, "{}\n{}", out.all(), r.log());
    assert!(out.stdout.contains("recovery window:"), "{}", out.stdout);
    // The storage settings stay out of the data directory and its config.
    let env_file = r.dir.with_file_name("data.wal-fetch.env");
    let mode = std::fs::metadata(&env_file).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let auto = std::fs::read_to_string(r.dir.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains("wal-fetch") && auto.contains("recovery_target_time"),
        "{auto}"
    );
    for (k, v) in garage().env(&p.bucket) {
        if k == "AWS_SECRET_ACCESS_KEY" {
            assert!(
                !auto.contains(&v),
                "the secret reached postgresql.auto.conf"
            );
            assert!(!out.all().contains(&v), "the secret was printed");
        }
    }

    let restored = ids(&r.psql("SELECT id FROM t ORDER BY id"));
    assert_eq!(restored, before, "exactly the rows committed by {t}");
    assert_eq!(r.psql("SELECT pg_is_in_recovery()").trim(), "f");
    // WAL read ahead of recovery is removed once it has ended.
    assert!(!r.dir.join("pg_wal/pgbackup-prefetch").exists());
}

#[test]
fn restore_to_latest_after_a_kill_loses_nothing_older_than_the_flush_interval() {
    let p = Pitr::new("pitr-kill");
    let mut d = p.daemon();
    p.basebackup();
    p.write(10, Duration::from_millis(100));
    // Killed mid-stream: no chance to store what it holds.
    d.signal(libc::SIGKILL);
    d.wait_timeout(Duration::from_secs(10)).expect("killed");
    // pg_receivewal may outlive it for a moment; the slot is free once it goes.
    p.write(10, Duration::from_millis(50));
    std::thread::sleep(Duration::from_secs(2));
    let _d = p.daemon();
    p.write(5, Duration::from_millis(50));
    p.wait_archived();
    let all = p.ids("");

    let r = Restored::dir_for(&p.pg.bin);
    let out = r.restore("latest", &p.env(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("pg_ctl"),
        "prints the command to start: {}",
        out.stdout
    );
    r.start();
    let restored = ids(&r.psql("SELECT id FROM t ORDER BY id"));
    assert_eq!(restored, all, "{}", r.log());

    // A directory with anything in it is never written over.
    let out = r.restore("latest", &p.env(), &[]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("is not empty"), "{}", out.stderr);
    // A time before the oldest base backup: refused, with the window.
    let other = Restored::dir_for(&p.pg.bin);
    let out = other.restore("2020-01-01T00:00:00Z", &p.env(), &[]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("before the recovery window ("),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_dir(&other.dir).unwrap().count(), 0);
}

#[test]
fn a_role_without_replication_is_told_what_to_grant() {
    let pg = pg();
    let role = unique("norepl").to_lowercase().replace('-', "_");
    pg.psql(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN PASSWORD 'pw'"),
    );
    let spool = temp_dir("spool");
    let bucket = garage().bucket("norepl");
    let mut env = vars(&[
        (
            "BACKUP_DATABASE_URL",
            &format!("postgres://{role}:pw@127.0.0.1:{}/postgres", pg.port),
        ),
        (
            "BACKUP_LISTEN_ADDRESS",
            &format!("127.0.0.1:{}", free_port()),
        ),
        ("BACKUP_WAL_ARCHIVE", "true"),
        ("BACKUP_WAL_SPOOL_DIR", &spool.to_string_lossy()),
    ]);
    env.extend(garage().env(&bucket));
    let mut cmd = pgbackup_cmd(&["run"], &env);
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(start.elapsed() < Duration::from_secs(30));
    let last = said.lines().last().unwrap_or("");
    assert!(last.contains("no REPLICATION privilege"), "{said}");
    assert!(
        last.contains(&format!("ALTER ROLE {role} REPLICATION")),
        "{said}"
    );
    assert!(last.contains("host replication"), "{said}");
    assert!(!said.contains("pw@"), "{said}");
    // The preflight says the same, before anything runs.
    let check = pgbackup(&["check"], &env);
    assert_eq!(check.code, 2, "{}", check.all());
    assert!(
        check.stderr.contains("no REPLICATION privilege"),
        "{}",
        check.all()
    );
    assert!(
        !std::fs::read_dir(&spool).unwrap().any(|_| true),
        "nothing spooled"
    );
}

#[test]
fn a_store_down_for_a_minute_loses_nothing_and_the_lag_shows_it() {
    let p = Pitr::new("pitr-down");
    let proxy = crate::proxy::Proxy::start(garage().port);
    let mut env = p.env();
    env.retain(|(k, _)| k != "AWS_S3_ENDPOINT");
    env.push(("AWS_S3_ENDPOINT".into(), proxy.endpoint()));
    let _d = p.daemon_with(&env);
    let r = pgbackup(&["basebackup"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    p.wait_archived();
    let stored_before = p.metric("backup_wal_last_archived_timestamp_seconds");

    proxy.down();
    let until = Instant::now() + Duration::from_secs(60);
    let mut peak_lag = 0.0f64;
    while Instant::now() < until {
        // About 3 MiB of WAL a round: segments complete while the store is away.
        p.pg.psql(
            "postgres",
            "INSERT INTO t (pad) SELECT repeat(md5(g::text), 30) FROM generate_series(1, 3000) g",
        );
        std::thread::sleep(Duration::from_millis(500));
        peak_lag = peak_lag.max(p.metric("backup_wal_archive_lag_bytes"));
    }
    assert!(
        peak_lag > 16.0 * 1024.0 * 1024.0,
        "the lag shows the outage: {peak_lag}"
    );
    assert!(
        p.metric("backup_wal_last_archived_timestamp_seconds") - stored_before < 5.0,
        "nothing was stored while the store was down"
    );
    let spooled = std::fs::read_dir(&p.spool).unwrap().count();
    assert!(
        spooled >= 2,
        "completed segments wait in the spool: {spooled}"
    );

    proxy.restore();
    p.write(1, Duration::ZERO);
    eventually("the archive to catch up", Duration::from_secs(90), || {
        p.metric("backup_wal_archive_lag_bytes") < 1024.0 * 1024.0
    });
    p.wait_archived();
    let left: Vec<String> = std::fs::read_dir(&p.spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "the spool drained: {left:?}");
    assert!(p.metric("backup_wal_archived_segments_total") >= 2.0);

    let all = p.ids("");
    let dir = Restored::dir_for(&p.pg.bin);
    let out = dir.restore("latest", &p.env(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    dir.start();
    assert_eq!(
        ids(&dir.psql("SELECT id FROM t ORDER BY id")),
        all,
        "{}",
        dir.log()
    );
}

/// Renames a stored base backup to an older time, metadata and all, as if
/// it had been taken long ago.
fn age_base(bucket: &str, key: &str, older: &str) -> String {
    let g = garage();
    let new_key = format!("backup_base/{older}.tar.zst");
    rt().block_on(async {
        g.client()
            .copy_object()
            .bucket(bucket)
            .key(&new_key)
            .copy_source(format!("{bucket}/{key}"))
            .send()
            .await
            .unwrap();
        g.client()
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
    });
    new_key
}

fn wal_keys(bucket: &str) -> Vec<String> {
    garage()
        .keys(bucket)
        .into_iter()
        .filter(|k| k.starts_with("backup_wal/") && !k.contains(".history"))
        .collect()
}

#[test]
fn retention_keeps_every_segment_a_kept_base_backup_needs() {
    let p = Pitr::new("pitr-ret");
    let _d = p.daemon();
    p.write(5, Duration::from_millis(20));
    p.basebackup();
    let first = garage()
        .keys(&p.bucket)
        .into_iter()
        .find(|k| k.starts_with("backup_base/"))
        .unwrap();
    let old = age_base(&p.bucket, &first, "2020-01-01_00-00-00");
    p.write(5, Duration::from_millis(20));
    p.basebackup();
    p.write(5, Duration::from_millis(100));
    std::thread::sleep(Duration::from_millis(700));
    let t = p.now();
    std::thread::sleep(Duration::from_millis(700));
    p.write(5, Duration::from_millis(20));
    p.basebackup();
    p.write(5, Duration::from_millis(20));
    p.wait_archived();
    let before: Vec<String> = wal_keys(&p.bucket);

    let mut prune_env = p.env();
    prune_env.push(("BACKUP_RETENTION_DAYS".into(), "1".into()));
    prune_env.push(("BACKUP_RETENTION_MIN_COUNT".into(), "1".into()));
    let out = pgbackup(&["prune"], &prune_env);
    assert_eq!(out.code, 0, "{}", out.all());
    let keys = garage().keys(&p.bucket);
    assert!(!keys.contains(&old), "the old base backup went: {keys:?}");
    let after = wal_keys(&p.bucket);
    assert!(
        after.len() < before.len(),
        "WAL only the deleted base needed went: {before:?} -> {after:?}"
    );

    // The oldest kept base backup still recovers, to a time before the newest.
    let expected = p.ids(&format!("WHERE at <= '{t}'"));
    let r = Restored::dir_for(&p.pg.bin);
    let out = r.restore(&t, &p.env(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    r.start();
    assert_eq!(
        ids(&r.psql("SELECT id FROM t ORDER BY id")),
        expected,
        "{}",
        r.log()
    );
}

#[test]
fn wal_fetch_verifies_every_segment_and_tells_missing_from_corrupt() {
    let p = Pitr::new("pitr-fetch");
    let _d = p.daemon();
    p.basebackup();
    p.write(3, Duration::ZERO);
    p.wait_archived();
    // A completed segment: `wal/<24 hex digits>.zst`.
    let seg_key = wal_keys(&p.bucket)
        .into_iter()
        .find(|k| k.len() == "backup_wal/000000010000000000000002.zst".len())
        .expect("a completed segment");
    let name = seg_key
        .trim_start_matches("backup_wal/")
        .trim_end_matches(".zst")
        .to_string();
    let out_dir = temp_dir("walfetch");
    let dest = out_dir.join("RECOVERYXLOG");
    let dest_s = dest.to_string_lossy().into_owned();

    let ok = pgbackup(&["wal-fetch", &name, &dest_s], &p.env());
    assert_eq!(ok.code, 0, "{}", ok.all());
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 16 << 20);
    scanner_agrees_with_pg_waldump(&p.pg.bin, &dest, &name);
    // The segment in progress: served under its full name, zero-padded.
    let partial = wal_keys(&p.bucket)
        .into_iter()
        .find(|k| k.contains(".partial."))
        .expect("a partial segment");
    let partial_name = &partial["backup_wal/".len().."backup_wal/".len() + 24];
    let partial_dest = out_dir.join("partial");
    let got = pgbackup(
        &["wal-fetch", partial_name, &partial_dest.to_string_lossy()],
        &p.env(),
    );
    assert_eq!(got.code, 0, "{}", got.all());
    assert_eq!(std::fs::metadata(&partial_dest).unwrap().len(), 16 << 20);
    scanner_agrees_with_pg_waldump(&p.pg.bin, &partial_dest, partial_name);

    let missing = pgbackup(
        &["wal-fetch", "0000000100000000000000FE", &dest_s],
        &p.env(),
    );
    assert_eq!(missing.code, 1, "{}", missing.all());

    // Same metadata, other bytes: caught before PostgreSQL sees them.
    let (stored, meta) = garage().get(&p.bucket, &seg_key);
    assert_eq!(meta.get("sha256"), Some(&sha256_hex(&stored)));
    let mut bad = stored.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    garage().put(&p.bucket, &seg_key, bad, meta);
    std::fs::remove_file(&dest).unwrap();
    let corrupt = pgbackup(&["wal-fetch", &name, &dest_s], &p.env());
    assert_eq!(corrupt.code, 255, "{}", corrupt.all());
    assert!(corrupt.stderr.contains("corrupt"), "{}", corrupt.stderr);
    assert!(!dest.exists(), "nothing handed to the server");
}

#[test]
fn a_corrupt_base_backup_is_named_and_leaves_the_target_empty() {
    let p = Pitr::new("pitr-corrupt-base");
    let _d = p.daemon();
    p.write(3, Duration::ZERO);
    let out = p.basebackup();
    let key = out.split_whitespace().next().unwrap().to_string();
    assert!(key.starts_with("backup_base/"), "{out}");
    p.write(1, Duration::ZERO);
    p.wait_archived();
    let (mut bytes, meta) = garage().get(&p.bucket, &key);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    garage().put(&p.bucket, &key, bytes, meta);

    let r = Restored::dir_for(&p.pg.bin);
    let mut env = p.env();
    env.push(("PG_BIN_DIR".into(), p.pg.bin.to_string_lossy().into_owned()));
    let out = r.restore("latest", &env, &["--start", "--port", &r.port.to_string()]);
    assert_eq!(out.code, 1, "{}", out.all());
    // The last line is the error, and it names the object and the cause.
    let line = out.stderr.lines().last().unwrap_or_default();
    assert!(
        line.contains(&key) && line.contains("corrupt: its sha256 is"),
        "{}",
        out.stderr
    );
    assert!(
        std::fs::read_dir(&r.dir).unwrap().next().is_none(),
        "the target directory is left empty"
    );
    assert!(!r.dir.with_file_name("data.wal-fetch.env").exists());
    assert!(
        !r.dir.join("postmaster.pid").exists(),
        "no server was started"
    );
}

#[test]
fn wal_fetch_reads_ahead_only_verified_segments_and_hands_them_over_by_rename() {
    let p = Pitr::new("pitr-ahead");
    let _d = p.daemon();
    p.basebackup();
    // A commit in each segment (one query string would be one transaction,
    // committed after the switch).
    for _ in 0..6 {
        p.write(1, Duration::ZERO);
        p.pg.psql("postgres", "SELECT pg_switch_wal()");
    }
    let completed = || -> Vec<String> {
        let mut v: Vec<String> = wal_keys(&p.bucket)
            .into_iter()
            .filter(|k| k.len() == "backup_wal/000000010000000000000002.zst".len())
            .map(|k| k["backup_wal/".len().."backup_wal/".len() + 24].to_string())
            .collect();
        v.sort();
        v
    };
    eventually("six completed segments", Duration::from_secs(60), || {
        completed().len() >= 6
    });
    let segs = completed();
    let key = |name: &str| format!("backup_wal/{name}.zst");
    let original =
        |name: &str| zstd::decode_all(&garage().get(&p.bucket, &key(name)).0[..]).unwrap();
    let corrupt = |name: &str| {
        let (mut bytes, meta) = garage().get(&p.bucket, &key(name));
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        garage().put(&p.bucket, &key(name), bytes, meta);
    };
    let (s0, s1, s2, s3) = (&segs[0], &segs[1], &segs[2], &segs[3]);
    let good_s1 = original(s1);
    let good_s2 = original(s2);
    // The read-ahead must stop at a corrupt segment, never keep it.
    corrupt(s3);

    let data = temp_dir("ahead");
    let pg_wal = data.join("pg_wal");
    std::fs::create_dir(&pg_wal).unwrap();
    let dest = pg_wal.join("RECOVERYXLOG");
    let dest_s = dest.to_string_lossy().into_owned();
    let ahead = pg_wal.join("pgbackup-prefetch");
    let mut env = p.env();
    env.push(("BACKUP_WAL_PREFETCH_SEGMENTS".into(), "8".into()));
    let fetch = |name: &str| pgbackup(&["wal-fetch", name, &dest_s], &env);

    let r = fetch(s0);
    assert_eq!(r.code, 0, "{}", r.all());
    eventually(
        "the read-ahead to stop at the corrupt segment",
        Duration::from_secs(60),
        || {
            ahead.join(s2).exists()
                && !std::fs::read_dir(&ahead)
                    .unwrap()
                    .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".part"))
                && std::fs::OpenOptions::new()
                    .write(true)
                    .open(ahead.join("lock"))
                    .unwrap()
                    .try_lock()
                    .is_ok()
        },
    );
    assert!(ahead.join(s1).exists());
    assert!(
        !ahead.join(s3).exists(),
        "a corrupt segment is never read ahead"
    );

    // Corrupted in the store after it was read ahead: the request is
    // served the verified copy, by rename, without reading the store.
    corrupt(s1);
    let r = fetch(s1);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        std::fs::read(&dest).unwrap() == good_s1,
        "the read-ahead copy is the stored segment"
    );
    assert!(!ahead.join(s1).exists(), "handed over, not copied");
    assert!(!ahead.join(s0).exists());

    let r = fetch(s2);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(std::fs::read(&dest).unwrap() == good_s2);
    scanner_agrees_with_pg_waldump(&p.pg.bin, &dest, s2);

    // The corrupt one is fetched by the request itself, and refused.
    std::fs::remove_file(&dest).unwrap();
    let r = fetch(s3);
    assert_eq!(r.code, 255, "{}", r.all());
    assert!(r.stderr.contains("corrupt"), "{}", r.stderr);
    assert!(!dest.exists(), "nothing handed to the server");

    // Off: no directory, one segment per request.
    let plain = temp_dir("noahead");
    let plain_dest = plain.join("RECOVERYXLOG");
    let mut env0 = p.env();
    env0.push(("BACKUP_WAL_PREFETCH_SEGMENTS".into(), "0".into()));
    let r = pgbackup(&["wal-fetch", s2, &plain_dest.to_string_lossy()], &env0);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(std::fs::read(&plain_dest).unwrap() == good_s2);
    assert!(!plain.join("pgbackup-prefetch").exists());
}

/// pgbackup's WAL scanner against PostgreSQL's own reader, on a real
/// segment: the same commits and aborts, at the same LSNs and times, and
/// the same end of valid WAL.
fn scanner_agrees_with_pg_waldump(bin: &Path, file: &Path, name: &str) {
    let dir = temp_dir("waldump");
    std::fs::copy(file, dir.join(name)).unwrap();
    let out = Command::new(bin.join("pg_waldump"))
        .arg("--path")
        .arg(&dir)
        .arg(name)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // rmgr: Transaction len (rec/tot): 34/34, tx: 735, lsn: 0/02000398, prev 0/02000360, desc: COMMIT 2026-11-30 18:59:04.149276 UTC
    let mut theirs = Vec::new();
    let mut last_end = None;
    for l in text.lines() {
        let lsn = l
            .split("lsn: ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(pgbackup::wal::Lsn::parse);
        let len = l
            .split("len (rec/tot): ")
            .nth(1)
            .and_then(|r| r.split('/').nth(1))
            .and_then(|r| r.split(',').next())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let (Some(lsn), Some(len)) = (lsn, len) {
            last_end = Some(record_end(lsn.0, len));
        }
        if !l.starts_with("rmgr: Transaction") {
            continue;
        }
        let desc = l.split("desc: ").nth(1).unwrap_or("");
        let commit = desc.starts_with("COMMIT");
        if !(commit || desc.starts_with("ABORT")) {
            continue;
        }
        let when = desc
            .split_whitespace()
            .skip(1)
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let time = chrono::NaiveDateTime::parse_from_str(&when, "%Y-%m-%d %H:%M:%S%.f")
            .unwrap_or_else(|e| panic!("{when:?}: {e}"))
            .and_utc();
        theirs.push((lsn.unwrap().0, time, commit));
    }
    let bytes = std::fs::read(file).unwrap();
    let scan = pgbackup::wal::record::scan(&bytes).unwrap();
    let ours: Vec<_> = scan
        .xact_ends
        .iter()
        .map(|x| (x.lsn, x.time, x.commit))
        .collect();
    assert!(
        !theirs.is_empty(),
        "pg_waldump found no transaction:\n{text}"
    );
    assert_eq!(ours, theirs);
    // pg_waldump stops at the switch record, or at the end of valid WAL.
    assert_eq!(Some(scan.end_lsn), last_end, "end of valid WAL");
}

#[test]
fn encrypted_wal_and_base_backups_restore_only_with_the_identity() {
    let p = Pitr::new("pitr-age");
    let keys = temp_dir("pitr-keys");
    let (uid, gid) = postgres_user();
    std::os::unix::fs::chown(&keys, Some(uid), Some(gid)).unwrap();
    let identity = keys.join("identity.txt");
    run_ok(Command::new("age-keygen").arg("-o").arg(&identity));
    // The server's user runs wal-fetch: the identity must be readable by it.
    std::os::unix::fs::chown(&identity, Some(uid), Some(gid)).unwrap();
    let public = run_ok(Command::new("age-keygen").arg("-y").arg(&identity))
        .trim()
        .to_string();
    let mut env = p.env();
    env.push(("BACKUP_ENCRYPTION_RECIPIENTS".into(), public));
    let _d = p.daemon_with(&env);
    let r = pgbackup(&["basebackup"], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    const SECRET_ROW: &str = "Ada Lovelace, 12 Marylebone Rd";
    p.pg.psql(
        "postgres",
        &format!("INSERT INTO t (pad) SELECT '{SECRET_ROW}' FROM generate_series(1, 50)"),
    );
    p.write(3, Duration::from_millis(50));
    p.wait_archived();
    let all = p.ids("");

    let keys_stored = garage().keys(&p.bucket);
    let physical: Vec<&String> = keys_stored
        .iter()
        .filter(|k| k.starts_with("backup_wal/") || k.starts_with("backup_base/"))
        .collect();
    assert!(physical.len() >= 3, "{keys_stored:?}");
    for k in &physical {
        assert!(k.ends_with(".age"), "{k} is not encrypted");
        let (bytes, _) = garage().get(&p.bucket, k);
        assert!(
            !bytes
                .windows(SECRET_ROW.len())
                .any(|w| w == SECRET_ROW.as_bytes()),
            "{k} holds a row in clear"
        );
    }

    // Without the identity: refused before the directory is touched.
    let r1 = Restored::dir_for(&p.pg.bin);
    let out = r1.restore("latest", &p.env(), &[]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("BACKUP_ENCRYPTION_IDENTITY_FILE"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_dir(&r1.dir).unwrap().count(), 0);

    let mut with_id = p.env();
    with_id.push((
        "BACKUP_ENCRYPTION_IDENTITY_FILE".into(),
        identity.to_string_lossy().into_owned(),
    ));
    let out = r1.restore("latest", &with_id, &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    r1.start();
    assert_eq!(
        ids(&r1.psql("SELECT id FROM t ORDER BY id")),
        all,
        "{}",
        r1.log()
    );
    let secret = std::fs::read_to_string(&identity).unwrap();
    let key_line = secret
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    assert!(!out.all().contains(key_line), "the identity was printed");
}

/// Where a record of `len` bytes at `lsn` ends: the page headers it
/// crosses (8 KiB pages, 16 MiB segments) count too.
fn record_end(lsn: u64, len: u64) -> u64 {
    const PAGE: u64 = 8192;
    let (mut end, mut left) = (lsn, len);
    loop {
        let room = PAGE - end % PAGE;
        if left <= room {
            return end + left;
        }
        left -= room;
        end += room;
        end += if end % (16 << 20) == 0 { 40 } else { 24 };
    }
}
