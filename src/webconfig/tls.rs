//! rustls for the HTTP server and for the health check's client.
//!
//! The server's certificate and key are re-read when either file changes
//! (checked at each handshake: two stat calls), so a renewed certificate
//! (cert-manager, certbot, a rotated secret) is served without a restart.
//! A renewal caught half-written (key and certificate not matching yet)
//! keeps the previous pair until the files change again. The client CA file
//! is read once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

use super::{ClientAuth, MinVersion, TlsSettings};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A PEM error in a few words: the I/O error as it is, anything else
/// without the parser's detail (which could quote the file).
fn describe(e: pem::Error, none_found: &str) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        pem::Error::NoItemsFound => none_found.to_string(),
        _ => "not a valid PEM file".to_string(),
    }
}

fn read_chain(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .and_then(|c| {
            if c.is_empty() {
                Err(pem::Error::NoItemsFound)
            } else {
                Ok(c)
            }
        })
        .map_err(|e| describe(e, "no PEM certificate in it"))
}

fn read_key(file: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(file).map_err(|e| {
        describe(
            e,
            "no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1) in it",
        )
    })
}

/// The certificate chain and key, checked to belong together. The error
/// names the key of the web configuration and the file.
pub(super) fn load_certified_key<'a>(
    cert_file: &'a Path,
    key_file: &'a Path,
) -> Result<CertifiedKey, (&'static str, &'a Path, String)> {
    let chain = read_chain(cert_file).map_err(|m| ("cert_file", cert_file, m))?;
    let key = read_key(key_file).map_err(|m| ("key_file", key_file, m))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        let why = match e {
            Error::InconsistentKeys(_) => "does not match the certificate of cert_file".into(),
            other => format!("cannot be used: {other}"),
        };
        ("key_file", key_file, why)
    })
}

/// The roots of `client_ca_file`.
pub(super) fn load_roots(file: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(read_chain(file)?);
    if added == 0 {
        return Err("no usable CA certificate in it".into());
    }
    Ok(Arc::new(roots))
}

/// What identifies a file's content without reading it.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(p: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Serves the pair of files, re-read when their stamps change.
#[derive(Debug)]
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The stamps last looked at, loaded or not: a bad pair is reported
    /// once, not at every handshake.
    stamps: (Stamp, Stamp),
}

impl ReloadingCert {
    fn new(s: &TlsSettings) -> Result<ReloadingCert, String> {
        let stamps = (stamp(&s.cert_file), stamp(&s.key_file));
        let key = load_certified_key(&s.cert_file, &s.key_file)
            .map_err(|(k, f, m)| format!("{k} {}: {m}", f.display()))?;
        Ok(ReloadingCert {
            cert_file: s.cert_file.clone(),
            key_file: s.key_file.clone(),
            state: Mutex::new(Loaded {
                key: Arc::new(key),
                stamps,
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = (stamp(&self.cert_file), stamp(&self.key_file));
        if now != st.stamps {
            st.stamps = now;
            match load_certified_key(&self.cert_file, &self.key_file) {
                Ok(k) => {
                    st.key = Arc::new(k);
                    tracing::info!(cert_file = %self.cert_file.display(), "TLS certificate reloaded");
                }
                Err((k, f, m)) => tracing::warn!(
                    "TLS certificate not reloaded, still serving the previous one: {k} {}: {m}",
                    f.display()
                ),
            }
        }
        st.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn versions(min: MinVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match min {
        MinVersion::Tls12 => rustls::ALL_VERSIONS,
        MinVersion::Tls13 => TLS13_ONLY,
    }
}

/// The server side of `tls_server_config`.
pub fn server_config(s: &TlsSettings) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(s.min_version))
        .map_err(|e| e.to_string())?;
    let builder = match (s.client_auth, &s.client_roots) {
        (ClientAuth::NoClientCert, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(roots)) => {
            let v = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider);
            let v = if mode == ClientAuth::VerifyClientCertIfGiven {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(ReloadingCert::new(s)?));
    // hyper serves HTTP/1.1 only; say so rather than let a client guess.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client certificate and key for the health check, from PEM files.
#[derive(Clone)]
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity(***)")
    }
}

impl ClientIdentity {
    /// Errors say which of the two files, and why; never their content.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<ClientIdentity, (bool, String)> {
        let chain = read_chain(cert_file).map_err(|m| (true, m))?;
        let key = read_key(key_file).map_err(|m| (false, m))?;
        CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider()).map_err(|e| {
            (
                false,
                match e {
                    Error::InconsistentKeys(_) => "does not match the certificate".into(),
                    other => format!("cannot be used: {other}"),
                },
            )
        })?;
        Ok(ClientIdentity {
            chain,
            key: Arc::new(key),
        })
    }
}

/// The health check's client: it talks to its own server, so it trusts
/// exactly the certificate that is in `cert_file` now, whatever name or CA
/// it has, and still checks that the server holds its key.
pub fn pinned_client_config(
    s: &TlsSettings,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = provider();
    let pinned = read_chain(&s.cert_file)
        .map_err(|m| format!("cert_file {}: {m}", s.cert_file.display()))?
        .swap_remove(0);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pinned, provider }));
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct Pinned {
    pinned: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::General(
                "the server's certificate is not the one in cert_file".into(),
            ))
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
