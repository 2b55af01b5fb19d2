//! A rollback runs what deployed its target (spec/cli.md, "What a rollback runs"): the
//! components its plan recorded, kept by the state (spec/state.md, "Components"), with the same
//! config, grants and limits. `--with-current-pipeline` runs today's manifest instead, and so does
//! a target from before plans, saying so. Components survive `state migrate` both ways, and
//! retention removes only those no kept release runs.

use std::path::{Path, PathBuf};

use serde_json::Value;
use stagecraft_tests::pg::PgServer;
use stagecraft_tests::{stagecraft, wasm_plugins_dir, Run};

/// A project whose `rollout` phase runs the plugin file `plugins/rollout.wasm`, which the test
/// swaps between releases: `builtin:exec`'s component (it runs `echo <marker>`, the output that
/// says which plugin ran) or `builtin:http-check`'s (which fails on that config: "broken").
struct Project {
    dir: tempfile::TempDir,
    /// `--state-file <path>` or `--state-url <url>`, when not the default file.
    state: Vec<String>,
}

const MARKER: &str = "rolled-out-by-the-exec-plugin";

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        std::fs::write(
            dir.path().join("stagecraft.toml"),
            format!(
                "[environments.prod]\n\
                 [phases.build]\nplugin = \"builtin:noop\"\n\
                 [phases.rollout]\nplugin = \"plugins/rollout.wasm\"\n\
                 config = {{ command = \"echo {MARKER}\" }}\n\
                 grants = {{ exec = [\"echo\"] }}\n\
                 [state]\nhistory_max = 100\n"
            ),
        )
        .unwrap();
        let p = Project {
            dir,
            state: Vec::new(),
        };
        p.plugin("exec");
        p
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Make `plugins/rollout.wasm` the component of `builtin:<name>`.
    fn plugin(&self, name: &str) {
        std::fs::copy(builtin(name), self.path().join("plugins/rollout.wasm")).unwrap();
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = stagecraft(self.path());
        cmd.args(args).args(&self.state);
        cmd.output().unwrap().into()
    }

    fn deploy(&self, version: &str) -> Run {
        self.run(&["deploy", "--env", "prod", "--version", version])
    }

    fn rollback(&self, to: &str, extra: &[&str]) -> Run {
        let mut args = vec!["rollback", "--env", "prod", "--to-release", to];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `prod`'s releases as JSON, newest first.
    fn releases(&self) -> Vec<Value> {
        let out = self.run(&["releases", "list", "--env", "prod", "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn newest(&self) -> Value {
        self.releases()[0].clone()
    }

    /// The ids of v1 and v2 after deploying both with the exec plugin, then v3 after breaking
    /// the plugin file (v3 fails in rollout).
    fn deploy_then_break(&self) -> (String, String) {
        for v in ["v1", "v2"] {
            let out = self.deploy(v);
            assert_eq!(out.code, 0, "{out:?}");
        }
        let ids: Vec<String> = self
            .releases()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        self.plugin("http-check");
        let out = self.deploy("v3");
        assert_eq!(out.code, 2, "the broken plugin fails: {out:?}");
        assert!(out.stderr.contains("config.url is missing"), "{out:?}");
        (ids[1].clone(), ids[0].clone())
    }
}

fn builtin(name: &str) -> PathBuf {
    wasm_plugins_dir().join(format!("builtin/{name}.wasm"))
}

fn sha256(path: &Path) -> String {
    stagecraft::plugin::sha256_hex(&std::fs::read(path).unwrap())
}

/// The rollout phase's record in a release (JSON).
fn rollout(release: &Value) -> Value {
    release["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rollout")
        .unwrap()
        .clone()
}

#[test]
fn a_rollback_runs_the_plugin_its_target_ran_not_todays() {
    let p = Project::new();
    let (v1, v2) = p.deploy_then_break();
    let exec = sha256(&builtin("exec"));

    let out = p.rollback(&v2, &[]);
    assert_eq!(out.code, 0, "v2's plugin runs, not the broken one: {out:?}");
    assert!(
        out.stderr.contains(&format!(
            "Running the recorded plan of release {v2} (v2): its components, config, grants and \
             limits (--with-current-pipeline runs today's manifest instead)"
        )),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains(&format!("[rollout plugins/rollout.wasm] info: {MARKER}")),
        "the exec plugin's output: {out:?}"
    );
    let rolled_back = p.newest();
    assert_eq!(rolled_back["operation"], "rollback");
    assert_eq!(rolled_back["plan_of"], v2.as_str());
    assert_eq!(rollout(&rolled_back)["plugin_digest"], exec.as_str());
    // Its plan is v2's, which `releases show` says.
    let v2_record = &p.releases()[2];
    assert_eq!(v2_record["id"], v2.as_str());
    assert_eq!(rolled_back["plan"], v2_record["plan"]);
    let shown = p.run(&["releases", "show", rolled_back["id"].as_str().unwrap()]);
    assert!(
        shown.stdout.contains("; the recorded plan of ") && shown.stdout.contains(&v2),
        "{shown:?}"
    );

    // --with-current-pipeline runs today's manifest: the broken plugin.
    let out = p.rollback(&v1, &["--with-current-pipeline"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "Running today's manifest with the version of release {v1} (v1), not its recorded \
             plan (--with-current-pipeline)"
        )),
        "{out:?}"
    );
    assert!(out.stderr.contains("config.url is missing"), "{out:?}");
    let failed = p.newest();
    assert!(failed["plan_of"].is_null(), "{failed}");
    assert_eq!(
        rollout(&failed)["plugin_digest"],
        sha256(&builtin("http-check")).as_str()
    );

    // The dry run shows the recorded plan and writes nothing.
    let before = p.releases().len();
    let out = p.rollback(&v1, &["--dry-run"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("Running the recorded plan of release"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("  rollout       plugins/rollout.wasm"),
        "{out:?}"
    );
    assert_eq!(p.releases().len(), before);
}

#[test]
fn a_release_from_before_plans_rolls_back_with_todays_manifest_and_says_so() {
    let p = Project::new();
    for v in ["v1", "v2"] {
        assert_eq!(p.deploy(v).code, 0);
    }
    // Take v1's plan out of its record, as a release written before plans has none.
    let path = p.path().join(".stagecraft/releases.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let v1 = state["releases"][0].as_object_mut().unwrap();
    assert!(v1.remove("plan").is_some());
    let v1 = v1["id"].as_str().unwrap().to_string();
    std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();

    let out = p.rollback(&v1, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let said: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("no recorded plan"))
        .collect();
    assert_eq!(
        said,
        [format!(
            "Release {v1} (v1) has no recorded plan (it was made before plans were recorded): \
             running today's manifest with its version"
        )],
        "{out:?}"
    );
    let rolled_back = p.newest();
    assert!(rolled_back["plan_of"].is_null());
    assert!(!rolled_back["plan"].is_null(), "it records the plan it ran");
}

/// Prune to the newest releases: the components only removed releases ran go, the others stay,
/// and a rollback to a kept release still runs its component after the plugin file changed.
#[test]
fn retention_removes_only_components_no_kept_release_runs() {
    let p = Project::new();
    let components = p.path().join(".stagecraft/releases.components");
    let kept = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&components)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let wasm = |name: &str| format!("{}.wasm", sha256(&builtin(name)));
    // v1 runs another plugin (a fixture built against the first contract) in rollout; v2, v3
    // and v4 run exec.
    let old = wasm_plugins_dir().join("fixtures/contract-0-1-0.wasm");
    std::fs::copy(&old, p.path().join("plugins/rollout.wasm")).unwrap();
    let out = p.deploy("v1");
    assert_eq!(out.code, 0, "{out:?}");
    p.plugin("exec");
    for v in ["v2", "v3", "v4"] {
        assert_eq!(p.deploy(v).code, 0);
    }
    let mut all = vec![wasm("noop"), format!("{}.wasm", sha256(&old)), wasm("exec")];
    all.sort();
    assert_eq!(kept(), all, "each kept once");

    let out = p.run(&["releases", "prune", "--env", "prod", "--keep", "2"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("Removed 1 kept component that no release in the history runs"),
        "{out:?}"
    );
    let mut needed = vec![wasm("noop"), wasm("exec")];
    needed.sort();
    assert_eq!(kept(), needed);

    // The kept releases still roll back to what they ran.
    let v3 = p.releases()[1]["id"].as_str().unwrap().to_string();
    p.plugin("http-check");
    let out = p.rollback(&v3, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains(MARKER), "{out:?}");
}

/// File -> PostgreSQL -> file: the components travel with the history, and a rollback on each
/// store runs the recorded component after the plugin file changed.
#[test]
fn components_survive_state_migrate_both_ways() {
    let server = PgServer::start();
    let url = server.create_database("rollback_plans");
    let mut p = Project::new();
    let (v1, v2) = p.deploy_then_break();

    let out = p.run(&["state", "migrate", "--to", &url]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("Copied 3 components the releases ran ("),
        "noop, exec and http-check: {out:?}"
    );
    // The file store is gone: only PostgreSQL holds the components now.
    std::fs::remove_dir_all(p.path().join(".stagecraft")).unwrap();
    p.state = vec!["--state-url".into(), url.clone()];
    let out = p.rollback(&v2, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains(MARKER), "{out:?}");

    let back = p.path().join("elsewhere/releases.json");
    let out = p.run(&["state", "migrate", "--to", back.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("Copied 3 components the releases ran ("),
        "{out:?}"
    );
    assert!(p
        .path()
        .join("elsewhere/releases.components")
        .join(format!("{}.wasm", sha256(&builtin("exec"))))
        .is_file());
    drop(server); // Nothing needs PostgreSQL any more.
    p.state = vec!["--state-file".into(), back.to_str().unwrap().to_string()];
    let out = p.rollback(&v1, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains(MARKER), "{out:?}");
}

/// A component that is nowhere any more (removed by hand, and the plugin file changed): the
/// rollback is refused before anything is recorded, naming the way out.
#[test]
fn a_component_kept_nowhere_is_refused_with_the_way_out() {
    let p = Project::new();
    let (_, v2) = p.deploy_then_break();
    let exec = sha256(&builtin("exec"));
    std::fs::remove_file(
        p.path()
            .join(".stagecraft/releases.components")
            .join(format!("{exec}.wasm")),
    )
    .unwrap();
    let before = p.releases().len();
    let out = p.rollback(&v2, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "release {v2} ran phase rollout with plugins/rollout.wasm (sha256 {exec}), which \
             state file "
        )),
        "{out:?}"
    );
    assert!(
        out.stderr
            .trim_end()
            .ends_with("roll back with --with-current-pipeline to run today's manifest instead"),
        "{out:?}"
    );
    assert_eq!(p.releases().len(), before, "nothing recorded");
}

/// A failed deploy rolled back automatically runs the live release's recorded plan, so the
/// plugin that broke the deploy does not run again.
#[test]
fn an_automatic_rollback_runs_the_live_releases_plan() {
    let p = Project::new();
    let manifest = p.path().join("stagecraft.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        format!("[deploy]\non_failure = \"rollback\"\n{text}"),
    )
    .unwrap();
    assert_eq!(p.deploy("v1").code, 0);
    let v1 = p.newest()["id"].as_str().unwrap().to_string();
    p.plugin("http-check");
    let out = p.deploy("v2");
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "rolled back automatically: release {} redeployed {v1}",
            p.newest()["id"].as_str().unwrap()
        )),
        "{out:?}"
    );
    let rollback = p.newest();
    assert_eq!(rollback["status"], "completed");
    assert_eq!(rollback["plan_of"], v1.as_str());
    assert!(out.stderr.contains(MARKER), "{out:?}");
}

