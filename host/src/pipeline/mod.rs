//! The one phase executor shared by deploy and rollback.
//!
//! Under the environment's lease: one transaction creates the release with every phase
//! `pending`; then, per phase, a transaction marks it `running`, the plugin runs in its sandbox,
//! and a transaction records `completed` / `skipped` / `failed` with its details. A failure marks
//! every later phase `skipped` in the same transaction. A status write that fails stops
//! everything at once: nothing more runs. What a phase logs goes to the console and is kept,
//! bounded, as the phase's log in the store (phase_log.rs).

mod host_runner;
mod interrupt;
mod phase_log;
pub mod plan;
pub mod recorded;

pub use phase_log::{KEPT_LINE_COST, PHASE_LOG_BOUND, RELEASE_LOG_BOUND};

pub use interrupt::{exit_cleanly_on_signal, kill_programs_on_signal};
mod rollback;

pub use rollback::{resolve_target, TargetSelector};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::error::PhaseFailed;
use crate::manifest::{Manifest, PhaseSpec};
use crate::plugin::{
    LogSink, Operation as PluginOperation, Outcome, PhaseContext, PhaseFailure, PhaseReport,
    ReleaseInfo, RollbackTarget, Sandbox,
};
use crate::state::{
    Operation, PhaseDetail, PhaseStatus, Release, StateStore, StateStoreExt, Timestamp,
    UnrecordedEnd, Window,
};

/// Loads and runs plugins. The real one is [`crate::plugin::PluginHost`]; tests script one.
pub trait Runner {
    type Loaded;
    /// Load (compile, or fetch from the cache) the plugin a phase uses; `compiling` is called
    /// just before a compile (not for a cache hit), with whether its result will be cached.
    fn load(&self, spec: &PhaseSpec, compiling: &dyn Fn(bool)) -> anyhow::Result<Self::Loaded>;
    /// The sha256 of the component, hex.
    fn digest(&self, loaded: &Self::Loaded) -> String;
    /// Whether `load` found it in the compiled-component cache.
    fn was_cached(&self, loaded: &Self::Loaded) -> bool;
    /// The component a phase's plugin names, as the state's component store keeps it (its
    /// sha256 is the digest).
    fn bytes(&self, spec: &PhaseSpec) -> anyhow::Result<std::borrow::Cow<'static, [u8]>>;
    /// Run one phase in a fresh sandbox.
    fn run(
        &self,
        loaded: &Self::Loaded,
        ctx: &PhaseContext,
        sandbox: &Sandbox,
        sink: &dyn LogSink,
    ) -> Result<PhaseReport, PhaseFailure>;
}

/// What the pipeline tells the user as it goes. Rendering lives in `output`.
pub trait Events: Sync {
    /// A phase's plugin is being compiled (it is not in the cache); `plugin_loaded` follows.
    /// `cached_afterwards`: whether later runs will find the compilation in the cache.
    fn plugin_compiling(&self, phase: &str, plugin: &str, cached_afterwards: bool);
    fn plugin_loaded(&self, phase: &str, plugin: &str, cached: bool, took: Duration);
    fn release_created(&self, release: &Release);
    fn phase_started(&self, phase: &str, plugin: &str);
    fn phase_finished(&self, phase: &str, status: PhaseStatus, detail: &PhaseDetail);
    /// Where a running phase's log lines go (already tagged with phase and plugin).
    fn log_sink(&self, phase: &str, plugin: &str) -> Box<dyn LogSink + '_>;
    /// Something went wrong that does not stop the release (one line, no `warning:` prefix).
    fn warning(&self, message: &str);
}

/// What to release.
#[derive(Debug, Clone)]
pub struct Request {
    pub environment: String,
    pub version: String,
    pub commit: String,
    pub operation: Operation,
    /// For a rollback: the validated target.
    pub rollback_target: Option<Release>,
    /// Why (`--message`), recorded with the release.
    pub message: Option<String>,
    /// For an automatic rollback: the failed deploy it answers. Both records name each other.
    pub auto_rollback_of: Option<crate::state::ReleaseId>,
    /// For a rollback that runs its target's recorded plan: the target.
    pub plan_of: Option<crate::state::ReleaseId>,
}

