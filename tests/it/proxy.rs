//! A small TCP proxy between pgbackup and Garage that injects faults:
//! cut every connection (the store went away), reset connections after some
//! bytes, or add latency. It can also record what clients send, to check
//! the requests themselves (headers a store might not enforce). Threads
//! only; it stops when dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Faults {
    /// Refuse (accept and reset) every new connection.
    down: AtomicBool,
    /// Reset this many upcoming connections after `reset_after` bytes upstream.
    resets_left: AtomicUsize,
    reset_after: AtomicU64,
    /// Delay per forwarded chunk, in milliseconds.
    delay_ms: AtomicU64,
    /// Go down once this many bytes went upstream in total (0: never).
    cut_at: AtomicU64,
    upstream: AtomicU64,
    /// Connections reset so far (so a test can show a fault really happened).
    resets_done: AtomicUsize,
    /// Record the bytes each new connection sends upstream.
    record: AtomicBool,
    recorded: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
}

/// One HTTP/1.1 request as a client sent it.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits one connection's bytes into requests (Content-Length bodies only;
/// a chunked body fails the test, since nothing here should send one).
fn parse_requests(mut data: &[u8]) -> Vec<Request> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&data[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let target = first.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        assert!(
            !headers
                .iter()
                .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
            "a chunked request: {head}"
        );
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let body_end = (end + 4 + len).min(data.len());
        let body = data[end + 4..body_end].to_vec();
        out.push(Request {
            method,
            target,
            headers,
            body,
        });
        data = &data[body_end..];
    }
    out
}

pub struct Proxy {
    pub port: u16,
    faults: Arc<Faults>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (f, l, s) = (faults.clone(), live.clone(), stop.clone());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                if f.down.load(Ordering::SeqCst) {
                    reset(&client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    reset(&client);
                    continue;
                };
                let budget = if f.resets_left.load(Ordering::SeqCst) > 0 {
                    f.resets_left.fetch_sub(1, Ordering::SeqCst);
                    Some(f.reset_after.load(Ordering::SeqCst))
                } else {
                    None
                };
                l.lock().unwrap().push(client.try_clone().unwrap());
                let record = f.record.load(Ordering::SeqCst).then(|| {
                    let r: Arc<Mutex<Vec<u8>>> = Arc::default();
                    f.recorded.lock().unwrap().push(r.clone());
                    r
                });
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    f.clone(),
                    budget,
                    true,
                    record,
                );
                pipe(server, client, f.clone(), None, false, None);
            }
        });
        Proxy {
            port,
            faults,
            live,
            stop,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The store goes away now: open connections are reset and new ones
    /// refused.
    pub fn down(&self) {
        self.faults.down.store(true, Ordering::SeqCst);
        for c in self.live.lock().unwrap().drain(..) {
            reset(&c);
        }
    }

    /// The store comes back.
    pub fn restore(&self) {
        self.faults.down.store(false, Ordering::SeqCst);
    }

    /// Resets the next `n` connections once `after` bytes went upstream.
    pub fn reset_next(&self, n: usize, after: u64) {
        self.faults.reset_after.store(after, Ordering::SeqCst);
        self.faults.resets_left.store(n, Ordering::SeqCst);
    }

    /// The store goes away by itself once `bytes` more went upstream:
    /// mid-upload at a point that does not depend on timing.
    pub fn cut_after(&self, bytes: u64) {
        let now = self.faults.upstream.load(Ordering::SeqCst);
        self.faults.cut_at.store(now + bytes, Ordering::SeqCst);
    }

    pub fn is_down(&self) -> bool {
        self.faults.down.load(Ordering::SeqCst)
    }

    pub fn delay(&self, ms: u64) {
        self.faults.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn resets_done(&self) -> usize {
        self.faults.resets_done.load(Ordering::SeqCst)
    }

    /// Records what connections opened from now on send, forgetting
    /// what was recorded before.
    pub fn record(&self) {
        self.faults.recorded.lock().unwrap().clear();
        self.faults.record.store(true, Ordering::SeqCst);
    }

    /// The requests recorded so far, connection by connection.
    pub fn requests(&self) -> Vec<Request> {
        self.faults
            .recorded
            .lock()
            .unwrap()
            .iter()
            .flat_map(|c| parse_requests(&c.lock().unwrap()))
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.live.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// Closes with RST (SO_LINGER 0), as a crashed peer would.
fn reset(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `s` keeps the fd open; `linger` is a valid libc::linger of the size passed.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
    let _ = s.shutdown(Shutdown::Both);
}

fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    f: Arc<Faults>,
    mut budget: Option<u64>,
    upstream: bool,
    record: Option<Arc<Mutex<Vec<u8>>>>,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if upstream {
                let total = f.upstream.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                let at = f.cut_at.load(Ordering::SeqCst);
                if at > 0 && total >= at {
                    f.cut_at.store(0, Ordering::SeqCst);
                    f.down.store(true, Ordering::SeqCst);
                }
            }
            if f.down.load(Ordering::SeqCst) {
                f.resets_done.fetch_add(1, Ordering::SeqCst);
                reset(&from);
                reset(&to);
                return;
            }
            let d = f.delay_ms.load(Ordering::SeqCst);
            if d > 0 {
                std::thread::sleep(Duration::from_millis(d));
            }
            if let Some(b) = budget.as_mut() {
                if *b <= n as u64 {
                    f.resets_done.fetch_add(1, Ordering::SeqCst);
                    reset(&from);
                    reset(&to);
                    return;
                }
                *b -= n as u64;
            }
            if let Some(r) = &record {
                r.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
