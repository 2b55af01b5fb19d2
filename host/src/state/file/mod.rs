//! The file backend: release state in one JSON file, committed atomically and durably under an
//! OS lock, with per-environment deploy leases held as OS locks beside it.
//!
//! Every operation goes through one cap-std `Dir` handle on the state directory, opened once, so
//! a path swapped underneath us (a symlink planted in the project) cannot redirect a write. The
//! protocol and its guarantees are specified in spec/state.md.
//!
//! - commit.rs: the commit protocol (commit lock, fresh snapshot, atomic replace, backup);
//! - text.rs: the file's text in pieces, reused for releases a commit did not change;
//! - lease.rs: per-environment leases and their holder records;
//! - logs.rs: phase logs in a directory beside the state file;
//! - components.rs: the components releases ran, content-addressed beside the state file;
//! - parse.rs: reading a state file, and what to say when it is damaged.

mod commit;
mod components;
mod lease;
mod logs;
mod parse;
mod text;

pub use parse::parse_state;
use text::{Snapshot, StateText};

use std::io::{self, IoSlice, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use rustix::fs::FlockOperation;

use super::safe_files::{
    adopt_owner, keep_owner_and_mode, lock_within, open_lock_file, open_state_file, owner_and_mode,
};
use super::{
    check_environment_name, Lease, LeaseHolder, Release, State, StateError, StateStore,
    DEFAULT_COMMIT_WAIT, FORMAT_VERSION,
};
use crate::error::input_error;

/// The environment variable that names the state file when `--state-file` is not given.
pub const STATE_FILE_ENV: &str = "STAGECRAFT_STATE_FILE";

/// Where the state lives when neither the flag nor the environment variable says otherwise,
/// relative to the project root.
pub const DEFAULT_STATE_PATH: &str = ".stagecraft/releases.json";

/// The state file path: `--state-file` beats `STAGECRAFT_STATE_FILE` (read at every call, so
/// nothing caches it), which beats `<project_root>/.stagecraft/releases.json`. Relative paths
/// from the flag or the variable are resolved against the working directory.
pub fn resolve_state_path(flag: Option<&Path>, project_root: &Path) -> PathBuf {
    let chosen = match flag {
        Some(path) => path.to_path_buf(),
        None => match std::env::var_os(STATE_FILE_ENV) {
            Some(value) if !value.is_empty() => PathBuf::from(value),
            _ => project_root.join(DEFAULT_STATE_PATH),
        },
    };
    if chosen.is_absolute() {
        chosen
    } else {
        match std::env::current_dir() {
            Ok(cwd) => cwd.join(chosen),
            Err(_) => chosen,
        }
    }
}

/// Release state in a JSON file. See the module docs and spec/state.md.
pub struct FileStore {
    /// The state file, as resolved (for messages).
    path: PathBuf,
    /// Its directory, created on the first write.
    dir_path: PathBuf,
    /// Its file name inside `dir_path`.
    name: String,
    /// The directory handle, opened once: when it first exists (a read) or is created (a write).
    dir: OnceLock<Dir>,
    /// The state file as this store last wrote or parsed it. See [`Snapshot`].
    last_seen: Mutex<Option<Snapshot>>,
    /// How long a commit waits for another process's commit lock.
    commit_wait: Mutex<Duration>,
}

/// Whether a transaction's closure changed anything worth committing.
type Changed = bool;

impl FileStore {
    /// A store for the state file at `path`. Creates nothing: the directory and the file are
    /// created by the first commit.
    pub fn open(path: PathBuf) -> anyhow::Result<FileStore> {
        let name = match path.file_name().and_then(|n| n.to_str()) {
            Some(n) if !n.is_empty() && n != "." && n != ".." => n.to_string(),
            _ => {
                return Err(input_error(format!(
                    "state file path {} does not name a file (its last part must be a UTF-8 \
                     file name); pass a path such as .stagecraft/releases.json",
                    path.display()
                )))
            }
        };
        let dir_path = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(FileStore {
            path,
            dir_path,
            name,
            dir: OnceLock::new(),
            last_seen: Mutex::new(None),
            commit_wait: Mutex::new(DEFAULT_COMMIT_WAIT),
        })
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn bak_name(&self) -> String {
        format!("{}.bak", self.name)
    }

    fn bak_path(&self) -> PathBuf {
        self.dir_path.join(self.bak_name())
    }

    /// The directory handle if the directory exists; `None` (and nothing created) otherwise.
    fn existing_dir(&self) -> anyhow::Result<Option<&Dir>> {
        if let Some(dir) = self.dir.get() {
            return Ok(Some(dir));
        }
        match Dir::open_ambient_dir(&self.dir_path, ambient_authority()) {
            Ok(dir) => Ok(Some(self.dir.get_or_init(|| dir))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.dir_error("open", e)),
        }
    }

    /// The directory handle, creating the directory (mode 0700, parents too) if missing.
    fn dir_for_write(&self) -> anyhow::Result<&Dir> {
        if let Some(dir) = self.existing_dir()? {
            return Ok(dir);
        }
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir_path)
            .map_err(|e| self.dir_error("create", e))?;
        let dir = Dir::open_ambient_dir(&self.dir_path, ambient_authority())
            .map_err(|e| self.dir_error("open", e))?;
        // Root creating the state directory in a user's project gives it to the project's
        // owner, like every file it creates in it.
        if let Some(parent) = self.dir_path.parent() {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            if let Ok(parent) = Dir::open_ambient_dir(parent, ambient_authority()) {
                if let Ok(fd) = rustix::fs::openat(
                    &dir,
                    ".",
                    rustix::fs::OFlags::RDONLY
                        | rustix::fs::OFlags::DIRECTORY
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                ) {
                    adopt_owner(&parent, &fd);
                }
            }
        }
        Ok(self.dir.get_or_init(|| dir))
    }

    fn dir_error(&self, action: &str, e: io::Error) -> anyhow::Error {
        StateError::caused_by(
            format!(
                "cannot {action} state directory {}: {e}; check that it exists and that you may \
             write to it, or pass --state-file <path>",
                self.dir_path.display()
            ),
            e,
        )
        .into()
    }

    fn write_error(&self, what: &str, e: io::Error) -> anyhow::Error {
        StateError::caused_by(
            format!(
                "cannot write state file {} ({what}): {e}; nothing was committed and the previous \
             version of the file is unchanged. Free disk space or fix the directory's \
             permissions, then try again",
                self.path.display()
            ),
            e,
        )
        .into()
    }

    /// The current bytes of the state file, or `None` if it does not exist.
    ///
    /// No lock is needed for a consistent read: a commit never modifies the file in place, it
    /// renames a complete new file over it, so an opened file never changes under its reader.
    fn read_bytes(&self, dir: &Dir) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(mut file) = open_state_file(dir, &self.name, &self.path)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| {
            StateError::caused_by(
                format!("cannot read state file {}: {e}", self.path.display()),
                e,
            )
        })?;
        Ok(Some(bytes))
    }

    fn parse(&self, bytes: &[u8]) -> anyhow::Result<State> {
        let bak_exists = self
            .dir
            .get()
            .is_some_and(|dir| dir.exists(self.bak_name()));
        parse_state(bytes, &self.path, &self.bak_path(), bak_exists)
            .map_err(|message| StateError::new(message).into())
    }
}