/// Plugins loaded for every configured phase, before anything is written: a plugin that cannot
/// be loaded stops the command before a release exists.
pub struct LoadedPhases<L> {
    by_phase: BTreeMap<String, L>,
}

/// Load every configured phase's plugin, in pipeline order.
pub fn load_plugins<R: Runner>(
    manifest: &Manifest,
    runner: &R,
    events: &dyn Events,
) -> anyhow::Result<LoadedPhases<R::Loaded>> {
    let mut by_phase = BTreeMap::new();
    for phase in &manifest.pipeline {
        let Some(spec) = manifest.phases.get(phase) else {
            continue;
        };
        let started = std::time::Instant::now();
        let compiling =
            |cached_afterwards| events.plugin_compiling(phase, &spec.plugin_ref, cached_afterwards);
        let loaded = runner.load(spec, &compiling).map_err(|e| {
            crate::error::input_error(format!(
                "phase {phase}: plugin {} cannot be loaded: {e:#}",
                spec.plugin_ref
            ))
        })?;
        events.plugin_loaded(
            phase,
            &spec.plugin_ref,
            runner.was_cached(&loaded),
            started.elapsed(),
        );
        by_phase.insert(phase.clone(), loaded);
    }
    Ok(LoadedPhases { by_phase })
}

/// Runs one release through the manifest's pipeline.
pub struct Pipeline<'a, R: Runner> {
    pub manifest: &'a Manifest,
    pub store: &'a dyn StateStore,
    pub runner: &'a R,
    pub events: &'a dyn Events,
}

