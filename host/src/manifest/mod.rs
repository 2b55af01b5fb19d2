//! `stagecraft.toml`: environments, the pipeline, per-phase plugins, grants and limits, and the
//! state backend, parsed once into a validated model. Nothing downstream re-parses strings.
//!
//! Every error names the file, line and column, and says how to fix it.

mod raw;
pub mod units;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use crate::error::input_error;
use crate::plugin::net::NetGrant;
use crate::plugin::{Grants, Limits, PluginSource};
use crate::state::{EnvironmentName, CANONICAL_PHASES};

pub use units::{parse_duration, parse_size};

/// The file name looked up in the working directory when `--config` is not given.
pub const MANIFEST_NAME: &str = "stagecraft.toml";

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file as given (for messages).
    pub path: PathBuf,
    /// The manifest's directory, absolute: relative plugin paths and grants resolve against it.
    pub project_root: PathBuf,
    pub environments: BTreeMap<EnvironmentName, Environment>,
    /// Phase names in run order.
    pub pipeline: Vec<String>,
    /// Configured phases; a pipeline phase without an entry is skipped ("no plugin configured").
    pub phases: BTreeMap<String, PhaseSpec>,
    pub state: StateBackend,
    /// `[state] history_max`: releases each environment keeps after a deploy or rollback (see
    /// [`crate::state::State::retention`]); `None` keeps everything.
    pub history_max: Option<usize>,
    /// `[deploy] on_failure`: what a deploy does when a phase fails, unless its environment
    /// says otherwise (see [`Manifest::on_failure`]).
    pub on_failure: OnFailure,
    /// sha256 of the manifest's text, hex: recorded in each release's plan.
    pub digest: String,
    /// `[deploy] grant_changes = "allow"`: a deploy whose grants widen since the live release
    /// needs no consent.
    pub allow_grant_changes: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub vars: BTreeMap<String, String>,
    /// `[environments.<name>] on_failure`, overriding `[deploy] on_failure`.
    pub on_failure: Option<OnFailure>,
}

/// What a deploy does when one of its phases fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop: the release is recorded failed and the command exits 2 (the Go tool's behaviour).
    #[default]
    Stop,
    /// Then roll the environment back to its last fully deployed release, as a new release
    /// linked to the failed one.
    Rollback,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Stop => "stop",
            OnFailure::Rollback => "rollback",
        }
    }

    fn parse(at: &Locator, value: &toml::Spanned<String>) -> anyhow::Result<OnFailure> {
        match value.get_ref().as_str() {
            "stop" => Ok(OnFailure::Stop),
            "rollback" => Ok(OnFailure::Rollback),
            other => Err(input_error(at.message(
                Some(value.span()),
                &format!(
                    "on_failure = {other:?} is not a choice; use \"stop\" (the default: record \
                     the failure and exit 2) or \"rollback\" (then roll back to the last fully \
                     deployed release)"
                ),
            ))),
        }
    }
}

impl Manifest {
    /// What a deploy of `env` does when a phase fails: the environment's `on_failure`, else
    /// `[deploy] on_failure`, else stop.
    pub fn on_failure(&self, env: &str) -> OnFailure {
        self.environments
            .iter()
            .find(|(name, _)| name.as_str() == env)
            .and_then(|(_, e)| e.on_failure)
            .unwrap_or(self.on_failure)
    }
}

#[derive(Debug, Clone)]
pub struct PhaseSpec {
    /// As written: `builtin:exec`, `plugins/rollout.wasm`. Recorded in the release.
    pub plugin_ref: String,
    pub source: PluginSource,
    pub config: BTreeMap<String, String>,
    /// Resolved to absolute paths under the project root.
    pub grants: Grants,
    pub limits: Limits,
    /// Where each grant path was written, to point at it if a later check refuses it.
    pub grant_locations: Vec<(PathBuf, String)>,
    /// Where each `env` grant was written (variable name, `file:line:col`), likewise.
    pub env_locations: Vec<(String, String)>,
}

