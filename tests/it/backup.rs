//! Round trips: back up with pgbackup, read the object back with an
//! independent client and the standard tools, restore, compare every table.

use std::path::{Path, PathBuf};

use crate::harness::*;

fn base_env(db_url: &str) -> Vec<(String, String)> {
    vars(&[("BACKUP_DATABASE_URL", db_url)])
}

/// Backs up `db` to a fresh bucket with extra settings; returns bucket and key.
fn backup_to_garage(db: &str, extra: &[(&str, &str)]) -> (String, String, Run) {
    let (pg, g) = (pg(), garage());
    let bucket = g.bucket("rt");
    let mut env = base_env(&pg.url(db));
    env.extend(g.env(&bucket));
    env.extend(vars(extra));
    let run = pgbackup(&["backup"], &env);
    assert_eq!(run.code, 0, "backup failed: {}", run.all());
    let keys = g.backup_keys(&bucket);
    assert_eq!(keys.len(), 1, "{keys:?}");
    (bucket, keys[0].clone(), run)
}

fn assert_restores(src: &str, key: &str, stored: &[u8]) {
    let pg = pg();
    let raw = decompress_cli(stored, key);
    let target = pg.fresh_db("restored");
    restore_cli(pg, &target, &raw, key.contains(".sql"));
    assert_eq!(
        pg.snapshot(&target),
        pg.snapshot(src),
        "restored tables differ from {src}"
    );
    let views = pg.psql(&target, "SELECT count(*) FROM sales.\"vip_clientes\"");
    assert_eq!(views.trim(), "1");
}

#[test]
fn default_backup_to_s3_restores_table_by_table() {
    let pg = pg();
    let db = pg.fresh_db("src");
    // ~20 MiB of md5 text compresses to more than one 8 MiB part: multipart.
    load_fixture(pg, &db, 300_000);
    let (bucket, key, run) = backup_to_garage(&db, &[("BACKUP_FILE_PREFIX", "nightly/db_")]);
    assert!(naming_ok(&key, "nightly/db_", ".dump.zst"), "{key}");
    assert!(run.stdout.contains(&key), "{}", run.stdout);
    // Without BACKUP_DATABASES: today's names exactly, no folder per
    // database, no globals.
    let mut all = garage().keys(&bucket);
    all.sort();
    assert_eq!(all, vec![key.clone(), format!("{key}.manifest.json")]);

    let (body, meta) = garage().get(&bucket, &key);
    assert!(
        body.len() > 8 << 20,
        "expected a multipart upload, got {} bytes",
        body.len()
    );
    assert_eq!(
        meta.get("sha256").map(String::as_str),
        Some(sha256_hex(&body).as_str())
    );
    assert_eq!(meta.get("format").map(String::as_str), Some("custom"));
    assert_eq!(meta.get("pg-dump-version").map(String::as_str), Some("15"));
    assert_eq!(garage().pending_uploads(&bucket), 0);
    assert_restores(&db, &key, &body);
}

#[test]
fn every_format_and_compression_round_trips() {
    let pg = pg();
    let db = pg.fresh_db("fmt");
    load_fixture(pg, &db, 1000);
    for (format, compression, ext) in [
        ("custom", "gzip", ".dump.gz"),
        ("custom", "none", ".dump"),
        ("plain", "zstd", ".sql.zst"),
        ("plain", "gzip", ".sql.gz"),
        ("plain", "none", ".sql"),
    ] {
        let (bucket, key, _) = backup_to_garage(
            &db,
            &[
                ("BACKUP_FORMAT", format),
                ("BACKUP_COMPRESSION", compression),
            ],
        );
        assert!(key.ends_with(ext), "{format}/{compression}: {key}");
        let (body, meta) = garage().get(&bucket, &key);
        assert_eq!(meta["sha256"], sha256_hex(&body), "{key}");
        assert_restores(&db, &key, &body);
    }
}

