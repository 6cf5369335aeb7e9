//! Several databases of one server (BACKUP_DATABASES) against real
//! PostgreSQL clusters and Garage: every database restored and compared
//! with its source, a failing database alone, globals with owners on a
//! fresh cluster, and the whole server back with one command.

use std::time::Duration;

use crate::harness::*;

/// Databases with names that need care in object keys and URLs.
const NAMES: [&str; 5] = ["app", "analytics", "my db", "café", "Reports"];

fn url_of(pg: &Postgres, user_pw: &str, db: &str) -> String {
    format!(
        "postgres://{user_pw}@127.0.0.1:{}/{}",
        pg.port,
        utf8_percent_encode(db)
    )
}

fn utf8_percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn superuser(pg: &Postgres) -> String {
    format!("postgres:{}", pg.password)
}

fn env(pg: &Postgres, bucket: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vars(&[(
        "BACKUP_DATABASE_URL",
        &url_of(pg, &superuser(pg), "postgres"),
    )]);
    env.extend(garage().env(bucket));
    env.extend(vars(extra));
    env
}

/// A cluster of its own with five databases, a role owning a table, and
/// fixture data in each database.
fn source_cluster() -> Postgres {
    let pg = Postgres::start_dedicated();
    pg.psql(
        "postgres",
        "CREATE ROLE app_owner LOGIN PASSWORD 'owner-pw'; CREATE ROLE readers NOLOGIN; GRANT readers TO app_owner",
    );
    for (i, n) in NAMES.iter().enumerate() {
        pg.create_db(n);
        load_fixture(&pg, n, 200 + 100 * i as u64);
    }
    pg.psql(
        "app",
        "CREATE TABLE public.owned (id int PRIMARY KEY, v text); INSERT INTO public.owned VALUES (1, 'mine'); \
         ALTER TABLE public.owned OWNER TO app_owner; GRANT SELECT ON public.owned TO readers",
    );
    pg
}

