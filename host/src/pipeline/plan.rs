//! The plan a release records ([`crate::state::Plan`]): built from the manifest and the loaded
//! plugins' digests just before the release is created.

use std::path::Path;

use super::{LoadedPhases, Runner};
use crate::manifest::Manifest;
use crate::plugin::Grants;
use crate::state::{Plan, PlannedGrants, PlannedPhase};

/// The plan of `manifest` with the components `loaded` holds.
pub fn plan_of<R: Runner>(
    manifest: &Manifest,
    loaded: &LoadedPhases<R::Loaded>,
    runner: &R,
) -> Plan {
    let phases = manifest
        .pipeline
        .iter()
        .filter_map(|name| {
            let spec = manifest.phases.get(name)?;
            let digest = loaded.by_phase.get(name).map(|l| runner.digest(l))?;
            Some(PlannedPhase {
                name: name.clone(),
                plugin: spec.plugin_ref.clone(),
                digest,
                config: spec.config.clone(),
                grants: planned_grants(&spec.grants, &manifest.project_root),
                timeout: spec.limits.timeout_text.clone(),
                memory: spec.limits.memory_text.clone(),
            })
        })
        .collect();
    Plan {
        manifest_digest: manifest.digest.clone(),
        phases,
    }
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
