//! BACKUP_WEB_CONFIG_FILE: the daemon behind TLS and basic auth, scraped by
//! the real Prometheus, probed with curl and `pgbackup healthcheck`. The
//! test makes its own CA, server and client certificates (rcgen) and its
//! bcrypt hashes with Debian's `htpasswd` (apache2-utils).

use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::harness::*;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const SCRAPE_PASSWORD: &str = "scrape-pa55-d0nt-log";
const PROBE_PASSWORD: &str = "probe-pa55-d0nt-log";

fn need(bin: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{bin} is missing: run scripts/setup (Debian's {package})"
    );
}

/// A CA and what it signs, as PEM files in one directory.
struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = temp_dir(name);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
        Pki {
            dir,
            issuer: Issuer::new(params, key),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `<name>.crt` and `<name>.key`, for a server (localhost, 127.0.0.1)
    /// or a client.
    fn issue(&self, name: &str, server: bool) -> (PathBuf, PathBuf) {
        let sans = if server {
            vec!["localhost".to_string(), "127.0.0.1".to_string()]
        } else {
            vec![]
        };
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// `user: hash` as `htpasswd -nBC 10` prints it.
fn htpasswd(user: &str, password: &str) -> (String, String) {
    need("htpasswd", "apache2-utils");
    let out = run_ok(Command::new("htpasswd").args(["-nbBC", "10", user, password]));
    let (u, hash) = out.trim().split_once(':').expect("user:hash");
    assert!(hash.starts_with("$2y$10$"), "{out}");
    (u.to_string(), hash.to_string())
}

struct Daemon {
    proc: Guard,
    addr: String,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `pgbackup run` against PostgreSQL and a local store, serving with
/// `web_config`; its stderr goes to a file the test reads.
fn start_daemon(web_config: &str) -> Daemon {
    let pg = pg();
    let db = pg.fresh_db("web");
    let dir = temp_dir("web-daemon");
    std::fs::write(dir.join("web.yml"), web_config).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let env = vars(&[
        ("BACKUP_DATABASE_URL", &pg.url(&db)),
        ("BACKUP_LOCAL_DIR", dir.join("store").to_str().unwrap()),
        ("BACKUP_LISTEN_ADDRESS", &addr),
        ("BACKUP_CRON_SCHEDULE", "0 3 * * *"),
        (
            "BACKUP_WEB_CONFIG_FILE",
            dir.join("web.yml").to_str().unwrap(),
        ),
        // Everything the daemon says, to check that no secret is in it.
        ("RUST_LOG", "debug"),
    ]);
    let log = dir.join("daemon.log");
    let mut cmd = pgbackup_cmd(&["run"], &env);
    cmd.stdout(Stdio::null())
        .stderr(File::create(&log).unwrap());
    let mut proc = Guard::spawn(&mut cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&addr).is_err() {
        if let Some(s) = proc.wait_timeout(Duration::from_millis(50)) {
            panic!(
                "the daemon exited with {s}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
    }
    Daemon { proc, addr, log }
}

struct Curl {
    /// curl's own exit code: 0 when an HTTP answer came.
    code: i32,
    status: u16,
    head: String,
    stderr: String,
}

fn curl(url: &str, args: &[&str]) -> Curl {
    need("curl", "curl");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-D", "-"])
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, status) = stdout.rsplit_once('\n').unwrap_or(("", "0"));
    Curl {
        code: out.status.code().unwrap_or(-1),
        status: status.trim().parse().unwrap_or(0),
        head: head.to_lowercase(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn healthcheck(env: &[(&str, &str)]) -> Run {
    pgbackup(&["healthcheck"], &vars(env))
}

/// Exit 1 and one line saying why, containing `what`.
fn unhealthy(run: &Run, what: &str) {
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(run.stdout, "", "{}", run.all());
    let lines: Vec<_> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].starts_with("error: unhealthy: ") && lines[0].contains(what),
        "{}",
        run.stderr
    );
}

fn prom_query(addr: &str, query: &str) -> serde_json::Value {
    let path = format!(
        "/api/v1/query?query={}",
        percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC)
    );
    let (code, body) = http_get(addr, &path);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn prometheus_scrapes_over_https_with_basic_auth_and_others_get_401() {
    let pki = Pki::new("web-auth");
    let (cert, key) = pki.issue("server", true);
    let (scrape_user, scrape_hash) = htpasswd("prometheus", SCRAPE_PASSWORD);
    let (_, probe_hash) = htpasswd("healthcheck", PROBE_PASSWORD);
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n\
         basic_auth_users:\n  {scrape_user}: {scrape_hash}\n  healthcheck: '{probe_hash}'\n",
        cert.display(),
        key.display()
    );
    let d = start_daemon(&web);
    let url = format!("https://{}/metrics", d.addr);
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();

    // The real Prometheus, as docs/security.md configures it.
    need(PROMETHEUS, "prometheus");
    let pdir = temp_dir("web-prom");
    std::fs::write(pdir.join("password"), SCRAPE_PASSWORD).unwrap();
    std::fs::write(
        pdir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: backup\n\
             \x20   scheme: https\n    tls_config:\n      ca_file: {ca}\n\
             \x20   basic_auth:\n      username: prometheus\n      password_file: {}\n\
             \x20   static_configs:\n      - targets: ['{}']\n",
            pdir.join("password").display(),
            d.addr
        ),
    )
    .unwrap();
    let paddr = format!("127.0.0.1:{}", free_port());
    let _prom = Guard::spawn(
        Command::new(PROMETHEUS)
            .arg(format!(
                "--config.file={}",
                pdir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                pdir.join("data").display()
            ))
            .arg(format!("--web.listen-address={paddr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );

    // Meanwhile: no credentials, a wrong password, an unknown user: 401
    // with the challenge, on every path.
    for path in ["/metrics", "/healthz", "/health", "/", "/nonexistent"] {
        let c = curl(&format!("https://{}{path}", d.addr), &["--cacert", ca]);
        assert_eq!(c.status, 401, "{path}: {} {}", c.head, c.stderr);
        assert!(
            c.head
                .contains("www-authenticate: basic realm=\"pgbackup\""),
            "{path}: {}",
            c.head
        );
    }
    for creds in [
        "prometheus:wrong",
        "prometheus:",
        "nobody:scrape-pa55-d0nt-log",
    ] {
        let c = curl(&url, &["--cacert", ca, "-u", creds]);
        assert_eq!(c.status, 401, "{creds}: {}", c.stderr);
        assert!(c.head.contains("www-authenticate: basic"), "{}", c.head);
    }
    let ok = curl(
        &url,
        &[
            "--cacert",
            ca,
            "-u",
            &format!("prometheus:{SCRAPE_PASSWORD}"),
        ],
    );
    assert_eq!(ok.status, 200, "{}", ok.stderr);
    // Plain HTTP on the TLS port gets no answer.
    let plain = curl(&format!("http://{}/metrics", d.addr), &[]);
    assert_ne!(plain.status, 200);

    let mut up = serde_json::Value::Null;
    eventually(
        "Prometheus to scrape the daemon over https",
        Duration::from_secs(60),
        || {
            if TcpStream::connect(&paddr).is_err() {
                return false;
            }
            up = prom_query(&paddr, "up{job=\"backup\"}");
            up["data"]["result"][0]["value"][1] == "1"
        },
    );
    let status = prom_query(&paddr, "backup_last_status{job=\"backup\"}");
    assert!(
        status["data"]["result"][0]["value"][1].is_string(),
        "a pgbackup metric was scraped: {status}"
    );

    // The health check, with the healthcheck user's password from a file.
    let addr = d.addr.as_str();
    let web_file = d.log.with_file_name("web.yml");
    let web_file = web_file.to_str().unwrap();
    std::fs::write(pdir.join("probe-password"), format!("{PROBE_PASSWORD}\n")).unwrap();
    let pw_file = pdir.join("probe-password");
    let base = [
        ("BACKUP_LISTEN_ADDRESS", addr),
        ("BACKUP_WEB_CONFIG_FILE", web_file),
    ];
    let with = |extra: &[(&'static str, &str)]| {
        let mut e: Vec<(&str, &str)> = base.to_vec();
        e.extend_from_slice(extra);
        healthcheck(&e)
    };
    let r = with(&[
        ("BACKUP_HEALTHCHECK_USER", "healthcheck"),
        (
            "BACKUP_HEALTHCHECK_PASSWORD_FILE",
            pw_file.to_str().unwrap(),
        ),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.all(), "");
    let r = with(&[
        ("BACKUP_HEALTHCHECK_USER", "healthcheck"),
        ("BACKUP_HEALTHCHECK_PASSWORD", "wrong"),
    ]);
    unhealthy(&r, "401");
    assert!(!r.all().contains("wrong"), "{}", r.all());
    // Without credentials it says which variables to set, and exits 1 (a
    // HEALTHCHECK command must not exit 2).
    let r = with(&[]);
    unhealthy(&r, "BACKUP_HEALTHCHECK_USER");

    // A renewed certificate (here from another CA) is served without a
    // restart.
    let pki2 = Pki::new("web-renewed");
    let (cert2, key2) = pki2.issue("server2", true);
    std::fs::copy(&key2, &key).unwrap();
    std::fs::copy(&cert2, &cert).unwrap();
    let creds = format!("prometheus:{SCRAPE_PASSWORD}");
    let renewed = curl(
        &url,
        &["--cacert", pki2.ca().to_str().unwrap(), "-u", &creds],
    );
    assert_eq!(renewed.status, 200, "{}", renewed.stderr);
    let old = curl(&url, &["--cacert", ca, "-u", &creds]);
    assert_ne!(old.code, 0, "the old CA still verifies: {}", old.head);
    // The health check trusts whatever cert_file holds now.
    let r = with(&[
        ("BACKUP_HEALTHCHECK_USER", "healthcheck"),
        (
            "BACKUP_HEALTHCHECK_PASSWORD_FILE",
            pw_file.to_str().unwrap(),
        ),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());

    // No secret in anything the daemon said.
    let log = d.log();
    assert!(log.contains("pgbackup daemon started"), "{log}");
    assert!(log.contains("https, basic auth (2 users)"), "{log}");
    assert!(log.contains("TLS certificate reloaded"), "{log}");
    let key_pem = std::fs::read_to_string(&key).unwrap();
    for secret in [
        SCRAPE_PASSWORD,
        PROBE_PASSWORD,
        &scrape_hash,
        &probe_hash,
        key_pem.lines().nth(1).unwrap(),
    ] {
        assert!(!log.contains(secret), "the log holds a secret:\n{log}");
    }
    drop(d.proc);
}

#[test]
fn client_certificates_from_the_ca_are_required_when_configured() {
    let pki = Pki::new("web-mtls");
    let (cert, key) = pki.issue("server", true);
    let (client_cert, client_key) = pki.issue("client", false);
    let stranger = Pki::new("web-stranger");
    let (s_cert, s_key) = stranger.issue("stranger", false);
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n\
         \x20 client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n\
         \x20 min_version: TLS12\n",
        cert.display(),
        key.display(),
        pki.ca().display()
    );
    let d = start_daemon(&web);
    let url = format!("https://{}/metrics", d.addr);
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();

    let none = curl(&url, &["--cacert", ca]);
    assert_ne!(none.code, 0, "no client certificate, yet: {}", none.head);
    assert_eq!(none.status, 0, "no HTTP answer without a certificate");
    let wrong_ca = curl(
        &url,
        &[
            "--cacert",
            ca,
            "--cert",
            s_cert.to_str().unwrap(),
            "--key",
            s_key.to_str().unwrap(),
        ],
    );
    assert_eq!(wrong_ca.status, 0, "a certificate of another CA passed");
    let good = curl(
        &url,
        &[
            "--cacert",
            ca,
            "--cert",
            client_cert.to_str().unwrap(),
            "--key",
            client_key.to_str().unwrap(),
        ],
    );
    assert_eq!(good.status, 200, "{}", good.stderr);

    let web_file = d.log.with_file_name("web.yml");
    let base = [
        ("BACKUP_LISTEN_ADDRESS", d.addr.as_str()),
        ("BACKUP_WEB_CONFIG_FILE", web_file.to_str().unwrap()),
    ];
    let mut env = base.to_vec();
    env.push((
        "BACKUP_HEALTHCHECK_CERT_FILE",
        client_cert.to_str().unwrap(),
    ));
    env.push(("BACKUP_HEALTHCHECK_KEY_FILE", client_key.to_str().unwrap()));
    let r = healthcheck(&env);
    assert_eq!(r.code, 0, "{}", r.all());
    unhealthy(&healthcheck(&base), "BACKUP_HEALTHCHECK_CERT_FILE");
    // A certificate the server does not trust fails the handshake.
    let mut env = base.to_vec();
    env.push(("BACKUP_HEALTHCHECK_CERT_FILE", s_cert.to_str().unwrap()));
    env.push(("BACKUP_HEALTHCHECK_KEY_FILE", s_key.to_str().unwrap()));
    let r = healthcheck(&env);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(!d.log().contains("PRIVATE KEY"), "{}", d.log());
}

#[test]
fn a_bad_web_config_stops_start_up_with_exit_2_naming_the_variable() {
    let pki = Pki::new("web-bad");
    let (cert, key) = pki.issue("server", true);
    let (_, hash) = htpasswd("alice", "alice-pa55");
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let key_line = key_pem.lines().nth(1).unwrap().to_string();
    let tls = |c: &Path, k: &Path| {
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            c.display(),
            k.display()
        )
    };
    let dir = temp_dir("web-bad-files");
    let cases: Vec<(String, String, &str)> = vec![
        (
            "unknown key".into(),
            format!(
                "{}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
                tls(&cert, &key)
            ),
            "cipher_suites",
        ),
        (
            "other exporter-toolkit key".into(),
            "http_server_config:\n  http2: false\n".into(),
            "http_server_config",
        ),
        (
            "missing certificate".into(),
            tls(&dir.join("absent.crt"), &key),
            "cert_file",
        ),
        (
            "key in place of the certificate".into(),
            tls(&key, &key),
            "cert_file",
        ),
        (
            "not YAML".into(),
            "tls_server_config: [cert_file\n".into(),
            "line",
        ),
        (
            "truncated hash".into(),
            format!("basic_auth_users:\n  alice: '{}'\n", &hash[..50]),
            "bcrypt",
        ),
    ];
    for (what, content, named) in cases {
        let f = dir.join("web.yml");
        std::fs::write(&f, &content).unwrap();
        let env = vars(&[
            (
                "BACKUP_DATABASE_URL",
                "postgres://app:db-pass-5ecret@127.0.0.1:1/shop",
            ),
            ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
            ("BACKUP_WEB_CONFIG_FILE", f.to_str().unwrap()),
        ]);
        let mut cmd = pgbackup_cmd(&["run"], &env);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        let lines: Vec<_> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: one line: {stderr}");
        assert!(
            lines[0].starts_with("error: invalid BACKUP_WEB_CONFIG_FILE: ")
                && lines[0].contains(named),
            "{what}: {stderr}"
        );
        for secret in [&hash[7..], &hash[..50], &key_line, "db-pass-5ecret"] {
            assert!(!stderr.contains(secret), "{what}: a secret in {stderr}");
        }
    }
    // An unreadable file: exit 2 as well.
    let env = vars(&[
        ("BACKUP_DATABASE_URL", "postgres://app@127.0.0.1:1/shop"),
        ("BACKUP_LOCAL_DIR", dir.to_str().unwrap()),
        ("BACKUP_WEB_CONFIG_FILE", "/nonexistent/web.yml"),
    ]);
    let r = pgbackup(&["run"], &env);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains("invalid BACKUP_WEB_CONFIG_FILE: cannot read \"/nonexistent/web.yml\": "),
        "{}",
        r.stderr
    );
}

/// A one-request HTTP server answering `status_line`.
fn fake_server(status_line: &'static str) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(s, "{status_line}\r\nContent-Length: 0\r\n\r\n");
        }
    });
    addr
}

#[test]
fn healthcheck_exits_0_on_200_and_1_otherwise() {
    let ok = fake_server("HTTP/1.1 200 OK");
    let r = healthcheck(&[("BACKUP_LISTEN_ADDRESS", &ok)]);
    assert_eq!(r.code, 0, "{}", r.all());
    let down = fake_server("HTTP/1.1 503 Service Unavailable");
    unhealthy(&healthcheck(&[("BACKUP_LISTEN_ADDRESS", &down)]), "503");
    // The default address, 0.0.0.0, is probed on the loopback address.
    let port = down.rsplit(':').next().unwrap();
    unhealthy(
        &healthcheck(&[("BACKUP_LISTEN_ADDRESS", &format!("0.0.0.0:{port}"))]),
        &format!("http://127.0.0.1:{port}/healthz: answered HTTP/1.1 503"),
    );
    let nothing = format!("127.0.0.1:{}", free_port());
    unhealthy(
        &healthcheck(&[("BACKUP_LISTEN_ADDRESS", &nothing)]),
        "cannot connect",
    );
    // With TLS configured and nothing listening: still 1.
    let pki = Pki::new("web-hc");
    let (cert, key) = pki.issue("server", true);
    let dir = temp_dir("web-hc");
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let r = healthcheck(&[
        ("BACKUP_LISTEN_ADDRESS", &nothing),
        (
            "BACKUP_WEB_CONFIG_FILE",
            dir.join("web.yml").to_str().unwrap(),
        ),
    ]);
    unhealthy(&r, &format!("https://{nothing}/healthz: cannot connect"));
    // A plain HTTP server where TLS is expected is not healthy.
    let r = healthcheck(&[
        ("BACKUP_LISTEN_ADDRESS", &ok),
        (
            "BACKUP_WEB_CONFIG_FILE",
            dir.join("web.yml").to_str().unwrap(),
        ),
    ]);
    unhealthy(&r, "TLS handshake failed");
    // A bad configuration is exit 1 too, never Docker's reserved 2.
    let r = healthcheck(&[("BACKUP_WEB_CONFIG_FILE", "/nonexistent/web.yml")]);
    unhealthy(&r, "BACKUP_WEB_CONFIG_FILE");
}
