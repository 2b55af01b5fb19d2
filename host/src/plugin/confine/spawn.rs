//! Starting a program in its own user, PID and IPC namespaces, so that it is PID 1 of a namespace:
//! when it exits or is killed, the kernel kills everything it started (background jobs, double
//! forks, `setsid`) before its exit is even visible. `std::process::Command` cannot create
//! namespaces for a child, so the clone and the child's few steps are written here.
//!
//! The child shares stagecraft's memory until it calls `execve` (`CLONE_VM | CLONE_VFORK`, as
//! `posix_spawn` does): copying the page tables of a host holding 18 MB Python components would
//! cost more than the program. So the child runs on its own small stack, with every signal
//! blocked until it has reset the handlers, and only makes system calls on memory prepared
//! before the clone (no allocation, no locks). Every step that fails writes its number and
//! `errno` to a close-on-exec pipe, so the parent can say which step failed; a successful
//! `execve` closes the pipe with nothing written.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use super::seccomp::Filter;

/// Everything the child needs, prepared before the fork.
pub(crate) struct Prepared {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
}

impl Prepared {
    /// `argv[0]` is the program's name as granted; `path` is where it was found.
    pub fn new(
        path: &std::path::Path,
        name: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<Prepared, String> {
        use std::os::unix::ffi::OsStrExt;
        let nul = |what: &str| format!("{what} contains a NUL byte");
        let path =
            CString::new(path.as_os_str().as_bytes()).map_err(|_| nul("the program path"))?;
        let mut argv = vec![CString::new(name).map_err(|_| nul("the program name"))?];
        for a in args {
            argv.push(CString::new(a.as_bytes()).map_err(|_| nul("an argument"))?);
        }
        let mut envp = Vec::with_capacity(env.len());
        for (k, v) in env {
            envp.push(CString::new(format!("{k}={v}")).map_err(|_| nul("an environment value"))?);
        }
        let argv_ptrs = argv
            .iter()
            .map(|c| c.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp_ptrs = envp
            .iter()
            .map(|c| c.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        // The program keeps its own user and group ids inside its user namespace.
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        Ok(Prepared {
            path,
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
        })
    }
}

/// What confines the child, if anything.
pub(crate) struct Confine<'a> {
    pub ruleset: &'a OwnedFd,
    pub seccomp: &'a Filter,
}

/// A started program: PID 1 of its own namespace.
pub(crate) struct Child {
    pub pidfd: OwnedFd,
    pub stdout: File,
    pub stderr: File,
}

/// Why a spawn failed.
pub(crate) enum SpawnError {
    /// This kernel or its settings do not allow new user/PID namespaces.
    Namespaces(std::io::Error),
    /// A step failed (named in the message).
    Failed(String),
}

/// The steps the child reports, for the parent's message.
const STEPS: &[&str] = &[
    "",
    "setting up its user namespace (dumpable, setgroups)",
    "setting up its user namespace (uid_map)",
    "setting up its user namespace (gid_map)",
    "arranging to die with stagecraft",
    "connecting its standard streams",
    "entering the project root",
    "setting no_new_privs",
    "applying the Landlock ruleset",
    "installing the seccomp filter",
    "executing it",
    "resetting its signal mask",
    "marking inherited descriptors close-on-exec",
];

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just returned by pipe2 and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Start `prep` in new user and PID namespaces, its working directory `cwd`, stdin from
/// `/dev/null`, stdout and stderr to pipes, confined by `confine` when given.
pub(crate) fn spawn(
    prep: &Prepared,
    cwd: &OwnedFd,
    confine: Option<Confine<'_>>,
) -> Result<Child, SpawnError> {
    let io = |what: &str, e: std::io::Error| SpawnError::Failed(format!("{what}: {e}"));
    let null = File::open("/dev/null").map_err(|e| io("opening /dev/null", e))?;
    let (out_r, out_w) = pipe().map_err(|e| io("creating a pipe", e))?;
    let (err_r, err_w) = pipe().map_err(|e| io("creating a pipe", e))?;
    let (report_r, report_w) = pipe().map_err(|e| io("creating a pipe", e))?;
    let seccomp_prog = confine.as_ref().map(|c| c.seccomp.program());
    let args = ChildArgs {
        prep,
        null: null.as_raw_fd(),
        out: out_w.as_raw_fd(),
        err: err_w.as_raw_fd(),
        report: report_w.as_raw_fd(),
        cwd: cwd.as_raw_fd(),
        ruleset: confine.as_ref().map(|c| c.ruleset.as_raw_fd()),
        seccomp: seccomp_prog.as_ref(),
    };
    // The child's stack: it only runs `child_main`, a few hundred bytes deep.
    let mut stack = vec![0u128; CHILD_STACK_BYTES / 16];
    let stack_top = stack.as_mut_ptr_range().end.cast::<libc::c_void>();

    // No signal handler of stagecraft may run in the child while it shares our memory: block
    // everything around the clone (the child resets handlers, then unblocks).
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut pidfd: libc::c_int = -1;
    // SAFETY: `child_main` only makes system calls on `args`, which outlives the clone because
    // CLONE_VFORK suspends this thread until the child has called execve or _exit; the stack is
    // ours and unused by anything else.
    let pid = unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            stack_top,
            libc::CLONE_VM
                | libc::CLONE_VFORK
                | libc::CLONE_PIDFD
                | libc::CLONE_NEWUSER
                | libc::CLONE_NEWPID
                // System V IPC objects are per namespace: none of the host's, none that
                // outlive the program.
                | libc::CLONE_NEWIPC
                | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        pid
    };
    drop(stack);
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM | libc::EINVAL | libc::ENOSPC | libc::EUSERS | libc::ENOSYS) => {
                SpawnError::Namespaces(e)
            }
            _ => SpawnError::Failed(format!("cannot start it: {e}")),
        });
    }
    // SAFETY: clone with CLONE_PIDFD stored a new descriptor that we now own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop((out_w, err_w, report_w, null));

    let mut report = [0u8; 5];
    let mut got = 0;
    let mut reader = File::from(report_r);
    while got < report.len() {
        match reader.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if got > 0 {
        let _ = reap(&pidfd);
        let step = STEPS
            .get(report[0] as usize)
            .copied()
            .unwrap_or("starting it");
        let errno = i32::from_ne_bytes([report[1], report[2], report[3], report[4]]);
        return Err(SpawnError::Failed(format!(
            "{step} failed: {}",
            std::io::Error::from_raw_os_error(errno)
        )));
    }
    Ok(Child {
        pidfd,
        stdout: File::from(out_r),
        stderr: File::from(err_r),
    })
}

