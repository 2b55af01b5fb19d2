//! The hostile suite (issue 10): a plugin author attacks every defence of the sandbox, each
//! attack a real deploy through the real binary with the hostile Rust fixture
//! (plugins/fixtures/hostile). Whatever the attack, it must end with:
//! - the state file's bytes exactly what the host committed (canonical form, `serial` equal to
//!   the commits the host made, no trace of the attack);
//! - no planted secret (environment, a file outside the project, `$HOME`, an ungranted project
//!   file) and nothing of the state's own text in any output;
//! - no process the attack started still alive;
//! - a phase error that names what was refused.
//!
//! The Python and JavaScript attacks are in sandbox_hostile_polyglot.rs.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use serde_json::Value;
use stagecraft_tests::hostile::*;
use stagecraft_tests::Run;

fn hostile() -> PathBuf {
    fixture("hostile")
}

fn noop() -> PathBuf {
    PathBuf::from("builtin:noop")
}

/// The pipeline every exec attack runs in: `build` attacks, `rollout` (noop) must be skipped
/// when it fails. A failed build is three commits: create, build running, build failed.
fn exec_attack_manifest(p: &HostileProject, program: &str, args: &[&str], grants: &[(&str, &str)]) {
    let args = argv(args);
    let mut build = phase(
        "build",
        &hostile(),
        &[("mode", "exec-argv"), ("program", program), ("argv", &args)],
    )
    .grant("exec", &[program]);
    for (kind, value) in grants {
        build = build.grant(kind, &[value]);
    }
    p.write_manifest(&[build, phase("rollout", &noop(), &[])]);
}

/// The build phase's error after an attack that must have been stopped, with the aftermath
/// checked (`serial` commits so far). `names` must all appear in the error: what was refused.
fn stopped(
    p: &HostileProject,
    out: &Run,
    serial: u64,
    forbidden: &[&str],
    names: &[&str],
    context: &str,
) -> String {
    // The attack's own outcome first: it says more than what it did to the state.
    if let Ok(doc) = serde_json::from_slice::<Value>(&std::fs::read(p.state_file()).unwrap()) {
        let (status, detail) = phase_of(newest_release(&doc), "build");
        assert_eq!(
            status, "failed",
            "{context}: the attack was not stopped: {detail:#}\n{out:?}"
        );
    }
    let doc = p.assert_aftermath(out, serial, forbidden, context);
    let release = newest_release(&doc);
    let (_, detail) = phase_of(release, "build");
    assert_eq!(out.code, 2, "{context}: {out:?}");
    assert_eq!(phase_of(release, "rollout").0, "skipped", "{context}");
    let error = detail["error"].as_str().unwrap_or_default().to_string();
    for name in names {
        assert!(
            error.contains(name),
            "{context}: the phase error does not name {name:?}: {error:?}"
        );
    }
    error
}

