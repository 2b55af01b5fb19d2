//! A small HTTP/1.1 server on 127.0.0.1 for the network tests: it answers a fixed set of paths,
//! records every request it gets, and stops (closing every connection it holds) when dropped.
//!
//! Paths:
//!
//! - `/ok`: 200, body `hello from the test server`;
//! - `/status/<code>`: that status, body `status <code>`;
//! - `/json`: 200, `{"status":"ok","build":{"version":"v2"}}`;
//! - `/bytes/<n>`: 200 with `n` bytes of `x` (written in chunks, with a Content-Length);
//! - `/flaky/<n>`: 503 for the first `n` requests to it, then 200 `ready`;
//! - `/silent`: reads the request and never answers (until the server is dropped);
//! - `/echo`: 200 with the request body;
//! - `/stall`: 200 announcing 1 MiB, sends 1 KiB of it, then waits for the client to close the
//!   connection (recorded, see [`TestServer::closed`]);
//! - `/await-closed/<path>`: 200 `closed` once a `<path>` connection was closed by the client,
//!   504 if none was within 60 s (a bound, not a synchronisation: a passing run never waits it);
//! - `/endless-head`: a status line, then 1 KiB header lines until the client goes away;
//! - `/headers/<n>`: 200 with `n` headers and an empty body;
//! - anything else: 404.
//!
//! Nothing here sleeps: a silent request waits on a channel that dropping the server closes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    counts: Mutex<HashMap<String, usize>>,
    stopping: AtomicBool,
    /// Connections being served, shut down on drop so that no thread outlives the server.
    open: Mutex<Vec<TcpStream>>,
    /// Paths whose connection the client closed while the server was stalling on it.
    closed: Mutex<Vec<String>>,
    closed_changed: Condvar,
}

pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropped with the server: every silent request then returns.
    _release: mpsc::Sender<()>,
    accept: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut workers = Vec::new();
                for stream in listener.incoming() {
                    if shared.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(clone) = stream.try_clone() {
                        shared.open.lock().unwrap().push(clone);
                    }
                    let shared = shared.clone();
                    let released = released.clone();
                    workers.push(std::thread::spawn(move || {
                        serve(stream, &shared, &released);
                    }));
                }
                for worker in workers {
                    let _ = worker.join();
                }
            })
        };
        TestServer {
            addr,
            shared,
            _release: release,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }

    /// The origin to grant: `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        self.url("")
    }

    /// Every request seen so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The stalled paths (`/stall`) whose connection the client has closed, in order.
    pub fn closed(&self) -> Vec<String> {
        self.shared.closed.lock().unwrap().clone()
    }

    /// The requests seen for `path`.
    pub fn seen_for(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for stream in self.shared.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        // Wake the accept loop so it sees `stopping`.
        let _ = TcpStream::connect(self.addr);
        // `_release` is dropped after this body: silent requests are waiting on it, so close
        // the channel by swapping in a fresh sender first.
        let (fresh, _) = mpsc::channel();
        drop(std::mem::replace(&mut self._release, fresh));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve(stream: TcpStream, shared: &Shared, released: &Mutex<mpsc::Receiver<()>>) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    // Keep-alive: one connection may carry several requests.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let body = if chunked {
            match read_chunked(&mut reader) {
                Some(body) => body,
                None => return,
            }
        } else {
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            body
        };
        let count = {
            let mut counts = shared.counts.lock().unwrap();
            let n = counts.entry(path.clone()).or_insert(0);
            *n += 1;
            *n
        };
        shared.seen.lock().unwrap().push(Seen {
            method,
            path: path.clone(),
            headers,
            body_len: body.len(),
        });
        let ok = match path.as_str() {
            "/ok" => respond(&mut writer, 200, b"hello from the test server"),
            "/json" => respond(
                &mut writer,
                200,
                br#"{"status":"ok","build":{"version":"v2"}}"#,
            ),
            "/echo" => respond(&mut writer, 200, &body),
            "/silent" => {
                // Until the server is dropped.
                let _ = released.lock().unwrap().recv();
                return;
            }
            "/stall" => {
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n";
                if writer.write_all(head.as_bytes()).is_err()
                    || writer.write_all(&[b's'; 1024]).is_err()
                    || writer.flush().is_err()
                {
                    return;
                }
                // Until the client closes (or the server is dropped, which shuts it down).
                let mut rest = [0u8; 1024];
                while matches!(reader.read(&mut rest), Ok(n) if n > 0) {}
                if !shared.stopping.load(Ordering::SeqCst) {
                    shared.closed.lock().unwrap().push(path.clone());
                    shared.closed_changed.notify_all();
                }
                return;
            }
            p if p.starts_with("/await-closed/") => {
                let want = &p["/await-closed".len()..];
                let closed = shared.closed.lock().unwrap();
                let (closed, _) = shared
                    .closed_changed
                    .wait_timeout_while(closed, Duration::from_secs(60), |c| {
                        !c.iter().any(|p| p == want)
                    })
                    .unwrap();
                let done = closed.iter().any(|p| p == want);
                drop(closed);
                if done {
                    respond(&mut writer, 200, b"closed")
                } else {
                    respond(&mut writer, 504, b"still open")
                }
            }
            "/endless-head" => {
                let line = format!("x-pad: {}\r\n", "h".repeat(1024));
                let _ = writer.write_all(b"HTTP/1.1 200 OK\r\n");
                while writer.write_all(line.as_bytes()).is_ok() {}
                return;
            }
            p if p.starts_with("/headers/") => {
                let n: usize = p["/headers/".len()..].parse().unwrap_or(0);
                let mut head = String::from("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n");
                for i in 0..n {
                    head.push_str(&format!("x-h{i}: v\r\n"));
                }
                head.push_str("\r\n");
                writer.write_all(head.as_bytes()).is_ok() && writer.flush().is_ok()
            }
            p if p.starts_with("/status/") => {
                let code: u16 = p["/status/".len()..].parse().unwrap_or(500);
                respond(&mut writer, code, format!("status {code}").as_bytes())
            }
            p if p.starts_with("/flaky/") => {
                let failures: usize = p["/flaky/".len()..].parse().unwrap_or(0);
                if count <= failures {
                    respond(&mut writer, 503, b"not yet")
                } else {
                    respond(&mut writer, 200, b"ready")
                }
            }
            p if p.starts_with("/bytes/") => {
                let n: usize = p["/bytes/".len()..].parse().unwrap_or(0);
                stream_bytes(&mut writer, n)
            }
            _ => respond(&mut writer, 404, b"not found"),
        };
        if !ok {
            return;
        }
    }
}

