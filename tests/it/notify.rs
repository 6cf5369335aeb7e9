//! Webhook and heartbeat delivery against a real HTTP receiver on a
//! loopback port: retries, backoff, Retry-After, timeouts, payload shape and
//! secrecy, and `pgbackup backup` end to end.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use pgbackup::config::Config;
use pgbackup::error::{JobError, Stage};
use pgbackup::job::Outcome;
use pgbackup::notify::{Delivery, Event, Heartbeat, Notifier};
use serde_json::Value;

use crate::harness::*;

/// What the receiver answers to the n-th request (200 once the script ends).
#[derive(Clone)]
pub enum Reply {
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    TooMany(u64),
    /// Reads the request and never answers.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub struct Receiver {
    pub port: u16,
    log: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn start(script: Vec<Reply>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (log2, script) = (log.clone(), Arc::new(script));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (log, script) = (log2.clone(), script.clone());
                std::thread::spawn(move || serve(stream, &log, &script));
            }
        });
        Receiver { port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(mut s: TcpStream, log: &Mutex<Vec<Received>>, script: &[Reply]) {
    let Some(req) = read_request(&mut s) else {
        return;
    };
    let reply = {
        let mut log = log.lock().unwrap();
        log.push(req);
        script
            .get(log.len() - 1)
            .cloned()
            .unwrap_or(Reply::Status(200))
    };
    let (status, extra) = match reply {
        Reply::Status(c) => (c, String::new()),
        Reply::TooMany(secs) => (429, format!("Retry-After: {secs}\r\n")),
        Reply::Hang => {
            // Hold the connection until the client gives up and closes it.
            let _ = s.read(&mut [0u8; 1]);
            return;
        }
    };
    let body = if status == 200 { "ok" } else { "no_service" };
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn read_request(s: &mut TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        at: Instant::now(),
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&buf[head_end..]).into_owned(),
    })
}

const TOKEN: &str = "T0AAA/B0BBB/hooktoken1234567890";
const DB_PASSWORD: &str = "db-pass-5ecret";

fn config(extra: &[(&str, &str)]) -> Config {
    let db = format!("postgres://app:{DB_PASSWORD}@127.0.0.1:1/shop");
    let mut env = vars(&[
        ("BACKUP_DATABASE_URL", &db),
        ("BACKUP_LOCAL_DIR", "/nonexistent"),
    ]);
    env.extend(vars(extra));
    Config::from_vars(env).unwrap()
}

fn notifier(r: &Receiver, retries: &str, backoff: &str) -> Notifier {
    let url = r.url(&format!("/services/{TOKEN}"));
    let cfg = config(&[
        ("BACKUP_WEBHOOK_URL", &url),
        ("BACKUP_WEBHOOK_RETRIES", retries),
        ("BACKUP_WEBHOOK_BACKOFF_SECONDS", backoff),
    ]);
    Notifier::from_config(&cfg).expect("a webhook is configured")
}

/// A failed attempt whose error (by some bug) carries the database password.
fn failure() -> Event {
    let now = Utc::now();
    let o = Outcome {
        database: "shop".into(),
        started: now,
        finished: now,
        duration: Duration::from_millis(1500),
        result: Err(JobError::permanent(
            Stage::Dump,
            format!("pg_dump: connection to server failed for password {DB_PASSWORD}"),
        )),
    };
    Event::from_outcome(
        &o,
        Some(true),
        Some(now + chrono::Duration::hours(24)),
        "db-host-1",
    )
}

/// Every string in a JSON value, joined: what a reader of the message sees.
fn strings(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s}\n"),
        Value::Array(a) => a.iter().map(strings).collect(),
        Value::Object(o) => o.values().map(strings).collect(),
        _ => String::new(),
    }
}

fn gaps(r: &[Received]) -> Vec<Duration> {
    r.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test]
async fn server_errors_are_retried_with_growing_gaps() {
    let r = Receiver::start(vec![Reply::Status(500), Reply::Status(503)]);
    let d = notifier(&r, "3", "0.2").deliver(&failure()).await;
    assert_eq!(d, Delivery::Delivered);
    let got = r.received();
    assert_eq!(got.len(), 3, "500, 503, then 200");
    let g = gaps(&got);
    // Backoff 0.2 s then 0.4 s, each plus at most 25 % jitter.
    assert!(g[0] >= Duration::from_millis(200), "{g:?}");
    assert!(g[1] >= Duration::from_millis(400) && g[1] > g[0], "{g:?}");
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let r = Receiver::start(vec![Reply::Status(400)]);
    let d = notifier(&r, "3", "0.05").deliver(&failure()).await;
    let Delivery::Failed(why) = d else {
        panic!("delivered on a 400")
    };
    assert!(
        why.contains("HTTP 400") && why.contains("not retried"),
        "{why}"
    );
    assert!(
        why.contains("no_service"),
        "the receiver's answer helps: {why}"
    );
    assert_eq!(r.received().len(), 1);
}

