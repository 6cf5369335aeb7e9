//! HTTP for the daemon tests: a client, waiting for a server, metrics text.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::process::wait_until;
use super::rt;

/// One client for every request: no pooling (each request on a connection
/// of its own, closed after the answer), no redirects followed, no proxy from
/// the environment, a 10 s read timeout.
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .read_timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    })
}

/// One request to a full URL: status, the head as text (status line, then
/// `name: value` lines with lower-case names), and the body (decoded from
/// chunked transfer if it came so).
pub fn http_url(method: &str, url: &str) -> (u16, String, Vec<u8>) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    rt().block_on(async {
        let resp = client()
            .request(method.clone(), url)
            .header(reqwest::header::CONNECTION, "close")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status();
        let mut head = format!("{:?} {status}", resp.version());
        for (name, value) in resp.headers() {
            head.push_str(&format!(
                "\r\n{name}: {}",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        let body = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"));
        (status.as_u16(), head, body.to_vec())
    })
}

/// An HTTP/1.1 request to `addr`: status, head, body as text.
pub fn http(method: &str, addr: &str, path: &str) -> (u16, String, String) {
    let (status, head, body) = http_url(method, &format!("http://{addr}{path}"));
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let (s, _, b) = http("GET", addr, path);
    (s, b)
}

/// Retries `http_get` until the server answers.
pub fn wait_http(addr: &str, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return http_get(addr, path);
        }
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of one sample line (`name{labels} value`) in a metrics text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls until `f` holds, or panics with `what`.
pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    wait_until(what, timeout, &mut f)
}
