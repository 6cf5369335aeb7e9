//! PostgreSQL side: ask the server its version, pick client tools at least
//! that new, build their commands without ever putting the password on a
//! command line (anyone can read argv with `ps`), and say how they ended.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;
use url::Url;

use crate::config::Database;
use crate::error::{JobError, Kind, Stage};

/// What the server told us about itself.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// e.g. 150020
    pub version_num: u32,
    /// e.g. "15.20"
    pub version: String,
}

impl ServerInfo {
    pub fn major(&self) -> u32 {
        major_of(self.version_num)
    }
}

/// `server_version_num` to a major version (10 and later: 150020 -> 15; 9.6: 90624 -> 9).
pub fn major_of(version_num: u32) -> u32 {
    version_num / 10000
}

/// Connects with tokio-postgres, TLS as the URL's sslmode says.
pub async fn connect(db: &Database) -> Result<tokio_postgres::Client, JobError> {
    let cfg = client_config(db.url_without_password(), db.password().map(|p| p.expose()))?;
    let url = db.url_without_password();
    let (mode, root) = (query_param(url, "sslmode"), query_param(url, "sslrootcert"));
    let identity = client_identity(url, mode.as_deref())
        .map_err(|e| JobError::permanent(Stage::Connect, e))?;
    let tls = tls::connector(mode.as_deref(), root.as_deref(), identity)
        .map_err(|e| JobError::permanent(Stage::Connect, format!("TLS setup: {e}")))?;
    let (client, conn) = cfg.connect(tls).await.map_err(|e| connect_error(db, &e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The client certificate of the URL's `sslcert` and `sslkey`, which pg_dump
/// presents too; none when the URL names neither or TLS is off
/// (`sslmode=disable`). Unlike libpq, neither file defaults to
/// `~/.postgresql/postgresql.{crt,key}`: a certificate is only ever sent when
/// the URL asks for it, and a file that is named but cannot be used is an
/// error rather than silently skipped.
fn client_identity(url: &Url, sslmode: Option<&str>) -> Result<Option<tls::Identity>, String> {
    if sslmode == Some("disable") {
        return Ok(None);
    }
    match (query_param(url, "sslcert"), query_param(url, "sslkey")) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => tls::Identity::load(&cert, &key).map(Some),
        (Some(_), None) => Err(
            "client certificate: sslcert is set but sslkey is not; set both (the ~/.postgresql defaults are not read)"
                .to_string(),
        ),
        (None, Some(_)) => Err(
            "client certificate: sslkey is set but sslcert is not; set both (the ~/.postgresql defaults are not read)"
                .to_string(),
        ),
    }
}

/// rustls, the TLS stack the S3 and webhook clients use too (one stack, no
/// OpenSSL in the process), with libpq's sslmode meanings: `verify-full`
/// checks the chain and the host name, `verify-ca` the chain only, and the
/// other modes encrypt without checking the certificate, as libpq does.
/// The roots are the URL's `sslrootcert` file (pg_dump reads the same), else
/// the system's (SSL_CERT_FILE / SSL_CERT_DIR). A client certificate, when
/// the URL has one, is presented in every mode.
mod tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{pem, CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
    use tokio_postgres_rustls::MakeRustlsConnect;

    /// A client certificate chain and its private key, from PEM files.
    pub struct Identity {
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        /// "sslcert <file> and sslkey <file>", for messages.
        files: String,
    }

    impl Identity {
        /// Reads `sslcert` (a PEM certificate chain, the client's first) and
        /// `sslkey` (a PEM private key: PKCS#8, PKCS#1 or SEC1). Messages
        /// name the parameter and the file, never the file's contents.
        pub fn load(cert_file: &str, key_file: &str) -> Result<Identity, String> {
            let chain = CertificateDer::pem_file_iter(cert_file)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .and_then(|c| {
                    if c.is_empty() {
                        Err(pem::Error::NoItemsFound)
                    } else {
                        Ok(c)
                    }
                })
                .map_err(|e| {
                    format!(
                        "client certificate: sslcert {cert_file}: {}",
                        describe(e, "no PEM certificate in it")
                    )
                })?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
                format!(
                    "client certificate: sslkey {key_file}: {}",
                    describe(
                        e,
                        "no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1) in it"
                    )
                )
            })?;
            Ok(Identity {
                chain,
                key,
                files: format!("sslcert {cert_file} and sslkey {key_file}"),
            })
        }
    }

    /// A PEM reading error in a few words: the I/O error as it is, anything
    /// else without the parser's detail (which could quote the file).
    fn describe(e: pem::Error, none_found: &str) -> String {
        match e {
            pem::Error::Io(e) => format!("cannot read it: {e}"),
            pem::Error::NoItemsFound => none_found.to_string(),
            _ => "not a valid PEM file".to_string(),
        }
    }

    pub fn connector(
        sslmode: Option<&str>,
        root_file: Option<&str>,
        identity: Option<Identity>,
    ) -> Result<MakeRustlsConnect, Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let config = match sslmode {
            Some(mode @ ("verify-full" | "verify-ca")) => {
                let mut roots = rustls::RootCertStore::empty();
                match root_file {
                    Some(path) => {
                        let certs = CertificateDer::pem_file_iter(path)
                            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                            .map_err(|e| Error::General(format!("sslrootcert {path}: {e}")))?;
                        roots.add_parsable_certificates(certs);
                    }
                    None => {
                        roots.add_parsable_certificates(
                            rustls_native_certs::load_native_certs().certs,
                        );
                    }
                }
                let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| Error::General(e.to_string()))?;
                if mode == "verify-full" {
                    builder.with_webpki_verifier(chain)
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(ChainOnly(chain)))
                }
            }
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked(provider))),
        };
        let config = match identity {
            Some(id) => config
                .with_client_auth_cert(id.chain, id.key)
                .map_err(|e| Error::General(format!("{}: {e}", id.files)))?,
            None => config.with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }

    /// `verify-ca`: a chain to a trusted root, whatever name it is for.
    #[derive(Debug)]
    struct ChainOnly(Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    /// `prefer` / `require`: any certificate, but the handshake is still
    /// signed by its key.
    #[derive(Debug)]
    struct Unchecked(Arc<CryptoProvider>);

    impl ServerCertVerifier for Unchecked {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// Connects to `db` and asks the server its version.
pub async fn server_info(db: &Database) -> Result<ServerInfo, JobError> {
    let client = connect(db).await?;
    query_server_info(&client)
        .await
        .map_err(|e| JobError::permanent(Stage::Connect, format!("asking the server version: {e}")))
}

/// Asks the server on an open connection its version.
pub async fn query_server_info(
    client: &tokio_postgres::Client,
) -> Result<ServerInfo, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version')",
            &[],
        )
        .await?;
    let num: i32 = row.get(0);
    let version: String = row.get(1);
    Ok(ServerInfo {
        version_num: num as u32,
        version: version.split_whitespace().next().unwrap_or("").to_string(),
    })
}

