//! Grants are opened when their phase starts, not when the manifest is loaded: an earlier phase
//! may have changed what a path leads to (a `build` phase with `write = ["dist"]` can plant
//! `dist/site -> ../.stagecraft`). Each grant is opened once, beneath the project root, without
//! following any symbolic link; the handle opened here is what WASI preopens and what the exec
//! confinement's Landlock rules name, so nothing is resolved twice.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;

use super::types::Grants;

/// What a grant lets its phase do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

impl Access {
    fn word(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// One grant, opened (`O_PATH`) for this phase run.
#[derive(Debug)]
pub(crate) struct OpenedGrant {
    /// The grant as the manifest resolved it (absolute).
    pub path: PathBuf,
    pub access: Access,
    pub is_dir: bool,
    pub fd: OwnedFd,
}

impl OpenedGrant {
    /// A path naming exactly the inode opened here (the kernel's magic link for the handle), for
    /// APIs that only take paths. Opening it never walks the grant's path again.
    pub fn handle_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// Open every read and write grant of a phase. A grant named both ways is opened once, for
/// writing. Write grants that do not exist yet are created as directories (beneath the root,
/// never through a link); a missing read grant is an error naming it.
pub(crate) fn open_grants(
    project_root: &Path,
    grants: &Grants,
) -> Result<Vec<OpenedGrant>, String> {
    let mut opened: Vec<OpenedGrant> = Vec::new();
    let root = open_root(project_root)?;
    for (access, list) in [(Access::Write, &grants.write), (Access::Read, &grants.read)] {
        for path in list {
            let full = if path.is_absolute() {
                path.clone()
            } else {
                project_root.join(path)
            };
            if opened.iter().any(|g| g.path == full) {
                continue;
            }
            let fd = open_one(&root, project_root, &full, access)?;
            let is_dir = rustix::fs::fstat(&fd)
                .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir())
                .map_err(|e| format!("the {} grant {}: {e}", access.word(), path.display()))?;
            opened.push(OpenedGrant {
                path: full,
                access,
                is_dir,
                fd,
            });
        }
    }
    Ok(opened)
}

const RESOLVE: ResolveFlags = ResolveFlags::NO_SYMLINKS
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::BENEATH);

fn open_root(project_root: &Path) -> Result<OwnedFd, String> {
    // The project root itself is the manifest's directory, chosen by the user: it is trusted.
    rustix::fs::open(
        project_root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        format!(
            "the project root {} cannot be opened: {e}",
            project_root.display()
        )
    })
}

/// Where a grant's walk starts and what it walks: relative to the project root when it lies
/// inside it, else from `/` (an absolute grant outside the project, named by the trusted
/// manifest; it still may not pass through a link).
fn base_and_rest<'a>(root: &'a OwnedFd, project_root: &Path, path: &Path) -> (Base<'a>, PathBuf) {
    match path.strip_prefix(project_root) {
        Ok(rel) => (Base::Root(root), rel.to_path_buf()),
        Err(_) => (Base::Slash, path.to_path_buf()),
    }
}

enum Base<'a> {
    Root(&'a OwnedFd),
    Slash,
}

fn open_one(
    root: &OwnedFd,
    project_root: &Path,
    path: &Path,
    access: Access,
) -> Result<OwnedFd, String> {
    let (base, rest) = base_and_rest(root, project_root, path);
    let rest_str = if rest.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rest.clone()
    };
    let attempt = |rest: &Path| match &base {
        Base::Root(fd) => openat2(
            fd,
            rest,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        ),
        Base::Slash => openat2(
            CWD,
            rest,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ),
    };
    match attempt(&rest_str) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOENT) if access == Access::Write => {
            create_dirs(&base, &rest, path)?;
            attempt(&rest_str).map_err(|e| explain(&base, &rest, path, access, e))
        }
        Err(e) => Err(explain(&base, &rest, path, access, e)),
    }
}

/// `mkdir -p` one component at a time, each opened without following links, so a link planted
/// anywhere along the way is refused rather than followed.
fn create_dirs(base: &Base<'_>, rest: &Path, grant: &Path) -> Result<(), String> {
    let start = match base {
        Base::Root(fd) => rustix::io::fcntl_dupfd_cloexec(fd, 0),
        Base::Slash => rustix::fs::open(
            "/",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ),
    }
    .map_err(|e| format!("the write grant {}: {e}", grant.display()))?;
    let mut dir = start;
    let mut walked = PathBuf::new();
    for part in rest.components() {
        let Component::Normal(name) = part else {
            continue;
        };
        walked.push(name);
        let open = |dir: &OwnedFd| {
            openat2(
                dir,
                name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            )
        };
        let next = match open(&dir) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => {
                        return Err(format!(
                            "the write grant {} cannot be created ({}): {e}",
                            grant.display(),
                            walked.display()
                        ))
                    }
                }
                open(&dir).map_err(|e| explain(base, rest, grant, Access::Write, e))?
            }
            Err(e) => return Err(explain(base, rest, grant, Access::Write, e)),
        };
        dir = next;
    }
    Ok(())
}

