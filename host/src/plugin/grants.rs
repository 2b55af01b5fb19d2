//! Grants -> WASI: which directories a guest sees (and where), which environment variables, and
//! nothing else (no sockets, empty stdin). Also [`check_phase_grants`], which refuses grants that
//! would hand a plugin the state, the compiled-component cache, what runs next, or the state's
//! credentials.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::limits::{LogBudget, Stdio, StdioCapture};
use super::open_grants::{Access, OpenedGrant};
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

/// The WASI context of one run. Its preopens are the phase's grants as [`open_grants`] opened
/// them when the phase started (directories only: a guest sees no single-file grant, which is
/// for exec'd programs).
///
/// [`open_grants`]: super::open_grants::open_grants
pub(crate) fn wasi_context(
    sandbox: &Sandbox,
    opened: &[OpenedGrant],
    budget: &Arc<Mutex<LogBudget>>,
    refusals: &Arc<Mutex<Vec<String>>>,
) -> Result<WasiCtx, String> {
    let mut builder = WasiCtxBuilder::new();
    let root = &sandbox.project_root;
    let grants = &sandbox.grants;
    for grant in opened.iter().filter(|g| g.is_dir) {
        let perms = match grant.access {
            Access::Write => FsPerms::ReadWrite,
            Access::Read => FsPerms::ReadOnly,
        };
        // The handle's own path: the directory opened at phase start, not the grant's path
        // walked again.
        builder
            .preopened_dir(grant.handle_path(), guest_path(root, &grant.path), perms)
            .map_err(|e| format!("the grant {} cannot be opened: {e}", grant.path.display()))?;
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
        let note = format!(
            "network access refused ({what} {addr}): a phase has no sockets; it reaches the \
             network through wasi:http, to the origins of its net grant"
        );
        if let Ok(mut b) = budget.lock() {
            b.emit(LogLevel::Warn, &note);
        }
        if let Ok(mut r) = refusals.lock() {
            super::limits::keep_refusal(&mut r, &note);
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

/// What no grant of any phase may reach (see [`check_phase_grants`]). Paths are absolute or
/// relative to the project root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    /// The state file, its `.lock` and `.bak`: no read or write grant may name one, contain one,
    /// or lie in their directory.
    pub state_files: Vec<PathBuf>,
    /// The compiled-component cache, whose files are native code the host runs: no read or write
    /// grant may equal it, contain it, or lie inside it.
    pub cache_dir: Option<PathBuf>,
    /// The files that decide what runs, each with what it is (`the manifest`, `the plugin of
    /// phase rollout`): no write grant may name or contain one. Reading them is fine.
    pub run_files: Vec<(PathBuf, String)>,
    /// Environment variables that lead to the state or its credentials, each with what it is:
    /// no `env` grant may name one.
    pub env: Vec<(String, String)>,
}

/// The grant [`check_phase_grants`] refused, as the phase's [`Grants`] hold it, so the caller
/// can point at where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusedGrant {
    /// A `read` or `write` path.
    Path(PathBuf),
    /// An `env` variable name.
    Env(String),
}

/// Why a phase's grants were refused: which grant, and a message that names it and says what
/// to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRefusal {
    pub grant: RefusedGrant,
    pub message: String,
}

impl std::fmt::Display for GrantRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Refuse the first grant that would let a plugin reach what `protected` names. Paths are
/// compared after resolving the symlinks of whatever exists, so `state -> .stagecraft` does not
/// slip through; a file that decides what runs is protected along the path written (a write
/// grant could replace a link on the way), as its directory entry, and as the file a link leads
/// to.
pub fn check_phase_grants(
    grants: &Grants,
    project_root: &Path,
    protected: &Protected,
) -> Result<(), GrantRefusal> {
    let state_files: Vec<PathBuf> = protected
        .state_files
        .iter()
        .map(|p| resolve(&absolute(project_root, p)))
        .collect();
    let state_dirs: Vec<PathBuf> = state_files
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    let cache_dir = protected
        .cache_dir
        .as_ref()
        .map(|dir| resolve(&absolute(project_root, dir)));
    let run_files: Vec<(PathBuf, &str)> = protected
        .run_files
        .iter()
        .flat_map(|(file, what)| {
            let file = lexical(&absolute(project_root, file));
            let entry = match (file.parent(), file.file_name()) {
                (Some(dir), Some(name)) => resolve(dir).join(name),
                _ => file.clone(),
            };
            let target = resolve(&file);
            [file, entry, target].map(|path| (path, what.as_str()))
        })
        .collect();

    let kinds = [("read", &grants.read), ("write", &grants.write)];
    for (kind, dirs) in kinds {
        for dir in dirs.iter() {
            let refuse = |message: String| GrantRefusal {
                grant: RefusedGrant::Path(dir.clone()),
                message,
            };
            let grant = resolve(&absolute(project_root, dir));
            for file in &state_files {
                if grant == *file || file.starts_with(&grant) {
                    return Err(refuse(format!(
                        "the {kind} grant {} would expose the state file {}: grant a directory \
                         that does not contain it, or keep the state file outside the granted \
                         directories (--state-file)",
                        dir.display(),
                        file.display()
                    )));
                }
            }
            for state_dir in &state_dirs {
                if grant.starts_with(state_dir) {
                    return Err(refuse(format!(
                        "the {kind} grant {} is inside the state directory {}: phases may not \
                         touch the state file's directory; grant another directory",
                        dir.display(),
                        state_dir.display()
                    )));
                }
            }
            if let Some(cache) = &cache_dir {
                if cache.starts_with(&grant) {
                    return Err(refuse(format!(
                        "the {kind} grant {} would expose the compiled-component cache {}, whose \
                         files are native code stagecraft runs: grant a directory that does not \
                         contain it, or move the cache elsewhere (STAGECRAFT_CACHE_DIR)",
                        dir.display(),
                        cache.display()
                    )));
                }
                if grant.starts_with(cache) {
                    return Err(refuse(format!(
                        "the {kind} grant {} is inside the compiled-component cache {}, whose \
                         files are native code stagecraft runs; grant another directory",
                        dir.display(),
                        cache.display()
                    )));
                }
            }
            if kind != "write" {
                continue;
            }
            for (file, what) in &run_files {
                if grant == *file || file.starts_with(&grant) {
                    return Err(refuse(format!(
                        "the write grant {} would let the phase rewrite {} ({what}), which \
                         decides what runs next: grant a directory that does not contain it (for \
                         example `dist`), or keep the manifest and plugin files outside it; a \
                         read grant of them is fine",
                        dir.display(),
                        file.display()
                    )));
                }
            }
        }
    }
    for name in &grants.env {
        if let Some((_, what)) = protected.env.iter().find(|(n, _)| n == name) {
            return Err(GrantRefusal {
                grant: RefusedGrant::Env(name.clone()),
                message: format!(
                    "the env grant {name} would hand the plugin {what}: remove it from the \
                     grant; a plugin that needs a database or file of its own should read it \
                     from a variable of its own (for example APP_DATABASE_URL)"
                ),
            });
        }
    }
    Ok(())
}

