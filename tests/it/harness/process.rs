//! Child processes and temp directories: services that die with the test
//! process, the atexit cleanup, short-lived children (`Guard`) and /proc
//! walkers for the process tree.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::random_hex;

const TMP_PREFIX: &str = "pgbackup-it-";

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
        // SAFETY: kill(2) takes only integers; the child is not reaped yet, so its pid is its own.
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
        // SAFETY: registers a plain `extern "C" fn()` that lives as long as the program.
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
        // SAFETY: kill(2) with signal 0 only checks that the pid exists; no memory is involved.
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
pub fn spawn_service(mut cmd: Command, stop_signal: i32) -> u32 {
    init_cleanup();
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnReq>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnReq>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                // SAFETY: between fork and exec the hook only calls prctl(2), async-signal-safe.
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
pub(super) fn reap(pid: u32) -> bool {
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

pub(super) fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
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
        // SAFETY: kill(2) takes only integers; no memory is shared with the callee.
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
