//! Python and JavaScript phases end to end: a deploy that mixes Rust built-ins with the Python
//! and JavaScript examples, the shipped examples against the conformance kit, and how a raised
//! exception, a thrown error and a crashed guest end up in the release record.
//!
//! The components are built by scripts/build-polyglot-plugins (scripts/test runs it first).

use std::path::Path;

use serde_json::Value;
use stagecraft_tests::{polyglot_plugin, run, stagecraft, Run};

fn changelog() -> String {
    polyglot_plugin("examples", "changelog-py")
        .display()
        .to_string()
}

fn verify_site() -> String {
    polyglot_plugin("examples", "verify-site-js")
        .display()
        .to_string()
}

/// A phase of a release as `--json` prints it.
fn phase<'v>(record: &'v Value, name: &str) -> &'v Value {
    record["phases"]
        .as_array()
        .and_then(|phases| phases.iter().find(|p| p["name"] == name))
        .unwrap_or(&Value::Null)
}

fn deploy_json(dir: &Path, version: &str) -> (Run, Value) {
    let out = run(
        dir,
        &["deploy", "--env", "prod", "--version", version, "--json"],
    );
    let record = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    (out, record)
}

/// build (Rust) -> migrate_pre (JavaScript) -> rollout (Rust) -> finalize (Python).
fn mixed_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("site")).unwrap();
    std::fs::write(
        dir.path().join("site/index.html"),
        "<h1>{{var.greeting}}</h1>\n<p>version {{version}} on {{environment}}</p>\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("site/style.css"), "h1 { color: teal }\n").unwrap();
    let manifest = format!(
        r#"
[environments.prod]
vars = {{ greeting = "Hello from prod", region = "eu-west" }}

[phases.build]
plugin = "builtin:render"
config = {{ source = "site", dest = "public/releases" }}
[phases.build.grants]
read = ["site"]
write = ["public"]

[phases.migrate_pre]
plugin = "{verify}"
config = {{ must_contain = "version {{{{version}}}}", require_vars = "greeting" }}
[phases.migrate_pre.grants]
read = ["public"]

[phases.rollout]
plugin = "builtin:switch"
config = {{ releases = "public/releases", current = "public/current" }}
[phases.rollout.grants]
write = ["public"]

[phases.finalize]
plugin = "{changelog}"
config = {{ dir = "changelog", title = "Releases of {{{{environment}}}}" }}
[phases.finalize.grants]
write = ["changelog"]
"#,
        verify = verify_site(),
        changelog = changelog(),
    );
    std::fs::write(dir.path().join("stagecraft.toml"), manifest).unwrap();
    dir
}

