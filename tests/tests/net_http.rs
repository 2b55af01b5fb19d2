//! A phase's outgoing HTTP through `wasi:http`, end to end: the `net` grant lets a Rust plugin
//! (the http-probe fixture, on the SDK's client) reach its granted origins and nothing else,
//! against a server on 127.0.0.1 that each test starts and stops.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use stagecraft_tests::http::{
    deploy_v1 as deploy, net_project, rollout_phase as rollout, TestServer,
};
use stagecraft_tests::{run, stagecraft, wasm_plugins_dir, Run};

fn probe() -> PathBuf {
    wasm_plugins_dir().join("fixtures/http-probe.wasm")
}

/// A project whose one phase, `rollout`, runs http-probe with `config` and `net`.
fn project(config: &str, net: &[String], phase_extra: &str) -> tempfile::TempDir {
    net_project(&probe(), config, net, phase_extra)
}

#[test]
fn a_granted_origin_is_reached_and_an_ungranted_one_is_refused_naming_the_grant() {
    let granted = TestServer::start();
    let other = TestServer::start();
    let dir = project(
        &format!("urls = {:?}", granted.url("/ok")),
        &[granted.origin()],
        "",
    );
    // The plan says what the phase may reach.
    let plan = run(
        dir.path(),
        &["deploy", "--env", "prod", "--version", "v1", "--dry-run"],
    );
    assert!(
        plan.stdout.contains(&format!(
            "                may reach {} (net)",
            granted.origin()
        )),
        "{plan:?}"
    );
    let out = deploy(dir.path());
    assert_eq!(out.code, 0, "{out:?}");
    let phase = rollout(dir.path());
    assert_eq!(phase["outputs"]["status.0"], "200", "{phase:#}");
    assert_eq!(phase["outputs"]["bytes.0"], "26", "{phase:#}");
    let seen = granted.seen_for("/ok");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("host"),
        Some(format!("127.0.0.1:{}", granted.port()).as_str())
    );

    // The other server is on the same address, another port: not granted.
    let dir = project(
        &format!("urls = {:?}", other.url("/ok")),
        &[granted.origin()],
        "",
    );
    let out = deploy(dir.path());
    assert_eq!(out.code, 2, "{out:?}");
    let want = format!(
        "network access refused: http://127.0.0.1:{port} is not in this phase's net grant; add \
         \"http://127.0.0.1:{port}\" to the phase's [phases.<name>.grants] net to allow it",
        port = other.port()
    );
    assert!(out.stderr.contains(&want), "{out:?}");
    let phase = rollout(dir.path());
    assert!(
        phase["error"].as_str().unwrap_or_default().contains(&want),
        "{phase:#}"
    );
    assert!(other.seen().is_empty(), "{:?}", other.seen());
}

#[test]
fn a_name_resolving_to_a_private_address_is_refused_even_when_granted() {
    let server = TestServer::start();
    // The name is granted; the user's resolver override points it at 127.0.0.1.
    let origin = format!("http://status.example.test:{}", server.port());
    let dir = project(
        &format!("urls = \"{origin}/ok\""),
        std::slice::from_ref(&origin),
        "",
    );
    let out = stagecraft(dir.path())
        .args(["deploy", "--env", "prod", "--version", "v1"])
        .env(
            "STAGECRAFT_RESOLVE",
            format!("status.example.test:{}:127.0.0.1", server.port()),
        )
        .output()
        .unwrap();
    let out = Run::from(out);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{origin} resolves to 127.0.0.1, a loopback address; a phase reaches such an address \
             only when its net grant writes the address itself"
        )),
        "{out:?}"
    );
    assert!(server.seen().is_empty());
}

