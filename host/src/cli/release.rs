//! What `deploy` and `rollback` share: the manifest and environment, the store, the plugins, the
//! lease, the pipeline run and the final output. Each command only says what to release.

use std::path::Path;
use std::time::Duration;

use crate::cli::ProjectArgs;
use crate::error::{input_error, ExitCode, PhaseFailed, PhaseFailedThen};
use crate::manifest::{self, Manifest, OnFailure, StateBackend};
use crate::output::deploy::ConsoleEvents;
use crate::output::progress;
use crate::output::terminal::escape_controls;
use crate::pipeline::{self, recorded, Pipeline, Request};
use crate::plugin::{PluginHost, PluginSource, Protected, RefusedGrant};
use crate::state::{Operation, Release, StateStore, StateStoreExt, Window};

/// The variable a running release exports to the programs its plugins exec, naming the
/// environment and release, so a hook that calls stagecraft cannot deadlock on its own lease.
pub const LEASE_VAR: &str = "STAGECRAFT_LEASE";

/// Flags shared by deploy and rollback.
#[derive(Debug, Clone, clap::Args)]
pub struct RunFlags {
    /// Print the plan (environment, version, phases) and write nothing: no state, no plugin runs.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the final release record as JSON on stdout (progress and logs stay on stderr).
    #[arg(long)]
    pub json: bool,
    /// How long to wait for another deploy or rollback of the same environment to finish
    /// (default 0), and for another process's commit to the state (default 10s, at least 1s):
    /// `30s`, `2m`, `500ms`, or a number of seconds.
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true)]
    pub lock_wait: Option<String>,
    /// Why this release is made, recorded with it and shown by `releases show` and `status`
    /// (one line, at most 500 characters).
    #[arg(long, short = 'm', value_name = "TEXT")]
    pub message: Option<String>,
    /// Also print plugin debug logs, each phase's duration, and whether each component was
    /// compiled or loaded from the cache.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// The longest `--message` kept.
const MAX_MESSAGE_CHARS: usize = 500;

/// `--message`, trimmed and checked: one line, not empty, at most [`MAX_MESSAGE_CHARS`].
pub fn message(flags: &RunFlags) -> anyhow::Result<Option<String>> {
    let Some(message) = flags.message.as_deref().map(str::trim) else {
        return Ok(None);
    };
    if message.is_empty() {
        return Err(input_error(
            "--message is empty; say why this release is made, or leave the flag out",
        ));
    }
    if message.contains(['\n', '\r']) {
        return Err(input_error(
            "--message must be one line; put the details in the commit it names",
        ));
    }
    let chars = message.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        return Err(input_error(format!(
            "--message is {chars} characters; at most {MAX_MESSAGE_CHARS} are kept"
        )));
    }
    Ok(Some(message.to_string()))
}

/// The loaded manifest and the chosen environment.
pub struct Target {
    pub manifest: Manifest,
    pub environment: String,
}

/// Load the manifest and check the environment exists in it.
pub fn load_target(
    project: &ProjectArgs,
    env: Option<&str>,
    env_source: &str,
) -> anyhow::Result<Target> {
    let path = manifest::locate(project.config.as_deref())?;
    let manifest = manifest::load(&path)?;
    let names = manifest
        .environments
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let environment = match env.map(str::trim) {
        Some(e) if !e.is_empty() => e.to_string(),
        _ => {
            return Err(input_error(format!(
                "no environment given; {env_source} (environments in {}: {names})",
                manifest.path.display()
            )))
        }
    };
    if !manifest.environments.contains_key(environment.as_str()) {
        // The Go tool's message, then the closest name.
        let guess = match crate::suggest::did_you_mean(
            &environment,
            manifest.environments.keys().map(|e| e.as_str()),
        ) {
            guess if guess.is_empty() => guess,
            guess => format!(".{guess}"),
        };
        return Err(input_error(format!(
            "unknown environment {environment:?}; {} defines: {names}{guess}",
            manifest.path.display()
        )));
    }
    refuse_nested_lease(&environment)?;
    Ok(Target {
        manifest,
        environment,
    })
}

/// A plugin's exec'd program that runs `stagecraft deploy` for the environment being deployed
/// would wait for its own lease forever; say so instead.
fn refuse_nested_lease(environment: &str) -> anyhow::Result<()> {
    if let Ok(lease) = std::env::var(LEASE_VAR) {
        if lease.split('/').next() == Some(environment) {
            return Err(input_error(format!(
                "this command runs inside a release of {environment:?} ({LEASE_VAR}={lease}); a \
                 deploy or rollback of the same environment from inside it would wait for \
                 itself forever"
            )));
        }
    }
    Ok(())
}

