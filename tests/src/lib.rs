//! Shared harness for the end-to-end tests: locate the built `stagecraft` binary, make temporary
//! projects, run commands and capture their output.

pub mod bench;
pub mod hostile;
pub mod http;
pub mod pg;
pub mod project;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `stagecraft` binary built by this same `cargo test` run (target/<profile>/stagecraft).
///
/// `cargo test` builds it because the `stagecraft` package has integration tests; a benchmark
/// binary needs `cargo build -p stagecraft` first, which the message below says.
pub fn stagecraft_bin() -> PathBuf {
    let bin = profile_dir().join(format!("stagecraft{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p stagecraft` (or the README's test command)",
        bin.display()
    );
    bin
}

/// A `stagecraft` command with a clean environment: no inherited STAGECRAFT_* variables, and
/// its compiled-component cache under `target/` so tests share the cache but never the user's.
pub fn stagecraft(cwd: &Path) -> Command {
    let mut cmd = Command::new(stagecraft_bin());
    cmd.current_dir(cwd);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STAGECRAFT_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("STAGECRAFT_CACHE_DIR", shared_cache_dir());
    cmd
}

/// The compiled-component cache shared by all tests and benchmarks: target/test-cache.
pub fn shared_cache_dir() -> PathBuf {
    target_dir().join("test-cache")
}

/// target/, above the profile directories.
fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("target/<profile> has a parent")
        .to_path_buf()
}

/// target/<profile>, where cargo puts the `stagecraft` binary. Tests run as
/// target/<profile>/deps/<test>-<hash>, benchmarks as target/<profile>/<bench>.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("the executable's directory");
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>")
    } else {
        dir
    };
    profile_dir.to_path_buf()
}

/// Output of a finished command, with helpers for assertions.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run `stagecraft <args>` in `cwd` and collect its output.
pub fn run(cwd: &Path, args: &[&str]) -> Run {
    stagecraft(cwd)
        .args(args)
        .output()
        .expect("spawn stagecraft")
        .into()
}

/// The workspace root (for shipped fixtures and examples).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `target/wasm-plugins`: host/build.rs puts the Rust built-ins and fixtures there, and
/// scripts/build-polyglot-plugins the Python and JavaScript plugins.
/// Works from a test (`target/<profile>/deps/<test>`) and from a bench binary
/// (`target/<profile>/<bin>`).
pub fn wasm_plugins_dir() -> PathBuf {
    target_dir().join("wasm-plugins")
}

/// A Python or JavaScript plugin of `plugins/<kind>/<name>` (kind `examples` or `fixtures`),
/// built by scripts/build-polyglot-plugins.
pub fn polyglot_plugin(kind: &str, name: &str) -> PathBuf {
    let path = wasm_plugins_dir().join(kind).join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-polyglot-plugins (or scripts/test, which runs it) to \
         build the Python and JavaScript plugins",
        path.display()
    );
    path
}

/// A program of the Python/JavaScript toolchains that scripts/toolchains installs under
/// `target/toolchains` (e.g. `python/bin/componentize-py`).
pub fn toolchain_program(relative: &str) -> PathBuf {
    let path = wasm_plugins_dir()
        .parent()
        .expect("target dir")
        .join("toolchains")
        .join(relative);
    assert!(
        path.exists(),
        "{} is missing: run scripts/toolchains (or scripts/test, which runs it)",
        path.display()
    );
    path
}

/// A `stagecraft deploy` held inside its build phase, for tests of what happens mid-phase
/// (SIGKILL, SIGINT, a busy lease, a server restart) without sleeping.
///
/// A FIFO at `path` (mode 0600), for tests of what a blocking open does to the host.
pub fn make_fifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap_or_else(|e| panic!("create the FIFO {}: {e}", path.display()));
}