impl<R: Runner> Pipeline<'_, R> {
    /// Create the release and run its phases. The caller holds the environment's lease.
    /// Returns the final release record; a failed phase is an error of type [`PhaseFailed`]
    /// (the record is already written).
    pub fn execute(
        &self,
        loaded: &LoadedPhases<R::Loaded>,
        req: &Request,
    ) -> anyhow::Result<Release> {
        let plan = plan::plan_of(self.manifest, loaded, self.runner);
        // Kept before the release exists, so a store that cannot take them (a full disk) stops
        // the command with nothing recorded.
        self.keep_components(loaded).map_err(|e| {
            let context = format!(
                "nothing was recorded: the components this release runs cannot be kept in {}",
                self.store.describe()
            );
            e.context(context)
        })?;
        let release = self.create_release(req, plan)?;
        self.events.release_created(&release);
        interrupt::Guard::run(self.store, &release, |guard| {
            // Again now that the release names them: a sweep of unused components between the
            // first keep and the release's commit may have removed one (state/components.rs).
            if let Err(e) = self.keep_components(loaded) {
                self.events.warning(&format!(
                    "the components of release {} may not all be kept ({}); a rollback to it \
                     may need --with-current-pipeline",
                    release.id,
                    crate::error::describe(&e)
                ));
            }
            self.run_phases(guard, loaded, req, &release)
        })
    }

    /// Keep every loaded phase's component in the state's component store, unless it is there.
    fn keep_components(&self, loaded: &LoadedPhases<R::Loaded>) -> anyhow::Result<()> {
        let mut digests: Vec<String> = loaded
            .by_phase
            .values()
            .map(|l| self.runner.digest(l))
            .collect();
        digests.sort();
        digests.dedup();
        for digest in self.store.missing_components(&digests)? {
            let (phase, _) = loaded
                .by_phase
                .iter()
                .find(|(_, l)| self.runner.digest(l) == digest)
                .expect("a missing digest is one of the loaded ones");
            let spec = &self.manifest.phases[phase];
            let bytes = self.runner.bytes(spec)?;
            if crate::plugin::sha256_hex(&bytes) != digest {
                return Err(crate::error::input_error(format!(
                    "the plugin {} of phase {phase} changed after it was loaded; run the \
                     command again",
                    spec.plugin_ref
                )));
            }
            self.store.put_component(&digest, &bytes)?;
        }
        Ok(())
    }

    fn run_phases(
        &self,
        guard: &interrupt::Guard<'_>,
        loaded: &LoadedPhases<R::Loaded>,
        req: &Request,
        release: &Release,
    ) -> anyhow::Result<Release> {
        let mut earlier_outputs: Vec<(String, BTreeMap<String, String>)> = Vec::new();
        let mut last = release.clone();
        let configured = self
            .manifest
            .pipeline
            .iter()
            .filter(|p| self.manifest.phases.contains_key(*p))
            .count();
        let mut log_budget = phase_log::ReleaseLogBudget::new(configured);
        for phase in &self.manifest.pipeline {
            let Some(spec) = self.manifest.phases.get(phase) else {
                let detail = PhaseDetail {
                    summary: Some("no plugin configured".into()),
                    ..PhaseDetail::default()
                };
                (last, _) = guard.record(|s| {
                    finish_phase(s, release, phase, PhaseStatus::Skipped, detail.clone())
                })?;
                self.events
                    .phase_finished(phase, PhaseStatus::Skipped, &detail);
                continue;
            };
            let plugin = loaded
                .by_phase
                .get(phase)
                .expect("every configured phase was loaded");
            let digest = self.runner.digest(plugin);
            let started = Timestamp::now();
            let start_detail = PhaseDetail {
                plugin: Some(spec.plugin_ref.clone()),
                plugin_digest: Some(digest),
                started_at: Some(started.as_str().to_string()),
                ..PhaseDetail::default()
            };
            let keeper = Arc::new(phase_log::PhaseLogKeeper::new(
                phase,
                log_budget.next_phase(),
            ));
            guard.begin(phase, Arc::clone(&keeper), |s| {
                let r = release_mut(s, release)?;
                r.phases.insert(phase.clone(), PhaseStatus::Running);
                r.phase_details.insert(phase.clone(), start_detail.clone());
                Ok(())
            })?;
            self.events.phase_started(phase, &spec.plugin_ref);

            let ctx = self.context(phase, spec, release, req, &earlier_outputs);
            let sandbox = Sandbox {
                project_root: self.manifest.project_root.clone(),
                grants: spec.grants.clone(),
                limits: spec.limits.clone(),
            };
            let console = self.events.log_sink(phase, &spec.plugin_ref);
            let sink = phase_log::Tee {
                console: console.as_ref(),
                keeper: &keeper,
            };
            let clock = std::time::Instant::now();
            let result = self.runner.run(plugin, &ctx, &sandbox, &sink);
            drop(console);
            let mut detail = start_detail.clone();
            detail.finished_at = Some(Timestamp::now().as_str().to_string());
            detail.duration_ms = Some(clock.elapsed().as_millis() as u64);

            match result {
                Ok(report) => {
                    let status = match &report.outcome {
                        Outcome::Completed => PhaseStatus::Completed,
                        Outcome::Skipped(_) => PhaseStatus::Skipped,
                    };
                    detail.summary = Some(match &report.outcome {
                        Outcome::Completed => report.summary.clone(),
                        Outcome::Skipped(reason) if report.summary.is_empty() => reason.clone(),
                        Outcome::Skipped(reason) => format!("{reason}: {}", report.summary),
                    });
                    detail.outputs = report.outputs.clone();
                    let spent;
                    (last, spent) = guard
                        .record(|s| finish_phase(s, release, phase, status, detail.clone()))
                        .map_err(|e| unrecorded(e, release, phase, status))?;
                    log_budget.spent(spent);
                    self.events.phase_finished(phase, status, &detail);
                    if status == PhaseStatus::Completed {
                        earlier_outputs.push((phase.clone(), report.outputs));
                    }
                }
                Err(failure) => {
                    detail.error = Some(failure.to_string());
                    if let PhaseFailure::Limit { limit, .. } = &failure {
                        detail.limit = Some(limit.as_str().to_string());
                    }
                    if let PhaseFailure::Guest {
                        details: Some(more),
                        ..
                    } = &failure
                    {
                        detail
                            .extra
                            .insert("error_details".into(), more.clone().into());
                    }
                    guard
                        .record(|s| {
                            finish_phase(s, release, phase, PhaseStatus::Failed, detail.clone())
                        })
                        .map_err(|e| unrecorded(e, release, phase, PhaseStatus::Failed))?;
                    self.events
                        .phase_finished(phase, PhaseStatus::Failed, &detail);
                    return Err(PhaseFailed {
                        release_id: release.id.to_string(),
                        phase: phase.clone(),
                        reason: failure.to_string(),
                    }
                    .into());
                }
            }
        }
        Ok(last)
    }

    fn create_release(&self, req: &Request, plan: crate::state::Plan) -> anyhow::Result<Release> {
        let pipeline = self.manifest.pipeline.clone();
        let answered: Vec<crate::state::ReleaseId> = req.auto_rollback_of.iter().cloned().collect();
        self.store
            .transact_env(&req.environment, Window::Recent(&answered), |state| {
                let release = state
                    .push_release(
                        &req.environment,
                        &req.version,
                        &req.commit,
                        &pipeline,
                        OffsetDateTime::now_utc(),
                    )
                    .map_err(|e| {
                        crate::state::StateError::caused_by(
                            format!("{}: {e}", self.store.describe()),
                            e,
                        )
                    })?;
                release.operation = Some(req.operation);
                release.rollback_target = req.rollback_target.as_ref().map(|t| t.id.clone());
                release.pipeline = pipeline.clone();
                release.created_by = Some(crate::state::Identity::current());
                release.message = req.message.clone();
                release.auto_rollback_of = req.auto_rollback_of.clone();
                release.plan = Some(plan.clone());
                release.plan_of = req.plan_of.clone();
                let created = release.clone();
                if let Some(failed) = &req.auto_rollback_of {
                    let failed = state.get_mut(failed.as_str()).ok_or_else(|| {
                        crate::state::StateError::new(format!(
                            "release {failed} disappeared from the state before its automatic \
                             rollback; another tool edited the state"
                        ))
                    })?;
                    failed.auto_rolled_back_by = Some(created.id.clone());
                }
                Ok(created)
            })
    }

    fn context(
        &self,
        phase: &str,
        spec: &PhaseSpec,
        release: &Release,
        req: &Request,
        earlier_outputs: &[(String, BTreeMap<String, String>)],
    ) -> PhaseContext {
        PhaseContext {
            phase: phase.to_string(),
            operation: match req.operation {
                Operation::Deploy => PluginOperation::Deploy,
                Operation::Rollback => PluginOperation::Rollback,
            },
            release: ReleaseInfo {
                id: release.id.to_string(),
                environment: release.environment.clone(),
                version: release.version.clone(),
                commit: release.commit_sha.clone(),
                previous_id: release.previous_id.as_ref().map(|p| p.to_string()),
            },
            rollback_target: req.rollback_target.as_ref().map(|t| RollbackTarget {
                release_id: t.id.to_string(),
                version: t.version.clone(),
                commit: t.commit_sha.clone(),
            }),
            config: spec.config.clone(),
            vars: self
                .manifest
                .environments
                .get(req.environment.as_str())
                .map(|e| e.vars.clone())
                .unwrap_or_default(),
            earlier_outputs: earlier_outputs.to_vec(),
        }
    }
}

