//! Phase logs beside the state file: `<stem>.logs/<release-id>/<phase>.json` for the state file
//! `<stem>.json` (`<name>.logs` for a name without `.json`). Each log is written to a temporary
//! file, synced and renamed into place; every directory and file is opened relative to the state
//! directory's handle and never through a symlink, like the state file itself.

use std::collections::HashSet;

use rustix::fs::{Mode, OFlags};

use super::*;
use crate::state::{storable_phase_name, PhaseLog, ReleaseId, MAX_STORED_LOG_BYTES};

impl FileStore {
    /// The logs directory's name inside the state directory.
    fn logs_dir_name(&self) -> String {
        let stem = self.name.strip_suffix(".json").unwrap_or(&self.name);
        format!("{stem}.logs")
    }

    fn logs_dir_path(&self) -> PathBuf {
        self.dir_path.join(self.logs_dir_name())
    }

    fn log_error(&self, what: String, e: io::Error) -> anyhow::Error {
        StateError::caused_by(format!("{what}: {e}"), e).into()
    }

    /// [`StateStore::write_phase_log`] for the file backend.
    pub(super) fn write_log(&self, release: &ReleaseId, log: &PhaseLog) -> anyhow::Result<()> {
        log.check_storable()?;
        let dir = self.dir_for_write()?;
        let logs_path = self.logs_dir_path();
        let logs = subdir(dir, &self.logs_dir_name(), true)
            .map_err(|e| self.log_error(format!("cannot open {}", logs_path.display()), e))?
            .expect("created");
        let release_path = logs_path.join(release.as_str());
        let release_dir = subdir(&logs, release.as_str(), true)
            .map_err(|e| self.log_error(format!("cannot open {}", release_path.display()), e))?
            .expect("created");
        let name = format!("{}.json", log.phase);
        let tmp = format!(".{name}.tmp");
        let write = || -> io::Result<()> {
            // Left by a writer that crashed: nobody else writes this release's logs (its
            // deploy holds the environment's lease). Removing it first also means create_new
            // never meets a planted symlink.
            remove_if_present(&release_dir, &tmp)?;
            let mut file = release_dir.open_with(
                &tmp,
                OpenOptions::new().write(true).create_new(true).mode(0o600),
            )?;
            adopt_owner(&release_dir, &file);
            file.write_all(&log.to_json())?;
            file.sync_all()?;
            release_dir.rename(&tmp, &release_dir, &name)?;
            sync_dir(&release_dir)
        };
        write().map_err(|e| {
            let _ = release_dir.remove_file(&tmp);
            self.log_error(
                format!("cannot write {}", release_path.join(&name).display()),
                e,
            )
        })
    }

