//! The alerting bundle end to end, natively (the compose stack without
//! Docker): PostgreSQL, Garage and `pgbackup run`, scraped by Debian's
//! Prometheus with the project's prometheus.yml and alert rules, alerting
//! through Debian's Alertmanager with the project's alertmanager.yml and
//! Slack template, into a loopback HTTP receiver standing in for Slack.
//! PostgreSQL is then stopped: BackupFailed (and BackupTooOld) must reach
//! the receiver as Slack messages. Then every query of the Grafana
//! dashboard must return data from that Prometheus.
//!
//! How the bundle is adapted, exactly (every replacement must occur exactly
//! the stated number of times, or the test fails: a changed bundle file is
//! noticed, never silently left unshortened):
//!
//! - prometheus.yml: `scrape_interval: 30s`, `scrape_timeout: 10s` and
//!   `evaluation_interval: 30s` become `1s`; the targets `pgbackup:9854`,
//!   `alertmanager:9093` (twice: alerting and its scrape job) and
//!   `localhost:9090` become the loopback addresses of the daemon, the
//!   Alertmanager and the Prometheus started here. `rule_files` is kept
//!   (`rules/*.yml`, relative to the copied config).
//! - rules/*.yml: only the literals of docs/alerts.md "Shorter durations for tests",
//!   replaced inside the rule they belong to (the file is split at each
//!   `- alert:`), with the table's example values: see [`SHORTER`]. Every
//!   `for:` becomes seconds, and the time literals in the expressions
//!   (`25 * 3600`, `[7d:1h]`, `> 3600`, `[1d]`, `8 * 86400`, `[3d]`,
//!   `offset 3d`, `[14d]`) are scaled down; nothing else in an expression
//!   changes. An alert missing from the table fails the test.
//! - alertmanager.yml: `group_wait: 30s` becomes `1s` and `group_interval: 5m`
//!   becomes `5s`; both `api_url_file: /etc/alertmanager/slack_webhook_url`
//!   point at a file in the temp dir holding the receiver's URL (with a
//!   trailing newline, as docs/monitoring.md tells users to write it); the templates
//!   glob points at a copy of prometheus/templates/.
//!
//! The dashboard's Grafana variables are substituted as Grafana would for its
//! default range (now-7d): `$database` is the test's database, `$__range`
//! 7d, `$__interval` the panel's minimum interval (1h on the panels that use
//! it) or 10m, `$__rate_interval` that plus a scrape interval. The Database
//! variable's own query (`label_values(...)`) goes to the label values API,
//! as Grafana sends it, and must offer the test's database.
//!
//! The daemon also runs restore drills (BACKUP_VERIFY_CRON_SCHEDULE), so
//! "Time since last restore drill" has data like every other panel.
//!
//! The services are started and taken through that story once, by the first
//! test that needs them ([`bundle`]); each test then checks one thing, so a
//! failure names what broke. A few tests check the bundle's files alone and
//! need no service.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

use crate::harness::*;
use crate::notify::{Received, Receiver};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// Per alert: (literal in the project's rule, its test value, how many
/// times the literal occurs in that rule). The values are docs/alerts.md "Shorter
/// durations for tests"'s examples.
type Shortening = (&'static str, &'static [(&'static str, &'static str, usize)]);
const SHORTER: &[Shortening] = &[
    ("BackupExporterDown", &[("for: 5m", "for: 5s", 1)]),
    (
        "BackupJobNotPushing",
        &[("25 * 3600", "20", 2), ("for: 5m", "for: 0s", 1)],
    ),
    (
        "BackupTooOld",
        &[("25 * 3600", "20", 1), ("for: 5m", "for: 0s", 1)],
    ),
    ("BackupNeverSucceeded", &[("for: 25h", "for: 30s", 1)]),
    ("BackupFailed", &[("for: 5m", "for: 0s", 1)]),
    ("BackupGlobalsFailed", &[("for: 5m", "for: 0s", 1)]),
    (
        "BackupSizeAnomaly",
        // Twice in the expression, once in the description's query.
        &[("[7d:1h]", "[10m:5s]", 3), ("for: 5m", "for: 0s", 1)],
    ),
    (
        "BackupScheduleStalled",
        &[("> 3600", "> 5", 1), ("for: 15m", "for: 0s", 1)],
    ),
    ("BackupRunningTooLong", &[("for: 6h", "for: 20s", 1)]),
    (
        "BackupVerificationFailed",
        &[("[1d]", "[2m]", 1), ("for: 5m", "for: 0s", 1)],
    ),
    (
        "BackupVerificationTooOld",
        &[("8 * 86400", "20", 1), ("for: 1h", "for: 0s", 1)],
    ),
    (
        "BackupRetentionFailing",
        &[("[1d]", "[2m]", 1), ("for: 5m", "for: 0s", 1)],
    ),
    (
        "BackupRetentionStalled",
        &[
            ("[3d]", "[30s]", 1),
            ("offset 3d", "offset 30s", 1),
            ("[14d]", "[10m]", 1),
            ("for: 1h", "for: 0s", 1),
        ],
    ),
    (
        "BackupWebhookFailing",
        &[("[1d]", "[2m]", 1), ("for: 5m", "for: 0s", 1)],
    ),
    (
        "BackupWALArchiveStalled",
        &[
            ("[10m]", "[30s]", 1),
            ("> 300", "> 10", 1),
            ("for: 5m", "for: 0s", 1),
        ],
    ),
    ("BackupWALSlotRetention", &[("for: 15m", "for: 0s", 1)]),
    (
        "BackupBaseBackupTooOld",
        &[("8 * 86400", "20", 1), ("for: 1h", "for: 0s", 1)],
    ),
    ("BackupBaseBackupMissing", &[("for: 26h", "for: 30s", 1)]),
];