/// A phase ran to its end but that end could not be committed: say so, with an
/// [`UnrecordedEnd`] the command leaves in its lease for the next holder's recovery.
fn unrecorded(
    error: anyhow::Error,
    release: &Release,
    phase: &str,
    status: PhaseStatus,
) -> anyhow::Error {
    // The root cause's first sentence: the advice after it is for this command's user.
    let cause = crate::error::root_message(&error);
    let cause = cause.split("; ").next().unwrap_or_default().to_string();
    error.context(UnrecordedEnd {
        release_id: release.id.to_string(),
        phase: phase.to_string(),
        status,
        error: cause,
    })
}

fn release_mut<'s>(
    state: &'s mut crate::state::State,
    release: &Release,
) -> anyhow::Result<&'s mut Release> {
    state.get_mut(release.id.as_str()).ok_or_else(|| {
        crate::state::StateError::new(format!(
            "release {} disappeared from the state while it was running; another tool edited \
             the state",
            release.id
        ))
        .into()
    })
}

/// Record a phase's end; a failure also skips every later phase that has not run.
fn finish_phase(
    state: &mut crate::state::State,
    release: &Release,
    phase: &str,
    status: PhaseStatus,
    detail: PhaseDetail,
) -> anyhow::Result<Release> {
    let r = release_mut(state, release)?;
    if status == PhaseStatus::Failed {
        r.fail_phase(phase, |d| *d = detail, &format!("{phase} failed"));
    } else {
        r.phases.insert(phase.to_string(), status);
        r.phase_details.insert(phase.to_string(), detail);
    }
    Ok(r.clone())
}

#[cfg(test)]
mod tests;