#[test]
fn a_pipeline_of_rust_python_and_javascript_phases_deploys_end_to_end() {
    let project = mixed_project();
    let dir = project.path();

    let (out, v1) = deploy_json(dir, "v1");
    assert_eq!(out.code, 0, "{out:?}");
    let (out, v2) = deploy_json(dir, "v2");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(v2["status"], "completed", "{v2:#}");
    for name in ["build", "migrate_pre", "rollout", "finalize"] {
        assert_eq!(phase(&v2, name)["status"], "completed", "{name}: {v2:#}");
    }

    // JavaScript read the rendered site through its read grant.
    let verified = &phase(&v2, "migrate_pre")["outputs"];
    assert_eq!(verified["site"], "public/releases/v2", "{v2:#}");
    assert_eq!(verified["files"], "2", "{v2:#}");
    let bytes: u64 = verified["bytes"].as_str().unwrap().parse().unwrap();
    let on_disk: u64 = ["index.html", "style.css"]
        .iter()
        .map(|f| {
            std::fs::metadata(dir.join("public/releases/v2").join(f))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(bytes, on_disk);

    // Rust switched to it.
    let live = std::fs::read_to_string(dir.join("public/current/index.html")).unwrap();
    assert!(live.contains("version v2 on prod"), "{live}");

    // Python wrote the changelog into its write grant, from config, vars and earlier outputs.
    let log = std::fs::read_to_string(dir.join("changelog/prod.md")).unwrap();
    assert!(log.starts_with("# Releases of prod\n"), "{log}");
    let v1_id = v1["id"].as_str().unwrap();
    let v2_id = v2["id"].as_str().unwrap();
    assert!(log.contains(&format!("## v1 ({v1_id})")), "{log}");
    assert!(log.contains(&format!("## v2 ({v2_id})")), "{log}");
    assert!(
        log.contains(&format!("- previous release: {v1_id}")),
        "{log}"
    );
    assert!(log.contains("- var greeting: Hello from prod"), "{log}");
    assert!(log.contains("- var region: eu-west"), "{log}");
    assert!(log.contains("- build.path: public/releases/v2"), "{log}");
    assert!(log.contains("- migrate_pre.files: 2"), "{log}");
    let finalize = &phase(&v2, "finalize")["outputs"];
    assert_eq!(finalize["changelog"], "changelog/prod.md");
    assert_eq!(finalize["entries"], "2");

    // `releases show --json` has the same record.
    let shown = run(dir, &["releases", "show", v2_id, "--json"]);
    assert_eq!(shown.code, 0, "{shown:?}");
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["phases"], v2["phases"]);
    assert_eq!(
        phase(&shown, "finalize")["summary"],
        "recorded v2 in changelog/prod.md"
    );
}

#[test]
fn the_javascript_check_stops_a_broken_site_before_the_switch() {
    let project = mixed_project();
    let dir = project.path();
    let (out, _) = deploy_json(dir, "v1");
    assert_eq!(out.code, 0, "{out:?}");

    // A template that lost its version line renders a site the check refuses.
    std::fs::write(dir.join("site/index.html"), "<h1>{{var.greeting}}</h1>\n").unwrap();
    let (out, v2) = deploy_json(dir, "v2");
    assert_eq!(out.code, 2, "{out:?}");
    let check = phase(&v2, "migrate_pre");
    assert_eq!(check["status"], "failed", "{v2:#}");
    assert_eq!(
        check["error"], "public/releases/v2/index.html does not contain \"version v2\"",
        "{v2:#}"
    );
    assert_eq!(phase(&v2, "rollout")["status"], "skipped");
    assert_eq!(phase(&v2, "finalize")["status"], "skipped");
    let live = std::fs::read_to_string(dir.join("public/current/index.html")).unwrap();
    assert!(live.contains("version v1"), "v1 stays live: {live}");
    let log = std::fs::read_to_string(dir.join("changelog/prod.md")).unwrap();
    assert!(!log.contains("## v2"), "{log}");
}

#[test]
fn a_release_already_in_the_changelog_is_skipped_not_written_twice() {
    // The conformance kit's deploy scenario is release rel-20260101-120000000; seed the project
    // with a changelog that already records it.
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed/changelog");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(
        seed.join("conformance.md"),
        "# Releases of conformance\n\n## v2 (rel-20260101-120000000)\n",
    )
    .unwrap();
    let out = run(
        dir.path(),
        &[
            "plugin",
            "test",
            &changelog(),
            "--set",
            "dir=changelog",
            "--project",
            "seed",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("deploy           pass    skipped (rel-20260101-120000000 is already in changelog/conformance.md)"),
        "{out:?}"
    );
}

fn failing_project(plugin: &Path, config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stagecraft.toml"),
        format!(
            "[environments.prod]\n[phases.build]\nplugin = \"{}\"\nconfig = {{ {config} }}\n\
             [phases.rollout]\nplugin = \"builtin:noop\"\n",
            plugin.display()
        ),
    )
    .unwrap();
    dir
}

/// The state file's record of a phase, with the fields `--json` does not show (error_details).
fn stored_phase(dir: &Path, name: &str) -> Value {
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(".stagecraft/releases.json")).unwrap(),
    )
    .unwrap();
    let release = state["releases"]
        .as_array()
        .and_then(|r| r.last())
        .unwrap_or_else(|| panic!("no release in {state:#}"));
    release["phase_details"][name].clone()
}

#[test]
fn an_uncaught_python_exception_fails_the_phase_with_its_message_and_traceback() {
    let project = failing_project(&polyglot_plugin("fixtures", "raise-py"), "item = \"gears\"");
    let (out, record) = deploy_json(project.path(), "v1");
    assert_eq!(out.code, 2, "{out:?}");
    let build = phase(&record, "build");
    assert_eq!(build["status"], "failed");
    assert_eq!(build["error"], "LookupError: the inventory has no gears");
    assert_eq!(phase(&record, "rollout")["status"], "skipped");
    assert!(
        out.stderr
            .contains("failed in phase build: LookupError: the inventory has no gears"),
        "{out:?}"
    );
    let details = stored_phase(project.path(), "build")["error_details"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        details.starts_with("Traceback (most recent call last):"),
        "{details}"
    );
    assert!(details.contains("in check_inventory"), "{details}");
}

#[test]
fn a_thrown_javascript_error_fails_the_phase_with_its_message_and_details() {
    let project = failing_project(
        &polyglot_plugin("fixtures", "throw-js"),
        "service = \"mail\"",
    );
    let (out, record) = deploy_json(project.path(), "v1");
    assert_eq!(out.code, 2, "{out:?}");
    let build = phase(&record, "build");
    assert_eq!(build["status"], "failed");
    assert_eq!(build["error"], "quota exceeded for mail");
    assert_eq!(phase(&record, "rollout")["status"], "skipped");
    assert_eq!(
        stored_phase(project.path(), "build")["error_details"],
        "used 11 GiB of 10 GiB"
    );
    // The guest's log line before the throw reached the user.
    assert!(out.stderr.contains("checking the quota of mail"), "{out:?}");
}

