//! The host side of the `host` interface (`log`, `exec`) and the per-run store data it works on.
//! `exec` is the only way a phase reaches a host program, so its allowlist lives here.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ProcStdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::stagecraft::phase::host::{self as wit_host, ExecResult};
use super::bindings::stagecraft::phase::types as wit_types;
use super::confine::{self, Jail, Prepared, SpawnError};
use super::limits::{self, LogBudget, MemoryLimiter};
use super::net::HttpHooks;
use super::open_grants::OpenedGrant;
use super::types::LogLevel;

/// Bytes of stdout and of stderr kept from one exec'd program (its tail: the end of a build log
/// is where the error is).
pub const EXEC_OUTPUT_CAP: usize = 256 << 10;

/// What `exec` may do in this run.
pub(crate) struct ExecPolicy {
    /// Programs that run confined (`exec`).
    pub allowed: Vec<String>,
    /// Programs the manifest trusts with everything this user can reach (`exec_unconfined`).
    pub unconfined: Vec<String>,
    pub env: Vec<(String, String)>,
    pub project_root: PathBuf,
    /// The phase's grants, opened when it started (shared with its WASI preopens).
    pub grants: Arc<Vec<OpenedGrant>>,
    /// The ports of the phase's `net` grant, each once: confined programs may open TCP
    /// connections to them, on any host (none: no network at all).
    pub net_ports: Vec<u16>,
    /// The confinement, built at the first confined `exec` of the run (or why it cannot be).
    pub jail: Option<Result<Jail, String>>,
    pub deadline: Instant,
    pub timeout_text: String,
}

/// Everything one run's `Store` holds.
pub(crate) struct RunState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub memory: MemoryLimiter,
    pub log: Arc<Mutex<LogBudget>>,
    pub exec: ExecPolicy,
    /// Things the sandbox refused (network, exec), appended to a failure so it names them.
    pub refusals: Arc<Mutex<Vec<String>>>,
    /// An exec'd program was killed at the deadline: the run failed on its timeout.
    pub timed_out: bool,
    pub http: WasiHttpCtx,
    /// The `net` grant's checks, which every `wasi:http` request goes through.
    pub http_hooks: HttpHooks,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RunState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl wit_types::Host for RunState {}

impl wit_host::Host for RunState {
    async fn log(&mut self, level: wit_host::LogLevel, message: String) {
        let level = match level {
            wit_host::LogLevel::Trace => LogLevel::Trace,
            wit_host::LogLevel::Debug => LogLevel::Debug,
            wit_host::LogLevel::Info => LogLevel::Info,
            wit_host::LogLevel::Warn => LogLevel::Warn,
            wit_host::LogLevel::Error => LogLevel::Error,
        };
        if let Ok(mut budget) = self.log.lock() {
            budget.emit(level, &message);
        }
        // The guest waits here once, so the caller prints the line now rather than when the
        // guest next waits on something (which may be a long `exec`).
        tokio::task::yield_now().await;
    }

    fn exec(&mut self, program: String, args: Vec<String>) -> Result<ExecResult, String> {
        // Bound what the plugin handed over before it is looked up, kept or printed; the
        // oversized originals are dropped here.
        let outcome = match limits::exec_call_out_of_bounds(&program, &args) {
            Some(reason) => Err(ExecRefused::Denied(reason)),
            None => run_program(&mut self.exec, &program, &args),
        };
        drop((program, args));
        match outcome {
            Ok(result) => Ok(result),
            Err(ExecRefused::Deadline(reason)) => {
                self.timed_out = true;
                Err(reason)
            }
            Err(ExecRefused::Denied(reason)) => {
                if let Ok(mut budget) = self.log.lock() {
                    budget.emit(LogLevel::Warn, &reason);
                }
                if let Ok(mut refusals) = self.refusals.lock() {
                    limits::keep_refusal(&mut refusals, &reason);
                }
                Err(reason)
            }
            Err(ExecRefused::Failed(reason)) => Err(reason),
        }
    }
}

enum ExecRefused {
    /// Not granted: the sandbox said no.
    Denied(String),
    /// Granted but could not run (not found, spawn error).
    Failed(String),
    /// Killed at the phase deadline.
    Deadline(String),
}

