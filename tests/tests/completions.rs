//! Dynamic shell completion: the shell asks the binary (`COMPLETE=<shell> stagecraft -- <words>`),
//! which offers the manifest's environments and the history's release ids and versions. A
//! completer never fails, never prints an error, and creates nothing.

use std::process::Command;

use stagecraft_tests::project::Project;
use stagecraft_tests::stagecraft_bin;

/// What `words` (the command line as typed, the last word being completed) completes to, through
/// fish's protocol (one candidate per line, `value<TAB>help`): the values only, without the
/// flags offered beside a positional value.
fn complete(project: &Project, words: &[&str]) -> Vec<String> {
    let out = project
        .command()
        .env("COMPLETE", "fish")
        .arg("--")
        .args(words)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .filter(|v| !v.starts_with('-'))
        .collect()
}

#[test]
fn environments_release_ids_and_versions_come_from_the_manifest_and_the_history() {
    let project = Project::file();
    project.deploy("prod", "v1");
    project.deploy("prod", "v2");
    project.deploy("staging", "v9");
    let prod = project.releases("prod");

    assert_eq!(
        complete(&project, &["stagecraft", "deploy", "--env", ""]),
        ["prod", "staging"]
    );
    assert_eq!(
        complete(&project, &["stagecraft", "status", "-e", "st"]),
        ["staging"]
    );
    // Newest first, only the environment already named.
    let ids = complete(
        &project,
        &[
            "stagecraft",
            "rollback",
            "--env",
            "prod",
            "--to-release",
            "",
        ],
    );
    assert_eq!(ids, [prod[0].0.clone(), prod[1].0.clone()]);
    assert_eq!(
        complete(&project, &["stagecraft", "releases", "show", ""]).len(),
        3
    );
    assert_eq!(
        complete(
            &project,
            &["stagecraft", "rollback", "-e", "prod", "--to-version", ""]
        ),
        ["v2", "v1"]
    );
    // Subcommands still complete as before.
    assert_eq!(complete(&project, &["stagecraft", "rel"]), ["releases"]);
}

#[test]
fn a_manifest_named_with_config_is_the_one_asked() {
    let project = Project::file();
    let other = project.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("stagecraft.toml"), "[environments.canary]\n").unwrap();
    assert_eq!(
        complete(
            &project,
            &[
                "stagecraft",
                "--config",
                "other/stagecraft.toml",
                "deploy",
                "--env",
                ""
            ]
        ),
        ["canary"]
    );
}

#[test]
fn a_broken_project_completes_to_nothing_quietly_and_creates_nothing() {
    let project = Project::file();
    std::fs::write(project.path().join("stagecraft.toml"), "[environments\n").unwrap();
    assert!(complete(&project, &["stagecraft", "deploy", "--env", ""]).is_empty());
    assert!(complete(&project, &["stagecraft", "releases", "show", ""]).is_empty());
    assert!(!project.path().join(".stagecraft").exists());

    let project = Project::file();
    std::fs::create_dir(project.path().join(".stagecraft")).unwrap();
    std::fs::write(
        project.path().join(".stagecraft/releases.json"),
        "{not json",
    )
    .unwrap();
    assert!(complete(&project, &["stagecraft", "releases", "show", ""]).is_empty());
    // The manifest still answers for environments.
    assert_eq!(
        complete(&project, &["stagecraft", "deploy", "--env", ""]),
        ["prod", "staging"]
    );
}

#[test]
fn the_bash_script_completes_through_the_binary() {
    let project = Project::file();
    project.deploy("prod", "v1");
    let script = project
        .command()
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert_eq!(script.status.code(), Some(0), "{script:?}");
    let script = String::from_utf8(script.stdout).unwrap();
    // The script calls back the binary it came from.
    assert!(
        script.contains(stagecraft_bin().to_str().unwrap()),
        "{script}"
    );
    std::fs::write(project.path().join("complete.bash"), &script).unwrap();
    // What bash does on `stagecraft deploy --env <TAB>`.
    let out = Command::new("bash")
        .current_dir(project.path())
        .arg("-c")
        .arg(
            "source ./complete.bash
             COMP_WORDS=(stagecraft deploy --env '') COMP_CWORD=3 COMP_TYPE=9
             _clap_complete_stagecraft stagecraft '' --env
             printf '%s\\n' \"${COMPREPLY[@]}\"",
        )
        .env_remove("STAGECRAFT_ENV")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let got: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .map(str::trim)
        .collect();
    assert_eq!(got, ["prod", "staging"], "{out:?}");
}

#[test]
fn an_unknown_shell_is_named() {
    let project = Project::file();
    let out = project.command().env("COMPLETE", "tcsh").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("COMPLETE=tcsh names no shell"), "{stderr}");
    // Empty or 0 turns completion off: the command runs as usual.
    let out = project
        .command()
        .env("COMPLETE", "0")
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
