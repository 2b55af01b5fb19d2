//! Every command's `--json` prints exactly the keys spec/cli.md ("JSON output") lists for each
//! object, in that order: the table there is read, and each object is found in real output.
//! One name per concept across commands (`name`, `plugin_digest`, the release object) is
//! pinned by that one table.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use stagecraft::state::{FileStore, StateStore};
use stagecraft_tests::project::Project;
use stagecraft_tests::workspace_root;

/// Object name -> its keys, from the table in spec/cli.md.
fn spec_objects() -> BTreeMap<String, Vec<String>> {
    let spec = std::fs::read_to_string(workspace_root().join("spec/cli.md")).unwrap();
    let table = spec
        .split("<!-- The rows below are read by tests/tests/json_fields.rs")
        .nth(1)
        .expect("the JSON output table in spec/cli.md");
    let mut objects = BTreeMap::new();
    for line in table.lines().skip(1).skip_while(|l| l.is_empty()) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells[1] == "object" || cells[1].starts_with("---") {
            continue;
        }
        let keys = cells[3]
            .split(", ")
            .map(|k| k.trim_matches('`').to_string())
            .collect();
        objects.insert(cells[1].to_string(), keys);
    }
    assert!(objects.len() > 10, "{objects:?}");
    objects
}

struct Checker {
    spec: BTreeMap<String, Vec<String>>,
    seen: BTreeMap<String, usize>,
}

impl Checker {
    /// `value` is an object `object` of spec/cli.md: exactly its keys, in its order.
    fn check(&mut self, object: &str, value: &Value, context: &str) {
        let expected = self
            .spec
            .get(object)
            .unwrap_or_else(|| panic!("spec/cli.md lists no object {object:?}"));
        let keys: Vec<String> = value
            .as_object()
            .unwrap_or_else(|| panic!("{context}: {object} is not an object: {value}"))
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, *expected, "{context}: keys of {object}");
        *self.seen.entry(object.to_string()).or_default() += 1;
    }

    fn release(&mut self, value: &Value, context: &str) {
        self.check("release", value, context);
        for phase in value["phases"].as_array().unwrap() {
            self.check("release phase", phase, context);
        }
        if !value["plan"].is_null() {
            self.check("recorded plan", &value["plan"], context);
            for phase in value["plan"]["phases"].as_array().unwrap() {
                self.check("recorded phase", phase, context);
                self.check("grants", &phase["grants"], context);
            }
        }
        if !value["created_by"].is_null() {
            self.check("identity", &value["created_by"], context);
            if !value["created_by"]["ci"].is_null() {
                self.check("ci run", &value["created_by"]["ci"], context);
            }
        }
    }
}

fn json(project: &Project, args: &[&str], code: i32) -> Value {
    let out = project.run(args);
    assert_eq!(out.code, code, "{args:?}: {out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"))
}