/// [`check_phase_grants`] with only the state files protected, its message as the error.
pub fn check_grants(
    grants: &Grants,
    project_root: &Path,
    state_files: &[PathBuf],
) -> Result<(), String> {
    let protected = Protected {
        state_files: state_files.to_vec(),
        ..Protected::default()
    };
    check_phase_grants(grants, project_root, &protected).map_err(|refusal| refusal.message)
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

    #[test]
    fn the_cache_directory_is_never_granted() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let protected = Protected {
            cache_dir: Some(root.join("var/cache")),
            ..Protected::default()
        };
        assert_eq!(
            check_phase_grants(&grants(&["var/log"], &["dist"]), root, &protected),
            Ok(())
        );
        for bad in [".", "var", "var/cache", "var/cache/x", "dist/../var/cache"] {
            for (read, write) in [(vec![bad], vec![]), (vec![], vec![bad])] {
                let refusal =
                    check_phase_grants(&grants(&read, &write), root, &protected).unwrap_err();
                assert_eq!(refusal.grant, RefusedGrant::Path(PathBuf::from(bad)));
                assert!(
                    refusal.message.contains("compiled-component cache"),
                    "{}",
                    refusal.message
                );
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn files_that_decide_what_runs_may_be_read_but_not_written() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        for dir in ["plugins", "vendor", "links"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("stagecraft.toml"), "").unwrap();
        std::fs::write(root.join("vendor/build.wasm"), "").unwrap();
        std::os::unix::fs::symlink("../vendor/build.wasm", root.join("plugins/build.wasm"))
            .unwrap();
        let protected = Protected {
            run_files: vec![
                (root.join("stagecraft.toml"), "the manifest".into()),
                (
                    root.join("plugins/build.wasm"),
                    "the plugin of phase build".into(),
                ),
            ],
            ..Protected::default()
        };
        let all = [
            ".",
            "plugins",
            "plugins/build.wasm",
            "vendor",
            "stagecraft.toml",
        ];
        assert_eq!(
            check_phase_grants(&grants(&all, &["dist", "links"]), root, &protected),
            Ok(())
        );
        for bad in all {
            let refusal =
                check_phase_grants(&grants(&[], &[bad]), root, &protected).expect_err(bad);
            assert_eq!(refusal.grant, RefusedGrant::Path(PathBuf::from(bad)));
            assert!(
                refusal
                    .message
                    .starts_with(&format!("the write grant {bad} would let")),
                "{}",
                refusal.message
            );
        }
    }

    #[test]
    fn env_grants_of_protected_variables_are_refused_by_name() {
        let protected = Protected {
            env: vec![("PGPASSWORD".into(), "the state's password".into())],
            ..Protected::default()
        };
        let env = |names: &[&str]| Grants {
            env: names.iter().map(|n| n.to_string()).collect(),
            ..Grants::default()
        };
        let root = Path::new("/p");
        assert_eq!(
            check_phase_grants(&env(&["HOME", "PGHOST"]), root, &protected),
            Ok(())
        );
        let refusal =
            check_phase_grants(&env(&["HOME", "PGPASSWORD"]), root, &protected).unwrap_err();
        assert_eq!(refusal.grant, RefusedGrant::Env("PGPASSWORD".into()));
        assert!(
            refusal
                .message
                .starts_with("the env grant PGPASSWORD would hand the plugin the state's password"),
            "{}",
            refusal.message
        );
    }
}
