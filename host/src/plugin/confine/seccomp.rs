//! The seccomp filter an exec'd program runs under: it refuses what Landlock (ABI 7) does not
//! govern and a sandboxed build has no use for.
//!
//! - **Sockets, without a `net` grant:** `socket(2)` and `socketpair(2)` fail with `EACCES` (TCP,
//!   UDP, raw, netlink, Unix-path and abstract sockets are all out of reach).
//! - **Sockets, under a `net` grant:** `socket(2)` succeeds only for TCP and UDP over IPv4 and
//!   IPv6 (Landlock then lets TCP connect to the granted ports only); every other family, type
//!   or protocol fails with `EACCES`: netlink, packet, raw, ICMP, SCTP, MPTCP (which Landlock
//!   does not govern), and Unix sockets, since Landlock does not govern connecting to a named one
//!   either (the user's D-Bus and systemd sockets, PostgreSQL's). `socketpair(2)` succeeds for
//!   Unix sockets only: an unnamed pair reaches nothing a pipe does not, and curl's resolver
//!   needs one. `listen(2)` fails with `EACCES` (listening binds an ephemeral port without
//!   `bind`, which Landlock does not see), and so does a `sendto`, `sendmsg` or `sendmmsg` with
//!   `MSG_FASTOPEN` (TCP Fast Open connects without `connect`, which Landlock has been reported
//!   not to see: landlock-lsm/linux#41; Linux 6.18's does, older kernels' may not).
//! - **io_uring:** `io_uring_setup(2)` fails with `EPERM` (io_uring can open and connect sockets
//!   without the system calls above).
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
const BPF_JSET: u16 = 0x40;
const BPF_ALU: u16 = 0x04;
const BPF_AND: u16 = 0x50;
const BPF_RET: u16 = 0x06;
const BPF_LD_W_ABS: u16 = BPF_LD | BPF_ABS;
const BPF_JMP_JEQ_K: u16 = BPF_JMP | BPF_JEQ;
const BPF_JMP_JGE_K: u16 = BPF_JMP | BPF_JGE;
const BPF_JMP_JSET_K: u16 = BPF_JMP | BPF_JSET;
const BPF_ALU_AND_K: u16 = BPF_ALU | BPF_AND;
const BPF_RET_K: u16 = BPF_RET;
// Seccomp return values (linux/seccomp.h).
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// Offsets into `struct seccomp_data`: the call's number, its architecture, and the low 32 bits
/// of its first four arguments (little-endian; the calls checked here take `int`s there).
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARG0_LOW: u32 = 16;
const OFFSET_ARG1_LOW: u32 = 16 + 8;
const OFFSET_ARG2_LOW: u32 = 16 + 2 * 8;
const OFFSET_ARG3_LOW: u32 = 16 + 3 * 8;

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
/// The bits of `socket(2)`'s type argument that hold the type (the rest are flags such as
/// `SOCK_CLOEXEC`).
const SOCK_TYPE_MASK: u32 = 0xf;

/// Which sockets a program may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sockets {
    /// None: the phase has no `net` grant.
    None,
    /// TCP and UDP over IPv4 and IPv6, and unnamed pairs of Unix sockets: the phase has a `net`
    /// grant, and Landlock holds TCP to its ports.
    Internet,
}

