//! The plan a release records ([`crate::state::Plan`]): built from the manifest and the loaded
//! plugins' digests just before the release is created.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{LoadedPhases, Runner};
use crate::manifest::{Manifest, PhaseSpec};
use crate::plugin::Grants;
use crate::state::{Plan, PlannedGrants, PlannedPhase};

/// The plan of `manifest`, each configured phase's digest from `digest` (a phase it gives
/// `None` for is left out).
fn plan_with(
    manifest: &Manifest,
    mut digest: impl FnMut(&str, &PhaseSpec) -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Plan> {
    let mut phases = Vec::new();
    for name in &manifest.pipeline {
        let Some(spec) = manifest.phases.get(name) else {
            continue;
        };
        let Some(digest) = digest(name, spec)? else {
            continue;
        };
        phases.push(PlannedPhase {
            name: name.clone(),
            plugin: spec.plugin_ref.clone(),
            digest,
            config: spec.config.clone(),
            grants: planned_grants(&spec.grants, &manifest.project_root),
            timeout: spec.limits.timeout_text.clone(),
            memory: spec.limits.memory_text.clone(),
        });
    }
    Ok(Plan {
        manifest_digest: manifest.digest.clone(),
        phases,
        grant_changes_allowed: manifest.allow_grant_changes,
    })
}

/// The plan of `manifest` with the components `loaded` holds (what a release records).
pub fn plan_of<R: Runner>(
    manifest: &Manifest,
    loaded: &LoadedPhases<R::Loaded>,
    runner: &R,
) -> Plan {
    plan_with(manifest, |name, _| {
        Ok(loaded.by_phase.get(name).map(|l| runner.digest(l)))
    })
    .expect("digests of loaded plugins are always known")
}

/// The plan `manifest` would record, with digests read from the components without compiling
/// them (for `stagecraft plan` and dry runs).
pub fn plan_of_manifest(manifest: &Manifest) -> anyhow::Result<Plan> {
    plan_with(manifest, |name, spec| {
        crate::plugin::component_digest(&spec.source)
            .map(Some)
            .map_err(|e| {
                crate::error::input_error(format!(
                    "phase {name}: plugin {} cannot be read: {e:#}",
                    spec.plugin_ref
                ))
            })
    })
}

/// The plan `manifest` would record with its digests left empty: enough to compare grants
/// (grant consent), without reading every component file again on each deploy.
pub fn grants_plan_of_manifest(manifest: &Manifest) -> Plan {
    plan_with(manifest, |_, _| Ok(Some(String::new()))).expect("no digest is read")
}

/// Grants as a person reads them: paths relative to the project root when inside it.
pub fn planned_grants(grants: &Grants, root: &Path) -> PlannedGrants {
    let path = |p: &std::path::PathBuf| match p.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => p.display().to_string(),
    };
    PlannedGrants {
        read: grants.read.iter().map(path).collect(),
        write: grants.write.iter().map(path).collect(),
        env: grants.env.clone(),
        exec: grants.exec.clone(),
        exec_unconfined: grants.exec_unconfined.clone(),
        net: grants.net.iter().map(ToString::to_string).collect(),
    }
}

/// How one phase changes from the live release's plan to the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhaseChange {
    pub name: String,
    /// `added` (not in the live plan), `removed` (not in the new one), `changed` or `same`.
    pub change: &'static str,
    /// The plugin and digest before and after (`None` on the side that has no such phase).
    pub plugin_before: Option<String>,
    pub digest_before: Option<String>,
    pub plugin_after: Option<String>,
    pub digest_after: Option<String>,
    /// Config keys: `(key, before, after)`, `None` where absent.
    pub config: Vec<(String, Option<String>, Option<String>)>,
    /// Per grant kind, entries the new plan adds.
    pub grants_added: BTreeMap<&'static str, Vec<String>>,
    /// Per grant kind, entries it drops.
    pub grants_removed: BTreeMap<&'static str, Vec<String>>,
    /// `(limit, before, after)` for `timeout` and `memory` when they differ.
    pub limits: Vec<(&'static str, String, String)>,
    /// What each plugin's `describe()` said, when the plugin changed and it was asked (see
    /// [`PluginVersion`]); `None` when not asked or not known.
    pub version_before: Option<PluginVersion>,
    pub version_after: Option<PluginVersion>,
}

/// A plugin's name and version as its `describe()` says them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginVersion {
    pub name: String,
    pub version: String,
}

impl PhaseChange {
    /// Whether the phase gains a power it did not have: any grant entry added (a new phase's
    /// grants count too).
    pub fn widens(&self) -> bool {
        self.grants_added.values().any(|v| !v.is_empty())
    }
}

