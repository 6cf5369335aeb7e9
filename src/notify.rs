//! Notifications after a backup attempt: a webhook (Slack incoming webhook,
//! or a plain JSON document) and an optional healthchecks.io-style heartbeat.
//!
//! Which attempts notify is the pure [`should_notify`]. Delivery retries
//! what may succeed later (connection errors, timeouts, 5xx, 429) with
//! backoff and never anything else. Neither a payload, nor an error, nor a
//! log line carries the webhook URL (its path is the credential), the
//! heartbeat URL, the database password or the AWS secret.
//!
//! [`Notifier`] and [`Heartbeat`] are cheap to clone, so a scheduler can hand
//! a delivery to its own task and carry on.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::backoff;
use crate::config::{Config, NotifyOn, Secret, WebhookFormat};
use crate::error::{one_line, Stage};
use crate::job::Outcome;

/// Time limit of one HTTP attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest Retry-After we honour: a server asking for more is not waited for
/// longer than this per retry.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Ceiling of the doubling backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Retries of the heartbeat when no webhook sets the policy (the defaults of
/// BACKUP_WEBHOOK_RETRIES and BACKUP_WEBHOOK_BACKOFF_SECONDS).
const DEFAULT_RETRIES: u32 = 3;
const DEFAULT_BACKOFF: Duration = Duration::from_secs(2);
/// Slack rejects a section text longer than 3,000 characters.
const SLACK_ERROR_CHARS: usize = 2_500;

/// Whether an attempt is worth a webhook. `previous_ok` is the outcome of
/// the attempt before (None when unknown, as in one-shot `pgbackup backup`).
/// Failures always notify; a success notifies with `always`, or when it
/// follows a failure (a recovery).
pub fn should_notify(on: NotifyOn, previous_ok: Option<bool>, ok: bool) -> bool {
    match (on, ok) {
        (_, false) => true,
        (NotifyOn::Always, true) => true,
        (NotifyOn::Failure, true) => previous_ok == Some(false),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Failure,
    /// The first success after a failure.
    Recovery,
    Success,
}

/// What a notification says about one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    pub database: String,
    pub host: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub duration: Duration,
    pub next_run: Option<DateTime<Utc>>,
    /// Success only.
    pub object: Option<String>,
    pub stored_bytes: Option<u64>,
    pub dump_bytes: Option<u64>,
    pub sha256: Option<String>,
    /// Failure only.
    pub stage: Option<Stage>,
    pub error: Option<String>,
}

impl Event {
    pub fn from_outcome(
        o: &Outcome,
        previous_ok: Option<bool>,
        next_run: Option<DateTime<Utc>>,
        host: &str,
    ) -> Event {
        let mut e = Event {
            kind: EventKind::Failure,
            database: o.database.clone(),
            host: host.to_string(),
            started: o.started,
            finished: o.finished,
            duration: o.duration,
            next_run,
            object: None,
            stored_bytes: None,
            dump_bytes: None,
            sha256: None,
            stage: None,
            error: None,
        };
        match &o.result {
            Ok(r) => {
                e.kind = if previous_ok == Some(false) {
                    EventKind::Recovery
                } else {
                    EventKind::Success
                };
                e.object = Some(r.key.clone());
                e.stored_bytes = Some(r.stored_bytes);
                e.dump_bytes = Some(r.dump_bytes);
                e.sha256 = Some(r.sha256.clone());
            }
            Err(err) => {
                e.stage = Some(err.stage);
                e.error = Some(err.message.clone());
            }
        }
        e
    }

    pub fn ok(&self) -> bool {
        self.kind != EventKind::Failure
    }

    /// One line, plain text.
    pub fn summary(&self) -> String {
        let Event { database, host, .. } = self;
        match self.kind {
            EventKind::Failure => format!(
                "Backup of {database} on {host} failed at {}: {}",
                self.stage.map(Stage::as_str).unwrap_or("unknown stage"),
                self.error.as_deref().unwrap_or("")
            ),
            EventKind::Recovery => format!(
                "Backup of {database} on {host} succeeded again: {}",
                self.stored()
            ),
            EventKind::Success => {
                format!(
                    "Backup of {database} on {host} succeeded: {}",
                    self.stored()
                )
            }
        }
    }

