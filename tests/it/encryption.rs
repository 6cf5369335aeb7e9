//! Encrypted backups against real PostgreSQL, Garage and Debian's `age`
//! command-line tool, which reads what pgbackup writes (and writes what
//! pgbackup reads) independently of the crate.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

/// Words that must never appear in the stored bytes.
const TABLE: &str = "patient_records";
const ROW: &str = "Ada Lovelace, 12 Marylebone Rd";

/// A generated age key: the identity file and its public recipient.
struct Key {
    file: PathBuf,
    public: String,
    secret: String,
}

fn age_key(dir: &Path, name: &str) -> Key {
    let file = dir.join(format!("{name}.txt"));
    run_ok(Command::new("age-keygen").arg("-o").arg(&file));
    let public = run_ok(Command::new("age-keygen").arg("-y").arg(&file))
        .trim()
        .to_string();
    let secret = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("age-keygen wrote a key")
        .to_string();
    assert!(public.starts_with("age1"), "{public}");
    Key {
        file,
        public,
        secret,
    }
}

fn age_decrypt(identity: &Path, data: &[u8]) -> Vec<u8> {
    pipe(Command::new("age").arg("-d").arg("-i").arg(identity), data)
}

fn source_db() -> String {
    let pg = pg();
    let db = pg.fresh_db("enc");
    load_fixture(pg, &db, 3000);
    pg.psql(
        &db,
        &format!(
            "CREATE TABLE public.{TABLE} (id int PRIMARY KEY, who text); \
             INSERT INTO public.{TABLE} VALUES (1, '{ROW}');"
        ),
    );
    db
}

