//! Retention against real Garage and a real directory: seeded backups with
//! old and new names next to foreign objects; only the planned ones go.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};
use pgbackup::config::Config;
use pgbackup::error::Stage;
use pgbackup::retention::{self, Options};
use pgbackup::storage::s3::S3Storage;

use crate::harness::*;

/// prune never connects to the database; the variable is still required.
const NO_DB: &str = "postgres://u@127.0.0.1:1/x";

fn name(prefix: &str, t: DateTime<Utc>, ext: &str) -> String {
    format!("{prefix}{}.{ext}", t.format("%Y-%m-%d_%H-%M-%S"))
}

fn ago(days: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::days(days)
}

fn set(v: impl IntoIterator<Item = impl Into<String>>) -> BTreeSet<String> {
    v.into_iter().map(Into::into).collect()
}

/// Writes small objects concurrently, each holding its own key.
fn put_all(bucket: &str, keys: &[String]) {
    rt().block_on(async {
        let c = garage().client();
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in keys.chunks(keys.len().div_ceil(16).max(1)) {
            let (c, chunk, bucket) = (c.clone(), chunk.to_vec(), bucket.to_string());
            tasks.spawn(async move {
                for k in chunk {
                    c.put_object()
                        .bucket(&bucket)
                        .key(&k)
                        .body(ByteStream::from(k.clone().into_bytes()))
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("put {k}: {e:?}"));
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
}

/// Every key, all pages (the harness's `keys` reads one page).
fn all_keys(bucket: &str) -> BTreeSet<String> {
    rt().block_on(async {
        let mut out = BTreeSet::new();
        let mut pages = garage()
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for o in page.unwrap().contents() {
                out.insert(o.key().unwrap().to_string());
            }
        }
        out
    })
}

/// Without the manifests a real backup writes beside itself.
fn backups_only(keys: BTreeSet<String>) -> BTreeSet<String> {
    keys.into_iter()
        .filter(|k| !k.ends_with(".manifest.json"))
        .collect()
}

fn s3_env(bucket: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vars(&[("BACKUP_DATABASE_URL", NO_DB)]);
    env.extend(garage().env(bucket));
    env.extend(vars(extra));
    env
}

fn lines_starting(out: &str, word: &str) -> BTreeSet<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix(word))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn prune_on_s3_deletes_exactly_the_old_backups_and_nothing_foreign() {
    let g = garage();
    let bucket = g.bucket("ret-s3");
    let p = "nightly/backup_";
    let old = vec![
        name(p, ago(40), "dump.zst"),
        name(p, ago(50), "sql.gz"),
        name(p, ago(60), "dump"),
    ];
    let new = vec![
        name(p, ago(0) - chrono::Duration::hours(1), "dump.zst"),
        name(p, ago(1), "dump.zst"),
        name(p, ago(29), "sql"),
    ];
    let foreign = vec![
        "nightly/notes.txt".to_string(),
        "nightly/backup_latest.sql.gz".to_string(),
        format!("{}.sha256", old[0]),
        format!("{}.partial", old[1]),
        name("nightly/backup_", ago(90), "tar"),
        "nightly/backup_2020-02-30_00-00-00.dump".to_string(),
        name("nightly/sub/backup_", ago(90), "dump"),
        name("backup_", ago(90), "dump.zst"),
        name("other/backup_", ago(90), "dump.zst"),
    ];
    // Manifests (restore drills' row counts) go with their backup.
    let old_manifest = format!("{}.manifest.json", old[0]);
    let new_manifest = format!("{}.manifest.json", new[0]);
    let all: Vec<String> = old
        .iter()
        .chain(&new)
        .chain(&foreign)
        .cloned()
        .chain([old_manifest.clone(), new_manifest.clone()])
        .collect();
    put_all(&bucket, &all);
    let env = s3_env(
        &bucket,
        &[
            ("BACKUP_FILE_PREFIX", p),
            ("BACKUP_RETENTION_DAYS", "30"),
            ("BACKUP_RETENTION_MIN_COUNT", "1"),
        ],
    );

    let dry = pgbackup(&["prune", "--dry-run"], &env);
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert_eq!(
        lines_starting(&dry.stdout, "would delete"),
        set(old.clone()),
        "{}",
        dry.stdout
    );
    assert_eq!(
        lines_starting(&dry.stdout, "keep"),
        set(new.clone()),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains("retention (dry run): would delete 3 backup(s)"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        all_keys(&bucket),
        set(all.clone()),
        "dry run deleted something"
    );

    let run = pgbackup(&["prune"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(
        lines_starting(&run.stdout, "deleted"),
        set(old.clone()),
        "{}",
        run.stdout
    );
    let left = all_keys(&bucket);
    assert_eq!(
        left,
        set(new.iter().chain(&foreign).cloned().chain([new_manifest]))
    );
    assert!(
        !left.contains(&old_manifest),
        "the deleted backup's manifest went with it"
    );

    // A second pass finds nothing more to do.
    let again = pgbackup(&["prune"], &env);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        again.stdout.contains("retention: deleted 0 backup(s)"),
        "{}",
        again.stdout
    );
    assert_eq!(all_keys(&bucket), left);
}

#[test]
fn min_count_keeps_the_newest_when_every_backup_is_old() {
    let bucket = garage().bucket("ret-min");
    let olds: Vec<String> = (0..6)
        .map(|i| name("backup_", ago(100 + i), "dump.zst"))
        .collect();
    put_all(&bucket, &olds);
    // Defaults: 30 days, newest 3 kept.
    let run = pgbackup(&["prune"], &s3_env(&bucket, &[]));
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(all_keys(&bucket), set(olds[..3].to_vec()));
    assert!(run.stdout.contains("3 kept"), "{}", run.stdout);
}

#[test]
fn prune_on_a_local_directory_takes_sidecars_along_and_leaves_foreign_files() {
    let dir = temp_dir("ret-local");
    let p = "sub/db_";
    let old = [name(p, ago(45), "dump.zst"), name(p, ago(31), "sql.gz")];
    let new = [name(p, ago(2), "dump.zst"), name(p, ago(0), "dump.zst")];
    let foreign = [
        "sub/notes.txt".to_string(),
        "sub/db_latest.sql.gz".to_string(),
        format!("sub/.{}.0123456789abcdef.partial", &old[0][4..]),
        // A sidecar whose backup is gone is not a backup either.
        format!("{}.sha256", name(p, ago(400), "dump.zst")),
        name("db_", ago(90), "dump.zst"),
        name("sub/other_", ago(90), "dump.zst"),
    ];
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for k in old.iter().chain(&new) {
        std::fs::write(dir.join(k), b"backup").unwrap();
        std::fs::write(dir.join(format!("{k}.sha256")), b"sum").unwrap();
    }
    for k in &foreign {
        std::fs::write(dir.join(k), b"foreign").unwrap();
    }
    // A directory with a backup's name is not a backup.
    let dir_named = name(p, ago(300), "dump");
    std::fs::create_dir_all(dir.join(&dir_named)).unwrap();

    let env = vars(&[
        ("BACKUP_DATABASE_URL", NO_DB),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
        ("BACKUP_FILE_PREFIX", p),
        ("BACKUP_RETENTION_MIN_COUNT", "1"),
    ]);
    let dry = pgbackup(&["prune", "--dry-run"], &env);
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert_eq!(
        lines_starting(&dry.stdout, "would delete"),
        set(old.clone())
    );
    assert!(
        old.iter().all(|k| dir.join(k).exists()),
        "dry run deleted a file"
    );

    let run = pgbackup(&["prune"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(lines_starting(&run.stdout, "deleted"), set(old.clone()));
    for k in &old {
        assert!(!dir.join(k).exists(), "{k} still there");
        assert!(
            !dir.join(format!("{k}.sha256")).exists(),
            "sidecar of {k} still there"
        );
    }
    for k in &new {
        assert!(
            dir.join(k).exists() && dir.join(format!("{k}.sha256")).exists(),
            "{k} gone"
        );
    }
    for k in foreign.iter().chain([&dir_named]) {
        assert!(dir.join(k).exists(), "foreign {k} was touched");
    }
}

#[test]
fn over_1000_backups_are_listed_across_pages_and_deleted_in_batches() {
    let bucket = garage().bucket("ret-big");
    let p = "big/backup_";
    let base = ago(400);
    let old: Vec<String> = (0..1205)
        .map(|i| name(p, base + chrono::Duration::minutes(i), "dump.zst"))
        .collect();
    let new: Vec<String> = (0..3).map(|i| name(p, ago(i), "dump.zst")).collect();
    let foreign = vec!["big/readme.txt".to_string()];
    let all: Vec<String> = old.iter().chain(&new).chain(&foreign).cloned().collect();
    put_all(&bucket, &all);
    assert_eq!(all_keys(&bucket).len(), 1209);

    let env = s3_env(
        &bucket,
        &[
            ("BACKUP_FILE_PREFIX", p),
            ("RUST_LOG", "info,pgbackup=debug"),
            ("BACKUP_LOG_FORMAT", "json"),
        ],
    );
    let run = pgbackup(&["prune"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(lines_starting(&run.stdout, "deleted"), set(old.clone()));
    // DeleteObjects takes at most 1,000 keys (Garage accepts more; S3 does not).
    let batches: Vec<u64> = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "deleting a batch")
        .map(|v| v["fields"]["keys"].as_u64().unwrap())
        .collect();
    assert_eq!(batches, vec![1000, 205], "{}", run.stderr);
    assert_eq!(all_keys(&bucket), set(new.iter().chain(&foreign).cloned()));
}

fn s3_storage(bucket: &str) -> S3Storage {
    S3Storage::from_client(garage().client(), bucket)
}

fn start_uploads(bucket: &str, keys: &[String]) {
    rt().block_on(async {
        let c = garage().client();
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in keys.chunks(keys.len().div_ceil(16).max(1)) {
            let (c, chunk, bucket) = (c.clone(), chunk.to_vec(), bucket.to_string());
            tasks.spawn(async move {
                for k in chunk {
                    c.create_multipart_upload()
                        .bucket(&bucket)
                        .key(&k)
                        .send()
                        .await
                        .unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
}

/// Pending uploads' keys, all pages, read with the test's own client.
fn pending(bucket: &str) -> Vec<String> {
    rt().block_on(async {
        let c = garage().client();
        let (mut keys, mut key_marker, mut id_marker) = (Vec::new(), None, None);
        loop {
            let page = c
                .list_multipart_uploads()
                .bucket(bucket)
                .set_key_marker(key_marker)
                .set_upload_id_marker(id_marker)
                .send()
                .await
                .unwrap();
            keys.extend(page.uploads().iter().map(|u| u.key().unwrap().to_string()));
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(String::from);
            id_marker = page.next_upload_id_marker().map(String::from);
        }
        keys.sort();
        keys
    })
}

#[test]
fn abandoned_multipart_uploads_are_aborted_across_pages() {
    let bucket = garage().bucket("ret-mpu");
    let p = "mp/backup_";
    let ours: Vec<String> = (0..1003)
        .map(|i| name(p, ago(3) + chrono::Duration::minutes(i), "dump.zst"))
        .collect();
    let theirs = vec![
        "mp/backup_upload.bin".to_string(),
        name("elsewhere/backup_", ago(3), "dump.zst"),
    ];
    start_uploads(&bucket, &ours);
    start_uploads(&bucket, &theirs);
    assert_eq!(
        pending(&bucket).len(),
        1005,
        "listing of uploads must page past 1,000"
    );

    let storage = s3_storage(&bucket);
    let settings = Config::from_vars(vars(&[
        ("BACKUP_DATABASE_URL", NO_DB),
        ("AWS_S3_BUCKET", "b"),
    ]))
    .unwrap()
    .retention;
    let now = Utc::now() + chrono::Duration::seconds(2);
    // The real threshold is 24 h: these are younger and stay.
    let r = rt()
        .block_on(retention::apply(&storage, p, &settings, now, false))
        .unwrap();
    assert_eq!(r.aborted_uploads, 0);
    assert_eq!(pending(&bucket).len(), 1005);

    let opts = |dry_run| Options {
        dry_run,
        abort_uploads_older_than: Duration::ZERO,
        protect: None,
    };
    let r = rt()
        .block_on(retention::apply_with(
            &storage,
            p,
            &settings,
            now,
            &opts(true),
        ))
        .unwrap();
    assert_eq!(r.aborted_uploads, 1003);
    assert_eq!(pending(&bucket).len(), 1005, "dry run aborted an upload");

    let r = rt()
        .block_on(retention::apply_with(
            &storage,
            p,
            &settings,
            now,
            &opts(false),
        ))
        .unwrap();
    assert_eq!(r.aborted_uploads, 1003);
    let mut left = theirs.clone();
    left.sort();
    assert_eq!(pending(&bucket), left, "only our own uploads are aborted");
}

fn db_env(db: &str, bucket: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vars(&[("BACKUP_DATABASE_URL", &pg().url(db))]);
    env.extend(garage().env(bucket));
    env.extend(vars(extra));
    env
}

#[test]
fn backup_runs_retention_after_a_success_only() {
    let pg = pg();
    let db = pg.fresh_db("ret-bk");
    load_fixture(pg, &db, 10);
    let bucket = garage().bucket("ret-bk");
    let old = vec![
        name("backup_", ago(60), "dump.zst"),
        name("backup_", ago(50), "dump.zst"),
    ];
    let recent = name("backup_", ago(1), "dump.zst");
    let foreign = "backup_notes.txt".to_string();
    put_all(
        &bucket,
        &[old.clone(), vec![recent.clone(), foreign.clone()]].concat(),
    );
    let extra = [("BACKUP_RETENTION_MIN_COUNT", "1")];

    // A failed backup deletes nothing.
    let fail = pgbackup(&["backup"], &db_env("no_such_db", &bucket, &extra));
    assert_eq!(fail.code, 1, "{}", fail.all());
    assert_eq!(all_keys(&bucket).len(), 4, "a failed backup ran retention");

    let run = pgbackup(&["backup"], &db_env(&db, &bucket, &extra));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout
            .contains("retention: deleted 2 old backup(s), 2 kept"),
        "{}",
        run.stdout
    );
    let left = backups_only(all_keys(&bucket));
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.contains(&recent) && left.contains(&foreign));
    assert!(old.iter().all(|k| !left.contains(k)));
}

#[test]
fn a_retention_failure_does_not_fail_the_backup() {
    let (pg, g) = (pg(), garage());
    let db = pg.fresh_db("ret-ro");
    load_fixture(pg, &db, 10);
    let bucket = g.bucket("ret-ro");
    let old = name("backup_", ago(90), "dump.zst");
    put_all(&bucket, std::slice::from_ref(&old));
    // A key that may write but not read: the upload works, the listing does not.
    let (id, secret) = (format!("GK{}", random_hex(12)), random_hex(32));
    g.cli(&["key", "import", "--yes", "-n", "writeonly", &id, &secret]);
    g.cli(&["bucket", "allow", "--write", &bucket, "--key", &id]);
    let mut env = db_env(&db, &bucket, &[("BACKUP_RETENTION_MIN_COUNT", "1")]);
    for (k, v) in env.iter_mut() {
        match k.as_str() {
            "AWS_ACCESS_KEY_ID" => *v = id.clone(),
            "AWS_SECRET_ACCESS_KEY" => *v = secret.clone(),
            _ => {}
        }
    }
    let run = pgbackup(&["backup"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("retention failed"), "{}", run.stderr);
    assert!(run.stderr.contains("retention"), "{}", run.stderr);
    assert!(!run.all().contains(&secret));
    let left = backups_only(all_keys(&bucket));
    assert_eq!(
        left.len(),
        2,
        "new backup stored, old one untouched: {left:?}"
    );
    assert!(left.contains(&old));
}

#[test]
fn after_backup_deletes_nothing_when_the_new_backup_is_not_listed() {
    let dir = temp_dir("ret-guard");
    let old: Vec<String> = (0..3)
        .map(|i| name("backup_", ago(100 + i), "dump.zst"))
        .collect();
    for k in &old {
        std::fs::write(dir.join(k), b"x").unwrap();
    }
    let cfg = Config::from_vars(vars(&[
        ("BACKUP_DATABASE_URL", NO_DB),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
        ("BACKUP_RETENTION_MIN_COUNT", "1"),
    ]))
    .unwrap();
    let storage = pgbackup::storage::local::LocalStorage::new(&dir);
    let pass = |key: &str| {
        rt().block_on(retention::after_backup(
            &cfg.store.prefix,
            &cfg.retention,
            &storage,
            key,
            Utc::now(),
        ))
    };
    let e = pass(&name("backup_", Utc::now(), "dump.zst")).unwrap_err();
    assert_eq!(e.stage, Stage::Retention);
    assert!(e.message.contains("not in the listing"), "{e}");
    assert!(old.iter().all(|k| dir.join(k).exists()));

    // With the backup present (even one that looks old), it is never deleted.
    let new = name("backup_", ago(200), "dump.zst");
    std::fs::write(dir.join(&new), b"x").unwrap();
    let r = pass(&new).unwrap();
    assert_eq!(r.deleted, old[1..].to_vec());
    assert!(dir.join(&new).exists() && dir.join(&old[0]).exists());
}
