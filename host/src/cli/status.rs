//! `stagecraft status`: per environment, what is live, what is under way, who holds the lease,
//! and the last failure. Reads only; needs no manifest, but names the environments one declares.

use super::ProjectArgs;
use crate::error::{input_error, ExitCode};
use crate::manifest;
use crate::output::status::{self as render, EnvironmentStatus};
use crate::state::{check_environment_name, State, StateStore};

/// Show what is live in each environment and what is under way.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Per environment: the live release (the newest fully deployed), any release still running or
pending, who holds the environment's lease (pid, host, user, command, since), and the last
failed release with its phase and error. The environments are those the manifest declares and
those with releases in the history.

Examples:
  stagecraft status
  stagecraft status --env prod
  stagecraft status --json | jq '.environments[] | {name, live: .live.version}'

Exit codes: 0 shown (whatever it shows), 1 bad input (an unknown environment), 3 state error.")]
pub struct StatusArgs {
    #[command(flatten)]
    project: ProjectArgs,
    /// Only this environment.
    #[arg(long, short = 'e', value_name = "ENV", add = super::complete::environments())]
    env: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let project = &args.project;
    let store = super::state::open_without_manifest(project)?;
    let state = store.read()?;
    let known = known_environments(project, &state)?;
    let names = match args.env.as_deref().map(str::trim) {
        Some(env) => {
            check_known(env, &known, store.as_ref())?;
            vec![env.to_string()]
        }
        None => known,
    };
    let environments = names
        .iter()
        .map(|name| {
            Ok(EnvironmentStatus {
                name,
                summary: state.environment_summary(name),
                lease: store.lease_status(name)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let text = if args.json {
        render::json(&environments)
    } else if environments.is_empty() {
        format!(
            "No environments: no manifest here declares any, and {} has no releases\n",
            store.describe()
        )
    } else {
        render::text(&environments)
    };
    crate::output::print(&text)?;
    Ok(ExitCode::Ok)
}

/// The environments a read command knows: those the manifest declares and those with releases
/// in `state`, in name order.
pub(super) fn known_environments(
    project: &ProjectArgs,
    state: &State,
) -> anyhow::Result<Vec<String>> {
    let mut known = declared_environments(project)?;
    for r in &state.releases {
        if !known.contains(&r.environment) {
            known.push(r.environment.clone());
        }
    }
    known.sort_unstable();
    Ok(known)
}

/// `env` is a valid name and one of `known`, or an input error naming those there are.
pub(super) fn check_known(
    env: &str,
    known: &[String],
    store: &dyn StateStore,
) -> anyhow::Result<()> {
    check_environment_name(env)?;
    if known.iter().any(|k| k == env) {
        Ok(())
    } else {
        Err(unknown_environment(env, known, store))
    }
}

/// The environments the manifest declares: `--config`'s (which must exist), else
/// `./stagecraft.toml`'s if there is one. A manifest that does not load is named on stderr and
/// left out: the history still says what it holds.
fn declared_environments(project: &ProjectArgs) -> anyhow::Result<Vec<String>> {
    let path = match &project.config {
        Some(_) => manifest::locate(project.config.as_deref())?,
        None if std::path::Path::new(manifest::MANIFEST_NAME).is_file() => {
            manifest::MANIFEST_NAME.into()
        }
        None => return Ok(Vec::new()),
    };
    match manifest::load(&path) {
        Ok(m) => Ok(m.environments.keys().map(|e| e.to_string()).collect()),
        Err(e) => {
            let first = crate::error::describe(&e);
            let first = first.lines().next().unwrap_or_default();
            eprintln!(
                "note: {} does not load ({first}); showing the environments in the history",
                path.display()
            );
            Ok(Vec::new())
        }
    }
}

/// `env` is neither declared nor in the history: say which are, and the likeliest meant.
fn unknown_environment(env: &str, known: &[String], store: &dyn StateStore) -> anyhow::Error {
    let guess = crate::suggest::did_you_mean(env, known.iter().map(String::as_str));
    let known = if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    };
    input_error(format!(
        "unknown environment \"{env}\": the manifest does not declare it and {} has no \
         releases of it (environments: {known}).{guess}",
        store.describe()
    ))
}
