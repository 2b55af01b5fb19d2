//! The seccomp filter an exec'd program runs under: it refuses what Landlock (ABI 7) does not
//! govern and a sandboxed build has no use for.
//!
//! - **Sockets:** `socket(2)` and `socketpair(2)` fail with `EACCES` (TCP, UDP, raw, netlink,
//!   Unix-path and abstract sockets are all out of reach), `io_uring_setup(2)` with `EPERM`
//!   (io_uring can open sockets without the `socket` system call).
//! - **Metadata of files:** `chmod`, `chown` and the extended-attribute calls fail with `EPERM`,
//!   and so does the `FS_IOC_SETFLAGS` ioctl: Landlock checks opening, creating, removing and
//!   renaming, not changing the mode or owner of a file, so without this a program could make
//!   any file its user owns world-writable or, run by root, setuid.
//! - **The session keyring** (`add_key`, `request_key`, `keyctl`) and **inotify/fanotify**
//!   (watching directories outside the grants) fail with `EPERM`.
//!
//! Everything else is left to Landlock. A system call of another ABI (x32, i386) kills the
//! process: this filter does not know their numbers. The filter is a handful of BPF jumps,
//! clearer than a filter compiler and its dependencies.

use libc::{sock_filter, sock_fprog};

// Classic BPF opcodes (linux/bpf_common.h): class | size | mode, or class | op | source, with
// BPF_W, BPF_K and BPF_LD all 0.
const BPF_LD: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_RET: u16 = 0x06;
const BPF_LD_W_ABS: u16 = BPF_LD | BPF_ABS;
const BPF_JMP_JEQ_K: u16 = BPF_JMP | BPF_JEQ;
const BPF_JMP_JGE_K: u16 = BPF_JMP | BPF_JGE;
const BPF_RET_K: u16 = BPF_RET;
// Seccomp return values (linux/seccomp.h).
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// Offsets into `struct seccomp_data`: the call's number, its architecture, and the low 32 bits
/// of its second argument (little-endian).
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARG1_LOW: u32 = 16 + 8;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
/// x32 system calls on x86_64 carry this bit in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Newer than the libc crate's tables (Linux 6.13), the same number on every architecture.
const SYS_SETXATTRAT: i64 = 463;
const SYS_REMOVEXATTRAT: i64 = 466;
/// `FS_IOC_SETFLAGS`, `_IOW('f', 2, long)` on a 64-bit system.
const FS_IOC_SETFLAGS: u32 = 0x4008_6602;

/// The refused system calls and the errno each fails with.
fn refused() -> Vec<(i64, i32)> {
    let mut calls: Vec<(i64, i32)> = vec![
        (libc::SYS_socket, libc::EACCES),
        (libc::SYS_socketpair, libc::EACCES),
        (libc::SYS_io_uring_setup, libc::EPERM),
        (libc::SYS_fchmod, libc::EPERM),
        (libc::SYS_fchmodat, libc::EPERM),
        (libc::SYS_fchmodat2, libc::EPERM),
        (libc::SYS_fchown, libc::EPERM),
        (libc::SYS_fchownat, libc::EPERM),
        (libc::SYS_setxattr, libc::EPERM),
        (libc::SYS_lsetxattr, libc::EPERM),
        (libc::SYS_fsetxattr, libc::EPERM),
        (SYS_SETXATTRAT, libc::EPERM),
        (libc::SYS_removexattr, libc::EPERM),
        (libc::SYS_lremovexattr, libc::EPERM),
        (libc::SYS_fremovexattr, libc::EPERM),
        (SYS_REMOVEXATTRAT, libc::EPERM),
        (libc::SYS_add_key, libc::EPERM),
        (libc::SYS_request_key, libc::EPERM),
        (libc::SYS_keyctl, libc::EPERM),
        (libc::SYS_inotify_init1, libc::EPERM),
        (libc::SYS_fanotify_init, libc::EPERM),
    ];
    // The legacy calls only x86_64 still has (aarch64 has only the *at forms).
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        (libc::SYS_chmod, libc::EPERM),
        (libc::SYS_chown, libc::EPERM),
        (libc::SYS_lchown, libc::EPERM),
        (libc::SYS_inotify_init, libc::EPERM),
    ]);
    calls
}

const fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The filter program, built once per phase; the child installs it right before `execve`.
pub(crate) struct Filter {
    filter: Vec<sock_filter>,
}

impl Filter {
    pub fn new() -> Filter {
        let refused = refused();
        let mut filter = vec![
            stmt(BPF_LD_W_ABS, OFFSET_ARCH),
            jump(BPF_JMP_JEQ_K, AUDIT_ARCH, 1, 0),
            stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
            stmt(BPF_LD_W_ABS, OFFSET_NR),
        ];
        // Each refused call: "if nr == call, return its errno", as a jump over one return.
        filter.push(jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1));
        filter.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32));
        for (nr, errno) in &refused {
            filter.push(jump(BPF_JMP_JEQ_K, *nr as u32, 0, 1));
            filter.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | *errno as u32));
        }
        // ioctl(fd, FS_IOC_SETFLAGS, ...): the command is the second argument.
        filter.push(jump(BPF_JMP_JEQ_K, libc::SYS_ioctl as u32, 0, 3));
        filter.push(stmt(BPF_LD_W_ABS, OFFSET_ARG1_LOW));
        filter.push(jump(BPF_JMP_JEQ_K, FS_IOC_SETFLAGS, 0, 1));
        filter.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32));
        filter.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
        Filter { filter }
    }

    /// The `sock_fprog` pointing at this filter; valid while `self` lives.
    pub fn program(&self) -> sock_fprog {
        sock_fprog {
            len: self.filter.len() as u16,
            filter: self.filter.as_ptr() as *mut sock_filter,
        }
    }
}
