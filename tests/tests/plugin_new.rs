//! `stagecraft plugin new`: each language's scaffold builds as it is, with the toolchain its
//! README names, passes `stagecraft plugin test`, and makes its sample request (`check_url`)
//! through its `net` grant in a deploy; a non-empty directory is refused.
//!
//! Python and JavaScript use the toolchains scripts/toolchains installs under target/toolchains.
//! The Rust scaffold builds `--offline` with the workspace's Cargo.lock copied in and the target
//! directory host/build.rs uses, so its dependencies are already compiled and nothing is
//! downloaded.

use std::path::Path;
use std::process::Command;

use stagecraft_tests::http::TestServer;
use stagecraft_tests::{run, toolchain_program, wasm_plugins_dir, workspace_root, Run};

fn scaffold(parent: &Path, lang: &str, name: &str) -> std::path::PathBuf {
    let out = run(parent, &["plugin", "new", "--lang", lang, name]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!("plugin {name} in {name}")),
        "{out:?}"
    );
    let dir = parent.join(name);
    let wit = std::fs::read_to_string(dir.join("wit/phase.wit")).unwrap();
    let ours = std::fs::read_to_string(workspace_root().join("wit/phase.wit")).unwrap();
    assert_eq!(wit, ours, "the scaffold carries this stagecraft's contract");
    for dep in std::fs::read_dir(workspace_root().join("wit/deps")).unwrap() {
        let dep = dep.unwrap().path();
        let name = dep.file_name().unwrap();
        let copy = std::fs::read_to_string(dir.join("wit/deps").join(name))
            .unwrap_or_else(|e| panic!("wit/deps/{name:?} in the scaffold: {e}"));
        assert_eq!(copy, std::fs::read_to_string(&dep).unwrap(), "{name:?}");
    }
    dir
}

/// Run a build step; fail the test with its output when it fails.
fn build(cmd: &mut Command) {
    let out: Run = cmd.output().expect("spawn the build").into();
    assert_eq!(out.code, 0, "build failed: {cmd:?}\n{out:?}");
}

/// The scaffold's sample phase through the conformance kit, and its phase-specific behaviour:
/// greeting output on deploy, skipped on rollback, a phase error without config; then the kit's
/// network scenarios on its `check_url` request.
fn passes_plugin_test(cwd: &Path, wasm: &Path) {
    let wasm = wasm.display().to_string();
    let out = run(cwd, &["plugin", "test", &wasm, "--set", "target=world"]);
    assert_eq!(out.code, 0, "{out:?}");
    // The tenth is `net`, not run without --net-url: the scaffold imports wasi:http.
    assert!(out.stdout.contains("10 passed, 0 failed"), "{out:?}");
    assert!(
        out.stdout.contains("completed: greeted world for v2"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("skipped (nothing to undo on a rollback)"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("refused: config.target is missing"),
        "{out:?}"
    );

    let out = run(
        cwd,
        &[
            "plugin",
            "test",
            &wasm,
            "--set",
            "target=world",
            "--net-url",
            "check_url",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("11 passed, 0 failed"), "{out:?}");
    let row = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} row: {out:?}"))
            .to_string()
    };
    assert!(
        row("net-granted").contains("the scenarios reached the granted"),
        "{out:?}"
    );
    assert!(
        row("net-refused").contains("refused, naming the grant: check_url http://127.0.0.1:"),
        "{out:?}"
    );
}

/// The scaffold's sample request in a deploy: with `config.check_url` granted it GETs the URL
/// and completes on a 2xx, fails on a 500, and without the grant is refused, told what to add.
fn checks_its_url_through_the_net_grant(wasm: &Path) {
    let server = TestServer::start();
    let deploy = |path: &str, net: &str| -> Run {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("stagecraft.toml"),
            format!(
                "[environments.prod]\n[phases.build]\nplugin = {:?}\n\
                 config = {{ target = \"world\", check_url = {:?} }}\n\
                 [phases.build.grants]\nnet = [{net}]\n",
                wasm.to_str().unwrap(),
                server.url(path),
            ),
        )
        .unwrap();
        run(dir.path(), &["deploy", "--env", "prod", "--version", "v1"])
    };
    let origin = format!("{:?}", server.origin());

    let out = deploy("/ok", &origin);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("greeted world for v1"), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("{} answered 200", server.url("/ok"))),
        "{out:?}"
    );
    assert_eq!(server.seen_for("/ok").len(), 1);

    let out = deploy("/status/500", &origin);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "check_url {} answered 500",
            server.url("/status/500")
        )),
        "{out:?}"
    );

    let out = deploy("/ok", "");
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "add {origin} to the phase's [phases.<name>.grants] net to allow it"
        )),
        "{out:?}"
    );
    assert_eq!(
        server.seen_for("/ok").len(),
        1,
        "the refused request never left"
    );
}