/// Set by a passing restore drill.
const VERIFIED: &str = "backup_last_verified_timestamp_seconds";

/// Dashboard queries over counters of things this test makes happen: at
/// least one of their samples must be above 0, not merely present.
const MUST_BE_POSITIVE: &[&str] = &[
    "backup_attempts_total",
    "backup_failures_total",
    "backup_retention_deleted_total",
    "backup_webhook_deliveries_total",
    "ALERTS",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Replaces `from` by `to`, which must occur exactly `count` times.
fn replace_exactly(text: &str, from: &str, to: &str, count: usize, what: &str) -> String {
    let found = text.matches(from).count();
    assert_eq!(
        found, count,
        "{what}: expected {from:?} {count} time(s), found {found}; update the test's rewriting"
    );
    text.replace(from, to)
}

/// The rule file with every alert's durations shortened (see [`SHORTER`]).
/// Returns the text and the alert names it holds.
fn shorten_rules(text: &str, file: &str) -> (String, Vec<String>) {
    // Blocks of lines: the text before the first alert, then one per alert
    // (a group's `- name:` line ends the alert before it).
    let mut blocks: Vec<(Option<String>, String)> = vec![(None, String::new())];
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- alert:") {
            blocks.push((Some(name.trim().to_string()), String::new()));
        } else if t.starts_with("- name:") {
            blocks.push((None, String::new()));
        }
        blocks.last_mut().unwrap().1.push_str(line);
    }
    let mut out = String::new();
    let mut names = Vec::new();
    for (name, mut block) in blocks {
        if let Some(name) = name {
            let (_, edits) = SHORTER.iter().find(|(n, _)| *n == name).unwrap_or_else(|| {
                panic!("{file}: alert {name} is new: add its durations to SHORTER")
            });
            for (from, to, n) in *edits {
                block = replace_exactly(&block, from, to, *n, &format!("{file}, {name}"));
            }
            names.push(name);
        }
        out.push_str(&block);
    }
    (out, names)
}

/// Grafana's variables in a dashboard query (`$name`, `${name}`,
/// `${name:format}`) replaced by `vars`; an unknown variable fails.
fn substitute(expr: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').expect("unclosed ${");
            let name = braced[..end].split(':').next().unwrap();
            (name, end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        let value = vars
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("dashboard query uses unknown variable ${name}: {expr}"));
        out.push_str(&value.1);
        rest = &after[len..];
    }
    out.push_str(rest);
    assert!(!out.contains("[["), "old [[variable]] syntax in {expr}");
    out
}

/// Seconds in a one-unit duration such as `30s`, `10m`, `1h`, `7d`.
fn seconds(d: &str) -> u64 {
    let (n, unit) = d.split_at(d.len() - 1);
    let n: u64 = n
        .parse()
        .unwrap_or_else(|_| panic!("unexpected interval {d:?}"));
    n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => panic!("unexpected interval {d:?}"),
    }
}

struct Target {
    panel: String,
    ref_id: String,
    expr: String,
    /// The panel's minimum interval, if it sets one.
    interval: Option<String>,
}

fn dashboard_targets() -> Vec<Target> {
    fn walk(panels: &[Value], out: &mut Vec<Target>) {
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                let Some(expr) = t["expr"].as_str() else {
                    continue;
                };
                out.push(Target {
                    panel: p["title"].as_str().unwrap_or("?").to_string(),
                    ref_id: t["refId"].as_str().unwrap_or("?").to_string(),
                    expr: expr.to_string(),
                    interval: p["interval"]
                        .as_str()
                        .or(t["interval"].as_str())
                        .filter(|i| !i.is_empty())
                        .map(String::from),
                });
            }
            walk(p["panels"].as_array().map_or(&[], |v| v), out);
        }
    }
    let dash: Value = serde_json::from_str(&read("grafana/dashboards/pgbackup.json")).unwrap();
    let mut out = Vec::new();
    walk(dash["panels"].as_array().unwrap(), &mut out);
    out
}

