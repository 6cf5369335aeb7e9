//! One-shot runs publish their metrics: through Debian's Pushgateway into
//! a real Prometheus, and as a textfile that promtool accepts.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

const PUSHGATEWAY: &str = "/usr/bin/prometheus-pushgateway";

/// A Pushgateway on a free loopback port; its pid and address.
fn pushgateway() -> (u32, String) {
    need(PUSHGATEWAY);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(PUSHGATEWAY);
    cmd.arg(format!("--web.listen-address={addr}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let pid = spawn_service(cmd, libc::SIGTERM);
    wait_http(&addr, "/-/ready");
    (pid, addr)
}

/// A Prometheus scraping the Pushgateway every second, as docs/monitoring.md says.
fn prometheus_scraping(pushgateway: &str) -> String {
    prometheus_with(&format!(
        "  - job_name: pushgateway\n    honor_labels: true\n    static_configs:\n      - targets: ['{pushgateway}']\n"
    ))
}

fn env_for(db: &str, dir: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vars(&[
        ("BACKUP_DATABASE_URL", &pg().url(db)),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
    ]);
    env.extend(vars(extra));
    env
}

#[test]
fn a_pushed_backup_reaches_prometheus_and_a_failed_run_keeps_the_last_success() {
    let db = pg().fresh_db("push");
    load_fixture(pg(), &db, 200);
    let (pid, gw) = pushgateway();
    let prom = prometheus_scraping(&gw);
    let dir = temp_dir("push-store");
    let url = format!("http://{gw}");
    let env = env_for(
        &db,
        &dir,
        &[
            ("BACKUP_PUSHGATEWAY_URL", &url),
            ("BACKUP_INSTANCE", "cron-1"),
        ],
    );
    let run = pgbackup(&["backup"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("metrics pushed"), "{}", run.stderr);

    let sel =
        format!("{{job=\"backup\",instance=\"cron-1\",command=\"backup\",database=\"{db}\"}}");
    let success = prom_value(
        &prom,
        &format!("backup_last_success_timestamp_seconds{sel}"),
    );
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - success).abs() < 120.0, "{success} vs {now}");
    assert_eq!(prom_value(&prom, &format!("backup_last_status{sel}")), 1.0);
    assert!(prom_value(&prom, &format!("backup_last_size_bytes{sel}")) > 0.0);
    // Only a daemon knows when it runs next.
    let (_, pushed) = http_get(&gw, "/metrics");
    assert!(
        !pushed.contains("backup_next_run_timestamp_seconds"),
        "{pushed}"
    );
    assert!(
        pushed.contains("push_time_seconds{command=\"backup\",instance=\"cron-1\",job=\"backup\"}"),
        "{pushed}"
    );

    // The database refuses: the run fails, its failure is pushed, and the
    // last success is still there (as the newest stored backup's time).
    let mut bad = env.clone();
    for (k, v) in bad.iter_mut() {
        if k == "BACKUP_DATABASE_URL" {
            *v = v.replacen(&pg().password, "wrong", 1);
        }
    }
    let run = pgbackup(&["backup"], &bad);
    assert_eq!(run.code, 1, "{}", run.all());
    eventually("the failure in Prometheus", Duration::from_secs(30), || {
        prom_value(&prom, &format!("backup_last_status{sel}")) == 0.0
    });
    let failures = prom_value(
        &prom,
        "backup_failures_total{job=\"backup\",instance=\"cron-1\",stage=\"connect\"}",
    );
    assert_eq!(failures, 1.0);
    let kept = prom_value(
        &prom,
        &format!("backup_last_success_timestamp_seconds{sel}"),
    );
    assert!(
        kept > 0.0 && (success - kept).abs() < 30.0,
        "the last success survived the failed run: {kept} vs {success}"
    );

    // A prune pushes a group of its own and leaves the backup's alone.
    let run = pgbackup(&["prune"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    let (_, pushed) = http_get(&gw, "/metrics");
    assert!(pushed.contains("command=\"prune\""), "{pushed}");
    assert!(
        pushed
            .lines()
            .any(|l| l.starts_with("backup_last_success_timestamp_seconds{command=\"backup\"")),
        "{pushed}"
    );

    // A drill pushes the verification series in a group of its own.
    let run = pgbackup(&["verify", "latest", "--restore"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    let verified = prom_value(
        &prom,
        &format!("backup_last_verified_timestamp_seconds{{job=\"backup\",instance=\"cron-1\",command=\"verify\",database=\"{db}\"}}"),
    );
    assert!((chrono::Utc::now().timestamp() as f64 - verified).abs() < 120.0);

    // The Pushgateway goes away: the backup still succeeds.
    unsafe_kill(pid);
    eventually("the Pushgateway to stop", Duration::from_secs(10), || {
        std::net::TcpStream::connect(&gw).is_err()
    });
    let run = pgbackup(&["backup"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("metrics not pushed"), "{}", run.stderr);
    assert!(!run.stderr.contains(&pg().password));
}

fn unsafe_kill(pid: u32) {
    // SAFETY: kill(2) on a child this test started; no memory is shared.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
}

#[test]
fn the_textfile_passes_promtool_and_holds_the_daemons_series() {
    let db = pg().fresh_db("textfile");
    load_fixture(pg(), &db, 200);
    let store = temp_dir("textfile-store");
    let textfiles = temp_dir("textfile-dir");
    let env = env_for(
        &db,
        &store,
        &[
            ("BACKUP_TEXTFILE_DIR", textfiles.to_str().unwrap()),
            ("BACKUP_INSTANCE", "host-1"),
        ],
    );
    let run = pgbackup(&["backup"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    let file = textfiles.join("pgbackup_host-1.prom");
    let text = std::fs::read_to_string(&file).expect("the textfile");
    let leftovers: Vec<_> = std::fs::read_dir(&textfiles)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(leftovers, vec!["pgbackup_host-1.prom"], "no temp file left");

    // promtool reads it as the textfile collector would, lint included.
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool (scripts/setup installs prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The daemon, backing up the same database once, serves the same
    // series with the same labels (the textfile adds job, instance, command).
    let addr = format!("127.0.0.1:{}", free_port());
    let daemon_store = temp_dir("textfile-daemon");
    let mut denv = env_for(
        &db,
        &daemon_store,
        &[("BACKUP_LISTEN_ADDRESS", &addr), ("RUN_ON_STARTUP", "true")],
    );
    denv.retain(|(k, _)| k != "BACKUP_TEXTFILE_DIR");
    let mut cmd = pgbackup_cmd(&["run"], &denv);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _daemon = Guard::spawn(&mut cmd);
    wait_http(&addr, "/healthz");
    let mut served = String::new();
    eventually("the daemon's backup", Duration::from_secs(60), || {
        served = http_get(&addr, "/metrics").1;
        metric(
            &served,
            &format!("backup_attempts_total{{database=\"{db}\"}}"),
        ) == Some(1.0)
    });
    let extra = "job=\"backup\",instance=\"host-1\",command=\"backup\",";
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let series = line.rsplit_once(' ').unwrap().0.replacen(extra, "", 1);
        assert!(
            served.lines().any(|l| l.starts_with(&format!("{series} "))),
            "{series} is not served by the daemon"
        );
        checked += 1;
    }
    assert!(checked > 20, "{text}");
    for s in ["backup_last_status", "backup_attempts_total"] {
        let key = format!("{s}{{database=\"{db}\"}}");
        let file_key = format!("{s}{{{extra}database=\"{db}\"}}");
        assert_eq!(metric(&text, &file_key), metric(&served, &key), "{s}");
    }
}
