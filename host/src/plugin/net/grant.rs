//! The `net` grant: the origins a phase may reach, written `scheme://host[:port]`.
//!
//! - `scheme` is `http` or `https`; the port defaults from it (80, 443).
//! - `host` is a DNS name (`registry.example.com`), a wildcard over its subdomains
//!   (`*.example.com`: `a.example.com` and `a.b.example.com`, not `example.com` itself), or an IP
//!   address (`127.0.0.1`, `[::1]`). Nothing broader: no bare `*`, no wildcard over a top-level
//!   domain (`*.com`), no `*` anywhere but as the whole first label.
//! - Nothing else: no user, password, path, query or fragment (a trailing `/` is fine).
//!
//! Only an IP address written literally in a grant lets a phase reach a loopback, private,
//! link-local or metadata address (see [`super::address`]).

use std::fmt;
use std::net::IpAddr;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn parse(text: &str) -> Option<Scheme> {
        match text.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Which hosts a grant names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// One DNS name, lower case, without a trailing dot.
    Name(String),
    /// Every name ending in `.<suffix>` (`*.example.com` has the suffix `example.com`).
    Subdomains(String),
    /// One address, written literally.
    Ip(IpAddr),
}

/// One entry of a phase's `net` grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetGrant {
    pub scheme: Scheme,
    pub host: HostPattern,
    pub port: u16,
}

/// A request's destination, as the plugin wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: Scheme,
    /// Lower case, without a trailing dot; an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match self.ip() {
            Some(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => self.host.clone(),
        };
        write!(f, "{}://{host}:{}", self.scheme.as_str(), self.port)
    }
}

impl NetGrant {
    /// Parse one entry as the manifest writes it. The error says what is wrong and what to
    /// write instead (without the entry itself, which the caller names).
    pub fn parse(text: &str) -> Result<NetGrant, String> {
        const FORM: &str =
            "write scheme://host[:port], e.g. \"https://registry.example.com\" or \"http://127.0.0.1:8080\"";
        if text.trim() != text || text.is_empty() {
            return Err(format!("it is empty or has spaces around it; {FORM}"));
        }
        let Some((scheme_text, _)) = text.split_once("://") else {
            return Err(format!("it has no scheme; {FORM}"));
        };
        let Some(scheme) = Scheme::parse(scheme_text) else {
            return Err(format!(
                "the scheme {scheme_text:?} is not supported: a net grant is for http or https \
                 (plain sockets are not granted)"
            ));
        };
        let url = url::Url::parse(text).map_err(|e| format!("it is not a URL ({e}); {FORM}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "it names a user or password; credentials belong in an env grant, not the \
                 origin; {FORM}"
            ));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "a grant is an origin, without a path, query or fragment; {FORM}"
            ));
        }
        let host = match url.host() {
            None => return Err(format!("it has no host; {FORM}")),
            Some(url::Host::Ipv4(ip)) => HostPattern::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => HostPattern::Ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => host_pattern(name.trim_end_matches('.'))?,
        };
        let port = url.port().unwrap_or(scheme.default_port());
        if port == 0 {
            return Err(format!("port 0 is not a port to connect to; {FORM}"));
        }
        Ok(NetGrant { scheme, host, port })
    }

    /// Whether a request to `origin` is covered by this grant (the address it resolves to is
    /// checked separately).
    pub fn covers(&self, origin: &Origin) -> bool {
        if self.scheme != origin.scheme || self.port != origin.port {
            return false;
        }
        match &self.host {
            HostPattern::Name(name) => *name == origin.host,
            HostPattern::Subdomains(suffix) => {
                origin
                    .host
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|label| label.len() > 1 && label.ends_with('.'))
                    && origin.ip().is_none()
            }
            HostPattern::Ip(ip) => origin.ip() == Some(*ip),
        }
    }

    /// The address this grant names literally, if it names one.
    pub fn literal_ip(&self) -> Option<IpAddr> {
        match self.host {
            HostPattern::Ip(ip) => Some(ip),
            _ => None,
        }
    }
}

