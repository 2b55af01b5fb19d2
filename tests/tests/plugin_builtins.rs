//! Every built-in plugin, run through the host as the pipeline runs it: `noop`, `exec`,
//! `render` and `switch` inside their grants only.

mod plugin_support;

use std::path::PathBuf;

use plugin_support::*;
use stagecraft::plugin::*;

fn builtin(host: &PluginHost, name: &str) -> LoadedPlugin {
    host.load(&PluginSource::Builtin(name.into())).unwrap()
}

fn run_builtin(
    host: &PluginHost,
    name: &str,
    ctx: &PhaseContext,
    sandbox: &Sandbox,
) -> (PhaseRun, Lines) {
    let lines = Lines::default();
    let plugin = builtin(host, name);
    (host.run(&plugin, ctx, sandbox, &lines), lines)
}

fn exec_grants(programs: &[&str]) -> Grants {
    Grants {
        exec: programs.iter().map(|p| p.to_string()).collect(),
        ..Grants::default()
    }
}

#[test]
fn every_builtin_describes_itself() {
    let host = shared_host();
    assert_eq!(
        builtin_names(),
        vec!["noop", "exec", "render", "switch", "http-check"]
    );
    for name in builtin_names() {
        let info = host.describe(&builtin(&host, name)).unwrap();
        assert_eq!(info.name, name);
        assert!(!info.description.is_empty());
    }
}

#[test]
fn exec_substitutes_placeholders_without_a_shell() {
    let host = shared_host();
    let project = Project::new();
    let ctx = context(
        "build",
        &[(
            "command",
            "echo 'v={{version}} env={{environment}}' {{release_id}} {{phase}} $HOME;|",
        )],
    );
    let (run, lines) = run_builtin(
        &host,
        "exec",
        &ctx,
        &project.sandbox(exec_grants(&["echo"])),
    );
    let report = run.result.unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    let log = lines.text();
    assert!(
        log.contains("v=v2 env=prod rel-20260101-000000000 build $HOME;|"),
        "{log}"
    );
}

