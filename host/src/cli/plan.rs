//! `stagecraft plan`: what a deploy of a version would change from the environment's live
//! release: plugins, config, grants and limits, phase by phase.

use std::io::Write;

use crate::cli::release;
use crate::cli::ProjectArgs;
use crate::error::ExitCode;
use crate::output::plan::{self as view, Baseline};
use crate::pipeline::plan::{diff, plan_of_manifest};

/// Show what a deploy would change from the live release (nothing is written, no plugin runs).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  stagecraft plan --env prod --version v2
  stagecraft plan -e prod --json | jq '.widens'

Each phase is `same`, `changed`, `added` or `removed` against the live release's recorded plan,
with its plugin digests, config changes, grants added and removed, and limit changes. A deploy
whose grants widen asks for consent (--approve-grants).

Exit codes: 0 shown, 1 invalid input or configuration, 3 state error.")]
pub struct PlanArgs {
    /// The environment, as named in the manifest's [environments] table.
    #[arg(long, short = 'e', env = "STAGECRAFT_ENV", add = super::complete::environments())]
    pub env: Option<String>,
    /// The version a deploy would create. Default: the git HEAD commit of the project.
    #[arg(long)]
    pub version: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub project: ProjectArgs,
}

pub fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let project = &args.project;
    let target = release::load_target(
        project,
        args.env.as_deref(),
        "pass --env <name> or set STAGECRAFT_ENV",
    )?;
    let head = release::git_head(&target.manifest.project_root);
    let version =
        super::deploy::version_or_head(args.version.as_deref(), head.as_deref(), &target)?;
    let store = release::open_store(project, &target.manifest)?;
    let state = store.read()?;
    let live = state.live(&target.environment);
    let new = plan_of_manifest(&target.manifest)?;
    let changes = diff(live.and_then(|r| r.plan.as_ref()), &new);
    let baseline = Baseline { live };
    let mut stdout = crate::output::stdout();
    if args.json {
        let value = view::json_value(&target.environment, &version, &baseline, &changes);
        writeln!(stdout, "{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        write!(
            stdout,
            "{}",
            view::text(&target.environment, &version, &baseline, &changes)
        )?;
    }
    Ok(ExitCode::Ok)
}
