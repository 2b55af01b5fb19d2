//! A seccomp filter with one job: no sockets. `socket(2)` fails with `EACCES` (so TCP, UDP,
//! raw, netlink and Unix-path sockets are all out of reach; `socketpair(2)` between a program and
//! its own children still works), and `io_uring_setup(2)` fails with `EPERM` (io_uring can open
//! sockets without the `socket` system call). Everything else is left to Landlock.
//!
//! Ten BPF instructions are clearer than a filter compiler and its dependencies; the
//! architecture check kills a process that switches to another syscall ABI (x32, i386), whose
//! numbers this filter does not know.

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
/// Offsets into `struct seccomp_data`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
/// x32 system calls on x86_64 carry this bit in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

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

/// The filter program, built once; the child installs it right before `execve`.
pub(crate) struct NoSockets {
    filter: Vec<sock_filter>,
}

impl NoSockets {
    pub fn new() -> NoSockets {
        let filter = vec![
            stmt(BPF_LD_W_ABS, OFFSET_ARCH),
            jump(BPF_JMP_JEQ_K, AUDIT_ARCH, 1, 0),
            stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
            stmt(BPF_LD_W_ABS, OFFSET_NR),
            jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 4, 0),
            jump(BPF_JMP_JEQ_K, libc::SYS_socket as u32, 2, 0),
            jump(BPF_JMP_JEQ_K, libc::SYS_io_uring_setup as u32, 2, 0),
            stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
            stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EACCES as u32),
            stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32),
        ];
        NoSockets { filter }
    }

    /// The `sock_fprog` pointing at this filter; valid while `self` lives.
    pub fn program(&self) -> sock_fprog {
        sock_fprog {
            len: self.filter.len() as u16,
            filter: self.filter.as_ptr() as *mut sock_filter,
        }
    }
}
