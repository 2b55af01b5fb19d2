//! The private temp dir (`$TMPDIR`) of exec'd programs: one per phase, removed when the phase
//! ends, and those a SIGKILLed stagecraft could not remove are removed by the next one.

use stagecraft_tests::run;

#[test]
fn a_killed_stagecrafts_temp_dir_is_removed_by_the_next_and_a_live_ones_is_kept() {
    let tmp = std::env::temp_dir();
    // A process that is surely gone: a child we started and reaped.
    let dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let abandoned = tmp.join(format!("stagecraft-exec-{dead_pid}-abandoned"));
    let live = tmp.join(format!("stagecraft-exec-{}-live", std::process::id()));
    for dir in [&abandoned, &live] {
        std::fs::create_dir_all(dir.join("leftover")).unwrap();
    }

    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("stagecraft.toml"),
        "[environments.prod]\n[phases.build]\nplugin = \"builtin:exec\"\n\
         config = { command = \"sh -c 'echo $TMPDIR; touch $TMPDIR/mine'\" }\n\
         [phases.build.grants]\nexec = [\"sh\"]\n",
    )
    .unwrap();
    let out = run(
        project.path(),
        &["deploy", "--env", "prod", "--version", "v1", "--verbose"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!abandoned.exists(), "the abandoned temp dir is still there");
    assert!(live.exists(), "a live process's temp dir was removed");
    std::fs::remove_dir_all(&live).unwrap();

    // The phase's own dir was removed when the phase ended.
    let own = out
        .stderr
        .lines()
        .find_map(|l| {
            l.split("info: ")
                .nth(1)
                .filter(|t| t.contains("stagecraft-exec-"))
        })
        .unwrap_or_else(|| panic!("TMPDIR not printed: {out:?}"))
        .trim()
        .to_string();
    assert!(
        !std::path::Path::new(&own).exists(),
        "{own} outlived its phase"
    );
}
