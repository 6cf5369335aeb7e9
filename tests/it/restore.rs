//! Restore, verify, drills, list and presign against real PostgreSQL and
//! Garage: every restore is compared table by table with its source, and
//! every failure must leave the target as it was.

use crate::harness::*;

/// The fixture plus a large object (plain dumps wrap those in a
/// BEGIN/COMMIT of their own) and an empty table.
fn source_db(prefix: &str, bulk_rows: u64) -> String {
    let pg = pg();
    let db = pg.fresh_db(prefix);
    load_fixture(pg, &db, bulk_rows);
    pg.psql(
        &db,
        "SELECT lo_from_bytea(0, 'large object bytes'::bytea); CREATE TABLE public.empty_tbl (i int);",
    );
    db
}

fn s3_env(db: &str, bucket: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vars(&[("BACKUP_DATABASE_URL", &pg().url(db))]);
    env.extend(garage().env(bucket));
    env.extend(vars(extra));
    env
}

/// Runs a backup; returns the backup's key.
fn backup(env: &[(String, String)], bucket: &str) -> String {
    let before = garage().keys(bucket);
    let run = pgbackup(&["backup"], env);
    assert_eq!(run.code, 0, "backup failed: {}", run.all());
    let new: Vec<String> = garage()
        .keys(bucket)
        .into_iter()
        .filter(|k| !before.contains(k) && !k.ends_with(".manifest.json"))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    new[0].clone()
}

/// The tables a database holds, as one short string for messages.
fn user_tables(db: &str) -> String {
    pg().psql(
        db,
        "SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') FROM pg_tables \
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    .trim()
    .to_string()
}

fn large_object(db: &str) -> String {
    pg().psql(
        db,
        "SELECT convert_from(lo_get(oid), 'UTF8') FROM pg_largeobject_metadata",
    )
    .trim()
    .to_string()
}

/// Exit code, stage and cause on the last line, and no secret anywhere.
fn expect_failure(run: &Run, code: i32, stage: &str, cause: &str) {
    assert_eq!(run.code, code, "expected exit {code}: {}", run.all());
    let last = run.stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: "),
        "last line is the error: {}",
        run.stderr
    );
    assert!(last.contains(stage), "{stage:?} not named: {last}");
    assert!(last.contains(cause), "{cause:?} not named: {last}");
    no_secrets(run);
}

fn no_secrets(run: &Run) {
    assert!(
        !run.all().contains(&pg().password),
        "password leaked: {}",
        run.all()
    );
    assert!(!run.all().contains(&garage().secret), "S3 secret leaked");
}

