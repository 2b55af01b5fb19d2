//! How the file backend opens, locks and owns the files in the state directory, always
//! relative to its directory handle:
//!
//! - never through a symlink (`O_NOFOLLOW`): a symlinked state file would be read through and
//!   then replaced by a regular file, leaving two histories that diverge;
//! - never blocking on a FIFO or a device (`O_NONBLOCK`, then anything but a regular file is
//!   refused: a FIFO would block forever, `/dev/zero` would be read until memory runs out);
//! - waiting for a lock only as long as allowed, naming the holder when it has to give up;
//! - keeping the owner of the user's project when root writes in it, so a root run never locks
//!   the user out of their own history.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use cap_std::fs::Dir;
use rustix::fs::{FileType, FlockOperation, Mode, OFlags, Stat};

use super::StateError;

/// What the state path holds when it is not a regular file, in words, or `None` for a regular
/// file (and a directory, which reading reports as the OS does).
fn special_kind(file_type: FileType) -> Option<&'static str> {
    match file_type {
        FileType::Fifo => Some("a FIFO"),
        FileType::CharacterDevice => Some("a character device"),
        FileType::BlockDevice => Some("a block device"),
        FileType::Socket => Some("a socket"),
        _ => None,
    }
}

/// The state file opened for reading, or `None` if it does not exist. A symlink, a FIFO or a
/// device is refused with a message that says what it is and what to do.
pub(super) fn open_state_file(
    dir: &Dir,
    name: &str,
    path: &Path,
) -> Result<Option<std::fs::File>, StateError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => return Err(symlink_error(dir, name, path)),
        Err(e) => {
            return Err(StateError::caused_by(
                format!(
                    "cannot read state file {}: {}; check its permissions",
                    path.display(),
                    io::Error::from(e)
                ),
                io::Error::from(e),
            ))
        }
    };
    refuse_special(&fd, path, "state file")?;
    Ok(Some(fd.into()))
}

fn symlink_error(dir: &Dir, name: &str, path: &Path) -> StateError {
    let target = rustix::fs::readlinkat(dir, name, Vec::new())
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "somewhere".to_string());
    StateError::new(format!(
        "state file {} is a symbolic link (to {target}); stagecraft does not follow it, because \
         a commit replaces the file and would leave the link's target behind as a second \
         history. Pass the real path with --state-file (or STAGECRAFT_STATE_FILE), or replace \
         the link with the file it points to",
        path.display()
    ))
}

/// Refuse `fd` unless it is a regular file (or a directory, which the caller's read reports).
fn refuse_special(fd: &OwnedFd, path: &Path, what: &str) -> Result<(), StateError> {
    let stat = rustix::fs::fstat(fd).map_err(|e| {
        StateError::caused_by(
            format!(
                "cannot read {what} {}: {}",
                path.display(),
                io::Error::from(e)
            ),
            io::Error::from(e),
        )
    })?;
    match special_kind(FileType::from_raw_mode(stat.st_mode)) {
        Some(kind) => Err(StateError::new(format!(
            "{what} {} is {kind}, not a regular file; pass --state-file with the path of a \
             regular file (or of one that does not exist yet)",
            path.display()
        ))),
        None => Ok(()),
    }
}

/// Open or create (`0600`) a lock file in `dir`, read-write, with the same refusals as the
/// state file. A file it creates is given the directory's owner (see [`adopt_owner`]). `what`
/// names it in messages (`lock file`, `lease file`).
pub(super) fn open_lock_file(
    dir: &Dir,
    name: &str,
    path: &Path,
    what: &str,
) -> Result<std::fs::File, StateError> {
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let open_error = |e: rustix::io::Errno| {
        StateError::caused_by(
            format!(
                "cannot open {what} {}: {}; check that you may write to {}",
                path.display(),
                io::Error::from(e),
                path.parent().unwrap_or(Path::new(".")).display()
            ),
            io::Error::from(e),
        )
    };
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => {
            match rustix::fs::openat(
                dir,
                name,
                flags | OFlags::CREATE | OFlags::EXCL,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => {
                    adopt_owner(dir, &fd);
                    fd
                }
                // Created by someone else in between: open theirs.
                Err(rustix::io::Errno::EXIST) => {
                    rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(open_error)?
                }
                Err(e) => return Err(open_error(e)),
            }
        }
        Err(e) => return Err(open_error(e)),
    };
    refuse_special(&fd, path, what)?;
    Ok(fd.into())
}

