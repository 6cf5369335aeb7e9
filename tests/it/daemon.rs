//! `pgbackup run`: schedule, metrics, health, a real Prometheus scraping it,
//! overlap, and clean shutdown.

use std::time::{Duration, Instant};

use crate::harness::*;

struct Daemon {
    proc: Guard,
    addr: String,
    bucket: String,
}

fn start_daemon(db: &str, extra: &[(&str, &str)]) -> Daemon {
    let (pg, g) = (pg(), garage());
    let bucket = g.bucket("daemon");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut env = vars(&[
        ("BACKUP_DATABASE_URL", &pg.url(db)),
        ("BACKUP_LISTEN_ADDRESS", &addr),
        ("BACKUP_CRON_SCHEDULE", "0 3 * * *"),
    ]);
    env.extend(g.env(&bucket));
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    let mut cmd = pgbackup_cmd(&["run"], &env);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let proc = Guard::spawn(&mut cmd);
    wait_http(&addr, "/healthz");
    Daemon { proc, addr, bucket }
}

fn metrics_of(d: &Daemon) -> String {
    let (code, body) = http_get(&d.addr, "/metrics");
    assert_eq!(code, 200);
    body
}

fn series(name: &str, db: &str) -> String {
    format!("{name}{{database=\"{db}\"}}")
}

fn wait_for_attempts(d: &Daemon, db: &str, n: f64) -> String {
    let mut text = String::new();
    eventually("the backup to finish", Duration::from_secs(60), || {
        text = metrics_of(d);
        metric(&text, &series("backup_attempts_total", db)).unwrap_or(0.0) >= n
            && metric(&text, &series("backup_in_progress", db)) == Some(0.0)
    });
    text
}

