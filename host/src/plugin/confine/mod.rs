//! Confinement of the programs a plugin runs through `exec`. A program runs:
//!
//! - as PID 1 of its own user and PID namespaces ([`spawn`]), so that everything it starts dies
//!   with it: when it exits, at the phase deadline, and when stagecraft is interrupted
//!   ([`kill_running`]);
//! - under a Landlock ruleset built from the phase's grants ([`rules`]): system directories
//!   read-only, the grants as granted, a private temporary directory, nothing else;
//! - with a seccomp filter that refuses sockets ([`seccomp`]);
//! - with only stagecraft's standard streams replaced and every other descriptor closed.
//!
//! A phase with a `net` grant lets its programs make TCP and UDP sockets over IPv4 and IPv6:
//! Landlock then lets TCP connect only to the grant's ports, on any host (a program's
//! connections never pass through stagecraft, so the granted host names cannot be checked), and
//! UDP, which Landlock cannot restrict, goes anywhere. Programs share the host's network
//! namespace with or without a grant: without one, what keeps them off the network is the
//! filter.
//!
//! Where Landlock (ABI 3 or later, ABI 4 for a phase with a `net` grant) or unprivileged
//! namespaces are missing, confined `exec` is refused with a message saying why; programs the
//! manifest lists in `exec_unconfined` still run, without Landlock and seccomp (and, without
//! namespaces, in their own process group).

mod rules;
mod seccomp;
mod spawn;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub(crate) use spawn::{Child, Exit, Prepared, SpawnError};

use super::open_grants::OpenedGrant;

/// Why confined `exec` cannot work on this machine, if it cannot.
pub fn unsupported_reason() -> Option<String> {
    reason_for_abi(rules::kernel_abi())
}

/// Why a kernel with Landlock ABI `abi` (0: none) cannot confine exec'd programs, if it cannot.
fn reason_for_abi(abi: i32) -> Option<String> {
    if abi >= rules::MIN_ABI {
        return None;
    }
    Some(if abi <= 0 {
        "this kernel has no Landlock (it needs Linux 6.2 or later with Landlock enabled: \
         `lsm=landlock,...` on the kernel command line)"
            .to_string()
    } else {
        format!(
            "this kernel's Landlock is ABI {abi}; confining exec'd programs needs ABI {} \
             (Linux 6.2) or later",
            rules::MIN_ABI
        )
    })
}

/// Why a kernel with Landlock ABI `abi` cannot hold a phase's exec'd programs to the ports of
/// its `net` grant, if it cannot: below ABI 4 Landlock has no TCP rules, so the programs of such
/// a phase would reach every port of every host.
fn reason_for_net_abi(abi: i32) -> Option<String> {
    if abi >= rules::MIN_NET_ABI {
        return None;
    }
    Some(format!(
        "this phase has a net grant, and this kernel's Landlock is ABI {abi}: holding exec'd \
         programs to the granted ports needs ABI {} (Linux 6.7) or later; without it they would \
         reach every port of every host",
        rules::MIN_NET_ABI
    ))
}

/// The confinement of one phase's exec'd programs, built at its first `exec`.
pub(crate) struct Jail {
    ruleset: rules::PhaseRuleset,
    ruleset_fd: OwnedFd,
    seccomp: seccomp::Filter,
    tmp: tempfile::TempDir,
}

impl Jail {
    /// The phase's grants, already opened, and the ports of its `net` grant (none: no network).
    pub fn new(grants: &[OpenedGrant], net_ports: &[u16]) -> Result<Jail, String> {
        if let Some(why) = unsupported_reason() {
            return Err(why);
        }
        let sockets = if net_ports.is_empty() {
            seccomp::Sockets::None
        } else {
            if let Some(why) = reason_for_net_abi(rules::kernel_abi()) {
                return Err(why);
            }
            seccomp::Sockets::Internet
        };
        let tmp = private_tmp()?;
        let ruleset = rules::PhaseRuleset::build(grants, tmp.path(), net_ports)?;
        let ruleset_fd = ruleset.fd()?;
        Ok(Jail {
            ruleset,
            ruleset_fd,
            seccomp: seccomp::Filter::new(sockets),
            tmp,
        })
    }

