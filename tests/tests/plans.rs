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

/// A project with one environment and a manifest the test rewrites between deploys.
struct Manifested {
    dir: tempfile::TempDir,
}

impl Manifested {
    fn new(manifest: &str) -> Manifested {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        let m = Manifested { dir };
        m.write(manifest);
        m
    }

    fn write(&self, manifest: &str) {
        std::fs::write(
            self.dir.path().join("stagecraft.toml"),
            format!(
                "[environments.prod]\n[pipeline]\nphases = [\"build\", \"finalize\"]\n{manifest}"
            ),
        )
        .unwrap();
    }

    fn run(&self, args: &[&str]) -> stagecraft_tests::Run {
        stagecraft_tests::run(self.dir.path(), args)
    }

    fn deploy(&self, version: &str, extra: &[&str]) -> stagecraft_tests::Run {
        let mut args = vec!["deploy", "--env", "prod", "--version", version];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn versions(&self) -> Vec<String> {
        let out = self.run(&["releases", "list", "--env", "prod", "--json"]);
        serde_json::from_str::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["version"].as_str().unwrap().to_string())
            .collect()
    }
}

const BUILD: &str = "[phases.build]\nplugin = \"builtin:exec\"\nconfig = { command = \"true\" }\n\
                     [phases.build.grants]\nexec = [\"true\"]\nread = [\"src\"]\n";
const FINALIZE: &str = "[phases.finalize]\nplugin = \"builtin:noop\"\n";

