//! `stagecraft state migrate`: copy the whole release history between backends; and the one
//! place every command chooses its store (`--state-url`, `--state-file`, the manifest's
//! `[state]`, the default file).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::ProjectArgs;
use crate::error::{input_error, ExitCode};
use crate::manifest::{self, StateBackend};
use crate::state::{
    self, DamagedComponent, State, StateError, StateStore, StateStoreExt, StoreSelection,
    StoreTarget,
};

/// Manage the release state itself.
#[derive(Debug, clap::Args)]
pub struct StateArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(subcommand)]
    pub command: StateCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// Copy the whole release history from the current store to another backend: ids,
    /// statuses, details, order and lineage, and the releases' phase logs; then read it back
    /// and compare.
    #[command(after_help = "\
Examples:
  stagecraft state migrate --to \"$STAGECRAFT_DATABASE_URL\"      # this project's file to PostgreSQL
  stagecraft state migrate --to backup/releases.json            # the manifest's store to a file
  stagecraft state migrate --to backup/releases.json --replace  # overwrite an earlier copy

The source is chosen like every command's store: --state-url, --state-file, the manifest's
[state], the default file. Exit codes: 0 migrated, 1 invalid input or a non-empty destination
without --replace, 3 state error (unreachable store, copy that does not verify).")]
    Migrate {
        /// The destination: a postgres:// or postgresql:// URL, or a state file path.
        #[arg(long, value_name = "URL-OR-PATH")]
        to: String,
        /// Overwrite a destination that already holds history (it is replaced as a whole).
        #[arg(long)]
        replace: bool,
    },
}

pub fn run(args: StateArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        StateCommand::Migrate { to, replace } => migrate(&args.project, &to, replace),
    }
}

/// The store for a command that has a validated manifest (deploy, rollback).
pub fn open_for(
    project: &ProjectArgs,
    backend: &StateBackend,
    project_root: &Path,
) -> anyhow::Result<Box<dyn StateStore>> {
    target_for(project, backend, project_root)?.open()
}

/// The store for a command that must work without a valid manifest (releases, state migrate):
/// a manifest's `[state]` is still honoured when one is there.
pub fn open_without_manifest(project: &ProjectArgs) -> anyhow::Result<Box<dyn StateStore>> {
    let target = target_without_manifest(project)?;
    if let StoreTarget::File(path) = &target {
        // A file named by hand that is not there is a typo, not an empty history (the default
        // file is simply not created until the first deploy).
        let named = if project.state_file.is_some() {
            Some("--state-file".to_string())
        } else {
            std::env::var_os(state::STATE_FILE_ENV)
                .filter(|v| !v.is_empty())
                .map(|_| format!("${}", state::STATE_FILE_ENV))
        };
        let missing = std::fs::symlink_metadata(path)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        if let (Some(source), true) = (named, missing) {
            return Err(input_error(format!(
                "state file {} (from {source}) does not exist; check the path. Reading creates \
                 nothing: the first deploy with that path starts its history",
                path.display()
            )));
        }
    }
    target.open()
}

/// Where the state lives for a command with this backend and project root (the one rule is
/// [`state::resolve_target`]).
pub(crate) fn target_for(
    project: &ProjectArgs,
    backend: &StateBackend,
    project_root: &Path,
) -> anyhow::Result<StoreTarget> {
    let manifest_url_env = match backend {
        StateBackend::Postgres { url_env } => Some(url_env.as_str()),
        StateBackend::File => None,
    };
    state::resolve_target(&StoreSelection {
        state_url: project.state_url.as_deref(),
        state_file: project.state_file.as_deref(),
        manifest_url_env,
        project_root,
    })
}

