//! Debian's Prometheus, started on a free loopback port with the scrape
//! configuration a test gives, and its query API.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::free_port;
use super::http::{eventually, http_get, wait_http};
use super::process::{spawn_service, temp_dir};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Fails the test when a Debian binary the tests need is missing.
pub fn need(bin: &str) {
    assert!(
        Path::new(bin).exists(),
        "{bin} is missing: run scripts/setup (Debian's prometheus and prometheus-pushgateway)"
    );
}

/// A Prometheus evaluating every second with `scrape_configs` (YAML list
/// items, indented two spaces); its address.
pub fn prometheus_with(scrape_configs: &str) -> String {
    need(PROMETHEUS);
    let dir = temp_dir("prom");
    let addr = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{scrape_configs}"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(PROMETHEUS);
    cmd.arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("data").display()
    ))
    .arg(format!("--web.listen-address={addr}"))
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    spawn_service(cmd, libc::SIGTERM);
    wait_http(&addr, "/-/ready");
    addr
}

/// The value of `query` in Prometheus, once it has one.
pub fn prom_value(addr: &str, query: &str) -> f64 {
    let path = format!(
        "/api/v1/query?query={}",
        percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC)
    );
    let mut value = None;
    eventually(
        &format!("Prometheus to have {query}"),
        Duration::from_secs(30),
        || {
            let (code, body) = http_get(addr, &path);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            value = (code == 200)
                .then(|| v["data"]["result"][0]["value"][1].as_str()?.parse().ok())
                .flatten();
            value.is_some()
        },
    );
    value.unwrap()
}