fn env_for(db: &str, bucket: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vars(&[("BACKUP_DATABASE_URL", &pg().url(db))]);
    env.extend(garage().env(bucket));
    env.extend(vars(extra));
    env
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// No key material, password or S3 secret in anything a run printed.
fn no_secrets(run: &Run, keys: &[&Key]) {
    let all = run.all();
    assert!(!all.contains(&pg().password), "password leaked: {all}");
    assert!(!all.contains(&garage().secret), "S3 secret leaked");
    for k in keys {
        assert!(!all.contains(&k.secret[15..]), "identity leaked: {all}");
    }
}

#[test]
fn encrypted_backups_restore_with_the_age_tool_and_with_pgbackup() {
    let pg = pg();
    let dir = temp_dir("enc-keys");
    let (a, b, other) = (
        age_key(&dir, "a"),
        age_key(&dir, "b"),
        age_key(&dir, "other"),
    );
    let src = source_db();
    let bucket = garage().bucket("enc");
    // An operator key and an offline recovery key, in a recipients file.
    let recipients = dir.join("recipients.txt");
    std::fs::write(
        &recipients,
        format!(
            "# operator\n{}\n\n# offline recovery\n{}\n",
            a.public, b.public
        ),
    )
    .unwrap();
    let plain_env = env_for(&src, &bucket, &[]);
    let enc_env = env_for(
        &src,
        &bucket,
        &[(
            "BACKUP_ENCRYPTION_RECIPIENTS_FILE",
            recipients.to_str().unwrap(),
        )],
    );

    // Mixed bucket: one backup from before encryption, then an encrypted one.
    let run = pgbackup(&["backup"], &plain_env);
    assert_eq!(run.code, 0, "{}", run.all());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let check = pgbackup(&["check"], &enc_env);
    assert_eq!(check.code, 0, "{}", check.all());
    assert!(
        check.stdout.contains("encryption  ok (age, 2 recipients"),
        "{}",
        check.stdout
    );
    let run = pgbackup(&["backup"], &enc_env);
    assert_eq!(run.code, 0, "{}", run.all());
    no_secrets(&run, &[&a, &b]);

    let keys = garage().keys(&bucket);
    let enc_key = keys
        .iter()
        .find(|k| k.ends_with(".dump.zst.age"))
        .unwrap_or_else(|| panic!("no encrypted backup: {keys:?}"))
        .clone();
    let plain_key = keys
        .iter()
        .find(|k| k.ends_with(".dump.zst"))
        .unwrap_or_else(|| panic!("no plain backup: {keys:?}"))
        .clone();
    let manifest = enc_key.trim_end_matches(".age").to_string() + ".manifest.json.age";
    assert!(keys.contains(&manifest), "{keys:?}");

    // The stored bytes hold no table name and no row, nor does the manifest.
    let (stored, meta) = garage().get(&bucket, &enc_key);
    assert!(stored.starts_with(b"age-encryption.org/v1\n"));
    assert_eq!(
        meta.get("sha256"),
        Some(&sha256_hex(&stored)),
        "sha256 of the ciphertext"
    );
    for needle in [TABLE, ROW, "sales", "customers"] {
        assert!(
            !contains(&stored, needle),
            "{needle:?} readable in the backup"
        );
    }
    let (m, _) = garage().get(&bucket, &manifest);
    assert!(!contains(&m, TABLE), "the manifest names a table in clear");

    // Debian's age decrypts it with either key: age -d | zstd -d | pg_restore.
    let dump_a = decompress_cli(&age_decrypt(&a.file, &stored), "x.zst");
    let dump_b = decompress_cli(&age_decrypt(&b.file, &stored), "x.zst");
    assert!(dump_a == dump_b, "both recipients read the same dump");
    let by_hand = pg.fresh_db("enc_by_hand");
    restore_cli(pg, &by_hand, &dump_a, false);
    assert_eq!(pg.snapshot(&by_hand), pg.snapshot(&src));
    assert!(m.starts_with(b"age-encryption.org/v1\n"));
    assert!(contains(&age_decrypt(&b.file, &m), TABLE));

    // list shows which backups are encrypted.
    let run = pgbackup(&["list", "--json"], &plain_env);
    assert_eq!(run.code, 0, "{}", run.all());
    let items: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let by_name = |k: &str| {
        items
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == k)
            .unwrap_or_else(|| panic!("{k} not listed: {items}"))
            .clone()
    };
    assert_eq!(by_name(&enc_key)["encrypted"], true);
    assert_eq!(by_name(&plain_key)["encrypted"], false);
    let run = pgbackup(&["list"], &plain_env);
    let line = run.stdout.lines().find(|l| l.contains(&enc_key)).unwrap();
    assert!(line.contains("encrypted"), "{line}");

    // verify without the identity: integrity only, said so, exit 0.
    let run = pgbackup(&["verify", &enc_key], &plain_env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("matches") && run.stdout.contains("not read"),
        "{}",
        run.stdout
    );
    // With it: decrypted to the end and read by pg_restore.
    let with_b = |mut env: Vec<(String, String)>| {
        env.extend(vars(&[(
            "BACKUP_ENCRYPTION_IDENTITY_FILE",
            b.file.to_str().unwrap(),
        )]));
        env
    };
    let run = pgbackup(&["verify", &enc_key], &with_b(plain_env.clone()));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("read the archive to its end"),
        "{}",
        run.stdout
    );

    // Restore without the identity: refused before the target is touched.
    let target = new_db_name("enc_noid");
    let url = pg.url(&target);
    let run = pgbackup(&["restore", "latest", "--target-url", &url], &plain_env);
    assert_eq!(run.code, 2, "{}", run.all());
    let last = run.stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: restore failed:")
            && last.contains("is encrypted")
            && last.contains("BACKUP_ENCRYPTION_IDENTITY_FILE"),
        "{last}"
    );
    assert!(!db_exists(&target), "the target was created");

    // A wrong identity: a clear error, no key material, target untouched.
    let mut wrong = plain_env.clone();
    wrong.extend(vars(&[(
        "BACKUP_ENCRYPTION_IDENTITY_FILE",
        other.file.to_str().unwrap(),
    )]));
    let run = pgbackup(&["restore", "latest", "--target-url", &url], &wrong);
    assert_eq!(run.code, 2, "{}", run.all());
    let last = run.stderr.lines().last().unwrap_or("");
    assert!(
        last.contains("no identity in BACKUP_ENCRYPTION_IDENTITY_FILE"),
        "{last}"
    );
    no_secrets(&run, &[&a, &b, &other]);
    assert!(!db_exists(&target), "the target was created");

    // With the recovery key alone it restores, identical to its source.
    let run = pgbackup(
        &["restore", "latest", "--target-url", &url],
        &with_b(plain_env.clone()),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    no_secrets(&run, &[&a, &b]);
    assert_eq!(pg.snapshot(&target), pg.snapshot(&src));
    // --jobs spools the decrypted archive.
    let target_j = new_db_name("enc_jobs");
    let run = pgbackup(
        &[
            "restore",
            "latest",
            "--jobs",
            "2",
            "--target-url",
            &pg.url(&target_j),
        ],
        &with_b(plain_env.clone()),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(pg.snapshot(&target_j), pg.snapshot(&src));

    // The older, unencrypted backup still restores without any identity.
    let target_p = new_db_name("enc_old");
    let run = pgbackup(
        &["restore", &plain_key, "--target-url", &pg.url(&target_p)],
        &plain_env,
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(pg.snapshot(&target_p), pg.snapshot(&src));

    // Drills: the manifest is decrypted and its row counts checked.
    let run = pgbackup(
        &["verify", "latest", "--restore"],
        &with_b(plain_env.clone()),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("with rows at backup time"),
        "{}",
        run.stdout
    );
    let run = pgbackup(&["verify", "latest", "--restore"], &plain_env);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("BACKUP_ENCRYPTION_IDENTITY_FILE"),
        "{}",
        run.stderr
    );

    // presign says the URL serves ciphertext, and how to decrypt it.
    let run = pgbackup(&["presign", "latest"], &plain_env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.trim().starts_with("http"), "{}", run.stdout);
    assert!(
        run.stderr.contains("age ciphertext") && run.stderr.contains("age -d -i"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_file_encrypted_by_the_age_tool_is_read_by_pgbackup() {
    let pg = pg();
    let dir = temp_dir("enc-cli");
    let key = age_key(&dir, "k");
    let src = source_db();
    let bucket = garage().bucket("enc-cli");
    let env = env_for(&src, &bucket, &[]);
    let run = pgbackup(&["backup"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    let plain_key = garage()
        .keys(&bucket)
        .into_iter()
        .find(|k| k.ends_with(".dump.zst"))
        .unwrap();
    let (zst, _) = garage().get(&bucket, &plain_key);
    // The same archive, encrypted by the age tool, under an encrypted name
    // one second later (so `latest` is this one), with its sha256.
    let sealed = pipe(Command::new("age").arg("-r").arg(&key.public), &zst);
    let stem = "2026-01-25_03-00-00.dump.zst";
    let prefix = &plain_key[..plain_key.len() - stem.len()];
    let later = format!("{prefix}2099-01-01_00-00-00.dump.zst.age");
    let meta = [("sha256".to_string(), sha256_hex(&sealed))].into();
    garage().put(&bucket, &later, sealed.clone(), meta);
    let mut with_id = env.clone();
    with_id.extend(vars(&[(
        "BACKUP_ENCRYPTION_IDENTITY_FILE",
        key.file.to_str().unwrap(),
    )]));
    let run = pgbackup(&["verify", &later], &with_id);
    assert_eq!(run.code, 0, "{}", run.all());
    let target = new_db_name("enc_cli");
    let run = pgbackup(
        &["restore", &later, "--target-url", &pg.url(&target)],
        &with_id,
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(pg.snapshot(&target), pg.snapshot(&src));

    // One flipped byte of ciphertext: refused, and the target is dropped.
    let mut bad = sealed.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    let meta = [("sha256".to_string(), sha256_hex(&sealed))].into();
    garage().put(&bucket, &later, bad, meta);
    let target = new_db_name("enc_bad");
    let run = pgbackup(
        &["restore", &later, "--target-url", &pg.url(&target)],
        &with_id,
    );
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("checksum mismatch"), "{}", run.stderr);
    assert!(!db_exists(&target), "a failed restore left its database");
}

#[test]
fn bad_encryption_settings_exit_2_and_print_no_key() {
    let dir = temp_dir("enc-bad");
    let key = age_key(&dir, "k");
    let src = pg().fresh_db("enc_bad_cfg");
    let bucket = garage().bucket("enc-bad");
    let missing = dir.join("missing.txt");
    let recipients = dir.join("r.txt");
    std::fs::write(&recipients, format!("{}\nage1notarecipient\n", key.public)).unwrap();
    for (extra, var, cause) in [
        (
            vec![("BACKUP_ENCRYPTION_RECIPIENTS", key.secret.as_str())],
            "BACKUP_ENCRYPTION_RECIPIENTS",
            "is a private key",
        ),
        (
            vec![("BACKUP_ENCRYPTION_RECIPIENTS", "age1xyz")],
            "BACKUP_ENCRYPTION_RECIPIENTS",
            "recipient 1 is not a valid age recipient",
        ),
        (
            vec![(
                "BACKUP_ENCRYPTION_RECIPIENTS_FILE",
                recipients.to_str().unwrap(),
            )],
            "BACKUP_ENCRYPTION_RECIPIENTS_FILE",
            "recipient 2",
        ),
        (
            vec![
                ("BACKUP_ENCRYPTION_RECIPIENTS", key.public.as_str()),
                (
                    "BACKUP_ENCRYPTION_RECIPIENTS_FILE",
                    recipients.to_str().unwrap(),
                ),
            ],
            "BACKUP_ENCRYPTION_RECIPIENTS_FILE",
            "set one of the two",
        ),
        (
            vec![("BACKUP_ENCRYPTION_IDENTITY_FILE", missing.to_str().unwrap())],
            "BACKUP_ENCRYPTION_IDENTITY_FILE",
            "cannot read",
        ),
        (
            // The public key where the identity belongs.
            vec![(
                "BACKUP_ENCRYPTION_IDENTITY_FILE",
                recipients.to_str().unwrap(),
            )],
            "BACKUP_ENCRYPTION_IDENTITY_FILE",
            "line 1",
        ),
    ] {
        let env = env_for(&src, &bucket, &extra);
        let run = pgbackup(&["backup"], &env);
        assert_eq!(run.code, 2, "{var}: {}", run.all());
        let last = run.stderr.lines().last().unwrap_or("");
        assert!(last.contains(var) && last.contains(cause), "{var}: {last}");
        no_secrets(&run, &[&key]);
    }
    assert!(garage().keys(&bucket).is_empty(), "nothing stored");
}