/// The README's build command is the one the test runs, and it says to grant `net`.
fn readme_says(dir: &Path, command: &str) {
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.contains(command), "{readme}");
    assert!(readme.contains("stagecraft plugin test"), "{readme}");
    assert!(readme.contains("--net-url check_url"), "{readme}");
    assert!(
        readme.contains("net = [\"https://status.example.com\"]"),
        "{readme}"
    );
}

#[test]
fn the_python_scaffold_builds_and_passes_plugin_test() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = scaffold(tmp.path(), "python", "greet-py");
    readme_says(
        &dir,
        "componentize-py -d wit -w phase-plugin componentize app -o greet-py.wasm",
    );
    build(
        Command::new(toolchain_program("python/bin/componentize-py"))
            .current_dir(&dir)
            .args(["-d", "wit", "-w", "phase-plugin", "componentize", "app"])
            .args(["-o", "greet-py.wasm"]),
    );
    passes_plugin_test(tmp.path(), &dir.join("greet-py.wasm"));
    checks_its_url_through_the_net_grant(&dir.join("greet-py.wasm"));
}

#[test]
fn the_javascript_scaffold_builds_and_passes_plugin_test() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = scaffold(tmp.path(), "js", "greet-js");
    readme_says(&dir, "npm run build");
    // `npm run build` runs the package.json script with the local node_modules/.bin on PATH;
    // run that script with the pinned toolchain's node_modules instead of installing again.
    let package: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("package.json")).unwrap()).unwrap();
    let script = package["scripts"]["build"].as_str().unwrap();
    assert!(script.starts_with("componentize-js plugin.js "), "{script}");
    let bin = toolchain_program("js/node_modules/.bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    build(
        Command::new("sh")
            .current_dir(&dir)
            .env("PATH", path)
            .args(["-c", script]),
    );
    passes_plugin_test(tmp.path(), &dir.join("greet-js.wasm"));
    checks_its_url_through_the_net_grant(&dir.join("greet-js.wasm"));
}

#[test]
fn the_rust_scaffold_builds_outside_the_workspace_and_passes_plugin_test() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = scaffold(tmp.path(), "rust", "greet-rs");
    readme_says(&dir, "cargo build --target wasm32-wasip2 --release");
    std::fs::copy(workspace_root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let target_dir = wasm_plugins_dir();
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // Nothing of the test run's own cargo invocation may leak into the plugin's build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME") || key == "RUSTFLAGS" {
            cargo.env_remove(key.as_ref());
        }
    }
    build(
        cargo
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target_dir)
            .args([
                "build",
                "--target",
                "wasm32-wasip2",
                "--release",
                "--offline",
            ]),
    );
    let wasm = target_dir.join("wasm32-wasip2/release/greet_rs.wasm");
    passes_plugin_test(tmp.path(), &wasm);
    checks_its_url_through_the_net_grant(&wasm);
}

#[test]
fn new_refuses_a_non_empty_directory_and_bad_names() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("taken")).unwrap();
    std::fs::write(tmp.path().join("taken/app.py"), "mine").unwrap();
    let out = run(tmp.path(), &["plugin", "new", "--lang", "python", "taken"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("taken is not empty"), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("taken/app.py")).unwrap(),
        "mine"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path().join("taken")).unwrap().count(),
        1
    );

    let out = run(tmp.path(), &["plugin", "new", "--lang", "rust", "2fast"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("cannot name a plugin"), "{out:?}");
    assert!(!tmp.path().join("2fast").exists());

    let out = run(
        tmp.path(),
        &[
            "plugin",
            "new",
            "--lang",
            "js",
            "--name",
            "site-check",
            "2fast",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let package = std::fs::read_to_string(tmp.path().join("2fast/package.json")).unwrap();
    assert!(package.contains("\"name\": \"site-check\""), "{package}");

    let out = run(tmp.path(), &["plugin", "new", "--lang", "cobol", "x"]);
    assert_eq!(out.code, 1, "{out:?}");
}