    fn stored(&self) -> String {
        format!(
            "{} ({})",
            self.object.as_deref().unwrap_or("?"),
            crate::pg::human_bytes(self.stored_bytes.unwrap_or(0))
        )
    }

    /// The plain JSON document of BACKUP_WEBHOOK_FORMAT=json (documented in
    /// docs/notifications.md; version 1, fields only added).
    pub fn to_json(&self) -> Value {
        json!({
            "version": 1,
            "event": self.kind,
            "ok": self.ok(),
            "summary": self.summary(),
            "database": self.database,
            "host": self.host,
            "started_at": rfc3339(self.started),
            "finished_at": rfc3339(self.finished),
            "duration_seconds": round3(self.duration.as_secs_f64()),
            "next_run_at": self.next_run.map(rfc3339),
            "stage": self.stage.map(Stage::as_str),
            "error": self.error,
            "object": self.object,
            "stored_bytes": self.stored_bytes,
            "dump_bytes": self.dump_bytes,
            "sha256": self.sha256,
            "pgbackup_version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// A Slack incoming-webhook message: `text` is the one-line summary
    /// (what a push notification shows), `blocks` the details.
    pub fn to_slack(&self) -> Value {
        let (icon, title) = match self.kind {
            EventKind::Failure => (":x:", "Backup failed"),
            EventKind::Recovery => (":white_check_mark:", "Backup recovered"),
            EventKind::Success => (":white_check_mark:", "Backup succeeded"),
        };
        let field = |name: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", slack_escape(value))});
        let mut fields = vec![field("Database", &self.database), field("Host", &self.host)];
        if let Some(stage) = self.stage {
            fields.push(field("Stage", stage.as_str()));
        }
        fields.push(field(
            "Duration",
            &format!("{:.1} s", self.duration.as_secs_f64()),
        ));
        if let Some(object) = &self.object {
            fields.push(field("Object", object));
            fields.push(field(
                "Size",
                &format!(
                    "{} stored, {} dumped",
                    crate::pg::human_bytes(self.stored_bytes.unwrap_or(0)),
                    crate::pg::human_bytes(self.dump_bytes.unwrap_or(0))
                ),
            ));
        }
        fields.push(field(
            "Next run",
            &self
                .next_run
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|| "not scheduled".to_string()),
        ));
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text",
                "text": truncate(&format!("{title}: {}", self.database), 150)}}),
            json!({"type": "section", "fields": fields}),
        ];
        if let Some(error) = &self.error {
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
                "text": format!("*Error*\n```{}```", slack_escape(&truncate(error, SLACK_ERROR_CHARS)))}}));
        }
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": format!("pgbackup {} · started {}", env!("CARGO_PKG_VERSION"),
                self.started.format("%Y-%m-%d %H:%M:%S UTC"))}]}));
        json!({
            "text": format!("{icon} {}", slack_escape(&self.summary())),
            "blocks": blocks,
        })
    }

    fn redacted(&self, secrets: &Secrets) -> Event {
        let mut e = self.clone();
        e.error = e.error.map(|m| secrets.redact(&m));
        e.database = secrets.redact(&e.database);
        e.host = secrets.redact(&e.host);
        e
    }
}

/// The result of one delivery, after its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// Why the last attempt failed; never contains the URL.
    Failed(String),
}

impl Delivery {
    /// The `result` label of `backup_webhook_deliveries_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Failed(_) => "failed",
        }
    }
}

/// Retry policy of one kind of request.
#[derive(Debug, Clone)]
struct Policy {
    retries: u32,
    backoff: Duration,
    timeout: Duration,
}

/// Strings that must not leave the process in a payload, error or log.
#[derive(Clone, Default)]
struct Secrets(Arc<Vec<String>>);