#[test]
fn local_directory_storage_with_sidecar() {
    let pg = pg();
    let db = pg.fresh_db("local");
    load_fixture(pg, &db, 1000);
    let dir = temp_dir("local");
    let env = vars(&[
        ("BACKUP_DATABASE_URL", &pg.url(&db)),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
        ("BACKUP_FILE_PREFIX", "sub/dir/backup_"),
        ("BACKUP_COMPRESSION", "gzip"),
        ("BACKUP_COMPRESSION_LEVEL", "1"),
    ]);
    let run = pgbackup(&["backup"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    let files: Vec<String> = std::fs::read_dir(dir.join("sub/dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| !f.contains(".manifest.json"))
        .collect();
    assert_eq!(
        files.len(),
        2,
        "backup and sidecar only, no temp file: {files:?}"
    );
    let name = files
        .iter()
        .find(|f| f.ends_with(".dump.gz"))
        .expect("backup file");
    let body = std::fs::read(dir.join("sub/dir").join(name)).unwrap();
    let side = std::fs::read_to_string(dir.join("sub/dir").join(format!("{name}.sha256"))).unwrap();
    assert_eq!(side, format!("{}  {name}\n", sha256_hex(&body)));
    // sha256sum -c accepts the sidecar as it is.
    let ok = std::process::Command::new("sha256sum")
        .args(["-c", &format!("{name}.sha256")])
        .current_dir(dir.join("sub/dir"))
        .output()
        .unwrap();
    assert!(ok.status.success());
    assert_restores(&db, name, &body);
}

#[test]
fn compose_style_postgres_variables_work() {
    let pg = pg();
    let db = pg.fresh_db("compose");
    load_fixture(pg, &db, 10);
    let dir = temp_dir("compose");
    let port = pg.port.to_string();
    let env = vars(&[
        ("POSTGRES_HOST", "127.0.0.1"),
        ("POSTGRES_PORT", &port),
        ("POSTGRES_DB", &db),
        ("POSTGRES_USER", "postgres"),
        ("POSTGRES_PASSWORD", &pg.password),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
    ]);
    let run = pgbackup(&["backup"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
}

#[test]
fn pg_dump_is_picked_by_server_version_and_never_sees_the_password_in_argv() {
    let pg = pg();
    let db = pg.fresh_db("argv");
    load_fixture(pg, &db, 10);
    // A pg_dump wrapper that records its argv and whether it got PGPASSWORD.
    let bin = temp_dir("wrap");
    let log = bin.join("argv.log");
    let real = pg.bin.join("pg_dump");
    std::fs::write(
        bin.join("pg_dump"),
        format!(
            "#!/bin/sh\necho \"$@\" >> {log}\n[ -n \"$PGPASSWORD\" ] && echo PGPASSWORD-set >> {log}\nexec {real} \"$@\"\n",
            log = log.display(),
            real = real.display()
        ),
    )
    .unwrap();
    make_executable(&bin.join("pg_dump"));
    let dir = temp_dir("argv-out");
    let env = vars(&[
        ("BACKUP_DATABASE_URL", &pg.url(&db)),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
        ("PG_BIN_DIR", bin.to_str().unwrap()),
    ]);
    let run = pgbackup(&["backup"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("--dbname=postgres://postgres@127.0.0.1"),
        "{logged}"
    );
    assert!(logged.contains("PGPASSWORD-set"), "{logged}");
    assert!(
        !logged.contains(&pg.password),
        "password on the command line: {logged}"
    );
    assert!(!run.all().contains(&pg.password));
}

#[test]
fn check_runs_the_preflight() {
    let (pg, g) = (pg(), garage());
    let bucket = g.bucket("check");
    let mut env = base_env(&pg.url("postgres"));
    env.extend(g.env(&bucket));
    let run = pgbackup(&["check"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    for line in ["config ", "database ", "pg_dump ", "storage "] {
        assert!(run.stdout.contains(line), "missing {line}: {}", run.stdout);
    }
    assert!(g.keys(&bucket).is_empty(), "check leaves nothing behind");
}

fn naming_ok(key: &str, prefix: &str, ext: &str) -> bool {
    let Some(rest) = key.strip_prefix(prefix) else {
        return false;
    };
    let Some(ts) = rest.strip_suffix(ext) else {
        return false;
    };
    chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%d_%H-%M-%S").is_ok()
}

/// A CA and a server certificate for `localhost` signed by it, made with
/// the openssl command line tool (from the ca-certificates dependencies).
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let sh = |script: &str| {
        run_ok(
            std::process::Command::new("bash")
                .args(["-ec", script])
                .current_dir(dir),
        )
    };
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
          -keyout ca.key -out ca.crt -days 2 -subj /CN=pgbackup-test-ca 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
          -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
        printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' > ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
          -out server.crt -days 2 -extfile ext 2>/dev/null",
    );
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

/// sslmode as libpq means it, for pgbackup's own connection and pg_dump's.
#[test]
fn tls_follows_sslmode_and_sslrootcert() {
    let pg2 = Postgres::start_dedicated();
    let db = pg2.fresh_db("tls");
    load_fixture(&pg2, &db, 100);
    let dir = temp_dir("tls");
    let (ca, cert, key) = tls_files(&dir);
    pg2.require_tls(&cert, &key);
    let url = |host: &str, query: &str| {
        format!(
            "postgres://postgres:{}@{host}:{}/{db}?{query}",
            pg2.password, pg2.port
        )
    };
    let ca = ca.to_str().unwrap();
    let backup = |url: &str| {
        let out = temp_dir("tls-out");
        pgbackup(
            &["backup"],
            &vars(&[
                ("BACKUP_DATABASE_URL", url),
                ("BACKUP_LOCAL_DIR", out.to_str().unwrap()),
            ]),
        )
    };
    // Encrypted without a check of the certificate: the server refuses
    // anything else.
    for query in ["sslmode=require", "sslmode=prefer", ""] {
        let run = backup(&url("127.0.0.1", query));
        assert_eq!(run.code, 0, "{query}: {}", run.all());
    }
    let run = backup(&url("127.0.0.1", "sslmode=disable"));
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no encryption"), "{}", run.stderr);
    // Checked against the CA in sslrootcert, with and without the name.
    for (host, mode) in [("localhost", "verify-full"), ("127.0.0.1", "verify-ca")] {
        let run = backup(&url(host, &format!("sslmode={mode}&sslrootcert={ca}")));
        assert_eq!(run.code, 0, "{mode}: {}", run.all());
    }
    // The wrong name, and a CA the system does not trust.
    let run = backup(&url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ));
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("connect failed"), "{}", run.stderr);
    assert!(
        run.stderr.to_lowercase().contains("certificate"),
        "{}",
        run.stderr
    );
    let run = backup(&url("localhost", "sslmode=verify-full"));
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.to_lowercase().contains("certificate"),
        "{}",
        run.stderr
    );
}

/// A client certificate for `user` signed by the CA of `tls_files`, its key
/// in `form` ("pkcs8" or "sec1"), readable by its owner only (libpq refuses
/// a key file others may read).
fn client_cert(dir: &Path, user: &str, form: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (format!("{user}-{form}.crt"), format!("{user}-{form}.key"));
    let convert = match form {
        "pkcs8" => String::new(),
        "sec1" => {
            format!("openssl ec -in {key} -out {key}.sec1 2>/dev/null && mv {key}.sec1 {key}")
        }
        other => panic!("unknown key form {other}"),
    };
    run_ok(
        std::process::Command::new("bash")
            .args([
                "-ec",
                &format!(
                    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                       -keyout {key} -out {crt}.csr -subj /CN={user} 2>/dev/null
                     {convert}
                     printf 'basicConstraints=CA:FALSE\\nextendedKeyUsage=clientAuth\\n' > {crt}.ext
                     openssl x509 -req -in {crt}.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
                       -out {crt} -days 2 -extfile {crt}.ext 2>/dev/null
                     chmod 0600 {key}"
                ),
            ])
            .current_dir(dir),
    );
    (dir.join(crt), dir.join(key))
}

/// `sslcert` and `sslkey` reach pgbackup's own connection as they reach
/// pg_dump's: against a server that lets no one in over TCP without a
/// certificate signed by its CA, whose name is the user's.
#[test]
fn client_certificates_from_sslcert_and_sslkey() {
    use std::os::unix::fs::MetadataExt;

    let pg2 = Postgres::start_dedicated();
    let db = pg2.fresh_db("clientcert");
    load_fixture(&pg2, &db, 100);
    let dir = temp_dir("clientcert");
    let (ca, cert, key) = tls_files(&dir);

    // The CA that signs client certificates, in the data directory.
    let owner = std::fs::metadata(&pg2.data).unwrap();
    let server_ca = pg2.data.join("client-ca.crt");
    std::fs::copy(&ca, &server_ca).unwrap();
    std::os::unix::fs::chown(&server_ca, Some(owner.uid()), Some(owner.gid())).unwrap();
    pg2.psql(
        "postgres",
        &format!("ALTER SYSTEM SET ssl_ca_file = '{}'", server_ca.display()),
    );
    // Over TCP: TLS with a client certificate, nothing else (the socket,
    // which the harness uses, stays as it is). require_tls reloads.
    let hba = pg2.data.join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("hostssl all all 127.0.0.1/32 cert\n{old}")).unwrap();
    pg2.require_tls(&cert, &key);

    let ca = ca.to_str().unwrap().to_string();
    let url = |query: &str| {
        format!(
            "postgres://postgres:{}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={ca}{query}",
            pg2.password, pg2.port
        )
    };
    let backup = |url: &str| {
        let out = temp_dir("clientcert-out");
        let run = pgbackup(
            &["backup"],
            &vars(&[
                ("BACKUP_DATABASE_URL", url),
                ("BACKUP_LOCAL_DIR", out.to_str().unwrap()),
            ]),
        );
        let stored: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".dump.zst"))
            .collect();
        (run, stored)
    };

    // Keys in PKCS#8 and in SEC1 ("EC PRIVATE KEY") form.
    for form in ["pkcs8", "sec1"] {
        let (crt, key) = client_cert(&dir, "postgres", form);
        let query = format!("&sslcert={}&sslkey={}", crt.display(), key.display());
        let (run, stored) = backup(&url(&query));
        assert_eq!(run.code, 0, "{form}: {}", run.all());
        assert_eq!(stored.len(), 1, "{form}: {stored:?}");
    }

    // Without a certificate the server turns pgbackup away before pg_dump runs.
    let (run, stored) = backup(&url(""));
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("connect failed"), "{}", run.stderr);
    assert!(
        run.stderr.contains("certificate"),
        "the server's reason: {}",
        run.stderr
    );
    assert!(stored.is_empty(), "{stored:?}");

    // A key file that is not there, and a key without its certificate:
    // one clear line each, naming the parameter and the file.
    let (crt, _) = client_cert(&dir, "postgres", "pkcs8");
    let missing = dir.join("absent.key");
    let (run, stored) = backup(&url(&format!(
        "&sslcert={}&sslkey={}",
        crt.display(),
        missing.display()
    )));
    assert_ne!(run.code, 0, "{}", run.all());
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {}", run.stderr));
    assert!(line.contains("connect failed"), "{line}");
    assert!(line.contains("sslkey"), "{line}");
    assert!(line.contains(missing.to_str().unwrap()), "{line}");
    assert!(!run.all().contains(&pg2.password), "{}", run.all());
    assert!(stored.is_empty(), "{stored:?}");

    let (run, _) = backup(&url(&format!("&sslkey={}", missing.display())));
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("sslcert is not"), "{}", run.stderr);
}

