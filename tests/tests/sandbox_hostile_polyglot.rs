//! The hostile suite (issue 10) from Python and JavaScript plugins: the attacks of
//! sandbox_hostile.rs that these languages can make — exec through the host import, escaping
//! the file grants through WASI, planting a symlink for a later phase, huge strings and terminal
//! escapes — with the same aftermath checks (the state exactly as the host wrote it, no secret
//! in any output, no process left, a phase error naming the refusal).
//!
//! The fixtures are plugins/fixtures/hostile-py and hostile-js, built by
//! scripts/build-polyglot-plugins. Every attack of a language runs in one test (the component
//! compiles once; each attack gets a fresh project) and all failures are reported together.

use std::path::{Path, PathBuf};

use serde_json::Value;
use stagecraft_tests::hostile::*;
use stagecraft_tests::polyglot_plugin;

fn noop() -> PathBuf {
    PathBuf::from("builtin:noop")
}

/// Named attacks, each a closure that panics when the attack was not stopped.
type Attacks<'a> = Vec<(&'static str, Box<dyn Fn() + 'a>)>;

/// Run every case, then fail once listing each case that failed and why.
fn run_all(language: &str, cases: Attacks<'_>) {
    let mut failed = Vec::new();
    for (name, case) in &cases {
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(case)) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{name}: {why}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {language} attacks were not stopped:\n\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n\n")
    );
}

/// `build` runs `plugin` with `config` and `grants`, `rollout` is noop; deploy v1.
fn deploy_build(
    p: &HostileProject,
    plugin: &Path,
    config: &[(&str, &str)],
    grants: &[(&str, &str)],
) -> stagecraft_tests::Run {
    let mut build = phase("build", plugin, config);
    for (kind, value) in grants {
        build = build.grant(kind, &[value]);
    }
    p.write_manifest(&[build, phase("rollout", &noop(), &[])]);
    p.deploy("v1")
}

/// The build phase failed (three commits), its error naming `names` and, when `refused`, saying
/// the system refused; the aftermath is clean.
fn assert_stopped(
    p: &HostileProject,
    out: &stagecraft_tests::Run,
    names: &[&str],
    refused: bool,
    forbidden: &[&str],
) {
    if let Ok(doc) = serde_json::from_slice::<Value>(&std::fs::read(p.state_file()).unwrap()) {
        let (status, detail) = phase_of(newest_release(&doc), "build");
        assert_eq!(status, "failed", "the attack was not stopped: {detail:#}");
    }
    let doc = p.assert_aftermath(out, 3, forbidden, "attack");
    let release = newest_release(&doc);
    assert_eq!(phase_of(release, "rollout").0, "skipped");
    assert_eq!(out.code, 2, "{out:?}");
    let error = phase_of(release, "build").1["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for name in names {
        assert!(
            error.contains(name),
            "the error does not name {name:?}: {error:?}"
        );
    }
    if refused {
        assert!(
            [
                "Permission denied",
                "Operation not permitted",
                "not permitted",
                "denied"
            ]
            .iter()
            .any(|w| error.contains(w)),
            "the error does not say access was refused: {error:?}"
        );
    }
}

fn exec_at_the_state(plugin: &Path) {
    let p = HostileProject::new();
    let script = "cat .stagecraft/releases.json; \
                  printf tampered-%s $((1000+337)) >> .stagecraft/releases.json";
    let args = argv(&["-c", script]);
    let out = deploy_build(
        &p,
        plugin,
        &[("mode", "exec"), ("program", "sh"), ("argv", &args)],
        &[("exec", "sh")],
    );
    assert_stopped(&p, &out, &["releases.json"], true, &["tampered-1337"]);
}

fn exec_at_outside_files(plugin: &Path) {
    type Target = fn(&HostileProject) -> PathBuf;
    let targets: [Target; 3] = [
        |p| p.outside_secret_file(),
        |p| p.home_secret_file(),
        |_| PathBuf::from("/etc/shadow"),
    ];
    for target in targets {
        let p = HostileProject::new();
        let target = target(&p);
        let script = format!("cat {}", target.display());
        let args = argv(&["-c", &script]);
        let out = deploy_build(
            &p,
            plugin,
            &[("mode", "exec"), ("program", "sh"), ("argv", &args)],
            &[("exec", "sh")],
        );
        assert_stopped(&p, &out, &[&target.display().to_string()], true, &[]);
    }
}

