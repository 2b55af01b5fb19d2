//! `[deploy] on_failure = "rollback"`: a deploy whose phase fails is followed at once, under the
//! same lease, by a rollback to the environment's last fully deployed release; both records name
//! each other, the command exits 2 naming both releases, and nothing is retried.
//!
//! The project's build runs `test ! -e flags/fail-<version>`, so a test makes any version fail
//! (the deploy, or the rollback that redeploys an earlier version) by creating its flag file.

use serde_json::Value;
use stagecraft_tests::project::Project;
use stagecraft_tests::Run;

/// `prod` rolls back on failure (from `[deploy]`); `staging` overrides it with `stop`.
fn manifest(p: &Project) -> String {
    let backend = if p.postgres.is_some() {
        "[state]\nbackend = \"postgres\"\n"
    } else {
        ""
    };
    format!(
        "[deploy]\non_failure = \"rollback\"\n\
         [environments.prod]\n[environments.staging]\non_failure = \"stop\"\n\
         [phases.build]\nplugin = \"builtin:exec\"\n\
         config = {{ command = \"test ! -e flags/fail-{{{{version}}}}\" }}\n\
         [phases.build.grants]\nexec = [\"test\"]\nread = [\"flags\"]\n\
         [phases.finalize]\nplugin = \"builtin:noop\"\n{backend}"
    )
}

fn project(p: Project) -> Project {
    std::fs::create_dir_all(p.path().join("flags")).unwrap();
    std::fs::write(p.path().join("stagecraft.toml"), manifest(&p)).unwrap();
    p
}

fn fail(p: &Project, version: &str) {
    std::fs::write(p.path().join(format!("flags/fail-{version}")), "").unwrap();
}

fn deploy(p: &Project, env: &str, version: &str, more: &[&str]) -> Run {
    let mut args = vec!["deploy", "--env", env, "--version", version];
    args.extend_from_slice(more);
    p.run(&args)
}