/// The error says the operating system refused (not, say, that the program was missing).
fn assert_refused(error: &str, context: &str) {
    assert!(
        // EXDEV is how Landlock refuses to link or move a file across rule boundaries.
        [
            "Permission denied",
            "Operation not permitted",
            "Invalid cross-device link"
        ]
        .iter()
        .any(|w| error.contains(w)),
        "{context}: the error does not say access was refused: {error:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// exec: the programs a plugin runs are confined to the phase's grants
// ---------------------------------------------------------------------------------------------

/// Granted programs are turned against the state: git's shell aliases, make --eval, sh, env,
/// python3 — reading, appending to, linking, moving and deleting the state file, its backup
/// and its lock. Each is one deploy of the same project.
#[test]
fn exec_of_a_granted_program_cannot_touch_the_state() {
    let p = HostileProject::new();
    // What the appending attacks write, built by the shell so the script never contains it.
    let tampered = "tampered-1337";
    let append = "printf tampered-%s $((1000+337)) >> .stagecraft/releases.json";
    let attacks: Vec<(&str, Vec<String>)> = vec![
        (
            "git",
            vec![
                "-c".into(),
                format!("alias.x=!sh -c 'cat .stagecraft/releases.json; {append}'"),
                "x".into(),
            ],
        ),
        ("sh", vec!["-c".into(), append.into()]),
        (
            "sh",
            vec![
                "-c".into(),
                "cat .stagecraft/releases.json.bak .stagecraft/releases.json".into(),
            ],
        ),
        (
            "make",
            vec![
                "--eval".into(),
                "x:\n\tcat .stagecraft/releases.json".into(),
                "x".into(),
            ],
        ),
        (
            "env",
            vec!["cat".into(), ".stagecraft/releases.json".into()],
        ),
        (
            "python3",
            vec![
                "-c".into(),
                "print(open('.stagecraft/releases.json').read())".into(),
            ],
        ),
        (
            "sh",
            vec![
                "-c".into(),
                "ln .stagecraft/releases.json dist/stolen.json".into(),
            ],
        ),
        (
            "sh",
            vec![
                "-c".into(),
                "mv .stagecraft/releases.json dist/moved.json".into(),
            ],
        ),
        (
            "sh",
            vec!["-c".into(), "rm .stagecraft/releases.json.bak".into()],
        ),
        (
            "sh",
            vec![
                "-c".into(),
                "exec 3>.stagecraft/releases.json.lock && echo locked".into(),
            ],
        ),
    ];
    let mut serial = 0;
    for (i, (program, args)) in attacks.iter().enumerate() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let context = format!("{program} {args:?}");
        exec_attack_manifest(&p, program, &args, &[("write", "dist")]);
        let out = p.deploy(&format!("v{i}"));
        serial += 3;
        let error = stopped(&p, &out, serial, &[tampered], &["releases.json"], &context);
        assert_refused(&error, &context);
        for name in ["stolen.json", "moved.json"] {
            assert!(!p.root().join("dist").join(name).exists(), "{context}");
        }
        if i > 0 {
            assert!(
                p.root().join(".stagecraft/releases.json.bak").exists(),
                "{context}: the backup is gone"
            );
        }
    }
}

/// Files no grant names: outside the project, in `$HOME`, the rest of the project root,
/// /etc/shadow, and other processes' environments through /proc (stagecraft's own holds the
/// secret variables).
#[test]
fn exec_cannot_read_files_or_environments_it_was_not_granted() {
    let p = HostileProject::new();
    std::fs::create_dir_all(p.root().join("site")).unwrap();
    std::fs::write(p.root().join("site/index.html"), "granted").unwrap();
    let outside = p.outside_secret_file().display().to_string();
    let home = p.home_secret_file().display().to_string();
    let outside_dir = p.outside.path().display().to_string();
    // (script, what the error must name, whether the target certainly exists for the program:
    // in a PID namespace, /proc/$PPID may simply not be there, which is a refusal too).
    let attacks: Vec<(String, &str, bool)> = vec![
        (format!("cat {outside}"), "secret.txt", true),
        (format!("cat {home}"), ".netrc", true),
        ("cat ungranted.txt".into(), "ungranted.txt", true),
        ("cat site/../ungranted.txt".into(), "ungranted.txt", true),
        ("cat /etc/shadow".into(), "/etc/shadow", true),
        (format!("ls {outside_dir}"), &outside_dir, true),
        ("cat /proc/$PPID/environ".into(), "environ", false),
        ("cat /proc/1/environ".into(), "environ", false),
    ];
    let mut serial = 0;
    for (i, (script, names, exists)) in attacks.iter().enumerate() {
        exec_attack_manifest(&p, "sh", &["-c", script], &[("read", "site")]);
        let out = p.deploy(&format!("v{i}"));
        serial += 3;
        let error = stopped(&p, &out, serial, &[], &[names], script);
        if *exists {
            assert_refused(&error, script);
        }
    }
    // Every process's environment at once: whatever it can read, the secrets never show.
    let grep = format!(
        "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -a -e {SECRET_ENV} -e PGPASSWORD"
    );
    exec_attack_manifest(&p, "sh", &["-c", &grep], &[]);
    let out = p.deploy("v-all");
    serial += 3;
    stopped(&p, &out, serial, &[], &[], "grep of every /proc/*/environ");
}

/// An exec'd program's environment is the granted variables (and PATH): `env` prints the granted
/// one, and none of stagecraft's own secrets (HOSTILE_SECRET, PGPASSWORD) reaches its output,
/// which the phase records.
#[test]
fn exec_sees_only_granted_environment_variables() {
    let p = HostileProject::new();
    exec_attack_manifest(&p, "env", &[], &[("env", "HOSTILE_GRANTED")]);
    let mut cmd = p.command(&["deploy", "--env", "prod", "--version", "v1"]);
    cmd.env("HOSTILE_GRANTED", "granted-value");
    let out = run_guarded(cmd, "env");
    let doc = p.assert_aftermath(&out, 5, &[], "env");
    let (status, detail) = phase_of(newest_release(&doc), "build");
    assert_eq!(status, "completed", "{detail:#}\n{out:?}");
    let stdout = detail["outputs"]["stdout"].as_str().unwrap_or_default();
    assert!(stdout.contains("HOSTILE_GRANTED=granted-value"), "{stdout}");
    for name in [SECRET_ENV, "PGPASSWORD", "HOME="] {
        assert!(
            !stdout.contains(name),
            "{name} reached the program: {stdout}"
        );
    }
}

/// The other side of confinement: an exec'd program reads its read grants (a single file
/// included), writes its write grants and its private temporary directory, runs system
/// programs, and runs in the project root. Without this, a confinement that refused
/// everything would pass every attack above.
#[test]
fn exec_reaches_exactly_what_its_grants_name() {
    let p = HostileProject::new();
    std::fs::create_dir_all(p.root().join("site")).unwrap();
    std::fs::write(p.root().join("site/index.html"), "from site").unwrap();
    std::fs::write(p.root().join("Makefile"), "from makefile").unwrap();
    let script = "cat Makefile site/index.html > dist/copy.txt && ls /usr/bin > /dev/null && \
                  t=$(mktemp) && echo scratch > \"$t\" && cat \"$t\" >> dist/copy.txt && \
                  rm \"$t\" && pwd";
    p.write_manifest(&[
        phase(
            "build",
            &hostile(),
            &[
                ("mode", "exec-argv"),
                ("program", "sh"),
                ("argv", &argv(&["-c", script])),
            ],
        )
        .grant("exec", &["sh"])
        .grant("read", &["Makefile", "site"])
        .grant("write", &["dist"]),
        phase("rollout", &noop(), &[]),
    ]);
    let out = p.deploy("v1");
    let doc = p.assert_aftermath(&out, 5, &[], "granted access");
    let release = newest_release(&doc);
    let (status, detail) = phase_of(release, "build");
    assert_eq!(status, "completed", "{detail:#}\n{out:?}");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        std::fs::read_to_string(p.root().join("dist/copy.txt")).unwrap(),
        "from makefilefrom sitescratch\n"
    );
    assert_eq!(
        Path::new(detail["outputs"]["stdout"].as_str().unwrap().trim()),
        p.root().canonicalize().unwrap(),
        "exec runs in the project root"
    );
}

