//! Real services for the integration tests: PostgreSQL (Debian's binaries,
//! initdb into a temp dir) and Garage (a real S3-compatible store), each
//! started once per test binary on free loopback ports. Every test gets its
//! own database and bucket.
//!
//! Cleanup: services run as children with PR_SET_PDEATHSIG, spawned from one
//! long-lived thread (the signal follows the spawning *thread*), so they die
//! with the test process however it ends; an atexit hook stops them and
//! removes their directories on a normal exit, and directories left by a
//! killed run are swept at the next start.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const TMP_PREFIX: &str = "pgbackup-it-";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// A unique lower-case name for a database or bucket.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", random_hex(5))
}

// ---- process and directory cleanup ----------------------------------------

struct Cleanup {
    children: Vec<(Child, i32)>,
    dirs: Vec<PathBuf>,
}

static CLEANUP: Mutex<Cleanup> = Mutex::new(Cleanup {
    children: Vec::new(),
    dirs: Vec::new(),
});

extern "C" fn cleanup_at_exit() {
    let Ok(mut c) = CLEANUP.lock() else { return };
    for (child, sig) in c.children.iter_mut() {
        unsafe { libc::kill(child.id() as i32, *sig) };
    }
    for (child, _) in c.children.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    for d in c.dirs.drain(..) {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn init_cleanup() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        unsafe { libc::atexit(cleanup_at_exit) };
        sweep_stale_dirs();
    });
}

/// Removes directories of earlier runs whose process is gone.
fn sweep_stale_dirs() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(TMP_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if unsafe { libc::kill(pid, 0) } != 0 {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A temp dir removed when the test process exits.
pub fn temp_dir(what: &str) -> PathBuf {
    init_cleanup();
    let d = std::env::temp_dir().join(format!(
        "{TMP_PREFIX}{}-{what}-{}",
        std::process::id(),
        random_hex(4)
    ));
    std::fs::create_dir_all(&d).unwrap();
    CLEANUP.lock().unwrap().dirs.push(d.clone());
    d
}

type SpawnReq = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns a long-lived service that dies with this process; `stop_signal`
/// is what the atexit hook sends for a clean stop.
fn spawn_service(mut cmd: Command, stop_signal: i32) -> u32 {
    init_cleanup();
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnReq>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnReq>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    });
    let (rtx, rrx) = mpsc::channel();
    cmd.stdin(Stdio::null());
    tx.lock().unwrap().send((cmd, rtx)).unwrap();
    let child = rrx.recv().unwrap().expect("spawning a service");
    let pid = child.id();
    CLEANUP.lock().unwrap().children.push((child, stop_signal));
    pid
}

/// Reaps a service that exited; true once it is gone.
fn reap(pid: u32) -> bool {
    let mut c = CLEANUP.lock().unwrap();
    match c.children.iter_mut().position(|(ch, _)| ch.id() == pid) {
        None => true,
        Some(i) => match c.children[i].0.try_wait() {
            Ok(Some(_)) => {
                c.children.remove(i);
                true
            }
            _ => false,
        },
    }
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- PostgreSQL ------------------------------------------------------------

pub struct Postgres {
    pub port: u16,
    pub bin: PathBuf,
    pub sock: PathBuf,
    pub data: PathBuf,
    pub password: String,
    pub pid: u32,
}

const PG_MAJOR: u32 = 15;

pub fn pg() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(Postgres::start)
}

