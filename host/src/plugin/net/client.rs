//! `wasi:http/outgoing-handler` for phases: every request a guest sends is checked against the
//! phase's `net` grant and sent by the host itself, so that what the grant promises holds for
//! the address actually connected to.
//!
//! For each request:
//!
//! 1. Its origin (`scheme://host:port`) must be covered by an entry of the grant; otherwise it
//!    is refused, naming the entry that would allow it. An authority with a user in it
//!    (`user@host`) is refused too: wasi:http sends the authority as the `Host` header.
//! 2. The host resolves the name (the guest never does) and keeps only addresses a phase may
//!    reach: public ones, or the address a grant writes literally ([`super::address`]). None
//!    left: refused, naming the address.
//! 3. It connects to a kept address (never the name again, so a second DNS answer cannot
//!    change it), speaks TLS for `https` with the system's trust store (OpenSSL, like the
//!    PostgreSQL client), then HTTP/1.1.
//! 4. Request and response bodies and the response's header section are capped; everything is
//!    bounded by the phase's deadline (and the guest's own shorter timeouts, if it set any).
//!
//! A refusal is the guest's error (`internal-error` carrying the reason, so the plugin can show
//! it), a warning in the phase log, and part of the failure if the phase then fails.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::address::internal_kind;
use super::grant::{NetGrant, Origin, Scheme};
use crate::plugin::limits::{self, LogBudget};
use crate::plugin::types::LogLevel;

/// The most a request body may carry.
pub const MAX_REQUEST_BODY: u64 = 16 * 1024 * 1024;
/// The most a response body may carry; the guest's read fails past it.
pub const MAX_RESPONSE_BODY: u64 = 16 * 1024 * 1024;
/// The most a response's status line and headers may take (hyper's read buffer).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// The most headers a response may have.
pub const MAX_RESPONSE_HEADERS: usize = 128;
/// The most requests of one phase that may be open at once (resolving, connecting, or with a
/// response not yet read to its end): each holds a socket and a task of the host's.
pub const MAX_OPEN_REQUESTS: usize = 32;
/// The most a request's headers may take in the guest (wasi-http's field-size limit).
pub const MAX_REQUEST_FIELDS: usize = 64 * 1024;

/// Names resolved by the user rather than DNS, like curl's `--resolve host:port:address`: the
/// environment variable `STAGECRAFT_RESOLVE` holds entries `host:port:address`, separated by
/// commas. The answer is checked like any DNS answer.
pub const RESOLVE_ENV: &str = "STAGECRAFT_RESOLVE";

/// What one phase's requests are checked against.
pub(crate) struct NetPolicy {
    pub grants: Vec<NetGrant>,
    pub deadline: Instant,
    pub resolve: Vec<Resolved>,
    pub budget: Arc<Mutex<LogBudget>>,
    pub refusals: Arc<Mutex<Vec<String>>>,
}

/// The hooks wasmtime-wasi-http calls; one per store.
pub(crate) struct HttpHooks {
    policy: Arc<NetPolicy>,
    /// Requests open now (see [`MAX_OPEN_REQUESTS`]).
    open: Arc<AtomicUsize>,
}

impl HttpHooks {
    pub fn new(policy: NetPolicy) -> HttpHooks {
        HttpHooks {
            policy: Arc::new(policy),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// One open request's place among [`MAX_OPEN_REQUESTS`], given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Option<Slot> {
        open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < MAX_OPEN_REQUESTS).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One [`RESOLVE_ENV`] entry: host, port, the address to use.
pub type Resolved = (String, u16, IpAddr);

/// [`RESOLVE_ENV`], read once per process.
pub fn resolve_overrides() -> Result<&'static [Resolved], String> {
    static PARSED: OnceLock<Result<Vec<Resolved>, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| match std::env::var(RESOLVE_ENV) {
            Ok(value) => parse_resolve(&value),
            Err(_) => Ok(Vec::new()),
        })
        .as_ref()
        .map(Vec::as_slice)
        .map_err(Clone::clone)
}