/// Where release history lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackend {
    /// `.stagecraft/releases.json` (or `--state-file` / `STAGECRAFT_STATE_FILE`).
    File,
    /// PostgreSQL; the URL comes from the named environment variable, never from the manifest.
    Postgres { url_env: String },
}

/// The largest `[state] history_max` (a bound against typos, not a limit anyone needs).
pub const MAX_HISTORY_MAX: i64 = 1_000_000;

/// The built-in plugins this binary embeds.
pub const BUILTIN_PLUGINS: [&str; 5] = ["noop", "exec", "render", "switch", "http-check"];

/// Phase names: `[a-z][a-z0-9_]*`.
pub fn valid_phase_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 64
}

/// Find the manifest: `--config` if given, else `./stagecraft.toml`.
pub fn locate(config_flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    match config_flag {
        Some(path) => {
            if path.is_file() {
                Ok(path.to_path_buf())
            } else {
                Err(input_error(format!(
                    "manifest {} not found; check the --config path",
                    path.display()
                )))
            }
        }
        None => {
            let path = PathBuf::from(MANIFEST_NAME);
            if path.is_file() {
                Ok(path)
            } else {
                Err(input_error(format!(
                    "no {MANIFEST_NAME} in this directory; run `stagecraft init` to create one, \
                     or pass --config <path>"
                )))
            }
        }
    }
}

/// Load and validate the manifest at `path`.
pub fn load(path: &Path) -> anyhow::Result<Manifest> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| input_error(format!("cannot read manifest {}: {e}", path.display())))?;
    let root = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    let project_root = std::path::absolute(root)
        .map_err(|e| input_error(format!("cannot resolve {}: {e}", root.display())))?;
    parse(&text, path, &project_root)
}

/// The state backend a manifest selects, for commands that read history without needing a valid
/// manifest (`releases`, `state migrate`): the validated model when the manifest loads, else its
/// `[state]` table read on its own, else the file backend. History stays readable while the
/// rest of a manifest is broken, and a team on PostgreSQL still reads PostgreSQL.
pub fn state_backend_of(path: &Path) -> StateBackend {
    if let Ok(manifest) = load(path) {
        return manifest.state;
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return StateBackend::File;
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return StateBackend::File;
    };
    let state = table.get("state").and_then(toml::Value::as_table);
    match state
        .and_then(|s| s.get("backend"))
        .and_then(toml::Value::as_str)
    {
        Some("postgres") => StateBackend::Postgres {
            url_env: state
                .and_then(|s| s.get("url_env"))
                .and_then(toml::Value::as_str)
                .unwrap_or(crate::state::DATABASE_URL_ENV)
                .to_string(),
        },
        _ => StateBackend::File,
    }
}

/// The dotted path of the key at byte `offset` of manifest `text`: the table header above it
/// (`[phases.build]`) and the key its line assigns (`timeout = 600`), or the header alone when
/// `offset` is on it. `None` outside any key (a syntax error between lines).
fn key_path_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let header = |line: &str| {
        line.strip_prefix('[')
            .map(|rest| rest.trim_start_matches('['))
            .and_then(|rest| rest.split(']').next())
            .map(|name| name.trim().to_string())
    };
    if line.starts_with('[') {
        return header(line);
    }
    let key = line
        .split_once('=')
        .map(|(key, _)| key.trim().to_string())?;
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .and_then(header);
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key,
    })
}

