//! `stagecraft rollback`: create a new release from an earlier one and run the same phases.

use crate::cli::release::{self, RunFlags};
use crate::cli::ProjectArgs;
use crate::error::ExitCode;
use crate::manifest::OnFailure;
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
target's version and commit and runs the whole pipeline.

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
    /// Roll back even though a phase's grants (today's manifest) widen since the live release
    /// (see `stagecraft plan`). Without it, widened grants are asked about on a terminal and
    /// refused elsewhere.
    #[arg(long)]
    pub approve_grants: bool,
    #[command(flatten)]
    pub flags: RunFlags,
    #[command(flatten)]
    pub project: ProjectArgs,
}

pub fn run(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let project = &args.project;
    let message = release::message(&args.flags)?;
    let selector = TargetSelector::from_flags(args.to_previous, args.to_release, args.to_version)?;
    let target = release::load_target(project, args.env.as_deref(), "pass --env <name>")?;
    if args.flags.dry_run {
        release::check_grants(project, &target.manifest)?;
        let store = release::open_store(project, &target.manifest)?;
        let state = store.read()?;
        let to = resolve_target(&state, &target.environment, &selector)?;
        release::print_plan(
            &target,
            &to.version,
            &to.commit_sha,
            Some(to),
            Ok(state.live(&target.environment)),
            args.flags.json,
        )?;
        return Ok(ExitCode::Ok);
    }
    // Validate before loading plugins, so a bad target fails fast; then again under the lease,
    // because another process may have released in between.
    let store = release::open_store(project, &target.manifest)?;
    resolve_target(&store.read()?, &target.environment, &selector)?;
    let approved = args.approve_grants;
    // A failed rollback is never rolled back in turn: on_failure applies to deploys.
    release::run_release(
        &target,
        &args.flags,
        store.as_ref(),
        OnFailure::Stop,
        |store| {
            let state = store.read()?;
            let to = resolve_target(&state, &target.environment, &selector)?.clone();
            if !approved {
                super::consent::consent_to_widened_grants(
                    store,
                    &target,
                    Operation::Rollback,
                    &to.version,
                    args.flags.json,
                )?;
            }
            Ok(Request {
                environment: target.environment.clone(),
                version: to.version.clone(),
                commit: to.commit_sha.clone(),
                operation: Operation::Rollback,
                rollback_target: Some(to),
                message: message.clone(),
                auto_rollback_of: None,
            })
        },
    )
}
