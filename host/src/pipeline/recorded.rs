//! What a rollback runs: by default its target's recorded plan (the same components, config,
//! grants and limits), else today's manifest. See spec/cli.md, "What a rollback runs".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::input_error;
use crate::manifest::{Manifest, PhaseSpec};
use crate::plugin::net::NetGrant;
use crate::plugin::{Grants, Limits, PluginSource};
use crate::state::{PlannedPhase, Release, StateError, StateStore};

/// Which pipeline a rollback runs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackPipeline {
    /// The target's recorded plan.
    Recorded,
    /// Today's manifest, because `--with-current-pipeline` said so.
    CurrentByChoice,
    /// Today's manifest, because the target was made before plans were recorded.
    CurrentForLackOfPlan,
}

impl RollbackPipeline {
    /// Decide for `target`.
    pub fn choose(target: &Release, with_current_pipeline: bool) -> RollbackPipeline {
        if with_current_pipeline {
            RollbackPipeline::CurrentByChoice
        } else if target.plan.is_some() {
            RollbackPipeline::Recorded
        } else {
            RollbackPipeline::CurrentForLackOfPlan
        }
    }

    /// The one line that says what runs (stderr, before anything runs).
    pub fn announcement(&self, target: &Release) -> String {
        let version = crate::output::terminal::escape_controls(&target.version);
        match self {
            RollbackPipeline::Recorded => format!(
                "Running the recorded plan of release {} ({version}): its components, config, \
                 grants and limits (--with-current-pipeline runs today's manifest instead)",
                target.id
            ),
            RollbackPipeline::CurrentByChoice => format!(
                "Running today's manifest with the version of release {} ({version}), not its \
                 recorded plan (--with-current-pipeline)",
                target.id
            ),
            RollbackPipeline::CurrentForLackOfPlan => format!(
                "Release {} ({version}) has no recorded plan (it was made before plans were \
                 recorded): running today's manifest with its version",
                target.id
            ),
        }
    }
}

/// The manifest `target`'s recorded plan describes: today's manifest (environments and their
/// vars, state, history, project root) with the target's pipeline and, per phase, the plugin,
/// component, config, grants and limits it ran. Every component comes from `store` (checked
/// against its digest); a built-in whose digest this binary still has is taken from the binary,
/// and a plugin file that still holds the recorded component is read (a release from before
/// components were kept).
pub fn manifest_of_plan(
    today: &Manifest,
    target: &Release,
    store: &dyn StateStore,
) -> anyhow::Result<Manifest> {
    let plan = target
        .plan
        .as_ref()
        .expect("only a release with a plan is run by its plan");
    let mut phases = BTreeMap::new();
    // One copy of each component, however many phases run it.
    let mut by_digest: BTreeMap<&str, PluginSource> = BTreeMap::new();
    for planned in &plan.phases {
        let source = match by_digest.get(planned.digest.as_str()) {
            Some(PluginSource::Stored { bytes, .. }) => PluginSource::Stored {
                name: planned.plugin.clone(),
                bytes: Arc::clone(bytes),
            },
            _ => recorded_source(planned, target, &today.project_root, store)?,
        };
        by_digest.insert(&planned.digest, source.clone());
        phases.insert(
            planned.name.clone(),
            phase_spec(planned, source, target, &today.project_root)?,
        );
    }
    // Every release with a plan records its pipeline; today's is only a fallback.
    let mut pipeline = if target.pipeline.is_empty() {
        today.pipeline.clone()
    } else {
        target.pipeline.clone()
    };
    for planned in &plan.phases {
        if !pipeline.contains(&planned.name) {
            pipeline.push(planned.name.clone());
        }
    }
    Ok(Manifest {
        pipeline,
        phases,
        digest: plan.manifest_digest.clone(),
        allow_grant_changes: plan.grant_changes_allowed,
        ..today.clone()
    })
}

