//! Grants -> WASI: which directories a guest sees (and where), which environment variables, and
//! nothing else (no sockets, empty stdin). Also [`check_grants`], which keeps the state file out
//! of every grant.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::limits::{LogBudget, Stdio, StdioCapture};
use super::types::{Grants, LogLevel, Sandbox};

/// Where a granted host directory appears in the guest: its path relative to the project root
/// (`.` for the root itself, `public` for `<root>/public`), or its absolute host path when it is
/// outside the project. Relative paths in the guest (`std::fs::write("public/x")`) then mean the
/// same thing they mean in the manifest.
pub fn guest_path(project_root: &Path, host_dir: &Path) -> String {
    match host_dir.strip_prefix(project_root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => host_dir.to_string_lossy().into_owned(),
    }
}

fn absolute(project_root: &Path, dir: &Path) -> PathBuf {
    if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        project_root.join(dir)
    }
}

/// The WASI context of one run. `write` directories that do not exist yet are created (a phase
/// that renders into `releases/` should not need a set-up step); a missing `read` directory is an
/// error naming it.
pub(crate) fn wasi_context(
    sandbox: &Sandbox,
    budget: &Arc<Mutex<LogBudget>>,
    refusals: &Arc<Mutex<Vec<String>>>,
) -> Result<WasiCtx, String> {
    let mut builder = WasiCtxBuilder::new();
    let root = &sandbox.project_root;
    let grants = &sandbox.grants;
    for dir in &grants.write {
        let host = absolute(root, dir);
        std::fs::create_dir_all(&host)
            .map_err(|e| format!("write grant {} cannot be created: {e}", host.display()))?;
        builder
            .preopened_dir(&host, guest_path(root, &host), FsPerms::ReadWrite)
            .map_err(|e| format!("write grant {} cannot be opened: {e}", host.display()))?;
    }
    for dir in &grants.read {
        let host = absolute(root, dir);
        if grants.write.iter().any(|w| absolute(root, w) == host) {
            continue;
        }
        if !host.is_dir() {
            return Err(format!(
                "read grant {} is not a directory: create it or remove it from the phase's grants",
                host.display()
            ));
        }
        builder
            .preopened_dir(&host, guest_path(root, &host), FsPerms::ReadOnly)
            .map_err(|e| format!("read grant {} cannot be opened: {e}", host.display()))?;
    }
    for name in &grants.env {
        if let Ok(value) = std::env::var(name) {
            builder.env(name, value);
        }
    }
    builder.stdout(StdioCapture {
        budget: budget.clone(),
        stream: Stdio::Out,
    });
    builder.stderr(StdioCapture {
        budget: budget.clone(),
        stream: Stdio::Err,
    });
    // Sockets are denied by WASI's default address check too; this one says so in the log and
    // in the failure, because "permission denied" alone sends people hunting in the wrong place.
    let budget = budget.clone();
    let refusals = refusals.clone();
    builder.socket_addr_check(move |addr, usage| {
        let what = match usage {
            SocketAddrUse::TcpConnect => "connecting to",
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => "binding",
            SocketAddrUse::UdpSend => "sending to",
            _ => "listening on",
        };
        let note = format!("network access refused ({what} {addr}): phases have no network grant");
        if let Ok(mut b) = budget.lock() {
            b.emit(LogLevel::Warn, &note);
        }
        if let Ok(mut r) = refusals.lock() {
            r.push(note);
        }
        Box::pin(async { false })
    });
    // Socket *creation* is allowed so that every bind/connect/send reaches the check above
    // (which refuses all of them); with TCP/UDP switched off the guest would only see a bare
    // "permission denied" and the log would not say why.
    builder.allow_tcp(true);
    builder.allow_udp(true);
    builder.allow_ip_name_lookup(false);
    Ok(builder.build())
}

/// Refuse any `read`/`write` grant that would expose a protected path (the state file, its
/// `.lock` and `.bak`) or their directory: a grant may not equal, contain, or lie inside such a
/// directory, nor name a protected file. Paths are compared after resolving symlinks of
/// whatever exists, so `state -> .stagecraft` does not slip through. The error names the grant.
pub fn check_grants(
    grants: &Grants,
    project_root: &Path,
    protected: &[PathBuf],
) -> Result<(), String> {
    let protected: Vec<PathBuf> = protected
        .iter()
        .map(|p| resolve(&absolute(project_root, p)))
        .collect();
    let protected_dirs: Vec<PathBuf> = protected
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    let kinds = [("read", &grants.read), ("write", &grants.write)];
    for (kind, dirs) in kinds {
        for dir in dirs.iter() {
            let grant = resolve(&absolute(project_root, dir));
            for file in &protected {
                if grant == *file || file.starts_with(&grant) {
                    return Err(format!(
                        "the {kind} grant {} would expose the state file {}: grant a directory \
                         that does not contain it, or keep the state file outside the granted \
                         directories (--state-file)",
                        dir.display(),
                        file.display()
                    ));
                }
            }
            for state_dir in &protected_dirs {
                if grant.starts_with(state_dir) {
                    return Err(format!(
                        "the {kind} grant {} is inside the state directory {}: phases may not \
                         touch the state file's directory; grant another directory",
                        dir.display(),
                        state_dir.display()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Canonicalize the longest existing ancestor and append the rest lexically (so a grant or a
/// state file that does not exist yet still compares correctly).
fn resolve(path: &Path) -> PathBuf {
    let normal = lexical(path);
    let mut existing = normal.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return normal,
        }
    }
}

fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_mirror_the_manifest() {
        let root = Path::new("/p");
        assert_eq!(guest_path(root, Path::new("/p")), ".");
        assert_eq!(guest_path(root, Path::new("/p/public")), "public");
        assert_eq!(guest_path(root, Path::new("/p/a/b")), "a/b");
        assert_eq!(guest_path(root, Path::new("/srv/x")), "/srv/x");
    }

    fn grants(read: &[&str], write: &[&str]) -> Grants {
        Grants {
            read: read.iter().map(PathBuf::from).collect(),
            write: write.iter().map(PathBuf::from).collect(),
            ..Grants::default()
        }
    }

    #[test]
    fn state_directory_is_never_granted() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        std::fs::create_dir_all(root.join(".stagecraft")).unwrap();
        std::fs::create_dir_all(root.join("public")).unwrap();
        let state = root.join(".stagecraft/releases.json");
        let protected = vec![
            state.clone(),
            root.join(".stagecraft/releases.json.lock"),
            root.join(".stagecraft/releases.json.bak"),
        ];
        assert!(check_grants(&grants(&["public"], &["dist"]), root, &protected).is_ok());
        for bad in [
            ".",
            ".stagecraft",
            ".stagecraft/sub",
            "public/../.stagecraft",
        ] {
            let err = check_grants(&grants(&[bad], &[]), root, &protected).unwrap_err();
            assert!(err.contains(bad), "{err}");
            let err = check_grants(&grants(&[], &[bad]), root, &protected).unwrap_err();
            assert!(err.contains("write grant"), "{err}");
        }
        let abs = state.display().to_string();
        assert!(check_grants(&grants(&[&abs], &[]), root, &protected).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_to_the_state_directory_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        std::fs::create_dir_all(root.join(".stagecraft")).unwrap();
        std::os::unix::fs::symlink(root.join(".stagecraft"), root.join("sneaky")).unwrap();
        let protected = vec![root.join(".stagecraft/releases.json")];
        assert!(check_grants(&grants(&["sneaky"], &[]), root, &protected).is_err());
    }
}