#[test]
fn exec_fails_with_the_tail_of_stderr_on_non_zero_exit() {
    let host = shared_host();
    let project = Project::new();
    let ctx = context(
        "build",
        &[(
            "command",
            "sh -c 'echo first >&2; echo last words >&2; exit 3'",
        )],
    );
    let (run, _) = run_builtin(&host, "exec", &ctx, &project.sandbox(exec_grants(&["sh"])));
    match run.result {
        Err(PhaseFailure::Guest { message, details }) => {
            assert!(message.contains("exited with status 3"), "{message}");
            let details = details.unwrap();
            assert!(details.ends_with("last words"), "{details}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn exec_refuses_ungranted_programs_and_missing_config() {
    let host = shared_host();
    let project = Project::new();
    let ctx = context("build", &[("command", "make dist")]);
    let (run, _) = run_builtin(&host, "exec", &ctx, &project.sandbox(Grants::default()));
    let msg = failure(&run);
    assert!(
        msg.contains("`make`") && msg.contains("exec grant"),
        "{msg}"
    );

    let (run, _) = run_builtin(
        &host,
        "exec",
        &context("build", &[]),
        &project.sandbox(Grants::default()),
    );
    assert!(failure(&run).contains("config.command is not set"));

    let ctx = context("build", &[("command", "echo 'unterminated")]);
    let (run, _) = run_builtin(
        &host,
        "exec",
        &ctx,
        &project.sandbox(exec_grants(&["echo"])),
    );
    assert!(failure(&run).contains("unterminated single quote"));
}

fn template(project: &Project) {
    let t = project.root().join("templates");
    std::fs::create_dir_all(t.join("sub")).unwrap();
    std::fs::write(
        t.join("index.html"),
        "<h1>{{version}} on {{environment}}</h1>{{release_id}} {{commit}} {{var.region}} {{unknown}}",
    )
    .unwrap();
    std::fs::write(t.join("sub/app.conf"), "region={{var.region}}\n").unwrap();
    std::fs::write(t.join("logo.bin"), [0xffu8, 0xfe, b'{', b'{']).unwrap();
}

fn render_sandbox(project: &Project) -> Sandbox {
    project.sandbox(grants_rw(&["templates"], &["releases"]))
}

#[test]
fn render_copies_the_template_into_a_version_directory() {
    let host = shared_host();
    let project = Project::new();
    template(&project);
    let ctx = context("build", &[("source", "templates"), ("dest", "releases")]);
    let (run, _) = run_builtin(&host, "render", &ctx, &render_sandbox(&project));
    let report = run.result.unwrap();
    assert_eq!(report.outputs["path"], "releases/v2");
    assert!(
        report.summary.contains("rendered 3 files"),
        "{}",
        report.summary
    );
    let out = project.root().join("releases/v2");
    assert_eq!(
        std::fs::read_to_string(out.join("index.html")).unwrap(),
        "<h1>v2 on prod</h1>rel-20260101-000000000 c0ffee eu {{unknown}}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("sub/app.conf")).unwrap(),
        "region=eu\n"
    );
    assert_eq!(
        std::fs::read(out.join("logo.bin")).unwrap(),
        vec![0xffu8, 0xfe, b'{', b'{']
    );

    // Re-running converges on the same tree.
    let (again, _) = run_builtin(&host, "render", &ctx, &render_sandbox(&project));
    assert_eq!(again.result.unwrap(), report);
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec!["index.html", "logo.bin", "sub"]);
}

#[test]
fn render_outside_its_grants_fails_with_a_grant_hint() {
    let host = shared_host();
    let project = Project::new();
    template(&project);
    let ctx = context("build", &[("source", "templates"), ("dest", "releases")]);
    // No read grant for the templates.
    let (run, _) = run_builtin(
        &host,
        "render",
        &ctx,
        &project.sandbox(grants_rw(&[], &["releases"])),
    );
    assert!(failure(&run).contains("read grant"));
    // Only a read grant for the destination.
    std::fs::create_dir_all(project.root().join("releases")).unwrap();
    let (run, _) = run_builtin(
        &host,
        "render",
        &ctx,
        &project.sandbox(grants_rw(&["templates", "releases"], &[])),
    );
    assert!(failure(&run).contains("write grant"));
    assert!(!project.root().join("releases/v2").exists());
}

fn switch_ctx(version: &str, rollback: Option<&str>) -> PhaseContext {
    let mut ctx = context(
        "rollout",
        &[("releases", "releases"), ("current", "current")],
    );
    ctx.release.version = version.into();
    if let Some(target) = rollback {
        ctx.operation = Operation::Rollback;
        ctx.rollback_target = Some(RollbackTarget {
            release_id: "rel-20250101-000000000".into(),
            version: target.into(),
            commit: "old".into(),
        });
    }
    ctx
}

#[test]
fn switch_points_current_at_the_version_atomically_and_rolls_back() {
    let host = shared_host();
    let project = Project::new();
    let root = project.root();
    for v in ["v1", "v2"] {
        std::fs::create_dir_all(root.join("releases").join(v)).unwrap();
    }
    let sandbox = project.sandbox(grants_rw(&[], &["."]));
    let (run1, _) = run_builtin(&host, "switch", &switch_ctx("v1", None), &sandbox);
    assert!(run1.result.is_ok(), "{:?}", run1.result);
    assert_eq!(
        std::fs::read_link(root.join("current")).unwrap(),
        PathBuf::from("releases/v1")
    );
    let (run2, _) = run_builtin(&host, "switch", &switch_ctx("v2", None), &sandbox);
    let report = run2.result.unwrap();
    assert_eq!(report.outputs["current"], "releases/v2");
    assert_eq!(report.outputs["previous"], "releases/v1");
    assert_eq!(
        std::fs::read_link(root.join("current")).unwrap(),
        PathBuf::from("releases/v2")
    );
    // Rollback to v1: the target's version, whatever the release itself says.
    let (run3, _) = run_builtin(&host, "switch", &switch_ctx("v1", Some("v1")), &sandbox);
    assert!(run3.result.is_ok());
    assert_eq!(
        std::fs::read_link(root.join("current")).unwrap(),
        PathBuf::from("releases/v1")
    );
    // No temporary links left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".switch-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn switch_refuses_a_missing_version_and_a_real_directory() {
    let host = shared_host();
    let project = Project::new();
    let root = project.root();
    std::fs::create_dir_all(root.join("releases/v2")).unwrap();
    let sandbox = project.sandbox(grants_rw(&[], &["."]));
    let (run1, _) = run_builtin(&host, "switch", &switch_ctx("v9", None), &sandbox);
    assert!(failure(&run1).contains("releases/v9 does not exist"));
    std::fs::create_dir_all(root.join("current")).unwrap();
    let (run2, _) = run_builtin(&host, "switch", &switch_ctx("v2", None), &sandbox);
    assert!(failure(&run2).contains("not a symlink"));
    // Without a write grant nothing can be switched.
    std::fs::remove_dir(root.join("current")).unwrap();
    let (run3, _) = run_builtin(
        &host,
        "switch",
        &switch_ctx("v2", None),
        &project.sandbox(grants_rw(&["."], &[])),
    );
    assert!(failure(&run3).contains("write grant"));
    assert!(!root.join("current").exists());
}