/// How a client tool that did not succeed ended, for an error message:
/// "exited with status 1", "was killed by signal 9".
pub fn exit_description(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "failed".to_string(),
    }
}

/// A transaction that exported its snapshot for pg_dump (`--snapshot`):
/// while it stays open, queries on `client` see exactly what the dump sees,
/// so the manifest's row counts match the archive.
pub struct Snapshot {
    pub client: tokio_postgres::Client,
    pub id: String,
}

/// Exports a snapshot; `None` (logged) where the server refuses, and the
/// dump then takes its own as before.
pub async fn export_snapshot(db: &Database) -> Option<Snapshot> {
    let res = async {
        let client = connect(db).await?;
        let row = client
            .simple_query(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_catalog.pg_export_snapshot()",
            )
            .await
            .map_err(|e| JobError::permanent(Stage::Connect, format!("exporting a snapshot: {e}")))?
            .into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
                _ => None,
            });
        match row {
            Some(id) => Ok(Snapshot { client, id }),
            None => Err(JobError::permanent(Stage::Connect, "pg_export_snapshot returned nothing")),
        }
    }
    .await;
    match res {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no exported snapshot: the manifest is read after the dump");
            None
        }
    }
}

fn connect_error(db: &Database, e: &tokio_postgres::Error) -> JobError {
    let target = host_label(db.url_without_password());
    // tokio-postgres puts the server's message in the source chain.
    let mut msg = e.to_string();
    if let Some(db_err) = e.as_db_error() {
        msg = format!("{}: {}", db_err.severity(), db_err.message());
    } else if let Some(src) = std::error::Error::source(e) {
        msg = format!("{msg}: {src}");
    }
    let retry = if e.as_db_error().is_some() {
        // Authentication failures, missing database: asking again won't help.
        Kind::Permanent
    } else {
        Kind::Transient
    };
    JobError::new(
        Stage::Connect,
        retry,
        format!(
            "cannot connect to database {:?} at {target}: {msg}",
            db.name()
        ),
    )
}

