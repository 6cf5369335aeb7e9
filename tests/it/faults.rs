//! Bad input and faults: each gives a one-line error naming the cause and
//! stage, exits 1, leaks no secret, and leaves nothing in storage.

use crate::harness::*;

/// Runs a backup that must fail; checks the shared promises.
fn expect_failure(env: &[(String, String)], stage: &str, cause: &str) -> Run {
    let run = pgbackup(&["backup"], env);
    assert_eq!(run.code, 1, "expected exit 1: {}", run.all());
    let last = run.stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: "),
        "last line is the error: {}",
        run.stderr
    );
    assert!(
        last.contains(&format!("{stage} failed: ")),
        "stage {stage} not named: {last}"
    );
    assert!(
        last.to_lowercase().contains(&cause.to_lowercase()),
        "cause {cause:?} not named: {last}"
    );
    for (k, v) in env {
        if k.contains("SECRET") || k.contains("PASSWORD") {
            assert!(!run.all().contains(v.as_str()), "{k} leaked: {}", run.all());
        }
    }
    if let Some((_, url)) = env.iter().find(|(k, _)| k == "BACKUP_DATABASE_URL") {
        assert!(
            !run.all().contains(&pg().password),
            "password leaked from {url}"
        );
    }
    run
}

fn s3_env(db_url: &str, bucket: &str) -> Vec<(String, String)> {
    let mut env = vars(&[("BACKUP_DATABASE_URL", db_url)]);
    env.extend(garage().env(bucket));
    env
}

fn assert_bucket_clean(bucket: &str) {
    let g = garage();
    assert_eq!(g.keys(bucket), Vec::<String>::new(), "objects left behind");
    assert_eq!(
        g.pending_uploads(bucket),
        0,
        "multipart uploads left pending"
    );
}

#[test]
fn unreachable_database() {
    let bucket = garage().bucket("f-unreach");
    let url = format!("postgres://postgres:pw@127.0.0.1:{}/x", free_port());
    expect_failure(
        &s3_env(&url, &bucket),
        "connect",
        "cannot connect to database",
    );
    assert_bucket_clean(&bucket);
}

#[test]
fn wrong_password() {
    let pg = pg();
    let bucket = garage().bucket("f-pw");
    let url = format!(
        "postgres://postgres:wrong-secret-pw@127.0.0.1:{}/postgres",
        pg.port
    );
    expect_failure(
        &s3_env(&url, &bucket),
        "connect",
        "password authentication failed",
    );
    assert_bucket_clean(&bucket);
}

#[test]
fn missing_database() {
    let pg = pg();
    let bucket = garage().bucket("f-nodb");
    expect_failure(
        &s3_env(&pg.url("no_such_db"), &bucket),
        "connect",
        "does not exist",
    );
    assert_bucket_clean(&bucket);
}

#[test]
fn pg_dump_killed_mid_stream_leaves_no_object_or_upload() {
    let pg = pg();
    let db = pg.fresh_db("killed");
    load_fixture(pg, &db, 300_000);
    let bucket = garage().bucket("f-kill");
    // The real pg_dump streams ~10 MiB (more than one part), then the process
    // pgbackup started dies by SIGKILL.
    let bin = fake_pg_dump(pg, "$REAL \"$@\" | head -c 10000000\nkill -9 $$");
    let mut env = s3_env(&pg.url(&db), &bucket);
    env.extend(vars(&[
        ("PG_BIN_DIR", bin.to_str().unwrap()),
        ("BACKUP_COMPRESSION", "none"),
    ]));
    expect_failure(&env, "dump", "killed by signal 9");
    assert_bucket_clean(&bucket);
}

#[test]
fn pg_dump_error_carries_its_own_message() {
    let pg = pg();
    let db = pg.fresh_db("pgerr");
    load_fixture(pg, &db, 10);
    let dir = temp_dir("pgerr");
    let env = vars(&[
        ("BACKUP_DATABASE_URL", &pg.url(&db)),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
        ("BACKUP_OPTIONS", "--table=no_such_table_here"),
    ]);
    expect_failure(&env, "dump", "no matching tables were found");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing written locally"
    );
}