/// The manifest's row counts are read in the snapshot pg_dump used, so rows
/// written while a backup runs never make a drill expect what the archive
/// cannot hold.
#[test]
fn the_manifest_counts_rows_in_the_dumps_own_snapshot() {
    let pg = pg();
    let db = pg.fresh_db("snap");
    pg.psql(
        &db,
        "CREATE TABLE early (id int); INSERT INTO early VALUES (1); CREATE TABLE late (id int);",
    );
    let dir = temp_dir("snap");
    let gate = dir.join("gate");
    let args = dir.join("args");
    // pg_dump starts, says so, and waits for the test to write rows first.
    let bin = fake_pg_dump(
        pg,
        &format!(
            "echo \"$@\" > {args}\ntouch {gate}.waiting\nwhile [ ! -e {gate} ]; do sleep 0.05; done\nexec $REAL \"$@\"",
            args = args.display(),
            gate = gate.display()
        ),
    );
    let out = dir.join("out");
    let env = vars(&[
        ("BACKUP_DATABASE_URL", &pg.url(&db)),
        ("BACKUP_LOCAL_DIR", out.to_str().unwrap()),
        ("PG_BIN_DIR", bin.to_str().unwrap()),
    ]);
    let child = pgbackup_cmd(&["backup"], &env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_exists(&dir.join("gate.waiting"));
    pg.psql(&db, "INSERT INTO late SELECT generate_series(1, 10)");
    std::fs::write(&gate, b"").unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        std::fs::read_to_string(&args)
            .unwrap()
            .contains("--snapshot="),
        "pg_dump was given the exported snapshot"
    );
    let manifest = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .expect("a manifest");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let has_rows = |name: &str| {
        m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {m}"))["has_rows"]
            .clone()
    };
    assert_eq!(has_rows("early"), serde_json::json!(true));
    assert_eq!(has_rows("late"), serde_json::json!(false), "{m}");
    // The drill agrees with the archive.
    let env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k != "PG_BIN_DIR").collect();
    let drill = pgbackup(&["verify", "latest", "--restore"], &env);
    assert_eq!(drill.code, 0, "{}", drill.all());
}

fn wait_until_exists(p: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !p.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
