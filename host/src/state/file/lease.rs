//! Per-environment leases: an exclusive flock on `leases/<env>.lock` beside the state file,
//! which names its holder while held and dies with it.

use super::*;
use crate::state::LeaseStatus;

impl FileStore {
    /// [`StateStore::lease`] for the file backend: an exclusive flock on `leases/<env>.lock`,
    /// then recovery of what a dead holder left unfinished.
    pub(super) fn take_lease(
        &self,
        env: &str,
        wait: Duration,
        observer: &dyn crate::state::LeaseWaitObserver,
    ) -> anyhow::Result<Lease> {
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
                return Err(StateError::caused_by(
                    format!(
                        "cannot create lease directory {}: {e}",
                        leases_dir.display()
                    ),
                    e,
                )
                .into())
            }
        }
        let lock_path = leases_dir.join(format!("{env}.lock"));
        let leases = dir.open_dir("leases").map_err(|e| {
            StateError::caused_by(
                format!("cannot open lease directory {}: {e}", leases_dir.display()),
                e,
            )
        })?;
        let file = open_lock_file(&leases, &format!("{env}.lock"), &lock_path, "lease file")?;

        let deadline = Instant::now() + wait;
        let mut backoff = Duration::from_millis(1);
        let mut waiting = crate::state::WaitEnd::new(observer, wait);
        // Who the observer was last told holds the lease (pid and start).
        let mut told: Option<Option<(u32, String)>> = None;
        loop {
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {
                    let now = Instant::now();
                    let holder = read_holder(&file);
                    if now >= deadline {
                        return Err(crate::state::busy_error(env, holder, wait));
                    }
                    let who = holder.as_ref().map(|h| (h.pid, h.since.clone()));
                    if told.as_ref() != Some(&who) {
                        waiting.waiting(env, holder.as_ref(), deadline - now);
                        told = Some(who);
                    }
                    // Polling with backoff keeps the wait bounded without a helper thread; the
                    // holder is usually a deploy that lasts seconds to minutes.
                    std::thread::sleep(backoff.min(deadline - now));
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(StateError::caused_by(
                        format!("cannot lock lease file {}: {e}", lock_path.display()),
                        e,
                    )
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
            StateError::caused_by(
                format!(
                    "cannot record the lease holder in {}: {e}",
                    lock_path.display()
                ),
                e,
            )
        })?;
        // We hold the lease, so no live process can be running a release of `env`: anything
        // left unfinished belongs to a process that is gone.
        let note = |id: &crate::state::ReleaseId, phase: &str| {
            notes
                .iter()
                .find(|n| n.release_id == id.as_str() && n.phase == phase)
                .map(crate::state::UnrecordedEnd::recovery_message)
        };
        self.commit_with(&mut |state| Ok(!state.recover_interrupted_with(env, &note).is_empty()))?;
        Ok(Lease::new(env, Box::new(guard)))
    }
}

impl FileStore {
    /// [`StateStore::lease_status`] for the file backend. A holder records itself in the lease
    /// file right after locking it and empties the file when it lets go, so an empty or missing
    /// file is a free lease and nothing is locked to find out; only a file still naming someone
    /// (a holder at work, or one that was killed) is tested with a shared lock, let go at once.
    pub(super) fn read_lease_status(&self, env: &str) -> anyhow::Result<LeaseStatus> {
        check_environment_name(env)?;
        let Some(dir) = self.existing_dir()? else {
            return Ok(LeaseStatus::Free);
        };
        let name = format!("leases/{env}.lock");
        let file = match rustix::fs::openat(
            dir,
            name.as_str(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            Ok(fd) => std::fs::File::from(fd),
            Err(rustix::io::Errno::NOENT) => return Ok(LeaseStatus::Free),
            Err(e) => {
                let path = self.dir_path.join(&name);
                return Err(StateError::caused_by(
                    format!("cannot read lease file {}: {e}", path.display()),
                    io::Error::from(e),
                )
                .into());
            }
        };
        let holder = read_holder(&file);
        if holder.is_none() && file.metadata().map(|m| m.len() == 0).unwrap_or(false) {
            return Ok(LeaseStatus::Free);
        }
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockShared) {
            Ok(()) => {
                let _ = rustix::fs::flock(&file, FlockOperation::Unlock);
                Ok(LeaseStatus::Free)
            }
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(LeaseStatus::Held(holder)),
            Err(e) => {
                let path = self.dir_path.join(&name);
                Err(StateError::caused_by(
                    format!("cannot test lease file {}: {e}", path.display()),
                    io::Error::from(e),
                )
                .into())
            }
        }
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

impl crate::state::LeaseGuard for FileLeaseGuard {
    fn leave_note(&self, end: &crate::state::UnrecordedEnd) -> anyhow::Result<()> {
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

pub(super) fn read_holder(file: &std::fs::File) -> Option<LeaseHolder> {
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