/// Parse and validate manifest text. `path` is only used in messages.
pub fn parse(text: &str, path: &Path, project_root: &Path) -> anyhow::Result<Manifest> {
    let at = Locator { text, path };
    let raw: raw::RawManifest = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim_end().to_string();
        let hint = unknown_key_hint(&msg);
        // The key the error is about (`phases.build.timeout`), beside its line and column.
        let key = e
            .span()
            .and_then(|span| key_path_at(text, span.start))
            .map(|key| format!("{key}: "))
            .unwrap_or_default();
        input_error(at.message(e.span(), &format!("{key}{msg}{hint}")))
    })?;

    if raw.environments.is_empty() {
        return Err(input_error(format!(
            "{}: no environments defined; add one, e.g.\n\n[environments.staging]\n",
            path.display()
        )));
    }
    let mut environments = BTreeMap::new();
    for (name, env) in raw.environments {
        let parsed = EnvironmentName::parse(name.get_ref())
            .map_err(|e| input_error(at.message(Some(name.span()), &e.to_string())))?;
        let on_failure = env
            .on_failure
            .as_ref()
            .map(|v| OnFailure::parse(&at, v))
            .transpose()?;
        environments.insert(
            parsed,
            Environment {
                vars: env.vars,
                on_failure,
            },
        );
    }

    let pipeline: Vec<String> = match &raw.pipeline {
        None => CANONICAL_PHASES.iter().map(|s| s.to_string()).collect(),
        Some(p) => {
            if p.phases.get_ref().is_empty() {
                return Err(input_error(at.message(
                    Some(p.phases.span()),
                    "[pipeline] phases must not be empty",
                )));
            }
            let mut out: Vec<String> = Vec::new();
            for name in p.phases.get_ref() {
                if !valid_phase_name(name.get_ref()) {
                    return Err(input_error(at.message(
                        Some(name.span()),
                        &format!(
                            "invalid phase name {:?}: phase names match [a-z][a-z0-9_]*",
                            name.get_ref()
                        ),
                    )));
                }
                if out.contains(name.get_ref()) {
                    return Err(input_error(at.message(
                        Some(name.span()),
                        &format!(
                            "phase {:?} is listed twice in [pipeline] phases",
                            name.get_ref()
                        ),
                    )));
                }
                out.push(name.get_ref().clone());
            }
            out
        }
    };

    let mut phases = BTreeMap::new();
    for (name, spec) in raw.phases {
        if !pipeline.contains(name.get_ref()) {
            let listed = pipeline.join(", ");
            let fix = if raw.pipeline.is_some() {
                "add it to [pipeline] phases"
            } else {
                "declare a custom order with [pipeline] phases = [...]"
            };
            return Err(input_error(at.message(
                Some(name.span()),
                &format!(
                    "unknown phase {:?}; the pipeline's phases are: {listed} ({fix}, or fix the \
                     name).{}",
                    name.get_ref(),
                    crate::suggest::did_you_mean(
                        name.get_ref(),
                        pipeline.iter().map(|p| p.as_str())
                    )
                ),
            )));
        }
        let phase = build_phase(&at, project_root, spec)?;
        phases.insert(name.into_inner(), phase);
    }
    check_read_grants_exist(&pipeline, &phases)?;

    let history_max = match raw.state.as_ref().and_then(|s| s.history_max.as_ref()) {
        None => None,
        Some(n) if *n.get_ref() >= 1 && *n.get_ref() <= MAX_HISTORY_MAX => {
            Some(*n.get_ref() as usize)
        }
        Some(n) => {
            return Err(input_error(at.message(
                Some(n.span()),
                &format!(
                    "history_max must be between 1 and {MAX_HISTORY_MAX} (releases kept per \
                     environment; the live release is always kept); remove it to keep every \
                     release"
                ),
            )))
        }
    };
    let state = match raw.state {
        None => StateBackend::File,
        Some(s) => match s.backend.as_ref().map_or("file", |b| b.get_ref().as_str()) {
            "file" => {
                if let Some(url_env) = s.url_env {
                    return Err(input_error(at.message(
                        Some(url_env.span()),
                        "url_env only applies to backend = \"postgres\"",
                    )));
                }
                StateBackend::File
            }
            "postgres" => StateBackend::Postgres {
                url_env: s
                    .url_env
                    .map(|v| v.into_inner())
                    .unwrap_or_else(|| crate::state::DATABASE_URL_ENV.into()),
            },
            other => {
                return Err(input_error(at.message(
                    s.backend.as_ref().map(|b| b.span()),
                    &format!("unknown state backend {other:?}; use \"file\" or \"postgres\""),
                )))
            }
        },
    };

    let on_failure = match raw.deploy.as_ref().and_then(|d| d.on_failure.as_ref()) {
        Some(value) => OnFailure::parse(&at, value)?,
        None => OnFailure::Stop,
    };

    let allow_grant_changes = match raw.deploy.as_ref().and_then(|d| d.grant_changes.as_ref()) {
        None => false,
        Some(v) => match v.get_ref().as_str() {
            "ask" => false,
            "allow" => true,
            other => {
                return Err(input_error(at.message(
                    Some(v.span()),
                    &format!(
                        "grant_changes = {other:?} is not a choice; use \"ask\" (the default: a \
                         deploy that widens a phase's grants needs --approve-grants or a yes on a \
                         terminal) or \"allow\""
                    ),
                )))
            }
        },
    };

    Ok(Manifest {
        path: path.to_path_buf(),
        project_root: project_root.to_path_buf(),
        environments,
        pipeline,
        phases,
        state,
        history_max,
        on_failure,
        digest: crate::plugin::sha256_hex(text.as_bytes()),
        allow_grant_changes,
    })
}

