//! `stagecraft plugin check` and `stagecraft plugin test` through the real binary: good
//! plugins pass, bad inputs exit 1 with a reason, failing scenarios exit 2.

mod plugin_support;

use plugin_support::*;
use stagecraft_tests::{polyglot_plugin, run};

fn hostile_path() -> String {
    fixture("hostile").display().to_string()
}

#[test]
fn check_describes_a_builtin_and_lists_its_imports() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["plugin", "check", "builtin:exec"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("contract     stagecraft:phase@0.1.1"),
        "{out:?}"
    );
    assert!(out.stdout.contains("name         exec"), "{out:?}");
    assert!(
        out.stdout.contains("stagecraft:phase/host@0.1.1"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("exec of programs in the `exec` grant"),
        "{out:?}"
    );

    let out = run(dir.path(), &["plugin", "check", "--json", &hostile_path()]);
    assert_eq!(out.code, 0, "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["info"]["name"], "hostile");
    assert_eq!(json["contract"], "stagecraft:phase@0.1.1");
    assert_eq!(json["plugin_digest"].as_str().unwrap().len(), 64);
    assert!(json["imports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["name"].as_str().unwrap().starts_with("wasi:sockets/")));
}

#[test]
fn check_refuses_core_modules_foreign_versions_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module)").unwrap()).unwrap();
    let out = run(dir.path(), &["plugin", "check", "core.wasm"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("core.wasm is a core WebAssembly module, not a component"),
        "{out:?}"
    );

    let future = dir.path().join("future.wasm");
    std::fs::write(
        &future,
        wat::parse_str(
            r#"(component (instance $i) (export "stagecraft:phase/phase@0.2.0" (instance $i)))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let out = run(dir.path(), &["plugin", "check", "future.wasm"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("targets stagecraft:phase@0.2.0; this stagecraft supports 0.1.x"),
        "{out:?}"
    );

    let out = run(dir.path(), &["plugin", "check", "missing.wasm"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("cannot read plugin missing.wasm"),
        "{out:?}"
    );

    let out = run(dir.path(), &["plugin", "check", "builtin:nope"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("builtin:noop"), "{out:?}");
}

#[test]
fn test_passes_a_good_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["plugin", "test", "builtin:noop"]);
    assert_eq!(out.code, 0, "{out:?}");
    for scenario in [
        "describe",
        "deploy",
        "rollback",
        "empty-config",
        "full-config",
        "earlier-outputs",
        "repeatable",
        "report-bounds",
        "sandbox",
    ] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(scenario) && l.contains(" pass ")),
            "{scenario}: {out:?}"
        );
    }
    assert!(out.stdout.contains("9 passed, 0 failed"), "{out:?}");
}

/// Python and JavaScript plugins built against the frozen spec/wit/phase-0.1.0.wit as plugins of
/// contract 0.1.0 were (JavaScript without wasi:http), unchanged since: contract-0-1-0-{py,js},
/// the samples `plugin new` wrote for 0.1.0. (The Rust one is
/// `a_plugin_built_for_contract_0_1_0_still_checks_tests_and_deploys`.)
#[test]
fn python_and_javascript_plugins_built_for_contract_0_1_0_pass_plugin_test_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = [
        ("python", polyglot_plugin("fixtures", "contract-0-1-0-py")),
        (
            "javascript",
            polyglot_plugin("fixtures", "contract-0-1-0-js"),
        ),
    ];
    for (lang, plugin) in plugins {
        let plugin = plugin.display().to_string();
        let out = run(dir.path(), &["plugin", "check", "--json", &plugin]);
        assert_eq!(out.code, 0, "{lang}: {out:?}");
        let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(json["contract"], "stagecraft:phase@0.1.0", "{lang}");
        let imports: Vec<&str> = json["imports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert!(
            imports.contains(&"stagecraft:phase/host@0.1.0"),
            "{lang}: {imports:?}"
        );
        assert!(
            !imports.iter().any(|i| i.starts_with("wasi:http/")),
            "{lang}: built as 0.1.0 plugins were, without wasi:http: {imports:?}"
        );

        let out = run(
            dir.path(),
            &["plugin", "test", &plugin, "--set", "target=world"],
        );
        assert_eq!(out.code, 0, "{lang}: {out:?}");
        assert!(out.stdout.contains("9 passed, 0 failed"), "{lang}: {out:?}");
        assert!(
            out.stdout.contains("completed: greeted world for v2"),
            "{lang}: {out:?}"
        );
        assert!(
            out.stdout
                .contains("skipped (nothing to undo on a rollback)"),
            "{lang}: {out:?}"
        );
    }
}