/// When root creates `fd` in a directory someone else owns (a root run on a user's project),
/// give it to the directory's owner, so the user can still use their own history. Best effort:
/// a file that keeps root's ownership only matters to a later non-root run, which then says
/// exactly which file it cannot open.
pub(super) fn adopt_owner(dir: &Dir, fd: impl AsFd) {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    if let Ok(owner) = rustix::fs::fstat(dir) {
        if owner.st_uid != 0 || owner.st_gid != 0 {
            let _ = rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(owner.st_uid)),
                Some(rustix::fs::Gid::from_raw(owner.st_gid)),
            );
        }
    }
}

/// The owner and permission bits of `name` in `dir`, without following a symlink; `None` if
/// it does not exist.
pub(super) fn owner_and_mode(dir: &Dir, name: &str) -> io::Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Give `fd` the owner and permission bits of `like` (the file it replaces). Changing the owner
/// needs privileges: a run that lacks them (it can only be the owner or share the group) keeps
/// what it can, and the mode is set either way.
pub(super) fn keep_owner_and_mode(fd: impl AsFd, like: &Stat) -> io::Result<()> {
    let uid = rustix::fs::Uid::from_raw(like.st_uid);
    let gid = rustix::fs::Gid::from_raw(like.st_gid);
    let mine = rustix::fs::fstat(&fd)?;
    if mine.st_uid != like.st_uid || mine.st_gid != like.st_gid {
        match rustix::fs::fchown(&fd, Some(uid), Some(gid)) {
            Ok(()) | Err(rustix::io::Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(like.st_mode & 0o7777))?;
    Ok(())
}

/// An exclusive `flock` on `file`, waiting at most `wait`. `after_a_second` runs once if the
/// wait goes on for a second. `Ok(false)` when the wait ran out.
///
/// Uncontended, this is one non-blocking attempt. Contended, a helper thread makes the blocking
/// call on a duplicate of the descriptor (the same open file, so the lock it gets is ours) and
/// this thread waits for it with a timeout: waking the moment the lock is free, as a plain
/// blocking `flock` does, instead of polling (which made commits under contention twice as
/// slow). If the wait runs out first, the helper lets go of the lock as soon as it gets it.
pub(super) fn lock_within(
    file: &std::fs::File,
    wait: Duration,
    after_a_second: impl FnOnce(),
) -> io::Result<bool> {
    match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => return Ok(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {}
        Err(e) => return Err(e.into()),
    }
    if wait.is_zero() {
        return Ok(false);
    }
    let waiter = file.try_clone()?;
    let (got, lock) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = loop {
            match rustix::fs::flock(&waiter, FlockOperation::LockExclusive) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other,
            }
        };
        let locked = result.is_ok();
        if got.send(result).is_err() && locked {
            // Nobody waits for it any more.
            let _ = rustix::fs::flock(&waiter, FlockOperation::Unlock);
        }
    });
    let deadline = Instant::now() + wait;
    let first = wait.min(Duration::from_secs(1));
    let result = match lock.recv_timeout(first) {
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) if first < wait => {
            after_a_second();
            lock.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        }
        other => other,
    };
    match result {
        Ok(Ok(())) => Ok(true),
        Ok(Err(e)) => Err(e.into()),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(false),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(io::Error::other("the thread waiting for the lock ended"))
        }
    }
}
