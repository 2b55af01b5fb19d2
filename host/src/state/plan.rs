//! A release's plan: what it ran and with which powers. The manifest's digest and, per phase,
//! the plugin as written, its component's sha256, the config, the grants and the limits as the
//! manifest resolved them. Recorded in the release when it is created; component bytes are not
//! part of it (they are kept elsewhere, content-addressed).
//!
//! Releases from before plans existed (and files of the Go tool) have none and read as before.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A release's plan as its record holds it: compact JSON on one line, even inside the state
/// file's pretty text, where indenting every digest, grant and limit on a line of its own would
/// double what a plan costs each release (docs/performance.md, "Plans").
pub(super) fn one_line<S: serde::Serializer>(
    plan: &Option<Plan>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::Error;
    match plan {
        Some(plan) => {
            let text = serde_json::to_string(plan).map_err(S::Error::custom)?;
            serde_json::value::RawValue::from_string(text)
                .map_err(S::Error::custom)?
                .serialize(serializer)
        }
        None => serializer.serialize_none(),
    }
}

/// What a release ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// sha256 of the manifest file, hex.
    pub manifest_digest: String,
    /// The configured phases, in pipeline order (a phase without a plugin is not listed).
    pub phases: Vec<PlannedPhase>,
    /// The manifest said `[deploy] grant_changes = "allow"`. A later deploy honours that setting
    /// only when the live release's plan has it too, so the change that turns it on cannot
    /// also widen grants unasked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grant_changes_allowed: bool,
}

/// One phase of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedPhase {
    pub name: String,
    /// As written in the manifest: `builtin:exec`, `plugins/rollout.wasm`.
    pub plugin: String,
    /// sha256 of the component, hex.
    pub digest: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "PlannedGrants::is_empty")]
    pub grants: PlannedGrants,
    /// As written (`10m`, `512MiB`), or the defaults.
    pub timeout: String,
    pub memory: String,
}

/// A phase's grants: paths relative to the project root when inside it (`.`, `dist`), else
/// absolute; `net` entries normalized (`https://registry.example.com:443`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedGrants {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec_unconfined: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<String>,
}

impl PlannedGrants {
    pub fn is_empty(&self) -> bool {
        self.kinds().iter().all(|(_, list)| list.is_empty())
    }

    /// Each kind with its entries, in the manifest's order of keys.
    pub fn kinds(&self) -> [(&'static str, &Vec<String>); 6] {
        [
            ("read", &self.read),
            ("write", &self.write),
            ("env", &self.env),
            ("exec", &self.exec),
            ("exec_unconfined", &self.exec_unconfined),
            ("net", &self.net),
        ]
    }
}
