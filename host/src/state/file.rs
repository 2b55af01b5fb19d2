//! The file backend: release state in one JSON file, committed atomically and durably under an
//! OS lock, with per-environment deploy leases held as OS locks beside it.
//!
//! Every operation goes through one cap-std `Dir` handle on the state directory, opened once, so
//! a path swapped underneath us (a symlink planted in the project) cannot redirect a write. The
//! protocol and its guarantees are specified in spec/state.md.

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
    EnvironmentName, Lease, LeaseHolder, Release, State, StateError, StateStore,
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

/// The state file as this store last saw it: what it parsed to, and its exact bytes. Made by
/// this store's own commits and by its parses of the file (in a read, or a transaction that
/// wrote nothing).
///
/// A read or a commit must read the file fresh, but when the file still holds exactly these
/// bytes, parsing it again would only rebuild `state`; and after our own commit, a release the
/// next transaction does not change (still the same `Arc`, see [`State::releases`]) serializes
/// to the text it already has. Parsing, comparing and serializing grow with the history while a
/// transaction usually changes one release, so skipping them keeps a commit close to the cost of
/// writing the file. Nothing here is trusted without the byte-for-byte comparison with the file,
/// so a file changed by anyone else is parsed as usual.
struct Snapshot {
    state: State,
    text: StateText,
}

/// The bytes of a state file, kept in pieces: `head`, each release's text in order, then
/// `tail`.
///
/// Serialized by this store ([`serialize_state`]), the pieces are byte for byte what
/// `serde_json::to_vec_pretty(state)` writes plus a newline, and `releases[i]` is the text of
/// `state.releases[i]`, ready to be reused. Read from a file ([`StateText::read`]), the whole file
/// is `head` and there is no release text to reuse.
struct StateText {
    /// Everything before the first release, up to and including the `[` of `"releases": [`.
    head: Vec<u8>,
    /// `releases[i]`'s text, indented as it sits in the array and preceded by its separator
    /// `,\n    `. The first release is written without that comma (see [`StateText::pieces`]).
    releases: Vec<Vec<u8>>,
    /// Everything after the last release, from the `]` to the final newline.
    tail: Vec<u8>,
}

impl StateText {
    /// A file's bytes as read, with no release text to reuse.
    fn read(bytes: Vec<u8>) -> Self {
        StateText {
            head: bytes,
            releases: Vec::new(),
            tail: Vec::new(),
        }
    }