impl StateStore for FileStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn describe(&self) -> String {
        format!("state file {}", self.path.display())
    }

    fn set_lock_wait(&self, wait: Duration) {
        *self.commit_wait.lock().unwrap_or_else(|p| p.into_inner()) = wait;
    }

    fn read(&self) -> anyhow::Result<State> {
        let Some(dir) = self.existing_dir()? else {
            return Ok(State::default());
        };
        // Without the lock: a commit never changes the file in place, so the file opened here
        // is whole and stays as it is while it is compared or read.
        let snapshot = self.fresh_snapshot(dir)?;
        let state = snapshot
            .as_ref()
            .map(|s| s.state.clone())
            .unwrap_or_default();
        self.remember(snapshot);
        Ok(state)
    }

    fn transact_if_changed_dyn(
        &self,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        self.commit_with(f)
    }

    fn lease_observed(
        &self,
        env: &str,
        wait: Duration,
        observer: &dyn crate::state::LeaseWaitObserver,
    ) -> anyhow::Result<Lease> {
        self.take_lease(env, wait, observer)
    }

    fn lease_status(&self, env: &str) -> anyhow::Result<crate::state::LeaseStatus> {
        self.read_lease_status(env)
    }

    fn write_phase_log(
        &self,
        release: &super::ReleaseId,
        log: &super::PhaseLog,
    ) -> anyhow::Result<()> {
        self.write_log(release, log)
    }

    fn phase_logs(&self, release: &super::ReleaseId) -> anyhow::Result<Vec<super::PhaseLog>> {
        self.read_logs(release)
    }

    fn sweep_phase_logs(&self) -> anyhow::Result<usize> {
        self.sweep_logs()
    }

    fn missing_components(&self, digests: &[String]) -> anyhow::Result<Vec<String>> {
        self.missing(digests)
    }

    fn put_component(&self, digest: &str, bytes: &[u8]) -> anyhow::Result<()> {
        self.put(digest, bytes)
    }

    fn component(&self, digest: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.get(digest)
    }

    fn sweep_components(&self) -> anyhow::Result<usize> {
        self.sweep_unused()
    }
}

/// fsync the directory so the renames are durable. cap-std's handle may be `O_PATH`, which
/// cannot be synced, so open the directory itself for reading, relative to the handle.
fn sync_dir(dir: &Dir) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::fs::fsync(&fd)?;
    Ok(())
}

fn remove_if_present(dir: &Dir, name: &str) -> io::Result<()> {
    match dir.remove_file(name) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