#[tokio::test]
async fn retries_run_out_and_say_so() {
    let r = Receiver::start(vec![Reply::Status(502); 10]);
    let d = notifier(&r, "2", "0.05").deliver(&failure()).await;
    let Delivery::Failed(why) = d else {
        panic!("delivered")
    };
    assert!(
        why.contains("HTTP 502") && why.contains("after 3 attempts"),
        "{why}"
    );
    assert_eq!(r.received().len(), 3, "first attempt plus 2 retries");
    assert!(!why.contains(TOKEN) && !why.contains("127.0.0.1"), "{why}");
}

#[tokio::test]
async fn a_receiver_that_never_answers_is_timed_out() {
    let r = Receiver::start(vec![Reply::Hang, Reply::Hang]);
    let n = notifier(&r, "1", "0.05").with_attempt_timeout(Duration::from_millis(500));
    let t0 = Instant::now();
    let d = n.deliver(&failure()).await;
    let Delivery::Failed(why) = d else {
        panic!("delivered")
    };
    assert!(
        why.contains("timed out") && why.contains("after 2 attempts"),
        "{why}"
    );
    assert!(!why.contains(TOKEN), "{why}");
    assert_eq!(r.received().len(), 2);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let r = Receiver::start(vec![Reply::TooMany(1)]);
    let d = notifier(&r, "3", "0.05").deliver(&failure()).await;
    assert_eq!(d, Delivery::Delivered);
    let got = r.received();
    assert_eq!(got.len(), 2);
    // Our own backoff would have waited about 50 ms.
    assert!(gaps(&got)[0] >= Duration::from_secs(1), "{:?}", gaps(&got));
}

#[tokio::test]
async fn connection_errors_are_retried_and_the_url_stays_secret() {
    let port = free_port();
    let cfg = config(&[
        (
            "BACKUP_WEBHOOK_URL",
            &format!("http://127.0.0.1:{port}/services/{TOKEN}"),
        ),
        ("BACKUP_WEBHOOK_RETRIES", "2"),
        ("BACKUP_WEBHOOK_BACKOFF_SECONDS", "0.05"),
    ]);
    let d = Notifier::from_config(&cfg)
        .unwrap()
        .deliver(&failure())
        .await;
    let Delivery::Failed(why) = d else {
        panic!("delivered to a closed port")
    };
    assert!(
        why.contains("cannot connect") && why.contains("after 3 attempts"),
        "{why}"
    );
    assert!(!why.contains(TOKEN) && !why.contains("/services/"), "{why}");
}

#[tokio::test]
async fn slack_payload_has_text_and_blocks_and_no_secret() {
    let r = Receiver::start(vec![]);
    let d = notifier(&r, "0", "1").deliver(&failure()).await;
    assert_eq!(d, Delivery::Delivered);
    let got = r.received();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, format!("/services/{TOKEN}"));
    assert!(req
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/json"));
    let v: Value = serde_json::from_str(&req.body).expect("valid JSON");
    let text = v["text"].as_str().expect("text");
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(
        text.contains("shop") && text.contains("failed") && text.contains("dump"),
        "{text}"
    );
    let blocks = v["blocks"].as_array().expect("blocks");
    assert!(blocks.iter().all(|b| b["type"].is_string()));
    let details = strings(&Value::Array(blocks.clone()));
    for want in [
        "*Database*\nshop",
        "*Host*\ndb-host-1",
        "*Stage*\ndump",
        "*Duration*\n1.5 s",
        "*Next run*\n",
        "*Error*\n",
    ] {
        assert!(details.contains(want), "{want:?} missing: {details}");
    }
    assert!(
        !req.body.contains(DB_PASSWORD),
        "password in payload: {}",
        req.body
    );
    assert!(!req.body.contains("hooktoken"), "webhook token in payload");
}

