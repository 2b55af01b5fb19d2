//! `stagecraft rollback`: create a new release from an earlier one and run the same phases.

use crate::cli::release::{self, RunFlags};
use crate::cli::ProjectArgs;
use crate::error::input_error;
use crate::error::ExitCode;
use crate::manifest::OnFailure;
use crate::pipeline::recorded::{self, RollbackPipeline};
use crate::pipeline::{resolve_target, Request, TargetSelector};
use crate::state::Operation;

/// Redeploy an earlier, fully deployed release as a new release.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  stagecraft rollback --env prod --to-previous
  stagecraft rollback --env prod --to-release rel-20261125-061500123
  stagecraft rollback --env prod --to-version v1 --dry-run

The target must belong to --env, must not be the current release, and every one of
its phases must have completed (or been skipped). The new release copies the
target's version and commit and runs the target's recorded plan: the same
components, config, grants and limits (kept by the state), with today's
environment vars. --with-current-pipeline runs today's manifest instead; so does a
target made before plans were recorded, which is said in one line.

Exit codes: 0 rolled back, 1 invalid input or rollback target, 2 a phase failed,
3 state error (unreadable state, lease wait exceeded, I/O).")]
pub struct RollbackArgs {
    /// The environment to roll back (required: a rollback never picks one up from
    /// STAGECRAFT_ENV by accident).
    #[arg(long, short = 'e', add = super::complete::environments())]
    pub env: Option<String>,
    /// Go back to the release that was current before the current one.
    #[arg(long)]
    pub to_previous: bool,
    /// Go back to this release id.
    #[arg(long, value_name = "ID", add = super::complete::release_ids())]
    pub to_release: Option<String>,
    /// Go back to the newest release of this version in the environment.
    #[arg(long, value_name = "VERSION", add = super::complete::versions())]
    pub to_version: Option<String>,
    /// Roll back even though a phase's grants widen since the live release (see `stagecraft
    /// plan`). Without it, widened grants are asked about on a terminal and refused elsewhere.
    #[arg(long)]
    pub approve_grants: bool,
    /// Run today's manifest (its plugins, config, grants and limits) with the target's version,
    /// instead of the plan the target recorded.
    #[arg(long)]
    pub with_current_pipeline: bool,
    #[command(flatten)]
    pub flags: RunFlags,
    #[command(flatten)]
    pub project: ProjectArgs,
}

pub fn run(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let project = &args.project;
    let message = release::message(&args.flags)?;
    let selector = TargetSelector::from_flags(args.to_previous, args.to_release, args.to_version)?;
    let today = release::load_target(project, args.env.as_deref(), "pass --env <name>")?;
    // Today's grants are checked whatever runs (a manifest that would hand a plugin the keys is
    // refused before anything else), and the grants of the plan that runs again below.
    let store = release::open_store(project, &today.manifest)?;
    let state = store.read()?;
    let to = resolve_target(&state, &today.environment, &selector)?.clone();
    let how = RollbackPipeline::choose(&to, args.with_current_pipeline);
    let allow_today = today.manifest.allow_grant_changes;
    let run = match how {
        RollbackPipeline::Recorded => {
            let recorded = release::Target {
                manifest: recorded::manifest_of_plan(&today.manifest, &to, store.as_ref())?,
                environment: today.environment.clone(),
            };
            // Recorded grants are checked against today's state and cache, and may not reach
            // today's plugin files either (they decide what the next deploy runs).
            release::check_grants_also_keeping(project, &recorded.manifest, Some(&today.manifest))?;
            recorded
        }
        // Checked when the store was opened.
        RollbackPipeline::CurrentByChoice | RollbackPipeline::CurrentForLackOfPlan => today,
    };
    crate::output::progress::eprint_above(&how.announcement(&to));
    if args.flags.dry_run {
        release::print_plan(
            &run,
            &to.version,
            &to.commit_sha,
            Some(&to),
            Ok(state.live(&run.environment)),
            args.flags.json,
        )?;
        return Ok(ExitCode::Ok);
    }
    drop(state);
    let approved = args.approve_grants;
    // A failed rollback is never rolled back in turn: on_failure applies to deploys.
    release::run_release(
        project,
        &run,
        &args.flags,
        store.as_ref(),
        OnFailure::Stop,
        |store| {
            // Again under the lease: another process may have released in between.
            let state = store.read()?;
            let now = resolve_target(&state, &run.environment, &selector)?.clone();
            // What runs was chosen by the first target's plan (or its lack of one); unless today's
            // manifest runs by choice, a target with another plan is another rollback.
            if how != RollbackPipeline::CurrentByChoice && now.plan != to.plan {
                return Err(input_error(format!(
                    "the rollback target changed while this command waited for the lease (it is \
                     now release {}, whose plan differs from that of {}); run the command again",
                    now.id, to.id
                )));
            }
            if !approved {
                super::consent::consent_to_widened_grants(
                    store,
                    &run,
                    allow_today,
                    Operation::Rollback,
                    &now.version,
                    args.flags.json,
                )?;
            }
            Ok(Request {
                environment: run.environment.clone(),
                version: now.version.clone(),
                commit: now.commit_sha.clone(),
                operation: Operation::Rollback,
                plan_of: (how == RollbackPipeline::Recorded).then(|| now.id.clone()),
                rollback_target: Some(now),
                message: message.clone(),
                auto_rollback_of: None,
            })
        },
    )
}