/// The project root is the directory of `--config` if given, else the working directory; the
/// manifest there (if any) only contributes its `[state]` backend.
fn target_without_manifest(project: &ProjectArgs) -> anyhow::Result<StoreTarget> {
    let cwd = std::env::current_dir().context("finding the working directory")?;
    let (root, manifest_path): (PathBuf, PathBuf) = match &project.config {
        Some(config) => (
            match config.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => cwd.join(dir),
                _ => cwd.clone(),
            },
            config.clone(),
        ),
        None => (cwd.clone(), PathBuf::from(manifest::MANIFEST_NAME)),
    };
    let backend = if manifest_path.is_file() {
        manifest::state_backend_of(&manifest_path)
    } else {
        StateBackend::File
    };
    target_for(project, &backend, &root)
}

/// One read snapshot of the source, one transaction on the destination, then a read-back that
/// must match.
fn migrate(project: &ProjectArgs, to: &str, replace: bool) -> anyhow::Result<ExitCode> {
    let mut stdout = crate::output::stdout();
    let to = to.trim();
    if to.is_empty() {
        return Err(input_error(
            "--to is empty; pass a postgres:// URL or a state file path",
        ));
    }
    let source_target = target_without_manifest(project)?;
    let dest_target = StoreTarget::parse(to, "--to");
    if same_store(&source_target, &dest_target) {
        return Err(input_error(format!(
            "--to {} is the store being migrated from; choose another destination",
            state::redact_url(to)
        )));
    }
    let source = source_target.open()?;
    let dest = dest_target.open()?;
    let snapshot = source.read()?;
    let count = snapshot.releases.len();
    let dest_location = dest.location();
    dest.transact(|current| {
        let occupied = !current.releases.is_empty() || !current.extra.is_empty();
        if occupied && !replace {
            return Err(input_error(format!(
                "the destination {dest_location} already holds a release history ({} \
                 releases); pass --replace to overwrite it, or choose an empty destination",
                current.releases.len()
            )));
        }
        // The destination's serial never goes backwards, so a reader comparing serials sees
        // the copy as newer than anything it held before.
        let serial = current.serial.max(snapshot.serial);
        *current = snapshot.clone();
        current.serial = serial;
        Ok(())
    })?;
    let copied = dest.read()?;
    if let Some(difference) = difference(&snapshot, &copied) {
        return Err(StateError::new(format!(
            "the copy in {dest_location} does not match {} after writing it: {difference}; \
             the source is unchanged. Run the migration again with --replace",
            source.location()
        ))
        .into());
    }
    let with_logs = copy_logs(source.as_ref(), dest.as_ref(), &snapshot)?;
    let components = copy_components(source.as_ref(), dest.as_ref(), &snapshot)?;
    writeln!(
        stdout,
        "Migrated {count} release{} from {} to {dest_location}",
        if count == 1 { "" } else { "s" },
        source.location()
    )?;
    if with_logs > 0 {
        writeln!(
            stdout,
            "Copied the phase logs of {with_logs} release{}",
            if with_logs == 1 { "" } else { "s" }
        )?;
    }
    if components.copied > 0 {
        writeln!(
            stdout,
            "Copied {} component{} the releases ran ({})",
            components.copied,
            if components.copied == 1 { "" } else { "s" },
            crate::plugin::format_bytes(components.bytes)
        )?;
    }
    for damaged in &components.damaged {
        eprintln!(
            "warning: not copied: {damaged}; a rollback to a release that ran it needs the plugin \
             file to still hold it, or --with-current-pipeline"
        );
    }
    if !components.not_held.is_empty() {
        eprintln!(
            "note: {} component{} the releases ran {} not kept by {} (releases made before \
             components were kept); a rollback to such a release needs the plugin file to \
             still hold it, or --with-current-pipeline",
            components.not_held.len(),
            if components.not_held.len() == 1 {
                ""
            } else {
                "s"
            },
            if components.not_held.len() == 1 {
                "was"
            } else {
                "were"
            },
            source.location()
        );
    }
    Ok(ExitCode::Ok)
}

/// What [`copy_components`] did.
struct CopiedComponents {
    copied: usize,
    bytes: u64,
    /// Digests the history names that the source does not keep.
    not_held: Vec<String>,
    /// What the source said of the components it keeps damaged (not copied).
    damaged: Vec<String>,
}