fn build_phase(at: &Locator, root: &Path, spec: raw::RawPhase) -> anyhow::Result<PhaseSpec> {
    let plugin_ref = spec.plugin.get_ref().trim().to_string();
    let source = if let Some(name) = plugin_ref.strip_prefix("builtin:") {
        if !BUILTIN_PLUGINS.contains(&name) {
            return Err(input_error(at.message(
                Some(spec.plugin.span()),
                &format!(
                    "unknown built-in plugin {plugin_ref:?}; built-ins are: {}",
                    BUILTIN_PLUGINS.map(|b| format!("builtin:{b}")).join(", ")
                ),
            )));
        }
        PluginSource::Builtin(name.to_string())
    } else {
        let file = root.join(&plugin_ref);
        if !file.is_file() {
            return Err(input_error(at.message(
                Some(spec.plugin.span()),
                &format!(
                    "plugin file {plugin_ref:?} not found (looked for {}); build it first, or fix \
                     the path (relative to the manifest's directory)",
                    file.display()
                ),
            )));
        }
        PluginSource::File(file)
    };

    let mut limits = Limits::default();
    if let Some(t) = &spec.timeout {
        limits.timeout = parse_duration(t.get_ref())
            .map_err(|e| input_error(at.message(Some(t.span()), &format!("timeout: {e}"))))?;
        limits.timeout_text = t.get_ref().trim().to_string();
    }
    if let Some(m) = &spec.memory {
        limits.memory_bytes = parse_size(m.get_ref())
            .map_err(|e| input_error(at.message(Some(m.span()), &format!("memory: {e}"))))?;
        limits.memory_text = m.get_ref().trim().to_string();
    }

    let mut grants = Grants::default();
    let mut grant_locations = Vec::new();
    for (list, out, kind) in [
        (&spec.grants.read, &mut grants.read, "read"),
        (&spec.grants.write, &mut grants.write, "write"),
    ] {
        for p in list {
            let resolved = resolve_grant_path(root, p.get_ref()).map_err(|e| {
                input_error(at.message(
                    Some(p.span()),
                    &format!("{kind} grant {:?}: {e}", p.get_ref()),
                ))
            })?;
            grant_locations.push((resolved.clone(), at.position(p.span())));
            out.push(resolved);
        }
    }
    let mut env_locations = Vec::new();
    for name in &spec.grants.env {
        let ok = !name.get_ref().is_empty()
            && name
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(input_error(at.message(
                Some(name.span()),
                &format!("env grant {:?} is not a variable name", name.get_ref()),
            )));
        }
        env_locations.push((name.get_ref().clone(), at.position(name.span())));
        grants.env.push(name.get_ref().clone());
    }
    for (list, out, key) in [
        (&spec.grants.exec, &mut grants.exec, "exec"),
        (
            &spec.grants.exec_unconfined,
            &mut grants.exec_unconfined,
            "exec_unconfined",
        ),
    ] {
        for prog in list {
            let p = prog.get_ref();
            if p.is_empty() || p.contains('/') {
                return Err(input_error(at.message(
                    Some(prog.span()),
                    &format!(
                        "{key} grant {p:?} must be a program name looked up on PATH, not a path"
                    ),
                )));
            }
            out.push(p.clone());
        }
    }
    for entry in &spec.grants.net {
        let grant = NetGrant::parse(entry.get_ref()).map_err(|why| {
            input_error(at.message(
                Some(entry.span()),
                &format!("net grant {:?}: {why}", entry.get_ref()),
            ))
        })?;
        if !grants.net.contains(&grant) {
            grants.net.push(grant);
        }
    }
    if let Some(both) = spec
        .grants
        .exec_unconfined
        .iter()
        .find(|p| grants.exec.contains(p.get_ref()))
    {
        return Err(input_error(at.message(
            Some(both.span()),
            &format!(
                "{:?} is in both exec and exec_unconfined: keep it in exec (confined) unless it \
                 really needs everything this user can reach",
                both.get_ref()
            ),
        )));
    }

    Ok(PhaseSpec {
        plugin_ref,
        source,
        config: spec.config,
        grants,
        limits,
        grant_locations,
        env_locations,
    })
}