#[test]
fn every_json_output_has_the_keys_spec_cli_lists() {
    let mut c = Checker {
        spec: spec_objects(),
        seen: BTreeMap::new(),
    };
    let project = Project::file();
    let v1 = json(
        &project,
        &["deploy", "-e", "prod", "--version", "v1", "--json"],
        0,
    );
    c.release(&v1, "deploy --json");
    // A run in CI records it, so the CI object is in the history too.
    let out = project
        .command()
        .args(["deploy", "-e", "prod", "--version", "v2", "--json"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_SERVER_URL", "https://github.com")
        .env("GITHUB_REPOSITORY", "acme/shop")
        .env("GITHUB_RUN_ID", "42")
        .env("GITHUB_ACTOR", "octocat")
        .output()
        .unwrap();
    let v2: Value = serde_json::from_slice(&out.stdout).unwrap();
    c.release(&v2, "deploy --json in CI");
    assert!(!v2["created_by"]["ci"].is_null(), "{v2}");
    let bad = json(
        &project,
        &["deploy", "-e", "prod", "--version", "bad", "--json"],
        2,
    );
    c.release(&bad, "a failed deploy --json");
    let v1_id = v1["id"].as_str().unwrap();
    let back = json(
        &project,
        &["rollback", "-e", "prod", "--to-release", v1_id, "--json"],
        0,
    );
    c.release(&back, "rollback --json");

    for (what, args) in [
        (
            "deploy plan",
            &["deploy", "-e", "prod", "--version", "v9"][..],
        ),
        (
            "rollback plan",
            &["rollback", "-e", "prod", "--to-version", "v2"],
        ),
    ] {
        let mut args = args.to_vec();
        args.extend(["--dry-run", "--json"]);
        let plan = json(&project, &args, 0);
        c.check("plan", &plan, what);
        for phase in plan["phases"].as_array().unwrap() {
            c.check("planned phase", phase, what);
        }
    }

    // `plan --json`, against a manifest whose build changed its command and timeout.
    let manifest_path = project.path().join("stagecraft.toml");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let changed = manifest.replace("!= bad", "!= worse").replace(
        "plugin = \"builtin:exec\"\n",
        "plugin = \"builtin:exec\"\ntimeout = \"2m\"\n",
    );
    assert_ne!(changed, manifest);
    std::fs::write(&manifest_path, &changed).unwrap();
    let changes = json(
        &project,
        &["plan", "-e", "prod", "--version", "v9", "--json"],
        0,
    );
    std::fs::write(&manifest_path, &manifest).unwrap();
    c.check("plan changes", &changes, "plan --json");
    c.check("plan baseline", &changes["live"], "plan --json");
    for phase in changes["phases"].as_array().unwrap() {
        c.check("phase change", phase, "plan --json");
        for config in phase["config"].as_array().unwrap() {
            c.check("config change", config, "plan --json");
        }
        for limit in phase["limits"].as_array().unwrap() {
            c.check("limit change", limit, "plan --json");
        }
    }

    let listed = json(&project, &["releases", "list", "--json"], 0);
    for r in listed.as_array().unwrap() {
        c.release(r, "releases list --json");
    }
    let shown = json(&project, &["releases", "show", v1_id, "--json"], 0);
    c.release(&shown, "releases show --json");

    // A held lease, so the holder is printed: taken by this process.
    let store = FileStore::open(project.store_spec().into()).unwrap();
    let _lease = store.lease("staging", Duration::ZERO).unwrap();
    let status = json(&project, &["status", "--json"], 0);
    c.check("status", &status, "status --json");
    for env in status["environments"].as_array().unwrap() {
        c.check("environment", env, "status --json");
        c.check("lease", &env["lease"], "status --json");
        if !env["lease"]["holder"].is_null() {
            c.check("lease holder", &env["lease"]["holder"], "status --json");
        }
        for key in ["live", "current"] {
            if !env[key].is_null() {
                c.release(&env[key], "status --json");
            }
        }
        for r in env["unfinished"].as_array().unwrap() {
            c.release(r, "status --json");
        }
        if !env["last_failure"].is_null() {
            c.check("last failure", &env["last_failure"], "status --json");
            c.release(&env["last_failure"]["release"], "status --json");
        }
    }

    let prune = json(
        &project,
        &[
            "releases",
            "prune",
            "-e",
            "prod",
            "--keep",
            "1",
            "--dry-run",
            "--json",
        ],
        0,
    );
    c.check("prune", &prune, "releases prune --json");
    for kept in prune["kept_beyond"].as_array().unwrap() {
        c.check("kept release", kept, "releases prune --json");
    }

    let check = json(&project, &["plugin", "check", "builtin:noop", "--json"], 0);
    c.check("plugin check", &check, "plugin check --json");
    c.check("plugin info", &check["info"], "plugin check --json");
    for import in check["imports"].as_array().unwrap() {
        c.check("import", import, "plugin check --json");
    }
    let test = json(&project, &["plugin", "test", "builtin:noop", "--json"], 0);
    c.check("plugin test", &test, "plugin test --json");
    for scenario in test["scenarios"].as_array().unwrap() {
        c.check("scenario", scenario, "plugin test --json");
    }

    let unseen: Vec<&String> = c.spec.keys().filter(|k| !c.seen.contains_key(*k)).collect();
    assert!(unseen.is_empty(), "objects never printed here: {unseen:?}");
}
