//! The store contract against a real S3 store, and what the object layer
//! promises users: a forgotten credential is one clear line, and two
//! backups in the same second never lose one.

use std::collections::BTreeSet;

use pgbackup::storage::s3::S3Storage;

use crate::harness::*;

/// The same suite the memory and local stores pass in the unit tests.
#[test]
fn garage_keeps_the_store_contract() {
    let bucket = garage().bucket("conf");
    let store = S3Storage::from_client(garage().client(), &bucket);
    rt().block_on(pgbackup::storage::conformance::run(&store, "conf/"));
    rt().block_on(pgbackup::storage::conformance::run(&store, ""));
    assert_eq!(garage().pending_uploads(&bucket), 0);
}

/// With no S3 credentials anywhere, `check` says so first (before it
/// tries the database), in one line naming the variables, and exits 2;
/// `backup` fails the same way under the `credentials` stage.
#[test]
fn missing_credentials_are_one_line_naming_the_variables() {
    let g = garage();
    let bucket = g.bucket("nocred");
    let home = temp_dir("nocred-home");
    let env: Vec<(String, String)> = g
        .env(&bucket)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
        .chain(vars(&[
            // Nothing reachable: a database error would mean the order is wrong.
            ("BACKUP_DATABASE_URL", "postgres://u:p@127.0.0.1:1/db"),
            ("HOME", home.to_str().unwrap()),
            // No instance role here; the chain would otherwise wait for IMDS.
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]))
        .collect();
    for cmd in ["check", "backup"] {
        let run = pgbackup(&[cmd], &env);
        assert_eq!(run.code, 2, "{cmd}: {}", run.all());
        let line = run
            .stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("{cmd}: no error line: {}", run.stderr));
        assert!(
            line.starts_with("error: credentials failed: no S3 credentials found"),
            "{cmd}: {line}"
        );
        assert!(line.contains("AWS_ACCESS_KEY_ID") && line.contains("AWS_SECRET_ACCESS_KEY"));
        assert!(line.len() < 300, "{cmd}: one short line: {line}");
    }
}

/// A manual backup beside another run on the same prefix, started in the
/// same second: two intact backups, neither replaced.
#[test]
fn two_backups_started_in_the_same_second_are_both_kept() {
    let (pg, g) = (pg(), garage());
    let db = pg.fresh_db("twins");
    load_fixture(pg, &db, 2_000);
    let bucket = g.bucket("twins");
    let dir = temp_dir("twins");
    let s3_env: Vec<(String, String)> = vars(&[("BACKUP_DATABASE_URL", &pg.url(&db))])
        .into_iter()
        .chain(g.env(&bucket))
        .collect();
    let local_env = vars(&[
        ("BACKUP_DATABASE_URL", &pg.url(&db)),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
    ]);
    for env in [&s3_env, &local_env] {
        let a = pgbackup_cmd(&["backup"], env)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let b = pgbackup_cmd(&["backup"], env)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        for o in [&a, &b] {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    let s3_keys = g.backup_keys(&bucket);
    assert_eq!(s3_keys.len(), 2, "{s3_keys:?}");
    let local: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".dump.zst"))
        .collect();
    assert_eq!(local.len(), 2, "{local:?}");
    for env in [&s3_env, &local_env] {
        let listed = pgbackup(&["list", "--json"], env);
        assert_eq!(listed.code, 0, "{}", listed.all());
        let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&listed.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        for n in &names {
            let v = pgbackup(&["verify", n], env);
            assert_eq!(v.code, 0, "{n}: {}", v.all());
        }
    }
}