/// A read grant that does not exist fails its phase when the deploy reaches it, unless this
/// phase or one before it may write it (a build's output read by the push): refused at load
/// instead, so that `--dry-run` and `plugin` commands say so before anything runs.
fn check_read_grants_exist(
    pipeline: &[String],
    phases: &BTreeMap<String, PhaseSpec>,
) -> anyhow::Result<()> {
    let mut writable: Vec<&Path> = Vec::new();
    for name in pipeline {
        let Some(phase) = phases.get(name) else {
            continue;
        };
        writable.extend(phase.grants.write.iter().map(PathBuf::as_path));
        for read in &phase.grants.read {
            let missing = std::fs::symlink_metadata(read)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
            if missing && !writable.iter().any(|w| read.starts_with(w)) {
                let at = phase
                    .grant_locations
                    .iter()
                    .find(|(p, _)| p == read)
                    .map(|(_, at)| format!("{at}: "))
                    .unwrap_or_default();
                return Err(input_error(format!(
                    "{at}read grant {} of phase {name} does not exist, and no write grant of \
                     this phase or one before it covers it: create it, or remove it from the \
                     phase's grants",
                    read.display()
                )));
            }
        }
    }
    Ok(())
}

/// Resolve a grant path against the project root, lexically (it need not exist yet). `..` may
/// not climb above the root; absolute paths are taken as they are.
fn resolve_grant_path(root: &Path, written: &str) -> Result<PathBuf, String> {
    if written.trim().is_empty() {
        return Err("empty path".into());
    }
    let path = Path::new(written);
    if path.is_absolute() {
        return Ok(normalize(path));
    }
    let mut out = root.to_path_buf();
    let mut depth = 0usize;
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return Err(
                        "climbs out of the project root with '..'; grant a path inside \
                                the project, or an absolute path"
                            .into(),
                    );
                }
                depth -= 1;
                out.pop();
            }
            Component::Normal(part) => {
                depth += 1;
                out.push(part);
            }
            Component::RootDir | Component::Prefix(_) => unreachable!("relative path"),
        }
    }
    Ok(out)
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn unknown_key_hint(msg: &str) -> &'static str {
    if msg.starts_with("unknown field") {
        "\nsee docs/manifest.md for every key"
    } else {
        ""
    }
}

/// Turns byte spans into `file:line:column` for messages.
struct Locator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Locator<'_> {
    fn position(&self, span: Range<usize>) -> String {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{}:{line}:{col}", self.path.display())
    }

    fn message(&self, span: Option<Range<usize>>, msg: &str) -> String {
        match span {
            Some(span) => format!("{}: {msg}", self.position(span)),
            None => format!("{}: {msg}", self.path.display()),
        }
    }
}

#[cfg(test)]
mod tests;