#[test]
fn empty_dump_with_exit_0_is_a_failure() {
    let pg = pg();
    let db = pg.fresh_db("empty");
    let dir = temp_dir("empty");
    let bin = fake_pg_dump(pg, "exit 0");
    let env = vars(&[
        ("BACKUP_DATABASE_URL", &pg.url(&db)),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
        ("PG_BIN_DIR", bin.to_str().unwrap()),
    ]);
    expect_failure(&env, "dump", "wrote nothing");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "no file, not even a temp one"
    );
}

#[test]
fn pg_dump_older_than_the_server_fails_before_dumping() {
    let pg = pg();
    let bin = temp_dir("oldbin");
    std::fs::write(
        bin.join("pg_dump"),
        "#!/bin/sh\necho 'pg_dump (PostgreSQL) 13.9'\n",
    )
    .unwrap();
    make_executable(&bin.join("pg_dump"));
    let bucket = garage().bucket("f-ver");
    let mut env = s3_env(&pg.url("postgres"), &bucket);
    env.extend(vars(&[("PG_BIN_DIR", bin.to_str().unwrap())]));
    let run = expect_failure(&env, "version", "server is PostgreSQL 15 but pg_dump 13");
    assert!(
        run.stderr.contains("install postgresql-client-15"),
        "{}",
        run.stderr
    );
    assert_bucket_clean(&bucket);
}

#[test]
fn s3_unreachable() {
    let pg = pg();
    let db = pg.fresh_db("s3down");
    load_fixture(pg, &db, 10);
    let mut env = s3_env(&pg.url(&db), "whatever");
    for (k, v) in env.iter_mut() {
        if k == "AWS_S3_ENDPOINT" {
            *v = format!("http://127.0.0.1:{}", free_port());
        }
    }
    expect_failure(&env, "upload", "cannot reach the S3 endpoint");
}

#[test]
fn wrong_s3_credentials() {
    let pg = pg();
    let db = pg.fresh_db("s3creds");
    load_fixture(pg, &db, 10);
    let bucket = garage().bucket("f-creds");
    let mut env = s3_env(&pg.url(&db), &bucket);
    for (k, v) in env.iter_mut() {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = random_hex(32);
        }
    }
    expect_failure(
        &env,
        "upload",
        "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
    );
    assert_bucket_clean(&bucket);
}

#[test]
fn missing_bucket() {
    let pg = pg();
    let db = pg.fresh_db("s3nobucket");
    load_fixture(pg, &db, 10);
    let env = s3_env(&pg.url(&db), "no-such-bucket-here");
    expect_failure(&env, "upload", "NoSuchBucket");
}

#[test]
fn bad_configuration_exits_2_naming_the_variable() {
    for (env, var) in [
        (vars(&[("AWS_S3_BUCKET", "b")]), "BACKUP_DATABASE_URL"),
        (
            vars(&[
                ("BACKUP_DATABASE_URL", "postgres://u:topsecret@h/d"),
                ("BACKUP_LOCAL_DIR", "/tmp"),
                ("BACKUP_RETENTION_DAYS", "-1"),
            ]),
            "BACKUP_RETENTION_DAYS",
        ),
    ] {
        let run = pgbackup(&["backup"], &env);
        assert_eq!(run.code, 2, "{}", run.all());
        assert!(
            run.stderr.contains(&format!("invalid {var}: ")),
            "{}",
            run.stderr
        );
        assert!(!run.all().contains("topsecret"));
    }
    let run = pgbackup(&["no-such-command"], &[]);
    assert_eq!(run.code, 2);
}

// ---- the store misbehaving: a fault-injecting proxy in front of Garage ----

use crate::proxy::Proxy;
use std::time::Duration;

/// Environment for a backup of ~20 MB (uncompressed, so several parts) that
/// goes through `proxy`.
fn proxied(db: &str, bucket: &str, proxy: &Proxy) -> Vec<(String, String)> {
    let mut env = s3_env(&pg().url(db), bucket);
    for (k, v) in env.iter_mut() {
        if k == "AWS_S3_ENDPOINT" {
            *v = proxy.endpoint();
        }
    }
    env.extend(vars(&[("BACKUP_COMPRESSION", "none")]));
    env
}

