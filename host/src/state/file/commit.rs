//! The file backend's commit protocol: under the commit lock, a fresh snapshot (reusing the
//! last one when the file still holds exactly its text), the closure, then the new text written
//! to a temporary file, synced and renamed over the old one, the old one kept as `.bak`.

use super::lease::read_holder;
use super::text::{serialize_state, write_all_pieces};
use super::*;
use crate::state::Unsealable;

impl FileStore {
    /// Whether the state file exists and holds exactly `expected`: read a chunk at a time and
    /// compared with the pieces as it is read, which costs less than reading a large file whole
    /// and comparing it after (the chunk stays in the CPU cache).
    pub(super) fn file_holds(&self, dir: &Dir, expected: &StateText) -> anyhow::Result<bool> {
        let read_error = |e: io::Error| {
            StateError::caused_by(
                format!("cannot read state file {}: {e}", self.path.display()),
                e,
            )
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

    /// Lock, read fresh, apply `f`, and commit if `f` says something changed.
    pub(super) fn commit_with(
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
        state.seal_for_commit().map_err(|e| match e {
            Unsealable::Invalid(e) => StateError::new(format!(
                "refusing to commit an invalid state to {}: {e}; nothing was written",
                self.path.display()
            )),
            Unsealable::SerialFull(e) => {
                StateError::new(format!("state file {}: {e}", self.path.display()))
            }
        })?;
        let text = serialize_state(&mut state, snapshot)?;
        self.replace_file(dir, &text, exists)?;
        self.remember(Some(Snapshot { state, text }));
        drop(lock);
        Ok(())
    }

    /// Take the commit lock: an exclusive `flock` on `<name>.lock`, waited for at most the
    /// commit wait, saying after a second who it is waiting for. While held, the lock file names
    /// this process, so a waiter that gives up can say who holds it.
    pub(super) fn commit_lock(&self, dir: &Dir) -> anyhow::Result<CommitLock> {
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
            crate::output::progress::eprint_above(&format!(
                "Waiting for the commit lock {} held by {}, for up to {} (--lock-wait)...",
                crate::output::terminal::escape_controls(&lock_path.display().to_string()),
                holder(),
                crate::manifest::units::format_duration(wait)
            ));
        })
        .map_err(|e| {
            StateError::caused_by(format!("cannot lock {}: {e}", lock_path.display()), e)
        })?;
        if !locked {
            return Err(StateError::new(format!(
                "cannot commit to state file {}: the commit lock {} is held by {}, which did \
                 not let go within {}. A commit takes milliseconds, so that process is probably \
                 stopped or hung: end it, or wait longer with a larger --lock-wait (e.g. 60s)",
                self.path.display(),
                lock_path.display(),
                holder(),
                crate::manifest::units::format_duration(wait)
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
    pub(super) fn fresh_snapshot(&self, dir: &Dir) -> anyhow::Result<Option<Snapshot>> {
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
    pub(super) fn remember(&self, snapshot: Option<Snapshot>) {
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

/// Holds the commit lock: an exclusive flock on `<name>.lock`, which names the holder while
/// held and is emptied before it is let go (the kernel lets go of it if the process dies).
pub(super) struct CommitLock {
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