/// Every secret from a file, as Docker and Kubernetes secrets give them:
/// the backup reaches Garage, and no secret shows in its output.
#[test]
fn secrets_from_files_reach_the_database_and_the_store() {
    let (pg, g) = (pg(), garage());
    let db = pg.fresh_db("secretfiles");
    load_fixture(pg, &db, 100);
    let bucket = g.bucket("secretfiles");
    let dir = temp_dir("secretfiles");
    let env_of_garage = g.env(&bucket);
    let get = |k: &str| {
        env_of_garage
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let (key_id, secret) = (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY"));
    let write = |name: &str, value: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        p.to_str().unwrap().to_string()
    };
    let home = temp_dir("secretfiles-home");
    let mut env: Vec<(String, String)> = env_of_garage
        .iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
        .cloned()
        .collect();
    env.extend(vars(&[
        ("BACKUP_DATABASE_URL_FILE", &write("url", &pg.url(&db))),
        ("AWS_ACCESS_KEY_ID_FILE", &write("id", &key_id)),
        ("AWS_SECRET_ACCESS_KEY_FILE", &write("secret", &secret)),
        // Nothing else could provide credentials.
        ("HOME", home.to_str().unwrap()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]));
    let run = pgbackup(&["backup"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(g.backup_keys(&bucket).len(), 1);
    for s in [&secret, &pg.password] {
        assert!(!run.all().contains(s.as_str()), "a secret in the output");
    }
    // The storage-only commands read the same files.
    let run = pgbackup(&["list"], &env);
    assert_eq!(run.code, 0, "{}", run.all());

    // A variable and its file both set: exit 2, naming the file variable.
    let mut both = env.clone();
    both.push(("AWS_SECRET_ACCESS_KEY".into(), secret.clone()));
    let run = pgbackup(&["backup"], &both);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("invalid AWS_SECRET_ACCESS_KEY_FILE"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains(secret.as_str()));
    // A file that cannot be read: exit 2, naming the variable and the path.
    let mut missing = env.clone();
    for (k, v) in missing.iter_mut() {
        if k == "BACKUP_DATABASE_URL_FILE" {
            *v = "/nonexistent/url".into();
        }
    }
    let run = pgbackup(&["backup"], &missing);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("BACKUP_DATABASE_URL_FILE") && run.stderr.contains("/nonexistent/url"),
        "{}",
        run.stderr
    );
}

/// The Railway template's BUCKET_SUBFOLDER: backups land in the folder,
/// and the reading commands find them there.
#[test]
fn the_templates_bucket_subfolder_holds_the_backups() {
    let (pg, g) = (pg(), garage());
    let db = pg.fresh_db("subfolder");
    load_fixture(pg, &db, 100);
    let bucket = g.bucket("subfolder");
    let mut env = vars(&[
        ("BACKUP_DATABASE_URL", &pg.url(&db)),
        ("BUCKET_SUBFOLDER", "railway/pg"),
    ]);
    env.extend(g.env(&bucket));
    let run = pgbackup(&["backup"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    let keys = g.keys(&bucket);
    assert!(!keys.is_empty());
    assert!(
        keys.iter().all(|k| k.starts_with("railway/pg/backup_")),
        "{keys:?}"
    );
    let run = pgbackup(&["verify", "latest"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
}

/// SUPPORT_OBJECT_LOCK=true: every upload (a single PutObject, and every
/// part of a multipart upload) carries the Content-MD5 that S3 Object Lock
/// buckets require. Garage has no Object Lock, so the requests themselves
/// are checked, through a recording proxy in front of it; Garage checks
/// the digests and the backups still verify.
#[test]
fn object_lock_uploads_carry_content_md5_on_every_part() {
    use base64::Engine;
    use md5::Digest;
    let (pg, g) = (pg(), garage());
    let proxy = crate::proxy::Proxy::start(g.port);
    let run_with = |rows: u64, lock: &str| {
        let db = pg.fresh_db("lock");
        // ~20 MiB of md5 text is more than one 8 MiB part: multipart.
        load_fixture(pg, &db, rows);
        let bucket = g.bucket("lock");
        let mut env = vars(&[
            ("BACKUP_DATABASE_URL", &pg.url(&db)),
            ("SUPPORT_OBJECT_LOCK", lock),
        ]);
        env.extend(g.env(&bucket));
        for (k, v) in env.iter_mut() {
            if k == "AWS_S3_ENDPOINT" {
                *v = proxy.endpoint();
            }
        }
        proxy.record();
        let run = pgbackup(&["backup"], &env);
        assert_eq!(run.code, 0, "{}", run.all());
        let uploads: Vec<_> = proxy
            .requests()
            .into_iter()
            .filter(|r| r.method == "PUT" && !r.body.is_empty())
            .filter(|r| r.header("x-amz-copy-source").is_none())
            .collect();
        let run = pgbackup(&["verify", "latest"], &env);
        assert_eq!(run.code, 0, "{}", run.all());
        uploads
    };
    let md5 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b));

    for (rows, multipart) in [(100, false), (300_000, true)] {
        let uploads = run_with(rows, "true");
        let parts = uploads
            .iter()
            .filter(|r| r.target.contains("partNumber="))
            .count();
        if multipart {
            assert!(parts >= 2, "expected a multipart upload: {parts} parts");
        } else {
            assert_eq!(parts, 0, "expected a single PutObject");
        }
        // The backup and its manifest at least.
        assert!(uploads.len() >= 2, "{} uploads", uploads.len());
        for r in &uploads {
            assert_eq!(
                r.header("content-md5"),
                Some(md5(&r.body).as_str()),
                "{} {} ({} bytes)",
                r.method,
                r.target,
                r.body.len()
            );
        }
    }
    // Without the switch no Content-MD5 is sent: the check above can fail.
    let uploads = run_with(100, "false");
    assert!(!uploads.is_empty());
    assert!(uploads.iter().all(|r| r.header("content-md5").is_none()));
}
