//! Dynamic shell completion: the shell asks the binary itself (`COMPLETE=<shell> stagecraft --
//! <words>`) and gets environment names from the manifest, and release ids and versions from the
//! history, as well as every subcommand and flag.
//!
//! A completer never fails and never prints an error: a manifest that does not load or a store
//! that cannot be read gives no candidates, and the shell falls back to nothing. It reads only:
//! no state file or directory is created by asking.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};
use clap_complete::env::{CompleteEnv, Shells};

use super::{Cli, ProjectArgs};
use crate::output::terminal::contains_controls;
use crate::state::{Release, State};

/// The environment variable the registration script sets when it calls back into stagecraft
/// (clap's convention, so `COMPLETE=bash stagecraft` works as clap's documentation says).
pub const COMPLETE_VAR: &str = "COMPLETE";

/// Answer a completion request if this process is one (`COMPLETE` set): `Some(exit code)`.
/// Runs before anything else reads the arguments or writes to stdout.
pub fn answer_if_asked() -> Option<i32> {
    let shell = std::env::var_os(COMPLETE_VAR).filter(|v| !v.is_empty() && v != "0")?;
    // `COMPLETE=/bin/bash` is accepted as clap accepts it: by the file's stem.
    let shell = PathBuf::from(shell);
    let name = shell.file_stem().unwrap_or_default().to_string_lossy();
    if Shells::builtins().completer(&name).is_none() {
        eprintln!(
            "Error: {COMPLETE_VAR}={} names no shell stagecraft completes for; use bash, zsh, \
             fish, elvish or powershell",
            crate::output::terminal::escape_controls(&shell.to_string_lossy())
        );
        return Some(crate::error::ExitCode::Invalid as i32);
    }
    let cwd = std::env::current_dir().ok();
    match CompleteEnv::with_factory(Cli::command)
        .var(COMPLETE_VAR)
        .try_complete(std::env::args_os(), cwd.as_deref())
    {
        Ok(answered) => answered.then_some(0),
        // The only I/O left is writing the answer: a shell that stopped reading (or any write
        // that failed) gets no candidates, and an error printed mid-completion would only
        // scribble over the command line being typed.
        Err(err) if err.kind() == clap::error::ErrorKind::Io => Some(0),
        Err(err) => {
            let _ = err.print();
            Some(crate::error::ExitCode::Invalid as i32)
        }
    }
}

/// The script a shell sources to complete stagecraft dynamically (what `COMPLETE=<shell>
/// stagecraft` prints). `program` is how stagecraft was invoked: a relative path with a directory
/// in it is made absolute, so the script keeps working from any directory.
pub fn registration_script(shell: &str, program: &OsStr) -> anyhow::Result<Vec<u8>> {
    let shells = Shells::builtins();
    let completer = shells.completer(shell).ok_or_else(|| {
        crate::error::input_error(format!("no dynamic completion for the shell {shell}"))
    })?;
    let mut path = PathBuf::from(program);
    if path.components().count() > 1 && path.is_relative() {
        if let Ok(cwd) = std::env::current_dir() {
            path = cwd.join(path);
        }
    }
    let mut script = Vec::new();
    completer.write_registration(
        COMPLETE_VAR,
        "stagecraft",
        "stagecraft",
        &path.to_string_lossy(),
        &mut script,
    )?;
    Ok(script)
}

/// Completes `--env`: the environments the manifest declares, then any other the history holds.
pub fn environments() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| {
        let global = words_global_args();
        let mut names = declared_environments(&global);
        if let Some(state) = read_state(&global) {
            for r in state.list_all() {
                if !names.contains(&r.environment) {
                    names.push(r.environment.clone());
                }
            }
        }
        starting_with(current, names.into_iter().map(|n| (n, None)))
    })
}

/// Completes a release id, newest first, with its environment, version and status as help.
pub fn release_ids() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| {
        let global = words_global_args();
        let Some(state) = read_state(&global) else {
            return Vec::new();
        };
        let env = word_value(&words(), "--env", Some("-e"));
        let mut releases: Vec<&Release> = match &env {
            Some(env) => state.list_env(env),
            None => state.list_all(),
        };
        releases.sort_by(|a, b| b.id.as_str().cmp(a.id.as_str()));
        starting_with(
            current,
            releases.into_iter().map(|r| {
                let help = format!(
                    "{} {} {}",
                    r.environment,
                    r.version,
                    r.overall_status().as_str()
                );
                (r.id.to_string(), Some(help))
            }),
        )
    })
}

