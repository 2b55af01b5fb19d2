//! A PostgreSQL lease's heartbeat, and what its holder does when it cannot renew it.
//!
//! A PostgreSQL lease is a session advisory lock: when the session ends (a server restart, a
//! dropped network), the server lets another deploy take the environment at once, while the
//! first process, and the programs its phase started, may still be running. So the lease is
//! bounded in time as well:
//!
//! - the holder renews `heartbeat_at` (the database's clock) every [`RENEW_EVERY`];
//! - a holder that has not renewed for [`LEASE_BOUND`] (its session is gone, or the server does
//!   not answer) stops: it kills every process it started (the running phase's programs), then
//!   exits with code 3. A failed renewal stops it at once;
//! - a new holder that takes the advisory lock while the previous holder's heartbeat is less
//!   than [`LEASE_BOUND`] + [`MARGIN`] old (on the database's clock) waits that out before it
//!   recovers the previous holder's release, unless it can see that process is gone (same
//!   host, pid no longer running).
//!
//! So by construction the two never overlap. The bound is in spec/state-postgres.md.
//!
//! The plugin layer can observe a lost lease through [`lease_lost`] (for example from its epoch
//! ticker) to stop a phase sooner and more gracefully; the backstop does not depend on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often the holder renews its heartbeat.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// A holder that has not renewed its heartbeat for this long stops.
pub const LEASE_BOUND: Duration = Duration::from_secs(10);

/// What a new holder adds to [`LEASE_BOUND`] for the old holder to finish killing its programs
/// and for the two clocks' rates to differ.
pub const MARGIN: Duration = Duration::from_secs(2);

static LOST: AtomicBool = AtomicBool::new(false);

/// Whether a lease this process holds has been lost: its running phase must stop. The process
/// kills its children and exits on its own within [`LEASE_BOUND`] of the last renewal; a phase
/// runner that polls this can stop first.
pub fn lease_lost() -> bool {
    LOST.load(Ordering::SeqCst)
}

/// Renews a lease's heartbeat until dropped, and stops the process if it cannot.
pub(super) struct Heartbeat {
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl Heartbeat {
    /// Start renewing: `renew` commits one renewal (an error: the lease is lost); `lost`
    /// describes the loss for the user, given why.
    pub(super) fn start(
        renew: impl FnMut() -> Result<(), String> + Send + 'static,
        lost: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Heartbeat {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let last_renewal = Arc::new(Mutex::new(Instant::now()));
        let lost = Arc::new(lost);
        {
            // The renewer: may block on a server that does not answer, hence the watchdog.
            let (stop, last_renewal, lost) = (stop.clone(), last_renewal.clone(), lost.clone());
            let mut renew = renew;
            std::thread::spawn(move || loop {
                if wait_or_stopped(&stop, RENEW_EVERY) {
                    return;
                }
                match renew() {
                    Ok(()) => {
                        *last_renewal.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now()
                    }
                    Err(why) => {
                        if !stopped(&stop) {
                            stop_this_process(&lost(&why));
                        }
                        return;
                    }
                }
            });
        }
        {
            // The watchdog: the bound holds even if a renewal never returns.
            let stop = stop.clone();
            std::thread::spawn(move || loop {
                if wait_or_stopped(&stop, RENEW_EVERY / 4) {
                    return;
                }
                let since = last_renewal
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .elapsed();
                if since >= LEASE_BOUND {
                    stop_this_process(&lost(&format!(
                        "no renewal succeeded for {}s",
                        since.as_secs()
                    )));
                }
            });
        }
        Heartbeat { stop }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
    }
}

fn stopped(stop: &(Mutex<bool>, Condvar)) -> bool {
    *stop.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wait `for_` unless stopped first; whether stopped.
fn wait_or_stopped(stop: &(Mutex<bool>, Condvar), for_: Duration) -> bool {
    let (flag, wake) = stop;
    let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
    let (guard, _) = wake
        .wait_timeout_while(guard, for_, |stopped| !*stopped)
        .unwrap_or_else(|p| p.into_inner());
    *guard
}

/// The lease is lost: say so, kill every process this one started (a phase's programs), and
/// exit with code 3. Nothing of this process may run once another holder can start.
fn stop_this_process(message: &str) -> ! {
    LOST.store(true, Ordering::SeqCst);
    crate::output::progress::eprint_above(&format!(
        "Error: {}",
        crate::output::terminal::escape_controls_by_line(message)
    ));
    // Twice: a child may have started another between the first scan and its kill.
    for _ in 0..2 {
        for pid in descendants(std::process::id()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
    crate::error::stop_process(crate::error::Stop::Code(crate::error::ExitCode::State))
}

/// Every process below `root` in the process tree, from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// Whether process `pid` is running on this host (a zombie counts as gone).
pub(super) fn running_here(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z") | Some("X")
        ),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_are_found_through_the_process_tree() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        // The grandchild appears once sh has forked it; poll the tree (no assertion on time).
        let mut found = Vec::new();
        for _ in 0..2000 {
            found = descendants(std::process::id());
            if found.len() >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(found.contains(&child.id()), "{found:?}");
        assert!(found.len() >= 2, "sh and its sleep: {found:?}");
        assert!(running_here(child.id()));
        for pid in &found {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(*pid as i32).unwrap(),
                rustix::process::Signal::KILL,
            );
        }
        child.wait().unwrap();
        assert!(!running_here(child.id()));
    }
}