#[test]
fn a_response_body_over_the_cap_fails_cleanly() {
    let server = TestServer::start();
    let over = 16 * 1024 * 1024 + 1;
    let dir = project(
        &format!("urls = {:?}", server.url(&format!("/bytes/{over}"))),
        &[server.origin()],
        "memory = \"256MiB\"",
    );
    let out = deploy(dir.path());
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(
            "reading the response: HTTP response body size exceeds limit: 16777216 bytes"
        ),
        "{out:?}"
    );
    // Exactly the cap is fine.
    let dir = project(
        &format!("urls = {:?}", server.url(&format!("/bytes/{}", over - 1))),
        &[server.origin()],
        "memory = \"256MiB\"",
    );
    let out = deploy(dir.path());
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn a_request_body_over_the_cap_fails_cleanly() {
    let server = TestServer::start();
    let dir = project(
        &format!(
            "urls = {:?}, method = \"POST\", send_bytes = \"{}\"",
            server.url("/echo"),
            16 * 1024 * 1024 + 1
        ),
        &[server.origin()],
        "memory = \"256MiB\"",
    );
    let out = deploy(dir.path());
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("larger than the host allows (16777216 bytes)"),
        "{out:?}"
    );
}

#[test]
fn a_server_that_never_answers_hits_the_deadline() {
    let server = TestServer::start();
    let dir = project(
        &format!("urls = {:?}", server.url("/silent")),
        &[server.origin()],
        "timeout = \"1s\"",
    );
    let out = deploy(dir.path());
    assert_eq!(out.code, 2, "{out:?}");
    let phase = rollout(dir.path());
    let error = phase["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("timeout") || error.contains("timed out") || error.contains("1s"),
        "{phase:#}"
    );
    assert_eq!(server.seen_for("/silent").len(), 1);
}

#[test]
fn https_to_a_server_that_does_not_speak_tls_fails() {
    // A server that answers in plain HTTP as soon as it is connected to: the TLS handshake with
    // it fails, and the request with it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let plain = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
    });
    let origin = format!("https://127.0.0.1:{port}");
    let dir = project(
        &format!("urls = \"{origin}/ok\""),
        std::slice::from_ref(&origin),
        "",
    );
    let out = deploy(dir.path());
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("TLS with https://127.0.0.1:{port} failed")),
        "{out:?}"
    );
    plain.join().unwrap();
}

#[test]
fn bad_net_grants_are_refused_at_load() {
    let dir = project("urls = \"http://x\"", &["https://*.com".to_string()], "");
    let out = deploy(dir.path());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "net grant \"https://*.com\": *.com would grant every host under a top-level domain"
        ),
        "{out:?}"
    );
    assert!(!dir.path().join(".stagecraft/releases.json").exists());
}

/// A certificate authority and a server certificate for 127.0.0.1 it signed, made with the
/// `openssl` command; and `openssl s_server -www` serving with it, on a port it chose.
struct TlsServer {
    dir: tempfile::TempDir,
    child: std::process::Child,
    port: u16,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=stagecraft test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(dir.path().join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        let mut child = std::process::Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                "127.0.0.1:0",
                "-cert",
                "server.pem",
                "-key",
                "server.key",
                "-www",
                "-naccept",
                "2",
            ])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        // It says where it listens before it accepts: "ACCEPT 127.0.0.1:<port>".
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let port = lines
            .find_map(|line| {
                let line = line.ok()?;
                line.strip_prefix("ACCEPT ")?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .expect("openssl s_server said where it listens");
        std::thread::spawn(move || for _ in lines {});
        TlsServer { dir, child, port }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_verifies_the_server_against_the_systems_trust_store() {
    let server = TlsServer::start();
    let origin = format!("https://127.0.0.1:{}", server.port);
    let dir = project(
        &format!("urls = \"{origin}/\""),
        std::slice::from_ref(&origin),
        "",
    );
    // The system's store does not know the test's authority: refused.
    let out = Run::from(
        stagecraft(dir.path())
            .args(["deploy", "--env", "prod", "--version", "v1"])
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&format!("TLS with {origin} failed"))
            && out.stderr.contains("certificate verify failed"),
        "{out:?}"
    );
    // The store, pointed at a file that trusts the authority (as an operator would with an internal
    // authority): the request goes through, verified.
    let out = Run::from(
        stagecraft(dir.path())
            .args(["deploy", "--env", "prod", "--version", "v2"])
            .env("SSL_CERT_FILE", server.ca())
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(rollout(dir.path())["outputs"]["status.0"], "200");
}