/// Each plugin file of `manifest`'s phases, with what it is.
fn plugin_files(manifest: &Manifest) -> Vec<(std::path::PathBuf, String)> {
    manifest
        .phases
        .iter()
        .filter_map(|(phase, spec)| match &spec.source {
            PluginSource::File(file) => {
                Some((file.clone(), format!("the plugin of phase {phase}")))
            }
            _ => None,
        })
        .collect()
}

/// The waits `--lock-wait` sets.
pub struct LockWaits {
    /// For the environment's lease: as given, else none.
    pub lease: Duration,
    /// For another process's commit: as given but at least a second (commits take
    /// milliseconds, and a zero wait would fail whenever two commits meet), else
    /// [`crate::state::DEFAULT_COMMIT_WAIT`].
    pub commit: Duration,
}

/// The waits from `--lock-wait`.
pub fn lock_waits(flags: &RunFlags) -> anyhow::Result<LockWaits> {
    let Some(text) = flags.lock_wait.as_deref() else {
        return Ok(LockWaits {
            lease: Duration::ZERO,
            commit: crate::state::DEFAULT_COMMIT_WAIT,
        });
    };
    let lease = crate::manifest::units::parse_wait(text)
        .map_err(|e| input_error(format!("--lock-wait {e}")))?;
    Ok(LockWaits {
        lease,
        commit: lease.max(Duration::from_secs(1)),
    })
}

/// Open the state store for this project, after refusing grants that would expose it.
pub fn open_store(
    project: &ProjectArgs,
    manifest: &Manifest,
) -> anyhow::Result<Box<dyn StateStore>> {
    check_grants(project, manifest)?;
    super::state::open_for(project, &manifest.state, &manifest.project_root)
}

/// Refuse any grant that would hand a plugin the keys (docs/manifest.md, "Grants stagecraft
/// refuses"): a read or write grant reaching the state file, its lock or backup, or the
/// compiled-component cache; a write grant over the manifest or a plugin file of the pipeline;
/// an `env` grant naming a variable that leads to the state or its credentials. The error
/// points at the grant in the manifest.
pub fn check_grants(project: &ProjectArgs, manifest: &Manifest) -> anyhow::Result<()> {
    check_grants_also_keeping(project, manifest, None)
}

/// [`check_grants`] for a rollback running a recorded plan (`manifest`): today's plugin files
/// (`today`'s) are kept from its write grants too, as they decide what the next deploy runs.
pub fn check_grants_also_keeping(
    project: &ProjectArgs,
    manifest: &Manifest,
    today: Option<&Manifest>,
) -> anyhow::Result<()> {
    // The user's resolve override, which the net grant's checks read: a bad one is bad input now,
    // not a failed phase later.
    crate::plugin::net::client::resolve_overrides().map_err(input_error)?;
    let mut protected = protected_paths(project, manifest);
    if let Some(today) = today {
        protected.run_files.extend(plugin_files(today));
    }
    for (phase, spec) in &manifest.phases {
        if let Err(refusal) =
            crate::plugin::check_phase_grants(&spec.grants, &manifest.project_root, &protected)
        {
            let written = match &refusal.grant {
                RefusedGrant::Path(path) => spec
                    .grant_locations
                    .iter()
                    .find(|(grant, _)| grant == path)
                    .map(|(_, at)| at),
                RefusedGrant::Env(name) => spec
                    .env_locations
                    .iter()
                    .find(|(grant, _)| grant == name)
                    .map(|(_, at)| at),
            };
            let at = match written {
                Some(at) => format!("{at}: "),
                None => format!("{}: ", manifest.path.display()),
            };
            return Err(input_error(format!("{at}phase {phase}: {refusal}")));
        }
    }
    Ok(())
}

