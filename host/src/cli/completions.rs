//! `stagecraft completions <shell>`: the script that makes a shell complete stagecraft's
//! commands, flags, environment names and release ids (dynamic: see [`super::complete`]).

use crate::error::ExitCode;

/// Print the completion script for your shell.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  echo 'source <(stagecraft completions bash)' >> ~/.bashrc
  echo 'source <(stagecraft completions zsh)' >> ~/.zshrc
  echo 'stagecraft completions fish | source' >> ~/.config/fish/config.fish

The script asks stagecraft itself what to offer, so `--env <TAB>` lists the manifest's
environments and `releases show <TAB>` the history's release ids, in the directory you are in.
Loading it when the shell starts keeps it in step with the installed stagecraft.
`COMPLETE=bash stagecraft` prints the same script (clap's convention).")]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

pub fn run(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let program = std::env::args_os()
        .next()
        .unwrap_or_else(|| "stagecraft".into());
    let script = super::complete::registration_script(&args.shell.to_string(), &program)?;
    crate::output::stdout().write_all(&script)?;
    Ok(ExitCode::Ok)
}