    /// The private temporary directory programs get as `TMPDIR` (removed with the jail).
    pub fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    /// Start a program confined.
    pub fn spawn(
        &mut self,
        prep: &Prepared,
        program: &Path,
        cwd: &OwnedFd,
    ) -> Result<Started, SpawnError> {
        if !rules::is_system_program(program) {
            self.ruleset
                .allow_program(program)
                .map_err(SpawnError::Failed)?;
        }
        spawn_registered(|| {
            spawn::spawn(
                prep,
                cwd,
                Some(spawn::Confine {
                    ruleset: &self.ruleset_fd,
                    seccomp: &self.seccomp,
                }),
            )
        })
    }
}

/// Make this process not dumpable: no other process of this user (a program a plugin exec'd
/// with `exec_unconfined`, or anything else) may ptrace it or read its memory and environment
/// through `/proc`, where the state database's URL and password live. Called first thing in
/// `main`.
pub fn harden_process() {
    #[cfg(target_os = "linux")]
    {
        // Failing leaves the process as it was; confinement of exec'd programs does not rest
        // on this alone.
        let _ =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    }
}

/// A directory only this user can enter, for one phase's programs: `stagecraft-exec-<pid>-*`
/// in the system's temp dir, removed when the phase ends. Those a killed stagecraft left behind
/// are removed by the next one that needs its own.
fn private_tmp() -> Result<tempfile::TempDir, String> {
    use std::os::unix::fs::PermissionsExt;
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(sweep_abandoned_tmp);
    tempfile::Builder::new()
        .prefix(&format!("{TMP_PREFIX}{}-", std::process::id()))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| format!("cannot create the private temp dir for exec'd programs: {e}"))
}

const TMP_PREFIX: &str = "stagecraft-exec-";

/// Remove the private temp dirs of stagecraft processes that no longer exist (SIGKILLed ones
/// cannot clean up), if they are this user's.
fn sweep_abandoned_tmp() {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let me = rustix::process::getuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TMP_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let owned = std::fs::symlink_metadata(entry.path())
            .map(|m| m.is_dir() && m.uid() == me)
            .unwrap_or(false);
        let gone = rustix::process::Pid::from_raw(pid)
            .map(|pid| rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH))
            .unwrap_or(false);
        if owned && gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Start a program the manifest trusts (`exec_unconfined`): namespaces only, so that it still
/// cannot outlive its phase.
pub(crate) fn spawn_unconfined(prep: &Prepared, cwd: &OwnedFd) -> Result<Started, SpawnError> {
    spawn_registered(|| spawn::spawn(prep, cwd, None))
}

/// A started program, known to [`kill_running`] until it is dropped.
pub(crate) struct Started {
    pub child: Child,
    _registration: Registration,
}

/// Start a program with `start` and register it for [`kill_running`], all under the registry's
/// lock: a SIGINT handler that runs meanwhile waits, then finds and kills it (it may already be
/// running its first instructions). After [`kill_running`] nothing new starts.
fn spawn_registered(
    start: impl FnOnce() -> Result<Child, SpawnError>,
) -> Result<Started, SpawnError> {
    let mut running = running().lock().unwrap_or_else(|p| p.into_inner());
    if running.stopping {
        return Err(SpawnError::Failed(
            "stagecraft is stopping (it received SIGINT or SIGTERM)".into(),
        ));
    }
    let child = start()?;
    let dup = child.pidfd.try_clone().map_err(|e| {
        spawn::kill(&child.pidfd);
        SpawnError::Failed(format!("keeping track of it: {e}"))
    })?;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    running.programs.push((id, Arc::new(dup)));
    Ok(Started {
        child,
        _registration: Registration(id),
    })
}

