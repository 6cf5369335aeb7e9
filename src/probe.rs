//! The container health check: one GET of `/healthz` from the daemon on this
//! host, the way a scraper would ask, with TLS and credentials when the web
//! configuration calls for them.
//!
//! It talks to its own server, so it trusts exactly the certificate in
//! `cert_file` (whatever name it was issued for) and connects to the
//! loopback address when the daemon listens on all addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::HealthcheckConfig;
use crate::webconfig::tls::pinned_client_config;

/// Docker's default HEALTHCHECK timeout is 5 s; answer before it.
const TIMEOUT: Duration = Duration::from_secs(4);

/// Why the daemon is not healthy, in one line.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {message}")]
pub struct Unhealthy {
    pub url: String,
    pub message: String,
}

/// Where the daemon answers on this host.
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Ok when `/healthz` answers 200.
pub async fn healthz(cfg: &HealthcheckConfig) -> Result<(), Unhealthy> {
    let addr = target(cfg.daemon.listen);
    let tls = cfg.daemon.web.as_ref().and_then(|w| w.tls.as_ref());
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}/healthz");
    let fail = |message: String| Unhealthy {
        url: url.clone(),
        message,
    };
    let mut request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: pgbackup-healthcheck\r\n"
    );
    if let Some((user, password)) = &cfg.credentials {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{user}:{}", password.expose()));
        request.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    let exchange = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| fail(format!("cannot connect: {e}")))?;
        match tls {
            None => exchange(tcp, &request).await,
            Some(t) => {
                let config = pinned_client_config(t, cfg.identity.as_ref())
                    .map_err(|m| fail(format!("cannot set up TLS: {m}")))?;
                let name = rustls::pki_types::ServerName::try_from("localhost")
                    .expect("a valid name")
                    .to_owned();
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| fail(format!("TLS handshake failed: {e}")))?;
                exchange(stream, &request).await
            }
        }
        .map_err(fail)
    };
    let status = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {} s", TIMEOUT.as_secs())))??;
    if status.split(' ').nth(1) == Some("200") {
        Ok(())
    } else {
        Err(fail(format!("answered {status}")))
    }
}

/// Sends `request`; returns the status line of the answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &str,
) -> Result<String, String> {
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 8192 {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or("").trim().to_string();
    if line.starts_with("HTTP/") {
        Ok(line)
    } else if line.is_empty() {
        Err("the connection closed without an answer".into())
    } else {
        Err("the answer is not HTTP".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_addresses_mean_the_loopback_and_a_given_one_is_kept() {
        let t = |s: &str| target(s.parse().unwrap()).to_string();
        assert_eq!(t("0.0.0.0:9854"), "127.0.0.1:9854");
        assert_eq!(t("[::]:9854"), "[::1]:9854");
        assert_eq!(t("127.0.0.2:1"), "127.0.0.2:1");
        assert_eq!(t("[::1]:9"), "[::1]:9");
    }
}