/// How a program ended.
pub(crate) struct Exit {
    /// Its exit code, or `None` when a signal ended it.
    pub code: Option<i32>,
    /// It was killed because its deadline passed.
    pub killed: bool,
}

/// Reap the program behind `pidfd` (waiting for it to exit if it has not): its exit code, or
/// `None` when a signal ended it. When this returns, every process of its namespace is gone.
pub(crate) fn reap(pidfd: &OwnedFd) -> std::io::Result<Option<i32>> {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        const P_PIDFD: libc::idtype_t = 3;
        // SAFETY: a valid pidfd of our own child and a valid siginfo_t.
        let r = unsafe {
            libc::waitid(
                P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        if r == 0 {
            // SAFETY: after a successful waitid with WEXITED these fields are set.
            let (code, status) = unsafe { (info.si_code, info.si_status()) };
            return Ok((code == libc::CLD_EXITED).then_some(status));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// SIGKILL the namespace's first process (the kernel then kills the rest).
pub(crate) fn kill(pidfd: &OwnedFd) {
    // The process may already have exited; then there is nothing to kill.
    let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
}

/// Wait (up to `deadline`) until the process behind `pidfd` has exited, without reaping it.
pub(crate) fn wait_exited(pidfd: RawFd, deadline: Instant) {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let mut pfd = libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32 + 1) };
        if n != 0
            && !(n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted)
        {
            return;
        }
    }
}

/// Bytes of stack the child runs on.
const CHILD_STACK_BYTES: usize = 64 << 10;

/// What `child_main` gets, prepared before the clone.
#[derive(Clone, Copy)]
struct ChildArgs<'a> {
    prep: &'a Prepared,
    null: RawFd,
    out: RawFd,
    err: RawFd,
    report: RawFd,
    cwd: RawFd,
    ruleset: Option<RawFd>,
    seccomp: Option<&'a libc::sock_fprog>,
}

/// The child's side, between clone and execve. Only system calls on prepared memory.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` of `spawn`, alive while the parent waits for us.
    unsafe { child(&*(arg as *const ChildArgs<'_>)) }
}

unsafe fn child(args: &ChildArgs<'_>) -> ! {
    let ChildArgs {
        prep,
        null,
        out,
        err,
        report,
        cwd,
        ruleset,
        seccomp,
    } = *args;
    const SETGROUPS: &CStr = c"/proc/self/setgroups";
    const UID_MAP: &CStr = c"/proc/self/uid_map";
    const GID_MAP: &CStr = c"/proc/self/gid_map";

    let fail = |step: u8| -> ! {
        let errno = *libc::__errno_location();
        let mut buf = [0u8; 5];
        buf[0] = step;
        buf[1..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(report, buf.as_ptr().cast(), buf.len());
        libc::_exit(127)
    };
    let write_file = |path: &CStr, data: &[u8]| -> bool {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let ok = libc::write(fd, data.as_ptr().cast(), data.len()) == data.len() as isize;
        libc::close(fd);
        ok
    };

    // stagecraft's handlers must not run here, and an ignored SIGPIPE or a blocked signal would
    // change how the program behaves: every signal back to its default, then unblocked.
    for sig in 1..=64 {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction != libc::SIG_DFL
        {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &default, std::ptr::null_mut());
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
        fail(11);
    }

    // stagecraft is not dumpable (see harden_process), and that is inherited: this process's
    // own /proc files would then belong to root, and it could not write its id maps. execve
    // sets dumpability afresh for the new program a moment later.
    if libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) != 0 {
        fail(1);
    }
    if !write_file(SETGROUPS, b"deny") {
        fail(1);
    }
    if !write_file(UID_MAP, &prep.uid_map) {
        fail(2);
    }
    if !write_file(GID_MAP, &prep.gid_map) {
        fail(3);
    }
    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
        fail(4);
    }
    for (from, to) in [(null, 0), (out, 1), (err, 2)] {
        if from == to {
            if libc::fcntl(from, libc::F_SETFD, 0) != 0 {
                fail(5);
            }
        } else if libc::dup2(from, to) < 0 {
            fail(5);
        }
    }
    // No descriptor of stagecraft (the lease, a database connection, the state directory) may
    // reach the program, whether or not whoever opened it asked for close-on-exec.
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
        fail(12);
    }
    if libc::fchdir(cwd) != 0 {
        fail(6);
    }
    if let Some(ruleset) = ruleset {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(7);
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) != 0 {
            fail(8);
        }
    }
    if let Some(prog) = seccomp {
        const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
        if libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            0u32,
            prog as *const _,
        ) != 0
        {
            fail(9);
        }
    }
    libc::execve(
        prep.path.as_ptr(),
        prep.argv_ptrs.as_ptr(),
        prep.envp_ptrs.as_ptr(),
    );
    fail(10)
}
