//! Command-line interface: clap definitions, turning flags into calls, and exit codes.
//! One file per command group; this file only dispatches.

mod complete;
mod completions;
mod consent;
mod deploy;
mod init;
mod plan;
pub mod plugin;
mod plugin_net;
pub mod release;
pub mod releases;
mod rollback;
mod scaffold;
mod state;
pub(crate) mod status;

use clap::{Parser, Subcommand};

use crate::error::{exit_code_for, ExitCode};

/// Records and runs releases. Every phase is a sandboxed WebAssembly component.
#[derive(Debug, Parser)]
#[command(name = "stagecraft", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where a command finds the project and its release state. Only the commands that read or
/// write state take these (deploy, rollback, status, releases, state); each is given after the
/// command, or after its group (`stagecraft releases --state-file x.json list`).
#[derive(Debug, Default, clap::Args)]
pub struct ProjectArgs {
    /// The manifest (default: ./stagecraft.toml). Its directory is the project root.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
    /// The state file (beats STAGECRAFT_STATE_FILE; default .stagecraft/releases.json under the
    /// project root).
    #[arg(long, global = true, value_name = "PATH")]
    pub state_file: Option<std::path::PathBuf>,
    /// Keep release state in PostgreSQL at this URL (postgres://user@host:port/db; beats the
    /// manifest's [state]). Prefer the manifest's url_env variable: a URL with a password on
    /// the command line is visible to other users of the machine.
    #[arg(long, global = true, value_name = "URL", conflicts_with = "state_file")]
    pub state_url: Option<String>,
}

/// The flags only some commands take, and which: the hint when one is given where it does not
/// apply, or before the command name, where no command flag is taken.
const COMMAND_FLAGS: [(&str, &str); 5] = [
    (
        "--config",
        "deploy, rollback, plan, status, releases, state and init",
    ),
    (
        "--state-file",
        "deploy, rollback, plan, status, releases and state",
    ),
    (
        "--state-url",
        "deploy, rollback, plan, status, releases and state",
    ),
    (
        "--verbose",
        "deploy, rollback, plugin check and plugin test",
    ),
    (
        "-v",
        "deploy, rollback, releases show, plugin check and plugin test",
    ),
];

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a release of a version and run its phases.
    Deploy(deploy::DeployArgs),
    /// Redeploy an earlier, fully deployed release as a new release.
    Rollback(rollback::RollbackArgs),
    /// Show what is live in each environment, what is under way, and who holds its lease.
    Status(status::StatusArgs),
    /// Show what a deploy would change from the live release: plugins, config, grants, limits.
    Plan(plan::PlanArgs),
    /// Show the release history: `releases list`, `releases show <id>`.
    Releases(releases::ReleasesArgs),
    /// Inspect and test phase plugins: `plugin check <file>`, `plugin test <file>`,
    /// `plugin new --lang rust|python|js <dir>`.
    Plugin(plugin::PluginArgs),
    /// Manage the release state itself: `state migrate --to <url-or-path>`.
    State(state::StateArgs),
    /// Write a commented starter stagecraft.toml.
    Init(init::InitArgs),
    /// Print a shell completion script.
    Completions(completions::CompletionsArgs),
}

/// Parse the process arguments, run the command, and return its exit code.
pub fn main() -> i32 {
    if let Some(code) = complete::answer_if_asked() {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = match err.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                // Usage errors exit 1, so that 2 always means a phase failed.
                _ => ExitCode::Invalid as i32,
            };
            let _ = err.print();
            if let Some((flag, commands)) = misplaced_flag(&err) {
                eprintln!(
                    "note: {flag} is a flag of {commands}, given after the command name \
                     (`stagecraft deploy {flag} ...`)"
                );
            }
            return code;
        }
    };
    match run(cli) {
        Ok(code) => code as i32,
        // Whoever read our standard output stopped reading (`stagecraft plugin check x | head`):
        // that ends the output, it is not a failure (ripgrep's rule). Anything the command did
        // before it printed is already done.
        Err(err) if is_broken_pipe(&err) => 0,
        Err(err) => {
            // An error may quote plugin text or a value read from state: shown escaped. A phase
            // failure is one line, like the phase's own; other errors keep their line breaks (a
            // manifest error quotes the offending lines).
            use crate::output::terminal::{escape_controls, escape_controls_by_line};
            let message = crate::error::describe(&err);
            let shown = if err.chain().any(|c| c.is::<crate::error::PhaseFailed>()) {
                escape_controls(&message)
            } else {
                escape_controls_by_line(&message)
            };
            eprintln!("Error: {shown}");
            exit_code_for(&err) as i32
        }
    }
}

/// The command flag a usage error is about, when it names one given where it does not apply.
fn misplaced_flag(err: &clap::Error) -> Option<(&'static str, &'static str)> {
    if err.kind() != clap::error::ErrorKind::UnknownArgument {
        return None;
    }
    let clap::error::ContextValue::String(arg) = err.get(clap::error::ContextKind::InvalidArg)?
    else {
        return None;
    };
    let name = arg.split('=').next().unwrap_or(arg);
    COMMAND_FLAGS.into_iter().find(|(flag, _)| *flag == name)
}

/// Whether `err` is, or was caused by, writing to a pipe nobody reads any more.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Status(args) => status::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Releases(args) => releases::run(args),
        Command::Plugin(args) => plugin::run(args),
        Command::State(args) => state::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Rollback(args) => rollback::run(args),
        Command::Init(args) => init::run(args),
        Command::Completions(args) => completions::run(args),
    }
}