/// Parse [`RESOLVE_ENV`]'s value; the error names the bad entry.
pub fn parse_resolve(value: &str) -> Result<Vec<Resolved>, String> {
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || {
            format!(
                "{RESOLVE_ENV}: {entry:?} is not host:port:address (e.g. \
                 registry.example.com:443:127.0.0.1)"
            )
        };
        let mut parts = entry.splitn(3, ':');
        let (Some(host), Some(port), Some(addr)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        out.push((host.to_ascii_lowercase(), port, ip));
    }
    Ok(out)
}

/// The connection's own work, driven beside the response.
type Driver = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendResult = Result<(http::Response<WasiBody>, Driver), Error>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Driver,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        drop(fut);
        let policy = self.policy.clone();
        let Some(slot) = Slot::take(&self.open) else {
            let refused = policy.refuse(format!(
                "this phase already has {MAX_OPEN_REQUESTS} requests open; read or drop a \
                 response before sending more"
            ));
            return Box::new(async move { Err(refused) });
        };
        Box::new(async move { send(&policy, slot, request, options).await })
    }
}

/// The origin a request is for, as the guest wrote it. An authority naming a user
/// (`user@host`) is refused by [`send`]; a port that is not one (`:99999`) is invalid here
/// rather than read as the scheme's default.
fn origin_of(uri: &http::Uri) -> Result<Origin, Error> {
    let scheme = uri
        .scheme_str()
        .and_then(Scheme::parse)
        .ok_or(Error::HttpProtocolError)?;
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    let host_and_port = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, rest)| rest);
    let written_port = host_and_port
        .strip_prefix(authority.host())
        .ok_or(Error::HttpRequestUriInvalid)?;
    let port = match written_port.strip_prefix(':') {
        None | Some("") => scheme.default_port(),
        Some(port) => port
            .parse()
            .ok()
            .filter(|&port| port != 0)
            .ok_or(Error::HttpRequestUriInvalid)?,
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(Error::HttpRequestUriInvalid);
    }
    Ok(Origin { scheme, host, port })
}

impl NetPolicy {
    /// Say why a request was refused: in the log now, in the failure if the phase fails, and to
    /// the guest as its error.
    fn refuse(&self, why: String) -> Error {
        let note = format!("network access refused: {why}");
        if let Ok(mut budget) = self.budget.lock() {
            budget.emit(LogLevel::Warn, &note);
        }
        if let Ok(mut refusals) = self.refusals.lock() {
            limits::keep_refusal(&mut refusals, &note);
        }
        Error::InternalError(Some(note))
    }

    /// The time left before the phase's deadline, or the guest's own shorter limit.
    fn left(&self, own: Option<Duration>) -> Duration {
        let left = self.deadline.saturating_duration_since(Instant::now());
        own.map_or(left, |own| own.min(left))
    }

    /// The addresses `origin` may be reached at, checked; refused when there are none.
    async fn addresses(&self, origin: &Origin) -> Result<Vec<SocketAddr>, Error> {
        let grants: Vec<&NetGrant> = self.grants.iter().filter(|g| g.covers(origin)).collect();
        if grants.is_empty() {
            return Err(self.refuse(format!(
                "{origin} is not in this phase's net grant; add \"{}\" to the phase's \
                 [phases.<name>.grants] net to allow it",
                suggested_grant(origin)
            )));
        }
        let literal = |ip: IpAddr| grants.iter().any(|g| g.literal_ip() == Some(ip));
        let resolved: Vec<IpAddr> = if let Some(ip) = origin.ip() {
            vec![ip]
        } else if let Some((_, _, ip)) = self
            .resolve
            .iter()
            .find(|(host, port, _)| *host == origin.host && *port == origin.port)
        {
            vec![*ip]
        } else {
            let lookup = tokio::net::lookup_host((origin.host.as_str(), origin.port));
            match tokio::time::timeout(self.left(None), lookup).await {
                Err(_) => return Err(Error::DnsTimeout),
                Ok(Err(e)) => {
                    return Err(Error::DnsError {
                        rcode: Some(e.to_string()),
                        info_code: None,
                    })
                }
                Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
            }
        };
        let mut refused = None;
        let mut kept = Vec::new();
        for ip in resolved {
            match internal_kind(ip) {
                Some(kind) if !literal(ip) => refused = refused.or(Some((ip, kind))),
                _ => kept.push(SocketAddr::new(ip, origin.port)),
            }
        }
        match (kept.is_empty(), refused) {
            (true, Some((ip, kind))) => Err(self.refuse(format!(
                "{origin} resolves to {ip}, {kind}; a phase reaches such an address only when \
                 its net grant writes the address itself (e.g. \"{}://{}:{}\")",
                origin.scheme.as_str(),
                bracketed(ip),
                origin.port
            ))),
            (true, None) => Err(Error::DestinationNotFound),
            (false, _) => Ok(kept),
        }
    }
}