/// Copy every component `copied`'s plans name from `source` to `dest` (those `dest` does not
/// hold yet), after the history itself, then remove from `dest` those no release there runs
/// (left by a replaced history).
fn copy_components(
    source: &dyn StateStore,
    dest: &dyn StateStore,
    copied: &State,
) -> anyhow::Result<CopiedComponents> {
    let failed = not_all_copied(dest, "the components its releases ran were");
    let wanted: Vec<String> = state::referenced_components(copied).into_iter().collect();
    let mut done = CopiedComponents {
        copied: 0,
        bytes: 0,
        not_held: Vec::new(),
        damaged: Vec::new(),
    };
    for digest in dest.missing_components(&wanted).map_err(failed)? {
        let read = match source.component(&digest) {
            // A damaged copy is not copied: the rest of the history is worth having.
            Err(e) if DamagedComponent::is(&e) => {
                done.damaged.push(crate::error::describe(&e));
                continue;
            }
            read => read.map_err(failed)?,
        };
        match read {
            Some(bytes) => {
                dest.put_component(&digest, &bytes).map_err(failed)?;
                done.copied += 1;
                done.bytes += bytes.len() as u64;
            }
            None => done.not_held.push(digest),
        }
    }
    dest.sweep_components().map_err(failed)?;
    Ok(done)
}

/// Copy every phase log of `copied`'s releases from `source` to `dest`, after the history
/// itself (a log belongs to a release the destination must already hold), and remove the logs
/// a replaced history left there. Returns how many releases had logs.
fn copy_logs(
    source: &dyn StateStore,
    dest: &dyn StateStore,
    copied: &State,
) -> anyhow::Result<usize> {
    let failed = not_all_copied(dest, "its phase logs were");
    dest.sweep_phase_logs().map_err(failed)?;
    let mut with_logs = 0;
    for release in &copied.releases {
        let logs = source.phase_logs(&release.id).map_err(failed)?;
        for log in &logs {
            dest.write_phase_log(&release.id, log).map_err(failed)?;
        }
        with_logs += usize::from(!logs.is_empty());
    }
    Ok(with_logs)
}

/// The error of a migration whose history was copied but whose `what` (`its phase logs were`)
/// not all: exit 3, saying to run it again.
fn not_all_copied<'a>(
    dest: &'a dyn StateStore,
    what: &'a str,
) -> impl Fn(anyhow::Error) -> anyhow::Error + Copy + 'a {
    move |e| {
        StateError::new(format!(
            "the release history was copied to {}, but {what} not all: {}; run the migration \
             again with --replace",
            dest.location(),
            crate::error::describe(&e)
        ))
        .into()
    }
}

fn same_store(a: &StoreTarget, b: &StoreTarget) -> bool {
    match (a, b) {
        (StoreTarget::File(x), StoreTarget::File(y)) => {
            x == y || matches!((x.canonicalize(), y.canonicalize()), (Ok(cx), Ok(cy)) if cx == cy)
        }
        (StoreTarget::Postgres { url: x, .. }, StoreTarget::Postgres { url: y, .. }) => x == y,
        _ => false,
    }
}

/// What differs between the source snapshot and the copy read back, if anything. The copy's
/// format version and serial are its own; a source without a lineage gets one on the copy.
fn difference(source: &State, copy: &State) -> Option<String> {
    if source.releases.len() != copy.releases.len() {
        return Some(format!(
            "{} releases instead of {}",
            copy.releases.len(),
            source.releases.len()
        ));
    }
    for (i, (a, b)) in source.releases.iter().zip(&copy.releases).enumerate() {
        if a != b {
            return Some(format!("release {} (position {i}) differs", a.id));
        }
    }
    if source.lineage.is_some() && source.lineage != copy.lineage {
        return Some("the lineage differs".into());
    }
    if source.last_release_id != copy.last_release_id {
        return Some("the last issued release id differs".into());
    }
    if source.extra != copy.extra {
        return Some("the top-level extra fields differ".into());
    }
    None
}
