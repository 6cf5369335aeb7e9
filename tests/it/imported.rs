//! The Railway template's old backups (`pg_dump --format=tar | gzip`, named
//! `<prefix>-<ISO time>.tar.gz` under BUCKET_SUBFOLDER): listed as imported,
//! restored and verified without a sha256, and left alone by retention
//! unless BACKUP_RETENTION_INCLUDE_IMPORTED=true.

use std::io::Write;

use crate::harness::*;

const FOLDER: &str = "railway/pg";

/// What the template stored: pg_dump's tar archive through gzip.
fn template_dump(db: &str) -> Vec<u8> {
    let out = pg()
        .tool_cmd("pg_dump")
        .args(["--format=tar", "-d", db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&out.stdout).unwrap();
    gz.finish().unwrap()
}

fn listed(env: &[(String, String)]) -> serde_json::Value {
    let run = pgbackup(&["list", "--json"], env);
    assert_eq!(run.code, 0, "{}", run.all());
    serde_json::from_str(&run.stdout).unwrap()
}

#[test]
fn the_templates_backups_are_listed_restored_verified_and_kept() {
    let pg = pg();
    let src = pg.fresh_db("tmpl");
    load_fixture(pg, &src, 2000);
    let bucket = garage().bucket("tmpl");
    let gz = template_dump(&src);
    // The template's default prefix `backup`, under its BUCKET_SUBFOLDER.
    let newest = format!("{FOLDER}/backup-2025-03-01T05-00-00-123Z.tar.gz");
    let older = format!("{FOLDER}/backup-2025-02-01T05-00-00-000Z.tar.gz");
    let cut = format!("{FOLDER}/backup-2025-01-01T05-00-00-000Z.tar.gz");
    garage().put(&bucket, &newest, gz.clone(), Default::default());
    garage().put(&bucket, &older, gz.clone(), Default::default());
    garage().put(
        &bucket,
        &cut,
        gz[..gz.len() / 2].to_vec(),
        Default::default(),
    );
    // Near misses of the shape: never listed, restored or deleted.
    let foreign = [
        format!("{FOLDER}/backup-2025-03-01T05-00-00-123Z.tar"),
        format!("{FOLDER}/backup-2025-03-01T05:00:00.123Z.tar.gz"),
        format!("{FOLDER}/notes.txt"),
        "backup-2025-03-01T05-00-00-123Z.tar.gz".to_string(),
    ];
    for k in &foreign {
        garage().put(&bucket, k, b"not a backup".to_vec(), Default::default());
    }
    let mut env = vars(&[
        ("BACKUP_DATABASE_URL", &pg.url(&src)),
        ("BUCKET_SUBFOLDER", FOLDER),
    ]);
    env.extend(garage().env(&bucket));

    let l = listed(&env);
    let names: Vec<&str> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [newest.as_str(), older.as_str(), cut.as_str()]);
    assert_eq!(l[0]["imported"], true);
    assert_eq!(l[0]["format"], "tar");
    assert_eq!(l[0]["compression"], "gzip");
    assert_eq!(l[0]["time"], "2025-03-01T05:00:00Z");
    let human = pgbackup(&["list"], &env);
    assert!(
        human
            .stdout
            .lines()
            .nth(1)
            .unwrap_or("")
            .contains("imported"),
        "{}",
        human.stdout
    );

    // latest is the template's newest on the day of the switch; restored
    // table by table.
    let target = unique("tmpl_tgt").replace('-', "_");
    let run = pgbackup(
        &["restore", "latest", "--target-url", &pg.url(&target)],
        &env,
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains(&newest) && run.stdout.contains("unverified"),
        "{}",
        run.stdout
    );
    assert_eq!(pg.snapshot(&target), pg.snapshot(&src));
    // --jobs cannot read a tar archive.
    let run = pgbackup(
        &[
            "restore",
            &older,
            "--target-url",
            &pg.url("nowhere"),
            "--jobs",
            "2",
        ],
        &env,
    );
    assert_eq!(run.code, 2, "{}", run.all());

    // verify checks what it can and claims no sha256; the name may be given
    // as the template's folder holds it.
    let run = pgbackup(&["verify", "backup-2025-02-01T05-00-00-000Z.tar.gz"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("no sha256 stored") && !run.stdout.contains("matches"),
        "{}",
        run.stdout
    );
    // A truncated one fails verify, and its restore leaves nothing behind.
    let run = pgbackup(&["verify", &cut], &env);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("verify failed:"), "{}", run.stderr);
    let target = unique("tmpl_cut").replace('-', "_");
    let run = pgbackup(&["restore", &cut, "--target-url", &pg.url(&target)], &env);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(!db_exists(&target), "the created target was not dropped");

    // Retention with everything old: the imported backups stay.
    let keep = [
        ("BACKUP_RETENTION_DAYS", "1"),
        ("BACKUP_RETENTION_MIN_COUNT", "1"),
    ];
    let mut retained = env.clone();
    retained.extend(vars(&keep));
    let run = pgbackup(&["backup"], &retained);
    assert_eq!(run.code, 0, "{}", run.all());
    let run = pgbackup(&["prune"], &retained);
    assert_eq!(run.code, 0, "{}", run.all());
    let keys = garage().keys(&bucket);
    for k in [&newest, &older, &cut].into_iter().chain(foreign.iter()) {
        assert!(keys.contains(k), "{k} was deleted: {keys:?}");
    }
    // latest is now pgbackup's own.
    let l = listed(&env);
    assert_eq!(l[0]["imported"], false);
    assert!(l[0]["name"]
        .as_str()
        .unwrap()
        .starts_with("railway/pg/backup_"));

    // Opted in: the old imported backups go by the same rules, the rest stays.
    retained.extend(vars(&[("BACKUP_RETENTION_INCLUDE_IMPORTED", "true")]));
    let run = pgbackup(&["prune", "--dry-run"], &retained);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(garage().keys(&bucket), keys, "dry run deleted something");
    let run = pgbackup(&["prune"], &retained);
    assert_eq!(run.code, 0, "{}", run.all());
    let after = garage().keys(&bucket);
    for k in [&newest, &older, &cut] {
        assert!(!after.contains(k), "{k} kept: {after:?}");
    }
    for k in &foreign {
        assert!(after.contains(k), "{k} deleted: {after:?}");
    }
    assert_eq!(listed(&env).as_array().unwrap().len(), 1);
}