#[test]
fn a_crashed_python_guest_is_a_failed_phase_that_says_it_crashed() {
    let project = failing_project(&polyglot_plugin("fixtures", "crash-py"), "");
    let out = run(
        project.path(),
        &["deploy", "--env", "prod", "--version", "v1"],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stdout
            .contains("build         failed    plugin crashed: "),
        "{out:?}"
    );
    let (_, record) = deploy_json(project.path(), "v2");
    let error = phase(&record, "build")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.starts_with("plugin crashed: wasm trap"), "{error}");
    assert!(error.contains("the guest aborted"), "{error}");
}

#[test]
fn the_shipped_python_and_javascript_examples_pass_the_conformance_kit() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["plugin", "test", &changelog(), "--set", "dir=changelog"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("10 passed, 0 failed"), "{out:?}");

    let site = dir.path().join("seed/site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(
        site.join("index.html"),
        "<p>Hello</p><p>version v1</p><p>version v2</p>",
    )
    .unwrap();
    let out = run(
        dir.path(),
        &[
            "plugin",
            "test",
            &verify_site(),
            "--set",
            "site=site",
            "--set",
            "must_contain=version {{version}}",
            "--project",
            "seed",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("10 passed, 0 failed"), "{out:?}");
}

#[test]
fn verbose_says_whether_a_component_was_compiled_or_loaded_from_the_cache() {
    // A private cache, so the first load really compiles the Python component.
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plugin = changelog();
    let test_run = |args: &[&str]| -> Run {
        stagecraft(dir.path())
            .env("STAGECRAFT_CACHE_DIR", cache.path())
            .args(args)
            .output()
            .unwrap()
            .into()
    };
    let cold = test_run(&["plugin", "test", &plugin, "--set", "dir=c", "--verbose"]);
    assert_eq!(cold.code, 0, "{cold:?}");
    assert!(
        cold.stderr.contains(&format!("[{plugin}] compiled in ")),
        "{cold:?}"
    );
    let warm = test_run(&["plugin", "test", &plugin, "--set", "dir=c", "--verbose"]);
    assert!(
        warm.stderr
            .contains(&format!("[{plugin}] loaded from cache in ")),
        "{warm:?}"
    );
    let quiet = test_run(&["plugin", "test", &plugin, "--set", "dir=c"]);
    assert!(!quiet.stderr.contains("loaded from cache"), "{quiet:?}");

    // deploy --verbose says the same per phase.
    std::fs::write(
        dir.path().join("stagecraft.toml"),
        format!(
            "[environments.prod]\n[phases.finalize]\nplugin = \"{plugin}\"\n\
             config = {{ dir = \"changelog\" }}\n[phases.finalize.grants]\nwrite = [\"changelog\"]\n"
        ),
    )
    .unwrap();
    let deploy = test_run(&["deploy", "--env", "prod", "--version", "v1", "--verbose"]);
    assert_eq!(deploy.code, 0, "{deploy:?}");
    assert!(
        deploy
            .stderr
            .contains(&format!("[finalize {plugin}] loaded from cache in ")),
        "{deploy:?}"
    );
    assert!(dir.path().join("changelog/prod.md").exists());
}

#[test]
fn runaway_javascript_recursion_is_the_phase_error_the_engine_threw() {
    let project = failing_project(
        &polyglot_plugin("fixtures", "throw-js"),
        "mode = \"recurse\"",
    );
    let (out, record) = deploy_json(project.path(), "v1");
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(phase(&record, "build")["status"], "failed");
    assert_eq!(phase(&record, "build")["error"], "too much recursion");
}

#[test]
fn a_crashed_javascript_engine_is_a_failed_phase_with_its_complaint() {
    let project = failing_project(&polyglot_plugin("fixtures", "crash-js"), "");
    let (out, record) = deploy_json(project.path(), "v1");
    assert_eq!(out.code, 2, "{out:?}");
    let build = phase(&record, "build");
    assert_eq!(build["status"], "failed");
    // The engine's own line, not its stack frames or abort boilerplate.
    assert_eq!(
        build["error"],
        "plugin crashed: wasm trap: wasm `unreachable` instruction executed \
         (stderr: expected a string, received [undefined])"
    );
    assert_eq!(phase(&record, "rollout")["status"], "skipped");
}
