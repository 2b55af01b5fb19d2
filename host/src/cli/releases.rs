//! `stagecraft releases list|show`: read the release history and print it. Reading never creates
//! the state file, and needs no manifest.

use std::io::Write;

use super::GlobalArgs;
use crate::error::{input_error, ExitCode};
use crate::output::releases as render;

/// Show the release history.
#[derive(Debug, clap::Args)]
pub struct ReleasesArgs {
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
        #[arg(long, short = 'e', value_name = "ENV")]
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
        id: String,
        /// Print the release as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(global: &GlobalArgs, args: ReleasesArgs) -> anyhow::Result<ExitCode> {
    let store = super::state::open_without_manifest(global)?;
    // The store's errors already name the file and what to do about it.
    let state = store.read()?;
    let text = match args.command {
        ReleasesCommand::List { env, json } => {
            let env = env.map(|e| e.trim().to_string());
            let releases = match &env {
                Some(e) => state.list_env(e),
                None => state.list_all(),
            };
            if json {
                render::list_json(&releases)
            } else {
                render::list_table(&releases, env.is_none())
            }
        }
        ReleasesCommand::Show { id, json } => {
            let id = id.trim();
            let release = state
                .get(id)
                .ok_or_else(|| input_error(format!("release not found: {id}")))?;
            if json {
                render::show_json(release)
            } else {
                render::show_text(release)
            }
        }
    };
    print_stdout(&text)?;
    Ok(ExitCode::Ok)
}

/// Write `text` to stdout. A closed pipe (`stagecraft releases list | head`) is judged where
/// every command's is, in `cli::main`.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| anyhow::Error::new(e).context("writing to standard output"))
}