/// host:port for messages (never user or password).
pub fn host_label(url: &Url) -> String {
    let host = query_param(url, "host")
        .unwrap_or_else(|| url.host_str().unwrap_or("localhost").to_string());
    let port = query_param(url, "port")
        .and_then(|p| p.parse().ok())
        .or(url.port())
        .unwrap_or(5432);
    format!("{host}:{port}")
}

fn query_param(url: &Url, key: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Builds a tokio-postgres config from the URL's parts; libpq-only options
/// (which tokio-postgres would reject) still reach pg_dump through the URL.
fn client_config(url: &Url, password: Option<&str>) -> Result<tokio_postgres::Config, JobError> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut c = tokio_postgres::Config::new();
    match query_param(url, "host") {
        Some(h) => {
            c.host(&h);
        }
        None => {
            let h = url.host_str().unwrap_or("localhost");
            c.host(h.trim_start_matches('[').trim_end_matches(']'));
        }
    }
    c.port(
        query_param(url, "port")
            .and_then(|p| p.parse().ok())
            .or(url.port())
            .unwrap_or(5432),
    );
    let user = decode(url.username());
    let user = query_param(url, "user").unwrap_or(user);
    if !user.is_empty() {
        c.user(&user);
    }
    let db = decode(url.path().trim_start_matches('/'));
    if !db.is_empty() {
        c.dbname(&db);
    }
    if let Some(p) = password {
        c.password(p);
    }
    c.application_name("pgbackup");
    let timeout = query_param(url, "connect_timeout")
        .and_then(|t| t.parse().ok())
        .unwrap_or(10);
    c.connect_timeout(Duration::from_secs(timeout));
    c.ssl_mode(match query_param(url, "sslmode").as_deref() {
        Some("disable") => tokio_postgres::config::SslMode::Disable,
        Some("require" | "verify-ca" | "verify-full") => tokio_postgres::config::SslMode::Require,
        _ => tokio_postgres::config::SslMode::Prefer,
    });
    Ok(c)
}

/// A set of client binaries (pg_dump, pg_restore, psql) and their major version.
#[derive(Debug, Clone)]
pub struct Tools {
    pub bin_dir: PathBuf,
    pub major: u32,
    /// What `pg_dump --version` printed, e.g. "pg_dump (PostgreSQL) 15.20".
    pub version_line: String,
}

impl Tools {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// A command for one of the tools, with the connection's password in its
    /// environment only.
    pub fn command(&self, name: &str, db: &Database) -> Command {
        let mut cmd = Command::new(self.bin(name));
        if let Some(p) = db.password() {
            cmd.env("PGPASSWORD", p.expose());
        }
        cmd.env("PGCONNECT_TIMEOUT", "10");
        cmd.stdin(std::process::Stdio::null());
        cmd.kill_on_drop(true);
        cmd
    }
}