/// Grant checks apply to what a rollback runs: a recorded write grant that would now reach a
/// plugin file of today's manifest (which decides what the next deploy runs) is refused,
/// pointing at the recorded plan, before anything is recorded.
#[test]
fn recorded_grants_are_checked_against_todays_plugin_files() {
    let p = Project::new();
    std::fs::create_dir_all(p.path().join("tools")).unwrap();
    let manifest = p.path().join("stagecraft.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let granting = text.replace(
        "[phases.build]\nplugin = \"builtin:noop\"\n",
        "[phases.build]\nplugin = \"builtin:noop\"\ngrants = { write = [\"tools\"] }\n",
    );
    std::fs::write(&manifest, &granting).unwrap();
    assert_eq!(p.deploy("v1").code, 0);
    let v1 = p.newest()["id"].as_str().unwrap().to_string();
    // Today: no write grant, and a finalize plugin kept in tools/.
    std::fs::copy(builtin("noop"), p.path().join("tools/final.wasm")).unwrap();
    std::fs::write(
        &manifest,
        format!("{text}[phases.finalize]\nplugin = \"tools/final.wasm\"\n"),
    )
    .unwrap();
    assert_eq!(p.deploy("v2").code, 0);
    let before = p.releases().len();
    let out = p.rollback(&v1, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "the recorded plan of release {v1}: phase build: the write grant {} would let the \
             phase rewrite {} (the plugin of phase finalize)",
            p.path().canonicalize().unwrap().join("tools").display(),
            p.path()
                .canonicalize()
                .unwrap()
                .join("tools/final.wasm")
                .display()
        )),
        "{out:?}"
    );
    assert_eq!(p.releases().len(), before, "nothing recorded");
}

