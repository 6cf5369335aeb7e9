use super::*;

/// A temp directory, removed when the test ends.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for Dir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

/// A directory with a self-signed certificate and its key, and a second
/// key that does not match it.
fn pki() -> Dir {
    let dir =
        std::env::temp_dir().join(format!("pgbackup-webconfig-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("server.crt"), c.cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), c.signing_key.serialize_pem()).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.join("other.key"), other.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.crt"), c.cert.pem()).unwrap();
    Dir(dir)
}

fn parse(yaml: &str, dir: &Path) -> Result<WebConfig, WebConfigError> {
    WebConfig::parse(yaml, &dir.join("web.yml"), dir)
}

/// A hash as `htpasswd -nBC 10` makes it ($2y$), at cost 4 for speed.
fn hash(password: &str) -> String {
    bcrypt::hash_with_result(password, 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY)
}

#[test]
fn a_full_file_parses_with_paths_relative_to_it() {
    let dir = pki();
    let yaml = format!(
        "# as node_exporter takes it\n\
         tls_server_config:\n  cert_file: server.crt\n  key_file: {}\n\
         \x20 client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n\
         \x20 min_version: TLS13\n\
         basic_auth_users:\n  prometheus: {}\n  healthcheck: '{}'\n",
        dir.join("server.key").display(),
        hash("scrape"),
        hash("probe"),
    );
    let c = parse(&yaml, &dir).unwrap();
    let t = c.tls.as_ref().unwrap();
    assert_eq!(t.cert_file, dir.join("server.crt"));
    assert_eq!(t.key_file, dir.join("server.key"));
    assert_eq!(t.client_auth, ClientAuth::RequireAndVerifyClientCert);
    assert!(t.client_roots.is_some());
    assert_eq!(t.min_version, MinVersion::Tls13);
    assert_eq!(
        c.users.names().collect::<Vec<_>>(),
        ["healthcheck", "prometheus"]
    );
    assert!(tls::server_config(t).is_ok());
    // Debug output names users, never hashes.
    let debug = format!("{c:?}");
    assert!(
        debug.contains("prometheus") && !debug.contains("$2y$"),
        "{debug}"
    );
    assert_eq!(
        c.describe(),
        "https, client certificates required, basic auth (2 users)"
    );
}

#[test]
fn empty_files_and_empty_sections_mean_plain_http_without_auth() {
    let dir = pki();
    for yaml in [
        "",
        "# nothing\n",
        "tls_server_config:\n",
        "basic_auth_users: {}\n",
    ] {
        let c = parse(yaml, &dir).unwrap();
        assert!(c.tls.is_none() && c.users.is_empty(), "{yaml:?}");
        assert_eq!(c.describe(), "http, no basic auth");
    }
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let dir = pki();
    for (yaml, key) in [
        ("http_server_config:\n  http2: false\n", "http_server_config"),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "cipher_suites",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  max_version: TLS13\n",
            "max_version",
        ),
        ("basic_auth_user:\n  a: b\n", "basic_auth_user"),
    ] {
        let e = parse(yaml, &dir).unwrap_err();
        assert!(matches!(e, WebConfigError::Syntax { .. }), "{e}");
        let line = ConfigError::from(e).to_string();
        assert!(
            line.starts_with("invalid BACKUP_WEB_CONFIG_FILE: ") && line.contains(key),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }
}

#[test]
fn bad_bcrypt_hashes_are_refused_without_quoting_them() {
    let dir = pki();
    let good = hash("pw");
    for bad in [
        "plaintext-password",
        "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
        // an MD5 htpasswd line's hash
        "$apr1$abcdefgh$0123456789abcdefghijkl",
        &good[..59],
        &good.replace("$04$", "$99$"),
        &format!("{}!", &good[..59]),
    ] {
        let yaml = format!("basic_auth_users:\n  alice: '{bad}'\n");
        let e = parse(&yaml, &dir).unwrap_err();
        let line = ConfigError::from(e).to_string();
        assert!(
            line.contains("\"alice\"") && line.contains("bcrypt"),
            "{line}"
        );
        assert!(!line.contains(bad), "the hash is quoted: {line}");
    }
    // $2a$ and $2b$ hashes (Python's bcrypt, Go's) are bcrypt too.
    let b = bcrypt::hash("pw", 4).unwrap();
    assert!(parse(&format!("basic_auth_users:\n  a: '{b}'\n"), &dir).is_ok());
}

#[test]
fn missing_or_unusable_files_name_the_key_and_the_file() {
    let dir = pki();
    let tls = |cert: &str, key: &str| {
        format!("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    };
    let cases = [
        (tls("missing.crt", "server.key"), "cert_file", "missing.crt"),
        (tls("server.crt", "missing.key"), "key_file", "missing.key"),
        (
            tls("server.key", "server.key"),
            "cert_file",
            "no PEM certificate",
        ),
        (
            tls("server.crt", "server.crt"),
            "key_file",
            "no unencrypted PEM private key",
        ),
        (tls("server.crt", "other.key"), "key_file", "does not match"),
    ];
    for (yaml, key, what) in cases {
        let e = parse(&yaml, &dir).unwrap_err();
        assert!(matches!(e, WebConfigError::File { .. }), "{e}");
        let line = ConfigError::from(e).to_string();
        assert!(line.contains(key) && line.contains(what), "{line}");
        assert!(!line.contains("PRIVATE KEY-----"), "{line}");
    }
    let key = std::fs::read_to_string(dir.join("server.key")).unwrap();
    let body = key.lines().nth(1).unwrap();
    let e = parse(&tls("server.crt", "server.crt"), &dir).unwrap_err();
    assert!(!e.to_string().contains(body));
}

#[test]
fn incomplete_or_unsupported_tls_settings_are_refused() {
    let dir = pki();
    let base = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    for (extra, what) in [
        (
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "client_ca_file must be set",
        ),
        ("  client_ca_file: ca.crt\n", "NoClientCert"),
        (
            "  client_auth_type: RequireAnyClientCert\n",
            "not supported",
        ),
        ("  client_auth_type: Sometimes\n", "none of"),
        ("  min_version: TLS11\n", "not supported"),
        ("  min_version: SSL3\n", "neither"),
    ] {
        let e = parse(&format!("{base}{extra}"), &dir).unwrap_err();
        assert!(e.to_string().contains(what), "{extra}: {e}");
    }
    let e = parse("tls_server_config:\n  cert_file: server.crt\n", &dir).unwrap_err();
    assert!(e.to_string().contains("must both be set"), "{e}");
    let c = parse(
        &format!("{base}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n"),
        &dir,
    )
    .unwrap();
    assert!(tls::server_config(c.tls.as_ref().unwrap()).is_ok());
}

#[test]
fn load_reads_the_file_and_names_it_when_it_cannot() {
    let dir = pki();
    let e = WebConfig::load(&dir.join("absent.yml")).unwrap_err();
    assert!(matches!(e, WebConfigError::Read { .. }));
    assert!(e.to_string().contains("absent.yml"), "{e}");
    std::fs::write(
        dir.join("web.yml"),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )
    .unwrap();
    let c = WebConfig::load(&dir.join("web.yml")).unwrap();
    assert_eq!(c.tls.unwrap().cert_file, dir.join("server.crt"));
    std::fs::write(dir.join("bad.yml"), "tls_server_config: [\n").unwrap();
    let e = WebConfig::load(&dir.join("bad.yml")).unwrap_err();
    assert!(matches!(e, WebConfigError::Syntax { .. }), "{e}");
}
