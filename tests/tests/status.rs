//! `stagecraft status` through the built binary, on both backends: what is live, the last
//! failure, an unfinished release, and who holds the lease (a real holder process).

mod state_common;

use serde_json::Value;
use stagecraft::state::{StateStoreExt, StoreTarget, Window};
use stagecraft_tests::project::Project;
use state_common::suite::holder;

fn status_json(project: &Project, args: &[&str]) -> Value {
    let mut all = vec!["status", "--json"];
    all.extend_from_slice(args);
    let out = project.run(&all);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

fn environment<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {status}"))
}

fn live_failed_held_and_interrupted(project: Project) {
    // Nothing deployed yet: every declared environment, nothing live, exit 0.
    let out = project.run(&["status"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .starts_with("prod\n  live:          none: no releases yet\n")
            && out.stdout.contains("\nstaging\n"),
        "{}",
        out.stdout
    );

    project.deploy("prod", "v1");
    project.deploy("prod", "bad");
    let status = status_json(&project, &["--env", "prod"]);
    assert_eq!(status["environments"].as_array().unwrap().len(), 1);
    let prod = environment(&status, "prod");
    assert_eq!(prod["live"]["version"], "v1");
    assert_eq!(prod["current"]["version"], "bad");
    assert_eq!(prod["last_failure"]["phase"], "build");
    assert_eq!(prod["last_failure"]["release"]["version"], "bad");
    assert!(prod["last_failure"]["error"]
        .as_str()
        .unwrap()
        .contains("exit"));
    assert_eq!(
        prod["lease"],
        serde_json::json!({"held": false, "holder": null})
    );
    assert_eq!(prod["unfinished"], serde_json::json!([]));
    let text = project.run(&["status", "--env", "prod"]).stdout;
    assert!(text.contains("  last failure:  rel-"), "{text}");
    assert!(text.contains("  bad, failed in build: "), "{text}");

    // A holder process: the lease is held, and by whom.
    let spec = project.store_spec();
    let (mut child, _lines, ready) = holder("lease", &spec, "prod");
    assert_eq!(ready, "leased prod");
    let prod = status_json(&project, &["--env", "prod"])["environments"][0].clone();
    assert_eq!(prod["lease"]["held"], true);
    assert_eq!(prod["lease"]["holder"]["pid"], child.id());
    let text = project.run(&["status", "--env", "prod"]).stdout;
    assert!(
        text.contains(&format!("  lease:         held by pid {} on ", child.id())),
        "{text}"
    );
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let prod = status_json(&project, &["--env", "prod"])["environments"][0].clone();
    assert_eq!(prod["lease"]["held"], false, "let go: {prod}");

    // A release left unfinished with nobody holding the lease (a killed deploy, not yet
    // recovered) is shown as interrupted; status recovers nothing.
    let store = StoreTarget::parse(&spec, "the test").open().unwrap();
    store
        .transact_env("staging", Window::Recent(&[]), |s| {
            let phases = vec!["build".to_string(), "finalize".to_string()];
            s.push_release(
                "staging",
                "s1",
                "",
                &phases,
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
            Ok(())
        })
        .unwrap();
    let out = project.run(&["status", "--env", "staging"]);
    assert!(
        out.stdout.contains(
            ", build pending; interrupted (no deploy holds the lease): the \
             next deploy or rollback of staging marks it failed"
        ),
        "{out:?}"
    );
    let staging = status_json(&project, &["--env", "staging"])["environments"][0].clone();
    assert_eq!(staging["unfinished"][0]["version"], "s1");
    assert_eq!(staging["live"], Value::Null);
    assert_eq!(
        project.releases("staging").len(),
        1,
        "status changed nothing"
    );
}

#[test]
fn file_backend_shows_live_failed_held_and_interrupted() {
    live_failed_held_and_interrupted(Project::file());
}

#[test]
fn postgres_backend_shows_live_failed_held_and_interrupted() {
    live_failed_held_and_interrupted(Project::postgres("status"));
}

#[test]
fn an_unknown_environment_is_refused_naming_the_ones_there_are() {
    let project = Project::file();
    project.deploy("prod", "v1");
    let out = project.run(&["status", "--env", "prdo"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("unknown environment \"prdo\"")
            && out
                .stderr
                .contains("(environments: prod, staging). Did you mean \"prod\"?"),
        "{}",
        out.stderr
    );
    // A declared environment without releases is not unknown.
    assert_eq!(project.run(&["status", "--env", "staging"]).code, 0);
}

/// Who deployed and why: the user and host, the CI run from its variables (with none of them
/// set, none), and `--message`; shown by `releases show` (text and JSON) and `status`.
#[test]
fn who_and_why_are_recorded_with_each_release() {
    let project = Project::file();
    let deploy = |version: &str, vars: &[(&str, &str)], extra: &[&str]| {
        let mut cmd = project.command();
        for var in stagecraft::state::CI_VARIABLES {
            cmd.env_remove(var);
        }
        cmd.env("USER", "alice").envs(vars.iter().copied());
        cmd.args(["deploy", "--env", "prod", "--version", version])
            .args(extra);
        let out: stagecraft_tests::Run = cmd.output().unwrap().into();
        assert_eq!(out.code, 0, "{out:?}");
    };
    deploy("v1", &[], &[]);
    deploy(
        "v2",
        &[
            ("GITLAB_CI", "true"),
            ("CI_JOB_URL", "https://gitlab.example/acme/shop/-/jobs/9"),
            ("GITLAB_USER_LOGIN", "bob"),
        ],
        &["--message", "  fix the checkout total  "],
    );
    let releases = project.releases("prod");
    let show = |id: &str| -> Value {
        let out = project.run(&["releases", "show", id, "--json"]);
        serde_json::from_str(&out.stdout).unwrap()
    };
    let v1 = show(&releases[1].0);
    assert_eq!(v1["created_by"]["user"], "alice");
    assert!(!v1["created_by"]["host"].as_str().unwrap().is_empty());
    assert_eq!(v1["created_by"]["ci"], Value::Null);
    assert_eq!(v1["message"], Value::Null);
    let v2 = show(&releases[0].0);
    assert_eq!(
        v2["created_by"]["ci"],
        serde_json::json!({
            "system": "gitlab-ci",
            "url": "https://gitlab.example/acme/shop/-/jobs/9",
            "actor": "bob"
        })
    );
    assert_eq!(v2["message"], "fix the checkout total");
    let text = project.run(&["releases", "show", &releases[0].0]).stdout;
    assert!(
        text.contains(" (gitlab-ci https://gitlab.example/acme/shop/-/jobs/9, by bob)\n")
            && text.contains("\nMessage:          fix the checkout total\n"),
        "{text}"
    );
    let status = project.run(&["status", "--env", "prod"]).stdout;
    assert!(
        status.contains(", by bob): \"fix the checkout total\"\n"),
        "{status}"
    );
    // A message that is empty or more than one line is refused before anything is written.
    for bad in ["  ", "two\nlines"] {
        let out = project.run(&["deploy", "--env", "prod", "--version", "v3", "-m", bad]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains("--message"), "{}", out.stderr);
    }
    assert_eq!(project.releases("prod").len(), 2);
}