fn assert_one_good_backup(bucket: &str) {
    let g = garage();
    let keys = g.backup_keys(bucket);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let (body, meta) = g.get(bucket, &keys[0]);
    assert_eq!(meta["sha256"], sha256_hex(&body));
    assert_eq!(g.pending_uploads(bucket), 0);
}

/// Starts a ~20 MB backup through a proxy that goes down after 12 MB went
/// upstream: the second 8 MiB part is in flight. Returns the bucket, the
/// proxy (to bring the store back) and the running backup.
fn backup_cut_mid_upload(name: &str) -> (String, Proxy, Guard) {
    let pg = pg();
    let db = pg.fresh_db(name);
    load_fixture(pg, &db, 300_000);
    let bucket = garage().bucket(&format!("f-{name}"));
    let proxy = Proxy::start(garage().port);
    proxy.cut_after(12_000_000);
    let child = Guard::spawn(
        pgbackup_cmd(&["backup"], &proxied(&db, &bucket, &proxy))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    (bucket, proxy, child)
}

#[test]
fn store_stopped_mid_upload_and_back_before_retries_run_out() {
    let (bucket, proxy, mut child) = backup_cut_mid_upload("flap");
    eventually(
        "the store to go down mid-upload",
        Duration::from_secs(60),
        || proxy.is_down(),
    );
    // Longer than the SDK's own retries of one request (3 attempts, less
    // than 3 s of backoff), so that pgbackup's part retry has to act; far
    // shorter than that retry's budget (1 + 2 + 4 + 8 s of waits).
    std::thread::sleep(Duration::from_secs(6));
    proxy.restore();
    let status = child
        .wait_timeout(Duration::from_secs(120))
        .expect("backup finishes");
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.success(),
        "backup should survive a 6 s outage: {err}"
    );
    assert!(err.contains("retrying part"), "a part was retried: {err}");
    assert_one_good_backup(&bucket);
}

#[test]
fn connections_reset_mid_part_are_retried() {
    let pg = pg();
    let db = pg.fresh_db("reset");
    load_fixture(pg, &db, 300_000);
    let bucket = garage().bucket("f-reset");
    let proxy = Proxy::start(garage().port);
    // The first three connections die after 1 MiB: mid-part.
    proxy.reset_next(3, 1 << 20);
    let run = pgbackup(&["backup"], &proxied(&db, &bucket, &proxy));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(proxy.resets_done() >= 1, "the fault was injected");
    assert_one_good_backup(&bucket);
}

#[test]
fn a_slow_store_still_gets_a_whole_backup() {
    let pg = pg();
    let db = pg.fresh_db("slow");
    load_fixture(pg, &db, 100_000);
    let bucket = garage().bucket("f-slow");
    let proxy = Proxy::start(garage().port);
    proxy.delay(2);
    let run = pgbackup(&["backup"], &proxied(&db, &bucket, &proxy));
    assert_eq!(run.code, 0, "{}", run.all());
    assert_one_good_backup(&bucket);
}

#[test]
fn store_gone_for_good_fails_the_upload_stage_and_leaves_no_object() {
    // `_proxy` stays alive until the end: it is the only route to the store.
    let (bucket, _proxy, mut child) = backup_cut_mid_upload("gone");
    let status = child
        .wait_timeout(Duration::from_secs(180))
        .expect("backup gives up");
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("error: upload failed: "), "{last}");
    assert!(
        garage().keys(&bucket).is_empty(),
        "no object under a backup name"
    );
    // The abort could not reach the store; the upload stays pending until
    // retention's stale-upload sweep or a lifecycle rule removes it.
}

#[test]
fn local_storage_running_out_of_space() {
    let pg = pg();
    let db = pg.fresh_db("nospace");
    load_fixture(pg, &db, 100_000);
    let dir = temp_dir("nospace");
    let env = vars(&[
        ("BACKUP_DATABASE_URL", &pg.url(&db)),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
        ("BACKUP_COMPRESSION", "none"),
    ]);
    // A 1 MiB file size limit stands in for a full disk: writes fail with EFBIG.
    let mut cmd = pgbackup_cmd(&["backup"], &env);
    // SAFETY: between fork and exec the hook only calls signal(2) and setrlimit(2), both
    // async-signal-safe, on a stack-local rlimit.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: upload failed: writing ") && last.contains("out of space"),
        "{last}"
    );
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "nothing half-written: {left:?}");
}