/// A Railway template user's whole variable set, pointed at the bucket
/// that holds their old backups: `run` backs up once and exits (the
/// template's single-shot mode), the new backup lands in their folder, and
/// the old one still restores.
#[test]
fn the_templates_full_variable_set_keeps_working() {
    let pg = pg();
    let src = pg.fresh_db("tmpl_full");
    load_fixture(pg, &src, 500);
    let bucket = garage().bucket("tmpl-full");
    let old = format!("{FOLDER}/backup-2025-03-01T05-00-00-123Z.tar.gz");
    garage().put(&bucket, &old, template_dump(&src), Default::default());
    // Every variable the template documents, with the template's values.
    let mut env = garage().env(&bucket);
    env.extend(vars(&[
        ("BACKUP_DATABASE_URL", &pg.url(&src)),
        ("BACKUP_CRON_SCHEDULE", "0 5 * * *"),
        ("RUN_ON_STARTUP", "true"),
        ("SINGLE_SHOT_MODE", "true"),
        ("BACKUP_FILE_PREFIX", "backup"),
        ("BUCKET_SUBFOLDER", FOLDER),
        ("SUPPORT_OBJECT_LOCK", "false"),
        ("BACKUP_OPTIONS", "--no-comments"),
        (
            "BACKUP_LISTEN_ADDRESS",
            &format!("127.0.0.1:{}", free_port()),
        ),
    ]));
    let run = pgbackup(&["run"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    let keys = garage().keys(&bucket);
    let new: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with(&format!("{FOLDER}/backup2")) && k.ends_with(".dump.zst"))
        .collect();
    assert_eq!(new.len(), 1, "{keys:?}");
    assert!(keys.contains(&old), "{keys:?}");
    let l = listed(&env);
    assert_eq!(l.as_array().unwrap().len(), 2, "{l}");
    assert_eq!(l[0]["name"], new[0].as_str());
    assert_eq!(l[1]["name"], old.as_str());
    assert_eq!(l[1]["imported"], true);
    for name in [old.as_str(), new[0].as_str()] {
        let target = unique("tmpl_full_tgt").replace('-', "_");
        let run = pgbackup(&["restore", name, "--target-url", &pg.url(&target)], &env);
        assert_eq!(run.code, 0, "{name}: {}", run.all());
        assert_eq!(pg.snapshot(&target), pg.snapshot(&src), "{name}");
    }
}
