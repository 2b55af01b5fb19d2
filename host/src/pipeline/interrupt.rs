//! SIGINT/SIGTERM during a release: kill every program the phase exec'd (and all they started),
//! record the running phase as failed ("interrupted") and every later phase as skipped, then
//! exit 2. Nothing is left `running` for the next command to find.
//!
//! Every status write of the pipeline goes through [`Guard`], which serializes it with the
//! signal handler's write: the handler waits for a write in flight, and once it has written,
//! the pipeline can never write again (the process exits while holding the lock). A phase's log
//! is kept through the guard too, so that it is written exactly once: by the pipeline when the
//! phase ends, or by the handler when the phase is interrupted.

use std::sync::{Arc, Mutex, MutexGuard};

use super::phase_log::PhaseLogKeeper;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use crate::error::{ExitCode, Stop};
use crate::state::{PhaseStatus, Release, ReleaseId, State, StateStore, StateStoreExt, Window};

/// Runs `body`, the part of a command before its release exists (loading plugins, waiting for
/// the lease), so that SIGINT or SIGTERM erases the live progress line and ends the process as
/// the signal would (exit 128 + its number) instead of leaving the line drawn. Nothing is recorded
/// yet, so there is nothing to mark; a lease taken meanwhile dies with the process.
pub fn exit_cleanly_on_signal<T>(body: impl FnOnce() -> T) -> anyhow::Result<T> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| anyhow::anyhow!("installing the SIGINT/SIGTERM handler: {e}"))?;
    let handle = signals.handle();
    Ok(std::thread::scope(|scope| {
        scope.spawn(move || {
            if let Some(signal) = signals.forever().next() {
                crate::error::stop_process(Stop::Signal(signal));
            }
        });
        let out = body();
        handle.close();
        out
    }))
}

/// Where the release is, as far as the signal handler needs to know.
struct Progress {
    running: Option<String>,
    /// The running phase's log.
    log: Option<Arc<PhaseLogKeeper>>,
}

/// Serializes the pipeline's state writes with the signal handler's.
pub struct Guard<'a> {
    store: &'a dyn StateStore,
    /// The release's environment and id: every write is a transaction on that environment that
    /// sees this release.
    env: String,
    id: ReleaseId,
    progress: Arc<Mutex<Progress>>,
    handle: Handle,
}

impl<'a> Guard<'a> {
    /// Runs `body` with signal handling in place for `release`.
    pub fn run<T>(
        store: &'a dyn StateStore,
        release: &Release,
        body: impl FnOnce(&Guard<'a>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let (env, id) = (release.environment.as_str(), &release.id);
        let mut signals = Signals::new([SIGINT, SIGTERM])
            .map_err(|e| anyhow::anyhow!("installing the SIGINT/SIGTERM handler: {e}"))?;
        let guard = Guard {
            store,
            env: env.to_string(),
            id: id.clone(),
            progress: Arc::new(Mutex::new(Progress {
                running: None,
                log: None,
            })),
            handle: signals.handle(),
        };
        std::thread::scope(|scope| {
            let progress = Arc::clone(&guard.progress);
            let auto_rollback_of = release.auto_rollback_of.clone();
            scope.spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
                    let lock = progress.lock().unwrap_or_else(|p| p.into_inner());
                    // Programs the phase exec'd die next, with everything they started, so that
                    // none is still running when the release says it was interrupted and the
                    // lease lets another deploy in. The lock is taken first: the phase sees its
                    // program die, and its own record of that must not win over this one.
                    crate::plugin::kill_running();
                    let result = store.transact_env(env, Window::Recent(std::slice::from_ref(id)), |s| {
                        Ok(mark_interrupted(s, id, lock.running.as_deref(), name))
                    });
                    if let (Ok(Some(_)), Some(log)) = (&result, &lock.log) {
                        log.keep(
                            crate::plugin::LogLevel::Warn,
                            &format!("interrupted: received {name}"),
                        );
                        keep_log(store, id, log);
                    }
                    match result {
                        Ok(Some(phase)) => {
                            let answered = match &auto_rollback_of {
                                Some(failed) => format!(
                                    " It was the automatic rollback of release {failed}, which \
                                     had failed: nothing more is tried."
                                ),
                                None => String::new(),
                            };
                            crate::output::progress::eprint_above(&format!(
                                "Interrupted by {name}: phase {phase} of release {id} marked failed; \
                                 later phases skipped.{answered}"
                            ));
                            crate::error::stop_process(Stop::Code(ExitCode::PhaseFailed));
                        }
                        // Every phase had already finished: let the release complete.
                        Ok(None) => drop(lock),
                        Err(e) => {
                            crate::output::progress::eprint_above(&format!(
                                "Interrupted by {name}, but recording it failed: {}\nThe next \
                                 deploy or rollback of this environment will mark release {id} \
                                 interrupted.",
                                crate::output::terminal::escape_controls_by_line(
                                    &crate::error::describe(&e)
                                )
                            ));
                            crate::error::stop_process(Stop::Code(ExitCode::State));
                        }
                    }
                }
            });
            let out = body(&guard);
            guard.handle.close();
            out
        })
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commit the write that marks `phase` running; `log` keeps what it logs.
    pub fn begin(
        &self,
        phase: &str,
        log: Arc<PhaseLogKeeper>,
        f: impl FnMut(&mut State) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut progress = self.lock();
        self.store.transact_env(&self.env, self.window(), f)?;
        progress.running = Some(phase.to_string());
        progress.log = Some(log);
        Ok(())
    }

    /// Keep the running phase's log (if a phase is running), then commit a write that ends
    /// it. Returns the record and what the log cost the release's log bound.
    pub fn record(
        &self,
        f: impl FnMut(&mut State) -> anyhow::Result<Release>,
    ) -> anyhow::Result<(Release, u64)> {
        let mut progress = self.lock();
        let spent = match progress.log.take() {
            Some(log) => keep_log(self.store, &self.id, &log),
            None => 0,
        };
        let release = self.store.transact_env(&self.env, self.window(), f)?;
        progress.running = None;
        Ok((release, spent))
    }

    fn window(&self) -> Window<'_> {
        Window::Recent(std::slice::from_ref(&self.id))
    }
}

