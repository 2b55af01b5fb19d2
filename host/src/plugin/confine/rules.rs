//! The Landlock ruleset an exec'd program runs under: the system directories a program needs to
//! start (read and execute), a few device files, the phase's own grants exactly as granted, a
//! private temporary directory, and nothing else. No TCP bind, and no TCP connect but to the
//! ports of the phase's `net` grant (ABI 4+); no signals to or abstract sockets of processes
//! outside the sandbox (ABI 6+).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, Scope, ABI,
};

use crate::plugin::open_grants::{Access as GrantAccess, OpenedGrant};

/// The oldest Landlock ABI that confines everything we rely on: ABI 3 added `truncate`, without
/// which a program could empty a file it was only granted to read.
pub(crate) const MIN_ABI: i32 = 3;

/// The oldest Landlock ABI that can hold TCP connections to a `net` grant's ports (ABI 4 added
/// TCP bind and connect rules).
pub(crate) const MIN_NET_ABI: i32 = 4;

/// The running kernel's Landlock ABI version (0 when Landlock is missing or disabled).
pub(crate) fn kernel_abi() -> i32 {
    static ABI_VERSION: OnceLock<i32> = OnceLock::new();
    *ABI_VERSION.get_or_init(|| {
        const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
        // SAFETY: with a null attribute, size 0 and the VERSION flag the call only returns a
        // number; it reads and writes no memory.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<libc::c_void>(),
                0usize,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        };
        if v < 0 {
            0
        } else {
            v as i32
        }
    })
}

/// System paths every program may read and execute. `/etc` is listed entry by entry so that
/// its secrets can be left out (see [`public_etc`]).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// `/etc` entries no exec'd program may read, whatever their mode.
const ETC_SECRETS: &[&str] = &[
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "sudoers",
    "sudoers.d",
    "security",
    "credstore",
    "credstore.encrypted",
    "stagecraft",
];

/// What of `/etc` programs may read: only what every user of the machine may read. A file is
/// granted when it is world-readable; a directory as a whole when everything beneath it is
/// (world-readable files, world-searchable directories), and otherwise entry by entry. So a
/// secret an administrator protected by its mode (`/etc/ssl/private`, a 0600 `admin.conf`, a
/// keystore password) stays out of reach even of a program run by root, which file modes do not
/// stop. Symbolic links are not followed: their targets are judged where they live.
fn public_etc(dir: &Path, top: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if top
            && ETC_SECRETS
                .iter()
                .any(|s| name.as_encoded_bytes() == s.as_bytes())
        {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
        if meta.is_file() && mode & 0o004 != 0 {
            out.push(path);
        } else if meta.is_dir() && mode & 0o005 == 0o005 {
            if all_public(&path) {
                out.push(path);
            } else {
                public_etc(&path, false, out);
            }
        }
    }
}

/// Whether every file beneath `dir` is world-readable and every directory world-searchable.
fn all_public(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(|e| e.ok()).all(|entry| {
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            return false;
        };
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
        if meta.is_dir() {
            mode & 0o005 == 0o005 && all_public(&entry.path())
        } else if meta.is_file() {
            mode & 0o004 != 0
        } else {
            // Links are not followed by a rule; other kinds (sockets, FIFOs) are harmless.
            true
        }
    })
}

/// Device files a program may read and write (`/dev/null` above all).
const RW_DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full"];
const RO_DEVICES: &[&str] = &["/dev/random", "/dev/urandom"];

/// A system path the ruleset names, opened once per process (`O_PATH`).
struct SystemPath {
    fd: PathFd,
    writable: bool,
    is_dir: bool,
}

/// Every system path the ruleset names, opened once per process: rebuilding a phase's ruleset
/// then costs one system call per rule, not a directory listing and an open per path.
fn system_paths() -> &'static [SystemPath] {
    static PATHS: OnceLock<Vec<SystemPath>> = OnceLock::new();
    PATHS.get_or_init(|| {
        let mut paths: Vec<(PathBuf, bool)> = Vec::new();
        for dir in SYSTEM_DIRS {
            paths.push((PathBuf::from(dir), false));
        }
        let mut etc = Vec::new();
        public_etc(Path::new("/etc"), true, &mut etc);
        paths.extend(etc.into_iter().map(|p| (p, false)));
        for p in RW_DEVICES {
            paths.push((PathBuf::from(p), true));
        }
        for p in RO_DEVICES {
            paths.push((PathBuf::from(p), false));
        }
        paths
            .into_iter()
            .filter_map(|(path, writable)| {
                // A path this machine does not have (no /lib32) is simply not granted.
                let fd = PathFd::new(&path).ok()?;
                let is_dir = std::fs::metadata(&path)
                    .map(|m| m.is_dir())
                    .unwrap_or(false);
                Some(SystemPath {
                    fd,
                    writable,
                    is_dir,
                })
            })
            .collect()
    })
}

/// A ruleset being built for one phase: rules can still be added (a program found outside the
/// system directories gets a rule for its own file) until the last program of the phase runs.
pub(crate) struct PhaseRuleset {
    abi: ABI,
    created: RulesetCreated,
}