fn run_program(
    policy: &mut ExecPolicy,
    program: &str,
    args: &[String],
) -> Result<ExecResult, ExecRefused> {
    let confined = policy.allowed.iter().any(|p| p == program);
    let trusted = !confined && policy.unconfined.iter().any(|p| p == program);
    if program.contains('/') || !(confined || trusted) {
        let mut granted: Vec<&str> = policy.allowed.iter().map(String::as_str).collect();
        granted.extend(policy.unconfined.iter().map(String::as_str));
        let granted = if granted.is_empty() {
            "none".to_string()
        } else {
            granted.join(", ")
        };
        return Err(ExecRefused::Denied(format!(
            "exec of `{program}` refused: it is not in this phase's exec grant (granted: \
             {granted}); add it to `exec = [...]` in the phase's grants"
        )));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let resolved = find_on_path(program, &path).ok_or_else(|| {
        ExecRefused::Failed(format!(
            "`{program}` is granted but was not found on PATH ({})",
            Path::new(&path).display()
        ))
    })?;
    let mut env = policy.env.clone();
    env.push(("PATH".into(), path.to_string_lossy().into_owned()));
    if let Some(lease) = std::env::var_os("STAGECRAFT_LEASE") {
        env.push((
            "STAGECRAFT_LEASE".into(),
            lease.to_string_lossy().into_owned(),
        ));
    }
    let cwd = rustix::fs::open(
        &policy.project_root,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| {
        ExecRefused::Failed(format!(
            "cannot start `{program}`: the project root {}: {e}",
            policy.project_root.display()
        ))
    })?;

    let started = if confined {
        let (grants, net_ports) = (&policy.grants, &policy.net_ports);
        let jail = policy
            .jail
            .get_or_insert_with(|| Jail::new(grants, net_ports));
        let jail = match jail {
            Ok(jail) => jail,
            Err(why) => {
                return Err(ExecRefused::Denied(format!(
                    "exec of `{program}` refused: {why}. Programs run through exec are confined \
                     to the phase's grants, and cannot be here; list the program in \
                     `exec_unconfined` only if you trust it with everything this user can reach"
                )))
            }
        };
        env.push(("TMPDIR".into(), jail.tmp().to_string_lossy().into_owned()));
        let prep = Prepared::new(&resolved, program, args, &env)
            .map_err(|why| ExecRefused::Failed(format!("cannot start `{program}`: {why}")))?;
        match jail.spawn(&prep, &resolved, &cwd) {
            Ok(started) => started,
            Err(SpawnError::Namespaces(e)) => {
                return Err(ExecRefused::Denied(format!(
                    "exec of `{program}` refused: exec'd programs run in their own user and PID \
                     namespaces, and this system does not allow that ({e}); enable \
                     unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, \
                     user.max_user_namespaces > 0)"
                )))
            }
            Err(SpawnError::Failed(why)) => {
                return Err(ExecRefused::Failed(format!(
                    "cannot start `{program}`: {why}"
                )))
            }
        }
    } else {
        let prep = Prepared::new(&resolved, program, args, &env)
            .map_err(|why| ExecRefused::Failed(format!("cannot start `{program}`: {why}")))?;
        match confine::spawn_unconfined(&prep, &cwd) {
            Ok(started) => started,
            // Without namespaces a trusted program still runs, in its own process group.
            Err(SpawnError::Namespaces(_)) => {
                return run_in_process_group(policy, &resolved, program, args, &env)
            }
            Err(SpawnError::Failed(why)) => {
                return Err(ExecRefused::Failed(format!(
                    "cannot start `{program}`: {why}"
                )))
            }
        }
    };
    let mut tails = [Tail::default(), Tail::default()];
    let exit = confine::run_to_end(started, policy.deadline, &mut |stream, bytes| {
        tails[stream].push(bytes)
    });
    let [stdout, stderr] = tails.map(Tail::finish);
    let exit = exit.map_err(|e| ExecRefused::Failed(format!("waiting for `{program}`: {e}")))?;
    if exit.killed {
        return Err(ExecRefused::Deadline(format!(
            "`{program}` was killed at the phase deadline (timeout limit of {})",
            policy.timeout_text
        )));
    }
    Ok(ExecResult {
        exit_code: exit.code,
        stdout,
        stderr,
    })
}

/// A trusted program on a system without unprivileged namespaces: its own process group, killed
/// at the deadline (a program that leaves its group can outlive the phase; docs/manifest.md
/// says so).
fn run_in_process_group(
    policy: &ExecPolicy,
    resolved: &Path,
    program: &str,
    args: &[String],
    env: &[(String, String)],
) -> Result<ExecResult, ExecRefused> {
    let mut cmd = Command::new(resolved);
    cmd.args(args)
        .current_dir(&policy.project_root)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(ProcStdio::null())
        .stdout(ProcStdio::piped())
        .stderr(ProcStdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| ExecRefused::Failed(format!("cannot start `{program}`: {e}")))?;
    let pid = child.id();
    let stdout = child
        .stdout
        .take()
        .map(|s| std::thread::spawn(move || read_tail(s)));
    let stderr = child
        .stderr
        .take()
        .map(|s| std::thread::spawn(move || read_tail(s)));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let remaining = policy.deadline.saturating_duration_since(Instant::now());
    let (status, killed) = match rx.recv_timeout(remaining) {
        Ok(status) => (status, false),
        Err(_) => {
            kill_group(pid);
            (
                rx.recv()
                    .unwrap_or_else(|_| Err(std::io::Error::other("waiter thread lost"))),
                true,
            )
        }
    };
    // A background child of the group may still hold the pipes; kill the group first.
    kill_group(pid);
    let stdout = stdout.and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    if killed {
        return Err(ExecRefused::Deadline(format!(
            "`{program}` was killed at the phase deadline (timeout limit of {})",
            policy.timeout_text
        )));
    }
    let status =
        status.map_err(|e| ExecRefused::Failed(format!("waiting for `{program}`: {e}")))?;
    Ok(ExecResult {
        exit_code: status.code(),
        stdout,
        stderr,
    })
}

#[cfg(unix)]
fn kill_group(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        // The group may already be gone; then there is nothing left to kill.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(not(unix))]
fn kill_group(_pid: u32) {}

/// The last [`EXEC_OUTPUT_CAP`] bytes of a stream, and how many came before them.
#[derive(Default)]
struct Tail {
    kept: Vec<u8>,
    dropped: usize,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.kept.extend_from_slice(bytes);
        // Trim in batches, not on every write.
        if self.kept.len() > 2 * EXEC_OUTPUT_CAP {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.kept.len() > EXEC_OUTPUT_CAP {
            let cut = self.kept.len() - EXEC_OUTPUT_CAP;
            self.dropped += cut;
            self.kept.drain(..cut);
        }
    }

    /// Decoded lossily, with a first line saying how much was dropped, if anything was.
    fn finish(mut self) -> String {
        self.trim();
        let text = String::from_utf8_lossy(&self.kept).into_owned();
        if self.dropped > 0 {
            format!("[... {} bytes dropped]\n{text}", self.dropped)
        } else {
            text
        }
    }
}

/// Read everything, keep the last [`EXEC_OUTPUT_CAP`] bytes, decode lossily.
fn read_tail(mut from: impl Read) -> String {
    let mut tail = Tail::default();
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => tail.push(&buf[..n]),
        }
    }
    tail.finish()
}

