//! The manifest exactly as written: plain serde structs that refuse unknown keys, with spans kept
//! on every value a later check may complain about, so errors can point at the line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(
    expecting = "a stagecraft manifest: [environments.<name>] tables, [phases.<name>] tables, and optionally [pipeline], [state] and [deploy]"
)]
pub struct RawManifest {
    #[serde(default)]
    pub environments: BTreeMap<Spanned<String>, RawEnvironment>,
    #[serde(default)]
    pub pipeline: Option<RawPipeline>,
    #[serde(default)]
    pub phases: BTreeMap<Spanned<String>, RawPhase>,
    #[serde(default)]
    pub state: Option<RawState>,
    #[serde(default)]
    pub deploy: Option<RawDeploy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(
    expecting = "a [deploy] table with on_failure = \"stop\" or \"rollback\" and grant_changes = \"ask\" or \"allow\""
)]
pub struct RawDeploy {
    /// What a deploy does when a phase fails: `stop` (the default) or `rollback`.
    #[serde(default)]
    pub on_failure: Option<Spanned<String>>,
    /// Whether widened grants need consent: `ask` (the default) or `allow`.
    #[serde(default)]
    pub grant_changes: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(
    expecting = "an [environments.<name>] table, e.g. [environments.prod] with an optional vars = { KEY = \"value\" } and on_failure = \"stop\" or \"rollback\""
)]
pub struct RawEnvironment {
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// This environment's `[deploy] on_failure`.
    #[serde(default)]
    pub on_failure: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a [pipeline] table with phases = [\"build\", \"rollout\", ...]")]
pub struct RawPipeline {
    pub phases: Spanned<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a [phases.<name>] table with plugin = \"builtin:<name>\" or a .wasm path")]
pub struct RawPhase {
    pub plugin: Spanned<String>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub memory: Option<Spanned<String>>,
    #[serde(default)]
    pub grants: RawGrants,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(
    expecting = "a [phases.<name>.grants] table of lists: read, write, env, exec, exec_unconfined, net"
)]
pub struct RawGrants {
    #[serde(default)]
    pub read: Vec<Spanned<String>>,
    #[serde(default)]
    pub write: Vec<Spanned<String>>,
    #[serde(default)]
    pub env: Vec<Spanned<String>>,
    #[serde(default)]
    pub exec: Vec<Spanned<String>>,
    #[serde(default)]
    pub exec_unconfined: Vec<Spanned<String>>,
    /// Origins `scheme://host[:port]` the phase may reach (see plugin::net::grant).
    #[serde(default)]
    pub net: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a [state] table with backend = \"file\" or \"postgres\"")]
pub struct RawState {
    /// `file` (the default) or `postgres`.
    #[serde(default)]
    pub backend: Option<Spanned<String>>,
    /// The environment variable holding the PostgreSQL URL (never the URL itself).
    #[serde(default)]
    pub url_env: Option<Spanned<String>>,
    /// Releases kept per environment after each deploy or rollback (default: all).
    #[serde(default)]
    pub history_max: Option<Spanned<i64>>,
}