/// What no grant may reach in this project: the state file, its lock and its backup (a
/// PostgreSQL store has no file on this machine; their directory is protected with them), the
/// compiled-component cache, the manifest and every plugin file, and the variables that lead to
/// the state or its credentials (whatever the backend: a plugin has no business with them).
fn protected_paths(project: &ProjectArgs, manifest: &Manifest) -> Protected {
    // Where the state lives is decided by state::resolve_target alone; a PostgreSQL store (or
    // one whose URL variable is unset, which the command then reports) has no files to keep out.
    let target = super::state::target_for(project, &manifest.state, &manifest.project_root);
    let state_files = if let Ok(crate::state::StoreTarget::File(state_file)) = target {
        let name = state_file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sibling = |suffix: &str| state_file.with_file_name(format!("{name}{suffix}"));
        vec![state_file.clone(), sibling(".lock"), sibling(".bak")]
    } else {
        Vec::new()
    };
    // The manifest's path is as given on the command line, relative to the working directory.
    let manifest_file =
        std::path::absolute(&manifest.path).unwrap_or_else(|_| manifest.path.clone());
    let mut run_files = vec![(manifest_file, "the manifest".to_string())];
    run_files.extend(plugin_files(manifest));
    let mut env = vec![
        (
            crate::state::DATABASE_URL_ENV.to_string(),
            "the state database's URL".to_string(),
        ),
        (
            crate::state::STATE_FILE_ENV.to_string(),
            "the state file's location".to_string(),
        ),
    ];
    if let StateBackend::Postgres { url_env } = &manifest.state {
        env.push((url_env.clone(), "the state database's URL".to_string()));
    }
    for name in ["PGPASSWORD", "PGPASSFILE", "PGSERVICEFILE"] {
        env.push((
            name.to_string(),
            format!("the PostgreSQL credentials stagecraft's state connection may use ({name})"),
        ));
    }
    Protected {
        state_files,
        cache_dir: PluginHost::resolve_cache_dir(None),
        run_files,
        env,
    }
}

/// Load every plugin, take the lease on `store`, let `build_request` resolve what to release
/// from fresh state under the lease, run the pipeline, print the result. The caller opens the
/// store (see [`open_store`]), so checks it made before share it and what it last read.
pub fn run_release(
    project: &ProjectArgs,
    target: &Target,
    flags: &RunFlags,
    store: &dyn StateStore,
    on_failure: OnFailure,
    build_request: impl FnOnce(&dyn StateStore) -> anyhow::Result<Request>,
) -> anyhow::Result<ExitCode> {
    let waits = lock_waits(flags)?;
    store.set_lock_wait(waits.commit);
    let events = ConsoleEvents::new(flags.verbose, flags.json, progress::live_wanted());
    let host = PluginHost::new(None)?;
    let (loaded, lease) = pipeline::exit_cleanly_on_signal(|| -> anyhow::Result<_> {
        let loaded = pipeline::load_plugins(&target.manifest, &host, &events)?;
        let lease = store.lease_observed(&target.environment, waits.lease, &events)?;
        Ok((loaded, lease))
    })??;
    let request = build_request(store)?;
    // Exported for programs that plugins exec (see LEASE_VAR). Set before any plugin runs and
    // only read by child processes.
    std::env::set_var(
        LEASE_VAR,
        format!("{}/{}", target.environment, std::process::id()),
    );

    let pipeline = Pipeline {
        manifest: &target.manifest,
        store,
        runner: &host,
        events: &events,
    };
    let result = pipeline.execute(&loaded, &request);
    leave_note_if_unrecorded(&lease, &result);
    let failed_record = |id: &str| store.read().ok().and_then(|s| s.get(id).cloned());
    let mut record = match &result {
        Ok(release) => Some(release.clone()),
        Err(e) => e
            .downcast_ref::<PhaseFailed>()
            .and_then(|failed| failed_record(&failed.release_id)),
    };
    let result = match (result, &record) {
        (Err(e), Some(failed_release))
            if on_failure == OnFailure::Rollback && e.is::<PhaseFailed>() =>
        {
            let failed = e.downcast::<PhaseFailed>().expect("checked just above");
            let after = roll_back_after(
                project,
                &pipeline,
                &loaded,
                store,
                &lease,
                failed_release,
                failed,
                flags,
            );
            // The failed release now names its rollback.
            record = record.and_then(|r| failed_record(r.id.as_str()));
            Err(after)
        }
        (result, _) => result,
    };
    if let Some(release) = &record {
        print_result(release, flags.json);
        if let Some(keep) = target.manifest.history_max {
            apply_history_max(store, &target.environment, keep);
        }
    }
    result.map(|_| ExitCode::Ok)
}

/// A phase end the state could not take is left in the lease for the next holder's recovery
/// (the lease file usually can take it: it is rewritten in place).
fn leave_note_if_unrecorded<T>(lease: &crate::state::Lease, result: &anyhow::Result<T>) {
    if let Some(end) = result
        .as_ref()
        .err()
        .and_then(|e| e.downcast_ref::<crate::state::UnrecordedEnd>())
    {
        let _ = lease.leave_note(end);
    }
}