    /// [`StateStore::phase_logs`] for the file backend.
    pub(super) fn read_logs(&self, release: &ReleaseId) -> anyhow::Result<Vec<PhaseLog>> {
        let Some(dir) = self.existing_dir()? else {
            return Ok(Vec::new());
        };
        let logs_path = self.logs_dir_path();
        let open_error =
            |path: &Path, e| self.log_error(format!("cannot open {}", path.display()), e);
        let Some(logs) =
            subdir(dir, &self.logs_dir_name(), false).map_err(|e| open_error(&logs_path, e))?
        else {
            return Ok(Vec::new());
        };
        let release_path = logs_path.join(release.as_str());
        let Some(release_dir) =
            subdir(&logs, release.as_str(), false).map_err(|e| open_error(&release_path, e))?
        else {
            return Ok(Vec::new());
        };
        let entries = release_dir
            .entries()
            .map_err(|e| open_error(&release_path, e))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| open_error(&release_path, e))?;
            let Some(phase) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|p| storable_phase_name(p))
                .map(str::to_string)
            else {
                continue; // A temporary file, or nothing of ours.
            };
            let path = release_path.join(format!("{phase}.json"));
            let Some(file) = open_log(&release_dir, &format!("{phase}.json"))
                .map_err(|e| open_error(&path, e))?
            else {
                continue; // Removed meanwhile by a sweep.
            };
            let mut bytes = Vec::new();
            file.take(MAX_STORED_LOG_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| self.log_error(format!("cannot read {}", path.display()), e))?;
            let parsed = if bytes.len() as u64 > MAX_STORED_LOG_BYTES {
                Err(format!(
                    "larger than {}",
                    crate::plugin::format_bytes(MAX_STORED_LOG_BYTES)
                ))
            } else {
                PhaseLog::from_json(&bytes)
            };
            match parsed {
                Ok(log) if log.phase == phase => found.push(log),
                Ok(log) => {
                    return Err(StateError::new(format!(
                        "phase log {} names phase {:?}; remove the file (it is not one \
                         stagecraft wrote)",
                        path.display(),
                        log.phase
                    ))
                    .into())
                }
                Err(why) => {
                    return Err(StateError::new(format!(
                        "phase log {} is damaged ({why}); remove it to read the other logs",
                        path.display()
                    ))
                    .into())
                }
            }
        }
        Ok(found)
    }

    /// [`StateStore::sweep_phase_logs`] for the file backend: every `<release-id>` directory
    /// whose release the state does not hold, among the ids it has issued.
    pub(super) fn sweep_logs(&self) -> anyhow::Result<usize> {
        let Some(dir) = self.existing_dir()? else {
            return Ok(0);
        };
        let logs_path = self.logs_dir_path();
        let Some(logs) = subdir(dir, &self.logs_dir_name(), false)
            .map_err(|e| self.log_error(format!("cannot open {}", logs_path.display()), e))?
        else {
            return Ok(0);
        };
        // Read after the directory is opened and before it is listed: a release that is not in
        // this state yet has an id above every one it has issued.
        let state = self.read()?;
        let Some(issued) = state.highest_release_id() else {
            return Ok(0);
        };
        let held: HashSet<&str> = state.releases.iter().map(|r| r.id.as_str()).collect();
        let mut swept = 0;
        let entries = logs
            .entries()
            .map_err(|e| self.log_error(format!("cannot list {}", logs_path.display()), e))?;
        for entry in entries {
            let entry = entry
                .map_err(|e| self.log_error(format!("cannot list {}", logs_path.display()), e))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| ReleaseId::parse(n).ok())
            else {
                continue; // Not a release's logs: not ours to remove.
            };
            if id > issued || held.contains(id.as_str()) {
                continue;
            }
            let path = logs_path.join(id.as_str());
            let gone = match entry.file_type() {
                Ok(t) if t.is_dir() => logs.remove_dir_all(id.as_str()),
                // A symlink or a file in its place: removed, never followed.
                _ => logs.remove_file(id.as_str()),
            };
            match gone {
                Ok(()) => swept += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(self.log_error(format!("cannot remove {}", path.display()), e))
                }
            }
        }
        Ok(swept)
    }
}

/// The directory `name` in `dir`, opened without following a symlink; created (mode 0700, owned
/// like `dir`) when `create` says so and it is missing, else `None` when missing.
pub(super) fn subdir(dir: &Dir, name: &str, create: bool) -> io::Result<Option<Dir>> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) if create => {
            match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            let fd = rustix::fs::openat(dir, name, flags, Mode::empty())?;
            adopt_owner(dir, &fd);
            fd
        }
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::NOTDIR) => {
            return Err(io::Error::other(
                "it is a symbolic link or not a directory; stagecraft does not follow it. \
                 Remove it (a deploy creates the directory again)",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Some(Dir::from_std_file(std::fs::File::from(fd))))
}

/// A log file in `dir`, opened for reading without following a symlink or blocking on a FIFO,
/// and refused unless it is a regular file; `None` when missing.
pub(super) fn open_log(dir: &Dir, name: &str) -> io::Result<Option<std::fs::File>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => {
            return Err(io::Error::other(
                "it is a symbolic link, which stagecraft does not follow; remove it",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let stat = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(io::Error::other("it is not a regular file; remove it"));
    }
    Ok(Some(fd.into()))
}