    /// The file's bytes, in order.
    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        // The first release has no comma before it.
        let first = self.releases.first().map(|text| &text[1..]);
        let rest = self.releases.iter().skip(1).map(Vec::as_slice);
        std::iter::once(&self.head[..])
            .chain(first)
            .chain(rest)
            .chain(std::iter::once(&self.tail[..]))
    }

    /// The file's length in bytes.
    fn len(&self) -> usize {
        self.pieces().map(<[u8]>::len).sum()
    }
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
        StateError::new(format!(
            "cannot {action} state directory {}: {e}; check that it exists and that you may \
             write to it, or pass --state-file <path>",
            self.dir_path.display()
        ))
        .into()
    }

    fn write_error(&self, what: &str, e: io::Error) -> anyhow::Error {
        StateError::new(format!(
            "cannot write state file {} ({what}): {e}; nothing was committed and the previous \
             version of the file is unchanged. Free disk space or fix the directory's \
             permissions, then try again",
            self.path.display()
        ))
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
            StateError::new(format!(
                "cannot read state file {}: {e}",
                self.path.display()
            ))
        })?;
        Ok(Some(bytes))
    }

    /// Whether the state file exists and holds exactly `expected`: read a chunk at a time and
    /// compared with the pieces as it is read, which costs less than reading a large file whole
    /// and comparing it after (the chunk stays in the CPU cache).
    fn file_holds(&self, dir: &Dir, expected: &StateText) -> anyhow::Result<bool> {
        let read_error = |e: io::Error| {
            StateError::new(format!(
                "cannot read state file {}: {e}",
                self.path.display()
            ))
        };
        let Some(mut file) = open_state_file(dir, &self.name, &self.path)? else {
            return Ok(false);
        };
        if file.metadata().map_err(read_error)?.len() != expected.len() as u64 {
            return Ok(false);
        }
        let mut pieces = expected.pieces();
        // What is left of the piece being compared.
        let mut piece: &[u8] = &[];
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            let n = match file.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e).into()),
            };
            if n == 0 {
                return Ok(piece.is_empty() && pieces.all(<[u8]>::is_empty));
            }
            let mut read = &chunk[..n];
            while !read.is_empty() {
                if piece.is_empty() {
                    match pieces.next() {
                        Some(next) => piece = next,
                        None => return Ok(false),
                    }
                    continue;
                }
                let k = read.len().min(piece.len());
                if read[..k] != piece[..k] {
                    return Ok(false);
                }
                read = &read[k..];
                piece = &piece[k..];
            }
        }
    }

    fn parse(&self, bytes: &[u8]) -> anyhow::Result<State> {
        let bak_exists = self
            .dir
            .get()
            .is_some_and(|dir| dir.exists(self.bak_name()));
        parse_state(bytes, &self.path, &self.bak_path(), bak_exists)
            .map_err(|message| StateError::new(message).into())
    }

    /// Lock, read fresh, apply `f`, and commit if `f` says something changed.
    fn commit_with(
        &self,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<Changed>,
    ) -> anyhow::Result<()> {
        let dir = self.dir_for_write()?;
        let lock = self.commit_lock(dir)?;
        // The lock is released when `lock` is dropped at the end of this function, whatever
        // path we leave by.
        // A failed validation or write below drops the snapshot (the next read or commit
        // parses the file); a failed closure keeps it, as the file is unchanged.
        let snapshot = self.fresh_snapshot(dir)?;
        let exists = snapshot.is_some();
        // Copies pointers: the releases stay shared until the closure changes one.
        let mut state = snapshot
            .as_ref()
            .map(|s| s.state.clone())
            .unwrap_or_default();
        let changed = f(&mut state);
        if !matches!(changed, Ok(true)) {
            // Nothing is written, and the closure could not change the snapshot's releases
            // (it changed copies), so the snapshot still describes the file.
            self.remember(snapshot);
            return changed.map(drop);
        }
        state.validate().map_err(|e| {
            StateError::new(format!(
                "refusing to commit an invalid state to {}: {e}; nothing was written",
                self.path.display()
            ))
        })?;
        state.format_version = Some(FORMAT_VERSION);
        if state.lineage.is_none() {
            state.lineage = Some(uuid::Uuid::new_v4().to_string());
        }
        state.serial = state
            .next_serial()
            .map_err(|e| StateError::new(format!("state file {}: {e}", self.path.display())))?;
        let text = serialize_state(&mut state, snapshot)?;
        self.replace_file(dir, &text, exists)?;
        self.remember(Some(Snapshot { state, text }));
        drop(lock);
        Ok(())
    }

    /// Take the commit lock: an exclusive `flock` on `<name>.lock`, waited for at most the
    /// commit wait, saying after a second who it is waiting for. While held, the lock file names
    /// this process, so a waiter that gives up can say who holds it.
    fn commit_lock(&self, dir: &Dir) -> anyhow::Result<CommitLock> {
        let lock_name = format!("{}.lock", self.name);
        let lock_path = self.dir_path.join(&lock_name);
        let file = open_lock_file(dir, &lock_name, &lock_path, "lock file")?;
        let wait = *self.commit_wait.lock().unwrap_or_else(|p| p.into_inner());
        let holder = || match read_holder(&file) {
            Some(h) => h.to_string(),
            None => "another process (it has not recorded its details yet)".to_string(),
        };
        let locked = lock_within(&file, wait, || {
            // Said while waiting, on stderr, because a silent wait looks like a hang.
            eprintln!(
                "Waiting for the commit lock {} held by {}, for up to {} (--lock-wait)...",
                lock_path.display(),
                holder(),
                humanize(wait)
            );
        })
        .map_err(|e| StateError::new(format!("cannot lock {}: {e}", lock_path.display())))?;
        if !locked {
            return Err(StateError::new(format!(
                "cannot commit to state file {}: the commit lock {} is held by {}, which did \
                 not let go within {}. A commit takes milliseconds, so that process is probably \
                 stopped or hung: end it, or wait longer with --lock-wait <seconds>",
                self.path.display(),
                lock_path.display(),
                holder(),
                humanize(wait)
            ))
            .into());
        }
        let lock = CommitLock { file };
        // Best effort: a holder that cannot record itself is still the holder.
        let _ = lock.record(&LeaseHolder::current());
        Ok(lock)
    }

    /// What the file holds now, or `None` if it does not exist: the last snapshot if the file
    /// still holds exactly its bytes, else the file read and parsed.
    fn fresh_snapshot(&self, dir: &Dir) -> anyhow::Result<Option<Snapshot>> {
        match self.last_snapshot(dir)? {
            Some(snapshot) => Ok(Some(snapshot)),
            None => self.read_snapshot(dir),
        }
    }

    /// The file read and parsed afresh, or `None` if it does not exist.
    fn read_snapshot(&self, dir: &Dir) -> anyhow::Result<Option<Snapshot>> {
        let Some(bytes) = self.read_bytes(dir)? else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            state: self.parse(&bytes)?,
            text: StateText::read(bytes),
        }))
    }

    /// This store's last snapshot if the file still holds exactly its bytes. Taken, not
    /// borrowed: another thread of this process finds none meanwhile and reads the file itself.
    fn last_snapshot(&self, dir: &Dir) -> anyhow::Result<Option<Snapshot>> {
        match self.last_seen.lock().ok().and_then(|mut s| s.take()) {
            Some(snapshot) if self.file_holds(dir, &snapshot.text)? => Ok(Some(snapshot)),
            _ => Ok(None),
        }
    }

    /// Keep `snapshot` (if any) as what the file holds, for the next read or commit.
    fn remember(&self, snapshot: Option<Snapshot>) {
        if let (Some(snapshot), Ok(mut slot)) = (snapshot, self.last_seen.lock()) {
            *slot = Some(snapshot);
        }
    }

    /// Write `text` to a temp file, fsync it, keep the current file as `.bak`, rename the temp
    /// file over the state file and fsync the directory. Until the rename the old file is
    /// untouched, so a failure (or a crash) anywhere leaves either the old or the new version.
    fn replace_file(&self, dir: &Dir, text: &StateText, has_previous: bool) -> anyhow::Result<()> {
        let tmp_name = format!("{}.tmp", self.name);
        // A temp file left by a crashed writer is garbage: we hold the lock, nobody else is
        // writing it. Removing it first also means create_new never follows a planted symlink.
        remove_if_present(dir, &tmp_name)
            .map_err(|e| self.write_error("removing a stale temp file", e))?;
        // The new version keeps the owner and mode of the file it replaces, so a run as root
        // (or under another umask) never takes a user's history away from them.
        let previous = if has_previous {
            owner_and_mode(dir, &self.name)
                .map_err(|e| self.write_error("reading the owner and mode of the file", e))?
        } else {
            None
        };
        let write_tmp = || -> io::Result<()> {
            let mut tmp = dir.open_with(
                &tmp_name,
                OpenOptions::new().write(true).create_new(true).mode(0o600),
            )?;
            match &previous {
                Some(stat) => keep_owner_and_mode(&tmp, stat)?,
                None => adopt_owner(dir, &tmp),
            }
            write_all_pieces(&mut tmp, text.pieces())?;
            tmp.sync_all()
        };
        if let Err(e) = write_tmp() {
            let _ = dir.remove_file(&tmp_name);
            return Err(self.write_error("writing the new version", e));
        }
        if has_previous {
            if let Err(e) = self.keep_backup(dir) {
                let _ = dir.remove_file(&tmp_name);
                return Err(self.write_error("keeping the previous version as .bak", e));
            }
        }
        if let Err(e) = dir.rename(&tmp_name, dir, &self.name) {
            let _ = dir.remove_file(&tmp_name);
            return Err(self.write_error("renaming the new version into place", e));
        }
        sync_dir(dir).map_err(|e| self.write_error("syncing the directory", e))?;
        Ok(())
    }

    /// Make `<name>.bak` the current state file. A hard link costs nothing and shares the
    /// already-durable inode; where links are not supported, copy and fsync instead. The new
    /// `.bak` appears by rename, so a crash never leaves a half-written backup.
    fn keep_backup(&self, dir: &Dir) -> io::Result<()> {
        let bak = self.bak_name();
        let bak_tmp = format!("{bak}.tmp");
        remove_if_present(dir, &bak_tmp)?;
        if dir.hard_link(&self.name, dir, &bak_tmp).is_err() {
            let previous = dir.read(&self.name)?;
            let mut file = dir.open_with(
                &bak_tmp,
                OpenOptions::new().write(true).create_new(true).mode(0o600),
            )?;
            if let Some(stat) = owner_and_mode(dir, &self.name)? {
                keep_owner_and_mode(&file, &stat)?;
            }
            file.write_all(&previous)?;
            file.sync_all()?;
        }
        dir.rename(&bak_tmp, dir, &bak)
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

    fn transact_dyn(
        &self,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.commit_with(&mut |state| f(state).map(|()| true))
    }

    fn transact_if_changed_dyn(
        &self,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        self.commit_with(f)
    }

    fn lease(&self, env: &str, wait: Duration) -> anyhow::Result<Lease> {
        check_environment_name(env)?;
        let dir = self.dir_for_write()?;
        let leases_dir = self.dir_path.join("leases");
        use cap_std::fs::DirBuilderExt;
        let mut builder = cap_std::fs::DirBuilder::new();
        builder.mode(0o700);
        match dir.create_dir_with("leases", &builder) {
            Ok(()) => {
                if let Ok(fd) = rustix::fs::openat(
                    dir,
                    "leases",
                    rustix::fs::OFlags::RDONLY
                        | rustix::fs::OFlags::DIRECTORY
                        | rustix::fs::OFlags::NOFOLLOW
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                ) {
                    adopt_owner(dir, &fd);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(StateError::new(format!(
                    "cannot create lease directory {}: {e}",
                    leases_dir.display()
                ))
                .into())
            }
        }
        let lock_path = leases_dir.join(format!("{env}.lock"));
        let leases = dir.open_dir("leases").map_err(|e| {
            StateError::new(format!(
                "cannot open lease directory {}: {e}",
                leases_dir.display()
            ))
        })?;
        let file = open_lock_file(&leases, &format!("{env}.lock"), &lock_path, "lease file")?;

        let deadline = Instant::now() + wait;
        let mut backoff = Duration::from_millis(1);
        loop {
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(super::busy_error(env, read_holder(&file)));
                    }
                    // Polling with backoff keeps the wait bounded without a helper thread; the
                    // holder is usually a deploy that lasts seconds to minutes.
                    std::thread::sleep(backoff.min(deadline - now));
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(StateError::new(format!(
                        "cannot lock lease file {}: {e}",
                        lock_path.display()
                    ))
                    .into())
                }
            }
        }
        // What the previous holder left, if it could not record a phase's end in the state.
        let notes = read_holder(&file).map(|h| h.unrecorded).unwrap_or_default();
        let guard = FileLeaseGuard {
            file,
            holder: Mutex::new(LeaseHolder::current()),
            noted: std::sync::atomic::AtomicBool::new(false),
        };
        guard.record().map_err(|e| {
            StateError::new(format!(
                "cannot record the lease holder in {}: {e}",
                lock_path.display()
            ))
        })?;
        // We hold the lease, so no live process can be running a release of `env`: anything
        // left unfinished belongs to a process that is gone.
        let note = |id: &super::ReleaseId, phase: &str| {
            notes
                .iter()
                .find(|n| n.release_id == id.as_str() && n.phase == phase)
                .map(super::UnrecordedEnd::recovery_message)
        };
        self.commit_with(&mut |state| Ok(!state.recover_interrupted_with(env, &note).is_empty()))?;
        Ok(Lease::new(env, Box::new(guard)))
    }
}

