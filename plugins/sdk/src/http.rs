//! Outgoing HTTP(S) from a phase, over `wasi:http`: a blocking request, the whole response.
//!
//! ```ignore
//! use stagecraft_plugin_sdk::http;
//!
//! let response = http::get("https://status.example.com/health")?;
//! if response.status != 200 { /* ... */ }
//! let body = response.text();
//!
//! let created = http::Request::post("https://api.example.com/deploys")
//!     .header("content-type", "application/json")
//!     .body(br#"{"version":"v2"}"#.to_vec())
//!     .send()?;
//! ```
//!
//! The host sends the request only to an origin the phase's `net` grant lists (and never to a
//! loopback or private address a name resolves to); otherwise [`send`](Request::send) returns
//! an [`HttpError`] that names the grant to add. Requests end at the phase's deadline at the
//! latest.

use std::fmt;
use std::time::Duration;

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions,
    Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

/// The most of a response body [`Request::send`] reads unless told otherwise (the host's own
/// cap is 16 MiB).
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;

/// Why a request did not produce a response (a response with any status is not an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub message: String,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for crate::Error {
    fn from(e: HttpError) -> crate::Error {
        crate::Error::new(e.message)
    }
}

fn fail(message: impl Into<String>) -> HttpError {
    HttpError {
        message: message.into(),
    }
}

/// What the host's `error-code` says, in words. A refusal by the host carries its reason.
fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::InternalError(Some(why)) => why.clone(),
        ErrorCode::DnsError(payload) => format!(
            "the name could not be resolved{}",
            payload
                .rcode
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        ErrorCode::ConnectionRefused => "the connection was refused".to_string(),
        ErrorCode::ConnectionTimeout => "connecting timed out".to_string(),
        ErrorCode::HttpResponseTimeout => "no response before the timeout".to_string(),
        ErrorCode::HttpResponseBodySize(Some(cap)) => {
            format!("the response body is larger than the host allows ({cap} bytes)")
        }
        ErrorCode::HttpRequestBodySize(Some(cap)) => {
            format!("the request body is larger than the host allows ({cap} bytes)")
        }
        other => format!("{other:?}"),
    }
}

/// A response: its status, headers and whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, HttpError> {
    Request::get(url).send()
}

/// A request being built.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
    max_body: usize,
}

impl Request {
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_string(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    pub fn get(url: &str) -> Request {
        Request::new("GET", url)
    }

    pub fn post(url: &str) -> Request {
        Request::new("POST", url)
    }

    pub fn put(url: &str) -> Request {
        Request::new("PUT", url)
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Request {
        self.body = body;
        self
    }

    /// Give up connecting, and waiting for the response to begin, after this long (the phase's
    /// deadline applies in any case).
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// Read at most this much of the body; more is an error.
    pub fn max_body(mut self, bytes: usize) -> Request {
        self.max_body = bytes;
        self
    }

    /// Send it and read the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        let parts = UrlParts::parse(&self.url)?;
        let headers = Fields::new();
        for (name, value) in &self.headers {
            headers
                .append(name, value.as_bytes())
                .map_err(|e| fail(format!("header {name:?} cannot be sent: {e:?}")))?;
        }
        let request = OutgoingRequest::new(headers);
        let method = match self.method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        };
        let invalid = |what: &str| fail(format!("{}: invalid {what}", self.url));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&parts.scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(&parts.authority))
            .map_err(|()| invalid("host"))?;
        request
            .set_path_with_query(Some(&parts.path))
            .map_err(|()| invalid("path"))?;
        let options = self.timeout.map(|t| {
            let options = RequestOptions::new();
            let nanos = t.as_nanos().min(u64::MAX as u128) as u64;
            let _ = options.set_connect_timeout(Some(nanos));
            let _ = options.set_first_byte_timeout(Some(nanos));
            options
        });
        let outgoing = request
            .body()
            .map_err(|()| fail("the request body was already taken"))?;
        let pending = outgoing_handler::handle(request, options)
            .map_err(|e| fail(format!("{}: {}", self.url, describe(&e))))?;
        if let Err(e) = write_body(outgoing, &self.body) {
            // The host ends the request when it refuses the body (a cap): its reason is the
            // response's error, which says more than a closed stream.
            pending.subscribe().block();
            let why = match pending.get() {
                Some(Ok(Err(code))) => describe(&code),
                _ => e,
            };
            return Err(fail(format!("{}: {why}", self.url)));
        }
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(fail(format!("{}: {}", self.url, describe(&code)))),
            Some(Err(())) | None => {
                return Err(fail(format!("{}: the response was lost", self.url)))
            }
        };
        read_response(response, self.max_body).map_err(|e| fail(format!("{}: {e}", self.url)))
    }
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), String> {
    {
        let stream = body
            .write()
            .map_err(|()| "the request body cannot be written".to_string())?;
        // blocking-write-and-flush takes at most 4096 bytes per call.
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| stream_error("sending the request body", e))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| describe(&e))
}

fn stream_error(doing: &str, e: StreamError) -> String {
    match e {
        StreamError::Closed => format!("{doing}: the connection closed"),
        StreamError::LastOperationFailed(error) => {
            // The host's reason, when it gave one (a cap, a refusal).
            match crate::bindings::wasi::http::types::http_error_code(&error) {
                Some(code) => format!("{doing}: {}", describe(&code)),
                None => format!("{doing}: {}", error.to_debug_string()),
            }
        }
    }
}

fn read_response(response: IncomingResponse, max_body: usize) -> Result<Response, String> {
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| {
            (
                n.to_ascii_lowercase(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| "the response body was already taken".to_string())?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| "the response body cannot be read".to_string())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if body.len() + chunk.len() > max_body {
                        return Err(format!("the response body is larger than {max_body} bytes"));
                    }
                    body.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(e) => return Err(stream_error("reading the response", e)),
            }
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// `scheme://authority/path?query`, split as wasi:http wants it.
struct UrlParts {
    scheme: Scheme,
    authority: String,
    path: String,
}

impl UrlParts {
    fn parse(url: &str) -> Result<UrlParts, HttpError> {
        let bad = |why: &str| fail(format!("{url:?} is not a URL: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(bad("only http and https are supported")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("it needs a host (and no user or password)"));
        }
        let tail = tail.split('#').next().unwrap_or("");
        let path = if tail.is_empty() {
            "/".to_string()
        } else if tail.starts_with('?') {
            format!("/{tail}")
        } else {
            tail.to_string()
        };
        Ok(UrlParts {
            scheme,
            authority: authority.to_string(),
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let p = UrlParts::parse("https://api.example.com:8443/v1/deploys?env=prod#x").unwrap();
        assert!(matches!(p.scheme, Scheme::Https));
        assert_eq!(p.authority, "api.example.com:8443");
        assert_eq!(p.path, "/v1/deploys?env=prod");
        let p = UrlParts::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(p.path, "/");
        let p = UrlParts::parse("http://[::1]:80?x=1").unwrap();
        assert_eq!(
            (p.authority.as_str(), p.path.as_str()),
            ("[::1]:80", "/?x=1")
        );
        for bad in [
            "example.com",
            "ftp://example.com",
            "https://",
            "https://u:p@host/",
        ] {
            assert!(UrlParts::parse(bad).is_err(), "{bad}");
        }
    }
}
