//! `stagecraft completions <shell>`: shell completion scripts.

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::ExitCode;

/// Print a completion script for your shell.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  stagecraft completions bash > ~/.local/share/bash-completion/completions/stagecraft
  stagecraft completions zsh > \"${fpath[1]}/_stagecraft\"
  stagecraft completions fish > ~/.config/fish/completions/stagecraft.fish")]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

pub fn run(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut cmd = Cli::command();
    // clap_complete panics when its writer fails (a closed pipe): generate into memory, then
    // write with an error the caller can judge.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "stagecraft", &mut script);
    std::io::stdout().lock().write_all(&script)?;
    Ok(ExitCode::Ok)
}
