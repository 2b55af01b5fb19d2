//! Components beside the state file: `<stem>.components/<sha256>.wasm` for the state file
//! `<stem>.json` (see state/components.rs). Each is written to a temporary file, synced and
//! renamed into place, so a reader finds it whole or not at all, and checked against its name
//! when read. Every directory and file is opened relative to the state directory's handle and
//! never through a symlink. The directory lies inside the state directory, which no grant may
//! reach.

use std::io::Read;

use rustix::fs::{AtFlags, FileType};

use super::logs::{open_log, subdir};
use super::*;
use crate::state::components::{
    check_digest, verify, DamagedComponent, MAX_STORED_COMPONENT_BYTES,
};
use crate::state::referenced_components;

impl FileStore {
    /// The components directory's name inside the state directory.
    fn components_dir_name(&self) -> String {
        let stem = self.name.strip_suffix(".json").unwrap_or(&self.name);
        format!("{stem}.components")
    }

    fn components_dir_path(&self) -> PathBuf {
        self.dir_path.join(self.components_dir_name())
    }

    fn component_error(&self, what: String, e: io::Error) -> anyhow::Error {
        StateError::caused_by(format!("{what}: {e}"), e).into()
    }

    /// The components directory, if it exists (`create`: created if not).
    fn components_dir(&self, create: bool) -> anyhow::Result<Option<Dir>> {
        let dir = if create {
            self.dir_for_write()?
        } else {
            match self.existing_dir()? {
                Some(dir) => dir,
                None => return Ok(None),
            }
        };
        subdir(dir, &self.components_dir_name(), create).map_err(|e| {
            self.component_error(
                format!("cannot open {}", self.components_dir_path().display()),
                e,
            )
        })
    }

    /// [`StateStore::missing_components`] for the file backend: those without a regular file.
    pub(super) fn missing(&self, digests: &[String]) -> anyhow::Result<Vec<String>> {
        for digest in digests {
            check_digest(digest)?;
        }
        let Some(dir) = self.components_dir(false)? else {
            return Ok(digests.to_vec());
        };
        let mut missing = Vec::new();
        for digest in digests {
            if !holds(&dir, &format!("{digest}.wasm"), None).map_err(|e| {
                self.component_error(
                    format!(
                        "cannot look for component {}",
                        self.components_dir_path()
                            .join(format!("{digest}.wasm"))
                            .display()
                    ),
                    e,
                )
            })? {
                missing.push(digest.clone());
            }
        }
        Ok(missing)
    }