/// `[state] history_max` sweeps too, when a release it removes was the last to run a component.
#[test]
fn history_max_removes_a_component_with_the_last_release_that_ran_it() {
    let p = Project::new();
    let manifest = p.path().join("stagecraft.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("history_max = 100", "history_max = 1");
    std::fs::write(&manifest, text).unwrap();
    let old = wasm_plugins_dir().join("fixtures/contract-0-1-0.wasm");
    std::fs::copy(&old, p.path().join("plugins/rollout.wasm")).unwrap();
    assert_eq!(p.deploy("v1").code, 0);
    p.plugin("exec");
    // v1 stays as v2's previous release; v3's deploy removes it.
    let out = p.deploy("v2");
    assert!(!out.stderr.contains("Removed"), "{out:?}");
    let out = p.deploy("v3");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("Removed 1 kept component that no release in the history runs"),
        "{out:?}"
    );
    assert!(!p
        .path()
        .join(".stagecraft/releases.components")
        .join(format!("{}.wasm", sha256(&old)))
        .exists());
    // Removing only releases whose components others still run sweeps nothing.
    let out = p.deploy("v4");
    assert!(out.stderr.contains("Pruned 1 old release"), "{out:?}");
    assert!(!out.stderr.contains("Removed"), "{out:?}");
}

