//! What a deploy shows while it waits: live lines on a terminal (run under a pseudo-terminal
//! through util-linux `script`, the screen rebuilt with the vt100 crate), plain lines on a pipe
//! or with `NO_COLOR` / `TERM=dumb`.
//!
//! Nothing here depends on timing: a phase that must be seen running blocks on a FIFO until the
//! test has seen what it looks for, and every wait for output has a generous limit that only
//! turns a hang into a failure.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use stagecraft_tests::{blocking_manifest, stagecraft, stagecraft_bin, BlockedDeploy, Gate, Run};

const ROWS: u16 = 40;
const COLS: u16 = 100;
/// Only a hang reaches it.
const HANG: Duration = Duration::from_secs(120);

/// A project of [`blocking_manifest`] with one environment, `prod`, and its `gates/`.
fn blocking_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stagecraft.toml"),
        blocking_manifest(&["prod"]),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("gates")).unwrap();
    dir
}

/// `stagecraft <args>` on a pseudo-terminal of ROWS x COLS, its output collected as it comes.
struct Pty {
    child: Child,
    output: Arc<(Mutex<Vec<u8>>, Condvar)>,
    /// The thread that collects the output; it ends at EOF, once `script` and the pty are gone.
    reader: std::thread::JoinHandle<()>,
}

impl Pty {
    /// `envs` are set (Some) or removed (None) on top of the test harness's environment.
    fn spawn(cwd: &Path, args: &[&str], envs: &[(&str, Option<&str>)]) -> Pty {
        let harness = stagecraft(cwd);
        let quoted: Vec<String> = std::iter::once(stagecraft_bin().to_str().unwrap())
            .chain(args.iter().copied())
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let line = format!("stty cols {COLS} rows {ROWS}; exec {}", quoted.join(" "));
        let mut cmd = Command::new("script");
        cmd.args(["-qfec", &line, "/dev/null"])
            .current_dir(cwd)
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in harness.get_envs() {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        for (key, value) in envs {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        let mut child = cmd.spawn().expect("spawn script (util-linux)");
        let mut stdout = child.stdout.take().unwrap();
        let output = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = Arc::clone(&output);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = stdout.read(&mut buf).unwrap_or(0);
                let (bytes, grew) = &*sink;
                if n > 0 {
                    bytes.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                grew.notify_all();
                if n == 0 {
                    break;
                }
            }
        });
        Pty {
            child,
            output,
            reader,
        }
    }

    /// Wait until the screen shows what `seen` looks for; panics with the screen on a hang.
    fn wait_for(&self, what: &str, seen: impl Fn(&[String]) -> bool) -> Vec<String> {
        let started = Instant::now();
        let (bytes, grew) = &*self.output;
        let mut guard = bytes.lock().unwrap();
        loop {
            let rows = screen(&guard);
            if seen(&rows) {
                return rows;
            }
            let left = HANG.checked_sub(started.elapsed()).unwrap_or_else(|| {
                panic!("the terminal never showed {what}:\n{}", rows.join("\n"))
            });
            guard = grew.wait_timeout(guard, left).unwrap().0;
        }
    }

    /// Wait for the command to exit; its exit code and the final screen.
    fn finish(mut self) -> (i32, Vec<String>, Vec<u8>) {
        let status = self.child.wait().unwrap();
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        // Everything `script` wrote is collected once its reader has seen EOF.
        self.reader.join().expect("the output reader");
        let guard = self.output.0.lock().unwrap();
        let raw = guard.clone();
        (status.code().unwrap_or(-1), screen(&raw), raw)
    }
}

