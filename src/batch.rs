//! The metrics of a one-shot run (`backup`, `SINGLE_SHOT_MODE`, `prune`,
//! `verify --restore`), for Prometheus to read after the process is gone:
//! pushed to a Pushgateway, written for node_exporter's textfile collector,
//! or both.
//!
//! Both take Prometheus text format 0.0.4, not the daemon's OpenMetrics:
//! the Pushgateway and promtool reject OpenMetrics' `info` type, and
//! counters would lose theirs. The series are the daemon's own (the same
//! [`Metrics`]), minus those only a daemon can know (next run, in progress,
//! skipped runs), which are left out rather than pushed as zero.
//!
//! Each command is a group of its own (`job`, `instance`, `command`), so a
//! `prune` never erases what `backup` pushed. A group is replaced whole
//! (PUT), so nothing stale lingers; but when a failed run could not learn
//! the time of the last success (the store was down too), it is merged
//! (POST), which keeps the last-success series that the alerts need.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backoff;
use crate::config::BatchConfig;
use crate::metrics::Metrics;

/// The one-shot command that publishes: the `command` grouping label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Backup,
    Prune,
    Verify,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Backup => "backup",
            Command::Prune => "prune",
            Command::Verify => "verify",
        }
    }

    /// The metric families (OpenMetrics names) this command knows.
    fn families(self) -> &'static [&'static str] {
        match self {
            Command::Backup => &[
                "backup_last_success_timestamp_seconds",
                "backup_last_attempt_timestamp_seconds",
                "backup_last_duration_seconds",
                "backup_last_size_bytes",
                "backup_last_dump_bytes",
                "backup_last_status",
                "backup_duration_seconds",
                "backup_attempts",
                "backup_failures",
                "backup_stored_objects",
                "backup_stored_bytes",
                "backup_retention_deleted",
                "backup_webhook_deliveries",
                "backup_build",
            ],
            Command::Prune => &[
                "backup_failures",
                "backup_stored_objects",
                "backup_stored_bytes",
                "backup_retention_deleted",
                "backup_build",
            ],
            Command::Verify => &[
                "backup_last_verified_timestamp_seconds",
                "backup_failures",
                "backup_build",
            ],
        }
    }
}

/// The families in `keep`, from OpenMetrics text to text format 0.0.4:
/// counters and infos named as their samples are, `info` typed as a
/// gauge, no `# UNIT` or `# EOF`. Sample lines are kept as they are.
pub fn text_format(openmetrics: &str, keep: &[&str]) -> String {
    let mut out = String::new();
    // The HELP line waits for its TYPE line, which tells the sample name.
    let mut help: Option<(&str, &str)> = None;
    let mut kept = false;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, tail) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            match kind {
                "HELP" => {
                    kept = keep.contains(&name);
                    help = Some((name, tail));
                }
                "TYPE" if kept => {
                    let (sample, kind) = match tail {
                        "counter" => (format!("{name}_total"), "counter"),
                        "info" => (format!("{name}_info"), "gauge"),
                        other => (name.to_string(), other),
                    };
                    if let Some((_, text)) = help.take() {
                        out.push_str(&format!("# HELP {sample} {text}\n"));
                    }
                    out.push_str(&format!("# TYPE {sample} {kind}\n"));
                }
                _ => {}
            }
        } else if kept && !line.is_empty() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The same text with `job`, `instance` and `command` on every sample, as
