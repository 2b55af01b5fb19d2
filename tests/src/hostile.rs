//! Harness for the hostile suite (tests/tests/sandbox_hostile*.rs): what every attack must leave
//! behind is checked the same way — the state file exactly as the host wrote it, no process
//! left alive, no secret in any output — and a command that hangs fails instead of hanging.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::Run;

/// How long a command may run before the test calls it a hang and fails. Never an assertion
/// on speed: every command here finishes in well under a second once the defences hold; this
/// only turns "hangs forever" into a failure that says so.
pub const HANG_GUARD: Duration = Duration::from_secs(120);

/// A string unique to this test process and call, e.g. `stagecraft-marker-4242-1-172...`.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Run `cmd` (stdout and stderr to files, so nothing a leftover process holds can block the
/// test) and wait for it, at most [`HANG_GUARD`]. A command still running then is killed and
/// the test fails naming `what`.
pub fn run_guarded(mut cmd: Command, what: &str) -> Run {
    let child = spawn_to_files(&mut cmd);
    child.wait(what)
}

/// A spawned command whose output goes to files.
pub struct Spawned {
    pub pid: u32,
    exited: mpsc::Receiver<std::io::Result<std::process::ExitStatus>>,
    /// The exit status, once [`Spawned::try_exited`] has seen it.
    status: std::cell::RefCell<Option<std::io::Result<std::process::ExitStatus>>>,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

/// Spawn `cmd` with stdout and stderr redirected to files of a private temporary directory.
pub fn spawn_to_files(cmd: &mut Command) -> Spawned {
    let dir = tempfile::tempdir().unwrap();
    let stdout = dir.path().join("stdout");
    let stderr = dir.path().join("stderr");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn stagecraft");
    let pid = child.id();
    let (tx, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    Spawned {
        pid,
        exited,
        status: std::cell::RefCell::new(None),
        stdout,
        stderr,
        _dir: dir,
    }
}

impl Spawned {
    /// Wait for the exit, at most [`HANG_GUARD`]; a hang kills the process and fails the test.
    pub fn wait(self, what: &str) -> Run {
        let seen = self.status.borrow_mut().take();
        let status = match seen {
            Some(status) => Ok(status),
            None => self.exited.recv_timeout(HANG_GUARD),
        };
        match status {
            Ok(status) => {
                let status = status.expect("waiting for stagecraft");
                Run {
                    code: status.code().unwrap_or(-1),
                    stdout: read_lossy(&self.stdout),
                    stderr: read_lossy(&self.stderr),
                }
            }
            Err(_) => {
                self.signal(rustix::process::Signal::KILL);
                panic!(
                    "{what}: stagecraft did not return within {HANG_GUARD:?} (a hang); stderr so \
                     far:\n{}",
                    read_lossy(&self.stderr)
                );
            }
        }
    }

    /// Whether the process has exited (without waiting).
    pub fn try_exited(&self) -> bool {
        let mut status = self.status.borrow_mut();
        if status.is_none() {
            if let Ok(exit) = self.exited.try_recv() {
                *status = Some(exit);
            }
        }
        status.is_some()
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid as i32).expect("a child pid");
        let _ = rustix::process::kill_process(pid, signal);
    }

    /// stderr so far.
    pub fn stderr_so_far(&self) -> String {
        read_lossy(&self.stderr)
    }
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// A marker for processes an attack starts (`exec -a <marker> sleep 300`): after the command
/// returns, no process may carry it. Dropping the marker kills any that still do, so a failing
/// test never leaves a `sleep 300` behind.
pub struct ProcessMarker {
    pub marker: String,
}

impl Default for ProcessMarker {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessMarker {
    pub fn new() -> ProcessMarker {
        ProcessMarker {
            marker: unique("stagecraft-marker"),
        }
    }

    /// The marker as a shell word that is not the marker itself (`stagecraft-mar""ker-…`):
    /// `exec -a <word> sleep 300` names the sleep with the marker, while the script, and so the
    /// command lines of stagecraft and of the shell running it, never contain it.
    pub fn shell_word(&self) -> String {
        let (a, b) = self.marker.split_at(self.marker.len() / 2);
        format!("{a}\"\"{b}")
    }

    /// Live processes whose command line contains the marker: (pid, command line, exiting).
    /// "Exiting" means the kernel is already taking it down (a zombie, or SIGKILL pending).
    fn carriers(&self) -> Vec<(i32, String, bool)> {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if !cmdline.contains(&self.marker) {
                continue;
            }
            found.push((pid, cmdline, is_exiting(&entry.path())));
        }
        found
    }

    /// Fails the test when a process carrying the marker is alive. A process the kernel is
    /// visibly killing (zombie, SIGKILL pending) is scanned again, a bounded number of times:
    /// `kill` returns before the target is gone, and that is not a survivor.
    pub fn assert_none_left(&self, context: &str) {
        for _ in 0..10_000 {
            let carriers = self.carriers();
            let alive: Vec<_> = carriers.iter().filter(|(_, _, exiting)| !exiting).collect();
            assert!(
                alive.is_empty(),
                "{context}: processes outlived the phase: {alive:?}"
            );
            if carriers.is_empty() {
                return;
            }
            // Only reached while the kernel is tearing one down: give it the processor.
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!(
            "{context}: processes were still exiting after 10000 scans: {:?}",
            self.carriers()
        );
    }

    /// Wait until a process carrying the marker runs, or fail the test when `spawned` exits
    /// first. For commands whose exec'd programs no gate can reach (`plugin test` runs them in
    /// a temporary project): the marked process existing is the signal that it runs.
    pub fn wait_for_carrier(&self, spawned: &Spawned) {
        let step = Duration::from_millis(1);
        let mut waited = Duration::ZERO;
        while self.carriers().iter().all(|(_, _, exiting)| *exiting) {
            assert!(
                !spawned.try_exited(),
                "stagecraft exited before any marked process ran; stderr:\n{}",
                spawned.stderr_so_far()
            );
            assert!(
                waited < HANG_GUARD,
                "no marked process ever ran (a hang); stderr:\n{}",
                spawned.stderr_so_far()
            );
            // A poll interval, not a guess at how long anything takes.
            std::thread::sleep(step);
            waited += step;
        }
    }

    /// SIGKILL every process carrying the marker (cleanup after a failed assertion).
    pub fn kill_carriers(&self) {
        for (pid, _, _) in self.carriers() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

impl Drop for ProcessMarker {
    fn drop(&mut self) {
        self.kill_carriers();
    }
}

/// Zombie, dead, or SIGKILL pending (bit 9 of SigPnd/ShdPnd in /proc/<pid>/status).
fn is_exiting(proc_dir: &Path) -> bool {
    let Ok(status) = std::fs::read_to_string(proc_dir.join("status")) else {
        return true; // gone between the two reads
    };
    for line in status.lines() {
        if let Some(state) = line.strip_prefix("State:") {
            let state = state.trim_start();
            if state.starts_with('Z') || state.starts_with('X') {
                return true;
            }
        }
        for key in ["SigPnd:", "ShdPnd:"] {
            if let Some(mask) = line.strip_prefix(key) {
                let mask = u64::from_str_radix(mask.trim(), 16).unwrap_or(0);
                if mask & (1 << (9 - 1)) != 0 {
                    return true;
                }
            }
        }
    }
    false
}

/// Checks that the file-backend state at `path` is exactly what the host committed: it parses,
/// it is byte for byte what the host writes for the state it holds (so an appended byte or a hand
/// edit shows), and its `serial` is the number of commits the test expects. Returns the
/// document.
pub fn assert_state_written_by_host(path: &Path, serial: u64) -> serde_json::Value {
    let bytes = std::fs::read(path)
        .unwrap_or_else(|e| panic!("reading the state file {}: {e}", path.display()));
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "the state file {} no longer parses ({e}); its tail: {:?}",
            path.display(),
            String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(200)..])
        )
    });
    // What the host writes for the state it reads there (the file backend's text is serde_json's
    // pretty form of the state, plus a newline).
    let state = stagecraft::state::parse_state(&bytes, path, path, false)
        .unwrap_or_else(|e| panic!("the state file {} is refused: {e}", path.display()));
    let mut canonical = serde_json::to_vec_pretty(&state).unwrap();
    canonical.push(b'\n');
    if canonical != bytes {
        let at = canonical
            .iter()
            .zip(&bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(canonical.len().min(bytes.len()));
        panic!(
            "the state file {} is not what the host writes: first difference at byte {at} of \
             {} (canonical {} bytes); around it: {:?}",
            path.display(),
            bytes.len(),
            canonical.len(),
            String::from_utf8_lossy(&bytes[at.saturating_sub(80)..(at + 80).min(bytes.len())])
        );
    }
    assert_eq!(
        doc["serial"].as_u64(),
        Some(serial),
        "the state's serial is not the number of commits the host made; newest release: {:#}",
        doc["releases"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["id"] == doc["last_release_id"]))
            .unwrap_or(&serde_json::Value::Null)
    );
    doc
}