/// Where the services log, for the message of a failed wait.
struct Logs(Vec<PathBuf>);

impl Logs {
    fn tails(&self) -> String {
        let mut s = String::new();
        for p in &self.0 {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(25);
            s.push_str(&format!(
                "\n--- {} (last lines)\n{}",
                p.file_name().unwrap().to_string_lossy(),
                lines[from..].join("\n")
            ));
        }
        s
    }

    /// Polls `f` every 200 ms until it holds (true) or `timeout` passes.
    fn until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if f() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// [`Logs::until`], failing with `what` and the services' logs.
    fn wait(&self, what: &str, timeout: Duration, f: impl FnMut() -> bool) {
        if !Logs::until(timeout, f) {
            panic!(
                "timed out after {timeout:?} waiting for {what}{}",
                self.tails()
            );
        }
    }
}

/// The text without ANSI colour sequences (ESC [ ... letter).
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// An instant query; the result of a successful evaluation.
fn query(prom: &str, expr: &str) -> Vec<Value> {
    let q = utf8_percent_encode(expr, NON_ALPHANUMERIC);
    let (code, body) = http_get(prom, &format!("/api/v1/query?query={q}"));
    assert_eq!(code, 200, "query {expr}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "query {expr}: {body}");
    assert_eq!(v["data"]["resultType"], "vector", "query {expr}: {body}");
    v["data"]["result"].as_array().unwrap().clone()
}

fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Prometheus's alerts in `state` (pending, firing) named `name`.
fn prom_alerts(prom: &str, name: &str, state: &str) -> Vec<Value> {
    let (code, body) = http_get(prom, "/api/v1/alerts");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] == name && a["state"] == state)
        .cloned()
        .collect()
}

/// The Slack messages the receiver got whose title names `alertname`.
fn slack_messages(slack: &Receiver, alertname: &str) -> Vec<(Received, Value)> {
    slack
        .received()
        .into_iter()
        .filter_map(|r| {
            let v: Value = serde_json::from_str(&r.body).ok()?;
            let title = v["attachments"][0]["title"].as_str()?;
            title
                .split_whitespace()
                .any(|w| w == alertname)
                .then_some((r, v))
        })
        .collect()
}

// ---- the bundle's files, adapted ------------------------------------------

/// Every rule file, shortened (see [`SHORTER`]), written into `rules_dir`;
/// returns the alert names found, sorted.
fn write_shortened_rules(rules_dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(rules_dir).unwrap();
    let mut alert_names = Vec::new();
    for e in std::fs::read_dir(repo().join("prometheus/rules")).unwrap() {
        let e = e.unwrap();
        let file = e.file_name().to_string_lossy().into_owned();
        if !file.ends_with(".yml") {
            continue;
        }
        let (text, names) = shorten_rules(&std::fs::read_to_string(e.path()).unwrap(), &file);
        std::fs::write(rules_dir.join(&file), text).unwrap();
        alert_names.extend(names);
    }
    alert_names.sort();
    alert_names
}

/// The alert names of [`SHORTER`], sorted.
fn listed_alerts() -> Vec<&'static str> {
    let mut listed: Vec<&str> = SHORTER.iter().map(|(n, _)| *n).collect();
    listed.sort();
    listed
}

/// The project's prometheus.yml with 1 s intervals and the loopback targets.
fn adapted_prometheus_yml(daemon_addr: &str, am_addr: &str, prom_addr: &str) -> String {
    let mut prom_yml = read("prometheus/prometheus.yml");
    for (from, to, n) in [
        ("scrape_interval: 30s", "scrape_interval: 1s".to_string(), 1),
        ("scrape_timeout: 10s", "scrape_timeout: 1s".to_string(), 1),
        (
            "evaluation_interval: 30s",
            "evaluation_interval: 1s".to_string(),
            1,
        ),
        ("- pgbackup:9854", format!("- {daemon_addr}"), 1),
        ("- alertmanager:9093", format!("- {am_addr}"), 2),
        ("- localhost:9090", format!("- {prom_addr}"), 1),
    ] {
        prom_yml = replace_exactly(&prom_yml, from, &to, n, "prometheus.yml");
    }
    prom_yml
}