#[test]
fn test_runs_builtins_with_config_grants_and_a_seed_project() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &[
            "plugin",
            "test",
            "builtin:exec",
            "--set",
            "command=echo {{version}}",
            "--exec",
            "echo",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("completed: ran `echo v2`"), "{out:?}");
    assert!(
        out.stdout.contains("refused: config.command is not set"),
        "{out:?}"
    );

    let seed = dir.path().join("seed");
    std::fs::create_dir_all(seed.join("templates")).unwrap();
    std::fs::write(seed.join("templates/index.html"), "{{version}}").unwrap();
    let out = run(
        dir.path(),
        &[
            "plugin",
            "test",
            "builtin:render",
            "--config-json",
            r#"{"source": "templates", "dest": "releases"}"#,
            "--project",
            "seed",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");

    std::fs::create_dir_all(seed.join("releases/v1")).unwrap();
    std::fs::create_dir_all(seed.join("releases/v2")).unwrap();
    let out = run(
        dir.path(),
        &[
            "plugin",
            "test",
            "builtin:switch",
            "--set",
            "releases=releases",
            "--project",
            "seed",
            "--json",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["failed"], 0);
    // The seed itself is copied, never used in place.
    assert!(!seed.join("current").exists());
}

#[test]
fn test_fails_with_exit_2_and_reasons_for_a_crashing_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = hostile_path();
    let out = run(
        dir.path(),
        &["plugin", "test", &hostile, "--set", "mode=panic"],
    );
    assert_eq!(out.code, 2, "{out:?}");
    let deploy = out
        .stdout
        .lines()
        .find(|l| l.starts_with("deploy"))
        .unwrap();
    assert!(deploy.contains("FAIL"), "{deploy}");
    assert!(deploy.contains("fixture panicked on purpose"), "{deploy}");

    let out = run(
        dir.path(),
        &[
            "plugin",
            "test",
            &hostile,
            "--set",
            "mode=loop",
            "--timeout",
            "200ms",
        ],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stdout
            .contains("failed: timeout limit of 200ms exceeded"),
        "{out:?}"
    );

    // Escape attempts fail the deploy scenario, and the sandbox scenario still passes:
    // nothing outside the project changed.
    let out = run(
        dir.path(),
        &[
            "plugin",
            "test",
            &hostile,
            "--set",
            "mode=fs",
            "--set",
            "op=write",
            "--set",
            "path=../outside/sentinel.txt",
        ],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.contains("refused"), "{out:?}");
    let sandbox = out
        .stdout
        .lines()
        .find(|l| l.starts_with("sandbox"))
        .unwrap();
    assert!(sandbox.contains("pass"), "{sandbox}");
}

#[test]
fn test_rejects_unusable_input_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["plugin", "test", "builtin:noop", "--config-json", "{oops"],
        vec!["plugin", "test", "builtin:noop", "--config-json", "[1]"],
        vec!["plugin", "test", "builtin:noop", "--set", "novalue"],
        vec!["plugin", "test", "builtin:noop", "--timeout", "soon"],
        vec!["plugin", "test", "builtin:noop", "--project", "nowhere"],
        vec!["plugin", "test", "nothing.wasm"],
    ] {
        let out = run(dir.path(), &args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("Error: "), "{out:?}");
    }
}

#[test]
fn check_and_test_give_up_on_a_describe_that_never_returns() {
    // The fixture's describe() sleeps for an hour inside a WASI call, where the epoch deadline
    // cannot interrupt it; only the host's own deadline brings the command back.
    let dir = tempfile::tempdir().unwrap();
    let slow = fixture("slow-describe").display().to_string();
    let late = format!("{slow}: describe() did not return within 10s");

    let out = run(dir.path(), &["plugin", "check", &slow]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&late), "{out:?}");

    let out = run(dir.path(), &["plugin", "test", &slow]);
    assert_eq!(out.code, 2, "{out:?}");
    let describe = out
        .stdout
        .lines()
        .find(|l| l.starts_with("describe"))
        .unwrap_or_else(|| panic!("no describe row: {out:?}"));
    assert!(describe.contains("FAIL"), "{describe}");
    assert!(describe.contains(&late), "{describe}");
}

