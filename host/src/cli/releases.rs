//! `stagecraft releases list|show|logs|prune`: read the release history and print it, or remove
//! an environment's old releases with their logs. Reading never creates the state file, and
//! needs no manifest.

use super::ProjectArgs;
use crate::error::{input_error, ExitCode};
use crate::output::logs as logs_render;
use crate::output::releases as render;
use crate::output::table::Fit;
use crate::state::{
    check_environment_name, Release, ReleaseId, Retention, State, StateStore, StateStoreExt, Window,
};

/// Show the release history.
#[derive(Debug, clap::Args)]
pub struct ReleasesArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(subcommand)]
    pub command: ReleasesCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReleasesCommand {
    /// List releases: newest first, grouped by environment.
    #[command(after_help = "\
Examples:
  stagecraft releases list
  stagecraft releases list --env prod
  stagecraft releases list --json | jq '.[0].id'

Exit codes: 0 listed (also when there are none), 3 state error.")]
    List {
        /// Only this environment's releases (the ENVIRONMENT column is then left out).
        #[arg(long, short = 'e', value_name = "ENV", add = super::complete::environments())]
        env: Option<String>,
        /// Print a JSON array of releases instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one release and each of its phases.
    #[command(after_help = "\
Examples:
  stagecraft releases show rel-20261125-060102345
  stagecraft releases show rel-20261125-060102345 --json

Exit codes: 0 shown, 1 no release with that id, 3 state error.")]
    Show {
        /// The release id, e.g. rel-20261125-060102345.
        #[arg(add = super::complete::release_ids())]
        id: String,
        /// Print the release as one JSON object.
        #[arg(long)]
        json: bool,
        /// Print each phase's full plugin digest (sha256), not its first 12 digits.
        #[arg(long, short = 'v')]
        verbose: bool,
    },
    /// Print the kept log of each phase of a release, in pipeline order.
    #[command(after_help = "\
Each phase that ran a plugin keeps what it logged (host `log` calls, its stdout as info and
stderr as warn, and the host's own lines such as a sandbox refusal): the last 128 KiB of it,
and at most 1 MiB for a release, shared by its phases. A log that had to be cut ends with a
line saying how many earlier lines were cut and why. Logs are removed with their release by
`releases prune` and `[state] history_max`.

Examples:
  stagecraft releases logs rel-20261125-060102345
  stagecraft releases logs rel-20261125-060102345 --phase rollout
  stagecraft releases logs rel-20261125-060102345 --json | jq '.phases[].lines[].message'

Exit codes: 0 shown (also when nothing is kept), 1 no release with that id or no phase of
that name in it, 3 state error.")]
    Logs {
        /// The release id, e.g. rel-20261125-060102345.
        id: String,
        /// Only this phase's log.
        #[arg(long, value_name = "PHASE")]
        phase: Option<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove an environment's old releases, keeping the newest N and every release that
    /// must stay (the live and current releases, unfinished ones, rollback targets).
    #[command(after_help = "\
Never removed, whatever --keep says: the current release, the live release (newest fully
deployed), any release with a phase pending or running, the release `rollback --to-previous`
goes to from any kept release, and the target of an unfinished rollback. Removed releases are
gone from the history for good, with their phase logs; release ids are never reused.

`[state] history_max = N` in stagecraft.toml does the same after every deploy and rollback.

Examples:
  stagecraft releases prune --env prod --keep 20 --dry-run
  stagecraft releases prune --env prod --keep 20

Exit codes: 0 pruned (also when nothing had to go), 1 bad input (no releases in that
environment, --keep 0), 3 state error.")]
    Prune {
        /// The environment to prune.
        #[arg(long, short = 'e', value_name = "ENV", add = super::complete::environments())]
        env: String,
        /// How many of the newest releases to keep (at least 1).
        #[arg(long, value_name = "N")]
        keep: usize,
        /// Say what would be removed, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: ReleasesArgs) -> anyhow::Result<ExitCode> {
    let project = &args.project;
    let store = super::state::open_without_manifest(project)?;
    if let ReleasesCommand::Prune {
        env,
        keep,
        dry_run,
        json,
    } = args.command
    {
        return prune(store.as_ref(), env.trim(), keep, dry_run, json);
    }
    // The store's errors already name the file and what to do about it.
    let state = store.read()?;
    let text = match args.command {
        ReleasesCommand::List { env, json } => {
            let env = env.map(|e| e.trim().to_string());
            if let Some(env) = &env {
                // An environment nobody declared and nothing deployed is a typo, not an empty
                // list.
                let known = super::status::known_environments(project, &state)?;
                super::status::check_known(env, &known, store.as_ref())?;
            }
            let releases = match &env {
                Some(e) => state.list_env(e),
                None => state.list_all(),
            };
            let mut environments: Vec<&str> =
                releases.iter().map(|r| r.environment.as_str()).collect();
            environments.dedup();
            let live: Vec<&ReleaseId> = environments
                .iter()
                .filter_map(|e| state.live(e).map(|r| &r.id))
                .collect();
            if json {
                render::list_json(&releases, &live)
            } else {
                render::list_table(&releases, &live, env.is_none(), Fit::stdout())
            }
        }
        ReleasesCommand::Show { id, json, verbose } => {
            let id = id.trim();
            let release = state
                .get(id)
                .ok_or_else(|| input_error(format!("release not found: {id}")))?;
            let context = render::ShowContext::of(release, &state, verbose, Fit::stdout());
            if json {
                render::show_json(release, context.live)
            } else {
                render::show_text(release, &context)
            }
        }
        ReleasesCommand::Logs { id, phase, json } => {
            logs_text(store.as_ref(), &state, id.trim(), phase.as_deref(), json)?
        }
        ReleasesCommand::Prune { .. } => unreachable!("handled above"),
    };
    crate::output::print(&text)?;
    Ok(ExitCode::Ok)
}

/// `releases logs`: the kept logs of release `id` (one phase's with `phase`), rendered.
fn logs_text(
    store: &dyn StateStore,
    state: &State,
    id: &str,
    phase: Option<&str>,
    json: bool,
) -> anyhow::Result<String> {
    let release = state
        .get(id)
        .ok_or_else(|| input_error(format!("release not found: {id}")))?;
    let order = release.phase_order();
    let phase = phase.map(str::trim);
    if let Some(phase) = phase {
        if !order.iter().any(|p| p == phase) {
            return Err(input_error(format!(
                "release {id} has no phase \"{}\" (its phases: {}).{}",
                crate::output::terminal::escape_controls(phase),
                order.join(", "),
                crate::suggest::did_you_mean(phase, order.iter().map(String::as_str))
            )));
        }
    }
    let kept = store.phase_logs(&release.id)?;
    let shown: Vec<logs_render::ShownLog<'_>> = order
        .iter()
        .filter(|p| phase.is_none_or(|only| only == p.as_str()))
        .filter_map(|p| kept.iter().find(|log| log.phase == *p))
        .map(|log| logs_render::ShownLog { log, release })
        .collect();
    Ok(if json {
        logs_render::logs_json(release, &shown)
    } else if shown.is_empty() {
        logs_render::no_logs_text(release, phase)
    } else {
        logs_render::logs_text(&shown)
    })
}

/// `releases prune`: one transaction that removes what [`State::retention`] lets go, then the
/// logs of what it removed.
fn prune(
    store: &dyn StateStore,
    env: &str,
    keep: usize,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if keep == 0 {
        return Err(input_error(
            "--keep must be at least 1: the live release is always kept",
        ));
    }
    check_environment_name(env)?;
    // Only on that error path is the whole history read, to name the environments it has.
    let no_releases = || -> anyhow::Error {
        let state = match store.read() {
            Ok(state) => state,
            Err(e) => return e,
        };
        let mut known: Vec<&str> = state
            .releases
            .iter()
            .map(|r| r.environment.as_str())
            .collect();
        known.sort_unstable();
        known.dedup();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        input_error(format!(
            "environment \"{env}\" has no releases in {}; nothing to prune (environments \
             with releases: {known})",
            store.describe()
        ))
    };
    let (retention, removed) = if dry_run {
        let state = store.read()?;
        if state.list_env(env).is_empty() {
            return Err(no_releases());
        }
        let retention = state.retention(env, keep);
        let removed = retained_records(&state, &retention);
        (retention, removed)
    } else {
        store.transact_env_if_changed(env, Window::Whole, |state| {
            if state.list_env(env).is_empty() {
                return Err(no_releases());
            }
            let retention = state.retention(env, keep);
            let removed = retained_records(state, &retention);
            state.remove_per(&retention);
            let changed = !removed.is_empty();
            Ok(((retention, removed), changed))
        })?
    };
    if !dry_run {
        // Also what an earlier prune could not remove. The releases are gone whatever happens
        // here, so a failure is a warning.
        // Also what an earlier prune could not remove.
        super::release::sweep_pruned(store, true);
    }
    let text = if json {
        render::prune_json(&retention, dry_run)
    } else {
        render::prune_text(&retention, &removed, dry_run)
    };
    crate::output::print(&text)?;
    Ok(ExitCode::Ok)
}

/// The records of the releases `retention` removes, newest first (as `releases list` shows).
fn retained_records(state: &State, retention: &Retention) -> Vec<Release> {
    retention
        .removed
        .iter()
        .rev()
        .filter_map(|id| state.get(id.as_str()).cloned())
        .collect()
}