/// `on_failure = "rollback"`: `failed` (the deploy `failed_release`) failed in a phase. Still
/// under the lease, roll the environment back to its live release (newest fully deployed) as a
/// new release linked to the failed one, running what that release recorded, like `rollback
/// --to-release` (today's plugins for a live release from before plans). Returns the command's
/// error: the phase failure and what followed (exit 2), or a state error if the rollback could
/// not be recorded (exit 3). Nothing is retried.
#[allow(clippy::too_many_arguments)]
fn roll_back_after(
    project: &ProjectArgs,
    pipeline: &Pipeline<'_, PluginHost>,
    loaded: &pipeline::LoadedPhases<crate::plugin::LoadedPlugin>,
    store: &dyn StateStore,
    lease: &crate::state::Lease,
    failed_release: &Release,
    failed: PhaseFailed,
    flags: &RunFlags,
) -> anyhow::Error {
    let env = &failed_release.environment;
    // Nothing of the rollback is recorded while the history is read (which takes a while for a
    // long one): SIGINT or SIGTERM here ends the command as it would before any release.
    let read = pipeline::exit_cleanly_on_signal(|| store.read()).and_then(|read| read);
    let state = match read {
        Ok(state) => state,
        Err(e) => return e.context(format!("{failed}; the automatic rollback could not start")),
    };
    let Some(live) = state.live(env).cloned() else {
        return PhaseFailedThen {
            failed,
            then: format!(
                "no automatic rollback: {} has no fully deployed release to roll back to",
                escape_controls(env)
            ),
        }
        .into();
    };
    let recorded = live.plan.is_some();
    crate::output::progress::eprint_above(&format!(
        "Release {} failed in phase {}; rolling {} back automatically to {} ({}), its last fully \
         deployed release, with {} (on_failure = \"rollback\")",
        failed.release_id,
        escape_controls(&failed.phase),
        escape_controls(env),
        live.id,
        escape_controls(&live.version),
        if recorded {
            "its recorded plan"
        } else {
            "today's manifest (it has no recorded plan)"
        }
    ));
    let mut request = Request {
        environment: env.clone(),
        version: live.version.clone(),
        commit: live.commit_sha.clone(),
        operation: Operation::Rollback,
        rollback_target: Some(live.clone()),
        message: Some(format!(
            "automatic rollback: release {} failed in phase {}",
            failed.release_id, failed.phase
        )),
        auto_rollback_of: Some(failed_release.id.clone()),
        plan_of: None,
    };
    let result = if recorded {
        // The live release's components, under the lease: usually in the compiled cache.
        let prepared = recorded::manifest_of_plan(pipeline.manifest, &live, store).and_then(|m| {
            check_grants_also_keeping(project, &m, Some(pipeline.manifest))?;
            let loaded = pipeline::load_plugins(&m, pipeline.runner, pipeline.events)?;
            Ok((m, loaded))
        });
        let (manifest, recorded_loaded) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                return PhaseFailedThen {
                    failed,
                    then: format!(
                        "no automatic rollback: the recorded plan of {} cannot run ({}); roll \
                         back by hand: stagecraft rollback --env {} --to-release {} (add \
                         --with-current-pipeline to run today's manifest)",
                        live.id,
                        crate::error::describe(&e),
                        escape_controls(env),
                        live.id
                    ),
                }
                .into()
            }
        };
        request.plan_of = Some(live.id.clone());
        Pipeline {
            manifest: &manifest,
            ..*pipeline
        }
        .execute(&recorded_loaded, &request)
    } else {
        pipeline.execute(loaded, &request)
    };
    leave_note_if_unrecorded(lease, &result);
    match result {
        Ok(rollback) => {
            if !flags.json {
                print_result(&rollback, false);
            }
            PhaseFailedThen {
                failed,
                then: format!(
                    "rolled back automatically: release {} redeployed {}, and {} is live in {} \
                     again",
                    rollback.id,
                    live.id,
                    escape_controls(&live.version),
                    escape_controls(env)
                ),
            }
            .into()
        }
        Err(e) => match e.downcast::<PhaseFailed>() {
            Ok(rollback_failed) => PhaseFailedThen {
                then: format!(
                    "the automatic rollback failed too ({rollback_failed}); nothing more is \
                     tried: check {}, then deploy or roll back by hand",
                    escape_controls(env)
                ),
                failed,
            }
            .into(),
            Err(e) => e.context(format!(
                "{failed}; the automatic rollback to {} could not be recorded",
                live.id
            )),
        },
    }
}

