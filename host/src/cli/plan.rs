//! `stagecraft plan`: what a deploy of a version would change from the environment's live
//! release: plugins, config, grants and limits, phase by phase.

use std::io::Write;

use crate::cli::release;
use crate::cli::ProjectArgs;
use crate::error::ExitCode;
use crate::output::plan::{self as view, Baseline};
use crate::pipeline::plan::{diff, plan_of_manifest, PhaseChange, PluginVersion};

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

/// For each phase whose plugin changed, what the plugin before (the live release's recorded
/// component) and after (today's) say they are through `describe()`. Loading compiles a
/// component the compiled-component cache lacks, which is said on stderr; a plugin that cannot
/// be loaded or described leaves its version unknown (the plan goes on).
fn ask_versions(
    changes: &mut [PhaseChange],
    manifest: &crate::manifest::Manifest,
    live: &crate::state::Release,
    store: &dyn crate::state::StateStore,
) {
    let changed: Vec<usize> = (0..changes.len())
        .filter(|&i| {
            let c = &changes[i];
            c.digest_before.is_some()
                && c.digest_after.is_some()
                && c.digest_before != c.digest_after
        })
        .collect();
    if changed.is_empty() {
        return;
    }
    let Ok(host) = crate::plugin::PluginHost::new(None) else {
        return;
    };
    let ask = |source: &crate::plugin::PluginSource| -> Option<PluginVersion> {
        let name = source.to_string();
        let compiling = |_| {
            crate::output::progress::eprint_above(&format!(
                "Compiling {} to ask its describe() (first use, cached afterwards)...",
                crate::output::terminal::escape_controls(&name)
            ))
        };
        let loaded = host.load_with(source, &compiling).ok()?;
        let info = host.describe(&loaded).ok()?;
        Some(PluginVersion {
            name: info.name,
            version: info.version,
        })
    };
    for i in changed {
        let change = &mut changes[i];
        change.version_after = manifest
            .phases
            .get(&change.name)
            .and_then(|spec| ask(&spec.source));
        let recorded = live
            .plan
            .as_ref()
            .and_then(|plan| plan.phases.iter().find(|p| p.name == change.name));
        change.version_before = recorded
            .and_then(|planned| {
                crate::pipeline::recorded::recorded_source(
                    planned,
                    live,
                    &manifest.project_root,
                    store,
                )
                .ok()
            })
            .and_then(|source| ask(&source));
    }
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
    let mut changes = diff(live.and_then(|r| r.plan.as_ref()), &new);
    if let Some(live) = live {
        ask_versions(&mut changes, &target.manifest, live, store.as_ref());
    }
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