/// Where a planned phase's component comes from, already checked against the plan's digest
/// (`target` recorded it; messages name it).
pub fn recorded_source(
    planned: &PlannedPhase,
    target: &Release,
    root: &Path,
    store: &dyn StateStore,
) -> anyhow::Result<PluginSource> {
    let digest = &planned.digest;
    if let Some(name) = planned.plugin.strip_prefix("builtin:") {
        let builtin = PluginSource::Builtin(name.to_string());
        if crate::plugin::component_digest(&builtin).ok().as_ref() == Some(digest) {
            return Ok(builtin);
        }
    }
    let stored = |bytes: Vec<u8>| PluginSource::Stored {
        name: planned.plugin.clone(),
        bytes: Arc::from(bytes),
    };
    if let Some(bytes) = store.component(digest)? {
        return Ok(stored(bytes));
    }
    if !planned.plugin.starts_with("builtin:") {
        let file = PluginSource::File(root.join(&planned.plugin));
        if let Ok(bytes) = crate::plugin::component_bytes(&file) {
            if crate::plugin::sha256_hex(&bytes) == *digest {
                return Ok(stored(bytes.into_owned()));
            }
        }
    }
    let elsewhere = if planned.plugin.starts_with("builtin:") {
        "this stagecraft's built-in of that name is another build"
    } else {
        "no plugin file holds any more"
    };
    Err(input_error(format!(
        "release {} ran phase {} with {} (sha256 {digest}), which {} does not hold (the release \
         was made before components were kept, or the component was removed by hand) and \
         {elsewhere}; roll back with --with-current-pipeline to run today's manifest instead",
        target.id,
        planned.name,
        crate::output::terminal::escape_controls(&planned.plugin),
        store.describe()
    )))
}