#[tokio::test]
async fn json_format_sends_the_documented_document() {
    let r = Receiver::start(vec![]);
    let url = r.url("/hook");
    let cfg = config(&[
        ("BACKUP_WEBHOOK_URL", &url),
        ("BACKUP_WEBHOOK_FORMAT", "json"),
    ]);
    let d = Notifier::from_config(&cfg)
        .unwrap()
        .deliver(&failure())
        .await;
    assert_eq!(d, Delivery::Delivered);
    let v: Value = serde_json::from_str(&r.received()[0].body).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["event"], "failure");
    assert_eq!(v["ok"], false);
    assert_eq!(v["database"], "shop");
    assert_eq!(v["host"], "db-host-1");
    assert_eq!(v["stage"], "dump");
    assert_eq!(v["duration_seconds"], 1.5);
    assert!(v["next_run_at"].as_str().unwrap().ends_with('Z'));
    assert!(v["error"].as_str().unwrap().contains("***"));
    assert!(v["object"].is_null());
}

#[tokio::test]
async fn heartbeat_pings_the_url_or_its_fail_path() {
    let r = Receiver::start(vec![]);
    let url = r.url("/ping/uuid-1234");
    let hb = Heartbeat::from_config(&config(&[("BACKUP_HEARTBEAT_URL", &url)])).unwrap();
    assert_eq!(hb.ping(true).await, Delivery::Delivered);
    assert_eq!(hb.ping(false).await, Delivery::Delivered);
    let got: Vec<(String, String)> = r
        .received()
        .into_iter()
        .map(|q| (q.method, q.path))
        .collect();
    assert_eq!(
        got,
        vec![
            ("GET".into(), "/ping/uuid-1234".into()),
            ("GET".into(), "/ping/uuid-1234/fail".into())
        ]
    );
}

/// Runs `pgbackup backup`; returns the run and what each receiver got.
fn backup_with_hooks(db_url: &str, extra: &[(&str, &str)]) -> (Run, Vec<Received>, Vec<Received>) {
    let (hook, beat) = (Receiver::start(vec![]), Receiver::start(vec![]));
    let dir = temp_dir("notify");
    let mut env = vars(&[
        ("BACKUP_DATABASE_URL", db_url),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
        (
            "BACKUP_WEBHOOK_URL",
            &hook.url(&format!("/services/{TOKEN}")),
        ),
        ("BACKUP_HEARTBEAT_URL", &beat.url("/hb/uuid-42")),
        ("AWS_SECRET_ACCESS_KEY", "aws-5ecret-key-value"),
    ]);
    env.extend(vars(extra));
    let run = pgbackup(&["backup"], &env);
    (run, hook.received(), beat.received())
}

#[test]
fn a_failed_backup_sends_one_notification_and_exits_1() {
    let pg = pg();
    let (run, hook, beat) = backup_with_hooks(&pg.url("no_such_db"), &[]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(hook.len(), 1, "{}", run.all());
    let v: Value = serde_json::from_str(&hook[0].body).unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(
        text.contains("no_such_db") && text.contains("connect"),
        "{text}"
    );
    assert!(v["blocks"].is_array());
    for secret in [
        pg.password.as_str(),
        "aws-5ecret-key-value",
        "hooktoken",
        "uuid-42",
    ] {
        assert!(!hook[0].body.contains(secret), "{secret} in payload");
        assert!(
            !run.all().contains(secret),
            "{secret} in output: {}",
            run.all()
        );
    }
    let paths: Vec<&str> = beat.iter().map(|b| b.path.as_str()).collect();
    assert_eq!(paths, vec!["/hb/uuid-42/fail"]);
}

#[test]
fn a_successful_backup_notifies_only_with_always() {
    let pg = pg();
    let db = pg.fresh_db("notify");
    load_fixture(pg, &db, 10);
    let (run, hook, beat) = backup_with_hooks(&pg.url(&db), &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        hook.is_empty(),
        "default BACKUP_NOTIFY_ON=failure sent {hook:?}"
    );
    let paths: Vec<&str> = beat.iter().map(|b| b.path.as_str()).collect();
    assert_eq!(paths, vec!["/hb/uuid-42"]);

    let (run, hook, _) = backup_with_hooks(
        &pg.url(&db),
        &[
            ("BACKUP_NOTIFY_ON", "always"),
            ("BACKUP_WEBHOOK_FORMAT", "json"),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(hook.len(), 1);
    let v: Value = serde_json::from_str(&hook[0].body).unwrap();
    assert_eq!(
        (v["event"].as_str(), v["ok"].as_bool()),
        (Some("success"), Some(true))
    );
    assert_eq!(v["database"], db.as_str());
    assert!(v["object"].as_str().unwrap().starts_with("backup_"));
    assert!(v["stored_bytes"].as_u64().unwrap() > 0);
}