/// Turn a failed open into a message that names the grant and, when a link was in the way,
/// the link and where it points.
fn explain(base: &Base<'_>, rest: &Path, grant: &Path, access: Access, err: Errno) -> String {
    let kind = access.word();
    if matches!(err, Errno::LOOP | Errno::XDEV) {
        if let Some((link, target)) = first_link(base, rest) {
            let shown = match base {
                Base::Root(_) => link.display().to_string(),
                Base::Slash => Path::new("/").join(&link).display().to_string(),
            };
            return format!(
                "the {kind} grant {} cannot be opened: {shown} is a symbolic link (to {}); \
                 grants never follow symbolic links, so an earlier phase cannot redirect them: \
                 remove the link, or grant the directory it points to",
                grant.display(),
                target.display()
            );
        }
        return format!(
            "the {kind} grant {} cannot be opened: it leads outside the project root or \
             through a symbolic link ({err})",
            grant.display()
        );
    }
    if err == Errno::NOENT {
        return format!(
            "the {kind} grant {} does not exist: create it or remove it from the phase's grants",
            grant.display()
        );
    }
    format!(
        "the {kind} grant {} cannot be opened: {err}",
        grant.display()
    )
}

/// The first component of `rest` (walked from `base`) that is a symbolic link, and its target.
fn first_link(base: &Base<'_>, rest: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut walked = PathBuf::new();
    for part in rest.components() {
        match part {
            Component::Normal(name) => walked.push(name),
            Component::RootDir => continue,
            _ => continue,
        }
        let meta = match base {
            Base::Root(fd) => {
                rustix::fs::statat(fd, &walked, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            }
            Base::Slash => rustix::fs::statat(
                CWD,
                Path::new("/").join(&walked),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            ),
        }
        .ok()?;
        if rustix::fs::FileType::from_raw_mode(meta.st_mode) == rustix::fs::FileType::Symlink {
            let target = match base {
                Base::Root(fd) => rustix::fs::readlinkat(fd, &walked, Vec::new()),
                Base::Slash => {
                    rustix::fs::readlinkat(CWD, Path::new("/").join(&walked), Vec::new())
                }
            }
            .ok()
            .map(|t| PathBuf::from(t.to_string_lossy().into_owned()))
            .unwrap_or_default();
            return Some((walked, target));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn grants(read: &[&Path], write: &[&Path]) -> Grants {
        Grants {
            read: read.iter().map(|p| p.to_path_buf()).collect(),
            write: write.iter().map(|p| p.to_path_buf()).collect(),
            ..Grants::default()
        }
    }

    #[test]
    fn opens_directories_and_files_and_creates_missing_write_grants() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("site")).unwrap();
        std::fs::write(root.join("Makefile"), "all:\n").unwrap();
        let opened = open_grants(
            root,
            &grants(
                &[&root.join("site"), &root.join("Makefile")],
                &[&root.join("dist/a/b")],
            ),
        )
        .unwrap();
        assert_eq!(opened.len(), 3);
        assert!(opened[0].is_dir && opened[0].access == Access::Write);
        assert!(root.join("dist/a/b").is_dir());
        assert!(opened[1].is_dir);
        assert!(!opened[2].is_dir, "a file grant is a file");
    }

    #[test]
    fn a_link_anywhere_in_a_grant_fails_and_names_the_link() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join(".stagecraft")).unwrap();
        std::fs::create_dir_all(root.join("dist")).unwrap();
        symlink("../.stagecraft", root.join("dist/site")).unwrap();
        for access in ["read", "write"] {
            let g = if access == "read" {
                grants(&[&root.join("dist/site")], &[])
            } else {
                grants(&[], &[&root.join("dist/site/deeper")])
            };
            let err = open_grants(root, &g).unwrap_err();
            assert!(err.contains(&format!("the {access} grant")), "{err}");
            assert!(
                err.contains("dist/site is a symbolic link (to ../.stagecraft)"),
                "{err}"
            );
        }
        // A link to a directory inside the project is refused too: grants name real paths.
        symlink("../dist", root.join("up")).unwrap();
        assert!(open_grants(root, &grants(&[&root.join("up")], &[])).is_err());
    }

    #[test]
    fn a_missing_read_grant_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let err = open_grants(tmp.path(), &grants(&[&tmp.path().join("nope")], &[])).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn absolute_grants_outside_the_project_may_not_pass_a_link() {
        let project = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("real")).unwrap();
        symlink(outside.path().join("real"), outside.path().join("link")).unwrap();
        assert!(open_grants(
            project.path(),
            &grants(&[&outside.path().join("real")], &[])
        )
        .is_ok());
        let err = open_grants(
            project.path(),
            &grants(&[&outside.path().join("link")], &[]),
        )
        .unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
    }
}