/// Names of scratch databases a drill mentioned in its log.
fn scratch_names(run: &Run) -> Vec<String> {
    let mut out = Vec::new();
    let s = run.all();
    let mut rest = s.as_str();
    while let Some(i) = rest.find("pgbackup_drill_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

#[test]
fn restore_round_trips_each_format_table_by_table() {
    let pg = pg();
    let src = source_db("rsrc", 5000);
    for (format, compression) in [
        ("custom", "zstd"),
        ("custom", "gzip"),
        ("plain", "zstd"),
        ("plain", "none"),
    ] {
        let bucket = garage().bucket("rs-rt");
        let env = s3_env(
            &src,
            &bucket,
            &[
                ("BACKUP_FORMAT", format),
                ("BACKUP_COMPRESSION", compression),
            ],
        );
        let key = backup(&env, &bucket);
        // A target that does not exist yet is created.
        let target = new_db_name("rtgt");
        let run = pgbackup(&["restore", &key, "--target-url", &pg.url(&target)], &env);
        assert_eq!(run.code, 0, "{format}/{compression}: {}", run.all());
        no_secrets(&run);
        assert!(
            run.stdout.contains(&key) && run.stdout.contains("(created)"),
            "{}",
            run.stdout
        );
        assert_eq!(
            pg.snapshot(&target),
            pg.snapshot(&src),
            "{format}/{compression}: tables differ"
        );
        assert_eq!(
            pg.psql(&target, "SELECT count(*) FROM sales.\"vip_clientes\"")
                .trim(),
            "1"
        );
        assert_eq!(
            large_object(&target),
            "large object bytes",
            "{format}/{compression}"
        );
    }
}

#[test]
fn restore_refuses_a_non_empty_target_and_clean_replaces_it() {
    let pg = pg();
    let src = source_db("csrc", 2000);
    for format in ["custom", "plain"] {
        let bucket = garage().bucket("rs-clean");
        let env = s3_env(&src, &bucket, &[("BACKUP_FORMAT", format)]);
        let key = backup(&env, &bucket);
        let target = pg.fresh_db("ctgt");
        let url = pg.url(&target);
        let run = pgbackup(&["restore", &key, "--target-url", &url], &env);
        assert_eq!(run.code, 0, "{format}: {}", run.all());

        // Diverge from the backup, then try again without --clean: refused, nothing changed.
        pg.psql(
            &target,
            "DELETE FROM sales.customers WHERE id = 1; INSERT INTO public.bulk VALUES (999999, 'new'); \
             CREATE TABLE public.extra (i int); INSERT INTO public.extra VALUES (1);",
        );
        let before = pg.snapshot(&target);
        let run = pgbackup(&["restore", "latest", "--target-url", &url], &env);
        expect_failure(&run, 1, "restore failed: ", "pass --clean");
        assert!(run.stderr.contains("already holds"), "{}", run.stderr);
        assert_eq!(
            pg.snapshot(&target),
            before,
            "{format}: a refused restore changed the target"
        );

        let run = pgbackup(
            &["restore", "latest", "--target-url", &url, "--clean"],
            &env,
        );
        assert_eq!(run.code, 0, "{format} --clean: {}", run.all());
        let restored: Vec<(String, String)> = pg
            .snapshot(&target)
            .into_iter()
            .filter(|(t, _)| t != "public.extra")
            .collect();
        assert_eq!(
            restored,
            pg.snapshot(&src),
            "{format}: --clean did not restore the backup's data"
        );
        let extra = pg.psql(
            &target,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'extra'",
        );
        // custom: pg_restore --clean replaces the backup's objects only;
        // plain: the target's schemas are dropped first.
        let want = if format == "custom" { "1" } else { "0" };
        assert_eq!(extra.trim(), want, "{format}");
        assert_eq!(large_object(&target), "large object bytes", "{format}");
    }
}

#[test]
fn corrupt_and_truncated_objects_are_caught_by_verify_and_restore() {
    let pg = pg();
    let src = source_db("bad", 5000);
    for (format, compression) in [
        ("custom", "zstd"),
        ("plain", "gzip"),
        ("custom", "none"),
        ("plain", "none"),
    ] {
        let bucket = garage().bucket("rs-bad");
        let env = s3_env(
            &src,
            &bucket,
            &[
                ("BACKUP_FORMAT", format),
                ("BACKUP_COMPRESSION", compression),
            ],
        );
        let key = backup(&env, &bucket);
        let (good, meta) = garage().get(&bucket, &key);
        let run = pgbackup(&["verify", &key], &env);
        assert_eq!(run.code, 0, "intact {key}: {}", run.all());

        let mut flipped = good.clone();
        if compression == "none" {
            // Uncompressed, a changed letter in a row is data pg_restore and
            // psql accept: only the checksum can catch it, and only at the
            // end, so this proves nothing commits before the check.
            let at = find(&good, "degaard".as_bytes()).expect("row text in the dump");
            flipped[at] = b'x';
        } else {
            let mid = flipped.len() / 2;
            flipped[mid] ^= 0x40;
        }
        let truncated = good[..good.len() * 2 / 3].to_vec();
        // Bytes after a complete dump: the tools could read all they need,
        // and commit, long before the checksum is known.
        let mut appended = good.clone();
        appended.extend(std::iter::repeat_n(0u8, 4 << 20));
        for (what, body) in [
            ("flipped", flipped),
            ("truncated", truncated),
            ("appended", appended),
        ] {
            garage().put(&bucket, &key, body, meta.clone());
            let ctx = format!("{format}/{compression} {what}");

            let run = pgbackup(&["verify", &key], &env);
            expect_failure(&run, 1, "verify failed: ", "checksum mismatch");
            if what == "truncated" && compression != "none" {
                assert!(run.stderr.contains("truncated"), "{ctx}: {}", run.stderr);
            }

            // Into an existing empty database: it stays empty.
            let target = pg.fresh_db("badtgt");
            let run = pgbackup(&["restore", &key, "--target-url", &pg.url(&target)], &env);
            expect_failure(&run, 1, "restore failed: ", "checksum mismatch");
            assert_eq!(user_tables(&target), "", "{ctx}: the target was changed");
            assert_eq!(large_object(&target), "", "{ctx}");

            // Into a database the restore creates: dropped again.
            let created = new_db_name("badnew");
            let run = pgbackup(&["restore", &key, "--target-url", &pg.url(&created)], &env);
            expect_failure(&run, 1, "restore failed: ", "checksum mismatch");
            assert!(
                !db_exists(&created),
                "{ctx}: the created database was left behind"
            );
        }
        garage().put(&bucket, &key, good, meta);
        let run = pgbackup(&["verify", &key], &env);
        assert_eq!(run.code, 0, "{}", run.all());
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn a_drill_passes_and_removes_its_scratch_database() {
    let pg = pg();
    let src = source_db("dsrc", 2000);
    for format in ["custom", "plain"] {
        let bucket = garage().bucket("rs-drill");
        let env = s3_env(
            &src,
            &bucket,
            &[
                ("BACKUP_FORMAT", format),
                (
                    "BACKUP_VERIFY_SQL",
                    "SELECT count(*) = 3 FROM sales.customers",
                ),
            ],
        );
        let key = backup(&env, &bucket);
        let run = pgbackup(&["verify", "latest", "--restore"], &env);
        assert_eq!(run.code, 0, "{format}: {}", run.all());
        no_secrets(&run);
        assert!(
            run.stdout.contains("drill ok") && run.stdout.contains(&key),
            "{}",
            run.stdout
        );
        assert!(run.stdout.contains("time to recover"), "{}", run.stdout);
        // bulk, customers and peças had rows; empty_tbl is not expected to.
        assert!(
            run.stdout.contains("3 with rows at backup time"),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout.contains("BACKUP_VERIFY_SQL true"),
            "{}",
            run.stdout
        );
        let scratch = scratch_names(&run);
        assert_eq!(scratch.len(), 1, "{}", run.all());
        assert!(
            !db_exists(&scratch[0]),
            "scratch database {} left behind",
            scratch[0]
        );
    }

    // A given scratch database is used as it is, and left empty.
    let bucket = garage().bucket("rs-drill-given");
    let given = pg.fresh_db("given");
    let mut env = s3_env(&src, &bucket, &[]);
    env.extend(vars(&[("BACKUP_VERIFY_DATABASE_URL", &pg.url(&given))]));
    backup(&env, &bucket);
    let run = pgbackup(&["verify", "latest", "--restore"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(db_exists(&given));
    assert_eq!(
        pg.snapshot(&given),
        Vec::new(),
        "the given scratch database was not emptied"
    );
    assert_eq!(
        large_object(&given),
        "",
        "large objects left in the scratch database"
    );
    // ...but not when it holds tables: the drill restores only into an empty database.
    pg.psql(&given, "CREATE TABLE keep_me (i int)");
    let run = pgbackup(&["verify", "latest", "--restore"], &env);
    expect_failure(
        &run,
        1,
        "verify failed: ",
        "already holds 1 user table (public.keep_me)",
    );
    assert_eq!(pg.psql(&given, "SELECT count(*) FROM keep_me").trim(), "0");
}

#[test]
fn a_failing_drill_still_removes_its_scratch_database() {
    let src = source_db("dfail", 200);
    let bucket = garage().bucket("rs-drill-fail");
    let env = s3_env(
        &src,
        &bucket,
        &[(
            "BACKUP_VERIFY_SQL",
            "SELECT count(*) = 0 FROM sales.customers",
        )],
    );
    let key = backup(&env, &bucket);
    let run = pgbackup(&["verify", &key, "--restore"], &env);
    expect_failure(
        &run,
        1,
        "verify failed: ",
        "BACKUP_VERIFY_SQL returned f, not true",
    );
    let scratch = scratch_names(&run);
    assert_eq!(scratch.len(), 1, "{}", run.all());
    assert!(
        !db_exists(&scratch[0]),
        "scratch database {} left behind",
        scratch[0]
    );
}

#[test]
fn the_drill_checks_rows_against_the_manifest() {
    let src = source_db("dman", 200);
    let bucket = garage().bucket("rs-manifest");
    let env = s3_env(&src, &bucket, &[]);
    let key = backup(&env, &bucket);

    // The manifest sits beside the backup, written with it.
    let mkey = format!("{key}.manifest.json");
    assert!(garage().keys(&bucket).contains(&mkey));
    let (body, mut meta) = garage().get(&bucket, &mkey);
    assert_eq!(meta["sha256"], sha256_hex(&body));
    let mut m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(m["backup"], key.as_str());
    let tables = m["tables"].as_array_mut().unwrap();
    let find = |tables: &[serde_json::Value], s: &str, n: &str| {
        tables
            .iter()
            .position(|t| t["schema"] == s && t["name"] == n)
            .unwrap_or_else(|| panic!("{s}.{n} not in the manifest"))
    };
    assert_eq!(tables[find(tables, "sales", "customers")]["has_rows"], true);
    assert_eq!(
        tables[find(tables, "inventário", "peças")]["has_rows"],
        true
    );
    let empty = find(tables, "public", "empty_tbl");
    assert_eq!(tables[empty]["has_rows"], false);

    // Claim the empty table had rows: the drill must name it.
    tables[empty]["has_rows"] = serde_json::Value::Bool(true);
    let body = serde_json::to_vec(&m).unwrap();
    meta.insert("sha256".into(), sha256_hex(&body));
    garage().put(&bucket, &mkey, body, meta);
    let run = pgbackup(&["verify", "latest", "--restore"], &env);
    expect_failure(
        &run,
        1,
        "verify failed: ",
        "table public.empty_tbl had rows at backup time (estimate",
    );
    for s in scratch_names(&run) {
        assert!(!db_exists(&s), "scratch database {s} left behind");
    }
}

#[test]
fn list_json_is_newest_first_and_latest_resolves_everywhere() {
    let pg = pg();
    let (older, newer) = (source_db("lold", 10), source_db("lnew", 10));
    pg.psql(
        &newer,
        "INSERT INTO sales.customers VALUES (4, 'only in the newer one', NULL)",
    );
    let bucket = garage().bucket("rs-list");
    let k1 = backup(&s3_env(&older, &bucket, &[]), &bucket);
    // Names carry seconds: make sure the second backup's differs.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let env = s3_env(&newer, &bucket, &[("BACKUP_FORMAT", "plain")]);
    let k2 = backup(&env, &bucket);

    // An old copy, and objects that are not backups: never listed.
    let (body, meta) = garage().get(&bucket, &k1);
    let ancient = "backup_2020-01-01_00-00-00.dump.zst".to_string();
    garage().put(&bucket, &ancient, body.clone(), meta.clone());
    for foreign in [
        "backup_latest.dump.zst",
        "notes.txt",
        "backup_2020-01-01_00-00-00.dump.zst.bak",
    ] {
        garage().put(
            &bucket,
            foreign,
            b"not a backup".to_vec(),
            Default::default(),
        );
    }

    let run = pgbackup(&["list", "--json"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    let listed: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![k2.as_str(), k1.as_str(), ancient.as_str()]);
    assert_eq!(listed[2]["time"], "2020-01-01T00:00:00Z");
    assert_eq!(listed[2]["size"], body.len() as u64);
    assert_eq!(listed[0]["format"], "plain");
    assert_eq!(listed[1]["format"], "custom");
    let human = pgbackup(&["list"], &env);
    assert!(
        human.stdout.lines().nth(1).unwrap_or("").starts_with(&k2),
        "{}",
        human.stdout
    );

    // latest is the newest, for verify, restore and presign alike.
    let run = pgbackup(&["verify", "latest"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains(&k2), "{}", run.stdout);
    let target = new_db_name("latest");
    let run = pgbackup(
        &["restore", "latest", "--target-url", &pg.url(&target)],
        &env,
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(pg.snapshot(&target), pg.snapshot(&newer));
    let run = pgbackup(&["presign", "latest"], &env);
    assert!(run.stdout.contains(&k2), "{}", run.stdout);

    // list needs no database: a restore box may have storage access only.
    let storage_only: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "BACKUP_DATABASE_URL")
        .cloned()
        .collect();
    let run = pgbackup(&["list", "--json"], &storage_only);
    assert_eq!(run.code, 0, "{}", run.all());
}

/// GET with a plain HTTP client: no S3 client, no credentials.
fn http_get(url: &str) -> (u16, String, Vec<u8>) {
    http_url("GET", url)
}

#[test]
fn a_presigned_url_serves_the_backup_to_any_http_client() {
    let src = source_db("psrc", 2000);
    let bucket = garage().bucket("rs-presign");
    let env = s3_env(&src, &bucket, &[]);
    let key = backup(&env, &bucket);
    let run = pgbackup(&["presign", &key, "--expires", "10m"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    no_secrets(&run);
    let url = run.stdout.trim();
    assert!(url.contains("X-Amz-Expires=600"), "{url}");
    let (status, head, body) = http_get(url);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (stored, meta) = garage().get(&bucket, &key);
    assert!(body == stored, "presigned download differs from the object");
    assert_eq!(sha256_hex(&body), meta["sha256"]);
    // The checksum travels with the download, for checking by hand.
    let header = format!("x-amz-meta-sha256: {}", meta["sha256"]);
    assert!(head.to_lowercase().contains(&header), "{head}");

    for bad in ["8d", "10", "1x"] {
        let run = pgbackup(&["presign", &key, "--expires", bad], &env);
        expect_failure(&run, 2, "invalid --expires: ", bad);
    }

    // Local storage: the file's path.
    let dir = temp_dir("presign-local");
    let local = vars(&[
        ("BACKUP_DATABASE_URL", &pg().url(&src)),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
    ]);
    assert_eq!(pgbackup(&["backup"], &local).code, 0);
    let run = pgbackup(&["presign", "latest"], &local);
    assert_eq!(run.code, 0, "{}", run.all());
    let path = std::path::PathBuf::from(run.stdout.trim());
    assert!(path.starts_with(&dir) && path.is_file(), "{}", run.stdout);
}

#[test]
fn parallel_restore_spools_verifies_and_leaves_no_file() {
    let pg = pg();
    let src = source_db("jsrc", 20_000);
    let bucket = garage().bucket("rs-jobs");
    let tmp = temp_dir("spool");
    let mut env = s3_env(&src, &bucket, &[]);
    env.extend(vars(&[("TMPDIR", tmp.to_str().unwrap())]));
    let key = backup(&env, &bucket);
    let target = new_db_name("jobs");
    let run = pgbackup(
        &[
            "restore",
            &key,
            "--target-url",
            &pg.url(&target),
            "--jobs",
            "2",
        ],
        &env,
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(pg.snapshot(&target), pg.snapshot(&src));
    assert_eq!(large_object(&target), "large object bytes");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "spool file left in TMPDIR"
    );

    // A corrupt object is caught before pg_restore runs.
    let (good, meta) = garage().get(&bucket, &key);
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    garage().put(&bucket, &key, bad, meta);
    let target = new_db_name("jobsbad");
    let run = pgbackup(
        &[
            "restore",
            &key,
            "--target-url",
            &pg.url(&target),
            "--jobs",
            "2",
        ],
        &env,
    );
    expect_failure(&run, 1, "restore failed: ", "checksum mismatch");
    assert!(!db_exists(&target));
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "spool file left in TMPDIR"
    );

    // --jobs needs the custom format.
    let plain = s3_env(&src, &bucket, &[("BACKUP_FORMAT", "plain")]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let pkey = backup(&plain, &bucket);
    let run = pgbackup(
        &[
            "restore",
            &pkey,
            "--target-url",
            &pg.url(&target),
            "--jobs",
            "2",
        ],
        &plain,
    );
    expect_failure(&run, 2, "invalid --jobs: ", "custom-format");
}

/// A dump written to a pipe (as every backup is), with the data offsets that
/// `--jobs` fills in, is the archive pg_dump writes to a file: byte for byte,
/// but for the creation time in the header.
#[test]
fn filled_in_offsets_are_the_ones_pg_dump_writes_to_a_file() {
    use std::io::Write;
    let pg = pg();
    let src = source_db("offsets", 20_000);
    let dump = |file: Option<&std::path::Path>| {
        let mut c = pg.tool_cmd("pg_dump");
        c.args(["-Fc", "-Z0", "-d", &src]);
        if let Some(f) = file {
            c.arg("-f").arg(f);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let piped = dump(None);
    let file = temp_dir("offsets").join("seekable.dump");
    dump(Some(&file));
    let seekable = std::fs::read(&file).unwrap();

    let mut rec = pgbackup::seekable::OffsetRecorder::new(Vec::new());
    for piece in piped.chunks(64 * 1024 + 7) {
        rec.write_all(piece).unwrap();
    }
    let (mut patched, patches) = rec.into_parts();
    let patches = patches.expect("every block found");
    // Each table with data, and the large objects.
    let listed = run_ok(
        std::process::Command::new(pg.bin.join("pg_restore"))
            .arg("-l")
            .arg(&file),
    );
    let with_data = listed
        .lines()
        .filter(|l| !l.starts_with(';') && (l.contains(" TABLE DATA ") || l.contains(" BLOBS ")))
        .count();
    assert_eq!(patches.len(), with_data, "{listed}");
    assert!(with_data >= 3, "{listed}");
    for p in &patches {
        patched[p.at as usize..][..p.bytes.len()].copy_from_slice(&p.bytes);
    }
    assert_eq!(patched.len(), seekable.len());
    let differ: Vec<usize> = (0..patched.len())
        .filter(|&i| patched[i] != seekable[i])
        .collect();
    // The header: magic, version, sizes, format, compression, then the
    // creation time (seven 5-byte integers) ends before byte 64.
    assert!(
        differ.iter().all(|&i| i < 64),
        "differs beyond the creation time, first at {:?}",
        differ.iter().find(|&&i| i >= 64)
    );
}

#[test]
fn bad_names_are_usage_errors_and_missing_backups_fail() {
    let src = source_db("names", 10);
    let bucket = garage().bucket("rs-names");
    let env = s3_env(&src, &bucket, &[]);
    let url = pg().url("whatever");
    let run = pgbackup(&["restore", "newest", "--target-url", &url], &env);
    expect_failure(&run, 2, "invalid NAME: ", "not a backup name");
    let run = pgbackup(&["verify", "latest"], &env);
    expect_failure(&run, 1, "verify failed: ", "no backups");
    let run = pgbackup(
        &[
            "restore",
            "backup_2020-01-01_00-00-00.sql",
            "--target-url",
            &url,
        ],
        &env,
    );
    expect_failure(&run, 1, "restore failed: ", "not found");
    let run = pgbackup(
        &["restore", "latest", "--target-url", "mysql://u:pw@h/db"],
        &env,
    );
    expect_failure(&run, 2, "invalid --target-url: ", "scheme");
    let run = pgbackup(&["restore", "latest"], &env);
    assert_eq!(run.code, 2, "{}", run.all());
}

#[test]
fn restore_tools_get_the_password_in_their_environment_only() {
    let pg = pg();
    let src = source_db("argv", 10);
    // Wrappers that record argv and whether PGPASSWORD was set.
    let bin = temp_dir("rwrap");
    let log = bin.join("argv.log");
    std::os::unix::fs::symlink(pg.bin.join("pg_dump"), bin.join("pg_dump")).unwrap();
    for tool in ["pg_restore", "psql"] {
        std::fs::write(
            bin.join(tool),
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> {log}\n[ -n \"$PGPASSWORD\" ] && echo {tool}-PGPASSWORD-set >> {log}\nexec {real} \"$@\"\n",
                log = log.display(),
                real = pg.bin.join(tool).display()
            ),
        )
        .unwrap();
        make_executable(&bin.join(tool));
    }
    for format in ["custom", "plain"] {
        let bucket = garage().bucket("rs-argv");
        let mut env = s3_env(
            &src,
            &bucket,
            &[
                ("BACKUP_FORMAT", format),
                ("PG_BIN_DIR", bin.to_str().unwrap()),
            ],
        );
        let key = backup(&env, &bucket);
        // The target URL without its password: PGPASSWORD supplies it.
        env.extend(vars(&[("PGPASSWORD", &pg.password)]));
        let target = new_db_name("argvtgt");
        let bare = format!("postgres://postgres@127.0.0.1:{}/{target}", pg.port);
        let run = pgbackup(&["restore", &key, "--target-url", &bare], &env);
        assert_eq!(run.code, 0, "{format}: {}", run.all());
        assert_eq!(pg.snapshot(&target), pg.snapshot(&src));
        let run = pgbackup(&["verify", &key, "--restore"], &env);
        assert_eq!(run.code, 0, "{format}: {}", run.all());
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(&pg.password), "password in argv: {logged}");
    assert!(logged.contains("pg_restore-PGPASSWORD-set"), "{logged}");
    assert!(logged.contains("psql-PGPASSWORD-set"), "{logged}");
}

#[test]
fn local_storage_restores_verifies_and_drills() {
    let pg = pg();
    let src = source_db("lsrc", 1000);
    let dir = temp_dir("local-restore");
    let env = vars(&[
        ("BACKUP_DATABASE_URL", &pg.url(&src)),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
        ("BACKUP_FILE_PREFIX", "db/backup_"),
        ("BACKUP_FORMAT", "plain"),
    ]);
    assert_eq!(pgbackup(&["backup"], &env).code, 0);
    let mut files: Vec<String> = std::fs::read_dir(dir.join("db"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    // The backup and its manifest, each with its checksum: nothing else.
    assert_eq!(files.len(), 4, "{files:?}");
    assert!(files[0].ends_with(".sql.zst") && files[1].ends_with(".sql.zst.manifest.json"));
    assert!(
        files[2].ends_with(".sql.zst.manifest.json.sha256"),
        "{files:?}"
    );
    assert!(files[3].ends_with(".sql.zst.sha256"), "{files:?}");

    let run = pgbackup(&["verify", "latest"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("plain dump complete, 4 tables"),
        "{}",
        run.stdout
    );
    let run = pgbackup(&["verify", "latest", "--restore"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("3 with rows at backup time"),
        "{}",
        run.stdout
    );
    let target = new_db_name("ltgt");
    let run = pgbackup(
        &["restore", "latest", "--target-url", &pg.url(&target)],
        &env,
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(pg.snapshot(&target), pg.snapshot(&src));

    // A local checksum mismatch is caught the same way.
    let path = dir.join("db").join(&files[0]);
    let mut body = std::fs::read(&path).unwrap();
    let mid = body.len() / 2;
    body[mid] ^= 0x10;
    std::fs::write(&path, body).unwrap();
    let run = pgbackup(&["verify", "latest"], &env);
    expect_failure(&run, 1, "verify failed: ", "checksum mismatch");
}

/// Processes whose command line mentions `needle` (a tool left running).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(cmd);
            }
        }
    }
    out
}

#[test]
fn a_signal_stops_restores_and_drills_and_cleans_up() {
    use std::io::BufRead;
    let pg = pg();
    // Every restored row calls a slow function: the restore takes seconds.
    let src = pg.fresh_db("slow");
    pg.psql(
        &src,
        "CREATE FUNCTION public.slow(i int) RETURNS bool LANGUAGE sql AS 'SELECT pg_sleep(0.002) IS NOT NULL'; \
         CREATE TABLE public.t (i int CHECK (public.slow(i))); \
         INSERT INTO public.t SELECT generate_series(1, 2000);",
    );
    for format in ["custom", "plain"] {
        let bucket = garage().bucket("rs-signal");
        let env = s3_env(&src, &bucket, &[("BACKUP_FORMAT", format)]);
        let key = backup(&env, &bucket);
        let target = new_db_name("sig");
        let url = pg.url(&target);
        let restore: &[&str] = &["restore", &key, "--target-url", &url];
        let drill: &[&str] = &["verify", &key, "--restore"];
        for (what, args) in [("restore", restore), ("drill", drill)] {
            let mut child = pgbackup_cmd(args, &env)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
            let mut log = String::new();
            while !log.contains("restoring") && !log.contains("restore drill") {
                assert!(err.read_line(&mut log).unwrap() > 0, "{what}: {log}");
            }
            std::thread::sleep(std::time::Duration::from_millis(700));
            // SAFETY: kill(2) takes only integers; the child is not waited for yet: its pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let mut rest = String::new();
            std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
            let status = child.wait().unwrap();
            log.push_str(&rest);
            let ctx = format!("{format} {what}");
            assert_eq!(status.code(), Some(1), "{ctx}: {log}");
            let last = log.lines().last().unwrap_or("");
            assert!(
                last.starts_with("error: cancelled: ") && last.contains("stopped by a signal"),
                "{ctx}: {last}"
            );
            let db = if what == "restore" {
                target.clone()
            } else {
                scratch_names(&Run {
                    code: 1,
                    stdout: String::new(),
                    stderr: log.clone(),
                })[0]
                    .clone()
            };
            assert!(!db_exists(&db), "{ctx}: database {db} left behind");
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert_eq!(
                processes_mentioning(&db),
                Vec::<String>::new(),
                "{ctx}: tools left running"
            );
        }
    }
}

/// A table owned by a role the target server lacks: the restore fails
/// without --no-owner (and drops the database it created), restores with it
/// (every object then belongs to the restoring role), and --no-owner is a
/// usage error for a plain dump, whose SQL sets the owners itself.
#[test]
fn no_owner_restores_onto_a_server_without_the_roles() {
    let pg = pg();
    let src = pg.fresh_db("nosrc");
    let role = new_db_name("owner");
    pg.psql(
        &src,
        &format!(
            "CREATE ROLE {role}; CREATE TABLE public.owned (id int PRIMARY KEY, v text); \
             INSERT INTO public.owned SELECT g, 'row ' || g FROM generate_series(1, 100) g; \
             ALTER TABLE public.owned OWNER TO {role};"
        ),
    );
    let bucket = garage().bucket("rs-noowner");
    let custom = s3_env(&src, &bucket, &[]);
    let custom_key = backup(&custom, &bucket);
    let plain = s3_env(&src, &bucket, &[("BACKUP_FORMAT", "plain")]);
    let plain_key = backup(&plain, &bucket);
    // The role is gone, as on a new server.
    pg.psql(
        &src,
        &format!("REASSIGN OWNED BY {role} TO CURRENT_USER; DROP OWNED BY {role};"),
    );
    pg.psql("postgres", &format!("DROP ROLE {role}"));

    let target = new_db_name("notgt");
    let url = pg.url(&target);
    let run = pgbackup(&["restore", &custom_key, "--target-url", &url], &custom);
    expect_failure(
        &run,
        1,
        "restore failed: ",
        &format!("role \"{role}\" does not exist"),
    );
    assert!(
        !db_exists(&target),
        "the failed restore left {target} behind"
    );

    let run = pgbackup(
        &["restore", &custom_key, "--target-url", &url, "--no-owner"],
        &custom,
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(pg.snapshot(&target), pg.snapshot(&src));
    let owner = pg.psql(
        &target,
        "SELECT tableowner = current_user FROM pg_tables WHERE tablename = 'owned'",
    );
    assert_eq!(owner.trim(), "t", "owned by the restoring role");

    let plain_target = new_db_name("notgtp");
    let run = pgbackup(
        &[
            "restore",
            &plain_key,
            "--target-url",
            &pg.url(&plain_target),
            "--no-owner",
        ],
        &plain,
    );
    expect_failure(&run, 2, "invalid --no-owner: ", "plain format dump");
    assert!(
        !db_exists(&plain_target),
        "a refused restore created a database"
    );
}