impl Secrets {
    fn from_config(cfg: &Config) -> Secrets {
        let mut v = Vec::new();
        let mut url = |u: &str| {
            v.push(u.to_string());
            // The path (and query) of a webhook URL is its credential.
            if let Ok(p) = url::Url::parse(u) {
                let path = &p[url::Position::BeforePath..];
                if path.len() > 1 {
                    v.push(path.to_string());
                }
            }
        };
        if let Some(w) = &cfg.notify.webhook {
            url(w.url.expose());
        }
        if let Some(h) = &cfg.notify.heartbeat_url {
            url(h.expose());
        }
        for db in std::iter::once(&cfg.dump.database).chain(cfg.verify.verify_database.as_ref()) {
            if let Some(p) = db.password() {
                v.push(p.expose().to_string());
            }
        }
        // The SDK reads it from the environment itself; it never enters Config.
        if let Ok(s) = std::env::var("AWS_SECRET_ACCESS_KEY") {
            v.push(s);
        }
        v.retain(|s| !s.trim().is_empty());
        // Longest first, so a URL goes before its own path.
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Secrets(Arc::new(v))
    }

    fn redact(&self, s: &str) -> String {
        let mut out = s.to_string();
        for secret in self.0.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

fn client() -> Option<reqwest::Client> {
    match reqwest::Client::builder()
        .user_agent(concat!("pgbackup/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e.without_url(), "cannot set up the HTTP client; notifications are off");
            None
        }
    }
}

fn policy(cfg: &Config) -> Policy {
    let (retries, backoff) = cfg
        .notify
        .webhook
        .as_ref()
        .map(|w| (w.retries, w.backoff))
        .unwrap_or((DEFAULT_RETRIES, DEFAULT_BACKOFF));
    Policy {
        retries,
        backoff,
        timeout: ATTEMPT_TIMEOUT,
    }
}

/// Sends events to BACKUP_WEBHOOK_URL.
#[derive(Clone)]
pub struct Notifier {
    client: reqwest::Client,
    url: Secret,
    format: WebhookFormat,
    policy: Policy,
    secrets: Secrets,
}

impl Notifier {
    /// None without BACKUP_WEBHOOK_URL.
    pub fn from_config(cfg: &Config) -> Option<Notifier> {
        let w = cfg.notify.webhook.as_ref()?;
        Some(Notifier {
            client: client()?,
            url: w.url.clone(),
            format: w.format,
            policy: policy(cfg),
            secrets: Secrets::from_config(cfg),
        })
    }

    /// Overrides the 10 s limit of one attempt.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.policy.timeout = timeout;
        self
    }

    /// The request body for `event`, as sent (secrets removed).
    pub fn payload(&self, event: &Event) -> Value {
        let event = event.redacted(&self.secrets);
        match self.format {
            WebhookFormat::Slack => event.to_slack(),
            WebhookFormat::Json => event.to_json(),
        }
    }

    /// Posts `event`, retrying per BACKUP_WEBHOOK_RETRIES / _BACKOFF_SECONDS.
    /// Returns once delivered or out of retries.
    pub async fn deliver(&self, event: &Event) -> Delivery {
        let body = self.secrets.redact(&self.payload(event).to_string());
        let d = send(&self.policy, &self.secrets, "webhook", || {
            self.client
                .post(self.url.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
        })
        .await;
        match &d {
            Delivery::Delivered => tracing::info!(kind = ?event.kind, "webhook delivered"),
            Delivery::Failed(why) => tracing::warn!(error = %why, "webhook not delivered"),
        }
        d
    }
}

/// Pings BACKUP_HEARTBEAT_URL: the URL after a success, `<url>/fail` after
/// a failure (healthchecks.io, Uptime Kuma push monitors and similar).
#[derive(Clone)]
pub struct Heartbeat {
    client: reqwest::Client,
    url: Secret,
    policy: Policy,
    secrets: Secrets,
}

impl Heartbeat {
    /// None without BACKUP_HEARTBEAT_URL.
    pub fn from_config(cfg: &Config) -> Option<Heartbeat> {
        let url = cfg.notify.heartbeat_url.clone()?;
        Some(Heartbeat {
            client: client()?,
            url,
            policy: policy(cfg),
            secrets: Secrets::from_config(cfg),
        })
    }

    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.policy.timeout = timeout;
        self
    }

    pub async fn ping(&self, ok: bool) -> Delivery {
        let url = if ok {
            self.url.expose().to_string()
        } else {
            fail_url(self.url.expose())
        };
        let d = send(&self.policy, &self.secrets, "heartbeat", || {
            self.client.get(&url)
        })
        .await;
        if let Delivery::Failed(why) = &d {
            tracing::warn!(error = %why, "heartbeat not delivered");
        }
        d
    }
}

/// `<url>/fail`, keeping any query string.
fn fail_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut parsed) => {
            if let Ok(mut segs) = parsed.path_segments_mut() {
                segs.pop_if_empty().push("fail");
            }
            parsed.to_string()
        }
        Err(_) => format!("{}/fail", u.trim_end_matches('/')),
    }
}