/// The project's alertmanager.yml with short group timings, the Slack URL
/// read from `url_file` and the templates from `am_dir/templates`.
fn adapted_alertmanager_yml(url_file: &Path, am_dir: &Path) -> String {
    let mut am_yml = read("prometheus/alertmanager.yml");
    for (from, to, n) in [
        ("group_wait: 30s", "group_wait: 1s".to_string(), 1),
        ("group_interval: 5m", "group_interval: 5s".to_string(), 1),
        (
            "api_url_file: /etc/alertmanager/slack_webhook_url",
            format!("api_url_file: {}", url_file.display()),
            2,
        ),
        (
            "- /etc/alertmanager/templates/*.tmpl",
            format!("- {}/templates/*.tmpl", am_dir.display()),
            1,
        ),
    ] {
        am_yml = replace_exactly(&am_yml, from, &to, n, "alertmanager.yml");
    }
    am_yml
}

/// Grafana's variables for a dashboard target, as Grafana sets them for
/// its default range (now-7d).
fn grafana_vars(t: &Target, db: &str) -> Vec<(&'static str, String)> {
    let interval = t.interval.clone().unwrap_or_else(|| "10m".into());
    // Grafana: max($__interval + scrape interval, 4 scrape intervals),
    // with the data source's scrape interval of 30s.
    let rate_interval = format!("{}s", (seconds(&interval) + 30).max(120));
    vec![
        ("database", db.to_string()),
        ("__range", "7d".into()),
        ("__range_s", "604800".into()),
        ("__interval", interval),
        ("__rate_interval", rate_interval),
    ]
}

/// The Database variable's query, `label_values(<selector>, <label>)`,
/// split into its selector and label.
fn database_variable() -> (String, String, String) {
    let dash: Value = serde_json::from_str(&read("grafana/dashboards/pgbackup.json")).unwrap();
    let var = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "database")
        .expect("a database variable");
    let q = var["query"]["query"]
        .as_str()
        .or(var["query"].as_str())
        .unwrap();
    let (selector, label) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|r| r.rsplit_once(','))
        .unwrap_or_else(|| panic!("unexpected variable query {q}"));
    (
        q.to_string(),
        selector.trim().to_string(),
        label.trim().to_string(),
    )
}

// ---- the running bundle, shared by the tests below --------------------------

/// The bundle, started once for every test of this file and run through
/// its story: backups work, then PostgreSQL stops and the alerts reach
/// Slack. The services stay up until the test process exits, so each test
/// checks one thing of the end state (or of what was recorded on the way).
struct Bundle {
    dir: PathBuf,
    pg: Postgres,
    db: String,
    hook: Receiver,
    hook_token: &'static str,
    slack: Receiver,
    slack_path: &'static str,
    daemon_addr: String,
    prom_addr: String,
    logs: Logs,
    /// Firing alerts about a broken backup, queried while backups worked.
    firing_while_healthy: Vec<(&'static str, Vec<Value>)>,
    /// BackupFailed messages in Slack while backups worked.
    slack_failed_while_healthy: usize,
}

/// Waits until every scrape target is the one started here, and up.
fn every_target_up(logs: &Logs, prom_addr: &str) {
    logs.wait(
        "Prometheus to scrape pgbackup, itself and Alertmanager",
        Duration::from_secs(30),
        || {
            ["backup", "prometheus", "alertmanager"]
                .iter()
                .all(|job| query(prom_addr, &format!("up{{job=\"{job}\"}} == 1")).len() == 1)
        },
    );
}

/// The alerts that must be quiet while backups work. (Firing only: a
/// scrape slowed by a busy machine may briefly make BackupExporterDown
/// pending, which is what its `for` is there for.)
const QUIET_WHILE_HEALTHY: &[&str] = &[
    "BackupExporterDown",
    "BackupFailed",
    "BackupTooOld",
    "BackupNeverSucceeded",
    "BackupScheduleStalled",
    "BackupSizeAnomaly",
];

/// Starts `cmd` as a service of the test process (stopped when it exits)
/// with stdout and stderr into `dir/log`.
fn spawn_logged(mut cmd: Command, dir: &Path, log: &str) {
    let f = std::fs::File::create(dir.join(log)).unwrap();
    cmd.stdout(f.try_clone().unwrap()).stderr(f);
    spawn_service(cmd, libc::SIGTERM);
}

/// The bundle, set up by the first test that asks; a failed setup fails
/// every test with its message (and is not retried).
fn bundle() -> &'static Bundle {
    static BUNDLE: OnceLock<Result<Bundle, String>> = OnceLock::new();
    let b = BUNDLE.get_or_init(|| {
        std::panic::catch_unwind(Bundle::start).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    });
    match b {
        Ok(b) => b,
        Err(e) => panic!("the bundle could not be set up: {e}"),
    }
}