fn bracketed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// The grant entry that would cover `origin`, written as a person would (no default port).
fn suggested_grant(origin: &Origin) -> String {
    let host = match origin.ip() {
        Some(ip) => bracketed(ip),
        None => origin.host.clone(),
    };
    if origin.port == origin.scheme.default_port() {
        format!("{}://{host}", origin.scheme.as_str())
    } else {
        format!("{}://{host}:{}", origin.scheme.as_str(), origin.port)
    }
}

/// A stream that is plain TCP or TLS over it.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The TLS client: the system's trust store, TLS 1.2 or later. Built once per process.
fn tls_connector() -> Result<&'static tokio_native_tls::TlsConnector, Error> {
    static TLS: OnceLock<Result<tokio_native_tls::TlsConnector, String>> = OnceLock::new();
    TLS.get_or_init(|| {
        native_tls::TlsConnector::builder()
            .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
            .request_alpns(&["http/1.1"])
            .build()
            .map(tokio_native_tls::TlsConnector::from)
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::InternalError(Some(format!("TLS cannot be set up: {e}"))))
}

async fn connect(
    policy: &NetPolicy,
    origin: &Origin,
    addrs: &[SocketAddr],
    options: Option<&RequestOptions>,
) -> Result<Box<dyn Stream>, Error> {
    let within = policy.left(options.and_then(|o| o.connect_timeout));
    let mut last = Error::ConnectionRefused;
    let mut tcp = None;
    for addr in addrs {
        match tokio::time::timeout(within, tokio::net::TcpStream::connect(addr)).await {
            Err(_) => return Err(Error::ConnectionTimeout),
            Ok(Ok(stream)) => {
                tcp = Some(stream);
                break;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Error::ConnectionRefused
            }
            Ok(Err(e)) => last = Error::Connect(e),
        }
    }
    let tcp = tcp.ok_or(last)?;
    if origin.scheme == Scheme::Http {
        return Ok(Box::new(tcp));
    }
    let tls = tls_connector()?;
    match tokio::time::timeout(policy.left(None), tls.connect(&origin.host, tcp)).await {
        Err(_) => Err(Error::ConnectionTimeout),
        Ok(Ok(stream)) => Ok(Box::new(stream)),
        Ok(Err(e)) => Err(Error::InternalError(Some(format!(
            "TLS with {origin} failed: {e}"
        )))),
    }
}

async fn send(
    policy: &NetPolicy,
    slot: Slot,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> SendResult {
    // wasi:http sends the authority as written as the `Host` header: a user in it would reach
    // the granted server in a header naming something else than the checked origin.
    if request
        .uri()
        .authority()
        .is_some_and(|a| a.as_str().contains('@'))
    {
        return Err(policy.refuse(
            "the request's authority names a user or password (user@host); send credentials \
             in a header (e.g. authorization), never in the origin"
                .to_string(),
        ));
    }
    let origin = origin_of(request.uri())?;
    let addrs = policy.addresses(&origin).await?;
    let stream = connect(policy, &origin, &addrs, options.as_ref()).await?;
    let mut builder = hyper::client::conn::http1::Builder::new();
    builder
        .max_buf_size(MAX_RESPONSE_HEAD)
        .max_headers(MAX_RESPONSE_HEADERS);
    let (mut sender, connection) = tokio::time::timeout(
        policy.left(None),
        builder.handshake::<_, WasiBody>(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    // On the wire the request names only its path: the origin is the connection's.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let over_cap = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Capped::new(
            body,
            MAX_REQUEST_BODY,
            Error::HttpRequestBodySize(Some(MAX_REQUEST_BODY)),
        )
        .noting_overflow(over_cap.clone())
        .boxed_unsync()
    });
    // The connection runs as its own task from now on (the response needs it); its handle goes
    // back to wasi-http, which keeps it with the response, so it ends with the phase's store.
    // The request's slot is given back when its connection ends.
    let driving = wasmtime_wasi::runtime::spawn(async move {
        let _slot = slot;
        connection.await.map_err(Error::from)
    });
    let first_byte = policy.left(options.as_ref().and_then(|o| o.first_byte_timeout));
    let response = match tokio::time::timeout(first_byte, sender.send_request(request)).await {
        Err(_) => return Err(Error::HttpResponseTimeout),
        // hyper reports a body's error as its own; the cap is the reason worth telling.
        Ok(Err(_)) if over_cap.load(Ordering::SeqCst) => {
            return Err(Error::HttpRequestBodySize(Some(MAX_REQUEST_BODY)))
        }
        Ok(result) => result?,
    };
    let response = response.map(|body| {
        Capped::new(
            body.map_err(Error::from),
            MAX_RESPONSE_BODY,
            Error::HttpResponseBodySize(Some(MAX_RESPONSE_BODY)),
        )
        .boxed_unsync()
    });
    Ok((response, Box::new(driving)))
}