/// No network at all: TCP through bash's /dev/tcp and python3, UDP through python3, to
/// listeners this test holds on 127.0.0.1. Nothing may arrive: a connect completes in the
/// listener's backlog (and a datagram in its queue) before the attack's deploy returns, so a
/// non-blocking accept or receive afterwards sees any that got through.
#[test]
fn exec_has_no_network() {
    let p = HostileProject::new();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let tcp_port = tcp.local_addr().unwrap().port().to_string();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let udp_port = udp.local_addr().unwrap().port().to_string();
    let python = |kind: &str, port: &str, body: &str| {
        format!(
            "import socket, sys\ntry:\n    s = socket.socket(socket.AF_INET, socket.{kind})\n    \
             {body}\nexcept OSError as e:\n    sys.exit(f'127.0.0.1:{port} refused: {{e}}')\n"
        )
    };
    let attacks: Vec<(&str, Vec<String>, String)> = vec![
        (
            "bash",
            vec![
                "-c".into(),
                format!("exec 3<>/dev/tcp/127.0.0.1/{tcp_port} && echo hello >&3"),
            ],
            tcp_port.clone(),
        ),
        (
            "python3",
            vec![
                "-c".into(),
                python(
                    "SOCK_STREAM",
                    &tcp_port,
                    &format!("s.connect(('127.0.0.1', {tcp_port})); s.sendall(b'hello')"),
                ),
            ],
            tcp_port.clone(),
        ),
        (
            "python3",
            vec![
                "-c".into(),
                python(
                    "SOCK_DGRAM",
                    &udp_port,
                    &format!("s.sendto(b'hello', ('127.0.0.1', {udp_port}))"),
                ),
            ],
            udp_port.clone(),
        ),
    ];
    let mut serial = 0;
    for (i, (program, args, port)) in attacks.iter().enumerate() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let context = format!("{program} to port {port}");
        exec_attack_manifest(&p, program, &args, &[]);
        let out = p.deploy(&format!("v{i}"));
        serial += 3;
        // Refused at socket creation or at connect; either way the system said no.
        let error = stopped(&p, &out, serial, &[], &[], &context);
        assert_refused(&error, &context);
        match tcp.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("{context}: a TCP connection reached the listener: {other:?}"),
        }
        let mut buf = [0u8; 64];
        match udp.recv_from(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("{context}: a datagram reached the socket: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// exec under a `net` grant: TCP to the granted ports, nothing else
// ---------------------------------------------------------------------------------------------

/// A `net` grant for one port of 127.0.0.1.
fn loopback_grant(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// python3 arguments running `body` (one line, `socket` imported), exiting non-zero with what
/// the system refused.
fn python_attack(body: &str) -> Vec<String> {
    vec![
        "-c".into(),
        format!(
            "import socket, sys\ntry:\n    {body}\nexcept OSError as e:\n    \
             sys.exit(f'refused: {{e}}')\n"
        ),
    ]
}

/// The build phase's details after a deploy that must have completed (five commits), with the
/// aftermath checked.
fn completed(p: &HostileProject, out: &Run, context: &str) -> Value {
    // The program's own outcome first: it says more than the commits it led to.
    if let Ok(doc) = serde_json::from_slice::<Value>(&std::fs::read(p.state_file()).unwrap()) {
        let (status, detail) = phase_of(newest_release(&doc), "build");
        assert_eq!(status, "completed", "{context}: {detail:#}\n{out:?}");
    }
    let doc = p.assert_aftermath(out, 5, &[], context);
    assert_eq!(out.code, 0, "{context}: {out:?}");
    phase_of(newest_release(&doc), "build").1.clone()
}

/// Under a `net` grant a program connects to the granted port, by address and by a name found
/// in /etc/hosts (glibc asks nscd's Unix socket first, which stays refused, and then reads the
/// file), and may pair Unix sockets (curl's resolver signals through a pair).
#[test]
fn exec_under_a_net_grant_reaches_the_granted_port() {
    let p = HostileProject::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "import socket\n\
         a, b = socket.socketpair()\n\
         a.sendall(b'x')\n\
         assert b.recv(1) == b'x'\n\
         for host in ('127.0.0.1', 'localhost'):\n    \
             with socket.create_connection((host, {port})) as s:\n        \
                 s.sendall(host.encode())\n"
    );
    exec_attack_manifest(
        &p,
        "python3",
        &["-c", &script],
        &[("net", &loopback_grant(port))],
    );
    let out = p.deploy("v1");
    completed(&p, &out, "connecting to the granted port");
    // The program closed both connections before the deploy returned: each waits in the
    // listener's backlog with all its bytes.
    let mut got = Vec::new();
    for _ in 0..2 {
        let (mut conn, _) = listener
            .accept()
            .expect("a connection reached the granted port");
        conn.set_nonblocking(false).unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        got.push(text);
    }
    assert_eq!(got, ["127.0.0.1", "localhost"]);
}

/// The manifest's own example: `exec = ["curl"]` and a `net` grant fetch from the granted
/// origin.
#[test]
fn curl_under_a_net_grant_fetches_from_the_granted_origin() {
    let p = HostileProject::new();
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let serve = std::thread::spawn(move || {
        let (mut conn, _) = server.accept().unwrap();
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
            request.push(byte[0]);
        }
        conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });
    let url = format!("http://127.0.0.1:{port}/index.html");
    exec_attack_manifest(
        &p,
        "curl",
        &["-sS", &url],
        &[("net", &loopback_grant(port))],
    );
    let out = p.deploy("v1");
    let detail = completed(&p, &out, "curl to the granted origin");
    assert_eq!(detail["outputs"]["stdout"], "hello", "{detail:#}");
    let request = serve.join().unwrap();
    assert!(request.starts_with("GET /index.html "), "{request:?}");
}

/// Under a `net` grant, everything but a TCP connection to a granted port is still refused:
/// another port (by connect, by TCP Fast Open, which connects without `connect`, and over
/// MPTCP, which Landlock does not govern), binding or listening on a TCP port, a netlink socket,
/// and a Unix socket (Landlock does not govern connecting to one: this one stands for the
/// user's D-Bus or systemd socket, or PostgreSQL's). Nothing may arrive at any listener.
#[test]
fn exec_under_a_net_grant_reaches_nothing_else() {
    let p = HostileProject::new();
    let granted = TcpListener::bind("127.0.0.1:0").unwrap();
    granted.set_nonblocking(true).unwrap();
    let grant = loopback_grant(granted.local_addr().unwrap().port());
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let other_port = other.local_addr().unwrap().port();
    let unix_path = p.outside.path().join("service.sock");
    let unix = std::os::unix::net::UnixListener::bind(&unix_path).unwrap();
    unix.set_nonblocking(true).unwrap();
    const IPPROTO_MPTCP: u32 = 262;
    let to_other = format!("('127.0.0.1', {other_port})");
    let attacks: Vec<(&str, &str, Vec<String>)> = vec![
        (
            "bash's /dev/tcp to another port",
            "bash",
            vec![
                "-c".into(),
                format!("exec 3<>/dev/tcp/127.0.0.1/{other_port} && echo hello >&3"),
            ],
        ),
        (
            "connecting to another port",
            "python3",
            python_attack(&format!(
                "s = socket.socket(); s.connect({to_other}); s.sendall(b'hello')"
            )),
        ),
        (
            "TCP Fast Open to another port",
            "python3",
            python_attack(&format!(
                "s = socket.socket(); s.sendto(b'hello', socket.MSG_FASTOPEN, {to_other})"
            )),
        ),
        (
            "MPTCP to another port",
            "python3",
            python_attack(&format!(
                "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, {IPPROTO_MPTCP}); \
                 s.connect({to_other}); s.sendall(b'hello')"
            )),
        ),
        (
            "binding a TCP port",
            "python3",
            python_attack("s = socket.socket(); s.bind(('127.0.0.1', 0))"),
        ),
        (
            "listening on an ephemeral TCP port",
            "python3",
            python_attack("s = socket.socket(); s.listen()"),
        ),
        (
            "a netlink socket",
            "python3",
            python_attack("socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)"),
        ),
        (
            "a Unix socket outside the grants",
            "python3",
            python_attack(&format!(
                "s = socket.socket(socket.AF_UNIX); s.connect({:?}); s.sendall(b'hello')",
                unix_path.display().to_string()
            )),
        ),
    ];
    let mut serial = 0;
    for (i, (what, program, args)) in attacks.iter().enumerate() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        exec_attack_manifest(&p, program, &args, &[("net", &grant)]);
        let out = p.deploy(&format!("v{i}"));
        serial += 3;
        let error = stopped(&p, &out, serial, &[], &[], what);
        assert_refused(&error, what);
        for (name, listener) in [("granted", &granted), ("other", &other)] {
            match listener.accept() {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                other => panic!("{what}: a TCP connection reached the {name} port: {other:?}"),
            }
        }
        match unix.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("{what}: a connection reached the Unix socket: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// exec: nothing outlives a phase
// ---------------------------------------------------------------------------------------------

/// Background children, a double fork and a `setsid` escapee, all with their output closed so
/// `exec` returns at once: none may be alive when the deploy returns.
#[test]
fn nothing_started_through_exec_outlives_the_phase() {
    let p = HostileProject::new();
    let m = &p.marker.shell_word();
    let script = format!(
        "(exec -a {m} sleep 300) >/dev/null 2>&1 &\n\
         setsid bash -c 'exec -a {m} sleep 301' >/dev/null 2>&1 &\n\
         (bash -c 'exec -a {m} sleep 302' >/dev/null 2>&1 &)\n\
         exit 0"
    );
    exec_attack_manifest(&p, "bash", &["-c", &script], &[]);
    let out = p.deploy("v1");
    let doc = p.assert_aftermath(&out, 5, &[], "background children");
    assert_eq!(
        phase_of(newest_release(&doc), "build").0,
        "completed",
        "{out:?}"
    );
}

/// `exec` returns by the phase deadline even when the program's child keeps the output pipes
/// open after the program exits, and when the program itself never exits; both leave nothing.
#[test]
fn exec_returns_by_the_deadline_when_children_hold_its_output() {
    let p = HostileProject::new();
    let m = &p.marker.shell_word();
    // The program exits at once; its child holds stdout and stderr for 300 s.
    let holder = format!("(exec -a {m} sleep 300) & exit 0");
    p.write_manifest(&[
        phase(
            "build",
            &hostile(),
            &[
                ("mode", "exec-argv"),
                ("program", "bash"),
                ("argv", &argv(&["-c", &holder])),
            ],
        )
        .grant("exec", &["bash"])
        .limit("timeout", "1s"),
        phase("rollout", &noop(), &[]),
    ]);
    let out = p.deploy("v1");
    // Either exec returned when the program exited (its child killed with it: completed), or
    // at the deadline (failed on the timeout); never after.
    let serial = if out.code == 0 { 5 } else { 3 };
    let doc = p.assert_aftermath(&out, serial, &[], "a child holding the output");
    let (status, detail) = phase_of(newest_release(&doc), "build");
    assert!(
        status == "completed"
            || detail["error"]
                .as_str()
                .is_some_and(|e| e.contains("timeout limit of 1s")),
        "{status}: {detail:#}\n{out:?}"
    );

    // The program itself never exits.
    let never = format!("(exec -a {m} sleep 300) & exec -a {m} sleep 299");
    p.write_manifest(&[
        phase(
            "build",
            &hostile(),
            &[
                ("mode", "exec-argv"),
                ("program", "bash"),
                ("argv", &argv(&["-c", &never])),
            ],
        )
        .grant("exec", &["bash"])
        .limit("timeout", "1s"),
        phase("rollout", &noop(), &[]),
    ]);
    let serial = doc["serial"].as_u64().unwrap();
    let out = p.deploy("v2");
    let error = stopped(
        &p,
        &out,
        serial + 3,
        &[],
        &["timeout limit of 1s"],
        "never exits",
    );
    assert!(error.contains("exceeded"), "{error}");
}

/// `deploy` or `rollback` interrupted by `signal` while the exec'd program of its build phase
/// runs (held on a FIFO gate, with a background child and a `setsid` escapee already started):
/// exit 2, the phase recorded interrupted, and nothing the program started alive afterwards,
/// checked while the gate is still closed, so nothing could have ended by itself.
fn interrupted_mid_exec(operation: &str, signal: rustix::process::Signal, name: &str) {
    let p = HostileProject::new();
    let m = &p.marker.shell_word();
    std::fs::create_dir_all(p.root().join("gate")).unwrap();
    let script = format!(
        "test {{{{operation}}}} = {operation} || exit 0\n\
         (exec -a {m} sleep 300) >/dev/null 2>&1 &\n\
         setsid bash -c 'exec -a {m} sleep 301' >/dev/null 2>&1 &\n\
         echo ready > gate/ready.fifo\n\
         exec -a {m} cat gate/gate.fifo"
    );
    exec_attack_manifest(&p, "bash", &["-c", &script], &[("write", "gate")]);
    let mut serial = 0;
    let args: Vec<&str> = if operation == "rollback" {
        for v in ["v1", "v2"] {
            let out = p.deploy(v);
            assert_eq!(out.code, 0, "{out:?}");
            serial += 5;
        }
        vec!["rollback", "--env", "prod", "--to-previous"]
    } else {
        vec!["deploy", "--env", "prod", "--version", "v3"]
    };
    let mut gate = ExecGate::new(&p.root().join("gate"), "ready.fifo", "gate.fifo");
    let spawned = spawn_to_files(&mut p.command(&args));
    gate.wait_ready(&spawned);
    spawned.signal(signal);
    let out = spawned.wait(name);
    let context = format!("{operation} interrupted by {name}");
    // Before the gate opens: whatever is still alive was not killed.
    p.marker.assert_none_left(&context);
    gate.release();
    // What was recorded first (it says more than the commit count), then the aftermath: three
    // commits (create, build running, build interrupted).
    let doc: Value = serde_json::from_slice(&std::fs::read(p.state_file()).unwrap()).unwrap();
    let release = newest_release(&doc);
    assert_eq!(release["operation"], operation, "{context}");
    let (status, detail) = phase_of(release, "build");
    assert_eq!(status, "failed", "{context}: {detail:#}");
    assert_eq!(
        detail["error"],
        format!("interrupted: received {name} during build"),
        "{context}: the phase must be recorded interrupted, not failed by its killed program"
    );
    assert_eq!(phase_of(release, "rollout").0, "skipped", "{context}");
    p.assert_aftermath(&out, serial + 3, &[], &context);
    assert_eq!(out.code, 2, "{context}: {out:?}");
    assert!(
        out.stderr.contains(&format!("Interrupted by {name}")),
        "{context}: {out:?}"
    );
}

#[test]
fn sigint_mid_exec_in_a_deploy_leaves_no_descendant() {
    interrupted_mid_exec("deploy", rustix::process::Signal::INT, "SIGINT");
}

#[test]
fn sigterm_mid_exec_in_a_deploy_leaves_no_descendant() {
    interrupted_mid_exec("deploy", rustix::process::Signal::TERM, "SIGTERM");
}

#[test]
fn sigint_mid_exec_in_a_rollback_leaves_no_descendant() {
    interrupted_mid_exec("rollback", rustix::process::Signal::INT, "SIGINT");
}

#[test]
fn sigterm_mid_exec_in_a_rollback_leaves_no_descendant() {
    interrupted_mid_exec("rollback", rustix::process::Signal::TERM, "SIGTERM");
}

/// `plugin test` runs the plugin's scenarios with `--exec` grants too: interrupted while an
/// exec'd program (and what it started) runs, it leaves none of them behind. Its programs run
/// in a temporary copy of the project no FIFO gate can reach, so the marked processes showing
/// up in /proc is how the test knows they run.
fn plugin_test_interrupted_mid_exec(signal: rustix::process::Signal, name: &str) {
    let p = HostileProject::new();
    let m = &p.marker.shell_word();
    let script = format!(
        "(exec -a {m} sleep 300) >/dev/null 2>&1 &\n\
         setsid bash -c 'exec -a {m} sleep 301' >/dev/null 2>&1 &\n\
         exec -a {m} sleep 299"
    );
    let plugin = hostile().display().to_string();
    let set_argv = format!("argv={}", argv(&["-c", &script]));
    let args = [
        "plugin",
        "test",
        &plugin,
        "--set",
        "mode=exec-argv",
        "--set",
        "program=bash",
        "--set",
        &set_argv,
        "--exec",
        "bash",
        "--timeout",
        "10m",
    ];
    let spawned = spawn_to_files(&mut p.command(&args));
    p.marker.wait_for_carrier(&spawned);
    spawned.signal(signal);
    let out = spawned.wait(name);
    p.marker
        .assert_none_left(&format!("plugin test interrupted by {name}: {out:?}"));
    assert_ne!(out.code, 0, "{out:?}");
    for secret in &p.secrets {
        assert!(!out.stdout.contains(secret.as_str()) && !out.stderr.contains(secret.as_str()));
    }
}

#[test]
fn sigint_mid_exec_in_plugin_test_leaves_no_descendant() {
    plugin_test_interrupted_mid_exec(rustix::process::Signal::INT, "SIGINT");
}

#[test]
fn sigterm_mid_exec_in_plugin_test_leaves_no_descendant() {
    plugin_test_interrupted_mid_exec(rustix::process::Signal::TERM, "SIGTERM");
}

// ---------------------------------------------------------------------------------------------
// Grants are resolved when their phase starts, without following symlinks out
// ---------------------------------------------------------------------------------------------

/// `build` plants a symlink inside its write grant `dist`; `rollout` is granted the link's
/// path and tries to use it (`attack`, an `fs` operation on `path`). The rollout must fail
/// before the plugin runs, naming the grant and the link. Five commits.
fn planted_link(
    p: &HostileProject,
    plant: PhaseToml,
    grant_kind: &str,
    grant: &str,
    attack: &[(&str, &str)],
) {
    let mut config = vec![("mode", "fs")];
    config.extend_from_slice(attack);
    p.write_manifest(&[
        plant,
        phase("rollout", &hostile(), &config).grant(grant_kind, &[grant]),
    ]);
    let out = p.deploy("v1");
    let context = format!("{grant_kind} grant {grant}");
    let doc = p.assert_aftermath(&out, 5, &["appended by hostile"], &context);
    let release = newest_release(&doc);
    let (status, detail) = phase_of(release, "build");
    assert_eq!(
        status, "completed",
        "{context}: planting failed: {detail:#}"
    );
    let (status, detail) = phase_of(release, "rollout");
    assert_eq!(status, "failed", "{context}: {detail:#}\n{out:?}");
    let error = detail["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(grant) && error.contains("symbolic link"),
        "{context}: the error must name the grant and the link: {error:?}"
    );
    assert_eq!(out.code, 2, "{out:?}");
}

fn plant_wasi_link(target: &str, link: &str) -> PhaseToml {
    phase(
        "build",
        &hostile(),
        &[("mode", "plant-link"), ("target", target), ("link", link)],
    )
    .grant("write", &["dist"])
}

#[test]
fn a_symlink_to_the_state_planted_through_wasi_fails_the_later_phase() {
    planted_link(
        &HostileProject::new(),
        plant_wasi_link("../.stagecraft", "dist/site"),
        "write",
        "dist/site",
        &[("op", "append"), ("path", "dist/site/releases.json")],
    );
}

#[test]
fn a_symlink_to_the_filesystem_root_planted_through_wasi_fails_the_later_phase() {
    // dist/root -> ../../.. with one `..` per component of the project's dist/ path: `/`
    // wherever the temporary directory is (the issue's `../../../..` from /tmp/x/dist).
    let p = HostileProject::new();
    let depth = p.root().join("dist").components().count() - 1;
    let up = vec![".."; depth].join("/");
    let outside = p.outside_secret_file();
    let through = format!(
        "dist/root/{}",
        outside.display().to_string().trim_start_matches('/')
    );
    planted_link(
        &p,
        plant_wasi_link(&up, "dist/root"),
        "read",
        "dist/root",
        &[("op", "read"), ("path", &through)],
    );
}

#[test]
fn a_symlink_to_the_state_planted_through_exec_fails_the_later_phase() {
    let plant = phase(
        "build",
        &hostile(),
        &[
            ("mode", "exec-argv"),
            ("program", "ln"),
            ("argv", &argv(&["-s", "../.stagecraft", "dist/site"])),
        ],
    )
    .grant("exec", &["ln"])
    .grant("write", &["dist"]);
    planted_link(
        &HostileProject::new(),
        plant,
        "write",
        "dist/site",
        &[("op", "append"), ("path", "dist/site/releases.json")],
    );
}

// ---------------------------------------------------------------------------------------------
// Plugin text is bounded before it is kept or printed
// ---------------------------------------------------------------------------------------------

const FIFTY_MB: usize = 50 << 20;

/// The host's memory stays near the phase's memory limit (128MiB here) whatever the plugin
/// returns; before the bounds a 50 MB reason took it past 1 GiB.
const HOST_MEMORY_CEILING: u64 = 512 << 20;

/// `build` hands the host `repeat` copies of `text` as `field`; `rollout` is noop. Returns the
/// run and the build phase's record, with the aftermath checked and the state and output
/// bounded.
fn huge_text(field: &str, text: &str, repeat: usize, count: usize) -> (Run, Value) {
    let p = HostileProject::new();
    let (repeat, count) = (repeat.to_string(), count.to_string());
    p.write_manifest(&[
        phase(
            "build",
            &hostile(),
            &[
                ("mode", "text"),
                ("field", field),
                ("text", text),
                ("repeat", &repeat),
                ("count", &count),
            ],
        )
        .limit("memory", "128MiB"),
        phase("rollout", &noop(), &[]),
    ]);
    let out = p.deploy("v1");
    let failed = out.code != 0;
    let doc = p.assert_aftermath(&out, if failed { 3 } else { 5 }, &[], field);
    let size = std::fs::metadata(p.state_file()).unwrap().len();
    assert!(
        size < 1 << 20,
        "{field}: the state file grew to {size} bytes"
    );
    assert!(
        out.stdout.len() < 64 << 10 && out.stderr.len() < 4 << 20,
        "{field}: output of {} + {} bytes",
        out.stdout.len(),
        out.stderr.len()
    );
    let rss = children_max_rss_bytes();
    assert!(
        rss < HOST_MEMORY_CEILING,
        "{field}: stagecraft's resident memory reached {} MiB",
        rss >> 20
    );
    let (_, detail) = phase_of(newest_release(&doc), "build");
    (out, detail.clone())
}

/// `… [cut N bytes]` in `kept`, with N close to `total` (the bounds are kilobytes).
fn assert_cut(kept: &str, total: usize, context: &str) {
    let Some(at) = kept.find("[cut ") else {
        panic!(
            "{context}: no `[cut N bytes]` marker in {} bytes kept: {:?}",
            kept.len(),
            kept.chars().take(80).collect::<String>()
        );
    };
    let n: usize = kept[at + 5..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{context}: unreadable cut marker in {kept:?}"));
    assert!(
        n <= total && n + (1 << 20) >= total,
        "{context}: cut {n} of {total} bytes"
    );
}

#[test]
fn a_50_mb_summary_is_cut() {
    let (out, detail) = huge_text("summary", "\u{1}", FIFTY_MB, 1);
    assert_eq!(out.code, 0, "{out:?}");
    assert_cut(
        detail["summary"].as_str().unwrap_or_default(),
        FIFTY_MB,
        "summary",
    );
}

#[test]
fn a_50_mb_skip_reason_is_cut() {
    let (out, detail) = huge_text("skip", "\u{1}", FIFTY_MB, 1);
    assert_eq!(out.code, 0, "{out:?}");
    assert_cut(
        detail["summary"].as_str().unwrap_or_default(),
        FIFTY_MB,
        "skip",
    );
}

#[test]
fn a_50_mb_error_message_is_cut() {
    let (out, detail) = huge_text("error", "\u{1}", FIFTY_MB, 1);
    assert_eq!(out.code, 2, "{out:?}");
    assert_cut(
        detail["error"].as_str().unwrap_or_default(),
        FIFTY_MB,
        "error",
    );
}

#[test]
fn a_50_mb_error_details_is_cut() {
    let (out, detail) = huge_text("details", "\u{1}", FIFTY_MB, 1);
    assert_eq!(out.code, 2, "{out:?}");
    assert_cut(
        detail["error_details"].as_str().unwrap_or_default(),
        FIFTY_MB,
        "details",
    );
}

/// A single 50 MB log line and 50 MB of stdout lines: the log keeps its budget and says so.
#[test]
fn log_and_stdout_floods_are_bounded() {
    let (out, _) = huge_text("log", "x", FIFTY_MB, 1);
    assert!(out.stderr.contains("log limit"), "{}", tail_of(&out.stderr));
    let line = "y".repeat(1023);
    let (out, _) = huge_text("stdout", &line, 1, 50 << 10);
    assert!(out.stderr.contains("log limit"), "{}", tail_of(&out.stderr));
}

/// Two million empty log lines: each costs something, so the log limit trips (and says so)
/// where free lines would have gone on for ever.
#[test]
fn an_endless_stream_of_empty_log_lines_trips_the_log_limit() {
    let (out, detail) = huge_text("log", "", 1, 2_000_000);
    let said = out.stderr.contains("log limit")
        || detail["error"]
            .as_str()
            .is_some_and(|e| e.contains("log limit"));
    assert!(said, "{detail:#}\n{}", tail_of(&out.stderr));
}

/// Sixty-four `exec` calls naming a 64 MiB program: refused, and neither the refusals the host
/// keeps nor the log grow with them.
#[test]
fn exec_of_a_64_mib_program_name_64_times_stays_bounded() {
    let (out, detail) = huge_text("exec-program", "x", 64 << 20, 64);
    assert_eq!(out.code, 2, "{out:?}");
    let error = detail["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("64 of 64 exec calls refused"),
        "{error:.200}"
    );
    assert!(
        error.contains("[cut "),
        "the refusal names the program, cut: {error:.400}"
    );
}

fn tail_of(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    chars[chars.len().saturating_sub(400)..].iter().collect()
}

// ---------------------------------------------------------------------------------------------
// Plugin text reaches the terminal escaped
// ---------------------------------------------------------------------------------------------

/// The fixture's default text: set the window title, clear the screen, turn red, return the
/// carriage, then forge a `rollout  completed` line.
#[test]
fn plugin_text_reaches_the_terminal_escaped_one_line_per_phase() {
    for field in [
        "summary", "skip", "log", "stdout", "error", "details", "output",
    ] {
        let p = HostileProject::new();
        p.write_manifest(&[
            phase("build", &hostile(), &[("mode", "text"), ("field", field)]),
            phase("rollout", &noop(), &[]),
        ]);
        let out = p.deploy("v1");
        let failed = matches!(field, "error" | "details");
        let doc = p.assert_aftermath(&out, if failed { 3 } else { 5 }, &[], field);
        assert_eq!(out.code, if failed { 2 } else { 0 }, "{field}: {out:?}");
        assert_no_raw_controls(&out.stdout, &format!("{field}: deploy stdout"));
        assert_no_raw_controls(&out.stderr, &format!("{field}: deploy stderr"));
        // The release line, one line per phase run, and the result line on success (a failed
        // phase ends the listing; the error goes to stderr).
        let lines: Vec<&str> = out.stdout.lines().collect();
        let expected = if failed { 2 } else { 4 };
        assert_eq!(lines.len(), expected, "{field}: {out:?}");
        assert!(lines[1].starts_with("  build "), "{field}: {out:?}");
        if !failed {
            assert!(lines[2].starts_with("  rollout       "), "{field}: {out:?}");
            assert!(!lines[2].contains("forged"), "{field}: {out:?}");
        }
        // Plugin log lines stay tagged: no line of stderr is the plugin's own.
        for line in out.stderr.lines() {
            assert!(
                line.starts_with("[build ") || line.starts_with("Error: "),
                "{field}: an untagged stderr line {line:?}"
            );
        }
        // Commands that print recorded text later escape it too.
        let id = newest_release(&doc)["id"].as_str().unwrap().to_string();
        for args in [
            vec!["releases", "show", id.as_str()],
            vec!["releases", "list", "--env", "prod"],
        ] {
            let shown = p.run(&args);
            assert_eq!(shown.code, 0, "{args:?}: {shown:?}");
            assert_no_raw_controls(&shown.stdout, &format!("{field}: {args:?}"));
            assert_no_raw_controls(&shown.stderr, &format!("{field}: {args:?}"));
        }
    }
}

#[test]
fn a_version_or_commit_with_control_characters_is_refused() {
    let p = HostileProject::new();
    p.write_manifest(&[phase("build", &noop(), &[])]);
    let out = p.deploy("v1\u{1b}]0;x\u{7}");
    // Invalid input: exit 1 (spec/cli.md).
    assert_eq!(out.code, 1, "{out:?}");
    assert_no_raw_controls(&out.stdout, "stdout");
    assert_no_raw_controls(&out.stderr, "stderr");
    assert!(out.stderr.contains("--version"), "{out:?}");
    assert!(!p.state_file().exists(), "a refused version wrote state");

    let out = p.run(&[
        "deploy",
        "--env",
        "prod",
        "--version",
        "v1",
        "--commit",
        "abc\u{1b}[2J\r\n  build         completed forged",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_no_raw_controls(&out.stdout, "stdout");
    assert_no_raw_controls(&out.stderr, "stderr");
    assert!(out.stderr.contains("--commit"), "{out:?}");
    assert!(!p.state_file().exists(), "a refused commit wrote state");
}

// ---------------------------------------------------------------------------------------------
// Grants that would change what runs, or hand over the state's keys, are refused at load
// ---------------------------------------------------------------------------------------------

/// With the state outside the project (where a write grant over the project root is allowed),
/// a grant that covers the manifest, a plugin, or the compiled-component cache, or an `env`
/// grant naming the state database's URL variable or `PGPASSWORD`, is refused before anything
/// runs or is written.
#[test]
fn grants_that_would_change_what_runs_are_refused_at_load() {
    let p = HostileProject::new();
    let state = p.outside.path().join("state.json");
    std::fs::create_dir_all(p.root().join("plugins")).unwrap();
    std::fs::copy(hostile(), p.root().join("plugins/hostile.wasm")).unwrap();
    let local = PathBuf::from("plugins/hostile.wasm");
    let cache = stagecraft_tests::shared_cache_dir().display().to_string();
    let cases: Vec<(PhaseToml, &str)> = vec![
        (
            phase("build", &noop(), &[]).grant("write", &["."]),
            "stagecraft.toml",
        ),
        (
            phase("build", &noop(), &[]).grant("write", &["stagecraft.toml"]),
            "stagecraft.toml",
        ),
        (
            phase("build", &local, &[("mode", "ok")]).grant("write", &["plugins"]),
            "plugins",
        ),
        (
            phase("build", &noop(), &[]).grant("read", &[&cache]),
            &cache,
        ),
        (
            phase("build", &noop(), &[]).grant("env", &["STAGECRAFT_DATABASE_URL"]),
            "STAGECRAFT_DATABASE_URL",
        ),
        (
            phase("build", &noop(), &[]).grant("env", &["PGPASSWORD"]),
            "PGPASSWORD",
        ),
    ];
    for (build, names) in cases {
        p.write_manifest(&[build, phase("rollout", &noop(), &[])]);
        let written = std::fs::read(p.root().join("stagecraft.toml")).unwrap();
        let mut cmd = p.command(&["deploy", "--env", "prod", "--version", "v1"]);
        cmd.env("STAGECRAFT_STATE_FILE", &state);
        let out = run_guarded(cmd, names);
        let context = String::from_utf8_lossy(&written).into_owned();
        // A manifest error: exit 1 (spec/cli.md).
        assert_eq!(out.code, 1, "{context}: {out:?}");
        assert!(out.stderr.contains(names), "{context}: {out:?}");
        assert!(!state.exists(), "{context}: state was written");
        assert!(!p.state_file().exists(), "{context}: state was written");
        assert_eq!(
            std::fs::read(p.root().join("stagecraft.toml")).unwrap(),
            written
        );
        for secret in &p.secrets {
            assert!(!out.stderr.contains(secret.as_str()), "{context}: {out:?}");
        }
    }
}

/// An exec'd program cannot signal a process outside its phase: a `sleep` this test started
/// is neither dead nor has a SIGKILL pending after the attack (the kernel queues a signal before
/// `kill` returns, so a successful kill would show).
#[test]
fn exec_cannot_signal_other_processes() {
    let p = HostileProject::new();
    let mut victim = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .expect("spawn the victim");
    let pid = victim.id();
    exec_attack_manifest(&p, "sh", &["-c", &format!("kill -KILL {pid}")], &[]);
    let out = p.deploy("v1");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let _ = victim.kill();
    let _ = victim.wait();
    let pending_kill = status.lines().any(|l| {
        ["SigPnd:", "ShdPnd:"].iter().any(|key| {
            l.strip_prefix(key)
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
                .is_some_and(|m| m & (1 << 8) != 0)
        })
    });
    let state = status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .unwrap_or("")
        .trim()
        .to_string();
    assert!(
        !pending_kill && !state.starts_with('Z') && !state.is_empty(),
        "the attack killed a process outside its phase (state {state:?}): {out:?}"
    );
    stopped(&p, &out, 3, &[], &["kill"], "kill of an outside process");
}

// ---------------------------------------------------------------------------------------------
// The checks themselves can fail
// ---------------------------------------------------------------------------------------------

/// The process scan sees a live process carrying the marker (and the marker's drop kills it).
#[test]
fn the_leftover_process_check_sees_a_live_process() {
    let marker = ProcessMarker::new();
    let mut child = std::process::Command::new("bash")
        .args(["-c", &format!("exec -a {} sleep 300", marker.marker)])
        .spawn()
        .unwrap();
    // `exec -a` has replaced bash once the command line carries the marker; until then the
    // scan may miss it, so wait for that (bounded), not for a time.
    let cmdline = format!("/proc/{}/cmdline", child.id());
    for _ in 0..100_000 {
        if std::fs::read(&cmdline)
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker.marker))
        {
            break;
        }
        std::thread::yield_now();
    }
    let caught = std::panic::catch_unwind(|| marker.assert_none_left("self-test"));
    drop(marker);
    let _ = child.wait();
    assert!(
        caught.is_err(),
        "a live `sleep` carrying the marker was not seen"
    );
}

/// The state check refuses a state file with one byte appended or a field edited by hand.
#[test]
fn the_state_check_sees_an_appended_byte_and_a_hand_edit() {
    let p = HostileProject::new();
    p.write_manifest(&[phase("build", &noop(), &[])]);
    let out = p.deploy("v1");
    assert_eq!(out.code, 0, "{out:?}");
    let state = p.state_file();
    assert_state_written_by_host(&state, 3);
    let original = std::fs::read_to_string(&state).unwrap();
    for tampered in [
        format!("{original} "),
        original.replacen("\"version\": \"v1\"", "\"version\":  \"v1\"", 1),
        original.replacen("\"serial\": 3", "\"serial\": 4", 1),
    ] {
        assert_ne!(tampered, original);
        std::fs::write(&state, &tampered).unwrap();
        let caught = std::panic::catch_unwind(|| assert_state_written_by_host(&state, 3));
        assert!(caught.is_err(), "not caught: {tampered}");
    }
}

/// A report whose 2,048 output values all point at one 1 MiB buffer describes 2 GiB of strings
/// in a few KiB of guest memory. The host copies at most MAX_COPIED_PER_CALL (128 MiB) out of
/// a guest per call, so the phase fails instead of the host growing by 2 GiB.
#[test]
fn a_report_of_aliased_strings_cannot_make_the_host_copy_gigabytes() {
    let p = HostileProject::new();
    p.write_manifest(&[
        phase(
            "build",
            &hostile(),
            &[("mode", "outputs-alias"), ("count", "2048")],
        )
        .limit("memory", "128MiB"),
        phase("rollout", &noop(), &[]),
    ]);
    let out = p.deploy("v1");
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stdout
            .contains("too much data is being copied between the host and the guest"),
        "{out:?}"
    );
    p.assert_aftermath(&out, 3, &[], "outputs-alias");
    let rss = children_max_rss_bytes();
    assert!(
        rss < HOST_MEMORY_CEILING,
        "stagecraft's resident memory reached {} MiB",
        rss >> 20
    );
}

/// What Landlock (ABI 7) does not govern, the seccomp filter refuses: changing a file's mode,
/// owner or extended attributes (anywhere: the state directory, a read grant, a setuid bit in a
/// write grant), Unix datagram sockets through `socketpair`, the session keyring, and inotify.
/// Each attack exits 0 only if it got through, which would complete the phase.
#[test]
fn exec_cannot_change_metadata_or_reach_keyrings_datagrams_or_inotify() {
    use std::os::unix::fs::PermissionsExt;
    let mut attacks = vec![
        ("chmod the state directory", "chmod 777 .stagecraft"),
        ("chmod a read grant's file", "chmod 000 site/a.txt"),
        (
            "a setuid file in a write grant",
            "touch dist/x && chmod 4755 dist/x",
        ),
        (
            "an extended attribute on the state file",
            "/usr/bin/python3 -c \"import os; os.setxattr('.stagecraft/releases.json', 'user.x', b'1')\"",
        ),
        (
            "a Unix datagram socket pair",
            "/usr/bin/python3 -c \"import socket; socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\"",
        ),
    ];
    #[cfg(target_arch = "x86_64")]
    attacks.extend([
        (
            "the session keyring (keyctl GET_KEYRING_ID)",
            "perl -e 'exit(syscall(250, 0, -3, 0) >= 0 ? 0 : 1)'",
        ),
        (
            "an inotify instance (inotify_init1)",
            "perl -e 'exit(syscall(294, 0) >= 0 ? 0 : 1)'",
        ),
    ]);
    for (what, script) in attacks {
        let p = HostileProject::new();
        std::fs::create_dir_all(p.root().join("site")).unwrap();
        std::fs::write(p.root().join("site/a.txt"), "site").unwrap();
        exec_attack_manifest(
            &p,
            "bash",
            &["-c", script],
            &[("read", "site"), ("write", "dist")],
        );
        let out = p.deploy("v1");
        assert_eq!(out.code, 2, "{what}: the attack got through: {out:?}");
        p.assert_aftermath(&out, 3, &[], what);
        let mode = |path: &str| {
            std::fs::metadata(p.root().join(path))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_ne!(mode(".stagecraft"), 0o777, "{what}");
        assert_eq!(mode("site/a.txt") & 0o400, 0o400, "{what}");
        if let Ok(meta) = std::fs::metadata(p.root().join("dist/x")) {
            assert_eq!(meta.permissions().mode() & 0o4000, 0, "{what}: setuid");
        }
    }
}

/// System V IPC objects an exec'd program creates live in its own IPC namespace: the host never
/// sees them, and they die with the program (no channel between phases with different grants).
#[test]
fn exec_sysv_ipc_objects_stay_inside_and_die_with_the_program() {
    const KEY: u32 = 0x5eca11;
    let p = HostileProject::new();
    let script = format!(
        "perl -e 'use IPC::SysV qw(IPC_CREAT); exit(defined(shmget({KEY}, 4096, IPC_CREAT|0600)) ? 0 : 1)'"
    );
    exec_attack_manifest(&p, "bash", &["-c", &script], &[]);
    let out = p.deploy("v1");
    assert_eq!(out.code, 0, "creating a segment inside is allowed: {out:?}");
    let host_segments = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    assert!(
        !host_segments
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some(&KEY.to_string())),
        "the program's segment is visible to the host:\n{host_segments}"
    );
}
