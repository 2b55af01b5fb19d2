//! Where the database is: telling a URL from a path, redacting its password for messages, and
//! the TLS parameters the client library does not know (`sslrootcert`, `sslmode=verify-*`).

/// Whether a `--state-url` / `state migrate --to` value names PostgreSQL rather than a file.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// `url` without its password, for messages: the userinfo password and any `password=`
/// parameter (URL query or key=value form) are removed.
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let (scheme, rest) = url.split_at(scheme_end + 3);
        let (authority_and_path, query) = match rest.find('?') {
            Some(q) => (&rest[..q], Some(&rest[q + 1..])),
            None => (rest, None),
        };
        let authority_end = authority_and_path
            .find('/')
            .unwrap_or(authority_and_path.len());
        let (authority, path) = authority_and_path.split_at(authority_end);
        let authority = match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{user}@{}", &authority[at + 1..])
            }
            None => authority.to_string(),
        };
        let mut out = format!("{scheme}{authority}{path}");
        if let Some(query) = query {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("password="))
                .collect();
            if !kept.is_empty() {
                out.push('?');
                out.push_str(&kept.join("&"));
            }
        }
        out
    } else {
        url.split_whitespace()
            .filter(|p| !p.starts_with("password="))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How much of the server's certificate to check, as libpq's `sslmode` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verify {
    /// `prefer`, `require` (without `sslrootcert`): encrypt, trust any certificate.
    Nothing,
    /// `verify-ca`, or `require` with `sslrootcert`: the chain must lead to a trusted root.
    Chain,
    /// `verify-full`: the chain, and the certificate must name the host.
    ChainAndHost,
}

/// The libpq TLS parameters the `postgres` crate does not know (`sslmode=verify-ca`,
/// `verify-full`, `sslrootcert`), taken out of the URL before it parses the rest. Its own
/// `sslmode` (`disable`, `prefer`, `require`) decides whether TLS is used at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TlsSettings {
    verify: Verify,
    root_cert: Option<String>,
}

impl TlsSettings {
    /// The settings, and the URL with `verify-*` turned into `require` and `sslrootcert`
    /// removed. A key=value conninfo string is treated the same way.
    pub(super) fn take_from(url: &str) -> (TlsSettings, String) {
        let mut mode = String::from("prefer");
        let mut root_cert = None;
        let rewrite =
            |pair: &str, mode: &mut String, root: &mut Option<String>| -> Option<String> {
                if let Some(v) = pair.strip_prefix("sslrootcert=") {
                    *root = Some(percent_decode(v));
                    return None;
                }
                if let Some(v) = pair.strip_prefix("sslmode=") {
                    *mode = v.to_string();
                    if v == "verify-ca" || v == "verify-full" {
                        return Some("sslmode=require".to_string());
                    }
                }
                Some(pair.to_string())
            };
        let rewritten = if is_postgres_url(url) {
            match url.split_once('?') {
                Some((base, query)) => {
                    let kept: Vec<String> = query
                        .split('&')
                        .filter_map(|p| rewrite(p, &mut mode, &mut root_cert))
                        .collect();
                    if kept.is_empty() {
                        base.to_string()
                    } else {
                        format!("{base}?{}", kept.join("&"))
                    }
                }
                None => url.to_string(),
            }
        } else {
            url.split_whitespace()
                .filter_map(|p| rewrite(p, &mut mode, &mut root_cert))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let verify = match mode.as_str() {
            "verify-full" => Verify::ChainAndHost,
            "verify-ca" => Verify::Chain,
            "require" if root_cert.is_some() => Verify::Chain,
            _ => Verify::Nothing,
        };
        (TlsSettings { verify, root_cert }, rewritten)
    }

    pub(super) fn connector(&self) -> Result<postgres_native_tls::MakeTlsConnector, String> {
        let mut builder = native_tls::TlsConnector::builder();
        match self.verify {
            Verify::Nothing => {
                builder
                    .danger_accept_invalid_certs(true)
                    .danger_accept_invalid_hostnames(true);
            }
            Verify::Chain => {
                builder.danger_accept_invalid_hostnames(true);
            }
            Verify::ChainAndHost => {}
        }
        if let Some(path) = &self.root_cert {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read sslrootcert {path}: {e}"))?;
            let cert = native_tls::Certificate::from_pem(&pem)
                .map_err(|e| format!("sslrootcert {path} is not a PEM certificate: {e}"))?;
            // Like libpq: the given root is the only one trusted.
            builder
                .add_root_certificate(cert)
                .disable_built_in_roots(true);
        }
        let connector = builder.build().map_err(|e| e.to_string())?;
        Ok(postgres_native_tls::MakeTlsConnector::new(connector))
    }
}

/// `%XX` escapes decoded (a path given in a URL query).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact_url("postgres://deploy:s3cret@db.example:5432/releases?sslmode=require"),
            "postgres://deploy@db.example:5432/releases?sslmode=require"
        );
        assert_eq!(
            redact_url("postgresql://u:p%40ss@h/db?password=x&application_name=a"),
            "postgresql://u@h/db?application_name=a"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact_url("host=/tmp user=u password=hunter2 dbname=d"),
            "host=/tmp user=u dbname=d"
        );
    }

    #[test]
    fn tls_parameters_the_client_library_does_not_know_are_taken_out() {
        let (tls, url) = TlsSettings::take_from(
            "postgres://u:p@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
        );
        assert_eq!(url, "postgres://u:p@h/db?sslmode=require&connect_timeout=3");
        assert_eq!(tls.verify, Verify::ChainAndHost);
        assert_eq!(tls.root_cert.as_deref(), Some("/etc/ca.pem"));
        let (tls, url) = TlsSettings::take_from("postgres://h/db?sslmode=verify-ca");
        assert_eq!(
            (tls.verify, url.as_str()),
            (Verify::Chain, "postgres://h/db?sslmode=require")
        );
        let (tls, _) = TlsSettings::take_from("postgres://h/db?sslmode=require&sslrootcert=ca.pem");
        assert_eq!(
            tls.verify,
            Verify::Chain,
            "libpq: require with a root checks the chain"
        );
        let (tls, url) = TlsSettings::take_from("postgres://h/db?sslmode=require");
        assert_eq!(
            (tls.verify, url.as_str()),
            (Verify::Nothing, "postgres://h/db?sslmode=require")
        );
        let (tls, url) = TlsSettings::take_from("host=h sslmode=verify-full dbname=d");
        assert_eq!(
            (tls.verify, url.as_str()),
            (Verify::ChainAndHost, "host=h sslmode=require dbname=d")
        );
    }

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_postgres_url("postgres://h/db"));
        assert!(is_postgres_url("postgresql://h/db"));
        assert!(!is_postgres_url("state/releases.json"));
        assert!(!is_postgres_url("postgres.json"));
    }
}