#[test]
fn backs_up_on_startup_and_exports_the_contract_metrics() {
    let pg = pg();
    let db = pg.fresh_db("dmn");
    load_fixture(pg, &db, 5000);
    let mut d = start_daemon(&db, &[("RUN_ON_STARTUP", "true")]);

    let text = wait_for_attempts(&d, &db, 1.0);
    let now = chrono::Utc::now().timestamp() as f64;
    let get = |name: &str| {
        metric(&text, &series(name, &db)).unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    assert_eq!(get("backup_last_status"), 1.0);
    assert!((now - get("backup_last_success_timestamp_seconds")).abs() < 120.0);
    assert_eq!(
        get("backup_last_attempt_timestamp_seconds"),
        get("backup_last_success_timestamp_seconds")
    );
    assert!(get("backup_last_duration_seconds") > 0.0);
    assert!(get("backup_last_size_bytes") > 0.0);
    assert!(get("backup_last_dump_bytes") > get("backup_last_size_bytes"));
    assert_eq!(get("backup_attempts_total"), 1.0);
    assert_eq!(get("backup_duration_seconds_count"), 1.0);
    assert!(get("backup_next_run_timestamp_seconds") > now);
    assert_eq!(get("backup_last_verified_timestamp_seconds"), 0.0);
    for stage in ["connect", "dump", "upload", "retention"] {
        let s = format!("backup_failures_total{{database=\"{db}\",stage=\"{stage}\"}}");
        assert_eq!(metric(&text, &s), Some(0.0), "{s}");
    }
    for result in ["delivered", "failed"] {
        let s = format!("backup_webhook_deliveries_total{{database=\"{db}\",result=\"{result}\"}}");
        assert_eq!(metric(&text, &s), Some(0.0), "{s}");
    }
    assert!(
        text.contains("backup_build_info{version=\"") && text.contains("pg_dump_version=\"15."),
        "{text}"
    );
    assert_eq!(garage().backup_keys(&d.bucket).len(), 1);
    // Retention ran after the success and reported what storage holds.
    eventually(
        "retention to report storage",
        Duration::from_secs(30),
        || {
            let t = metrics_of(&d);
            metric(&t, &series("backup_stored_objects", &db)) == Some(1.0)
                && metric(&t, &series("backup_stored_bytes", &db))
                    == Some(get("backup_last_size_bytes"))
        },
    );

    // The endpoints.
    let (code, head, _) = http("GET", &d.addr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        head.to_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    let (code, body) = http_get(&d.addr, "/health");
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["healthy"], true);
    assert!(health["last_object"]
        .as_str()
        .unwrap()
        .starts_with("backup_"));
    assert!(health["next_run"].as_str().is_some());
    let (code, page) = http_get(&d.addr, "/");
    assert_eq!(code, 200);
    assert!(page.contains("/metrics") && page.contains("/health"));
    assert_eq!(http_get(&d.addr, "/nope").0, 404);
    assert_eq!(http("POST", &d.addr, "/metrics").0, 405);

    d.proc.signal(libc::SIGTERM);
    let status = d
        .proc
        .wait_timeout(Duration::from_secs(10))
        .expect("exit within 10 s");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn health_turns_503_when_a_backup_failed() {
    let d = start_daemon("no_such_database", &[("RUN_ON_STARTUP", "true")]);
    let text = wait_for_attempts(&d, "no_such_database", 1.0);
    let s = "backup_failures_total{database=\"no_such_database\",stage=\"connect\"}";
    assert_eq!(metric(&text, s), Some(1.0), "{text}");
    assert_eq!(
        metric(&text, &series("backup_last_status", "no_such_database")),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            &series("backup_last_success_timestamp_seconds", "no_such_database")
        ),
        Some(0.0)
    );
    let (code, body) = http_get(&d.addr, "/health");
    assert_eq!(code, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["last_error"]["stage"], "connect");
    assert!(!body.contains(&pg().password));
}

#[test]
fn health_turns_503_when_the_last_success_is_too_old() {
    let pg = pg();
    let db = pg.fresh_db("old");
    load_fixture(pg, &db, 10);
    // 0.0005 h = 1.8 s.
    let d = start_daemon(
        &db,
        &[
            ("RUN_ON_STARTUP", "true"),
            ("BACKUP_MAX_AGE_HOURS", "0.0005"),
        ],
    );
    wait_for_attempts(&d, &db, 1.0);
    let t = Instant::now();
    eventually("/health to turn 503", Duration::from_secs(10), || {
        http_get(&d.addr, "/health").0 == 503
    });
    assert!(t.elapsed() < Duration::from_secs(5));
    let (_, body) = http_get(&d.addr, "/health");
    assert!(body.contains("old"), "{body}");
}

#[test]
fn a_firing_during_a_running_backup_is_skipped_not_overlapped() {
    let pg = pg();
    let db = pg.fresh_db("overlap");
    load_fixture(pg, &db, 10);
    // Each pg_dump takes 2.5 s and logs its start and end.
    let log = temp_dir("overlap").join("runs.log");
    let bin = fake_pg_dump(
        pg,
        &format!(
            "echo start >> {l}\nsleep 2.5\n$REAL \"$@\"\nrc=$?\necho end >> {l}\nexit $rc",
            l = log.display()
        ),
    );
    let d = start_daemon(
        &db,
        &[
            ("BACKUP_CRON_SCHEDULE", "* * * * * *"),
            ("PG_BIN_DIR", bin.to_str().unwrap()),
        ],
    );
    let text = wait_for_attempts(&d, &db, 2.0);
    let skipped = metric(&text, &series("backup_skipped_runs_total", &db)).unwrap();
    assert!(
        skipped >= 2.0,
        "every-second firings during 2.5 s backups are skipped: {skipped}"
    );
    let runs = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = runs.lines().collect();
    for pair in lines.chunks(2) {
        if pair.len() == 2 {
            assert_eq!(pair, ["start", "end"], "backups overlapped: {runs}");
        }
    }
}

#[test]
fn sigterm_during_a_backup_aborts_it_and_exits_0() {
    let pg = pg();
    let db = pg.fresh_db("sigterm");
    load_fixture(pg, &db, 300_000);
    // pg_dump streams ~20 MB (several parts: a multipart upload is open),
    // then stalls as if the database were slow.
    let bin = fake_pg_dump(pg, "$REAL \"$@\" | head -c 20000000\nsleep 300");
    let mut d = start_daemon(
        &db,
        &[
            ("RUN_ON_STARTUP", "true"),
            ("PG_BIN_DIR", bin.to_str().unwrap()),
            ("BACKUP_COMPRESSION", "none"),
        ],
    );
    let g = garage();
    eventually(
        "a multipart upload to be open",
        Duration::from_secs(60),
        || g.pending_uploads(&d.bucket) > 0,
    );
    let dump_pids = children_of(d.proc.pid());
    assert!(!dump_pids.is_empty(), "pg_dump is running");

    let t = Instant::now();
    d.proc.signal(libc::SIGTERM);
    let status = d
        .proc
        .wait_timeout(Duration::from_secs(10))
        .expect("exit within 10 s");
    assert_eq!(status.code(), Some(0), "exit code");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(g.keys(&d.bucket), Vec::<String>::new(), "no object");
    assert_eq!(g.pending_uploads(&d.bucket), 0, "multipart upload aborted");
    for pid in dump_pids {
        assert!(
            group_members(pid).is_empty(),
            "pg_dump's process group {pid} still has members"
        );
    }
}

#[test]
fn a_real_prometheus_scrapes_the_daemon() {
    let pg = pg();
    let db = pg.fresh_db("prom");
    load_fixture(pg, &db, 100);
    let d = start_daemon(&db, &[("RUN_ON_STARTUP", "true")]);
    wait_for_attempts(&d, &db, 1.0);

    let prom = std::path::Path::new("/usr/bin/prometheus");
    assert!(
        prom.exists(),
        "prometheus not found: apt-get install prometheus"
    );
    let dir = temp_dir("prom");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: backup\n    static_configs:\n      - targets: ['{}']\n",
            d.addr
        ),
    )
    .unwrap();
    let paddr = format!("127.0.0.1:{}", free_port());
    let _prom = Guard::spawn(
        std::process::Command::new(prom)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={paddr}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let query = "/api/v1/query?query=backup_last_success_timestamp_seconds";
    let mut body = String::new();
    eventually(
        "Prometheus to have scraped the daemon",
        Duration::from_secs(60),
        || {
            if std::net::TcpStream::connect(&paddr).is_err() {
                return false;
            }
            body = http_get(&paddr, query).1;
            body.contains("\"result\":[{")
        },
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let r = &v["data"]["result"][0];
    assert_eq!(r["metric"]["database"], db.as_str());
    assert_eq!(r["metric"]["job"], "backup");
    let ts: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
    assert!(
        (chrono::Utc::now().timestamp() as f64 - ts).abs() < 300.0,
        "fresh success timestamp: {ts}"
    );
    // The counter keeps its _total name through Prometheus.
    let (_, body) = http_get(&paddr, "/api/v1/query?query=backup_attempts_total");
    assert!(body.contains("\"backup_attempts_total\""), "{body}");
}

#[test]
fn postgres_stopped_mid_dump_then_the_next_scheduled_backup_succeeds() {
    let mut pg2 = Postgres::start_dedicated();
    let db = pg2.fresh_db("crash");
    load_fixture(&pg2, &db, 300_000);
    let mark = temp_dir("crash").join("stalled");
    // After 4 MB the dump stalls for 3 s (marking the moment), then goes on.
    let bin = fake_pg_dump(
        &pg2,
        &format!(
            "$REAL \"$@\" | (head -c 4000000; touch {m}; sleep 3; cat)",
            m = mark.display()
        ),
    );
    let g = garage();
    let bucket = g.bucket("crash");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut env = vars(&[
        ("BACKUP_DATABASE_URL", &pg2.url(&db)),
        ("BACKUP_LISTEN_ADDRESS", &addr),
        ("BACKUP_CRON_SCHEDULE", "*/5 * * * * *"),
        ("RUN_ON_STARTUP", "true"),
        ("PG_BIN_DIR", bin.to_str().unwrap()),
    ]);
    env.extend(g.env(&bucket));
    let mut cmd = pgbackup_cmd(&["run"], &env);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut proc = Guard::spawn(&mut cmd);
    let d = Daemon {
        proc: Guard(None),
        addr: addr.clone(),
        bucket: bucket.clone(),
    };

    eventually("the dump to be mid-stream", Duration::from_secs(60), || {
        mark.exists()
    });
    pg2.kill_server();
    let text = wait_for_attempts(&d, &db, 1.0);
    let failed = format!("backup_failures_total{{database=\"{db}\",stage=\"dump\"}}");
    assert_eq!(metric(&text, &failed), Some(1.0), "{text}");
    assert!(g.keys(&bucket).is_empty(), "no object from the broken dump");
    assert_eq!(g.pending_uploads(&bucket), 0);
    assert_eq!(http_get(&addr, "/health").0, 503);

    pg2.restart_server();
    eventually(
        "a later scheduled backup to succeed",
        Duration::from_secs(90),
        || metric(&metrics_of(&d), &series("backup_last_status", &db)) == Some(1.0),
    );
    assert_eq!(g.backup_keys(&bucket).len(), 1);
    assert_eq!(http_get(&addr, "/health").0, 200);
    assert!(
        proc.wait_timeout(Duration::from_millis(10)).is_none(),
        "the daemon kept running"
    );
}

#[test]
fn a_failed_backup_is_notified_and_counted_as_delivered() {
    use crate::notify::{Receiver, Reply};
    let hook = Receiver::start(vec![Reply::Status(200)]);
    let url = hook.url("/services/T000/B000/secret-token");
    let d = start_daemon(
        "no_such_db_notify",
        &[("RUN_ON_STARTUP", "true"), ("BACKUP_WEBHOOK_URL", &url)],
    );
    let db = "no_such_db_notify";
    let delivered =
        format!("backup_webhook_deliveries_total{{database=\"{db}\",result=\"delivered\"}}");
    eventually(
        "the failure to be delivered",
        Duration::from_secs(30),
        || metric(&metrics_of(&d), &delivered) == Some(1.0),
    );
    let got = hook.received();
    assert_eq!(got.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert!(body["text"].as_str().unwrap().contains(db), "{body}");
    assert!(!got[0].body.contains("secret-token") && !got[0].body.contains(&pg().password));
}

#[test]
fn a_webhook_that_never_answers_does_not_delay_the_schedule() {
    use crate::notify::{Receiver, Reply};
    let hook = Receiver::start(vec![Reply::Hang; 100]);
    let db = "no_such_db_hang";
    let d = start_daemon(
        db,
        &[
            ("BACKUP_CRON_SCHEDULE", "* * * * * *"),
            ("BACKUP_WEBHOOK_URL", &hook.url("/hook")),
            ("BACKUP_WEBHOOK_RETRIES", "0"),
        ],
    );
    // Each delivery hangs for its 10 s timeout; meanwhile the every-second
    // schedule keeps firing.
    let t = Instant::now();
    wait_for_attempts(&d, db, 3.0);
    assert!(
        t.elapsed() < Duration::from_secs(9),
        "attempts were held up by the webhook"
    );
    assert!(!hook.received().is_empty(), "the webhook was called");
}

#[test]
fn store_down_then_back_the_daemon_recovers_on_its_next_run() {
    let pg = pg();
    let db = pg.fresh_db("storedown");
    load_fixture(pg, &db, 10);
    let proxy = crate::proxy::Proxy::start(garage().port);
    proxy.cut_after(1);
    let d = start_daemon(
        &db,
        &[
            ("BACKUP_CRON_SCHEDULE", "*/3 * * * * *"),
            ("RUN_ON_STARTUP", "true"),
            ("AWS_S3_ENDPOINT", &proxy.endpoint()),
        ],
    );
    let upload = format!("backup_failures_total{{database=\"{db}\",stage=\"upload\"}}");
    eventually(
        "an upload failure to be counted",
        Duration::from_secs(90),
        || metric(&metrics_of(&d), &upload).unwrap_or(0.0) >= 1.0,
    );
    assert_eq!(http_get(&d.addr, "/health").0, 503);
    assert!(garage().keys(&d.bucket).is_empty());

    proxy.restore();
    eventually(
        "a later scheduled backup to succeed",
        Duration::from_secs(90),
        || metric(&metrics_of(&d), &series("backup_last_status", &db)) == Some(1.0),
    );
    assert_eq!(http_get(&d.addr, "/health").0, 200);
    assert!(!garage().backup_keys(&d.bucket).is_empty());
}

#[test]
fn scheduled_restore_drills_set_the_verified_timestamp() {
    let pg = pg();
    let db = pg.fresh_db("drill");
    load_fixture(pg, &db, 1000);
    let d = start_daemon(
        &db,
        &[
            ("RUN_ON_STARTUP", "true"),
            ("BACKUP_VERIFY_CRON_SCHEDULE", "*/3 * * * * *"),
        ],
    );
    wait_for_attempts(&d, &db, 1.0);
    let mut text = String::new();
    eventually("a drill to pass", Duration::from_secs(90), || {
        text = metrics_of(&d);
        metric(
            &text,
            &series("backup_last_verified_timestamp_seconds", &db),
        )
        .unwrap_or(0.0)
            > 0.0
    });
    let verified = metric(
        &text,
        &series("backup_last_verified_timestamp_seconds", &db),
    )
    .unwrap();
    assert!((chrono::Utc::now().timestamp() as f64 - verified).abs() < 120.0);
    // Drills leave no scratch database behind (give a running one time to finish).
    std::thread::sleep(Duration::from_secs(1));
    let dbs = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'pgbackup_drill_%'",
    );
    assert!(
        dbs.trim().parse::<u32>().unwrap() <= 1,
        "scratch databases pile up: {dbs}"
    );
}

#[test]
fn a_failing_drill_counts_as_a_verify_failure_and_is_notified() {
    use crate::notify::{Receiver, Reply};
    let pg = pg();
    let db = pg.fresh_db("drillfail");
    load_fixture(pg, &db, 100);
    let hook = Receiver::start(vec![Reply::Status(200); 100]);
    let d = start_daemon(
        &db,
        &[
            ("RUN_ON_STARTUP", "true"),
            ("BACKUP_VERIFY_CRON_SCHEDULE", "*/3 * * * * *"),
            ("BACKUP_VERIFY_SQL", "SELECT false"),
            ("BACKUP_WEBHOOK_URL", &hook.url("/hook")),
        ],
    );
    wait_for_attempts(&d, &db, 1.0);
    let verify = format!("backup_failures_total{{database=\"{db}\",stage=\"verify\"}}");
    eventually("drills to fail", Duration::from_secs(90), || {
        metric(&metrics_of(&d), &verify).unwrap_or(0.0) >= 2.0
    });
    let text = metrics_of(&d);
    assert_eq!(
        metric(
            &text,
            &series("backup_last_verified_timestamp_seconds", &db)
        ),
        Some(0.0)
    );
    eventually(
        "the drill failure to be notified",
        Duration::from_secs(30),
        || hook.received().iter().any(|r| r.body.contains("verify")),
    );
}

/// The HTTP server answers while the start-up probe still waits for a
/// database that accepts connections and never replies: `/healthz` at
/// once, `/health` 200 with reason `starting`.
#[test]
fn health_answers_starting_while_the_database_probe_hangs() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // Accept and hold every connection without a word.
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in silent.incoming().take(4) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(20));
    });
    let dir = temp_dir("starting");
    let addr = format!("127.0.0.1:{}", free_port());
    let env = vars(&[
        (
            "BACKUP_DATABASE_URL",
            &format!("postgres://u:secret@127.0.0.1:{port}/db"),
        ),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
        ("BACKUP_LISTEN_ADDRESS", &addr),
    ]);
    let mut cmd = pgbackup_cmd(&["run"], &env);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let t0 = Instant::now();
    let mut proc = Guard::spawn(&mut cmd);
    wait_http(&addr, "/healthz");
    let (code, body) = http_get(&addr, "/health");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["reason"], "starting", "{body}");
    assert_eq!(v["starting"], true, "{body}");
    proc.signal(libc::SIGTERM);
    let status = proc
        .wait_timeout(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
    drop(held);
}