#[test]
fn check_refuses_a_fifo_and_an_oversized_file_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO nobody writes to: opening it for reading would wait forever.
    let fifo = dir.path().join("pipe.wasm");
    stagecraft_tests::make_fifo(&fifo);
    let out = run(dir.path(), &["plugin", "check", "pipe.wasm"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("pipe.wasm is not a regular file"),
        "{out:?}"
    );

    // A component header followed by a hole one byte past the limit (sparse: no disk used).
    let huge = dir.path().join("huge.wasm");
    let file = std::fs::File::create(&huge).unwrap();
    std::io::Write::write_all(&mut &file, &[0, b'a', b's', b'm', 0x0d, 0, 1, 0]).unwrap();
    file.set_len(stagecraft::plugin::MAX_COMPONENT_BYTES + 1)
        .unwrap();
    let out = run(dir.path(), &["plugin", "check", "huge.wasm"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("huge.wasm is larger than 128MiB (the largest component stagecraft loads)"),
        "{out:?}"
    );
}

#[test]
fn check_and_test_bound_what_describe_answers() {
    // describe() answers with a 1 MiB name, version and description and 10,000 phases; what
    // the host keeps and prints is cut, and says so.
    let dir = tempfile::tempdir().unwrap();
    let loud = fixture("loud-describe").display().to_string();
    let out = run(dir.path(), &["plugin", "check", "--json", &loud]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.len() < 16 << 10, "{} bytes", out.stdout.len());
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let info = &json["info"];
    let mib = 1 << 20;
    assert_eq!(
        info["name"],
        format!("{}… [cut {} bytes]", "n".repeat(256), mib - 256)
    );
    assert_eq!(
        info["version"],
        format!("{}… [cut {} bytes]", "v".repeat(256), mib - 256)
    );
    assert_eq!(
        info["description"],
        format!("{}… [cut {} bytes]", "d".repeat(4096), mib - 4096)
    );
    let phases = info["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 65, "64 phases and the marker");
    assert_eq!(phases[63], "phase63");
    assert_eq!(phases[64], "… [cut 9936 phases]");

    let out = run(dir.path(), &["plugin", "test", &loud, "--phase", "phase1"]);
    assert!(out.stdout.len() < 16 << 10, "{} bytes", out.stdout.len());
    assert!(out.stdout.contains("… [cut 1048320 bytes]"), "{out:?}");
}

#[test]
fn a_plugin_built_for_contract_0_1_0_still_checks_tests_and_deploys() {
    let dir = tempfile::tempdir().unwrap();
    let old = fixture("contract-0-1-0").display().to_string();
    let out = run(dir.path(), &["plugin", "check", "--json", &old]);
    assert_eq!(out.code, 0, "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["contract"], "stagecraft:phase@0.1.0");
    assert!(json["imports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["name"] == "stagecraft:phase/host@0.1.0"));

    let out = run(dir.path(), &["plugin", "test", &old]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("0 failed"), "{out:?}");

    std::fs::write(
        dir.path().join("stagecraft.toml"),
        format!(
            "[environments.prod]\n[pipeline]\nphases = [\"rollout\"]\n\
             [phases.rollout]\nplugin = {old:?}\n"
        ),
    )
    .unwrap();
    let out = run(dir.path(), &["deploy", "--env", "prod", "--version", "v1"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("rollout v1"), "{out:?}");
}

#[test]
fn net_scenarios_pass_a_plugin_that_requests_its_url_and_fail_one_that_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &[
            "plugin",
            "test",
            "builtin:http-check",
            "--net-url",
            "url",
            "--set",
            "attempts=1",
            "--json",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let verdict = |name: &str| {
        json["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["scenario"] == name || s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {json:#}"))
            .clone()
    };
    assert_eq!(verdict("net-granted")["pass"], true, "{json:#}");
    let refused = verdict("net-refused");
    assert_eq!(refused["pass"], true, "{json:#}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("is not in this phase's net grant; add \"http://127.0.0.1:"),
        "{refused:#}"
    );

    // A plugin that never requests anything fails both.
    let out = run(
        dir.path(),
        &["plugin", "test", "builtin:noop", "--net-url", "url"],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.contains("net-granted      FAIL"), "{out:?}");
    assert!(out.stdout.contains("net-refused      FAIL"), "{out:?}");

    // Without --net-url, a plugin that imports wasi:http is told how to run them.
    let out = run(dir.path(), &["plugin", "test", "builtin:http-check"]);
    assert!(
        out.stdout
            .contains("not run: the plugin imports wasi:http; pass --net-url"),
        "{out:?}"
    );
}