/// Holds an environment's lease: an exclusive flock on its lease file, released when this is
/// dropped (or by the kernel when the process dies).
struct FileLeaseGuard {
    file: std::fs::File,
    holder: Mutex<LeaseHolder>,
    /// Whether the record carries notes for the next holder, which dropping must keep.
    noted: std::sync::atomic::AtomicBool,
}

impl FileLeaseGuard {
    /// Write the holder record over the file. Written in place and cut to length after, never
    /// emptied first: on a full disk, rewriting the block the file already has still works,
    /// which is when a note matters most.
    fn record(&self) -> io::Result<()> {
        let holder = self.holder.lock().unwrap_or_else(|p| p.into_inner());
        let json = serde_json::to_vec(&*holder).map_err(io::Error::other)?;
        self.file.write_all_at(&json, 0)?;
        self.file.set_len(json.len() as u64)
    }
}

impl super::LeaseGuard for FileLeaseGuard {
    fn leave_note(&self, end: &super::UnrecordedEnd) -> anyhow::Result<()> {
        self.holder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unrecorded
            .push(end.clone());
        self.record()?;
        self.noted.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for FileLeaseGuard {
    fn drop(&mut self) {
        // Clear the holder while still locked, so the file never names a process that is gone;
        // unless it carries notes, which only the next holder reads (and then overwrites).
        if !self.noted.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self.file.set_len(0);
        }
    }
}

fn read_holder(file: &std::fs::File) -> Option<LeaseHolder> {
    let mut buf = Vec::new();
    let mut offset = 0u64;
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read_at(&mut chunk, offset).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        offset += n as u64;
    }
    serde_json::from_slice(&buf).ok()
}