/// The largest resident set, in bytes, of any child this process has waited for
/// (`getrusage(RUSAGE_CHILDREN)`); with nextest each test is its own process.
pub fn children_max_rss_bytes() -> u64 {
    // struct rusage on Linux: two struct timevals, then 14 longs; ru_maxrss (KiB) is the first.
    #[repr(C)]
    struct Rusage {
        utime: [i64; 2],
        stime: [i64; 2],
        maxrss: i64,
        rest: [i64; 13],
    }
    extern "C" {
        fn getrusage(who: i32, usage: *mut Rusage) -> i32;
    }
    const RUSAGE_CHILDREN: i32 = -1;
    let mut usage = Rusage {
        utime: [0; 2],
        stime: [0; 2],
        maxrss: 0,
        rest: [0; 13],
    };
    // SAFETY: `usage` has the layout of `struct rusage` on 64-bit Linux and lives across the call.
    let rc = unsafe { getrusage(RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    usage.maxrss as u64 * 1024
}

/// An exec'd program held mid-run, for tests that interrupt stagecraft while it runs: the
/// program writes a line to `ready.fifo` (so the test knows it runs, without sleeping), then
/// blocks reading `gate.fifo`, which the test holds open read-write (so opening it never
/// blocks) until [`ExecGate::release`].
pub struct ExecGate {
    pub ready: PathBuf,
    pub gate: PathBuf,
    writer: Option<std::fs::File>,
}

impl ExecGate {
    /// Create the two FIFOs in `dir` (which must exist).
    pub fn new(dir: &Path, ready_name: &str, gate_name: &str) -> ExecGate {
        let ready = dir.join(ready_name);
        let gate = dir.join(gate_name);
        for fifo in [&ready, &gate] {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                fifo,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o666),
                0,
            )
            .expect("create a FIFO");
        }
        let writer = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&gate)
            .expect("open the gate FIFO");
        ExecGate {
            ready,
            gate,
            writer: Some(writer),
        }
    }

    /// Wait until the exec'd program has written its ready line, or `spawned` has exited
    /// (then this fails the test with its stderr).
    pub fn wait_ready(&self, spawned: &Spawned) {
        let (tx, rx) = mpsc::channel::<String>();
        let ready = self.ready.clone();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            // Blocks until a writer opens the FIFO: the program, or the unblocking below.
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(&ready) {
                let _ = f.read_to_string(&mut text);
            }
            let _ = tx.send(text);
        });
        // Wait for either; a deploy that ends first never writes the line.
        let mut waited = Duration::ZERO;
        let step = Duration::from_millis(20);
        loop {
            match rx.recv_timeout(step) {
                Ok(text) if text.contains("ready") => break,
                Ok(text) => panic!(
                    "the ready FIFO was closed without the ready line ({text:?}); stderr:\n{}",
                    spawned.stderr_so_far()
                ),
                Err(_) => {}
            }
            if spawned.try_exited() {
                // Unblock the reader's open, then fail.
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags_nonblock()
                    .open(&self.ready);
                let _ = reader.join();
                panic!(
                    "stagecraft exited before the exec'd program was ready; stderr:\n{}",
                    spawned.stderr_so_far()
                );
            }
            waited += step;
            assert!(
                waited < HANG_GUARD,
                "the exec'd program never became ready (a hang); stderr:\n{}",
                spawned.stderr_so_far()
            );
        }
        let _ = reader.join();
    }

    /// Let a program blocked on the gate finish (EOF), and any still to open it read nothing.
    pub fn release(&mut self) {
        if self.writer.is_none() {
            return;
        }
        let plain = self.gate.with_extension("plain");
        let _ = std::fs::write(&plain, "");
        let _ = std::fs::rename(&plain, &self.gate);
        drop(self.writer.take());
    }
}

