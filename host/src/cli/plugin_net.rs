//! The network scenarios of `stagecraft plugin test --net-url <key>`: a server of the command's
//! own on 127.0.0.1 answers every request `200 {"status":"ok"}`. Every scenario with a config
//! runs with `config.<key>` set to that server's URL and its origin in the phase's `net` grant,
//! and two verdicts are added:
//!
//! - `net-granted`: those scenarios reached the server;
//! - `net-refused`: a second server, on another port, that the grant does not name; the phase
//!   must fail with the host's refusal, which names the grant to add, and that server must not
//!   have been reached.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::plugin::{PhaseFailure, PhaseReport};

/// A server on 127.0.0.1 that answers each request `200 {"status":"ok"}` and counts them;
/// stopped when dropped.
pub struct LocalServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl LocalServer {
    pub fn start() -> anyhow::Result<LocalServer> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| anyhow::anyhow!("starting the test server on 127.0.0.1: {e}"))?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let accept = {
            let (hits, stopping) = (hits.clone(), stopping.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        answer(stream, &hits);
                    }
                }
            })
        };
        Ok(LocalServer {
            addr,
            hits,
            stopping,
            accept: Some(accept),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `stopping`.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Read one request's head and answer it, closing the connection. Requests are answered one at
/// a time on the accept thread: a phase's requests are sequential, and a client that sends
/// nothing is cut off by the read timeout rather than holding the server.
fn answer(stream: TcpStream, hits: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line.trim_end().is_empty() => break,
            Ok(_) => {}
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let body = br#"{"status":"ok"}"#;
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(body);
}

/// `net-granted`: the scenarios, run with the server's origin granted and its URL in the
/// config, reached it (`deploy` is the deploy scenario's outcome).
pub fn judge_granted(server: &LocalServer, deploy: &str) -> (bool, String) {
    match server.hits() {
        0 => (
            false,
            format!(
                "no scenario requested the granted {} (does the plugin read the URL from the \
                 config key given to --net-url?); deploy: {deploy}",
                server.origin()
            ),
        ),
        n => (
            true,
            format!(
                "the scenarios reached the granted {} ({n} requests)",
                server.origin()
            ),
        ),
    }
}

/// `net-refused`: the phase failed with the host's refusal naming the grant to add, and the
/// ungranted server saw nothing.
pub fn judge_refused(
    result: &Result<PhaseReport, PhaseFailure>,
    ungranted: &LocalServer,
    outcome: String,
) -> (bool, String) {
    let origin = ungranted.origin();
    let named = format!("add \"{origin}\"");
    if ungranted.hits() > 0 {
        return (false, format!("reached {origin}, which was not granted"));
    }
    match result {
        Err(PhaseFailure::Guest { message, .. }) if message.contains(&named) => (
            true,
            format!("refused, naming the grant: {}", first_line(message)),
        ),
        Err(failure) if failure.to_string().contains(&named) => (
            true,
            "refused; the plugin's error did not pass the host's reason on, but the phase \
             failed with it"
                .to_string(),
        ),
        Err(_) => (
            false,
            format!(
                "failed, but without the host's reason (it names the grant to add: {named}); \
                 pass the request's error on in the phase error: {outcome}"
            ),
        ),
        Ok(_) => (
            false,
            format!("succeeded although {origin} was not granted: {outcome}"),
        ),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}