/// The screen's rows after `bytes`, trailing blanks trimmed.
fn screen(bytes: &[u8]) -> Vec<String> {
    let mut parser = vt100::Parser::new(ROWS, COLS, 0);
    parser.process(bytes);
    parser
        .screen()
        .contents()
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// A live spinner row ends in a clock of tenths of a second: `running builtin:exec 1.3s`.
fn ends_in_a_clock(row: &str) -> bool {
    let Some(clock) = row.rsplit(' ').next() else {
        return false;
    };
    let Some(secs) = clock.strip_suffix('s') else {
        return false;
    };
    secs.split_once('.').is_some_and(|(whole, tenth)| {
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && tenth.len() == 1
            && tenth.bytes().all(|b| b.is_ascii_digit())
    })
}

#[test]
fn a_running_phase_is_one_live_line_with_its_time_that_log_lines_print_above() {
    let project = blocking_project();
    let mut gate = Gate::new(project.path(), "v1");
    let pty = Pty::spawn(
        project.path(),
        &["deploy", "--env", "prod", "--version", "v1"],
        &[],
    );
    // builtin:exec logs the command it runs, while the build's live line is up: the log line
    // stays, and the live line is drawn again below it.
    let rows = pty.wait_for("the build's live line below its log line", |rows| {
        let log = rows
            .iter()
            .position(|r| r.starts_with("[build builtin:exec]") && r.contains("gate-v1.fifo"));
        let live = rows
            .iter()
            .rposition(|r| r.starts_with("  build ") && r.contains("running builtin:exec"));
        matches!((log, live), (Some(log), Some(live)) if live > log)
    });
    let live = rows.iter().rfind(|r| r.contains("running builtin:exec"));
    assert!(
        live.is_some_and(|r| ends_in_a_clock(r)),
        "the live line counts seconds: {rows:#?}"
    );
    gate.open();
    let (code, rows, _) = pty.finish();
    assert_eq!(code, 0, "{rows:#?}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("  build         completed")),
        "{rows:#?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("  finalize      completed")),
        "{rows:#?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("[build builtin:exec]") && r.contains("gate-v1.fifo")),
        "the log line is still on the screen: {rows:#?}"
    );
    assert!(
        !rows.iter().any(|r| r.contains("running builtin:")),
        "no live line is left behind: {rows:#?}"
    );
}

#[test]
fn a_first_compile_is_said_live_on_a_terminal_and_plainly_elsewhere() {
    let project = blocking_project();
    std::fs::write(project.path().join("gates/gate-v1.fifo"), "").unwrap();
    std::fs::write(project.path().join("gates/gate-v2.fifo"), "").unwrap();
    std::fs::write(project.path().join("gates/gate-v3.fifo"), "").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();

    // A terminal: the line is drawn, then erased.
    let pty = Pty::spawn(
        project.path(),
        &["deploy", "--env", "prod", "--version", "v1"],
        &[("STAGECRAFT_CACHE_DIR", Some(cache_dir))],
    );
    let (code, rows, raw) = pty.finish();
    assert_eq!(code, 0, "{rows:#?}");
    let raw = String::from_utf8_lossy(&raw);
    assert!(
        raw.contains("compiling builtin:exec for phase build (first use, cached afterwards)"),
        "{raw:?}"
    );
    assert!(
        !rows.iter().any(|r| r.contains("compiling")),
        "erased once compiled: {rows:#?}"
    );

    // A pipe, with a cold cache again: one plain line per compiled plugin, no control characters.
    let cold = tempfile::tempdir().unwrap();
    let out: Run = stagecraft(project.path())
        .args(["deploy", "--env", "prod", "--version", "v2"])
        .env("STAGECRAFT_CACHE_DIR", cold.path())
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("compiling "))
            .collect::<Vec<_>>(),
        [
            "compiling builtin:exec for phase build (first use, cached afterwards)...",
            "compiling builtin:noop for phase finalize (first use, cached afterwards)...",
        ],
        "{out:?}"
    );
    assert!(!out.stderr.contains(['\x1b', '\r']), "{out:?}");

    // Cached now: nothing to say.
    let out: Run = stagecraft(project.path())
        .args(["deploy", "--env", "prod", "--version", "v3"])
        .env("STAGECRAFT_CACHE_DIR", cold.path())
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("compiling"), "{out:?}");
}

