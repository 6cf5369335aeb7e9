//! PostgreSQL: one shared cluster (Debian's binaries, initdb into a temp
//! dir) or dedicated ones, and the standard client tools.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::process::{reap, run_ok, spawn_service, temp_dir, wait_until};
use super::{free_port, random_hex, unique};

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
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: `name` is a NUL-terminated C string that outlives the call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root but there is no `postgres` user: apt-get install postgresql-15"
    );
    // SAFETY: `pw` is non-null (asserted), getpwnam's entry; read at once.
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
        // SAFETY: kill(2) takes only integers; the server is not reaped yet, so the pid is its own.
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

    /// Whether database `name` exists on this cluster.
    pub fn db_exists(&self, name: &str) -> bool {
        self.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
        )
        .trim()
            == "1"
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

/// Whether database `name` exists on the shared cluster.
pub fn db_exists(name: &str) -> bool {
    pg().db_exists(name)
}

/// A database name of a test's own that does not exist yet.
pub fn new_db_name(prefix: &str) -> String {
    unique(prefix).replace('-', "_")
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
    super::cli::pipe(&mut cmd, dump);
}