impl Drop for ExecGate {
    fn drop(&mut self) {
        self.release();
    }
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
    }
}

/// The `PATH` hostile projects give stagecraft: system directories only, so a granted `python3`
/// is the system's and not a shim under `$HOME`.
pub const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The name of the environment variable holding a secret stagecraft has but never grants.
pub const SECRET_ENV: &str = "HOSTILE_SECRET";

/// A project for one attack, with secrets planted where no grant reaches: an environment
/// variable of stagecraft (and `PGPASSWORD`), a file outside the project, a file in `$HOME`
/// (a private directory stagecraft runs with as `HOME`), and an ungranted file in the project.
pub struct HostileProject {
    pub dir: tempfile::TempDir,
    pub outside: tempfile::TempDir,
    pub home: tempfile::TempDir,
    /// Every planted secret value; none may appear in any output or in the state.
    pub secrets: Vec<String>,
    /// Marks the processes attacks start; see [`ProcessMarker`].
    pub marker: ProcessMarker,
}

impl Default for HostileProject {
    fn default() -> Self {
        Self::new()
    }
}

impl HostileProject {
    pub fn new() -> HostileProject {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let secrets = vec![
            unique("env-secret"),
            unique("pgpassword-secret"),
            unique("outside-file-secret"),
            unique("home-file-secret"),
            unique("ungranted-project-file-secret"),
        ];
        std::fs::write(outside.path().join("secret.txt"), &secrets[2]).unwrap();
        std::fs::write(home.path().join(".netrc"), &secrets[3]).unwrap();
        std::fs::write(dir.path().join("ungranted.txt"), &secrets[4]).unwrap();
        HostileProject {
            dir,
            outside,
            home,
            secrets,
            marker: ProcessMarker::new(),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_file(&self) -> PathBuf {
        self.root().join(".stagecraft/releases.json")
    }

    /// The planted file outside the project, as an absolute path.
    pub fn outside_secret_file(&self) -> PathBuf {
        self.outside.path().join("secret.txt")
    }

    /// The planted file in `$HOME`.
    pub fn home_secret_file(&self) -> PathBuf {
        self.home.path().join(".netrc")
    }

    /// Write `stagecraft.toml`: environment `prod`, the given phases as the pipeline.
    pub fn write_manifest(&self, phases: &[PhaseToml]) {
        let names: Vec<String> = phases.iter().map(|p| toml_str(&p.name)).collect();
        let mut m = format!(
            "[environments.prod]\n[pipeline]\nphases = [{}]\n",
            names.join(", ")
        );
        for p in phases {
            m.push_str(&p.to_toml());
        }
        std::fs::write(self.root().join("stagecraft.toml"), m).unwrap();
    }

    /// `stagecraft <args>` in the project, with the secrets in its environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = crate::stagecraft(self.root());
        cmd.args(args)
            .env(SECRET_ENV, &self.secrets[0])
            .env("PGPASSWORD", &self.secrets[1])
            .env("HOME", self.home.path())
            .env("PATH", SYSTEM_PATH);
        cmd
    }

    /// Run `stagecraft <args>` to the end (or fail the test on a hang).
    pub fn run(&self, args: &[&str]) -> Run {
        run_guarded(self.command(args), &args.join(" "))
    }

    /// `deploy --env prod --version <version>`.
    pub fn deploy(&self, version: &str) -> Run {
        self.run(&["deploy", "--env", "prod", "--version", version])
    }

    /// What every attack must leave behind, checked after `out` returned: the state exactly as
    /// the host committed it after `serial` commits, containing none of `forbidden` (what the
    /// attack tried to write) and no secret; no secret and nothing of the state's own text (its
    /// lineage) in stdout or stderr; no process carrying the marker. Returns the state.
    pub fn assert_aftermath(
        &self,
        out: &Run,
        serial: u64,
        forbidden: &[&str],
        context: &str,
    ) -> serde_json::Value {
        self.marker.assert_none_left(context);
        let doc = assert_state_written_by_host(&self.state_file(), serial);
        let state_text = std::fs::read_to_string(self.state_file()).unwrap();
        for secret in self
            .secrets
            .iter()
            .map(String::as_str)
            .chain(forbidden.iter().copied())
        {
            assert!(
                !state_text.contains(secret),
                "{context}: the state holds {secret:?}"
            );
        }
        for secret in &self.secrets {
            assert!(
                !out.stdout.contains(secret.as_str()) && !out.stderr.contains(secret.as_str()),
                "{context}: a secret reached the output: {out:?}"
            );
        }
        let lineage = doc["lineage"].as_str().unwrap_or_default();
        if !lineage.is_empty() {
            assert_eq!(
                state_text.matches(lineage).count(),
                1,
                "{context}: the state's own text ended up inside the state"
            );
            assert!(
                !out.stdout.contains(lineage) && !out.stderr.contains(lineage),
                "{context}: the state's text reached the output: {out:?}"
            );
        }
        doc
    }
}

/// The newest release of a state document.
pub fn newest_release(doc: &serde_json::Value) -> &serde_json::Value {
    let id = doc["last_release_id"]
        .as_str()
        .expect("a release was created");
    doc["releases"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["id"] == id))
        .expect("the newest release is in the state")
}