/// the Pushgateway adds them from the group: a textfile's series then look
/// like pushed ones (scrape node_exporter with `honor_labels: true`).
pub fn with_labels(text: &str, labels: &[(&str, &str)]) -> String {
    let extra: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    let extra = extra.join(",");
    let mut out = String::with_capacity(text.len() * 2);
    for line in text.lines() {
        if line.starts_with('#') {
            out.push_str(line);
        } else if let Some(brace) = line.find('{') {
            out.push_str(&line[..=brace]);
            out.push_str(&extra);
            if !line[brace + 1..].starts_with('}') {
                out.push(',');
            }
            out.push_str(&line[brace + 1..]);
        } else if let Some(space) = line.find(' ') {
            out.push_str(&format!("{}{{{extra}}}{}", &line[..space], &line[space..]));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A timestamp a previous textfile recorded (`family`'s first non-zero
/// sample), for a failed run that cannot learn it otherwise.
pub fn timestamp_in(text: &str, family: &str) -> Option<DateTime<Utc>> {
    let secs = text
        .lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .find(|v| *v > 0.0)?;
    DateTime::from_timestamp_millis((secs * 1000.0) as i64)
}

/// [`timestamp_in`] the textfile `command` wrote last time.
pub fn previous(cfg: &BatchConfig, command: Command, family: &str) -> Option<DateTime<Utc>> {
    let path = textfile_path(cfg.textfile_dir.as_ref()?, &cfg.instance, command);
    timestamp_in(&std::fs::read_to_string(path).ok()?, family)
}

pub const LAST_SUCCESS: &str = "backup_last_success_timestamp_seconds";
pub const LAST_VERIFIED: &str = "backup_last_verified_timestamp_seconds";

/// The textfile of `command`: `pgbackup_<instance>.prom` for backups,
/// `pgbackup_<instance>_<command>.prom` for the others.
pub fn textfile_path(dir: &Path, instance: &str, command: Command) -> PathBuf {
    let safe: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    match command {
        Command::Backup => dir.join(format!("pgbackup_{safe}.prom")),
        c => dir.join(format!("pgbackup_{safe}_{}.prom", c.as_str())),
    }
}

/// Publishes `metrics` wherever `cfg` says. `unknown`: families whose true
/// value this run could not learn (the last success, after a failure with
/// the store down too). The push leaves them out and merges (POST), so the
/// Pushgateway keeps what an earlier run pushed; without any, the group is
/// replaced (PUT). The textfile is always whole: the caller seeds such
/// values from the previous file. Failures are logged, never returned:
/// the run's own outcome stands.
pub async fn publish(cfg: &BatchConfig, command: Command, metrics: &Metrics, unknown: &[&str]) {
    if !cfg.is_enabled() {
        return;
    }
    let encoded = metrics.encode();
    let text = text_format(&encoded, command.families());
    if let Some(dir) = &cfg.textfile_dir {
        let body = with_labels(
            &text,
            &[
                ("job", &cfg.job),
                ("instance", &cfg.instance),
                ("command", command.as_str()),
            ],
        );
        let path = textfile_path(dir, &cfg.instance, command);
        match write_atomically(&path, body.as_bytes()) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "metrics written for the textfile collector")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the metrics textfile")
            }
        }
    }
    if let Some(url) = &cfg.pushgateway {
        let known: Vec<&str> = command
            .families()
            .iter()
            .copied()
            .filter(|f| !unknown.contains(f))
            .collect();
        let body = text_format(&encoded, &known);
        match push(url.expose(), cfg, command, body, unknown.is_empty()).await {
            Ok(()) => tracing::info!(
                job = %cfg.job,
                instance = %cfg.instance,
                command = command.as_str(),
                "metrics pushed to the Pushgateway"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "metrics not pushed to the Pushgateway; the run's outcome stands")
            }
        }
    }
}