/// Holds the commit lock: an exclusive flock on `<name>.lock`, which names the holder while
/// held and is emptied before it is let go (the kernel lets go of it if the process dies).
struct CommitLock {
    file: std::fs::File,
}

impl CommitLock {
    fn record(&self, holder: &LeaseHolder) -> io::Result<()> {
        let json = serde_json::to_vec(holder).map_err(io::Error::other)?;
        self.file.write_all_at(&json, 0)?;
        self.file.set_len(json.len() as u64)
    }
}

impl Drop for CommitLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

/// `10s`, `1.5s`: a wait as `--lock-wait` takes it.
fn humanize(wait: Duration) -> String {
    format!("{}s", wait.as_secs_f64())
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

/// Write every piece in order, handing many to each `writev` call, so a long history goes to
/// the file straight from the pieces it is kept in instead of being copied into one buffer.
fn write_all_pieces<'a>(
    out: &mut impl Write,
    pieces: impl Iterator<Item = &'a [u8]>,
) -> io::Result<()> {
    // Linux's IOV_MAX: more buffers than this in one call is an error.
    const MAX_BUFFERS: usize = 1024;
    let mut buffers: Vec<IoSlice<'_>> = pieces
        .filter(|piece| !piece.is_empty())
        .map(IoSlice::new)
        .collect();
    let mut rest = &mut buffers[..];
    while !rest.is_empty() {
        let batch = rest.len().min(MAX_BUFFERS);
        match out.write_vectored(&rest[..batch]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The state as pretty-printed JSON plus a newline, byte for byte what
/// `serde_json::to_vec_pretty(state)` writes, in pieces. A release that is still the very `Arc`
/// at the same position in `previous` (the transaction did not change it, see
/// [`State::releases`]) takes its text from there instead of being serialized again.
fn serialize_state(state: &mut State, previous: Option<Snapshot>) -> anyhow::Result<StateText> {
    // Everything but the releases, with an empty array to fill in.
    let releases = std::mem::take(&mut state.releases);
    let frame = serde_json::to_vec_pretty(&*state);
    state.releases = releases;
    let frame = frame.context("serializing the state")?;
    // Top-level keys are indented by exactly two spaces and JSON strings never hold a raw
    // newline, so this is the top-level `releases` key and nothing else.
    const EMPTY: &[u8] = b"\n  \"releases\": []";
    let Some(at) = frame.windows(EMPTY.len()).position(|w| w == EMPTY) else {
        anyhow::bail!("serializing the state: no releases array in the document");
    };
    let close = at + EMPTY.len() - 1; // the `]` of `[]`
    let (before, mut before_text) = match previous {
        Some(previous) => (previous.state.releases, previous.text.releases),
        None => (Vec::new(), Vec::new()),
    };
    let mut texts = Vec::with_capacity(state.releases.len());
    for (i, release) in state.releases.iter().enumerate() {
        let unchanged = before.get(i).is_some_and(|b| Arc::ptr_eq(b, release));
        match before_text.get_mut(i).filter(|_| unchanged) {
            Some(text) => texts.push(std::mem::take(text)),
            None => texts.push(release_text(release)?),
        }
    }
    let mut tail = Vec::with_capacity(frame.len() - close + 4);
    if !texts.is_empty() {
        tail.extend_from_slice(b"\n  ");
    }
    tail.extend_from_slice(&frame[close..]);
    tail.push(b'\n');
    Ok(StateText {
        head: frame[..close].to_vec(),
        releases: texts,
        tail,
    })
}

/// One release's text as it sits in the `releases` array, preceded by its separator: one level
/// deeper than a document of its own, so two more spaces of indent on every line.
fn release_text(release: &Release) -> anyhow::Result<Vec<u8>> {
    let own = serde_json::to_vec_pretty(release).context("serializing a release")?;
    let lines = own.iter().filter(|b| **b == b'\n').count();
    let mut text = Vec::with_capacity(own.len() + 6 + 4 * lines);
    text.extend_from_slice(b",\n    ");
    for (n, line) in own.split(|b| *b == b'\n').enumerate() {
        if n > 0 {
            text.extend_from_slice(b"\n    ");
        }
        text.extend_from_slice(line);
    }
    Ok(text)
}

/// Environment names become file names under `leases/`, so only the manifest's shape
/// `[a-z][a-z0-9_-]*` (at most 64 characters) is accepted.
pub fn check_environment_name(env: &str) -> anyhow::Result<()> {
    EnvironmentName::parse(env)
        .map(drop)
        .map_err(|e| input_error(e.to_string()))
}

/// Parse a state file's bytes, or say for people what is wrong with it, where, and how to
/// recover (`path` and `bak` name the file and its backup in the message).
pub fn parse_state(
    bytes: &[u8],
    path: &Path,
    bak: &Path,
    bak_exists: bool,
) -> Result<State, String> {
    let recover = if bak_exists {
        format!(
            "the previous version is in {bak}; inspect it and copy it over {file} if it is good",
            bak = bak.display(),
            file = path.display()
        )
    } else {
        format!(
            "there is no previous version ({} does not exist); repair the file by hand, or move \
             it away to start an empty history",
            bak.display()
        )
    };
    let file = path.display();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(format!(
            "state file {file} is empty (a complete file always holds at least {{\"releases\": \
             []}}); {recover}"
        ));
    }
    // The model refuses duplicate keys as it parses (see unique_keys.rs).
    let state: State = match serde_json::from_slice(bytes) {
        Ok(state) => state,
        Err(e) => {
            // A newer format may fail to parse as ours; name the version rather than the symptom.
            if let Some(v) = newer_format_version(bytes) {
                return Err(newer_version_message(path, v));
            }
            let what = match e.classify() {
                serde_json::error::Category::Eof => "is truncated",
                serde_json::error::Category::Syntax => "is not valid JSON",
                serde_json::error::Category::Data => "does not match the state format",
                serde_json::error::Category::Io => "cannot be read",
            };
            let message = e.to_string();
            let detail = strip_position(&message);
            return Err(format!(
                "state file {file} {what}: {detail} at line {}, column {}; {recover}",
                e.line(),
                e.column()
            ));
        }
    };
    if let Some(v) = state.format_version {
        if v > FORMAT_VERSION {
            return Err(newer_version_message(path, u64::from(v)));
        }
    }
    if let Err(e) = state.validate() {
        return Err(format!(
            "state file {file} does not match the state format: {e}; {recover}"
        ));
    }
    Ok(state)
}

fn newer_version_message(path: &Path, version: u64) -> String {
    format!(
        "state file {} has format_version {version}, but this stagecraft reads at most \
         {FORMAT_VERSION}; upgrade stagecraft",
        path.display()
    )
}

/// The file's `format_version` when it is newer than ours (only looked at when parsing failed).
fn newer_format_version(bytes: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Probe {
        format_version: Option<u64>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    probe.format_version.filter(|v| *v > FORMAT_VERSION as u64)
}

/// serde_json appends " at line L column C" to its messages; we state the position ourselves.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{PhaseStatus, ReleaseId, Timestamp};

    fn err(json: &str) -> String {
        parse_state(
            json.as_bytes(),
            Path::new("/p/r.json"),
            Path::new("/p/r.json.bak"),
            true,
        )
        .unwrap_err()
    }

    const DOC: &str = r#"{
  "releases": [
    {
      "id": "rel-20261125-060000",
      "environment": "prod",
      "version": "v1",
      "timestamp": "2026-11-25T06:00:00Z",
      "phases": {"build": "completed"}
    }
  ]
}
"#;

    #[test]
    fn a_good_document_parses() {
        let state = parse_state(
            DOC.as_bytes(),
            Path::new("r.json"),
            Path::new("r.json.bak"),
            true,
        )
        .unwrap();
        assert_eq!(state.releases.len(), 1);
    }

    #[test]
    fn schema_violations_name_the_line_column_and_backup() {
        let e = err(&DOC.replace("\"completed\"", "\"exploded\""));
        assert!(
            e.starts_with(
                "state file /p/r.json does not match the state format: unknown variant `exploded`"
            ),
            "{e}"
        );
        assert!(e.contains("at line 8, column "), "{e}");
        assert!(e.ends_with("the previous version is in /p/r.json.bak; inspect it and copy it over /p/r.json if it is good"), "{e}");
        let e = err(&DOC.replace("rel-20261125-060000", "rel-x"));
        assert!(
            e.contains("invalid release id \"rel-x\"") && e.contains("at line 4, column "),
            "{e}"
        );
        let e = err(&DOC.replace("2026-11-25T06:00:00Z", "yesterday"));
        assert!(
            e.contains("invalid timestamp \"yesterday\"") && e.contains("at line 7, column "),
            "{e}"
        );
    }

    #[test]
    fn broken_json_is_told_apart_from_truncated_and_empty() {
        assert!(err(&DOC[..40]).contains("is truncated:"));
        assert!(err("hello").contains("is not valid JSON: expected value at line 1, column 1;"));
        assert!(err(" \n").starts_with("state file /p/r.json is empty"));
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let doc = DOC.replace("    }\n  ]", "    },\n    {\"id\": \"rel-20261125-060000\", \"environment\": \"prod\", \"version\": \"v2\", \"timestamp\": \"2026-11-25T06:00:00Z\"}\n  ]");
        let e = err(&doc);
        assert!(
            e.contains("duplicate release id \"rel-20261125-060000\" (releases[1])"),
            "{e}"
        );
    }

    #[test]
    fn a_newer_format_is_refused_naming_both_versions() {
        let e = err(&DOC.replacen("{", "{\"format_version\": 3,", 1));
        assert_eq!(e, "state file /p/r.json has format_version 3, but this stagecraft reads at most 2; upgrade stagecraft");
        // Even when the newer format no longer parses as ours.
        let e = err("{\"format_version\": 9, \"releases\": {\"moved\": true}}");
        assert!(
            e.contains("has format_version 9, but this stagecraft reads at most 2"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_backup_is_said() {
        let e = parse_state(
            b"nope",
            Path::new("/p/r.json"),
            Path::new("/p/r.json.bak"),
            false,
        )
        .unwrap_err();
        assert!(
            e.contains("there is no previous version (/p/r.json.bak does not exist)"),
            "{e}"
        );
    }

    /// What the commit path must write: exactly serde_json's pretty form plus a newline.
    fn plain(state: &State) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(state).unwrap();
        bytes.push(b'\n');
        bytes
    }

    fn concat(text: &StateText) -> Vec<u8> {
        text.pieces().flatten().copied().collect()
    }

    fn snapshot_of(mut state: State) -> Snapshot {
        let text = serialize_state(&mut state, None).unwrap();
        Snapshot { state, text }
    }

    fn sample() -> State {
        let doc = r#"{
  "format_version": 2, "serial": 4, "custom_top": {"kept": [1, 2.5, null]},
  "releases": [
    {"id": "rel-20261125-060000", "environment": "prod", "version": "v1",
     "timestamp": "2026-11-25T07:00:00+01:00", "phases": {"build": "completed"},
     "go_only_field": {"nested": {"deep": []}}, "empty": {}},
    {"id": "rel-20261125-060000001", "environment": "staging", "version": "v2",
     "commit_sha": "abc", "timestamp": "2026-11-25T06:00:00.001Z",
     "phase_details": {"build": {"summary": "line \"quoted\"\nsecond", "outputs": {"a": "b"}}}},
    {"id": "rel-20261125-060000002", "environment": "prod", "version": "v3",
     "timestamp": "2026-11-25T06:00:00.002Z"}
  ],
  "trailing_unknown": "x"
}"#;
        parse_state(doc.as_bytes(), Path::new("r"), Path::new("r.bak"), false).unwrap()
    }

    #[test]
    fn serialized_state_is_exactly_serde_jsons_pretty_form() {
        for state in [State::default(), sample()] {
            let mut copy = state.clone();
            let text = serialize_state(&mut copy, None).unwrap();
            assert_eq!(
                String::from_utf8(concat(&text)).unwrap(),
                String::from_utf8(plain(&state)).unwrap()
            );
            assert_eq!(text.len(), plain(&state).len());
            assert_eq!(copy, state);
            assert_eq!(text.releases.len(), state.releases.len());
            for (piece, release) in text.releases.iter().zip(&state.releases) {
                let parsed: Release = serde_json::from_slice(&piece[1..]).unwrap();
                assert_eq!(&parsed, &**release);
            }
        }
    }

    #[test]
    fn reused_release_text_matches_a_full_serialization_after_any_change() {
        type Change = fn(&mut State);
        let changes: [(&str, Change); 8] = [
            ("nothing", |_| {}),
            ("one phase", |s| {
                Arc::make_mut(&mut s.releases[1])
                    .phases
                    .insert("push".into(), PhaseStatus::Running);
            }),
            ("a release added", |s| {
                let mut r = (*s.releases[2]).clone();
                r.id = ReleaseId::parse("rel-20261125-060000003").unwrap();
                s.releases.push(Arc::new(r));
            }),
            ("a release removed", |s| {
                s.releases.remove(0);
            }),
            ("releases reordered", |s| s.releases.swap(0, 2)),
            ("a release replaced by an equal copy", |s| {
                s.releases[1] = Arc::new((*s.releases[1]).clone());
            }),
            ("the same instant written another way", |s| {
                Arc::make_mut(&mut s.releases[0]).timestamp =
                    Timestamp::parse("2026-11-25T06:00:00Z").unwrap();
            }),
            ("top-level fields", |s| {
                s.serial += 1;
                s.extra
                    .insert("added".into(), serde_json::json!({"k": [true]}));
            }),
        ];
        for (what, change) in changes {
            let previous = snapshot_of(sample());
            let mut state = previous.state.clone();
            change(&mut state);
            let text = serialize_state(&mut state, Some(previous)).unwrap();
            assert_eq!(
                String::from_utf8(concat(&text)).unwrap(),
                String::from_utf8(plain(&state)).unwrap(),
                "after {what}"
            );
        }
    }

    #[test]
    fn only_changed_releases_are_serialized_again() {
        let mut previous = snapshot_of(sample());
        // Mark every release's stored text, so reused text can be told from fresh text.
        for text in &mut previous.text.releases {
            let at = text.windows(9).position(|w| w == b"\"version\"").unwrap();
            text[at + 1] = b'V';
        }
        let mut state = previous.state.clone();
        state
            .get_mut("rel-20261125-060000001")
            .unwrap()
            .phases
            .insert("push".into(), PhaseStatus::Running);
        let text = String::from_utf8(concat(
            &serialize_state(&mut state, Some(previous)).unwrap(),
        ))
        .unwrap();
        assert_eq!(text.matches("\"Version\"").count(), 2, "{text}");
        assert_eq!(text.matches("\"version\"").count(), 1, "{text}");
    }

    #[test]
    fn a_file_is_only_taken_for_the_last_commit_when_every_byte_matches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("releases.json");
        let store = FileStore::open(path.clone()).unwrap();
        let cap_dir = Dir::open_ambient_dir(dir.path(), ambient_authority()).unwrap();
        let snapshot = snapshot_of(sample());
        let exact = concat(&snapshot.text);
        assert!(
            !store.file_holds(&cap_dir, &snapshot.text).unwrap(),
            "no file"
        );
        std::fs::write(&path, &exact).unwrap();
        assert!(store.file_holds(&cap_dir, &snapshot.text).unwrap());
        // One byte changed inside a release's text, in the head, and in the tail.
        let inside = snapshot.text.head.len() + snapshot.text.releases[0].len() + 20;
        for at in [inside, 3, exact.len() - 3] {
            let mut changed = exact.clone();
            changed[at] ^= 0x20;
            std::fs::write(&path, &changed).unwrap();
            assert!(
                !store.file_holds(&cap_dir, &snapshot.text).unwrap(),
                "byte {at}"
            );
        }
        for wrong_length in [&exact[..exact.len() - 1], &[&exact[..], b" "].concat()[..]] {
            std::fs::write(&path, wrong_length).unwrap();
            assert!(!store.file_holds(&cap_dir, &snapshot.text).unwrap());
        }
    }

    #[test]
    fn a_history_longer_than_one_read_chunk_is_compared_and_written_whole() {
        // Over 1 MiB and over 1,024 pieces: several reads, and several writev calls.
        let template = (*sample().releases[1]).clone();
        let mut state = sample();
        state.releases.clear();
        for i in 0..3_000u32 {
            let mut r = template.clone();
            r.id =
                ReleaseId::parse(&format!("rel-20261125-{:06}{:03}", i / 1000, i % 1000)).unwrap();
            r.version = format!("v{i}-{}", "x".repeat(400));
            state.releases.push(Arc::new(r));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("releases.json");
        let cap_dir = Dir::open_ambient_dir(dir.path(), ambient_authority()).unwrap();
        let store = FileStore::open(path.clone()).unwrap();
        let snapshot = snapshot_of(state.clone());
        assert!(snapshot.text.len() > 1 << 20);
        let mut file = std::fs::File::create(&path).unwrap();
        write_all_pieces(&mut file, snapshot.text.pieces()).unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), plain(&state));
        assert!(store.file_holds(&cap_dir, &snapshot.text).unwrap());
        let mut bytes = plain(&state);
        let last = bytes.len() - 10;
        bytes[last] = b'#';
        std::fs::write(&path, &bytes).unwrap();
        assert!(!store.file_holds(&cap_dir, &snapshot.text).unwrap());
    }

    #[test]
    fn consecutive_commits_of_one_store_write_what_a_fresh_serialization_would() {
        use crate::state::StateStoreExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("releases.json");
        std::fs::write(&path, plain(&sample())).unwrap();
        let store = FileStore::open(path.clone()).unwrap();
        // Applied in turn to the store and to a model of what the file must hold.
        let steps: [fn(&mut State); 8] = [
            |s| {
                Arc::make_mut(&mut s.releases[1])
                    .phases
                    .insert("push".into(), PhaseStatus::Running);
            },
            |s| {
                Arc::make_mut(&mut s.releases[1])
                    .phases
                    .insert("push".into(), PhaseStatus::Completed);
            },
            |s| {
                let mut r = (*s.releases[2]).clone();
                r.id = ReleaseId::parse("rel-20261125-060000009").unwrap();
                s.releases.push(Arc::new(r));
            },
            |s| {
                s.releases.remove(0);
            },
            |s| s.releases.swap(0, 1),
            |s| {
                Arc::make_mut(&mut s.releases[2]).timestamp =
                    Timestamp::parse("2026-11-25T08:00:00.002+02:00").unwrap();
            },
            |s| {
                s.extra.insert("note".into(), "kept".into());
            },
            |s| {
                Arc::make_mut(&mut s.releases[0]).version = "v9".into();
            },
        ];
        let mut model = sample();
        for (i, step) in steps.iter().enumerate() {
            store
                .transact(|state| {
                    step(state);
                    Ok(())
                })
                .unwrap();
            step(&mut model);
            model.format_version = Some(FORMAT_VERSION);
            model.serial += 1;
            let on_disk = std::fs::read(&path).unwrap();
            let parsed = parse_state(&on_disk, &path, &path, false).unwrap();
            model.lineage.clone_from(&parsed.lineage);
            assert_eq!(
                String::from_utf8(on_disk).unwrap(),
                String::from_utf8(plain(&model)).unwrap(),
                "after step {i}"
            );
            // A transaction that changes nothing through the lease's path keeps the snapshot.
            store.commit_with(&mut |_| Ok(false)).unwrap();
            // So does one that changes every release and then fails: nothing of it may reach
            // the file, now or through the next commit's reused text.
            let failed = store.transact_dyn(&mut |s| {
                for release in &mut s.releases {
                    Arc::make_mut(release).version = "never committed".into();
                }
                anyhow::bail!("the closure failed")
            });
            assert_eq!(failed.unwrap_err().to_string(), "the closure failed");
            assert!(store.last_seen.lock().unwrap().is_some(), "step {i}");
        }
        assert_eq!(store.read().unwrap(), model);
        assert!(!String::from_utf8(std::fs::read(&path).unwrap())
            .unwrap()
            .contains("never committed"));
    }

    #[test]
    fn a_parsed_file_is_reused_until_it_changes_and_its_own_text_never_is() {
        use crate::state::StateStoreExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("releases.json");
        // Valid, but not how we write it: compact, on one line.
        let compact = serde_json::to_vec(&sample()).unwrap();
        std::fs::write(&path, &compact).unwrap();
        let store = FileStore::open(path.clone()).unwrap();

        // A read keeps what it parsed, and so does a transaction that writes nothing.
        assert_eq!(store.read().unwrap(), sample());
        assert!(store.last_seen.lock().unwrap().is_some());
        store.commit_with(&mut |_| Ok(false)).unwrap();
        assert!(store.last_seen.lock().unwrap().is_some());
        assert_eq!(std::fs::read(&path).unwrap(), compact, "nothing written");

        // Edited behind the store's back, to the same length: both a read and a commit see it.
        let edited = String::from_utf8(compact)
            .unwrap()
            .replace("\"v2\"", "\"v7\"");
        std::fs::write(&path, &edited).unwrap();
        let read = store.read().unwrap();
        assert_eq!(read.releases[1].version, "v7");
        std::fs::write(&path, edited.replace("\"v7\"", "\"v8\"")).unwrap();
        store
            .transact(|s| {
                Arc::make_mut(&mut s.releases[0]).version = "v0".into();
                Ok(())
            })
            .unwrap();
        // Written as a fresh serialization would be: every release in our own form, the edit
        // kept, none of the compact text carried over.
        let mut model = sample();
        Arc::make_mut(&mut model.releases[0]).version = "v0".into();
        Arc::make_mut(&mut model.releases[1]).version = "v8".into();
        let on_disk = std::fs::read(&path).unwrap();
        let parsed = parse_state(&on_disk, &path, &path, false).unwrap();
        model.format_version = Some(FORMAT_VERSION);
        model.serial += 1;
        model.lineage.clone_from(&parsed.lineage);
        assert_eq!(
            String::from_utf8(on_disk).unwrap(),
            String::from_utf8(plain(&model)).unwrap()
        );
    }

    #[test]
    fn environment_names_are_checked_before_becoming_file_names() {
        for good in ["prod", "staging-2", "eu_west"] {
            assert!(check_environment_name(good).is_ok(), "{good}");
        }
        for bad in ["", "../x", "Prod", "2prod", "a/b", ".lock", &"a".repeat(65)] {
            assert!(check_environment_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn explicit_paths_resolve_against_the_working_directory() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            resolve_state_path(Some(Path::new("x/s.json")), Path::new("/proj")),
            cwd.join("x/s.json")
        );
        assert_eq!(
            resolve_state_path(Some(Path::new("/abs/s.json")), Path::new("/proj")),
            PathBuf::from("/abs/s.json")
        );
    }
}