    /// [`StateStore::put_component`] for the file backend.
    pub(super) fn put(&self, digest: &str, bytes: &[u8]) -> anyhow::Result<()> {
        check_digest(digest)?;
        verify(digest, bytes).map_err(|why| {
            StateError::new(format!("refusing to keep component {digest}: {why}"))
        })?;
        let dir = self.components_dir(true)?.expect("created when missing");
        let name = format!("{digest}.wasm");
        let path = self.components_dir_path().join(&name);
        let write = || -> io::Result<()> {
            if holds(&dir, &name, Some(bytes.len() as u64))? {
                return Ok(());
            }
            // Named by process and by write: two writers of the same component (in two
            // processes, or two threads of one) never share a temporary file, and a sweep
            // removes only those of processes that are gone.
            static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = format!(".{digest}.{}.{write}.tmp", std::process::id());
            remove_if_present(&dir, &tmp)?;
            let result = (|| {
                let mut file = dir.open_with(
                    &tmp,
                    OpenOptions::new().write(true).create_new(true).mode(0o600),
                )?;
                // Held while it is written: a sweep leaves a locked temporary file alone, even
                // one of a process it cannot see (another PID namespace sharing the directory).
                let _ =
                    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive);
                adopt_owner(&dir, &file);
                file.write_all(bytes)?;
                file.sync_all()?;
                // Replaces whatever held the name (a damaged copy, a planted link) whole.
                dir.rename(&tmp, &dir, &name)?;
                sync_dir(&dir)
            })();
            if result.is_err() {
                let _ = dir.remove_file(&tmp);
            }
            result
        };
        write().map_err(|e| {
            StateError::caused_by(
                format!(
                    "cannot keep component {}: {e}; free disk space or fix the directory's \
                     permissions, then try again",
                    path.display()
                ),
                e,
            )
            .into()
        })
    }

    /// [`StateStore::component`] for the file backend.
    pub(super) fn get(&self, digest: &str) -> anyhow::Result<Option<Vec<u8>>> {
        check_digest(digest)?;
        let Some(dir) = self.components_dir(false)? else {
            return Ok(None);
        };
        let name = format!("{digest}.wasm");
        let path = self.components_dir_path().join(&name);
        let Some(file) = open_log(&dir, &name)
            .map_err(|e| self.component_error(format!("cannot open {}", path.display()), e))?
        else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.take(MAX_STORED_COMPONENT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.component_error(format!("cannot read {}", path.display()), e))?;
        verify(digest, &bytes).map_err(|why| {
            DamagedComponent::error(
                digest,
                format!(
                    "component {} is damaged ({why}, not the sha256 it is named by); remove \
                     it: the next deploy that uses it keeps it again",
                    path.display()
                ),
            )
        })?;
        Ok(Some(bytes))
    }

    /// [`StateStore::sweep_components`] for the file backend: under the commit lock, so no
    /// release is committed between reading what the history names and removing the rest.
    pub(super) fn sweep_unused(&self) -> anyhow::Result<usize> {
        let Some(dir) = self.existing_dir()? else {
            return Ok(0);
        };
        let Some(components) = self.components_dir(false)? else {
            return Ok(0);
        };
        let lock = self.commit_lock(dir)?;
        let snapshot = self.fresh_snapshot(dir)?;
        let used = snapshot
            .as_ref()
            .map(|s| referenced_components(&s.state))
            .unwrap_or_default();
        self.remember(snapshot);
        let dir_path = self.components_dir_path();
        let list_error = |e| self.component_error(format!("cannot list {}", dir_path.display()), e);
        let mut swept = 0;
        for entry in components.entries().map_err(list_error)? {
            let entry = entry.map_err(list_error)?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let unused = match name.strip_suffix(".wasm") {
                Some(digest) if crate::state::is_component_digest(digest) => !used.contains(digest),
                _ => abandoned_temporary(&components, &name),
            };
            if !unused {
                continue; // In use, or nothing of ours.
            }
            match components.remove_file(&name) {
                Ok(()) => swept += usize::from(name.ends_with(".wasm")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(self.component_error(
                        format!("cannot remove {}", dir_path.join(&name).display()),
                        e,
                    ))
                }
            }
        }
        drop(lock);
        Ok(swept)
    }
}

/// Whether `dir` holds `name` as a regular file (of `len` bytes, when given). A symlink or
/// anything else in its place is not a component.
fn holds(dir: &Dir, name: &str, len: Option<u64>) -> io::Result<bool> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(
            FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
                && len.is_none_or(|len| stat.st_size as u64 == len),
        ),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether `name` is a temporary component file (`.<digest>.<pid>.<n>.tmp`) whose writer is
/// gone: its process does not exist (here), and nobody holds the lock its writer takes.
fn abandoned_temporary(dir: &Dir, name: &str) -> bool {
    let parts: Vec<&str> = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp"))
        .map(|n| n.split('.').collect())
        .unwrap_or_default();
    let [digest, pid, n] = parts[..] else {
        return false;
    };
    let Some(pid) = pid
        .parse::<i32>()
        .ok()
        .filter(|_| crate::state::is_component_digest(digest) && n.parse::<u64>().is_ok())
    else {
        return false;
    };
    let gone = match rustix::process::Pid::from_raw(pid) {
        Some(pid) => matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        ),
        None => false,
    };
    gone && unlocked(dir, name)
}

/// Whether nobody holds the lock on `name` (opened without following a link or blocking).
fn unlocked(dir: &Dir, name: &str) -> bool {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_ok(),
        // A symlink in a temporary file's place is nobody's write: remove it.
        Err(rustix::io::Errno::LOOP) => true,
        Err(_) => false,
    }
}