#[test]
fn no_color_or_a_dumb_terminal_gets_plain_lines_on_a_terminal() {
    let project = blocking_project();
    for (i, envs) in [
        [("NO_COLOR", Some("1")), ("TERM", Some("xterm"))],
        [("NO_COLOR", None), ("TERM", Some("dumb"))],
    ]
    .iter()
    .enumerate()
    {
        let version = format!("v{i}");
        std::fs::write(
            project.path().join(format!("gates/gate-{version}.fifo")),
            "",
        )
        .unwrap();
        let cache = tempfile::tempdir().unwrap();
        let mut envs = envs.to_vec();
        envs.push(("STAGECRAFT_CACHE_DIR", cache.path().to_str()));
        let pty = Pty::spawn(
            project.path(),
            &["deploy", "--env", "prod", "--version", &version],
            &envs,
        );
        let (code, rows, raw) = pty.finish();
        assert_eq!(code, 0, "{envs:?}: {rows:#?}");
        assert!(
            !raw.contains(&0x1b),
            "{envs:?}: no escape sequences: {:?}",
            String::from_utf8_lossy(&raw)
        );
        assert!(
            rows.iter()
                .any(|r| r
                    == "compiling builtin:exec for phase build (first use, cached afterwards)..."),
            "{envs:?}: {rows:#?}"
        );
    }
}

#[test]
fn a_lease_wait_names_the_holder_then_says_how_long_it_waited() {
    let project = blocking_project();
    let mut first = BlockedDeploy::start(
        {
            let mut cmd = stagecraft(project.path());
            cmd.args(["deploy", "--env", "prod", "--version", "v1"]);
            cmd
        },
        project.path(),
        "v1",
    );
    let pid = first.child.id();
    std::fs::write(project.path().join("gates/gate-v2.fifo"), "").unwrap();
    std::fs::write(project.path().join("gates/gate-v3.fifo"), "").unwrap();

    // A wait that runs out says what it waited for, and how long, instead of suggesting the
    // flag it was given.
    let out: Run = stagecraft(project.path())
        .args([
            "deploy",
            "--env",
            "prod",
            "--version",
            "v2",
            "--lock-wait",
            "100ms",
        ])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 3, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "Waiting up to 100ms (--lock-wait) for the lease on \"prod\", held by pid {pid} on "
        )),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(&format!(
            "environment \"prod\" is still being deployed by pid {pid} on "
        )) && out.stderr.contains(
            "after waiting 100ms for it; try again when it finishes, or wait longer with a \
             larger --lock-wait (e.g. --lock-wait 5m)"
        ),
        "{out:?}"
    );
    assert!(!out.stderr.contains(['\x1b', '\r']), "{out:?}");

    // On a terminal: a live line naming the holder and counting down, gone once the lease is
    // taken.
    let pty = Pty::spawn(
        project.path(),
        &[
            "deploy",
            "--env",
            "prod",
            "--version",
            "v3",
            "--lock-wait",
            "10m",
        ],
        &[],
    );
    pty.wait_for("the lease wait's live line", |rows| {
        rows.iter().any(|r| {
            r.contains(&format!(
                "waiting for the lease on \"prod\", held by pid {pid} on "
            )) && r.ends_with("s left")
        })
    });
    first.release_gate();
    assert_eq!(first.child.wait().unwrap().code(), Some(0));
    let (code, rows, _) = pty.finish();
    assert_eq!(code, 0, "{rows:#?}");
    assert!(
        !rows.iter().any(|r| r.contains("waiting for the lease")),
        "{rows:#?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("  build         completed")),
        "{rows:#?}"
    );
}

