//! `stagecraft init`: write a commented starter manifest.

use std::io::Write;
use std::path::PathBuf;

use crate::error::{input_error, ExitCode};
use crate::manifest::MANIFEST_NAME;

/// Write a commented starter stagecraft.toml (never overwrites one).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  stagecraft init
  stagecraft init --config deploy/stagecraft.toml")]
pub struct InitArgs {
    /// Where to write the manifest (default: ./stagecraft.toml).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// The starter manifest: valid as written, every key explained.
pub const STARTER: &str = include_str!("starter.toml");

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let mut stdout = crate::output::stdout();
    let path = args.config.unwrap_or_else(|| PathBuf::from(MANIFEST_NAME));
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(input_error(format!(
                "{} already exists; edit it, or remove it first to start over",
                path.display()
            )))
        }
        Err(e) => {
            return Err(input_error(format!(
                "cannot create {}: {e}",
                path.display()
            )))
        }
    };
    file.write_all(STARTER.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| input_error(format!("writing {}: {e}", path.display())))?;
    writeln!(
        stdout,
        "Wrote {}. Next: stagecraft deploy --env staging --version v1 --dry-run",
        path.display()
    )?;
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_starter_manifest_is_valid() {
        let root = tempfile::tempdir().unwrap();
        let m = crate::manifest::parse(
            super::STARTER,
            std::path::Path::new("stagecraft.toml"),
            root.path(),
        )
        .unwrap();
        assert!(m.environments.contains_key("staging"));
        assert!(m.environments.contains_key("prod"));
        assert!(m.phases.contains_key("build"));
    }
}