/// Write what `log` kept as its phase's log in release `id`; returns what it cost the release's
/// log bound. A log that cannot be written never changes the release's outcome: say so and go
/// on.
fn keep_log(store: &dyn StateStore, id: &ReleaseId, log: &PhaseLogKeeper) -> u64 {
    let (log, spent) = log.finish();
    if let Err(e) = store.write_phase_log(id, &log) {
        crate::output::progress::eprint_above(&format!(
            "warning: could not keep the log of phase {} of release {id}: {}. The release is \
             recorded as usual; only this log is missing from `stagecraft releases logs`",
            log.phase,
            crate::output::terminal::escape_controls_by_line(&crate::error::describe(&e))
        ));
    }
    spent
}

/// Mark release `id` interrupted: the running phase (or, between phases, the next pending one)
/// `failed`, later ones `skipped`. Returns the phase marked failed, or None when nothing was left.
fn mark_interrupted(
    state: &mut State,
    id: &ReleaseId,
    running: Option<&str>,
    signal: &str,
) -> Option<String> {
    let release = state.get_mut(id.as_str())?;
    let order = release.phase_order();
    let (at, message) = match running {
        Some(phase) => (
            order.iter().position(|p| p == phase)?,
            format!("interrupted: received {signal} during {phase}"),
        ),
        None => {
            let at = order
                .iter()
                .position(|p| release.status_of(p) == PhaseStatus::Pending)?;
            (
                at,
                format!(
                    "interrupted: received {signal} before {} started",
                    order[at]
                ),
            )
        }
    };
    let phase = order[at].clone();
    let now = crate::state::Timestamp::now();
    release.fail_phase(
        &phase,
        |detail| {
            detail.error = Some(message);
            detail.finished_at = Some(now.as_str().to_string());
        },
        &format!("{phase} was interrupted"),
    );
    Some(phase)
}

/// For a command that runs plugins but records no release (`plugin test`): on SIGINT or SIGTERM,
/// kill every program a plugin exec'd and wait until each is gone with everything it started,
/// then exit as the signal would have (128 + its number). Without this the kernel would still
/// kill them (they die with stagecraft), but only after stagecraft had already exited.
pub fn kill_programs_on_signal() -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| anyhow::anyhow!("installing the SIGINT/SIGTERM handler: {e}"))?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            crate::plugin::kill_running();
            crate::error::stop_process(Stop::Signal(signal));
        }
    });
    Ok(())
}
