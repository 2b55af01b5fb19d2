//! `stagecraft deploy`: create a release of a version and run its phases.

use crate::cli::release::{self, RunFlags};
use crate::cli::ProjectArgs;
use crate::error::{input_error, ExitCode};
use crate::manifest::OnFailure;
use crate::output::terminal::{contains_controls, escape_controls};
use crate::pipeline::Request;
use crate::state::Operation;

/// Create a release and run its phases in order.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  stagecraft deploy --env staging --version v2
  stagecraft deploy -e prod                      # version = git HEAD
  stagecraft deploy -e prod --version v2 --dry-run
  stagecraft deploy -e prod --version v2 --json --lock-wait 5m
  stagecraft deploy -e prod --version v2 --no-auto-rollback

With on_failure = \"rollback\" in the manifest's [deploy] table (or an environment's),
a failed phase is followed by a rollback to the last fully deployed release.

Exit codes: 0 deployed, 1 invalid input or configuration, 2 a phase failed
(whether or not it was rolled back automatically), 3 state error (unreadable
state, lease wait exceeded, I/O).")]
pub struct DeployArgs {
    /// The environment, as named in the manifest's [environments] table.
    #[arg(long, short = 'e', env = "STAGECRAFT_ENV", add = super::complete::environments())]
    pub env: Option<String>,
    /// The version to deploy (a tag or a SHA). Default: the git HEAD commit of the project.
    #[arg(long)]
    pub version: Option<String>,
    /// The commit SHA to record. Default: the git HEAD commit, when in a git work tree.
    #[arg(long)]
    pub commit: Option<String>,
    /// If a phase fails, stop there even when the manifest says `on_failure = "rollback"`.
    #[arg(long)]
    pub no_auto_rollback: bool,
    /// Deploy even though a phase's grants widen since the live release (see `stagecraft
    /// plan`). Without it, widened grants are asked about on a terminal and refused elsewhere.
    #[arg(long)]
    pub approve_grants: bool,
    #[command(flatten)]
    pub flags: RunFlags,
    #[command(flatten)]
    pub project: ProjectArgs,
}

pub fn run(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let project = &args.project;
    let message = release::message(&args.flags)?;
    for (flag, value) in [("--version", &args.version), ("--commit", &args.commit)] {
        if let Some(value) = value {
            refuse_controls(flag, value.trim())?;
        }
    }
    let target = release::load_target(
        project,
        args.env.as_deref(),
        "pass --env <name> or set STAGECRAFT_ENV",
    )?;
    let head = release::git_head(&target.manifest.project_root);
    let version = version_or_head(args.version.as_deref(), head.as_deref(), &target)?;
    let commit = match args.commit.as_deref() {
        Some(c) => c.trim().to_string(),
        None => head.unwrap_or_default(),
    };
    if args.flags.dry_run {
        release::check_grants(project, &target.manifest)?;
        // A dry run still works when the state cannot be read; it then says so.
        let state = release::open_store(project, &target.manifest)
            .and_then(|store| store.read())
            .map_err(|e| format!("{e:#}"));
        let live = state
            .as_ref()
            .map(|s| s.live(&target.environment))
            .map_err(Clone::clone);
        release::print_plan(&target, &version, &commit, None, live, args.flags.json)?;
        return Ok(ExitCode::Ok);
    }
    let store = release::open_store(project, &target.manifest)?;
    let on_failure = if args.no_auto_rollback {
        OnFailure::Stop
    } else {
        target.manifest.on_failure(&target.environment)
    };
    let approved = args.approve_grants;
    release::run_release(
        project,
        &target,
        &args.flags,
        store.as_ref(),
        on_failure,
        |store| {
            if !approved {
                super::consent::consent_to_widened_grants(
                    store,
                    &target,
                    target.manifest.allow_grant_changes,
                    Operation::Deploy,
                    &version,
                    args.flags.json,
                )?;
            }
            Ok(Request {
                environment: target.environment.clone(),
                version: version.clone(),
                commit: commit.clone(),
                operation: Operation::Deploy,
                rollback_target: None,
                message: message.clone(),
                auto_rollback_of: None,
                plan_of: None,
            })
        },
    )
}

/// `--version` as given (trimmed, not empty), else the project's git HEAD commit.
pub fn version_or_head(
    given: Option<&str>,
    head: Option<&str>,
    target: &release::Target,
) -> anyhow::Result<String> {
    match given.map(str::trim) {
        Some("") => Err(input_error("--version must not be empty")),
        Some(v) => Ok(v.to_string()),
        None => head.map(str::to_string).ok_or_else(|| {
            input_error(format!(
                "no --version given and {} is not in a git work tree with a commit; pass \
                 --version <tag-or-sha>",
                target.manifest.project_root.display()
            ))
        }),
    }
}

/// A version or commit is recorded for good and printed on terminals (and passed to every
/// plugin): one with control characters is refused rather than stored (after trimming, as
/// below, so a trailing newline read from a file is harmless).
fn refuse_controls(flag: &str, value: &str) -> anyhow::Result<()> {
    if contains_controls(value) {
        return Err(input_error(format!(
            "{flag} \"{}\" contains a control character (shown escaped); pass it without \
             control characters, such as a tag or a commit SHA",
            escape_controls(value)
        )));
    }
    Ok(())
}