/// A planned phase as the pipeline runs it.
fn phase_spec(
    planned: &PlannedPhase,
    source: PluginSource,
    target: &Release,
    root: &Path,
) -> anyhow::Result<PhaseSpec> {
    let unreadable = |what: &str, why: String| -> anyhow::Error {
        StateError::new(format!(
            "the recorded plan of release {} has a {what} for phase {} that cannot be read \
             ({why}); roll back with --with-current-pipeline to run today's manifest instead",
            target.id, planned.name
        ))
        .into()
    };
    let limits = Limits {
        timeout: crate::manifest::units::parse_duration(&planned.timeout)
            .map_err(|e| unreadable("timeout", e))?,
        timeout_text: planned.timeout.clone(),
        memory_bytes: crate::manifest::units::parse_size(&planned.memory)
            .map_err(|e| unreadable("memory limit", e))?,
        memory_text: planned.memory.clone(),
        ..Limits::default()
    };
    let path = |p: &String| -> PathBuf {
        if p == "." {
            root.to_path_buf()
        } else {
            root.join(p) // An absolute path stays as it is.
        }
    };
    let g = &planned.grants;
    let grants = Grants {
        read: g.read.iter().map(path).collect(),
        write: g.write.iter().map(path).collect(),
        env: g.env.clone(),
        exec: g.exec.clone(),
        exec_unconfined: g.exec_unconfined.clone(),
        net: g
            .net
            .iter()
            .map(|n| NetGrant::parse(n).map_err(|e| unreadable("net grant", e)))
            .collect::<anyhow::Result<_>>()?,
    };
    // Grant checks point here when they refuse a recorded grant.
    let at = format!("the recorded plan of release {}", target.id);
    Ok(PhaseSpec {
        plugin_ref: planned.plugin.clone(),
        source,
        config: planned.config.clone(),
        grant_locations: grants
            .read
            .iter()
            .chain(&grants.write)
            .map(|p| (p.clone(), at.clone()))
            .collect(),
        env_locations: grants.env.iter().map(|e| (e.clone(), at.clone())).collect(),
        grants,
        limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{FileStore, ReleaseId, StateStore};

    /// A manifest whose phases exercise every kind of recorded value: a built-in and a file
    /// plugin, config, every grant kind (a path inside the project, the project itself, one
    /// outside it), and limits.
    fn today(root: &Path) -> Manifest {
        std::fs::create_dir_all(root.join("plugins")).unwrap();
        std::fs::create_dir_all(root.join("dist")).unwrap();
        let noop = crate::plugin::component_bytes(&PluginSource::Builtin("noop".into())).unwrap();
        std::fs::write(root.join("plugins/rollout.wasm"), &noop[..]).unwrap();
        let text = r#"
[environments.prod]
vars = { region = "eu" }

[phases.build]
plugin = "builtin:exec"
config = { command = "make {{version}}" }
timeout = "90s"
memory = "256MiB"
grants = { read = ["."], write = ["dist", "/tmp"], env = ["HOME"], exec = ["make"], net = ["https://registry.example.com"] }

[phases.rollout]
plugin = "plugins/rollout.wasm"
"#;
        crate::manifest::parse(text, &root.join("stagecraft.toml"), root).unwrap()
    }

    fn release_with(plan: crate::state::Plan, pipeline: Vec<String>) -> Release {
        let mut state = crate::state::State::default();
        let release = state
            .push_release(
                "prod",
                "v2",
                "abc",
                &pipeline,
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
        release.plan = Some(plan);
        release.pipeline = pipeline;
        release.clone()
    }

    #[test]
    fn a_recorded_plan_runs_as_exactly_the_plan_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let today = today(&root);
        let plan = crate::pipeline::plan::plan_of_manifest(&today).unwrap();
        let target = release_with(plan.clone(), today.pipeline.clone());
        // The plugin file changes after the release: the plan still runs what was recorded.
        std::fs::write(root.join("plugins/rollout.wasm"), b"changed").unwrap();
        let store = FileStore::open(root.join(".stagecraft/releases.json")).unwrap();
        let rollout = plan.phases.iter().find(|p| p.name == "rollout").unwrap();
        let noop = crate::plugin::component_bytes(&PluginSource::Builtin("noop".into())).unwrap();
        store.put_component(&rollout.digest, &noop).unwrap();

        let recorded = manifest_of_plan(&today, &target, &store).unwrap();
        assert_eq!(recorded.pipeline, today.pipeline);
        assert_eq!(recorded.environments["prod"].vars["region"], "eu");
        assert_eq!(
            crate::pipeline::plan::plan_of_manifest(&recorded).unwrap(),
            plan,
            "what the recorded manifest would record is the recorded plan"
        );
        let build = &recorded.phases["build"];
        assert_eq!(build.source, PluginSource::Builtin("exec".into()));
        assert_eq!(build.grants.read, vec![root.clone()]);
        assert_eq!(
            build.grants.write,
            [root.join("dist"), PathBuf::from("/tmp")]
        );
        assert_eq!(build.limits.timeout, std::time::Duration::from_secs(90));
        assert_eq!(build.limits.memory_bytes, 256 << 20);
        assert!(matches!(
            &recorded.phases["rollout"].source,
            PluginSource::Stored { name, bytes } if name == "plugins/rollout.wasm" && bytes[..] == noop[..]
        ));
    }

    #[test]
    fn a_component_nobody_holds_any_more_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let today = today(&root);
        let plan = crate::pipeline::plan::plan_of_manifest(&today).unwrap();
        let target = release_with(plan, today.pipeline.clone());
        let store = FileStore::open(root.join(".stagecraft/releases.json")).unwrap();
        // Before components were kept, the plugin file itself still serves.
        let recorded = manifest_of_plan(&today, &target, &store).unwrap();
        assert!(matches!(
            recorded.phases["rollout"].source,
            PluginSource::Stored { .. }
        ));
        // Once the file changes, nothing holds the component.
        std::fs::write(root.join("plugins/rollout.wasm"), b"changed").unwrap();
        let err = manifest_of_plan(&today, &target, &store)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "release {} ran phase rollout with plugins/rollout.wasm (sha256 ",
                target.id
            )),
            "{err}"
        );
        assert!(
            err.ends_with("roll back with --with-current-pipeline to run today's manifest instead"),
            "{err}"
        );
        let _ = ReleaseId::parse(target.id.as_str()).unwrap();
    }
}