fn host_pattern(name: &str) -> Result<HostPattern, String> {
    let name = name.to_ascii_lowercase();
    if name == "*" {
        return Err(
            "a bare * would grant every host; name the hosts, or their parent domain as \
             *.example.com"
                .to_string(),
        );
    }
    if let Some(suffix) = name.strip_prefix("*.") {
        if suffix.contains('*') {
            return Err(
                "a wildcard may only be the whole first label, as in *.example.com".to_string(),
            );
        }
        if !suffix.contains('.') {
            return Err(format!(
                "*.{suffix} would grant every host under a top-level domain; name a domain you \
                 own, as in *.example.com"
            ));
        }
        return Ok(HostPattern::Subdomains(suffix.to_string()));
    }
    if name.contains('*') {
        return Err(
            "a wildcard may only be the whole first label, as in *.example.com".to_string(),
        );
    }
    Ok(HostPattern::Name(name))
}

impl fmt::Display for NetGrant {
    /// The normalized form, port always written: `https://registry.example.com:443`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            HostPattern::Name(name) => name.clone(),
            HostPattern::Subdomains(suffix) => format!("*.{suffix}"),
            HostPattern::Ip(IpAddr::V4(v4)) => v4.to_string(),
            HostPattern::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
        };
        write!(f, "{}://{host}:{}", self.scheme.as_str(), self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(scheme: Scheme, host: &str, port: u16) -> Origin {
        Origin {
            scheme,
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn grants_parse_to_an_origin_with_the_schemes_port() {
        let g = NetGrant::parse("https://Registry.Example.com").unwrap();
        assert_eq!(g.to_string(), "https://registry.example.com:443");
        assert_eq!(
            NetGrant::parse("http://127.0.0.1:8080/")
                .unwrap()
                .to_string(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            NetGrant::parse("http://[::1]:9000").unwrap().literal_ip(),
            Some("::1".parse().unwrap())
        );
        assert_eq!(
            NetGrant::parse("https://*.example.com").unwrap().host,
            HostPattern::Subdomains("example.com".to_string())
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        for (bad, why) in [
            ("registry.example.com", "no scheme"),
            ("ftp://example.com", "not supported"),
            ("tcp://example.com:22", "not supported"),
            ("https://*", "bare *"),
            ("https://*.com", "top-level domain"),
            ("https://a.*.example.com", "whole first label"),
            ("https://*foo.example.com", "whole first label"),
            ("https://**.example.com", "whole first label"),
            ("https://example.com/v2", "without a path"),
            ("https://example.com?x=1", "without a path"),
            ("https://user:pw@example.com", "credentials"),
            ("http://example.com:0", "port 0"),
            ("http://example.com:99999", "not a URL"),
            (" https://example.com", "spaces"),
            ("", "empty"),
        ] {
            let err = NetGrant::parse(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn a_grant_covers_its_origin_and_nothing_near_it() {
        let g = NetGrant::parse("https://registry.example.com").unwrap();
        assert!(g.covers(&origin(Scheme::Https, "registry.example.com", 443)));
        assert!(!g.covers(&origin(Scheme::Http, "registry.example.com", 443)));
        assert!(!g.covers(&origin(Scheme::Https, "registry.example.com", 8443)));
        assert!(!g.covers(&origin(Scheme::Https, "evil-registry.example.com", 443)));
        assert!(!g.covers(&origin(Scheme::Https, "registry.example.com.evil.net", 443)));

        let w = NetGrant::parse("https://*.example.com").unwrap();
        assert!(w.covers(&origin(Scheme::Https, "a.example.com", 443)));
        assert!(w.covers(&origin(Scheme::Https, "a.b.example.com", 443)));
        assert!(!w.covers(&origin(Scheme::Https, "example.com", 443)));
        assert!(!w.covers(&origin(Scheme::Https, ".example.com", 443)));
        assert!(!w.covers(&origin(Scheme::Https, "badexample.com", 443)));

        let ip = NetGrant::parse("http://127.0.0.1:8080").unwrap();
        assert!(ip.covers(&origin(Scheme::Http, "127.0.0.1", 8080)));
        assert!(!ip.covers(&origin(Scheme::Http, "localhost", 8080)));
        let v6 = NetGrant::parse("http://[::1]:8080").unwrap();
        assert!(v6.covers(&origin(Scheme::Http, "::1", 8080)));
    }
}
