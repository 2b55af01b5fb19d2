//! Each release records its plan (spec/state.md, "Plans"): the manifest's digest and, per
//! configured phase, the plugin, the digest of the component that ran, its config, grants and
//! limits; on both backends, shown by `releases show`. Releases from before plans read as
//! before.

use serde_json::Value;
use stagecraft_tests::project::Project;

fn newest(p: &Project) -> Value {
    let out = p.run(&["releases", "list", "--env", "prod", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str::<Value>(&out.stdout).unwrap()[0].clone()
}

fn records_what_ran(p: Project) {
    p.deploy("prod", "v1");
    let release = newest(&p);
    let plan = &release["plan"];
    let manifest = std::fs::read(p.path().join("stagecraft.toml")).unwrap();
    let sha = std::process::Command::new("sha256sum")
        .arg(p.path().join("stagecraft.toml"))
        .output()
        .unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout);
    assert!(!manifest.is_empty());
    assert_eq!(
        plan["manifest_digest"].as_str().unwrap(),
        sha.split_whitespace().next().unwrap()
    );
    let phases = plan["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["build", "finalize"], "configured phases only");
    let build = &phases[0];
    assert_eq!(build["plugin"], "builtin:exec");
    assert_eq!(build["config"]["command"], "test {{version}} != bad");
    assert_eq!(build["grants"]["exec"], serde_json::json!(["test"]));
    assert_eq!(build["grants"]["net"], serde_json::json!([]));
    assert_eq!(build["timeout"], "10m");
    assert_eq!(build["memory"], "512MiB");
    // The digest is the one of the component that ran.
    let ran = release["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ph| ph["name"] == "build")
        .unwrap();
    assert_eq!(build["digest"], ran["plugin_digest"]);

    let id = release["id"].as_str().unwrap();
    let shown = p.run(&["releases", "show", id]);
    assert_eq!(shown.code, 0, "{shown:?}");
    let digest12: String = build["digest"].as_str().unwrap().chars().take(12).collect();
    assert!(
        shown.stdout.contains(&format!(
            "Plan (manifest {}):",
            &plan["manifest_digest"].as_str().unwrap()[..12]
        )),
        "{shown:?}"
    );
    assert!(
        shown.stdout.contains(&format!(
            "  build     builtin:exec  {digest12}  timeout 10m, memory 512MiB"
        )),
        "{shown:?}"
    );
    assert!(
        shown.stdout.contains("            grants: exec test\n"),
        "{shown:?}"
    );
    assert!(
        shown
            .stdout
            .contains("            config: command = \"test {{version}} != bad\"\n"),
        "{shown:?}"
    );
}

#[test]
fn a_release_records_its_plan_on_the_file_backend() {
    records_what_ran(Project::file());
}

#[test]
fn a_release_records_its_plan_on_postgres() {
    records_what_ran(Project::postgres("plans"));
}

#[test]
fn a_release_from_before_plans_reads_and_says_it_has_none() {
    let p = Project::file();
    p.deploy("prod", "v1");
    // Take the plan out of the record, as a release written before plans has none.
    let path = p.path().join(".stagecraft/releases.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let release = state["releases"][0].as_object_mut().unwrap();
    assert!(release.remove("plan").is_some());
    let id = release["id"].as_str().unwrap().to_string();
    std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();

    let shown = p.run(&["releases", "show", &id]);
    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(!shown.stdout.contains("Plan"), "{shown:?}");
    assert!(newest(&p)["plan"].is_null());
    // The next deploy records one again.
    p.deploy("prod", "v2");
    assert!(!newest(&p)["plan"].is_null());
}