fn exec_not_granted(plugin: &Path) {
    let p = HostileProject::new();
    let out = deploy_build(
        &p,
        plugin,
        &[
            ("mode", "exec"),
            ("program", "sh"),
            ("argv", "-c\u{1f}true"),
        ],
        &[("exec", "true")],
    );
    assert_stopped(&p, &out, &["`sh`", "exec grant"], false, &[]);
}

/// WASI reads beyond the grants: up out of a granted directory into the state, an absolute
/// path outside the project, the planted `$HOME` file.
fn wasi_reads_outside(plugin: &Path) {
    type Target = fn(&HostileProject) -> String;
    let targets: [Target; 4] = [
        |_| "site/../.stagecraft/releases.json".into(),
        |_| "../.stagecraft/releases.json".into(),
        |p| p.outside_secret_file().display().to_string(),
        |p| p.home_secret_file().display().to_string(),
    ];
    for target in targets {
        let p = HostileProject::new();
        let target = target(&p);
        std::fs::create_dir_all(p.root().join("site")).unwrap();
        let out = deploy_build(
            &p,
            plugin,
            &[("mode", "read"), ("path", &target)],
            &[("read", "site")],
        );
        assert_stopped(&p, &out, &[&target], false, &[]);
    }
}

/// The plugin plants `dist/site -> ../.stagecraft` in its write grant; the next phase, granted
/// `dist/site`, must fail naming the grant and the link, before it can append to the state.
fn planted_link(plugin: &Path) {
    let p = HostileProject::new();
    p.write_manifest(&[
        phase(
            "build",
            plugin,
            &[
                ("mode", "plant-link"),
                ("target", "../.stagecraft"),
                ("link", "dist/site"),
            ],
        )
        .grant("write", &["dist"]),
        phase(
            "rollout",
            &fixture("hostile"),
            &[
                ("mode", "fs"),
                ("op", "append"),
                ("path", "dist/site/releases.json"),
            ],
        )
        .grant("write", &["dist/site"]),
    ]);
    let out = p.deploy("v1");
    let doc = p.assert_aftermath(&out, 5, &["appended by hostile"], "planted link");
    let release = newest_release(&doc);
    let (status, detail) = phase_of(release, "build");
    assert_eq!(status, "completed", "planting failed: {detail:#}");
    let (status, detail) = phase_of(release, "rollout");
    assert_eq!(status, "failed", "{detail:#}\n{out:?}");
    let error = detail["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("dist/site") && error.contains("symbolic link"),
        "the error must name the grant and the link: {error:?}"
    );
}

/// `mib` MiB of U+0001 as `field`: the state stays small and says what was cut.
fn huge(plugin: &Path, field: &str, key: &str, mib: usize) {
    let p = HostileProject::new();
    let repeat = (mib << 20).to_string();
    let out = deploy_build(
        &p,
        plugin,
        &[
            ("mode", "text"),
            ("field", field),
            ("text", "\u{1}"),
            ("repeat", &repeat),
        ],
        &[],
    );
    let failed = out.code != 0;
    let doc = p.assert_aftermath(&out, if failed { 3 } else { 5 }, &[], field);
    let size = std::fs::metadata(p.state_file()).unwrap().len();
    assert!(
        size < 1 << 20,
        "{field}: the state file grew to {size} bytes"
    );
    assert!(
        out.stdout.len() < 64 << 10,
        "{field}: {} bytes of stdout",
        out.stdout.len()
    );
    assert!(
        out.stderr.len() < 4 << 20,
        "{field}: {} bytes of stderr",
        out.stderr.len()
    );
    let kept = phase_of(newest_release(&doc), "build").1[key]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        kept.contains("[cut "),
        "{field}: no cut marker in {} bytes of {key}",
        kept.len()
    );
}