/// A manifest whose `build` phase runs `cat gates/gate-<version>.fifo` (blocking until the test
/// opens its [`Gate`]) and whose `finalize` is a no-op, with these environments.
pub fn blocking_manifest(envs: &[&str]) -> String {
    let mut m = String::new();
    for e in envs {
        m.push_str(&format!("[environments.{e}]\n"));
    }
    m.push_str(
        "[phases.build]\nplugin = \"builtin:exec\"\n\
         config = { command = \"cat gates/gate-{{version}}.fifo\" }\ntimeout = \"10m\"\n\
         [phases.build.grants]\nexec = [\"cat\"]\nread = [\"gates\"]\n\
         [phases.finalize]\nplugin = \"builtin:noop\"\n",
    );
    m
}

/// `gates/gate-<version>.fifo` in a project of [`blocking_manifest`], held open by the test: a
/// `cat` of it blocks until [`Gate::open`]. Holding it read-write never blocks the test.
pub struct Gate {
    fifo: PathBuf,
    writer: Option<std::fs::File>,
}

impl Gate {
    pub fn new(project: &Path, version: &str) -> Gate {
        std::fs::create_dir_all(project.join("gates")).expect("create gates/");
        let fifo = project.join("gates").join(format!("gate-{version}.fifo"));
        make_fifo(&fifo);
        let writer = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .expect("open the gate FIFO");
        Gate {
            fifo,
            writer: Some(writer),
        }
    }

    /// Let `cat` finish, whether or not it has opened the gate yet (or ever will, when the
    /// deploy was killed first): a plain file replaces the FIFO for a `cat` still to open it,
    /// then closing the last writer gives EOF to one that has.
    pub fn open(&mut self) {
        let plain = self.fifo.with_extension("plain");
        std::fs::write(&plain, "").unwrap();
        std::fs::rename(&plain, &self.fifo).unwrap();
        drop(self.writer.take());
    }
}

/// A deploy of a project of [`blocking_manifest`], stopped in its build phase at its [`Gate`].
pub struct BlockedDeploy {
    pub child: std::process::Child,
    gate: Gate,
    stderr: std::io::BufReader<std::process::ChildStderr>,
}

impl BlockedDeploy {
    /// Create the gate of `version` in `project` (a directory the phase is granted to read: the
    /// exec'd `cat` sees nothing else of the project), spawn `deploy` (a `stagecraft deploy`
    /// command of that version, its stderr is taken over here) and return once its build phase
    /// runs.
    pub fn start(mut deploy: Command, project: &Path, version: &str) -> BlockedDeploy {
        use std::io::BufRead;
        let gate = Gate::new(project, version);
        let mut child = deploy
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn stagecraft deploy");
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        // builtin:exec logs the command before running it.
        let mut line = String::new();
        loop {
            line.clear();
            let n = stderr.read_line(&mut line).unwrap();
            assert!(n > 0, "deploy ended before its build phase started");
            if line.contains("[build builtin:exec]") && line.contains("cat gates/gate-") {
                break;
            }
        }
        BlockedDeploy {
            child,
            gate,
            stderr,
        }
    }

    /// Let the deploy's `cat` finish ([`Gate::open`]).
    pub fn release_gate(&mut self) {
        self.gate.open();
    }

    /// Everything the deploy writes on stderr from here until it exits.
    pub fn rest_of_stderr(&mut self) -> String {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stderr, &mut rest).unwrap();
        rest
    }
}

/// A small seeded generator (xorshift64) for tests that vary what they do at random but must be
/// reproducible: a test prints its seed, and `STAGECRAFT_TEST_SEED=<n>` replays it.
pub struct Rng(u64);

impl Rng {
    /// `STAGECRAFT_TEST_SEED` if set, else `default`; printed on stderr either way.
    pub fn from_env_or(default: u64, what: &str) -> Rng {
        let seed = std::env::var("STAGECRAFT_TEST_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(default);
        eprintln!("{what}: seed {seed} (replay with STAGECRAFT_TEST_SEED={seed})");
        Rng::new(seed)
    }

    pub fn new(seed: u64) -> Rng {
        // Zero is xorshift's one fixed point.
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}