/// `[state] history_max`: prune the environment after its release, still under its lease. The
/// release is recorded whatever happens here, so a failure is a warning, not the command's
/// outcome; the next deploy tries again.
fn apply_history_max(store: &dyn StateStore, env: &str, keep: usize) {
    let pruned = store.transact_env_if_changed(env, Window::Whole, |state| {
        // Whether a removed release was the environment's last to name a component: only then
        // can the sweep of unused components find anything (usually every release runs the
        // same components, and the sweep is skipped).
        let named = crate::state::referenced_components(state);
        let retention = state.prune(env, keep);
        let orphaned = named != crate::state::referenced_components(state);
        let changed = !retention.removed.is_empty();
        Ok(((retention, orphaned), changed))
    });
    match pruned {
        Ok((retention, _)) if retention.removed.is_empty() => {}
        Ok((retention, orphaned)) => {
            let n = retention.removed.len();
            let ids: Vec<&str> = retention.removed.iter().map(|id| id.as_str()).collect();
            eprintln!(
                "Pruned {n} old release{} of {env} (history_max = {keep}): {}",
                if n == 1 { "" } else { "s" },
                ids.join(", ")
            );
            sweep_pruned(store, orphaned);
        }
        Err(e) => eprintln!(
            "warning: could not prune {env} to history_max = {keep}: {e:#}. The release is \
             recorded; the next deploy tries again, or run `stagecraft releases prune --env \
             {env} --keep {keep}`"
        ),
    }
}

/// After releases were removed by a prune: remove their logs and, when `components` says a
/// component may have lost its last release, every kept component no release left runs. The
/// releases are gone whatever happens here, so a failure is a warning; the next prune tries
/// again.
pub fn sweep_pruned(store: &dyn StateStore, components: bool) {
    if let Err(e) = store.sweep_phase_logs() {
        eprintln!(
            "warning: the removed releases are gone, but their logs could not all be removed: \
             {}. The next prune tries again",
            crate::error::describe(&e)
        );
    }
    if !components {
        return;
    }
    match store.sweep_components() {
        Ok(0) => {}
        Ok(n) => eprintln!(
            "Removed {n} kept component{} that no release in the history runs",
            if n == 1 { "" } else { "s" }
        ),
        Err(e) => eprintln!(
            "warning: the removed releases are gone, but the components only they ran could \
             not all be removed: {}. `stagecraft releases prune` tries again",
            crate::error::describe(&e)
        ),
    }
}

fn print_result(release: &Release, json: bool) {
    use std::io::Write;
    let mut out = crate::output::stdout();
    if json {
        // The same shape as `releases show --json`. The release just run is its environment's
        // newest (the lease kept others out), so it is live exactly when fully deployed.
        let live = release.unfinished_phases().is_empty();
        let _ = write!(out, "{}", crate::output::releases::show_json(release, live));
        return;
    }
    let status = release.overall_status();
    if status != crate::state::OverallStatus::Completed {
        return; // The error line on stderr says what failed.
    }
    let version = escape_controls(&release.version);
    let environment = escape_controls(&release.environment);
    let _ = match release.operation() {
        Operation::Deploy => writeln!(
            out,
            "Deployed {version} to {environment} (release {}).",
            release.id
        ),
        Operation::Rollback => writeln!(
            out,
            "Rolled back {environment} to {version} (release {}, redeploying {}).",
            release.id,
            release
                .rollback_target
                .as_ref()
                .map(|t| t.as_str())
                .unwrap_or("?")
        ),
    };
}

use crate::output::plan::{self as plan_view, Baseline};