/// Completes `--to-version`: the versions of the `--env` environment's history (or of all).
pub fn versions() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| {
        let global = words_global_args();
        let Some(state) = read_state(&global) else {
            return Vec::new();
        };
        let env = word_value(&words(), "--env", Some("-e"));
        let releases = match &env {
            Some(env) => state.list_env(env),
            None => state.list_all(),
        };
        let mut versions: Vec<String> = Vec::new();
        for r in releases {
            if !versions.contains(&r.version) {
                versions.push(r.version.clone());
            }
        }
        starting_with(current, versions.into_iter().map(|v| (v, None)))
    })
}

/// The candidates that start with what was typed so far. A value holding terminal controls (a
/// history anyone could have written) is never offered to the shell.
fn starting_with(
    current: &OsStr,
    values: impl Iterator<Item = (String, Option<String>)>,
) -> Vec<CompletionCandidate> {
    let typed = current.to_string_lossy();
    values
        .filter(|(value, help)| {
            value.starts_with(typed.as_ref())
                && !contains_controls(value)
                && !help.as_deref().is_some_and(contains_controls)
        })
        .map(|(value, help)| CompletionCandidate::new(value).help(help.map(|h| h.into())))
        .collect()
}

/// The words of the command line being completed: what follows `--` in this process's
/// arguments (the registration script calls `stagecraft -- stagecraft <words>`).
fn words() -> Vec<OsString> {
    let args: Vec<OsString> = std::env::args_os().collect();
    match args.iter().position(|a| a == "--") {
        Some(i) => args[i + 1..].to_vec(),
        None => Vec::new(),
    }
}

/// The value of `long` (or `short`) among `words`: `--flag value` or `--flag=value`; the last
/// one given wins, as clap's does.
fn word_value(words: &[OsString], long: &str, short: Option<&str>) -> Option<String> {
    let mut found = None;
    let mut i = 0;
    while i < words.len() {
        let word = words[i].to_string_lossy();
        if word == long || Some(word.as_ref()) == short {
            if let Some(next) = words.get(i + 1) {
                found = Some(next.to_string_lossy().into_owned());
                i += 1;
            }
        } else if let Some(value) = word.strip_prefix(&format!("{long}=")) {
            found = Some(value.to_string());
        }
        i += 1;
    }
    found.filter(|v| !v.is_empty())
}

/// The store and manifest flags already typed on the line being completed.
fn words_global_args() -> ProjectArgs {
    let words = words();
    ProjectArgs {
        config: word_value(&words, "--config", None).map(PathBuf::from),
        state_file: word_value(&words, "--state-file", None).map(PathBuf::from),
        state_url: word_value(&words, "--state-url", None),
    }
}

fn declared_environments(global: &ProjectArgs) -> Vec<String> {
    let path = global
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::manifest::MANIFEST_NAME));
    match crate::manifest::load(&path) {
        Ok(m) => m.environments.keys().map(|e| e.to_string()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The history, read the way `releases list` reads it; `None` when it cannot be read.
fn read_state(global: &ProjectArgs) -> Option<State> {
    let store = super::state::open_without_manifest(global).ok()?;
    store.read().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_flag_value_is_found_in_either_spelling_and_the_last_wins() {
        let w = os(&[
            "stagecraft",
            "--config",
            "a.toml",
            "deploy",
            "--config=b.toml",
        ]);
        assert_eq!(word_value(&w, "--config", None).as_deref(), Some("b.toml"));
        let w = os(&["stagecraft", "rollback", "-e", "prod", "--to-release"]);
        assert_eq!(word_value(&w, "--env", Some("-e")).as_deref(), Some("prod"));
        let w = os(&["stagecraft", "deploy", "--env"]);
        assert_eq!(word_value(&w, "--env", Some("-e")), None);
    }

    #[test]
    fn candidates_start_with_what_was_typed_and_never_carry_controls() {
        let got = starting_with(
            OsStr::new("pr"),
            [
                ("prod".to_string(), None),
                ("staging".to_string(), None),
                ("pr\x1b[2J".to_string(), None),
                ("preview".to_string(), Some("v1 \u{202e}x".to_string())),
            ]
            .into_iter(),
        );
        let values: Vec<String> = got
            .iter()
            .map(|c| c.get_value().to_string_lossy().into_owned())
            .collect();
        assert_eq!(values, ["prod"]);
    }
}