/// Everything that follows one attempt: the heartbeat, and the webhook when
/// [`should_notify`] says so. Used by `pgbackup backup` and the daemon alike.
#[derive(Clone)]
pub struct Notifications {
    pub webhook: Option<Notifier>,
    pub heartbeat: Option<Heartbeat>,
    pub on: NotifyOn,
    pub host: String,
}

impl Notifications {
    pub fn from_config(cfg: &Config) -> Notifications {
        Notifications {
            webhook: Notifier::from_config(cfg),
            heartbeat: Heartbeat::from_config(cfg),
            on: cfg.notify.notify_on,
            host: crate::config::host_name(),
        }
    }

    /// Sends what `outcome` calls for, concurrently, and waits for both.
    /// Returns the webhook's delivery, None when no webhook was due.
    pub async fn after_attempt(
        &self,
        outcome: &Outcome,
        previous_ok: Option<bool>,
        next_run: Option<DateTime<Utc>>,
    ) -> Option<Delivery> {
        let ok = outcome.result.is_ok();
        let webhook = async {
            let n = self.webhook.as_ref()?;
            if !should_notify(self.on, previous_ok, ok) {
                return None;
            }
            let event = Event::from_outcome(outcome, previous_ok, next_run, &self.host);
            Some(n.deliver(&event).await)
        };
        let heartbeat = async {
            if let Some(h) = &self.heartbeat {
                h.ping(ok).await;
            }
        };
        let (delivery, ()) = tokio::join!(webhook, heartbeat);
        delivery
    }
}

/// One request with retries. `make` builds a fresh request per attempt.
async fn send(
    policy: &Policy,
    secrets: &Secrets,
    what: &'static str,
    make: impl Fn() -> reqwest::RequestBuilder,
) -> Delivery {
    let retries = backoff::Policy {
        retries: policy.retries,
        base: policy.backoff,
        max: MAX_BACKOFF,
    };
    let mut attempts = 0u32;
    let sent = backoff::retry_at_least(
        retries,
        || {
            attempts += 1;
            attempt(make().timeout(policy.timeout), secrets)
        },
        |f| f.retryable,
        |f| {
            f.retry_after
                .map_or(Duration::ZERO, |d| d.min(MAX_RETRY_AFTER))
        },
        |f, retry, wait| {
            tracing::warn!(
                what,
                retry,
                error = %f.reason,
                wait_ms = wait.as_millis() as u64,
                "delivery failed; retrying"
            )
        },
    )
    .await;
    match sent {
        Ok(()) => Delivery::Delivered,
        Err(f) if f.retryable => Delivery::Failed(format!(
            "{} (after {attempts} attempt{})",
            f.reason,
            if attempts == 1 { "" } else { "s" }
        )),
        Err(f) => Delivery::Failed(f.reason),
    }
}