/// Picks the client tools for a server of `server_major`: PG_BIN_DIR when set,
/// else the oldest `/usr/lib/postgresql/<N>/bin` with N >= the server's major
/// (older than needed cannot dump; much newer may write SQL an older server
/// rejects), else whatever `pg_dump` is on PATH.
pub async fn find_tools(server_major: u32, pg_bin_dir: Option<&Path>) -> Result<Tools, JobError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = pg_bin_dir {
        candidates.push(dir.to_path_buf());
    } else {
        let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n: u32 = e.file_name().to_str()?.parse().ok()?;
                Some((n, e.path().join("bin")))
            })
            .collect();
        debian.sort();
        candidates.extend(debian.into_iter().map(|(_, p)| p));
        if let Some(p) = which("pg_dump") {
            candidates.push(p.parent().unwrap_or(Path::new("/")).to_path_buf());
        }
    }
    let mut seen = Vec::new();
    for dir in candidates {
        let Ok(t) = probe(&dir).await else { continue };
        if t.major >= server_major {
            return Ok(t);
        }
        seen.push(t);
    }
    let found = if seen.is_empty() {
        "no pg_dump found".to_string()
    } else {
        seen.iter()
            .map(|t| format!("pg_dump {} in {}", t.major, t.bin_dir.display()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(JobError::permanent(
        Stage::Version,
        format!(
            "server is PostgreSQL {server_major} but {found}{}; pg_dump must be at least as new as the server: install postgresql-client-{server_major} (or newer){}",
            pg_bin_dir.map(|_| " (PG_BIN_DIR)").unwrap_or(""),
            if pg_bin_dir.is_some() { " or point PG_BIN_DIR at it" } else { "" }
        ),
    ))
}

async fn probe(dir: &Path) -> Result<Tools, ()> {
    let out = Command::new(dir.join("pg_dump"))
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|_| ())?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major = parse_tool_major(&line).ok_or(())?;
    Ok(Tools {
        bin_dir: dir.to_path_buf(),
        major,
        version_line: line,
    })
}

/// "pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)" -> "15.20".
pub fn tool_version(line: &str) -> Option<&str> {
    line.split(')').nth(1)?.split_whitespace().next()
}

/// "pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)" -> 15; "9.6.24" -> 9.
pub fn parse_tool_major(line: &str) -> Option<u32> {
    let v = tool_version(line)?;
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Keeps the last 16 KiB of a tool's stderr, read concurrently with its
/// stdout: a full stderr pipe would otherwise block the tool.
pub async fn drain_tail(mut r: impl tokio::io::AsyncRead + Unpin) -> String {
    use tokio::io::AsyncReadExt;
    const KEEP: usize = 16 * 1024;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 2 * KEEP {
                    buf.drain(..buf.len() - KEEP);
                }
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Sizes for people: 1.2 MiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A quoted SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// One line from a tokio-postgres error: the server's message when there is one.
pub fn pg_err(stage: Stage, what: &str, e: &tokio_postgres::Error) -> JobError {
    let msg = match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => e.to_string(),
    };
    JobError::permanent(stage, format!("{what}: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b c"), "\"a\"\"b c\"");
    }

    #[test]
    fn exits_are_described_by_status_or_signal() {
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::ExitStatus::from_raw;
        assert_eq!(exit_description(status(1 << 8)), "exited with status 1");
        assert_eq!(exit_description(status(9)), "was killed by signal 9");
    }

    #[test]
    fn tool_versions() {
        assert_eq!(
            parse_tool_major("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_tool_major("pg_dump (PostgreSQL) 18beta1"), Some(18));
        assert_eq!(parse_tool_major("pg_dump (PostgreSQL) 17.2"), Some(17));
        assert_eq!(parse_tool_major("garbage"), None);
        assert_eq!(major_of(150020), 15);
        assert_eq!(major_of(90624), 9);
    }

    #[test]
    fn client_certificates_need_both_files_and_name_the_missing_one() {
        let url = |q: &str| Url::parse(&format!("postgres://u:secret@h/db?{q}")).unwrap();
        let err = |q: &str, mode: Option<&str>| {
            client_identity(&url(q), mode)
                .err()
                .unwrap_or_else(|| panic!("{q}: no error"))
        };
        assert!(client_identity(&url("sslmode=require"), Some("require"))
            .unwrap()
            .is_none());
        // No TLS, so nothing to present, as with libpq.
        assert!(client_identity(&url("sslcert=/nope.crt"), Some("disable"))
            .unwrap()
            .is_none());
        let only_cert = err("sslcert=/c.crt", None);
        assert!(only_cert.contains("sslkey is not"), "{only_cert}");
        let only_key = err("sslkey=/k.key", Some("verify-full"));
        assert!(only_key.contains("sslcert is not"), "{only_key}");

        let dir = std::env::temp_dir().join(format!("pgbackup-pg-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("client.crt");
        std::fs::write(&cert, "not a certificate\n").unwrap();
        let missing = dir.join("missing.key");
        let q = format!("sslcert={}&sslkey={}", cert.display(), missing.display());
        let e = err(&q, None);
        assert!(e.contains(&format!("sslcert {}", cert.display())), "{e}");
        assert!(e.contains("no PEM certificate"), "{e}");
        assert!(!e.contains('\n') && !e.contains("secret"), "{e}");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = err(&q, None);
        assert!(e.contains(&format!("sslkey {}", missing.display())), "{e}");
        assert!(e.contains("cannot read it"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn host_labels_never_carry_credentials() {
        let u = Url::parse("postgres://user@db.internal:6543/x?sslmode=require").unwrap();
        assert_eq!(host_label(&u), "db.internal:6543");
        let u = Url::parse("postgres:///x?host=/run/postgresql&user=me").unwrap();
        assert_eq!(host_label(&u), "/run/postgresql:5432");
    }
}