/// A body that fails once more than `cap` bytes have passed.
struct Capped<B> {
    inner: B,
    left: u64,
    over: Option<Error>,
    /// Set when the cap is hit, for whoever sees the error only through another one.
    overflowed: Option<Arc<AtomicBool>>,
}

impl<B> Capped<B> {
    fn new(inner: B, cap: u64, over: Error) -> Capped<B> {
        Capped {
            inner,
            left: cap,
            over: Some(over),
            overflowed: None,
        }
    }

    fn noting_overflow(mut self, flag: Arc<AtomicBool>) -> Capped<B> {
        self.overflowed = Some(flag);
        self
    }
}

impl<B> Body for Capped<B>
where
    B: Body<Data = Bytes, Error = Error> + Unpin,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.over.is_none() {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let len = data.len() as u64;
                if len > self.left {
                    if let Some(flag) = &self.overflowed {
                        flag.store(true, Ordering::SeqCst);
                    }
                    let over = self.over.take().expect("checked above");
                    return Poll::Ready(Some(Err(over)));
                }
                self.left -= len;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.over.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_entries_are_host_port_address() {
        let parsed = parse_resolve("Registry.example.com:443:127.0.0.1, a.test:80:[::1]").unwrap();
        assert_eq!(
            parsed,
            vec![
                (
                    "registry.example.com".to_string(),
                    443,
                    "127.0.0.1".parse().unwrap()
                ),
                ("a.test".to_string(), 80, "::1".parse().unwrap()),
            ]
        );
        assert!(parse_resolve("a.test:443").is_err());
        assert!(parse_resolve("a.test:https:127.0.0.1").is_err());
        assert!(parse_resolve("a.test:443:not-an-ip").is_err());
        assert_eq!(parse_resolve("").unwrap(), vec![]);
    }

    #[test]
    fn the_origin_is_the_written_host_and_port_or_invalid() {
        let origin = |uri: &str| origin_of(&uri.parse().unwrap()).map(|o| o.to_string());
        assert_eq!(
            origin("http://A.Example.com./x").unwrap(),
            "http://a.example.com:80"
        );
        assert_eq!(origin("https://[::1]:8443/").unwrap(), "https://[::1]:8443");
        assert_eq!(origin("http://127.0.0.1:/").unwrap(), "http://127.0.0.1:80");
        assert_eq!(
            origin("http://u@127.0.0.1:81/").unwrap(),
            "http://127.0.0.1:81"
        );
        for bad in [
            "http://127.0.0.1:65616/",
            "http://127.0.0.1:0/",
            "http://[::1]:99999/",
        ] {
            assert!(
                matches!(origin(bad), Err(Error::HttpRequestUriInvalid)),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_suggested_grant_omits_the_default_port() {
        let o = |scheme, host: &str, port| Origin {
            scheme,
            host: host.to_string(),
            port,
        };
        assert_eq!(
            suggested_grant(&o(Scheme::Https, "registry.example.com", 443)),
            "https://registry.example.com"
        );
        assert_eq!(
            suggested_grant(&o(Scheme::Http, "127.0.0.1", 8080)),
            "http://127.0.0.1:8080"
        );
        assert_eq!(suggested_grant(&o(Scheme::Http, "::1", 80)), "http://[::1]");
    }
}