/// The dry-run plan: what would run, in order, and what changes from the live release.
pub fn print_plan(
    target: &Target,
    version: &str,
    commit: &str,
    rollback_target: Option<&Release>,
    live: Result<Option<&Release>, String>,
    json: bool,
) -> anyhow::Result<()> {
    // What changes from the live release (stagecraft plan's view), when the state could be read.
    let changes = match &live {
        Ok(live) => {
            let new = crate::pipeline::plan::plan_of_manifest(&target.manifest)?;
            let changes = crate::pipeline::plan::diff(live.and_then(|r| r.plan.as_ref()), &new);
            Some((Baseline { live: *live }, changes))
        }
        Err(_) => None,
    };
    use std::io::Write;
    let mut stdout = crate::output::stdout();
    /// One phase of the plan and the grants worth a reviewer's eye.
    struct Planned {
        name: String,
        plugin: Option<String>,
        unconfined: Vec<String>,
        /// The `net` grant, normalized (`https://registry.example.com:443`).
        net: Vec<String>,
    }
    let phases: Vec<Planned> = target
        .manifest
        .pipeline
        .iter()
        .map(|p| {
            let spec = target.manifest.phases.get(p);
            Planned {
                name: p.clone(),
                plugin: spec.map(|s| s.plugin_ref.clone()),
                unconfined: spec
                    .map(|s| s.grants.exec_unconfined.clone())
                    .unwrap_or_default(),
                net: spec
                    .map(|s| s.grants.net.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
            }
        })
        .collect();
    if json {
        let plan = serde_json::json!({
            "dry_run": true,
            "operation": if rollback_target.is_some() { "rollback" } else { "deploy" },
            "environment": target.environment,
            "version": version,
            "commit_sha": commit,
            "rollback_target": rollback_target.map(|t| t.id.as_str()),
            "phases": phases.iter().map(|p| serde_json::json!({
                "name": p.name,
                "plugin": p.plugin,
                "exec_unconfined": p.unconfined,
                "net": p.net,
            })).collect::<Vec<_>>(),
            "changes": changes.as_ref().map(|(baseline, changes)| {
                plan_view::json_value(&target.environment, version, baseline, changes)
            }),
        });
        writeln!(stdout, "{}", serde_json::to_string_pretty(&plan)?)?;
        return Ok(());
    }
    writeln!(stdout, "Dry run: nothing is written and no plugin runs.")?;
    writeln!(
        stdout,
        "Environment:     {}",
        escape_controls(&target.environment)
    )?;
    writeln!(stdout, "Version:         {}", escape_controls(version))?;
    writeln!(
        stdout,
        "Commit SHA:      {}",
        if commit.is_empty() {
            "N/A".into()
        } else {
            escape_controls(commit)
        }
    )?;
    if let Some(t) = rollback_target {
        writeln!(
            stdout,
            "Rollback target: {} ({})",
            t.id,
            escape_controls(&t.version)
        )?;
    }
    writeln!(stdout, "Phases:")?;
    let mut unconfined_any = false;
    for Planned {
        name: phase,
        plugin,
        unconfined,
        net,
    } in phases
    {
        match plugin {
            Some(plugin) => writeln!(stdout, "  {phase:<13} {}", escape_controls(&plugin))?,
            None => writeln!(stdout, "  {phase:<13} skipped (no plugin configured)")?,
        }
        if !net.is_empty() {
            writeln!(stdout, "  {:<13} may reach {} (net)", "", net.join(", "))?;
        }
        // Loud on purpose: these programs reach everything the user running stagecraft can.
        for program in unconfined {
            unconfined_any = true;
            writeln!(
                stdout,
                "  {:<13} WARNING: runs `{}` UNCONFINED (exec_unconfined): it can read and \
                 write anything this user can, including the release history",
                "",
                escape_controls(&program)
            )?;
        }
    }
    if unconfined_any {
        writeln!(
            stdout,
            "Programs run through exec are otherwise confined to their phase's grants; see \
             docs/manifest.md, \"What a program run through exec can reach\"."
        )?;
    }
    writeln!(stdout)?;
    match (&changes, &live) {
        (Some((baseline, changes)), _) => write!(
            stdout,
            "{}",
            plan_view::text(&target.environment, version, baseline, changes)
        )?,
        (None, Err(why)) => writeln!(
            stdout,
            "Changes from the live release: unknown, the state cannot be read ({})",
            escape_controls(why)
        )?,
        (None, Ok(_)) => {}
    }
    Ok(())
}

/// The git HEAD commit of the work tree containing `dir`, if there is one.
pub fn git_head(dir: &Path) -> Option<String> {
    // Spawning git costs ~20 ms even outside a repository; skip it when no ancestor has a
    // `.git` entry and GIT_DIR does not point elsewhere.
    let in_work_tree = std::env::var_os("GIT_DIR").is_some()
        || dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .ancestors()
            .any(|d| d.join(".git").exists());
    if !in_work_tree {
        return None;
    }
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--verify", "--quiet", "HEAD"])
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let sha = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !sha.is_empty()).then_some(sha)
}