/// A phase's status and details in a release of the state document.
pub fn phase_of<'v>(
    release: &'v serde_json::Value,
    phase: &str,
) -> (&'v str, &'v serde_json::Value) {
    (
        release["phases"][phase].as_str().unwrap_or("<absent>"),
        &release["phase_details"][phase],
    )
}

/// One `[phases.<name>]` table.
pub struct PhaseToml {
    pub name: String,
    pub plugin: String,
    pub config: Vec<(String, String)>,
    pub grants: Vec<(String, Vec<String>)>,
    pub limits: Vec<(String, String)>,
}

/// A phase running `plugin` (a path or `builtin:<name>`) with `config`.
pub fn phase(name: &str, plugin: &Path, config: &[(&str, &str)]) -> PhaseToml {
    PhaseToml {
        name: name.to_string(),
        plugin: plugin.display().to_string(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        grants: Vec::new(),
        limits: Vec::new(),
    }
}

impl PhaseToml {
    /// Add a grant (`read`, `write`, `env`, `exec`).
    pub fn grant(mut self, kind: &str, values: &[&str]) -> PhaseToml {
        self.grants.push((
            kind.to_string(),
            values.iter().map(|v| v.to_string()).collect(),
        ));
        self
    }

    /// Set a limit (`timeout`, `memory`).
    pub fn limit(mut self, key: &str, value: &str) -> PhaseToml {
        self.limits.push((key.to_string(), value.to_string()));
        self
    }

    fn to_toml(&self) -> String {
        let mut t = format!(
            "[phases.{}]\nplugin = {}\n",
            self.name,
            toml_str(&self.plugin)
        );
        let config: Vec<String> = self
            .config
            .iter()
            .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
            .collect();
        t.push_str(&format!("config = {{ {} }}\n", config.join(", ")));
        for (k, v) in &self.limits {
            t.push_str(&format!("{k} = {}\n", toml_str(v)));
        }
        if !self.grants.is_empty() {
            t.push_str(&format!("[phases.{}.grants]\n", self.name));
            for (kind, values) in &self.grants {
                let values: Vec<String> = values.iter().map(|v| toml_str(v)).collect();
                t.push_str(&format!("{kind} = [{}]\n", values.join(", ")));
            }
        }
        t
    }
}

/// `s` as a TOML basic string, control characters escaped.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The arguments of `exec-argv` modes: joined with U+001F, which no argument contains.
pub fn argv(args: &[&str]) -> String {
    args.join("\u{1f}")
}

/// A plugin of `target/wasm-plugins/fixtures` (Rust fixtures come from host/build.rs).
pub fn fixture(name: &str) -> PathBuf {
    let path = crate::wasm_plugins_dir()
        .join("fixtures")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the host (cargo build -p stagecraft) and run \
         scripts/build-polyglot-plugins",
        path.display()
    );
    path
}

/// No raw control character of a terminal escape (ESC, BEL, CR, other C0 except newline and
/// tab, DEL, C1) in `text`.
pub fn assert_no_raw_controls(text: &str, context: &str) {
    if let Some((at, c)) = text
        .char_indices()
        .find(|(_, c)| c.is_control() && *c != '\n' && *c != '\t')
    {
        panic!(
            "{context}: raw control character {:?} at byte {at}: {:?}",
            c,
            text.chars()
                .skip(text[..at].chars().count().saturating_sub(40))
                .take(60)
                .collect::<String>()
        );
    }
}