impl Bundle {
    fn start() -> Bundle {
        for (bin, pkg) in [
            (PROMETHEUS, "prometheus"),
            (ALERTMANAGER, "prometheus-alertmanager"),
        ] {
            assert!(
                Path::new(bin).is_file(),
                "{bin} not found: apt-get install {pkg}"
            );
        }
        let started = Instant::now();
        let dir = temp_dir("bundle");

        // ---- the backed-up side: PostgreSQL, Garage, pgbackup run ---------
        let pg = Postgres::start_dedicated();
        let db = pg.fresh_db("bundle");
        load_fixture(&pg, &db, 2000);
        let g = garage();
        let bucket = g.bucket("bundle");
        // pgbackup's own webhook (Slack-shaped too): a receiver of its own, so
        // nothing it sends can be mistaken for Alertmanager's messages.
        let hook = Receiver::start(vec![]);
        let hook_token = "T0HOOK/B0HOOK/pgbackup-hook-token";
        let slack = Receiver::start(vec![]);
        let slack_path = "/services/T0AM/B0AM/alertmanager-token";

        let daemon_addr = format!("127.0.0.1:{}", free_port());
        let mut env = vars(&[
            ("BACKUP_DATABASE_URL", &pg.url(&db)),
            ("BACKUP_LISTEN_ADDRESS", &daemon_addr),
            ("BACKUP_CRON_SCHEDULE", "*/5 * * * * *"),
            ("RUN_ON_STARTUP", "true"),
            // Every attempt is notified, so webhook deliveries have data.
            (
                "BACKUP_WEBHOOK_URL",
                &hook.url(&format!("/services/{hook_token}")),
            ),
            ("BACKUP_NOTIFY_ON", "always"),
            // Keeps what this test makes (all younger than a day), deletes the
            // old backup put into the bucket below: deletions have data.
            ("BACKUP_RETENTION_DAYS", "1"),
            ("BACKUP_RETENTION_MIN_COUNT", "1"),
            // Restore drills, so the verification panel has data.
            ("BACKUP_VERIFY_CRON_SCHEDULE", "*/4 * * * * *"),
            // WAL streaming and base backups, so the point-in-time
            // recovery panels have data.
            ("BACKUP_WAL_ARCHIVE", "true"),
            ("BACKUP_WAL_FLUSH_SECONDS", "1"),
            ("BACKUP_WAL_SPOOL_DIR", &dir.join("spool").to_string_lossy()),
            ("BACKUP_BASEBACKUP_CRON_SCHEDULE", "*/20 * * * * *"),
        ]);
        env.extend(g.env(&bucket));
        // A base backup before the daemon starts: it reads it from the store
        // at start-up, so the base backup panels have data whatever the
        // timing of the scheduled ones (PostgreSQL is stopped later on).
        let base = pgbackup(&["basebackup"], &env);
        assert_eq!(base.code, 0, "{}", base.all());
        spawn_logged(pgbackup_cmd(&["run"], &env), &dir, "pgbackup.log");
        wait_http(&daemon_addr, "/healthz");

        // ---- Alertmanager with the project's alertmanager.yml -------------
        let am_addr = format!("127.0.0.1:{}", free_port());
        let am_dir = dir.join("alertmanager");
        std::fs::create_dir_all(am_dir.join("templates")).unwrap();
        for e in std::fs::read_dir(repo().join("prometheus/templates")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), am_dir.join("templates").join(e.file_name())).unwrap();
        }
        let url_file = am_dir.join("slack_webhook_url");
        std::fs::write(&url_file, format!("{}\n", slack.url(slack_path))).unwrap();
        std::fs::write(
            am_dir.join("alertmanager.yml"),
            adapted_alertmanager_yml(&url_file, &am_dir),
        )
        .unwrap();
        let mut am = Command::new(ALERTMANAGER);
        am.arg(format!(
            "--config.file={}",
            am_dir.join("alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", am_dir.join("data").display()))
        .arg(format!("--web.listen-address={am_addr}"))
        .arg("--cluster.listen-address=");
        spawn_logged(am, &dir, "alertmanager.log");

        // ---- Prometheus with the project's prometheus.yml and rules -------
        let prom_addr = format!("127.0.0.1:{}", free_port());
        let prom_dir = dir.join("prometheus");
        write_shortened_rules(&prom_dir.join("rules"));
        std::fs::write(
            prom_dir.join("prometheus.yml"),
            adapted_prometheus_yml(&daemon_addr, &am_addr, &prom_addr),
        )
        .unwrap();
        let mut prom = Command::new(PROMETHEUS);
        prom.arg(format!(
            "--config.file={}",
            prom_dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={prom_addr}"));
        spawn_logged(prom, &dir, "prometheus.log");

        let logs = Logs(
            ["pgbackup.log", "prometheus.log", "alertmanager.log"]
                .iter()
                .map(|l| dir.join(l))
                .collect(),
        );
        let ready = |addr: &str| {
            std::net::TcpStream::connect(addr).is_ok() && http_get(addr, "/-/ready").0 == 200
        };
        logs.wait("Alertmanager to be ready", Duration::from_secs(30), || {
            ready(&am_addr)
        });
        logs.wait("Prometheus to be ready", Duration::from_secs(30), || {
            ready(&prom_addr)
        });

        // Every scrape target up before anything happens, so Prometheus sees
        // it happen (and the exporter is not absent).
        every_target_up(&logs, &prom_addr);

        // ---- a healthy daemon: backups, a retention deletion, deliveries --
        let metrics = || http_get(&daemon_addr, "/metrics").1;
        let series = |name: &str| format!("{name}{{database=\"{db}\"}}");
        logs.wait(
            "the first backup to succeed",
            Duration::from_secs(60),
            || metric(&metrics(), &series("backup_last_status")) == Some(1.0),
        );
        // An old backup of ours, older than BACKUP_RETENTION_DAYS: the next
        // pass after a success deletes it.
        let old = "backup_2020-01-01_03-00-00.dump.zst";
        rt().block_on(async {
            g.client()
                .put_object()
                .bucket(&bucket)
                .key(old)
                .body(ByteStream::from(b"an old backup".to_vec()))
                .send()
                .await
                .unwrap()
        });
        logs.wait(
            "retention to delete the old backup",
            Duration::from_secs(30),
            || {
                metric(&metrics(), &series("backup_retention_deleted_total")) == Some(1.0)
                    && !g.keys(&bucket).iter().any(|k| k == old)
            },
        );
        let (deleted, delivered) = (
            format!("backup_retention_deleted_total{{database=\"{db}\"}} > 0"),
            format!(
                "backup_webhook_deliveries_total{{database=\"{db}\",result=\"delivered\"}} > 0"
            ),
        );
        logs.wait(
            "Prometheus to see the deletion and a delivered webhook",
            Duration::from_secs(30),
            || !query(&prom_addr, &deleted).is_empty() && !query(&prom_addr, &delivered).is_empty(),
        );
        let verified = format!("{VERIFIED}{{database=\"{db}\"}} > 0");
        logs.wait(
            "Prometheus to see a passed restore drill",
            Duration::from_secs(60),
            || !query(&prom_addr, &verified).is_empty(),
        );
        let firing_while_healthy = QUIET_WHILE_HEALTHY
            .iter()
            .map(|name| (*name, prom_alerts(&prom_addr, name, "firing")))
            .collect();
        let slack_failed_while_healthy = slack_messages(&slack, "BackupFailed").len();

        // ---- break the backups ----------------------------------------------
        let broken_at = Instant::now();
        pg.kill_server();
        logs.wait(
            "an attempt to fail with PostgreSQL down",
            Duration::from_secs(30),
            || metric(&metrics(), &series("backup_last_status")) == Some(0.0),
        );
        logs.wait(
            "BackupFailed to reach Slack through Alertmanager",
            Duration::from_secs(60),
            || !slack_messages(&slack, "BackupFailed").is_empty(),
        );
        let failed_after = broken_at.elapsed();
        // The critical route: no success for longer than the (shortened) limit.
        logs.wait(
            "BackupTooOld to reach Slack through Alertmanager",
            Duration::from_secs(60),
            || !slack_messages(&slack, "BackupTooOld").is_empty(),
        );
        eprintln!(
            "bundle: BackupFailed reached Slack {:.1} s after PostgreSQL stopped; set up in {:.0} s",
            failed_after.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        Bundle {
            dir,
            pg,
            db,
            hook,
            hook_token,
            slack,
            slack_path,
            daemon_addr,
            prom_addr,
            logs,
            firing_while_healthy,
            slack_failed_while_healthy,
        }
    }

    /// A dashboard target's query with Grafana's variables, and its result
    /// if it shows data: some sample, every value finite, and above 0 for
    /// the counters in [`MUST_BE_POSITIVE`].
    fn evaluate(&self, t: &Target) -> (String, Result<Vec<Value>, String>) {
        let expr = substitute(&t.expr, &grafana_vars(t, &self.db));
        let result = query(&self.prom_addr, &expr);
        let values: Vec<f64> = result.iter().map(sample_value).collect();
        let check = if result.is_empty() {
            Err("no data".into())
        } else if values.iter().any(|v| !v.is_finite()) {
            Err(format!("a value is not a finite number: {values:?}"))
        } else if MUST_BE_POSITIVE.iter().any(|m| t.expr.contains(m))
            && !values.iter().any(|v| *v > 0.0)
        {
            Err(format!(
                "only zeros, although the test made it happen: {values:?}"
            ))
        } else {
            Ok(result)
        };
        (expr, check)
    }

    /// The result of the dashboard panel `title`'s query `ref_id`.
    fn panel(&self, title: &str, ref_id: &str) -> Vec<Value> {
        let targets = dashboard_targets();
        let t = targets
            .iter()
            .find(|t| t.panel == title && t.ref_id == ref_id)
            .unwrap_or_else(|| panic!("no panel {title:?} [{ref_id}]"));
        self.evaluate(t).1.unwrap()
    }

    /// What must never leave pgbackup or Alertmanager.
    fn secrets(&self) -> [(&'static str, &str); 4] {
        [
            ("the database password", self.pg.password.as_str()),
            ("AWS_SECRET_ACCESS_KEY", garage().secret.as_str()),
            ("pgbackup's webhook URL", self.hook_token),
            ("the Slack URL", self.slack_path),
        ]
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbackup.log")).unwrap()
    }
}

// ---- checks on the bundle's files alone -------------------------------------

#[test]
fn every_alert_of_the_rules_has_test_durations() {
    let dir = temp_dir("bundle-rules");
    let found = write_shortened_rules(&dir);
    let found: Vec<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(
        found,
        listed_alerts(),
        "the rules' alerts and the test's SHORTER table"
    );
}

#[test]
fn prometheus_and_alertmanager_configs_adapt_exactly() {
    // Every replacement must occur as often as stated (replace_exactly).
    adapted_prometheus_yml("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3");
    let am_dir = Path::new("/nonexistent/alertmanager");
    adapted_alertmanager_yml(&am_dir.join("slack_webhook_url"), am_dir);
}

#[test]
fn every_dashboard_query_uses_known_variables() {
    let targets = dashboard_targets();
    assert!(targets.len() >= 20, "{} dashboard queries", targets.len());
    for t in &targets {
        substitute(&t.expr, &grafana_vars(t, "db"));
    }
    database_variable();
}

// ---- checks on the running bundle ------------------------------------------

#[test]
fn prometheus_loads_every_rule_with_shortened_durations() {
    let b = bundle();
    let (_, body) = http_get(&b.prom_addr, "/api/v1/rules?type=alert");
    let rules: Value = serde_json::from_str(&body).unwrap();
    let mut loaded: Vec<(String, f64)> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["duration"].as_f64().unwrap(),
            )
        })
        .collect();
    loaded.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        loaded.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        listed_alerts(),
        "{body}"
    );
    for (name, secs) in &loaded {
        assert!(*secs <= 30.0, "{name} still waits {secs} s: {body}");
    }
}

