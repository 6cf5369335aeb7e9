//! BACKUP_WEB_CONFIG_FILE: TLS and basic auth for the HTTP server, in the
//! web configuration format of the Prometheus exporter-toolkit (what
//! node_exporter and postgres_exporter take with `--web.config.file`), so
//! that users reuse the file they already have.
//!
//! [`WebConfig::load`] reads and validates the file once, at start-up:
//! certificates and keys must load and match, hashes must be bcrypt. Keys
//! this implementation does not support are refused by name, never ignored:
//! a setting silently dropped would serve openly what the user meant to
//! protect. [`tls`] builds the rustls server (it re-reads the certificate
//! when the files change) and the health check's client; [`auth`] decides
//! basic auth.
//!
//! Errors name the file and the cause, never a hash or key material.

pub mod auth;
pub mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::error::{one_line, ConfigError};

/// The variable that names the file.
pub const VAR: &str = "BACKUP_WEB_CONFIG_FILE";

/// A web configuration file is a few lines; anything far bigger is a mistake.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why a web configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not YAML, a value of the wrong type, or a key we do not support.
    #[error("{path:?}: {message}")]
    Syntax { path: PathBuf, message: String },
    /// Well-formed, but a value cannot work.
    #[error("{path:?}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A file the configuration names (certificate, key, CA) cannot be used.
    #[error("{path:?}: {key} {file:?}: {message}")]
    File {
        path: PathBuf,
        key: &'static str,
        file: PathBuf,
        message: String,
    },
}

impl From<WebConfigError> for ConfigError {
    fn from(e: WebConfigError) -> Self {
        // Paths come from the user and may hold anything: one printable line.
        let line = one_line(&e.to_string()).replace(|c: char| c.is_control(), " ");
        ConfigError::new(VAR, line)
    }
}

/// The file as exporter-toolkit defines it, restricted to what we implement.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename = "a mapping")]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename = "a mapping")]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
}

/// The validated configuration. Debug shows user names, never hashes.
#[derive(Clone, Default)]
pub struct WebConfig {
    /// None: plain HTTP.
    pub tls: Option<TlsSettings>,
    /// Empty: no authentication.
    pub users: Users,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls)
            .field("users", &self.users.names().collect::<Vec<_>>())
            .finish()
    }
}

/// `tls_server_config`, its files checked at load time.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth: ClientAuth,
    /// The roots client certificates must chain to; read once (a change
    /// needs a restart, unlike the server certificate).
    pub client_roots: Option<Arc<rustls::RootCertStore>>,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: MinVersion,
}

/// `client_auth_type`. RequestClientCert and RequireAnyClientCert are not
/// offered: they accept any certificate, which authenticates nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

/// `min_version`. rustls speaks TLS 1.2 and 1.3 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

/// `basic_auth_users`: user name -> bcrypt hash, each hash checked for
/// shape at load time.
#[derive(Clone, Default)]
pub struct Users(BTreeMap<String, String>);

impl Users {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(u, h)| (u.as_str(), h.as_str()))
    }
}

impl WebConfig {
    /// Reads and validates `path`. An empty file is the default, as with
    /// exporter-toolkit: plain HTTP, no authentication.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let read_err = |source| WebConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(WebConfigError::Invalid {
                path: path.to_path_buf(),
                message: format!("{} bytes is too big for a web configuration", meta.len()),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, base)
    }

    /// Parses `text`; `path` is for messages, and relative file names are
    /// taken from `base` (the file's directory, as exporter-toolkit does).
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<WebConfig, WebConfigError> {
        let raw: Option<RawWebConfig> =
            serde_norway::from_str(text).map_err(|e| WebConfigError::Syntax {
                path: path.to_path_buf(),
                message: yaml_message(&e),
            })?;
        let raw = raw.unwrap_or_default();
        let invalid = |message: String| WebConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut users = BTreeMap::new();
        for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
            if user.is_empty() || user.contains(':') {
                return Err(invalid(format!(
                    "basic_auth_users: the user name {user:?} is empty or has a ':'"
                )));
            }
            if let Err(why) = check_bcrypt(&hash) {
                return Err(invalid(format!(
                    "basic_auth_users: the hash of user {user:?} is not a bcrypt hash ({why}); \
                     make one with `htpasswd -nBC 10 {user}`"
                )));
            }
            users.insert(user, hash);
        }
        let tls = match raw.tls_server_config {
            None => None,
            Some(t) => tls_settings(t, path, base)?,
        };
        Ok(WebConfig {
            tls,
            users: Users(users),
        })
    }

    /// What the server will do, for the start-up log line.
    pub fn describe(&self) -> String {
        let scheme = match &self.tls {
            None => "http".to_string(),
            Some(t) => match t.client_auth {
                ClientAuth::NoClientCert => "https".to_string(),
                ClientAuth::VerifyClientCertIfGiven => {
                    "https, client certificates verified if given".to_string()
                }
                ClientAuth::RequireAndVerifyClientCert => {
                    "https, client certificates required".to_string()
                }
            },
        };
        match self.users.0.len() {
            0 => format!("{scheme}, no basic auth"),
            n => format!("{scheme}, basic auth ({n} users)"),
        }
    }
}

