//! The HTTP server of `pgbackup run` (hyper 1): `/metrics`, `/healthz`,
//! `/health`, and `/` linking to them. It runs on a runtime of its own (two
//! workers), so a backup's work never queues in front of a scrape. Unknown
//! paths get 404, other methods 405.
//!
//! With BACKUP_WEB_CONFIG_FILE ([`Security`]) every path, `/healthz`
//! included, is served over TLS and behind basic auth: a request without
//! valid credentials gets 401 before any routing, so not even which paths
//! exist is told.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::error::ConfigError;
use crate::metrics::{self, Metrics};
use crate::webconfig::auth::{BasicAuth, Decision};
use crate::webconfig::{self, WebConfig};

/// A client that opens a connection and sends nothing is dropped after this
/// long, in the TLS handshake as in the request head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS and basic auth from the web configuration; the default is neither.
#[derive(Clone, Default)]
pub struct Security {
    tls: Option<TlsAcceptor>,
    auth: Option<Arc<BasicAuth>>,
}

impl Security {
    pub fn new(web: Option<&WebConfig>) -> Result<Security, ConfigError> {
        let Some(web) = web else {
            return Ok(Security::default());
        };
        let tls = match &web.tls {
            None => None,
            Some(t) => Some(TlsAcceptor::from(
                webconfig::tls::server_config(t)
                    .map_err(|m| ConfigError::new(webconfig::VAR, m))?,
            )),
        };
        Ok(Security {
            tls,
            auth: BasicAuth::new(&web.users),
        })
    }
}

/// What `/health` reports; the daemon updates it after each attempt.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub last_success: Option<DateTime<Utc>>,
    pub last_attempt: Option<DateTime<Utc>>,
    pub last_attempt_ok: Option<bool>,
    pub last_error: Option<LastError>,
    pub last_object: Option<String>,
    pub next_run: Option<DateTime<Utc>>,
    pub in_progress: bool,
    /// The start-up probes (database, pg_dump, stored backups) still run.
    pub starting: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub stage: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

pub struct AppState {
    pub database: String,
    pub metrics: Metrics,
    pub status: Mutex<Status>,
    pub max_age: Duration,
    pub started: DateTime<Utc>,
    pub clock: Arc<dyn Clock>,
}

#[derive(Serialize)]
struct Health<'a> {
    healthy: bool,
    reason: String,
    database: &'a str,
    max_age_hours: f64,
    last_success_age_seconds: Option<i64>,
    #[serde(flatten)]
    status: &'a Status,
}

/// Healthy while the last success is younger than `max_age` and the last
/// attempt did not fail. Before any success, a process younger than
/// `max_age` counts as healthy (a fresh deployment waits for its first run).
/// While the start-up probes run, it is healthy and says `starting`.
pub fn health_of(
    status: &Status,
    started: DateTime<Utc>,
    max_age: Duration,
    now: DateTime<Utc>,
) -> (bool, String) {
    let max = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    if status.starting {
        return (true, "starting".into());
    }
    if status.last_attempt_ok == Some(false) {
        let stage = status
            .last_error
            .as_ref()
            .map(|e| e.stage.as_str())
            .unwrap_or("?");
        return (false, format!("the last backup failed at stage {stage}"));
    }
    match status.last_success {
        Some(t) if now - t <= max => (true, "the last backup is recent".into()),
        Some(t) => (
            false,
            format!(
                "the last success is {} h old",
                (now - t).num_minutes() as f64 / 60.0
            ),
        ),
        None if now - started <= max => (true, "no backup yet; waiting for the first run".into()),
        None => (false, "no successful backup since start".into()),
    }
}

/// Starts the server on its own runtime; the receiver fires once it stopped
/// (after `shutdown`).
pub fn spawn(
    listener: std::net::TcpListener,
    state: Arc<AppState>,
    security: Security,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    listener.set_nonblocking(true)?;
    // Two workers: while the host is saturated (a backup on two cores), a
    // descheduled worker does not stall every open connection.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pgbackup-http")
        .enable_all()
        .build()?;
    let (done, stopped) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("pgbackup-http".into())
        .spawn(move || {
            rt.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => serve(l, state, security, shutdown).await,
                    Err(e) => tracing::error!(error = %e, "cannot serve HTTP"),
                }
            });
            let _ = done.send(());
        })?;
    Ok(stopped)
}