#[test]
fn every_scrape_target_is_the_one_started_here_and_up() {
    let b = bundle();
    every_target_up(&b.logs, &b.prom_addr);
}

#[test]
fn the_alerts_about_a_broken_backup_are_quiet_while_it_works() {
    let b = bundle();
    for (name, a) in &b.firing_while_healthy {
        assert!(a.is_empty(), "{name} fires while backups work: {a:?}");
    }
    assert_eq!(b.slack_failed_while_healthy, 0);
}

#[test]
fn backup_failed_reaches_slack_as_a_warning() {
    let b = bundle();
    let (db, daemon_addr) = (&b.db, &b.daemon_addr);
    let (req, msg) = slack_messages(&b.slack, "BackupFailed").remove(0);
    // Posted to the URL read from api_url_file (trimmed of its newline).
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, b.slack_path);
    assert!(
        req.headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/json")),
        "{:?}",
        req.headers
    );
    // The project's template: "[FIRING:1] BackupFailed (db)", one line per
    // alert with severity, summary, description, instance and runbook; the
    // warning route's colour.
    let att = &msg["attachments"][0];
    let (title, text) = (
        att["title"].as_str().unwrap(),
        att["text"].as_str().unwrap_or(""),
    );
    assert_eq!(title, format!("[FIRING:1] BackupFailed ({db})"), "{msg}");
    assert_eq!(att["color"], "warning", "routed to slack-warning: {msg}");
    for needle in [
        "*WARNING* The last backup attempt failed.",
        &format!("The last backup attempt of database {db} ({daemon_addr})"),
        &format!("Instance: `{daemon_addr}`"),
        "docs/alerts.md#backupfailed|what to do>",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} not in the message: {msg}"
        );
    }
    let firing = prom_alerts(&b.prom_addr, "BackupFailed", "firing");
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0]["labels"]["database"], db.as_str());
    assert_eq!(firing[0]["labels"]["severity"], "warning");
}