/// serde_norway's message in one line, without the "at line N column M"
/// that it sometimes repeats: a key's name and the position are enough.
fn yaml_message(e: &serde_norway::Error) -> String {
    // "unknown field" reads as a typo; most often it is a key of
    // exporter-toolkit that pgbackup does not implement.
    let mut m = one_line(&e.to_string()).replace("unknown field", "unsupported key");
    if let Some(loc) = e.location() {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if !m.ends_with(&suffix) {
            m.push_str(&suffix);
        }
    }
    m
}

fn tls_settings(
    t: RawTls,
    path: &Path,
    base: &Path,
) -> Result<Option<TlsSettings>, WebConfigError> {
    let invalid = |message: &str| WebConfigError::Invalid {
        path: path.to_path_buf(),
        message: format!("tls_server_config: {message}"),
    };
    let set = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let (cert, key, ca) = (set(t.cert_file), set(t.key_file), set(t.client_ca_file));
    let auth = set(t.client_auth_type);
    let min = set(t.min_version);
    // All empty is no TLS, as with exporter-toolkit.
    if cert.is_none() && key.is_none() && ca.is_none() && auth.is_none() && min.is_none() {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        return Err(invalid("cert_file and key_file must both be set"));
    };
    let client_auth = match auth.as_deref() {
        None | Some("NoClientCert") => ClientAuth::NoClientCert,
        Some("VerifyClientCertIfGiven") => ClientAuth::VerifyClientCertIfGiven,
        Some("RequireAndVerifyClientCert") => ClientAuth::RequireAndVerifyClientCert,
        Some(other @ ("RequestClientCert" | "RequireAnyClientCert")) => {
            return Err(invalid(&format!(
                "client_auth_type {other} is not supported: it accepts any certificate; \
                 use RequireAndVerifyClientCert or VerifyClientCertIfGiven with client_ca_file"
            )))
        }
        Some(other) => {
            return Err(invalid(&format!(
                "client_auth_type {other:?} is none of NoClientCert, VerifyClientCertIfGiven, \
                 RequireAndVerifyClientCert"
            )))
        }
    };
    let min_version = match min.as_deref() {
        None | Some("TLS12") => MinVersion::Tls12,
        Some("TLS13") => MinVersion::Tls13,
        Some(v @ ("TLS10" | "TLS11")) => {
            return Err(invalid(&format!(
                "min_version {v} is not supported: TLS 1.2 is the oldest version served"
            )))
        }
        Some(v) => {
            return Err(invalid(&format!(
                "min_version {v:?} is neither TLS12 nor TLS13"
            )))
        }
    };
    let resolve = |f: String| base.join(f);
    let client_ca_file = ca.map(resolve);
    let client_roots = match (&client_ca_file, client_auth) {
        (None, ClientAuth::NoClientCert) => None,
        (None, _) => {
            return Err(invalid(
                "client_auth_type verifies client certificates, so client_ca_file must be set",
            ))
        }
        (Some(_), ClientAuth::NoClientCert) => {
            return Err(invalid(
                "client_ca_file is set but client_auth_type is NoClientCert: \
                 set client_auth_type to RequireAndVerifyClientCert or VerifyClientCertIfGiven",
            ))
        }
        (Some(f), _) => Some(
            tls::load_roots(f).map_err(|message| file_error(path, "client_ca_file", f, message))?,
        ),
    };
    let settings = TlsSettings {
        cert_file: resolve(cert),
        key_file: resolve(key),
        client_auth,
        client_roots,
        client_ca_file,
        min_version,
    };
    // Fail at start-up, not at the first handshake.
    tls::load_certified_key(&settings.cert_file, &settings.key_file)
        .map_err(|(key, file, message)| file_error(path, key, file, message))?;
    Ok(Some(settings))
}

fn file_error(path: &Path, key: &'static str, file: &Path, message: String) -> WebConfigError {
    WebConfigError::File {
        path: path.to_path_buf(),
        key,
        file: file.to_path_buf(),
        message,
    }
}

/// The shape of a bcrypt hash (`$2y$10$` + 53 characters of bcrypt's
/// base64), checked without running bcrypt: a hash that cannot verify
/// would lock its user out without a word.
fn check_bcrypt(hash: &str) -> Result<(), &'static str> {
    let b = hash.as_bytes();
    if b.len() != 60 {
        return Err("not 60 characters");
    }
    if !(b[0] == b'$' && b[1] == b'2' && matches!(b[2], b'a' | b'b' | b'x' | b'y') && b[3] == b'$')
    {
        return Err("no $2a$, $2b$, $2x$ or $2y$ prefix");
    }
    let cost = std::str::from_utf8(&b[4..6])
        .ok()
        .and_then(|c| c.parse::<u32>().ok())
        .filter(|_| b[6] == b'$');
    match cost {
        Some(4..=31) => {}
        _ => return Err("the cost is not a number from 04 to 31"),
    }
    if !b[7..]
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'/'))
    {
        return Err("salt and hash are not bcrypt base64");
    }
    Ok(())
}

/// The cost of a hash that passed [`check_bcrypt`].
pub(crate) fn bcrypt_cost(hash: &str) -> u32 {
    hash.get(4..6).and_then(|c| c.parse().ok()).unwrap_or(10)
}

#[cfg(test)]
mod tests;