/// The system calls refused whatever their arguments, and the errno each fails with.
fn refused(sockets: Sockets) -> Vec<(i64, i32)> {
    let socket_calls: &[(i64, i32)] = match sockets {
        Sockets::None => &[
            (libc::SYS_socket, libc::EACCES),
            (libc::SYS_socketpair, libc::EACCES),
        ],
        // `socket` and `socketpair` are decided by their arguments (see `internet_checks`).
        Sockets::Internet => &[(libc::SYS_listen, libc::EACCES)],
    };
    let mut calls: Vec<(i64, i32)> = socket_calls.to_vec();
    calls.extend([
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
    ]);
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

const ALLOW: sock_filter = stmt(BPF_RET_K, SECCOMP_RET_ALLOW);

const fn fail_with(errno: i32) -> sock_filter {
    stmt(BPF_RET_K, SECCOMP_RET_ERRNO | errno as u32)
}

/// "If the call is `nr`, run `check`": `check` loads what it needs (the call's number is in the
/// accumulator) and returns on every path.
fn when_call(nr: i64, check: &[sock_filter]) -> Vec<sock_filter> {
    let skip = u8::try_from(check.len()).expect("a check is a few instructions");
    let mut out = vec![jump(BPF_JMP_JEQ_K, nr as u32, 0, skip)];
    out.extend_from_slice(check);
    out
}

/// The argument checks of a phase with a `net` grant.
fn internet_checks() -> Vec<sock_filter> {
    let refuse = fail_with(libc::EACCES);
    // socket(domain, type, protocol): TCP or UDP over IPv4 or IPv6 (protocol 0 is TCP for a
    // stream and UDP for a datagram socket); nothing else.
    let socket = [
        stmt(BPF_LD_W_ABS, OFFSET_ARG0_LOW),
        jump(BPF_JMP_JEQ_K, libc::AF_INET as u32, 1, 0),
        jump(BPF_JMP_JEQ_K, libc::AF_INET6 as u32, 0, 9), // to `refuse`
        stmt(BPF_LD_W_ABS, OFFSET_ARG1_LOW),
        stmt(BPF_ALU_AND_K, SOCK_TYPE_MASK),
        jump(BPF_JMP_JEQ_K, libc::SOCK_STREAM as u32, 1, 0),
        jump(BPF_JMP_JEQ_K, libc::SOCK_DGRAM as u32, 0, 5), // to `refuse`
        stmt(BPF_LD_W_ABS, OFFSET_ARG2_LOW),
        jump(BPF_JMP_JEQ_K, 0, 2, 0), // to `ALLOW`
        jump(BPF_JMP_JEQ_K, libc::IPPROTO_TCP as u32, 1, 0),
        jump(BPF_JMP_JEQ_K, libc::IPPROTO_UDP as u32, 0, 1),
        ALLOW,
        refuse,
    ];
    // socketpair(domain, ...): Unix sockets only.
    let socketpair = [
        stmt(BPF_LD_W_ABS, OFFSET_ARG0_LOW),
        jump(BPF_JMP_JEQ_K, libc::AF_UNIX as u32, 0, 1),
        ALLOW,
        refuse,
    ];
    // TCP Fast Open connects from a send call when its flags hold MSG_FASTOPEN.
    let no_fast_open = |flags: u32| {
        [
            stmt(BPF_LD_W_ABS, flags),
            jump(BPF_JMP_JSET_K, libc::MSG_FASTOPEN as u32, 0, 1),
            refuse,
            ALLOW,
        ]
    };
    let mut checks = when_call(libc::SYS_socket, &socket);
    checks.extend(when_call(libc::SYS_socketpair, &socketpair));
    checks.extend(when_call(libc::SYS_sendto, &no_fast_open(OFFSET_ARG3_LOW)));
    checks.extend(when_call(libc::SYS_sendmsg, &no_fast_open(OFFSET_ARG2_LOW)));
    checks.extend(when_call(
        libc::SYS_sendmmsg,
        &no_fast_open(OFFSET_ARG3_LOW),
    ));
    checks
}

/// The filter program, built once per phase; the child installs it right before `execve`.
pub(crate) struct Filter {
    filter: Vec<sock_filter>,
}

impl Filter {
    pub fn new(sockets: Sockets) -> Filter {
        let mut filter = vec![
            stmt(BPF_LD_W_ABS, OFFSET_ARCH),
            jump(BPF_JMP_JEQ_K, AUDIT_ARCH, 1, 0),
            stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
            stmt(BPF_LD_W_ABS, OFFSET_NR),
        ];
        // Each refused call: "if nr == call, return its errno", as a jump over one return.
        filter.push(jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1));
        filter.push(fail_with(libc::EPERM));
        for (nr, errno) in refused(sockets) {
            filter.push(jump(BPF_JMP_JEQ_K, nr as u32, 0, 1));
            filter.push(fail_with(errno));
        }
        if sockets == Sockets::Internet {
            filter.extend(internet_checks());
        }
        // ioctl(fd, FS_IOC_SETFLAGS, ...): the command is the second argument.
        filter.extend(when_call(
            libc::SYS_ioctl,
            &[
                stmt(BPF_LD_W_ABS, OFFSET_ARG1_LOW),
                jump(BPF_JMP_JEQ_K, FS_IOC_SETFLAGS, 0, 1),
                fail_with(libc::EPERM),
                ALLOW,
            ],
        ));
        filter.push(ALLOW);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel does with a call under `filter`: the filter run over its `seccomp_data`
    /// (`nr`, `arch`, the instruction pointer, six arguments).
    fn verdict(filter: &Filter, arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&(nr as i32).to_ne_bytes());
        data.extend_from_slice(&arch.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes());
        for arg in args {
            data.extend_from_slice(&arg.to_ne_bytes());
        }
        let word = |at: u32| {
            let at = at as usize;
            u32::from_ne_bytes(data[at..at + 4].try_into().unwrap())
        };
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let op = filter.filter[pc];
            pc += 1;
            let jump = |taken: bool| usize::from(if taken { op.jt } else { op.jf });
            match op.code {
                BPF_LD_W_ABS => acc = word(op.k),
                BPF_ALU_AND_K => acc &= op.k,
                BPF_JMP_JEQ_K => pc += jump(acc == op.k),
                BPF_JMP_JGE_K => pc += jump(acc >= op.k),
                BPF_JMP_JSET_K => pc += jump(acc & op.k != 0),
                BPF_RET_K => return op.k,
                other => panic!("an instruction this test does not know: {other:#x}"),
            }
        }
    }

    fn call(filter: &Filter, nr: i64, args: [u64; 6]) -> u32 {
        verdict(filter, AUDIT_ARCH, nr, args)
    }

    fn socket(filter: &Filter, domain: i32, kind: i32, protocol: i32) -> u32 {
        call(
            filter,
            libc::SYS_socket,
            [domain as u64, kind as u64, protocol as u64, 0, 0, 0],
        )
    }

    const EACCES: u32 = SECCOMP_RET_ERRNO | libc::EACCES as u32;
    const EPERM: u32 = SECCOMP_RET_ERRNO | libc::EPERM as u32;

    #[test]
    fn without_a_net_grant_no_socket_can_be_made() {
        let f = Filter::new(Sockets::None);
        for (domain, kind) in [
            (libc::AF_INET, libc::SOCK_STREAM),
            (libc::AF_INET6, libc::SOCK_DGRAM),
            (libc::AF_UNIX, libc::SOCK_STREAM),
            (libc::AF_NETLINK, libc::SOCK_RAW),
        ] {
            assert_eq!(socket(&f, domain, kind, 0), EACCES, "{domain} {kind}");
        }
        let pair = [libc::AF_UNIX as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0];
        assert_eq!(call(&f, libc::SYS_socketpair, pair), EACCES);
        assert_eq!(call(&f, libc::SYS_read, [0; 6]), SECCOMP_RET_ALLOW);
        assert_eq!(call(&f, libc::SYS_fchmodat, [0; 6]), EPERM);
        let setflags = [3, FS_IOC_SETFLAGS as u64, 0, 0, 0, 0];
        assert_eq!(call(&f, libc::SYS_ioctl, setflags), EPERM);
        assert_eq!(
            call(&f, libc::SYS_ioctl, [1, 0x5401, 0, 0, 0, 0]),
            SECCOMP_RET_ALLOW
        );
        let x32 = libc::SYS_read | X32_SYSCALL_BIT as i64;
        assert_eq!(call(&f, x32, [0; 6]), EPERM);
        assert_eq!(
            verdict(&f, 0x4000_0003, libc::SYS_read, [0; 6]),
            SECCOMP_RET_KILL_PROCESS,
            "another architecture"
        );
    }

    #[test]
    fn a_net_grant_allows_tcp_and_udp_over_ip_and_nothing_else() {
        let f = Filter::new(Sockets::Internet);
        let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        for (domain, kind, protocol) in [
            (libc::AF_INET, libc::SOCK_STREAM, 0),
            (libc::AF_INET, libc::SOCK_STREAM | flags, libc::IPPROTO_TCP),
            (libc::AF_INET6, libc::SOCK_STREAM, 0),
            (libc::AF_INET, libc::SOCK_DGRAM | flags, 0),
            (libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
        ] {
            assert_eq!(
                socket(&f, domain, kind, protocol),
                SECCOMP_RET_ALLOW,
                "{domain} {kind} {protocol}"
            );
        }
        const IPPROTO_MPTCP: i32 = 262;
        for (domain, kind, protocol) in [
            (libc::AF_UNIX, libc::SOCK_STREAM, 0),
            (libc::AF_UNIX, libc::SOCK_DGRAM, 0),
            (libc::AF_NETLINK, libc::SOCK_RAW, 0),
            (libc::AF_PACKET, libc::SOCK_RAW, 0),
            (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP),
            (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
            (libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6),
            (libc::AF_INET, libc::SOCK_STREAM, IPPROTO_MPTCP),
            (libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP),
            (libc::AF_INET, libc::SOCK_SEQPACKET, 0),
        ] {
            assert_eq!(
                socket(&f, domain, kind, protocol),
                EACCES,
                "{domain} {kind} {protocol}"
            );
        }
        let pair = |domain: i32| [domain as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0];
        assert_eq!(
            call(&f, libc::SYS_socketpair, pair(libc::AF_UNIX)),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(call(&f, libc::SYS_socketpair, pair(libc::AF_TIPC)), EACCES);
        assert_eq!(call(&f, libc::SYS_listen, [3, 1, 0, 0, 0, 0]), EACCES);
        let fast_open = libc::MSG_FASTOPEN as u64;
        let nosignal = libc::MSG_NOSIGNAL as u64;
        for (nr, flags_at) in [
            (libc::SYS_sendto, 3),
            (libc::SYS_sendmsg, 2),
            (libc::SYS_sendmmsg, 3),
        ] {
            let mut args = [3, 0, 0, 0, 0, 0];
            args[flags_at] = nosignal;
            assert_eq!(call(&f, nr, args), SECCOMP_RET_ALLOW, "{nr}");
            args[flags_at] = nosignal | fast_open;
            assert_eq!(call(&f, nr, args), EACCES, "{nr} with MSG_FASTOPEN");
        }
    }

    #[test]
    fn a_net_grant_changes_nothing_but_sockets() {
        let plain = Filter::new(Sockets::None);
        let net = Filter::new(Sockets::Internet);
        let sockets = [
            libc::SYS_socket,
            libc::SYS_socketpair,
            libc::SYS_listen,
            libc::SYS_sendto,
            libc::SYS_sendmsg,
            libc::SYS_sendmmsg,
        ];
        for nr in (0..600).filter(|nr| !sockets.contains(nr)) {
            for args in [[0; 6], [3, FS_IOC_SETFLAGS as u64, 0, 0, 0, 0]] {
                assert_eq!(call(&plain, nr, args), call(&net, nr, args), "call {nr}");
            }
        }
    }
}