fn json_list(env: &[(String, String)], extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["list", "--json"];
    args.extend_from_slice(extra);
    let run = pgbackup(&args, env);
    assert_eq!(run.code, 0, "{}", run.all());
    serde_json::from_str::<serde_json::Value>(&run.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_whole_server_with_roles_comes_back_on_a_fresh_cluster() {
    let src = source_cluster();
    let bucket = garage().bucket("multi");
    let env = env(
        &src,
        &bucket,
        &[
            ("BACKUP_DATABASES", "all"),
            ("BACKUP_EXCLUDE_DATABASES", "postgres"),
            ("BACKUP_PARALLEL", "2"),
        ],
    );
    let check = pgbackup(&["check"], &env);
    assert_eq!(check.code, 0, "{}", check.all());
    assert!(
        check.stdout.contains("databases   ok (5 to back up:")
            && check.stdout.contains("\"my db\""),
        "{}",
        check.stdout
    );
    let run = pgbackup(&["backup"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    for n in NAMES {
        assert!(
            run.stdout.contains(&format!("database  {n:?}")),
            "{n}: {}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("globals   "), "{}", run.stdout);
    assert!(!run.all().contains(&src.password), "password leaked");

    // One prefix per database, unambiguous whatever the name; the globals apart.
    let keys = garage().keys(&bucket);
    for prefix in [
        "backup_db/app/",
        "backup_db/my%20db/",
        "backup_db/caf%C3%A9/",
        "backup_db/Reports/",
        "backup_globals/",
    ] {
        assert!(
            keys.iter().any(|k| k.starts_with(prefix)),
            "{prefix}: {keys:?}"
        );
    }
    assert!(!keys.iter().any(|k| k.contains("/postgres/")), "excluded");
    // All of one run share its time.
    let times: std::collections::BTreeSet<&str> = keys
        .iter()
        .filter(|k| !k.contains(".manifest.json"))
        .map(|k| &k[k.rfind('/').unwrap() + 1..][..19])
        .collect();
    assert_eq!(times.len(), 1, "{keys:?}");

    let items = json_list(&env, &[]);
    let dbs: Vec<&str> = items
        .iter()
        .filter(|i| i["kind"] == "database")
        .map(|i| i["database"].as_str().unwrap())
        .collect();
    assert_eq!(dbs.len(), NAMES.len(), "{items:?}");
    for n in NAMES {
        assert!(dbs.contains(&n), "{n} not listed: {dbs:?}");
    }
    let globals: Vec<_> = items.iter().filter(|i| i["kind"] == "globals").collect();
    assert_eq!(globals.len(), 1, "{items:?}");
    assert!(globals[0]["database"].is_null());
    for i in &items {
        for field in ["name", "time", "size", "encrypted"] {
            assert!(!i[field].is_null(), "{field} missing: {i}");
        }
    }
    let only = json_list(&env, &["--database", "my db"]);
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0]["database"], "my db");

    // The disaster: a fresh cluster, one command.
    let dst = Postgres::start_dedicated();
    let target = url_of(&dst, &superuser(&dst), "postgres");
    let run = pgbackup(
        &["restore", "latest", "--all", "--target-url", &target],
        &env,
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("role(s) created"), "{}", run.stdout);
    for n in NAMES {
        assert_eq!(dst.snapshot(n), src.snapshot(n), "{n} differs");
    }
    assert_eq!(
        dst.psql(
            "app",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'owned'"
        )
        .trim(),
        "app_owner",
        "owners intact"
    );
    assert_eq!(
        dst.psql(
            "postgres",
            "SELECT pg_has_role('app_owner', 'readers', 'member')::text"
        )
        .trim(),
        "true"
    );
    // The target's own superuser keeps its password: we still connect with it.
    assert_eq!(dst.psql("postgres", "SELECT 1").trim(), "1");
    assert!(
        std::process::Command::new(dst.bin.join("psql"))
            .arg(url_of(&dst, &superuser(&dst), "app"))
            .args(["-Atc", "SELECT 1"])
            .output()
            .unwrap()
            .status
            .success(),
        "the target's postgres password was changed by the globals"
    );

    // One database alone, by name, into a database of another name.
    let copy = "café copy";
    let run = pgbackup(
        &[
            "restore",
            "latest",
            "--database",
            "café",
            "--target-url",
            &url_of(&src, &superuser(&src), copy),
        ],
        &env,
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(src.snapshot(copy), src.snapshot("café"));

    // Verify and prune per database; never another database's objects.
    let run = pgbackup(&["verify", "latest", "--database", "Reports"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("backup_db/Reports/"), "{}", run.stdout);
    let before = garage().keys(&bucket);
    let run = pgbackup(&["prune", "--dry-run"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("== database \"my db\""),
        "{}",
        run.stdout
    );
    assert_eq!(garage().keys(&bucket), before, "a dry run deletes nothing");
}

#[test]
fn one_failing_database_never_stops_the_others() {
    let pg = Postgres::start_dedicated();
    for n in ["first", "locked", "last"] {
        pg.create_db(n);
        load_fixture(&pg, n, 100);
    }
    // A backup role that may read every table but those of `locked`.
    pg.psql("postgres", "CREATE ROLE dumper LOGIN PASSWORD 'dumper-pw'");
    for n in ["first", "last"] {
        pg.psql(
            n,
            "GRANT USAGE ON SCHEMA sales, \"inventário\" TO dumper; \
             GRANT SELECT ON ALL TABLES IN SCHEMA public, sales, \"inventário\" TO dumper",
        );
    }
    let bucket = garage().bucket("multi-fail");
    let mut env = vars(&[(
        "BACKUP_DATABASE_URL",
        &url_of(&pg, "dumper:dumper-pw", "postgres"),
    )]);
    env.extend(garage().env(&bucket));
    // pg_authid is not readable by this role: a warning that names the
    // setting, never a failed run.
    env.extend(vars(&[("BACKUP_DATABASES", "first,locked,missing,last")]));
    // A cron job's metrics: one textfile with every database's series.
    let textfiles = temp_dir("multi-textfile");
    let mut with_textfile = env.clone();
    with_textfile.extend(vars(&[
        ("BACKUP_TEXTFILE_DIR", textfiles.to_str().unwrap()),
        ("BACKUP_INSTANCE", "db-host"),
    ]));
    let run = pgbackup(&["backup"], &with_textfile);
    assert_eq!(run.code, 1, "{}", run.all());
    let last = run.stderr.lines().last().unwrap_or("");
    assert!(
        last.contains("2 of 4 databases failed") && last.contains("\"locked\""),
        "{last}"
    );
    assert!(
        run.all().contains("BACKUP_GLOBALS=no-passwords"),
        "{}",
        run.all()
    );
    let line = |db: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(&format!("database  {db:?}")))
            .unwrap_or_else(|| panic!("no line for {db}: {}", run.stdout))
            .to_string()
    };
    assert!(line("locked").contains("FAILED") && line("locked").contains("permission denied"));
    assert!(
        line("missing").contains("does not exist"),
        "{}",
        line("missing")
    );
    assert!(!line("first").contains("FAILED") && !line("last").contains("FAILED"));
    let keys = garage().keys(&bucket);
    assert!(keys.iter().any(|k| k.starts_with("backup_db/first/")));
    assert!(keys.iter().any(|k| k.starts_with("backup_db/last/")));
    assert!(
        !keys
            .iter()
            .any(|k| k.starts_with("backup_db/locked/") || k.starts_with("backup_db/missing/")),
        "something of a failed database was left: {keys:?}"
    );
    assert!(!keys.iter().any(|k| k.starts_with("backup_globals/")));
    assert_eq!(garage().pending_uploads(&bucket), 0);
    assert!(!run.all().contains("dumper-pw"), "password leaked");
    let text = std::fs::read_to_string(textfiles.join("pgbackup_db-host.prom")).unwrap();
    let status = |db: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("backup_last_status{") && l.contains(&format!("database=\"{db}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no backup_last_status for {db} in\n{text}"))
    };
    assert_eq!(
        (
            status("first"),
            status("locked"),
            status("missing"),
            status("last")
        ),
        ("1".into(), "0".into(), "0".into(), "1".into())
    );

    // no-passwords reads what such a role may read.
    env.extend(vars(&[
        ("BACKUP_GLOBALS", "no-passwords"),
        ("BACKUP_DATABASES", "first"),
    ]));
    let run = pgbackup(&["backup"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    let keys = garage().keys(&bucket);
    let g = keys
        .iter()
        .find(|k| k.starts_with("backup_globals/"))
        .unwrap_or_else(|| panic!("no globals: {keys:?}"));
    let (body, _) = garage().get(&bucket, g);
    let sql = String::from_utf8(decompress_cli(&body, g)).unwrap();
    assert!(sql.contains("CREATE ROLE dumper"), "{sql}");
    assert!(!sql.contains("SCRAM-SHA-256"), "no password hashes: {sql}");
}

#[test]
fn parallel_dumps_overlap_and_sequential_ones_do_not() {
    let pg = Postgres::start_dedicated();
    for n in ["p1", "p2", "p3"] {
        pg.create_db(n);
    }
    let log = temp_dir("par").join("log");
    // Each dump notes when it starts and ends, and takes a second.
    let bin = fake_pg_dump(
        &pg,
        &format!(
            "echo \"start $(date +%s.%N)\" >> {log}\nsleep 1\n$REAL \"$@\"\nrc=$?\necho \"end $(date +%s.%N)\" >> {log}\nexit $rc",
            log = log.display()
        ),
    );
    let intervals = |parallel: &str| -> Vec<(f64, f64)> {
        let _ = std::fs::remove_file(&log);
        let bucket = garage().bucket("multi-par");
        let e = env(
            &pg,
            &bucket,
            &[
                ("BACKUP_DATABASES", "p1,p2,p3"),
                ("BACKUP_GLOBALS", "false"),
                ("BACKUP_PARALLEL", parallel),
                ("PG_BIN_DIR", bin.to_str().unwrap()),
            ],
        );
        let run = pgbackup(&["backup"], &e);
        assert_eq!(run.code, 0, "{}", run.all());
        let text = std::fs::read_to_string(&log).unwrap();
        let nums = |w: &str| -> Vec<f64> {
            text.lines()
                .filter_map(|l| l.strip_prefix(w))
                .map(|v| v.trim().parse().unwrap())
                .collect()
        };
        let (mut s, mut e) = (nums("start "), nums("end "));
        s.sort_by(f64::total_cmp);
        e.sort_by(f64::total_cmp);
        assert_eq!((s.len(), e.len()), (3, 3), "{text}");
        s.into_iter().zip(e).collect()
    };
    let overlaps = |iv: &[(f64, f64)]| iv.windows(2).any(|w| w[1].0 < w[0].1);
    let seq = intervals("1");
    assert!(!overlaps(&seq), "BACKUP_PARALLEL=1 overlapped: {seq:?}");
    let par = intervals("2");
    assert!(
        overlaps(&par),
        "BACKUP_PARALLEL=2 never overlapped: {par:?}"
    );
}

#[test]
fn bad_database_settings_exit_2() {
    for (pairs, var) in [
        (vec![("BACKUP_DATABASES", " , ")], "BACKUP_DATABASES"),
        (
            vec![("BACKUP_EXCLUDE_DATABASES", "x")],
            "BACKUP_EXCLUDE_DATABASES",
        ),
        (
            vec![
                ("BACKUP_DATABASES", "a,b"),
                ("BACKUP_EXCLUDE_DATABASES", "b"),
            ],
            "BACKUP_EXCLUDE_DATABASES",
        ),
        (
            vec![("BACKUP_DATABASES", "all"), ("BACKUP_GLOBALS", "roles")],
            "BACKUP_GLOBALS",
        ),
        (vec![("BACKUP_PARALLEL", "0")], "BACKUP_PARALLEL"),
        (vec![("BACKUP_PARALLEL", "many")], "BACKUP_PARALLEL"),
    ] {
        let mut e = vars(&[
            ("BACKUP_DATABASE_URL", "postgres://u:p@127.0.0.1:1/db"),
            ("BACKUP_LOCAL_DIR", "/nonexistent"),
        ]);
        e.extend(vars(&pairs));
        let run = pgbackup(&["backup"], &e);
        assert_eq!(run.code, 2, "{pairs:?}: {}", run.all());
        assert!(run.stderr.contains(var), "{pairs:?}: {}", run.stderr);
    }
}

#[test]
fn the_daemon_exports_each_database_and_prometheus_scrapes_them() {
    let pg = Postgres::start_dedicated();
    for n in ["first", "second"] {
        pg.create_db(n);
        load_fixture(&pg, n, 100);
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let dir = temp_dir("multi-daemon");
    let mut e = vars(&[
        (
            "BACKUP_DATABASE_URL",
            &url_of(&pg, &superuser(&pg), "postgres"),
        ),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
        ("BACKUP_DATABASES", "first,second,missing"),
        ("BACKUP_LISTEN_ADDRESS", &addr),
        ("RUN_ON_STARTUP", "true"),
    ]);
    e.extend(vars(&[
        ("BACKUP_CRON_SCHEDULE", "0 3 * * *"),
        // Drills every 5 s: each database's newest backup in turn.
        ("BACKUP_VERIFY_CRON_SCHEDULE", "*/5 * * * * *"),
    ]));
    let mut cmd = pgbackup_cmd(&["run"], &e);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _daemon = Guard::spawn(&mut cmd);
    wait_http(&addr, "/healthz");
    let prom = prometheus_with(&format!(
        "  - job_name: backup\n    static_configs:\n      - targets: ['{addr}']\n"
    ));
    eventually(
        "the run of three databases",
        Duration::from_secs(60),
        || {
            let text = http_get(&addr, "/metrics").1;
            ["first", "second", "missing"].iter().all(|d| {
                metric(&text, &format!("backup_attempts_total{{database=\"{d}\"}}")) == Some(1.0)
            })
        },
    );
    assert_eq!(
        prom_value(&prom, "backup_last_status{database=\"first\"} == 1"),
        1.0
    );
    assert_eq!(
        prom_value(&prom, "backup_last_status{database=\"second\"} == 1"),
        1.0
    );
    assert_eq!(
        prom_value(&prom, "backup_failures_total{database=\"missing\",stage=\"connect\"} > 0 or backup_failures_total{database=\"missing\",stage=\"version\"} > 0"),
        1.0
    );
    assert_eq!(
        prom_value(&prom, "count(backup_last_status{job=\"backup\"})"),
        3.0
    );
    assert_eq!(prom_value(&prom, "backup_globals_last_status"), 1.0);
    // Scheduled drills, per database.
    for d in ["first", "second"] {
        let verified = prom_value(
            &prom,
            &format!("backup_last_verified_timestamp_seconds{{database=\"{d}\"}} > 0"),
        );
        assert!(verified > 0.0, "{d} never drilled");
    }
    assert!(prom_value(&prom, "backup_globals_last_success_timestamp_seconds") > 0.0);
}
