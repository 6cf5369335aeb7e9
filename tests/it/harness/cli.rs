//! Running pgbackup and the standard command-line tools beside it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::postgres::Postgres;
use super::process::temp_dir;

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

/// Runs `cmd` with `input` on its stdin; its stdout. Fails the test, with
/// the tool's stderr, when it does not exit 0.
pub fn pipe(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/setup installs the tools)"));
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    // Fed from a thread: a tool that writes while it reads would otherwise
    // fill its stdout pipe and stall.
    let w = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
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
    pipe(Command::new(tool[0]).args(&tool[1..]), data)
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