/// Why one attempt failed.
struct AttemptFailed {
    /// One line, secrets removed.
    reason: String,
    /// Whether another attempt may succeed: 5xx, 429, timeouts, connection
    /// errors; not another 4xx, a bad request or a redirect.
    retryable: bool,
    retry_after: Option<Duration>,
}

async fn attempt(req: reqwest::RequestBuilder, secrets: &Secrets) -> Result<(), AttemptFailed> {
    match req.send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => {
            let status = resp.status();
            let retry_after = retry_after(resp.headers());
            let said = body_snippet(resp).await;
            let reason = format!("HTTP {}{said}", status.as_u16());
            let retryable =
                status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
            // Another 4xx: the same request fails the same way again.
            let reason = if retryable {
                reason
            } else {
                format!("{reason} (not retried)")
            };
            Err(AttemptFailed {
                reason: secrets.redact(&reason),
                retryable,
                retry_after,
            })
        }
        Err(e) => {
            let e = e.without_url();
            Err(AttemptFailed {
                reason: secrets.redact(&describe(&e)),
                retryable: !(e.is_builder() || e.is_redirect()),
                retry_after: None,
            })
        }
    }
}

/// Retry-After in seconds (the HTTP-date form is rare for webhooks and
/// falls back to our own backoff).
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The start of an error body (Slack says `invalid_payload`, `no_service`, ...).
async fn body_snippet(resp: reqwest::Response) -> String {
    match resp.text().await {
        Ok(t) if !t.trim().is_empty() => format!(": {}", truncate(&one_line(&t), 200)),
        _ => String::new(),
    }
}