/// `count` exec calls naming a `mib` MiB program: refused, and the refusals stay bounded.
fn huge_exec_names(plugin: &Path, mib: usize, count: usize) {
    let p = HostileProject::new();
    let repeat = (mib << 20).to_string();
    let count = count.to_string();
    let refused = format!("{count} of {count} exec calls refused");
    let out = deploy_build(
        &p,
        plugin,
        &[
            ("mode", "text"),
            ("field", "exec-program"),
            ("text", "x"),
            ("repeat", &repeat),
            ("count", &count),
        ],
        &[],
    );
    assert_stopped(&p, &out, &[&refused, "[cut "], false, &[]);
    let size = std::fs::metadata(p.state_file()).unwrap().len();
    assert!(size < 1 << 20, "the state file grew to {size} bytes");
    assert!(
        out.stderr.len() < 4 << 20,
        "{} bytes of stderr",
        out.stderr.len()
    );
}

/// The default text (title, clear screen, colour, carriage return, a forged phase line) as
/// `field`: shown escaped, each phase one line.
fn escapes(plugin: &Path, field: &str) {
    let p = HostileProject::new();
    let out = deploy_build(&p, plugin, &[("mode", "text"), ("field", field)], &[]);
    let failed = out.code != 0;
    p.assert_aftermath(&out, if failed { 3 } else { 5 }, &[], field);
    assert_no_raw_controls(&out.stdout, &format!("{field}: stdout"));
    assert_no_raw_controls(&out.stderr, &format!("{field}: stderr"));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), if failed { 2 } else { 4 }, "{field}: {out:?}");
    for line in out.stderr.lines() {
        assert!(
            line.starts_with("[build ") || line.starts_with("Error: "),
            "{field}: an untagged stderr line {line:?}"
        );
    }
}

/// The sizes of a language's text attacks: MiB of each huge string, and (MiB, calls) of the
/// exec-program attack. The JavaScript engine itself takes about a second per 4 MiB of string
/// it hands the host, so its attacks are smaller; the bounds they check are kilobytes either way.
struct Sizes {
    text_mib: usize,
    exec_names: (usize, usize),
}

/// Every attack of a language.
fn attacks(plugin: &Path, stdout: bool, sizes: Sizes) -> Attacks<'_> {
    let mib = sizes.text_mib;
    let exec_names = sizes.exec_names;
    let mut cases: Attacks<'_> = vec![
        (
            "exec at the state",
            Box::new(move || exec_at_the_state(plugin)),
        ),
        (
            "exec at files outside the grants",
            Box::new(move || exec_at_outside_files(plugin)),
        ),
        (
            "exec of an ungranted program",
            Box::new(move || exec_not_granted(plugin)),
        ),
        (
            "WASI reads outside the grants",
            Box::new(move || wasi_reads_outside(plugin)),
        ),
        ("a planted symlink", Box::new(move || planted_link(plugin))),
        (
            "a huge summary",
            Box::new(move || huge(plugin, "summary", "summary", mib)),
        ),
        (
            "a huge skip reason",
            Box::new(move || huge(plugin, "skip", "summary", mib)),
        ),
        (
            "a huge error message",
            Box::new(move || huge(plugin, "error", "error", mib)),
        ),
        (
            "huge error details",
            Box::new(move || huge(plugin, "details", "error_details", mib)),
        ),
        (
            "huge exec program names",
            Box::new(move || huge_exec_names(plugin, exec_names.0, exec_names.1)),
        ),
        (
            "escapes in a summary",
            Box::new(move || escapes(plugin, "summary")),
        ),
        (
            "escapes in a skip reason",
            Box::new(move || escapes(plugin, "skip")),
        ),
        (
            "escapes in an error",
            Box::new(move || escapes(plugin, "error")),
        ),
        (
            "escapes in a log line",
            Box::new(move || escapes(plugin, "log")),
        ),
    ];
    if stdout {
        cases.push((
            "escapes on stdout",
            Box::new(move || escapes(plugin, "stdout")),
        ));
    }
    cases
}

#[test]
fn python_plugin_attacks_are_stopped() {
    let plugin = polyglot_plugin("fixtures", "hostile-py");
    let sizes = Sizes {
        text_mib: 50,
        exec_names: (64, 8),
    };
    run_all("Python", attacks(&plugin, true, sizes));
}

#[test]
fn javascript_plugin_attacks_are_stopped() {
    let plugin = polyglot_plugin("fixtures", "hostile-js");
    let sizes = Sizes {
        text_mib: 4,
        exec_names: (4, 2),
    };
    run_all("JavaScript", attacks(&plugin, false, sizes));
}