/// `stagecraft plan` asks both plugins of a phase whose component changed what they are
/// (`describe()`): the live release's as a rollback would take it, and today's.
#[test]
fn plan_names_both_plugins_by_their_describe() {
    let p = Project::new();
    let old = wasm_plugins_dir().join("fixtures/contract-0-1-0.wasm");
    std::fs::copy(&old, p.path().join("plugins/rollout.wasm")).unwrap();
    assert_eq!(p.deploy("v1").code, 0);
    p.plugin("exec");
    let out = p.run(&["plan", "--env", "prod", "--version", "v2"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("describe(): contract-0-1-0 0.1.0 -> exec 0.1.0\n"),
        "{out:?}"
    );
    let json = p.run(&["plan", "--env", "prod", "--version", "v2", "--json"]);
    let plan: Value = serde_json::from_str(&json.stdout).unwrap();
    let rollout = plan["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "rollout")
        .unwrap();
    assert_eq!(
        rollout["version_before"],
        serde_json::json!({"name": "contract-0-1-0", "version": "0.1.0"})
    );
    assert_eq!(rollout["version_after"]["name"], "exec");
    // An unchanged phase is not asked.
    let build = plan["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "build")
        .unwrap();
    assert!(build["version_before"].is_null() && build["version_after"].is_null());

    // A component kept nowhere any more is unknown, and the plan still shows.
    std::fs::remove_dir_all(p.path().join(".stagecraft/releases.components")).unwrap();
    let out = p.run(&["plan", "--env", "prod", "--version", "v2"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("describe(): (unknown) -> exec 0.1.0\n"),
        "{out:?}"
    );
}

/// `state migrate` copies the history whatever the state of a kept component: a damaged copy is
/// not copied, and is named in a warning.
#[test]
fn state_migrate_copies_the_rest_past_a_damaged_component() {
    let mut p = Project::new();
    let (_, v2) = p.deploy_then_break();
    let exec = sha256(&builtin("exec"));
    let damaged = p
        .path()
        .join(".stagecraft/releases.components")
        .join(format!("{exec}.wasm"));
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&damaged, bytes).unwrap();

    let to = p.path().join("elsewhere/releases.json");
    let out = p.run(&["state", "migrate", "--to", to.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("Migrated 3 releases")
            && out
                .stdout
                .contains("Copied 2 components the releases ran ("),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(&format!(
            "warning: not copied: component {} is damaged (its ",
            damaged.display()
        )),
        "{out:?}"
    );
    // A rollback that needs it on the copy says where to go from there.
    p.state = vec!["--state-file".into(), to.to_str().unwrap().to_string()];
    let out = p.rollback(&v2, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("--with-current-pipeline to run today's manifest"),
        "{out:?}"
    );
}