fn postgres_ids() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root but there is no `postgres` user: apt-get install postgresql-15"
    );
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn as_postgres(cmd: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = postgres_ids() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

impl Postgres {
    fn start() -> Postgres {
        let bin = PathBuf::from(format!("/usr/lib/postgresql/{PG_MAJOR}/bin"));
        assert!(
            bin.join("postgres").exists(),
            "PostgreSQL {PG_MAJOR} server not found in {}: apt-get install postgresql-{PG_MAJOR}",
            bin.display()
        );
        let dir = temp_dir("pg");
        let (data, sock) = (dir.join("data"), dir.join("sock"));
        std::fs::create_dir_all(&sock).unwrap();
        if let Some((uid, gid)) = postgres_ids() {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&sock, Some(uid), Some(gid)).unwrap();
        }
        let password = random_hex(12);
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, &password).unwrap();
        if let Some((uid, gid)) = postgres_ids() {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        run_ok(
            as_postgres(&mut Command::new(bin.join("initdb")))
                .args(["-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"])
                .args([
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--no-sync",
                    "--no-instructions",
                ])
                .arg(format!("--pwfile={}", pwfile.display()))
                .arg("-D")
                .arg(&data),
        );
        let mut pg = Postgres {
            port: free_port(),
            bin,
            sock,
            data,
            password,
            pid: 0,
        };
        pg.run_server();
        pg
    }

    /// A cluster of its own, for a test that stops and restarts it.
    pub fn start_dedicated() -> Postgres {
        Postgres::start()
    }

    fn run_server(&mut self) {
        let mut cmd = Command::new(self.bin.join("postgres"));
        as_postgres(&mut cmd)
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.sock)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200", "-c", "logging_collector=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SIGINT: fast shutdown.
        self.pid = spawn_service(cmd, libc::SIGINT);
        wait_until(
            "PostgreSQL to accept connections",
            Duration::from_secs(30),
            || {
                Command::new(self.bin.join("pg_isready"))
                    .arg("-h")
                    .arg(&self.sock)
                    .args(["-p", &self.port.to_string()])
                    .stdout(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            },
        );
    }

    /// Immediate shutdown (SIGQUIT), as a crash or `pg_ctl -m immediate` would.
    pub fn kill_server(&self) {
        unsafe { libc::kill(self.pid as i32, libc::SIGQUIT) };
        wait_until("PostgreSQL to stop", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() && reap(self.pid)
        });
    }

    pub fn restart_server(&mut self) {
        self.run_server();
    }

    /// Turns TLS on with this server certificate and key, and refuses
    /// connections over TCP that do not use it.
    pub fn require_tls(&self, cert: &Path, key: &Path) {
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            let dest = self.data.join(to);
            std::fs::copy(from, &dest).unwrap();
            std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if let Some((uid, gid)) = postgres_ids() {
                std::os::unix::fs::chown(&dest, Some(uid), Some(gid)).unwrap();
            }
        }
        let hba = self.data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(&hba, format!("hostnossl all all 0.0.0.0/0 reject\n{old}")).unwrap();
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        self.psql("postgres", "SELECT pg_reload_conf()");
        // The reload is asynchronous: wait until a new session sees it.
        wait_until("TLS to be on", Duration::from_secs(10), || {
            self.psql("postgres", "SHOW ssl").trim() == "on"
        });
    }

    /// A client tool of this server's version, connected as the superuser
    /// over the socket.
    pub fn tool_cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        c.arg("-h")
            .arg(&self.sock)
            .args(["-p", &self.port.to_string(), "-U", "postgres"]);
        c
    }

    /// Runs SQL as the superuser over the socket; returns unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        run_ok(self.psql_cmd(db).args(["-c", sql]))
    }

    pub fn psql_cmd(&self, db: &str) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.arg("-h")
            .arg(&self.sock)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-X",
                "-q",
                "-At",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-d", db]);
        c
    }

    pub fn create_db(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// A fresh database of its own for one test.
    pub fn fresh_db(&self, prefix: &str) -> String {
        let name = unique(prefix).replace('-', "_");
        self.create_db(&name);
        name
    }

    /// postgres:// URL over TCP with the superuser's password.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// Every table's rows, sorted, as text: what a restore must reproduce.
    pub fn snapshot(&self, db: &str) -> Vec<(String, String)> {
        let tables = self.psql(
            db,
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog','information_schema') ORDER BY 1",
        );
        tables
            .lines()
            .map(|t| {
                let rows = self.psql(db, &format!("SELECT x::text FROM {t} x ORDER BY 1"));
                (t.to_string(), rows)
            })
            .collect()
    }
}

/// Fills a database with what a round trip must carry: several schemas,
/// non-ASCII identifiers, a view, and `bulk_rows` of poorly compressible rows.
pub fn load_fixture(pg: &Postgres, db: &str, bulk_rows: u64) {
    pg.psql(
        db,
        &format!(
            r#"
            CREATE SCHEMA sales;
            CREATE SCHEMA "inventário";
            CREATE TABLE sales.customers (id int PRIMARY KEY, name text NOT NULL, meta jsonb);
            INSERT INTO sales.customers VALUES
              (1, 'Zoë Ångström', '{{"tier": "gold"}}'), (2, 'Ødegaard', NULL), (3, '山田太郎', '{{"tags": ["a","b"]}}');
            CREATE TABLE "inventário"."peças" ("código" text PRIMARY KEY, "quantidade" int, "preço" numeric(10,2));
            INSERT INTO "inventário"."peças" VALUES ('açúcar', 10, 1.50), ('ñandú', 0, 99.99);
            CREATE TABLE public.bulk (id bigint PRIMARY KEY, payload text);
            INSERT INTO public.bulk SELECT g, md5(g::text) || md5((g * 7)::text)
              FROM generate_series(1, {bulk_rows}) g;
            CREATE VIEW sales."vip_clientes" AS SELECT id, name FROM sales.customers WHERE meta->>'tier' = 'gold';
            "#
        ),
    );
}