/// The first executable file named `program` in `path` (a PATH value).
/// Relative entries (`.`, `bin`) are skipped: they would resolve against the project root, where
/// a phase with a write grant could plant a program for a later phase to run (unconfined, if
/// the name is in `exec_unconfined`).
pub(crate) fn find_on_path(program: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path_only_when_executable() {
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("tool");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        let path = std::env::join_paths([dir.path()]).unwrap();
        assert_eq!(find_on_path("tool", &path), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(find_on_path("tool", &path), Some(prog));
        }
    }

    #[cfg(unix)]
    #[test]
    fn relative_path_entries_are_never_searched() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("tool");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cwd = std::env::current_dir().unwrap();
        let relative = pathdiff(dir.path(), &cwd);
        let path = std::env::join_paths([relative.as_path(), Path::new(".")]).unwrap();
        assert_eq!(find_on_path("tool", &path), None, "{}", relative.display());
        let path = std::env::join_paths([dir.path()]).unwrap();
        assert_eq!(find_on_path("tool", &path), Some(prog));
    }

    /// `to` relative to `from` (both absolute), with `..` as needed.
    fn pathdiff(to: &Path, from: &Path) -> PathBuf {
        let up = from.components().count() - 1;
        let mut out = PathBuf::new();
        for _ in 0..up {
            out.push("..");
        }
        out.push(to.strip_prefix("/").unwrap());
        out
    }

    #[test]
    fn keeps_the_tail() {
        let big = vec![b'a'; EXEC_OUTPUT_CAP * 3];
        let mut input = big.clone();
        input.extend_from_slice(b"END");
        let out = read_tail(&input[..]);
        assert!(out.starts_with("[... "));
        assert!(out.ends_with("END"));
    }
}