/// A reqwest error (already without its URL) with its causes, one line.
fn describe(e: &reqwest::Error) -> String {
    let head = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        e.to_string()
    };
    let mut parts = vec![head];
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    one_line(&parts.join(": "))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Slack's mrkdwn needs only these three escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::JobError;
    use crate::job::BackupReport;
    use chrono::TimeZone;

    fn outcome(ok: bool) -> Outcome {
        let started = Utc.with_ymd_and_hms(2026, 1, 25, 3, 0, 0).unwrap();
        Outcome {
            database: "shop".into(),
            started,
            finished: started + chrono::Duration::seconds(12),
            duration: Duration::from_millis(12_345),
            result: if ok {
                Ok(BackupReport {
                    key: "backup_2026-01-25_03-00-00.dump.zst".into(),
                    dump_bytes: 10 << 20,
                    stored_bytes: 3 << 20,
                    sha256: "ab".repeat(32),
                    server_version: "15.8".into(),
                    pg_dump_version: "pg_dump (PostgreSQL) 15.8".into(),
                })
            } else {
                Err(JobError::permanent(
                    Stage::Dump,
                    "pg_dump exited with status 1: <table> & \"x\"",
                ))
            },
        }
    }

    #[test]
    fn who_gets_notified() {
        use NotifyOn::*;
        // (on, previous, ok) -> notify
        let cases = [
            (Failure, None, false, true),
            (Failure, None, true, false),
            (Failure, Some(true), true, false),
            (Failure, Some(false), true, true),
            (Failure, Some(true), false, true),
            (Failure, Some(false), false, true),
            (Always, None, true, true),
            (Always, Some(true), true, true),
            (Always, Some(false), false, true),
        ];
        for (on, prev, ok, want) in cases {
            assert_eq!(should_notify(on, prev, ok), want, "{on:?} {prev:?} {ok}");
        }
    }

    #[test]
    fn kinds_follow_the_previous_outcome() {
        let next = Some(Utc.with_ymd_and_hms(2026, 1, 26, 3, 0, 0).unwrap());
        assert_eq!(
            Event::from_outcome(&outcome(false), Some(true), next, "h").kind,
            EventKind::Failure
        );
        assert_eq!(
            Event::from_outcome(&outcome(true), Some(false), next, "h").kind,
            EventKind::Recovery
        );
        assert_eq!(
            Event::from_outcome(&outcome(true), None, next, "h").kind,
            EventKind::Success
        );
    }

    #[test]
    fn slack_payload_has_text_and_blocks() {
        let next = Some(Utc.with_ymd_and_hms(2026, 1, 26, 3, 0, 0).unwrap());
        let e = Event::from_outcome(&outcome(false), None, next, "db-host-1");
        let v = e.to_slack();
        let text = v["text"].as_str().unwrap();
        assert!(!text.contains('\n'));
        assert!(text.contains("shop") && text.contains("dump") && text.contains("db-host-1"));
        assert!(text.contains("&lt;table&gt; &amp;"), "{text}");
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        let all = v.to_string();
        for want in [
            "*Database*",
            "*Stage*",
            "*Duration*",
            "*Next run*",
            "2026-01-26 03:00 UTC",
            "*Error*",
            "12.3 s",
        ] {
            assert!(all.contains(want), "{want} missing: {all}");
        }
    }

    #[test]
    fn json_payload_is_stable() {
        let e = Event::from_outcome(&outcome(true), Some(false), None, "h");
        let v = e.to_json();
        assert_eq!(v["version"], 1);
        assert_eq!(v["event"], "recovery");
        assert_eq!(v["ok"], true);
        assert_eq!(v["database"], "shop");
        assert_eq!(v["started_at"], "2026-01-25T03:00:00Z");
        assert_eq!(v["duration_seconds"], 12.345);
        assert_eq!(v["next_run_at"], Value::Null);
        assert_eq!(v["stage"], Value::Null);
        assert_eq!(v["stored_bytes"], 3 << 20);
        assert_eq!(v["object"], "backup_2026-01-25_03-00-00.dump.zst");
        let f = Event::from_outcome(&outcome(false), None, None, "h").to_json();
        assert_eq!(
            (f["event"].as_str(), f["stage"].as_str()),
            (Some("failure"), Some("dump"))
        );
    }

    #[test]
    fn long_errors_fit_slack() {
        let mut o = outcome(false);
        o.result = Err(JobError::permanent(Stage::Dump, "é".repeat(10_000)));
        let v = Event::from_outcome(&o, None, None, "h").to_slack();
        for b in v["blocks"].as_array().unwrap() {
            if let Some(t) = b["text"]["text"].as_str() {
                assert!(t.chars().count() < 3000);
            }
        }
    }

    #[test]
    fn secrets_are_redacted_longest_first() {
        let s = Secrets(Arc::new(vec![
            "https://hooks.example/services/T0/B0/tok".into(),
            "/services/T0/B0/tok".into(),
            "pw".into(),
        ]));
        assert_eq!(
            s.redact(
                "posting to https://hooks.example/services/T0/B0/tok with pw; /services/T0/B0/tok"
            ),
            "posting to *** with ***; ***"
        );
    }

    /// The daemon hands deliveries to their own tasks.
    #[allow(dead_code)]
    fn deliveries_are_spawnable(n: Notifications, o: Outcome) {
        fn clone_send_sync<T: Clone + Send + Sync + 'static>() {}
        clone_send_sync::<Notifier>();
        clone_send_sync::<Heartbeat>();
        clone_send_sync::<Notifications>();
        tokio::spawn(async move { n.after_attempt(&o, Some(false), None).await });
    }

    #[test]
    fn fail_url_keeps_the_query() {
        assert_eq!(
            fail_url("https://hc-ping.com/abc"),
            "https://hc-ping.com/abc/fail"
        );
        assert_eq!(
            fail_url("https://hc-ping.com/abc/"),
            "https://hc-ping.com/abc/fail"
        );
        assert_eq!(
            fail_url("https://hc.example/ping/k/slug?create=1"),
            "https://hc.example/ping/k/slug/fail?create=1"
        );
    }

    #[test]
    fn truncation_is_char_safe() {
        assert_eq!(truncate("ééé", 2), "éé…");
        assert_eq!(truncate("ab", 2), "ab");
    }
}