async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    security: Security,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let stop = shutdown.clone();
        let Security { tls, auth } = security.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, state, auth, stop).await,
                Some(acceptor) => {
                    let tls = tokio::select! {
                        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
                        _ = stop.cancelled() => return,
                    };
                    match tls {
                        Ok(Ok(s)) => serve_connection(s, state, auth, stop).await,
                        // A scanner, a client without a certificate, a plain
                        // HTTP request: its own problem, not worth a warning.
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<S>(
    io: S,
    state: Arc<AppState>,
    auth: Option<Arc<BasicAuth>>,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        let auth = auth.clone();
        async move {
            if let Some(auth) = auth {
                let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
                if auth.check(header).await != Decision::Allow {
                    return Ok::<_, Infallible>(unauthorized());
                }
            }
            Ok(route(&req, &state))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
}

/// 401 with the challenge browsers and Prometheus answer.
fn unauthorized() -> Response<Full<Bytes>> {
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        "text/plain; charset=utf-8",
        "Unauthorized\n".into(),
    );
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"pgbackup\""),
    );
    r
}

fn route(req: &Request<Incoming>, state: &AppState) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/" | "/metrics" | "/healthz" | "/health") {
        return text(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "method not allowed\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => text(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            state.metrics.encode(),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
        "/health" => {
            let status = state.status.lock().expect("status lock").clone();
            let now = state.clock.now();
            let (healthy, reason) = health_of(&status, state.started, state.max_age, now);
            let body = Health {
                healthy,
                reason,
                database: &state.database,
                max_age_hours: state.max_age.as_secs_f64() / 3600.0,
                last_success_age_seconds: status.last_success.map(|t| (now - t).num_seconds()),
                status: &status,
            };
            let code = if healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let json = serde_json::to_string_pretty(&body).unwrap_or_default() + "\n";
            text(code, "application/json", json)
        }
        _ => text(StatusCode::OK, "text/html; charset=utf-8", INDEX.into()),
    }
}

const INDEX: &str = "<!doctype html>\n<html><head><title>pgbackup</title></head><body>\n\
<h1>pgbackup</h1>\n<ul>\n\
<li><a href=\"/metrics\">/metrics</a>: Prometheus metrics (OpenMetrics)</li>\n\
<li><a href=\"/health\">/health</a>: JSON status; 503 when the last backup failed or is too old</li>\n\
<li><a href=\"/healthz\">/healthz</a>: liveness</li>\n</ul>\n</body></html>\n";

fn text(code: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    const H25: Duration = Duration::from_secs(25 * 3600);

    #[test]
    fn health_follows_the_age_of_the_last_success() {
        let started = t("2026-01-01T00:00:00Z");
        let mut s = Status {
            last_success: Some(t("2026-01-25T03:00:00Z")),
            last_attempt_ok: Some(true),
            ..Default::default()
        };
        assert!(health_of(&s, started, H25, t("2026-01-26T04:00:00Z")).0);
        assert!(!health_of(&s, started, H25, t("2026-01-26T04:00:01Z")).0);
        s.last_attempt_ok = Some(false);
        s.last_error = Some(LastError {
            stage: "upload".into(),
            message: "x".into(),
            at: started,
        });
        let (ok, why) = health_of(&s, started, H25, t("2026-01-25T04:00:00Z"));
        assert!(!ok && why.contains("upload"), "{why}");
    }

    #[test]
    fn a_fresh_process_waits_for_its_first_run() {
        let started = t("2026-01-25T00:00:00Z");
        let s = Status::default();
        assert!(health_of(&s, started, H25, t("2026-01-25T12:00:00Z")).0);
        assert!(!health_of(&s, started, H25, t("2026-01-26T02:00:00Z")).0);
    }
}