fn show(p: &Project, id: &str) -> Value {
    let out = p.run(&["releases", "show", id, "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

fn rolls_back_to_the_live_release_and_links_both_records(p: Project) {
    let p = project(p);
    assert_eq!(deploy(&p, "prod", "v1", &[]).code, 0);
    fail(&p, "v2");
    let out = deploy(&p, "prod", "v2", &[]);
    assert_eq!(out.code, 2, "{out:?}");

    let history = p.releases("prod");
    let versions: Vec<&str> = history.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(versions, ["v1", "v2", "v1"], "newest first: {history:?}");
    let (rollback_id, failed_id, good_id) = (&history[0].0, &history[1].0, &history[2].0);

    let rollback = show(&p, rollback_id);
    assert_eq!(rollback["operation"], "rollback");
    assert_eq!(rollback["status"], "completed");
    assert_eq!(rollback["live"], true);
    assert_eq!(rollback["rollback_target"], good_id.as_str());
    assert_eq!(rollback["auto_rollback_of"], failed_id.as_str());
    assert_eq!(
        rollback["plan_of"],
        good_id.as_str(),
        "it ran v1's recorded plan"
    );
    assert_eq!(
        rollback["message"],
        format!("automatic rollback: release {failed_id} failed in phase build").as_str()
    );
    let failed = show(&p, failed_id);
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["auto_rolled_back_by"], rollback_id.as_str());

    assert!(
        out.stderr.contains(&format!(
            "Release {failed_id} failed in phase build; rolling prod back automatically to \
             {good_id} (v1), its last fully deployed release, with its recorded plan \
             (on_failure = \"rollback\")"
        )),
        "{out:?}"
    );
    assert!(
        out.stderr.trim_end().ends_with(&format!(
            "Error: release {failed_id} failed in phase build: `test ! -e flags/fail-v2` exited \
             with status 1; rolled back automatically: release {rollback_id} redeployed \
             {good_id}, and v1 is live in prod again"
        )),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(&format!(
            "Rolled back prod to v1 (release {rollback_id}, redeploying {good_id})."
        )),
        "{out:?}"
    );
    let text = p.run(&["releases", "show", failed_id]);
    assert!(
        text.stdout
            .contains(&format!("Rolled Back Automatically By: {rollback_id}")),
        "{text:?}"
    );
}

#[test]
fn a_failed_deploy_rolls_back_to_the_live_release_and_both_records_say_so() {
    rolls_back_to_the_live_release_and_links_both_records(Project::file());
}

#[test]
fn a_failed_deploy_rolls_back_on_postgres_too() {
    rolls_back_to_the_live_release_and_links_both_records(Project::postgres("auto_rollback"));
}

#[test]
fn json_prints_the_failed_deploy_naming_its_rollback() {
    let p = project(Project::file());
    assert_eq!(deploy(&p, "prod", "v1", &[]).code, 0);
    fail(&p, "v2");
    let out = deploy(&p, "prod", "v2", &["--json"]);
    assert_eq!(out.code, 2, "{out:?}");
    let record: Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(record["version"], "v2");
    assert_eq!(record["status"], "failed");
    let rollback = p.releases("prod")[0].0.clone();
    assert_eq!(record["auto_rolled_back_by"], rollback.as_str());
}

#[test]
fn the_flag_or_an_environment_that_says_stop_only_records_the_failure() {
    let p = project(Project::file());
    for env in ["prod", "staging"] {
        assert_eq!(deploy(&p, env, "v1", &[]).code, 0);
    }
    fail(&p, "v2");
    let flagged = deploy(&p, "prod", "v2", &["--no-auto-rollback"]);
    assert_eq!(flagged.code, 2, "{flagged:?}");
    let overridden = deploy(&p, "staging", "v2", &[]);
    assert_eq!(overridden.code, 2, "{overridden:?}");
    for (env, out) in [("prod", flagged), ("staging", overridden)] {
        let versions: Vec<String> = p.releases(env).into_iter().map(|(_, v)| v).collect();
        assert_eq!(versions, ["v2", "v1"], "{env}: no rollback");
        assert!(!out.stderr.contains("automatic"), "{env}: {out:?}");
    }
}

#[test]
fn a_first_deploy_that_fails_has_nothing_to_roll_back_to() {
    let p = project(Project::file());
    fail(&p, "v1");
    let out = deploy(&p, "prod", "v1", &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(
            "; no automatic rollback: prod has no fully deployed release to roll back to"
        ),
        "{out:?}"
    );
    assert_eq!(p.releases("prod").len(), 1);
}

#[test]
fn a_failing_automatic_rollback_is_reported_and_not_retried() {
    let p = project(Project::file());
    assert_eq!(deploy(&p, "prod", "v1", &[]).code, 0);
    fail(&p, "v1");
    fail(&p, "v2");
    let out = deploy(&p, "prod", "v2", &[]);
    assert_eq!(out.code, 2, "{out:?}");
    let history = p.releases("prod");
    let versions: Vec<&str> = history.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(versions, ["v1", "v2", "v1"], "one rollback, no more");
    let rollback = show(&p, &history[0].0);
    assert_eq!(rollback["status"], "failed");
    assert_eq!(rollback["auto_rollback_of"], history[1].0.as_str());
    assert!(
        out.stderr.contains(&format!(
            "; the automatic rollback failed too (release {} failed in phase build: `test ! -e \
             flags/fail-v1` exited with status 1); nothing more is tried: check prod, then \
             deploy or roll back by hand",
            history[0].0
        )),
        "{out:?}"
    );
}

#[test]
fn on_failure_takes_stop_or_rollback_only() {
    let p = project(Project::file());
    let text = manifest(&p).replace("on_failure = \"stop\"", "on_failure = \"retry\"");
    std::fs::write(p.path().join("stagecraft.toml"), text).unwrap();
    let out = deploy(&p, "prod", "v1", &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "on_failure = \"retry\" is not a choice; use \"stop\" (the default: record the \
             failure and exit 2) or \"rollback\" (then roll back to the last fully deployed \
             release)"
        ),
        "{out:?}"
    );
}

#[test]
fn a_pruned_failed_deploy_is_named_as_gone_by_its_rollback() {
    let p = project(Project::file());
    assert_eq!(deploy(&p, "prod", "v1", &[]).code, 0);
    fail(&p, "v2");
    assert_eq!(deploy(&p, "prod", "v2", &[]).code, 2);
    assert_eq!(deploy(&p, "prod", "v3", &[]).code, 0);
    let rollback = p.releases("prod")[1].0.clone();
    let failed = p.releases("prod")[2].0.clone();
    let pruned = p.run(&["releases", "prune", "--env", "prod", "--keep", "1"]);
    assert_eq!(pruned.code, 0, "{pruned:?}");
    let kept: Vec<String> = p.releases("prod").into_iter().map(|(id, _)| id).collect();
    assert!(kept.contains(&rollback), "v3's previous release is kept");
    assert!(!kept.contains(&failed), "{kept:?}");
    let text = p.run(&["releases", "show", &rollback]);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("Automatic Rollback Of:")
                && l.ends_with(&format!(" {failed} (no longer in the history)"))),
        "{text:?}"
    );
}

#[test]
fn an_interrupted_automatic_rollback_says_which_deploy_it_answered() {
    use std::io::BufRead;
    let p = Project::file();
    std::fs::write(
        p.path().join("stagecraft.toml"),
        format!(
            "[deploy]\non_failure = \"rollback\"\n{}",
            stagecraft_tests::blocking_manifest(&["prod"])
        ),
    )
    .unwrap();
    std::fs::create_dir_all(p.path().join("gates")).unwrap();
    std::fs::write(p.path().join("gates/gate-v1.fifo"), "").unwrap();
    assert_eq!(deploy(&p, "prod", "v1", &[]).code, 0);
    // v2 has no gate, so its build fails; the rollback's build (v1) then blocks on a real FIFO.
    std::fs::remove_file(p.path().join("gates/gate-v1.fifo")).unwrap();
    let mut gate = stagecraft_tests::Gate::new(p.path(), "v1");
    let mut child = p
        .command()
        .args(["deploy", "--env", "prod", "--version", "v2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the rollback never ran: {seen}"
        );
        seen.push_str(&line);
        if line.contains("cat gates/gate-v1.fifo") {
            break;
        }
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let code = child.wait().unwrap().code();
    gate.open();
    let history = p.releases("prod");
    let (rollback, failed) = (&history[0].0, &history[1].0);
    assert_eq!(code, Some(2), "{seen}{rest}");
    assert!(
        rest.contains(&format!(
            "Interrupted by SIGINT: phase build of release {rollback} marked failed; later \
             phases skipped. It was the automatic rollback of release {failed}, which had \
             failed: nothing more is tried."
        )),
        "{seen}{rest}"
    );
    assert_eq!(show(&p, rollback)["status"], "failed");
    assert_eq!(show(&p, failed)["auto_rolled_back_by"], rollback.as_str());
}