/// Run `child` to its end on this thread: hand each piece of its stdout (stream 0) and stderr
/// (stream 1) to `output` as it arrives, kill it (and so its whole namespace) at `deadline`, and
/// reap it. While it runs, a SIGINT or SIGTERM handler can kill it through [`kill_running`].
/// When this returns, every process of its namespace is gone.
pub(crate) fn run_to_end(
    started: Started,
    deadline: Instant,
    output: &mut dyn FnMut(usize, &[u8]),
) -> std::io::Result<Exit> {
    let Started {
        child,
        _registration,
    } = started;
    let streams = [child.stdout.as_raw_fd(), child.stderr.as_raw_fd()];
    for fd in streams {
        // SAFETY: fcntl on descriptors we own.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    let mut open = [true, true];
    let mut exited = false;
    let mut killed = false;
    let mut buf = vec![0u8; 64 << 10];
    while open[0] || open[1] || !exited {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3);
        for (i, fd) in streams.iter().enumerate() {
            if open[i] {
                fds.push(libc::pollfd {
                    fd: *fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        if !exited {
            fds.push(libc::pollfd {
                fd: child.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Until the deadline wait for anything; after it (the program is killed) or after the
        // program exited (its namespace is gone), only for the pipes' last bytes and EOF.
        let timeout = if killed || exited {
            -1
        } else {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                spawn::kill(&child.pidfd);
                killed = true;
                continue;
            }
            left.as_millis().clamp(1, i32::MAX as u128) as i32
        };
        // SAFETY: `fds` holds valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            spawn::kill(&child.pidfd);
            return Err(e);
        }
        for pfd in &fds {
            if pfd.revents == 0 {
                continue;
            }
            if pfd.fd == child.pidfd.as_raw_fd() {
                exited = true;
                continue;
            }
            let i = if pfd.fd == streams[0] { 0 } else { 1 };
            loop {
                // SAFETY: reading into our own buffer from a descriptor we own.
                let got = unsafe { libc::read(pfd.fd, buf.as_mut_ptr().cast(), buf.len()) };
                if got > 0 {
                    output(i, &buf[..got as usize]);
                    continue;
                }
                if got == 0 {
                    open[i] = false;
                } else {
                    let e = std::io::Error::last_os_error();
                    match e.kind() {
                        std::io::ErrorKind::WouldBlock => {}
                        std::io::ErrorKind::Interrupted => continue,
                        _ => open[i] = false,
                    }
                }
                break;
            }
        }
    }
    let code = spawn::reap(&child.pidfd)?;
    Ok(Exit { code, killed })
}

/// The programs running now (a registration id and a duplicate of each one's pidfd), and
/// whether the process is stopping.
#[derive(Default)]
struct Registry {
    programs: Vec<(u64, Arc<OwnedFd>)>,
    stopping: bool,
}

fn running() -> &'static Mutex<Registry> {
    static RUNNING: OnceLock<Mutex<Registry>> = OnceLock::new();
    RUNNING.get_or_init(|| Mutex::new(Registry::default()))
}

/// A program's place in the registry, given up when its run ends.
struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        running()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .programs
            .retain(|(i, _)| *i != self.0);
    }
}

/// Kill every program any phase of this process is running, with everything they started, and
/// wait (a bounded time) until they are gone. Called on SIGINT/SIGTERM before the release is
/// marked interrupted and the lease released. Returns how many were running.
pub fn kill_running() -> usize {
    let all: Vec<Arc<OwnedFd>> = {
        let mut running = running().lock().unwrap_or_else(|p| p.into_inner());
        running.stopping = true;
        running.programs.iter().map(|(_, fd)| fd.clone()).collect()
    };
    for fd in &all {
        spawn::kill(fd);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for fd in &all {
        spawn::wait_exited(fd.as_raw_fd(), deadline);
    }
    all.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_without_landlock_abi_3_is_named_and_refused() {
        let none = reason_for_abi(0).unwrap();
        assert!(none.contains("no Landlock"), "{none}");
        let old = reason_for_abi(2).unwrap();
        assert!(
            old.contains("ABI 2") && old.contains("needs ABI 3"),
            "{old}"
        );
        assert_eq!(reason_for_abi(3), None);
        assert_eq!(reason_for_abi(7), None);
    }

    #[test]
    fn a_net_grant_on_a_kernel_without_landlock_tcp_rules_is_named_and_refused() {
        let old = reason_for_net_abi(3).unwrap();
        assert!(
            old.contains("net grant")
                && old.contains("ABI 3")
                && old.contains("needs ABI 4 (Linux 6.7)")
                && old.contains("every port of every host"),
            "{old}"
        );
        assert_eq!(reason_for_net_abi(4), None);
        assert_eq!(reason_for_net_abi(7), None);
    }

    #[test]
    fn this_machine_confines() {
        // CI and every machine of this project run Linux 6.18 with Landlock ABI 7; if this
        // fails, the exec tests would fail for the wrong reason.
        assert_eq!(unsupported_reason(), None);
    }
}