/// Temp file in the same directory, then rename: the collector never reads
/// half a file.
fn write_atomically(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("pgbackup.prom");
    // node_exporter reads only *.prom: the temp name is not one.
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

const PUSH_RETRIES: backoff::Policy = backoff::Policy {
    retries: 3,
    base: Duration::from_secs(1),
    max: Duration::from_secs(8),
};

/// Why a push failed, without the URL (it may hold a password).
#[derive(Debug)]
struct PushError {
    message: String,
    retry: bool,
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

async fn push(
    url: &str,
    cfg: &BatchConfig,
    command: Command,
    body: String,
    replace: bool,
) -> Result<(), PushError> {
    let (target, auth) = group_url(url, cfg, command).map_err(|message| PushError {
        message,
        retry: false,
    })?;
    let client = reqwest::Client::builder()
        .user_agent(concat!("pgbackup/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| PushError {
            message: format!("HTTP client: {}", e.without_url()),
            retry: false,
        })?;
    let method = if replace {
        reqwest::Method::PUT
    } else {
        reqwest::Method::POST
    };
    backoff::retry(
        PUSH_RETRIES,
        || {
            let mut req = client
                .request(method.clone(), target.clone())
                .header("content-type", "text/plain; version=0.0.4")
                .body(body.clone());
            if let Some((user, pass)) = &auth {
                req = req.basic_auth(user, pass.as_deref());
            }
            async move {
                match req.send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => {
                        let status = r.status();
                        let said = r.text().await.unwrap_or_default();
                        Err(PushError {
                            message: format!(
                                "the Pushgateway answered {status}: {}",
                                crate::error::one_line(&said)
                            ),
                            retry: status.is_server_error() || status.as_u16() == 429,
                        })
                    }
                    Err(e) => Err(PushError {
                        message: format!("cannot reach the Pushgateway: {}", e.without_url()),
                        retry: true,
                    }),
                }
            }
        },
        |e: &PushError| e.retry,
        |e, retry, wait| tracing::warn!(error = %e, retry, wait_ms = wait.as_millis() as u64, "retrying the push"),
    )
    .await
}

/// The group's URL and the basic-auth pair taken out of it.
#[allow(clippy::type_complexity)]
fn group_url(
    base: &str,
    cfg: &BatchConfig,
    command: Command,
) -> Result<(url::Url, Option<(String, Option<String>)>), String> {
    let mut u =
        url::Url::parse(base).map_err(|_| "BACKUP_PUSHGATEWAY_URL is not a URL".to_string())?;
    let auth = (!u.username().is_empty()).then(|| {
        (
            percent_decode(u.username()),
            u.password().map(percent_decode),
        )
    });
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let mut path = u.path().trim_end_matches('/').to_string();
    path.push_str("/metrics");
    for (label, value) in [
        ("job", cfg.job.as_str()),
        ("instance", cfg.instance.as_str()),
        ("command", command.as_str()),
    ] {
        path.push_str(&segment(label, value));
    }
    u.set_path(&path);
    Ok((u, auth))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `/label/value`, or `/label@base64/...` for a value the path cannot hold
/// (the Pushgateway's own escape).
fn segment(label: &str, value: &str) -> String {
    if value.contains('/') || value.is_empty() {
        format!("/{label}@base64/{}", base64url(value.as_bytes()))
    } else {
        // RFC 3986's unreserved characters stay as they are.
        const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'_')
            .remove(b'.')
            .remove(b'~');
        format!(
            "/{label}/{}",
            percent_encoding::utf8_percent_encode(value, SET)
        )
    }
}

fn base64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        for _ in chunk.len()..3 {
            out.push('=');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BatchConfig {
        BatchConfig {
            pushgateway: None,
            job: "backup".into(),
            instance: "db-1".into(),
            textfile_dir: None,
        }
    }

    #[test]
    fn openmetrics_becomes_text_format_0_0_4() {
        let m = Metrics::new("shop", "15.20");
        let text = text_format(&m.encode(), Command::Backup.families());
        assert!(
            text.contains("# TYPE backup_attempts_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP backup_attempts_total "), "{text}");
        assert!(text.contains("backup_attempts_total{database=\"shop\"} 0"));
        assert!(text.contains("# TYPE backup_build_info gauge\n"), "{text}");
        assert!(text.contains("backup_build_info{"));
        assert!(text.contains("# TYPE backup_duration_seconds histogram"));
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        // Only a daemon knows these.
        for daemon_only in ["next_run", "in_progress", "skipped", "verified"] {
            assert!(!text.contains(daemon_only), "{daemon_only} in\n{text}");
        }
        // Every sample of a kept family is there as the daemon serves it.
        let om = m.encode();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                om.lines().any(|o| o == line),
                "{line} not served by the daemon"
            );
        }
    }

    #[test]
    fn each_command_keeps_its_own_families() {
        let om = Metrics::new("shop", "15").encode();
        let prune = text_format(&om, Command::Prune.families());
        assert!(prune.contains("backup_retention_deleted_total"));
        assert!(!prune.contains("backup_last_success"), "{prune}");
        let verify = text_format(&om, Command::Verify.families());
        assert!(verify.contains("backup_last_verified_timestamp_seconds"));
        assert!(!verify.contains("backup_last_status"), "{verify}");
    }

    #[test]
    fn textfile_samples_carry_the_group_labels() {
        let t = "# TYPE a gauge\na{database=\"x\"} 1\nb 2\nc{} 3\n";
        let got = with_labels(t, &[("job", "backup"), ("instance", "h\"1")]);
        assert_eq!(
            got,
            "# TYPE a gauge\na{job=\"backup\",instance=\"h\\\"1\",database=\"x\"} 1\n\
             b{job=\"backup\",instance=\"h\\\"1\"} 2\nc{job=\"backup\",instance=\"h\\\"1\"} 3\n"
        );
    }

    #[test]
    fn the_group_url_escapes_values_and_takes_the_password_out() {
        let mut c = cfg();
        c.instance = "pod/a b".into();
        let (u, auth) = group_url(
            "https://ops:s%3Acret@push.example:9091/base/",
            &c,
            Command::Prune,
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "https://push.example:9091/base/metrics/job/backup/instance@base64/cG9kL2EgYg==/command/prune"
        );
        assert_eq!(auth, Some(("ops".into(), Some("s:cret".into()))));
        let (u, auth) = group_url("http://127.0.0.1:9091", &cfg(), Command::Backup).unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9091/metrics/job/backup/instance/db-1/command/backup"
        );
        assert!(auth.is_none());
    }

    #[test]
    fn base64url_as_the_pushgateway_reads_it() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg==");
        assert_eq!(base64url(b"fo"), "Zm8=");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"/?>"), "Lz8-");
    }

    #[test]
    fn the_last_success_survives_in_the_textfile() {
        let t = "backup_last_success_timestamp_seconds_x 5
\
                 backup_last_success_timestamp_seconds{job=\"backup\",database=\"x\"} 1769310000.5
";
        assert_eq!(
            timestamp_in(t, LAST_SUCCESS).map(|t| t.timestamp_millis()),
            Some(1769310000500)
        );
        assert_eq!(
            timestamp_in(
                "backup_last_success_timestamp_seconds 0.0
",
                LAST_SUCCESS
            ),
            None
        );
    }

    #[test]
    fn textfile_names() {
        let d = Path::new("/var/lib/node_exporter");
        assert_eq!(
            textfile_path(d, "db/1", Command::Backup),
            d.join("pgbackup_db_1.prom")
        );
        assert_eq!(
            textfile_path(d, "db1", Command::Verify),
            d.join("pgbackup_db1_verify.prom")
        );
    }
}