#[test]
fn plan_names_what_changes_phase_by_phase_in_text_and_json() {
    let p = Manifested::new(&format!("{BUILD}{FINALIZE}"));
    // No live release: everything is new, nothing needs consent.
    let first = p.run(&["plan", "--env", "prod", "--version", "v1"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(
        first
            .stdout
            .starts_with("Plan for prod: no live release -> v1 (a first deploy"),
        "{first:?}"
    );
    assert_eq!(p.deploy("v1", &[]).code, 0);

    // Unchanged.
    let same = p.run(&["plan", "--env", "prod", "--version", "v2"]);
    assert!(
        same.stdout
            .contains("  build        same     builtin:exec "),
        "{same:?}"
    );
    assert!(!same.stdout.contains("Grants widen"), "{same:?}");

    // Config changed, a grant added and one removed, a limit changed, finalize's plugin
    // replaced.
    p.write(
        "[phases.build]\nplugin = \"builtin:exec\"\nconfig = { command = \"true again\" }\n\
         timeout = \"2m\"\n[phases.build.grants]\nexec = [\"true\", \"curl\"]\n\
         net = [\"https://registry.example.com\"]\n\
         [phases.finalize]\nplugin = \"builtin:http-check\"\nconfig = { url = \"https://x.example.com\" }\n",
    );
    let out = p.run(&["plan", "--env", "prod", "--version", "v2"]);
    assert_eq!(out.code, 0, "{out:?}");
    for line in [
        "  build        changed  builtin:exec ",
        "config command: \"true\" -> \"true again\"",
        "grants added: exec curl; net https://registry.example.com:443",
        "grants removed: read src",
        "timeout 10m -> 2m",
        "  finalize     changed  builtin:noop 77ffffddd135 -> builtin:http-check ",
        "Grants widen in: build.",
    ] {
        assert!(out.stdout.contains(line), "{line:?} in {out:?}");
    }
    let json: Value = serde_json::from_str(
        &p.run(&["plan", "--env", "prod", "--version", "v2", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(json["live"]["version"], "v1");
    assert_eq!(json["widens"], serde_json::json!(["build"]));
    assert_eq!(json["needs_consent"], true);
    let build = &json["phases"][0];
    assert_eq!(build["change"], "changed");
    assert_eq!(build["grants_added"]["exec"], serde_json::json!(["curl"]));
    assert_eq!(build["grants_removed"]["read"], serde_json::json!(["src"]));
    assert_eq!(build["limits"][0]["limit"], "timeout");
    assert_ne!(
        json["phases"][1]["digest_before"],
        json["phases"][1]["digest_after"]
    );
}

#[test]
fn a_deploy_that_widens_grants_needs_consent() {
    let p = Manifested::new(&format!("{BUILD}{FINALIZE}"));
    assert_eq!(p.deploy("v1", &[]).code, 0, "a first deploy needs none");

    p.write(&format!(
        "{BUILD}net = [\"https://registry.example.com\"]\n{FINALIZE}"
    ));
    let refused = p.deploy("v2", &[]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("deploy refused: the grants of this deploy widen since the live release")
            && refused
                .stderr
                .contains("  build: net https://registry.example.com:443\n")
            && refused.stderr.contains("pass --approve-grants"),
        "{refused:?}"
    );
    assert_eq!(p.versions(), ["v1"], "no release was created");

    let approved = p.deploy("v2", &["--approve-grants"]);
    assert_eq!(approved.code, 0, "{approved:?}");
    // Now live: the same grants need nothing.
    assert_eq!(p.deploy("v3", &[]).code, 0);

    // Narrowing needs nothing either.
    p.write(&format!("{BUILD}{FINALIZE}"));
    assert_eq!(p.deploy("v4", &[]).code, 0);

    // A team that reviews manifests elsewhere turns the question off, but not in the same
    // change that widens: `allow` counts once a release made with it is live.
    let allowing =
        |extra: &str| format!("[deploy]\ngrant_changes = \"allow\"\n{BUILD}{extra}{FINALIZE}");
    p.write(&allowing("env = [\"HOME\"]\n"));
    let sneaked = p.deploy("v5", &[]);
    assert_eq!(sneaked.code, 1, "{sneaked:?}");
    assert!(
        sneaked
            .stderr
            .contains("grant_changes = \"allow\" is new in this manifest"),
        "{sneaked:?}"
    );
    p.write(&allowing(""));
    assert_eq!(
        p.deploy("v5", &[]).code,
        0,
        "turning it on alone widens nothing"
    );
    p.write(&allowing("env = [\"HOME\"]\n"));
    assert_eq!(p.deploy("v6", &[]).code, 0, "now it is live, and counts");
    assert_eq!(p.versions(), ["v6", "v5", "v4", "v3", "v2", "v1"]);

    p.write(&format!(
        "[deploy]\ngrant_changes = \"never\"\n{BUILD}{FINALIZE}"
    ));
    let bad = p.deploy("v7", &[]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.stderr
            .contains("grant_changes = \"never\" is not a choice"),
        "{bad:?}"
    );
}

/// A rollback is asked about the plan it runs, and the plan it records becomes the live one:
/// without the same consent, a refused widening would go through as a rollback, and the next
/// deploy would then find nothing widened. Today's manifest runs with --with-current-pipeline;
/// a target's recorded plan can widen too, when it had grants the live release dropped.
#[test]
fn a_rollback_that_widens_grants_needs_consent_too() {
    let p = Manifested::new(&format!("{BUILD}{FINALIZE}"));
    assert_eq!(p.deploy("v1", &[]).code, 0);
    assert_eq!(p.deploy("v2", &[]).code, 0);

    p.write(&format!(
        "{BUILD}net = [\"https://registry.example.com\"]\n{FINALIZE}"
    ));
    assert_eq!(p.deploy("v3", &[]).code, 1, "the deploy is refused");
    let current = [
        "rollback",
        "--env",
        "prod",
        "--to-previous",
        "--with-current-pipeline",
    ];
    let refused = p.run(&current);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("rollback refused: the grants of this rollback widen since the live release")
            && refused
                .stderr
                .contains("  build: net https://registry.example.com:443\n")
            && refused.stderr.contains("pass --approve-grants"),
        "{refused:?}"
    );
    assert_eq!(p.versions(), ["v2", "v1"], "no release was created");
    assert_eq!(p.deploy("v3", &[]).code, 1, "still refused");

    let mut approved = current.to_vec();
    approved.push("--approve-grants");
    let approved = p.run(&approved);
    assert_eq!(approved.code, 0, "{approved:?}");
    assert_eq!(p.versions(), ["v1", "v2", "v1"]);

    // v1's recorded plan had no net grant; the live plan (the rollback's) has it: rolling back
    // to v1's plan narrows, and needs nothing.
    let v1 = p.run(&["releases", "list", "--env", "prod", "--json"]);
    let v1: Value = serde_json::from_str(&v1.stdout).unwrap();
    let oldest = v1[2]["id"].as_str().unwrap().to_string();
    let narrowing = p.run(&["rollback", "--env", "prod", "--to-release", &oldest]);
    assert_eq!(narrowing.code, 0, "{narrowing:?}");
    // Now the live plan has no net grant, and the release before it (the rollback under today's
    // manifest) had one: running its recorded plan widens, and is asked about.
    let widening = p.run(&["rollback", "--env", "prod", "--to-previous"]);
    assert_eq!(widening.code, 1, "{widening:?}");
    assert!(
        widening
            .stderr
            .contains("Running the recorded plan of release")
            && widening
                .stderr
                .contains("  build: net https://registry.example.com:443\n"),
        "{widening:?}"
    );
}

/// Config values are shown quoted, with their control characters escaped once: a value holding
/// an escape character and one holding the text `\x1b` must not look the same.
#[test]
fn config_values_with_control_characters_are_shown_escaped_once() {
    let p = Manifested::new(&format!("{BUILD}{FINALIZE}"));
    assert_eq!(p.deploy("v1", &[]).code, 0);
    p.write(&format!(
        "{}{FINALIZE}",
        BUILD.replace("\"true\" }", "\"true\", note = \"a\\u001bb\" }")
    ));
    let out = p.run(&["plan", "--env", "prod", "--version", "v2"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("config note: (unset) -> \"a\\u{1b}b\"\n"),
        "{out:?}"
    );
    assert_eq!(p.deploy("v2", &[]).code, 0);
    let id = p.run(&["releases", "list", "--env", "prod", "--json"]);
    let id = serde_json::from_str::<Value>(&id.stdout).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = p.run(&["releases", "show", &id]);
    assert!(shown.stdout.contains("note = \"a\\u{1b}b\""), "{shown:?}");
}

#[test]
fn state_migrate_keeps_plans_both_ways() {
    let p = Project::postgres("plans_migrate");
    p.deploy("prod", "v1");
    let plan = newest(&p)["plan"].clone();
    assert!(!plan.is_null());
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.json");
    let out = p.run(&["state", "migrate", "--to", copy.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let read = |args: &[&str]| -> Value {
        let out: stagecraft_tests::Run = stagecraft_tests::stagecraft(dir.path())
            .args(args)
            .output()
            .unwrap()
            .into();
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str::<Value>(&out.stdout).unwrap()[0].clone()
    };
    let copy_arg = copy.to_str().unwrap();
    let from_file = read(&["releases", "--state-file", copy_arg, "list", "--json"]);
    assert_eq!(from_file["plan"], plan);

    let (server, _) = p.postgres.as_ref().unwrap();
    let back = server.create_database("plans_back");
    let out: stagecraft_tests::Run = stagecraft_tests::stagecraft(dir.path())
        .args(["state", "--state-file", copy_arg, "migrate", "--to", &back])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
    let from_db = read(&["releases", "--state-url", &back, "list", "--json"]);
    assert_eq!(from_db["plan"], plan);
}

/// A rollback to a plan recorded under `grant_changes = "allow"` is asked about by today's
/// manifest's setting: turning `allow` off is not undone by rolling back to a release made with
/// it.
#[test]
fn a_rollback_is_asked_by_todays_grant_changes_setting() {
    let allowing =
        |extra: &str| format!("[deploy]\ngrant_changes = \"allow\"\n{BUILD}{extra}{FINALIZE}");
    let p = Manifested::new(&allowing(""));
    assert_eq!(p.deploy("v1", &[]).code, 0);
    p.write(&allowing("net = [\"https://registry.example.com\"]\n"));
    assert_eq!(p.deploy("v2", &[]).code, 0, "allowed: v1 recorded allow");
    p.write(&allowing(""));
    assert_eq!(p.deploy("v3", &[]).code, 0, "narrowing");
    let list = p.run(&["releases", "list", "--env", "prod", "--json"]);
    let list: Value = serde_json::from_str(&list.stdout).unwrap();
    let v2 = list[1]["id"].as_str().unwrap().to_string();
    // Today the team asks again.
    p.write(&format!("{BUILD}{FINALIZE}"));
    let out = p.run(&["rollback", "--env", "prod", "--to-release", &v2]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("rollback refused: the grants of this rollback widen")
            && out
                .stderr
                .contains("  build: net https://registry.example.com:443\n"),
        "{out:?}"
    );
}
