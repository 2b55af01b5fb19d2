//! Retention through the built binary, on both backends: `releases prune` (with `--dry-run` and
//! `--json`) and `[state] history_max` after each deploy, and every release they must never
//! remove: the current and live releases, `--to-previous` targets of kept releases.

use serde_json::Value;
use stagecraft_tests::project::Project;

fn versions(releases: &[(String, String)]) -> Vec<&str> {
    releases.iter().map(|(_, v)| v.as_str()).collect()
}

fn prune_keeps_what_rollback_needs_and_history_max_prunes_after_each_deploy(project: Project) {
    project.deploy("staging", "s1");
    for version in ["v1", "v2", "v3", "bad", "bad"] {
        project.deploy("prod", version);
    }
    let before = project.releases("prod");
    assert_eq!(versions(&before), ["bad", "bad", "v3", "v2", "v1"]);
    let v1 = before[4].0.clone();

    // A dry run says what would go and changes nothing.
    let dry = project.run(&[
        "releases",
        "prune",
        "--env",
        "prod",
        "--keep",
        "1",
        "--dry-run",
    ]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout.contains("Would remove 1 release of prod"),
        "{dry:?}"
    );
    assert!(dry.stdout.contains(&v1), "{dry:?}");
    assert!(
        dry.stdout.contains("Dry run: nothing was changed."),
        "{dry:?}"
    );
    assert_eq!(project.releases("prod"), before);

    // Keeping one: the current release (the second `bad`), the live one (v3, the newest fully
    // deployed), and where `rollback --to-previous` goes from either (the first `bad`, v2).
    let pruned = project.run(&[
        "releases", "prune", "--env", "prod", "--keep", "1", "--json",
    ]);
    assert_eq!(pruned.code, 0, "{pruned:?}");
    let report: Value = serde_json::from_str(&pruned.stdout).unwrap();
    assert_eq!(report["removed"], serde_json::json!([v1]), "{report}");
    assert_eq!(report["dry_run"], false);
    let reasons: Vec<&str> = report["kept_beyond"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"the live release (newest fully deployed)"),
        "{reasons:?}"
    );
    assert_eq!(
        versions(&project.releases("prod")),
        ["bad", "bad", "v3", "v2"]
    );
    let shown = project.run(&["releases", "show", &v1]);
    assert_eq!(shown.code, 1, "a pruned release is gone: {shown:?}");
    assert_eq!(
        versions(&project.releases("staging")),
        ["s1"],
        "another environment is untouched"
    );

    // Nothing more can go: a second prune removes nothing and says so.
    let again = project.run(&["releases", "prune", "--env", "prod", "--keep", "1"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stdout.starts_with("Nothing to prune in prod"),
        "{again:?}"
    );

    // history_max prunes after every deploy, under the deploy's lease.
    project.write_manifest("history_max = 2\n");
    let v4 = project.deploy("prod", "v4");
    assert!(
        v4.stderr
            .contains("Pruned 2 old releases of prod (history_max = 2)"),
        "{v4:?}"
    );
    let v5 = project.deploy("prod", "v5");
    assert!(
        v5.stderr
            .contains("Pruned 1 old release of prod (history_max = 2)"),
        "{v5:?}"
    );
    // v5 and v4 (the newest two), and the second `bad`, where --to-previous goes from v4.
    assert_eq!(versions(&project.releases("prod")), ["v5", "v4", "bad"]);
    let rollback = project.run(&["rollback", "--env", "prod", "--to-previous"]);
    assert_eq!(
        rollback.code, 0,
        "--to-previous from v5 still finds v4: {rollback:?}"
    );
    assert_eq!(
        versions(&project.releases("prod")),
        ["v4", "v5", "v4"],
        "the rollback release is kept, and pruning followed it"
    );

    // Bad input changes nothing.
    let zero = project.run(&["releases", "prune", "--env", "prod", "--keep", "0"]);
    assert_eq!(zero.code, 1, "{zero:?}");
    assert!(
        zero.stderr.contains("--keep must be at least 1"),
        "{zero:?}"
    );
    let typo = project.run(&["releases", "prune", "--env", "prdo", "--keep", "1"]);
    assert_eq!(typo.code, 1, "{typo:?}");
    assert!(
        typo.stderr.contains("environment \"prdo\" has no releases")
            && typo
                .stderr
                .contains("environments with releases: prod, staging"),
        "{typo:?}"
    );
    assert_eq!(project.releases("prod").len(), 3);
}

#[test]
fn retention_on_the_file_backend() {
    prune_keeps_what_rollback_needs_and_history_max_prunes_after_each_deploy(Project::file());
}

#[test]
fn retention_on_postgres() {
    prune_keeps_what_rollback_needs_and_history_max_prunes_after_each_deploy(Project::postgres(
        "retention",
    ));
}

#[test]
fn a_history_max_below_one_is_refused_where_it_is_written() {
    let project = Project::file();
    project.write_manifest("history_max = 0\n");
    let out = project.run(&["deploy", "--env", "prod", "--version", "v1"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("stagecraft.toml:")
            && out.stderr.contains("history_max must be between 1 and"),
        "{out:?}"
    );
    assert!(!project.path().join(".stagecraft/releases.json").exists());
}