#[test]
fn backup_too_old_reaches_slack_as_critical() {
    let b = bundle();
    let (_, msg) = slack_messages(&b.slack, "BackupTooOld").remove(0);
    let att = &msg["attachments"][0];
    assert_eq!(
        att["title"].as_str().unwrap(),
        format!("[FIRING:1] BackupTooOld ({})", b.db)
    );
    assert_eq!(att["color"], "danger", "routed to slack-critical: {msg}");
    assert!(
        att["text"]
            .as_str()
            .unwrap()
            .starts_with("*CRITICAL* The newest successful backup is older than 25 hours."),
        "{msg}"
    );
}

#[test]
fn no_secret_is_sent_out_or_logged() {
    let b = bundle();
    // No secret in anything sent out, by Alertmanager or by pgbackup, nor in
    // pgbackup's log.
    let secrets = b.secrets();
    let sent = b.slack.received().into_iter().chain(b.hook.received());
    for r in sent {
        for (what, s) in secrets {
            assert!(!r.body.contains(s), "{what} in a message: {}", r.body);
        }
    }
    let hooks = b.hook.received();
    assert!(!hooks.is_empty());
    assert!(
        hooks.iter().any(|r| r.body.contains(&b.db)),
        "pgbackup's notifications name the database"
    );
    let daemon_output = b.daemon_log();
    for (what, s) in secrets {
        assert!(!daemon_output.contains(s), "{what} in pgbackup's log");
    }
}