impl PhaseRuleset {
    /// System paths, `grants` as granted, `tmp` read-write, and TCP connections to `net_ports`
    /// (any host). Below [`MIN_NET_ABI`] port rules cannot be added and building fails (the
    /// jail refuses such a phase first, saying why).
    pub fn build(
        grants: &[OpenedGrant],
        tmp: &Path,
        net_ports: &[u16],
    ) -> Result<PhaseRuleset, String> {
        let abi = ABI::from(kernel_abi());
        let fail = |e: landlock::RulesetError| format!("building the Landlock ruleset: {e}");
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))
            .map_err(fail)?;
        if kernel_abi() >= MIN_NET_ABI {
            ruleset = ruleset
                .handle_access(AccessNet::from_all(abi))
                .map_err(fail)?;
        }
        if kernel_abi() >= 6 {
            ruleset = ruleset.scope(Scope::from_all(abi)).map_err(fail)?;
        }
        let mut created = ruleset.create().map_err(fail)?;
        let read = AccessFs::from_read(abi);
        let all = AccessFs::from_all(abi);
        let file_rw = AccessFs::from_file(abi);
        for sys in system_paths() {
            let mut access = if sys.writable {
                file_rw & !BitFlags::from(AccessFs::Execute)
            } else {
                read
            };
            if !sys.is_dir {
                access &= AccessFs::from_file(abi);
            }
            created = created
                .add_rule(PathBeneath::new(&sys.fd, access))
                .map_err(fail)?;
        }
        for grant in grants {
            let access = match (grant.access, grant.is_dir) {
                (GrantAccess::Read, true) => read,
                (GrantAccess::Read, false) => read & AccessFs::from_file(abi),
                (GrantAccess::Write, true) => all,
                (GrantAccess::Write, false) => file_rw,
            };
            let fd = grant
                .fd
                .try_clone()
                .map_err(|e| format!("the grant {}: {e}", grant.path.display()))?;
            created = created
                .add_rule(PathBeneath::new(fd, access))
                .map_err(fail)?;
        }
        let tmp_fd = PathFd::new(tmp).map_err(|e| format!("the private temp dir: {e}"))?;
        created = created
            .add_rule(PathBeneath::new(tmp_fd, all))
            .map_err(fail)?;
        // Connect only: binding stays refused (with listening, through seccomp).
        for &port in net_ports {
            created = created
                .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
                .map_err(fail)?;
        }
        Ok(PhaseRuleset { abi, created })
    }

    /// Let programs read and execute one more file (a granted program installed outside the
    /// system directories, such as `~/.cargo/bin/tool`).
    pub fn allow_program(&mut self, program: &Path) -> Result<(), String> {
        let fd = PathFd::new(program).map_err(|e| format!("{}: {e}", program.display()))?;
        let access = AccessFs::from_read(self.abi) & AccessFs::from_file(self.abi);
        let clone = self
            .created
            .try_clone()
            .map_err(|e| format!("the Landlock ruleset: {e}"))?;
        // Rules added to a clone land in the same kernel ruleset (one file description).
        clone
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| format!("allowing {}: {e}", program.display()))?;
        Ok(())
    }

    /// A descriptor of the ruleset for a child to pass to `landlock_restrict_self`.
    pub fn fd(&self) -> Result<OwnedFd, String> {
        let clone = self
            .created
            .try_clone()
            .map_err(|e| format!("the Landlock ruleset: {e}"))?;
        Option::<OwnedFd>::from(clone)
            .ok_or_else(|| "Landlock is not enforced by this kernel".to_string())
    }
}

/// Whether `program` lies under a system directory (already readable and executable).
pub(crate) fn is_system_program(program: &Path) -> bool {
    SYSTEM_DIRS.iter().any(|d| program.starts_with(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn only_what_every_user_may_read_of_etc_is_granted() {
        let etc = tempfile::tempdir().unwrap();
        let etc = etc.path();
        std::fs::write(etc.join("passwd"), "root:x:0:0").unwrap();
        std::fs::write(etc.join("shadow"), "root:$6$").unwrap();
        mode(&etc.join("shadow"), 0o644); // named secrets are left out whatever their mode
        std::fs::write(etc.join("keystore"), "secret").unwrap();
        mode(&etc.join("keystore"), 0o600);
        std::fs::create_dir_all(etc.join("ssl/certs")).unwrap();
        std::fs::write(etc.join("ssl/certs/ca.pem"), "cert").unwrap();
        std::fs::create_dir_all(etc.join("ssl/private")).unwrap();
        mode(&etc.join("ssl/private"), 0o700);
        std::fs::create_dir_all(etc.join("kube")).unwrap();
        std::fs::write(etc.join("kube/admin.conf"), "token").unwrap();
        mode(&etc.join("kube/admin.conf"), 0o600);
        std::fs::write(etc.join("kube/README"), "public").unwrap();
        std::fs::create_dir_all(etc.join("public.d")).unwrap();
        std::fs::write(etc.join("public.d/a.conf"), "a").unwrap();

        let mut out = Vec::new();
        public_etc(etc, true, &mut out);
        let names: Vec<String> = out
            .iter()
            .map(|p| p.strip_prefix(etc).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            ["kube/README", "passwd", "public.d", "ssl/certs"],
            "a wholly public directory is one rule; others are opened entry by entry"
        );
    }
}