#[test]
fn the_clock_check_reads_tenths_of_seconds() {
    assert!(ends_in_a_clock(
        "  build         ⠋ running builtin:exec 12.3s"
    ));
    assert!(!ends_in_a_clock("  build         completed"));
    assert!(!ends_in_a_clock("waiting 27s"));
}

/// The pid of the `stagecraft` that `script` runs (its only child: the shell execs it).
fn stagecraft_pid(script: &Child) -> i32 {
    let children = std::fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        script.id(),
        script.id()
    ))
    .unwrap();
    children.split_whitespace().next().unwrap().parse().unwrap()
}

fn interrupt(pid: i32) {
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
}

#[test]
fn an_interrupt_erases_the_live_line_in_a_lease_wait_and_in_a_phase() {
    let project = blocking_project();
    let mut first = BlockedDeploy::start(
        {
            let mut cmd = stagecraft(project.path());
            cmd.args(["deploy", "--env", "prod", "--version", "v1"]);
            cmd
        },
        project.path(),
        "v1",
    );

    // Ctrl-C while waiting for the lease: the process ends as SIGINT would, line erased.
    let waiter = Pty::spawn(
        project.path(),
        &[
            "deploy",
            "--env",
            "prod",
            "--version",
            "v2",
            "--lock-wait",
            "10m",
        ],
        &[],
    );
    waiter.wait_for("the lease wait's live line", |rows| {
        rows.iter()
            .any(|r| r.contains("waiting for the lease on \"prod\""))
    });
    interrupt(stagecraft_pid(&waiter.child));
    let (code, rows, _) = waiter.finish();
    assert_eq!(code, 130, "{rows:#?}");
    assert!(
        !rows.iter().any(|r| r.contains("waiting for the lease")),
        "{rows:#?}"
    );
    first.release_gate();
    assert_eq!(first.child.wait().unwrap().code(), Some(0));

    // Ctrl-C while a phase runs: the release records it, and the message replaces the line.
    let mut gate = Gate::new(project.path(), "v3");
    let running = Pty::spawn(
        project.path(),
        &["deploy", "--env", "prod", "--version", "v3"],
        &[],
    );
    running.wait_for("the build's live line", |rows| {
        rows.iter().any(|r| r.contains("running builtin:exec"))
    });
    interrupt(stagecraft_pid(&running.child));
    let (code, rows, _) = running.finish();
    gate.open();
    assert_eq!(code, 2, "{rows:#?}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("Interrupted by SIGINT: phase build of release")),
        "{rows:#?}"
    );
    assert!(
        !rows.iter().any(|r| r.contains("running builtin:")),
        "{rows:#?}"
    );
}

#[test]
fn a_forged_lease_holder_record_is_shown_escaped() {
    let project = blocking_project();
    let leases = project.path().join(".stagecraft/leases");
    std::fs::create_dir_all(&leases).unwrap();
    std::fs::write(project.path().join("gates/gate-v1.fifo"), "").unwrap();
    // The file backend's holder record, as a hostile earlier holder could have left it, held by
    // this test's own lock.
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(leases.join("prod.lock"))
        .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    std::fs::write(
        leases.join("prod.lock"),
        r#"{"pid":1,"host":"h\u001b]0;owned\u0007","user":"u","command":"deploy \u001b[2J\r\nError: forged","since":"2026-12-06T00:00:00Z"}"#,
    )
    .unwrap();
    let out: Run = stagecraft(project.path())
        .args([
            "deploy",
            "--env",
            "prod",
            "--version",
            "v1",
            "--lock-wait",
            "50ms",
        ])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 3, "{out:?}");
    assert!(!out.stderr.contains(['\x1b', '\r', '\x07']), "{out:?}");
    assert!(
        out.stderr
            .contains(r"command `deploy \x1b[2J\r\nError: forged`"),
        "{out:?}"
    );
    assert!(
        !out.stderr.lines().any(|l| l.starts_with("Error: forged")),
        "{out:?}"
    );
    drop(lock);
}