#[test]
fn the_log_line_backup_failed_sends_the_operator_to_exists() {
    let b = bundle();
    let failed_text = slack_messages(&b.slack, "BackupFailed")[0].1["attachments"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let line = failed_text
        .split_once("on its \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(line, _)| line)
        .unwrap_or_else(|| panic!("the description names no log line: {failed_text}"));
    let plain_log = strip_ansi(&b.daemon_log());
    assert!(
        plain_log
            .lines()
            .any(|l| l.contains(line) && l.contains("stage=connect")),
        "no {line:?} line with stage=connect in pgbackup's log:\n{plain_log}"
    );
}

#[test]
fn every_dashboard_query_has_data() {
    let b = bundle();
    let targets = dashboard_targets();
    assert!(targets.len() >= 20, "{} dashboard queries", targets.len());
    // A scrape or an evaluation may lag: a few rounds before judging.
    let mut problems = Vec::new();
    let all_have_data = Logs::until(Duration::from_secs(20), || {
        problems = targets
            .iter()
            .filter_map(|t| match b.evaluate(t) {
                (_, Ok(_)) => None,
                (expr, Err(e)) => Some(format!("{} [{}] {expr}: {e}", t.panel, t.ref_id)),
            })
            .collect::<Vec<_>>();
        problems.is_empty()
    });
    assert!(
        all_have_data,
        "dashboard queries without the data they should show:\n{}",
        problems.join("\n")
    );
    eprintln!("bundle: {} panel queries checked", targets.len());
}

#[test]
fn the_database_variable_offers_the_database() {
    let b = bundle();
    // The Database variable's options: label_values(<selector>, <label>),
    // which Grafana asks of Prometheus's label values API.
    let (q, selector, label) = database_variable();
    let (code, body) = http_get(
        &b.prom_addr,
        &format!(
            "/api/v1/label/{label}/values?match[]={}",
            utf8_percent_encode(&selector, NON_ALPHANUMERIC)
        ),
    );
    assert_eq!(code, 200, "{body}");
    let values: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(values["data"], serde_json::json!([b.db]), "{q}: {body}");
}

#[test]
fn the_panels_show_what_happened() {
    let b = bundle();
    let db = &b.db;
    let alerts = b.panel("Firing backup alerts", "A");
    assert!(
        alerts
            .iter()
            .any(|a| a["metric"]["alertname"] == "BackupFailed"
                && a["metric"]["database"] == db.as_str()),
        "{alerts:?}"
    );
    let failures = b.panel("Failures in the selected range by stage", "A");
    assert!(
        failures
            .iter()
            .any(|s| s["metric"]["stage"] == "connect" && sample_value(s) > 0.0),
        "a failure at connect: {failures:?}"
    );
    let deliveries = b.panel("Webhook deliveries", "A");
    assert!(
        deliveries
            .iter()
            .any(|s| s["metric"]["result"] == "delivered" && sample_value(s) > 0.0),
        "{deliveries:?}"
    );
    let verified = query(&b.prom_addr, &format!("{VERIFIED}{{database=\"{db}\"}}"));
    assert_eq!(verified.len(), 1, "{verified:?}");
    assert!(
        sample_value(&verified[0]) > 0.0,
        "a drill passed: {verified:?}"
    );
}