/// From the live release's plan (`None`: no live release, or one from before plans) to `new`.
pub fn diff(live: Option<&Plan>, new: &Plan) -> Vec<PhaseChange> {
    let empty = PlannedGrants::default();
    let find = |plan: Option<&Plan>, name: &str| -> Option<PlannedPhase> {
        plan.and_then(|p| p.phases.iter().find(|ph| ph.name == name).cloned())
    };
    let mut names: Vec<String> = new.phases.iter().map(|p| p.name.clone()).collect();
    for old in live.map(|p| p.phases.as_slice()).unwrap_or_default() {
        if !names.contains(&old.name) {
            names.push(old.name.clone());
        }
    }
    names
        .into_iter()
        .map(|name| {
            let before = find(live, &name);
            let after = find(Some(new), &name);
            let grants_before = before.as_ref().map_or(&empty, |p| &p.grants);
            let grants_after = after.as_ref().map_or(&empty, |p| &p.grants);
            let mut grants_added = BTreeMap::new();
            let mut grants_removed = BTreeMap::new();
            for ((kind, old), (_, now)) in
                grants_before.kinds().into_iter().zip(grants_after.kinds())
            {
                let added: Vec<String> = now.iter().filter(|e| !old.contains(e)).cloned().collect();
                let removed: Vec<String> =
                    old.iter().filter(|e| !now.contains(e)).cloned().collect();
                if !added.is_empty() {
                    grants_added.insert(kind, added);
                }
                if !removed.is_empty() {
                    grants_removed.insert(kind, removed);
                }
            }
            let config_before = before
                .as_ref()
                .map(|p| p.config.clone())
                .unwrap_or_default();
            let config_after = after.as_ref().map(|p| p.config.clone()).unwrap_or_default();
            let mut keys: Vec<&String> = config_before.keys().chain(config_after.keys()).collect();
            keys.sort();
            keys.dedup();
            let config = keys
                .into_iter()
                .filter(|k| config_before.get(*k) != config_after.get(*k))
                .map(|k| {
                    (
                        k.clone(),
                        config_before.get(k).cloned(),
                        config_after.get(k).cloned(),
                    )
                })
                .collect::<Vec<_>>();
            let mut limits = Vec::new();
            if let (Some(b), Some(a)) = (&before, &after) {
                if b.timeout != a.timeout {
                    limits.push(("timeout", b.timeout.clone(), a.timeout.clone()));
                }
                if b.memory != a.memory {
                    limits.push(("memory", b.memory.clone(), a.memory.clone()));
                }
            }
            let change = match (&before, &after) {
                (None, _) => "added",
                (_, None) => "removed",
                (Some(b), Some(a))
                    if b.plugin == a.plugin
                        && b.digest == a.digest
                        && config.is_empty()
                        && grants_added.is_empty()
                        && grants_removed.is_empty()
                        && limits.is_empty() =>
                {
                    "same"
                }
                _ => "changed",
            };
            PhaseChange {
                change,
                plugin_before: before.as_ref().map(|p| p.plugin.clone()),
                digest_before: before.as_ref().map(|p| p.digest.clone()),
                plugin_after: after.as_ref().map(|p| p.plugin.clone()),
                digest_after: after.as_ref().map(|p| p.digest.clone()),
                config,
                grants_added,
                grants_removed,
                limits,
                name,
                version_before: None,
                version_after: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str, digest: &str, exec: &[&str]) -> PlannedPhase {
        PlannedPhase {
            name: name.into(),
            plugin: "builtin:exec".into(),
            digest: digest.into(),
            config: BTreeMap::from([("command".to_string(), "make".to_string())]),
            grants: PlannedGrants {
                exec: exec.iter().map(|s| s.to_string()).collect(),
                ..PlannedGrants::default()
            },
            timeout: "10m".into(),
            memory: "512MiB".into(),
        }
    }

    fn plan(phases: Vec<PlannedPhase>) -> Plan {
        Plan {
            manifest_digest: "m".into(),
            phases,
            grant_changes_allowed: false,
        }
    }

    #[test]
    fn an_unchanged_plan_is_all_same_and_widens_nothing() {
        let p = plan(vec![phase("build", "a", &["make"])]);
        let changes = diff(Some(&p), &p);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].change, "same");
        assert!(!changes[0].widens());
    }

    #[test]
    fn plugin_config_grant_and_limit_changes_are_named() {
        let live = plan(vec![
            phase("build", "a", &["make"]),
            phase("push", "p", &[]),
        ]);
        let mut build = phase("build", "b", &["make", "curl"]);
        build.config.insert("command".into(), "make all".into());
        build.timeout = "20m".into();
        let new = plan(vec![build, phase("verify", "v", &[])]);
        let changes = diff(Some(&live), &new);
        let names: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| (c.name.as_str(), c.change))
            .collect();
        assert_eq!(
            names,
            [
                ("build", "changed"),
                ("verify", "added"),
                ("push", "removed")
            ]
        );
        let build = &changes[0];
        assert_eq!(build.digest_before.as_deref(), Some("a"));
        assert_eq!(build.digest_after.as_deref(), Some("b"));
        assert_eq!(
            build.config,
            [(
                "command".to_string(),
                Some("make".to_string()),
                Some("make all".to_string())
            )]
        );
        assert_eq!(build.grants_added["exec"], ["curl"]);
        assert!(build.widens());
        assert_eq!(
            build.limits,
            [("timeout", "10m".to_string(), "20m".to_string())]
        );
        // Narrowing is not widening.
        let narrower = diff(Some(&new), &live);
        assert!(!narrower[0].widens());
        assert_eq!(narrower[0].grants_removed["exec"], ["curl"]);
    }

    #[test]
    fn without_a_live_plan_every_phase_is_added_with_its_grants() {
        let new = plan(vec![phase("build", "a", &["make"])]);
        let changes = diff(None, &new);
        assert_eq!(changes[0].change, "added");
        assert!(changes[0].widens());
    }
}