// ---- Garage (S3) -----------------------------------------------------------

pub struct Garage {
    pub port: u16,
    pub config: PathBuf,
    pub key_id: String,
    pub secret: String,
    pub pid: u32,
}

pub fn garage() -> &'static Garage {
    static G: OnceLock<Garage> = OnceLock::new();
    G.get_or_init(Garage::start)
}

fn garage_bin() -> PathBuf {
    let candidates = [
        std::env::var_os("GARAGE_BIN").map(PathBuf::from),
        std::env::var_os("CARGO_HOME").map(|h| PathBuf::from(h).join("bin/garage")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/garage")),
        Some(PathBuf::from("/usr/local/bin/garage")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .expect(
            "garage not found: cargo install --locked garage --version 2.5.0 (or set GARAGE_BIN)",
        )
}

impl Garage {
    fn start() -> Garage {
        let bin = garage_bin();
        let dir = temp_dir("garage");
        let (s3, rpc) = (free_port(), free_port());
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
"#,
                d = dir.display(),
                secret = random_hex(32)
            ),
        )
        .unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("garage.log")).unwrap());
        let pid = spawn_service(cmd, libc::SIGTERM);
        let g = Garage {
            port: s3,
            config,
            key_id: format!("GK{}", random_hex(12)),
            secret: random_hex(32),
            pid,
        };
        let mut node = String::new();
        wait_until("garage to answer", Duration::from_secs(30), || {
            match g.cli_output(&["node", "id", "-q"]) {
                Some(out) => {
                    node = out.trim().split('@').next().unwrap_or("").to_string();
                    !node.is_empty()
                }
                None => false,
            }
        });
        // Right after start the node may not accept layout changes yet.
        for step in [
            vec!["layout", "assign", "-z", "dc1", "-c", "1G", &node],
            vec!["layout", "apply", "--version", "1"],
            vec![
                "key", "import", "--yes", "-n", "tests", &g.key_id, &g.secret,
            ],
        ] {
            let mut last = None;
            for _ in 0..50 {
                match g.cli_result(&step) {
                    Ok(_) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            if let Some(e) = last {
                panic!("garage {step:?} failed: {e}");
            }
        }
        wait_until("garage S3 port", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", s3)).is_ok()
        });
        g
    }

    fn cli_output(&self, args: &[&str]) -> Option<String> {
        let out: Output = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn cli_result(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        run_ok(
            Command::new(garage_bin())
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .env("RUST_LOG", "warn"),
        )
    }

    /// A fresh bucket the test key owns.
    pub fn bucket(&self, prefix: &str) -> String {
        let name = unique(prefix);
        self.cli(&["bucket", "create", &name]);
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &name,
            "--key",
            &self.key_id,
        ]);
        name
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The variables pgbackup needs to use `bucket`.
    pub fn env(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("AWS_S3_BUCKET", bucket.to_string()),
            ("AWS_S3_ENDPOINT", self.endpoint()),
            ("AWS_S3_REGION", "garage".to_string()),
            ("AWS_S3_FORCE_PATH_STYLE", "true".to_string()),
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// An S3 client of the test's own: an independent reader of what pgbackup wrote.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let creds =
            aws_sdk_s3::config::Credentials::new(&self.key_id, &self.secret, None, None, "tests");
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("garage"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(creds)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Every key in the bucket.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        rt().block_on(async {
            let out = self
                .client()
                .list_objects_v2()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(String::from))
                .collect()
        })
    }

    /// The backups in the bucket, without their `.manifest.json` companions;
    /// asserts that every backup has its manifest.
    pub fn backup_keys(&self, bucket: &str) -> Vec<String> {
        let all = self.keys(bucket);
        let backups: Vec<String> = all
            .iter()
            .filter(|k| !k.ends_with(".manifest.json"))
            .cloned()
            .collect();
        for b in &backups {
            let m = format!("{b}.manifest.json");
            assert!(all.contains(&m), "{b} has no manifest: {all:?}");
        }
        backups
    }

    /// Multipart uploads still open in the bucket.
    pub fn pending_uploads(&self, bucket: &str) -> usize {
        rt().block_on(async {
            let out = self
                .client()
                .list_multipart_uploads()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
            out.uploads().len()
        })
    }

    pub fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> (Vec<u8>, std::collections::HashMap<String, String>) {
        rt().block_on(async {
            let out = self
                .client()
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            let meta = out.metadata().cloned().unwrap_or_default();
            let body = out.body.collect().await.unwrap().into_bytes().to_vec();
            (body, meta)
        })
    }
}

pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

// ---- running pgbackup ------------------------------------------------------

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// The binary with exactly `env` (plus PATH): nothing leaks in from the shell.
pub fn pgbackup_cmd(args: &[&str], env: &[(String, String)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgbackup"));
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    c
}

pub fn pgbackup(args: &[&str], env: &[(String, String)]) -> Run {
    let out = pgbackup_cmd(args, env).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Decompresses with the standard command-line tools, not our code.
pub fn decompress_cli(data: &[u8], key: &str) -> Vec<u8> {
    let tool: &[&str] = if key.ends_with(".zst") {
        &["zstd", "-dc"]
    } else if key.ends_with(".gz") {
        &["gzip", "-dc"]
    } else {
        return data.to_vec();
    };
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (apt-get install zstd gzip)", tool[0]));
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let w = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&data).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    assert!(out.status.success(), "{} failed", tool[0]);
    out.stdout
}

/// Restores a raw (decompressed) dump into `db` with the standard tools.
pub fn restore_cli(pg: &Postgres, db: &str, dump: &[u8], plain: bool) {
    let mut cmd = if plain {
        let mut c = pg.psql_cmd(db);
        c.arg("--single-transaction");
        c
    } else {
        let mut c = pg.tool_cmd("pg_restore");
        c.args(["--exit-on-error", "-d", db]);
        c
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = dump.to_vec();
    let w = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn path_has(p: &Path, s: &str) -> bool {
    std::fs::read_to_string(p)
        .map(|c| c.contains(s))
        .unwrap_or(false)
}

pub fn make_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A PG_BIN_DIR whose pg_dump is `script` (sh), with the real tools beside it.
pub fn fake_pg_dump(pg: &Postgres, script: &str) -> PathBuf {
    let bin = temp_dir("fakebin");
    for tool in ["pg_restore", "psql"] {
        std::os::unix::fs::symlink(pg.bin.join(tool), bin.join(tool)).unwrap();
    }
    let body = format!(
        "#!/bin/bash\nset -o pipefail\nREAL={}\nif [ \"$1\" = --version ]; then exec $REAL --version; fi\n{script}\n",
        pg.bin.join("pg_dump").display()
    );
    std::fs::write(bin.join("pg_dump"), body).unwrap();
    make_executable(&bin.join("pg_dump"));
    bin
}

// ---- HTTP and child processes for daemon tests ------------------------------

/// A minimal HTTP/1.1 client (Connection: close): status, headers, body.
pub fn http(method: &str, addr: &str, path: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
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

/// A child that is killed (and reaped) when the test ends, pass or fail.
pub struct Guard(pub Option<Child>);

impl Guard {
    pub fn spawn(cmd: &mut Command) -> Guard {
        Guard(Some(
            cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
        ))
    }
    pub fn pid(&self) -> i32 {
        self.0.as_ref().unwrap().id() as i32
    }
    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid(), sig) };
    }
    /// Waits for exit; returns the code, or None on timeout.
    pub fn wait_timeout(&mut self, t: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + t;
        let child = self.0.as_mut().unwrap();
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Every process as (pid, state, ppid, pgrp), from /proc/<pid>/stat.
fn processes() -> Vec<(i32, String, i32, i32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // Fields after the ")" of the command: state, ppid, pgrp.
        let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("").to_string();
        let mut num = || f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let (ppid, pgrp) = (num(), num());
        out.push((p, state, ppid, pgrp));
    }
    out
}

/// Processes whose parent is `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, _, ppid, _)| *ppid == pid)
        .map(|(p, ..)| p)
        .collect()
}

/// Live (not zombie) processes in process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, state, _, pgrp)| *pgrp == pgid && state != "Z")
        .map(|(p, ..)| p)
        .collect()
}