/// A chunked request body; `None` when the connection ends inside it.
fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).ok()? == 0 {
            return None;
        }
        let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

fn respond(w: &mut TcpStream, status: u16, body: &[u8]) -> bool {
    let head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n",
        reason(status),
        body.len()
    );
    w.write_all(head.as_bytes()).is_ok() && w.write_all(body).is_ok() && w.flush().is_ok()
}

fn stream_bytes(w: &mut TcpStream, n: usize) -> bool {
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n");
    if w.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let chunk = vec![b'x'; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let take = left.min(chunk.len());
        // The client may stop reading (a body over its cap): that ends this response.
        if w.write_all(&chunk[..take]).is_err() {
            return false;
        }
        left -= take;
    }
    w.flush().is_ok()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A project whose one phase, `rollout`, runs `plugin` with `config` (TOML inline-table
/// contents) and a `net` grant of `net`; `phase_extra` is added to the phase's table
/// (`timeout = "1s"`).
pub fn net_project(
    plugin: &std::path::Path,
    config: &str,
    net: &[String],
    phase_extra: &str,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let net: Vec<String> = net.iter().map(|n| format!("{n:?}")).collect();
    std::fs::write(
        dir.path().join("stagecraft.toml"),
        format!(
            "[environments.prod]\n[pipeline]\nphases = [\"rollout\"]\n\
             [phases.rollout]\nplugin = {:?}\nconfig = {{ {config} }}\n{phase_extra}\n\
             [phases.rollout.grants]\nnet = [{}]\n",
            plugin.to_str().unwrap(),
            net.join(", ")
        ),
    )
    .unwrap();
    dir
}

/// `stagecraft deploy --env prod --version v1` in `dir`.
pub fn deploy_v1(dir: &std::path::Path) -> crate::Run {
    crate::run(dir, &["deploy", "--env", "prod", "--version", "v1"])
}

/// The `rollout` phase of the newest release of `prod` in `dir`, as `releases list --json`
/// prints it.
pub fn rollout_phase(dir: &std::path::Path) -> serde_json::Value {
    let out = crate::run(dir, &["releases", "list", "--env", "prod", "--json"]);
    let releases: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    releases[0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rollout")
        .unwrap()
        .clone()
}
