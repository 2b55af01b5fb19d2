//! Bad state files and failing writes: every case is an error (exit 3) that names the file and
//! what to do, and the file's bytes are never changed.

mod state_common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use stagecraft_tests::run;
use state_common::*;

const GOOD: &str = r#"{
  "releases": [
    {
      "id": "rel-20261125-060000123",
      "environment": "prod",
      "version": "v1",
      "commit_sha": "",
      "timestamp": "2026-11-25T06:00:00.123Z",
      "phases": {
        "build": "completed"
      }
    }
  ]
}
"#;

struct Case {
    name: &'static str,
    content: String,
    /// What stderr must say between the file's path and the recovery advice.
    expect: &'static str,
}

fn cases() -> Vec<Case> {
    let with_second = |extra: &str| GOOD.replace("\n  ]", &format!(",\n    {extra}\n  ]"));
    vec![
        Case {
            name: "empty",
            content: String::new(),
            expect: " is empty (a complete file always holds at least {\"releases\": []}); ",
        },
        Case {
            name: "truncated",
            content: GOOD[..GOOD.len() / 2].to_string(),
            expect: " is truncated: EOF while parsing",
        },
        Case {
            name: "not JSON",
            content: "releases:\n  - id: rel-1\n".to_string(),
            expect: " is not valid JSON: expected value at line 1, column 1; ",
        },
        Case {
            name: "unknown status",
            content: GOOD.replace("\"completed\"", "\"exploded\""),
            expect: " does not match the state format: unknown variant `exploded`, expected one of `pending`, `running`, `completed`, `failed`, `skipped` at line 10, column 27; ",
        },
        Case {
            name: "bad id",
            content: GOOD.replace("rel-20261125-060000123", "release-7"),
            expect: " does not match the state format: invalid release id \"release-7\": expected rel-YYYYMMDD-HHMMSSmmm at line 4, column 23; ",
        },
        Case {
            name: "duplicate id",
            content: with_second(
                r#"{"id": "rel-20261125-060000123", "environment": "staging", "version": "v2", "timestamp": "2026-11-25T07:00:00Z"}"#,
            ),
            expect: " does not match the state format: duplicate release id \"rel-20261125-060000123\" (releases[1]); ",
        },
        Case {
            name: "bad timestamp",
            content: GOOD.replace("2026-11-25T06:00:00.123Z", "25/11/2026 06:00"),
            expect: " does not match the state format: invalid timestamp \"25/11/2026 06:00\"",
        },
        Case {
            name: "duplicate phase",
            content: GOOD.replace(
                "\"build\": \"completed\"",
                "\"build\": \"completed\",\n        \"build\": \"failed\"",
            ),
            expect: " does not match the state format: duplicate key \"build\" in phases at line 11, column ",
        },
        Case {
            name: "duplicate unknown field",
            content: GOOD.replace(
                "\"version\": \"v1\",",
                "\"version\": \"v1\", \"deployed_by\": \"a\", \"deployed_by\": \"b\",",
            ),
            expect: " does not match the state format: duplicate key \"deployed_by\" in the unknown fields at line ",
        },
        Case {
            name: "duplicate top-level field",
            content: GOOD.replacen("{", "{\"serial\": 1, \"serial\": 2,", 1),
            expect: " does not match the state format: duplicate field `serial` at line 1, column ",
        },
        Case {
            name: "huge number",
            content: GOOD.replacen("{", "{\"serial\": 1e400,", 1),
            expect: " is not valid JSON: number out of range at line 1, column ",
        },
        Case {
            name: "deep nesting",
            content: GOOD.replacen(
                "{",
                &format!("{{\"deep\": {}1{},", "[".repeat(100_000), "]".repeat(100_000)),
                1,
            ),
            expect: " is not valid JSON: recursion limit exceeded at line 1, column ",
        },
        Case {
            name: "empty environment",
            content: GOOD.replace("\"prod\"", "\"  \""),
            expect: " does not match the state format: release rel-20261125-060000123 (releases[0]) has an empty environment; ",
        },
    ]
}

/// `releases list` and a commit both refuse the file, and neither changes a byte of it.
#[test]
fn every_bad_file_is_refused_by_name_and_left_unchanged() {
    for with_backup in [true, false] {
        for case in cases() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("releases.json");
            let bak = dir.path().join("releases.json.bak");
            std::fs::write(&path, &case.content).unwrap();
            if with_backup {
                std::fs::write(&bak, GOOD).unwrap();
            }
            let recover = if with_backup {
                format!(
                    "the previous version is in {}; inspect it and copy it over {} if it is good",
                    bak.display(),
                    path.display()
                )
            } else {
                format!(
                    "there is no previous version ({} does not exist); repair the file by hand, \
                     or move it away to start an empty history",
                    bak.display()
                )
            };
            let name = case.name;
            let listed = run(
                dir.path(),
                &["releases", "list", "--state-file", path.to_str().unwrap()],
            );
            assert_eq!(listed.code, 3, "{name}: {listed:?}");
            let stderr = listed.stderr.trim_end();
            let prefix = format!("Error: state file {}{}", path.display(), case.expect);
            assert!(
                stderr.starts_with(&prefix),
                "{name}:\n{stderr}\nwanted:\n{prefix}"
            );
            assert!(stderr.ends_with(&recover), "{name}: {stderr}");
            assert_eq!(listed.stdout, "", "{name}");

            let shown = run(
                dir.path(),
                &[
                    "releases",
                    "show",
                    "rel-20261125-060000123",
                    "--state-file",
                    path.to_str().unwrap(),
                ],
            );
            assert_eq!(shown.code, 3, "{name}: {shown:?}");

            let added = worker()
                .args(["add", path.to_str().unwrap(), "prod", "v9"])
                .output()
                .unwrap();
            assert_eq!(added.status.code(), Some(3), "{name}: {added:?}");
            assert!(
                String::from_utf8_lossy(&added.stderr).contains(case.expect),
                "{name}: {added:?}"
            );
            assert_eq!(bytes(&path).unwrap(), case.content.as_bytes(), "{name}");
            if with_backup {
                assert_eq!(bytes(&bak).unwrap(), GOOD.as_bytes(), "{name}: .bak");
            }
            assert!(!dir.path().join("releases.json.tmp").exists(), "{name}");
        }
    }
}

#[test]
fn a_newer_format_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("releases.json");
    let content = GOOD.replacen(
        '{',
        "{\n  \"format_version\": 7,\n  \"layout\": \"sharded\",",
        1,
    );
    std::fs::write(&path, &content).unwrap();
    let listed = run(
        dir.path(),
        &["releases", "list", "--state-file", path.to_str().unwrap()],
    );
    assert_eq!(listed.code, 3, "{listed:?}");
    assert!(
        listed.stderr.contains(&format!(
            "state file {} has format_version 7, but this stagecraft reads at most 2; upgrade stagecraft",
            path.display()
        )),
        "{listed:?}"
    );
    let added = worker()
        .args(["add", path.to_str().unwrap(), "prod", "v9"])
        .output()
        .unwrap();
    assert_eq!(added.status.code(), Some(3), "{added:?}");
    assert_eq!(bytes(&path).unwrap(), content.as_bytes());
}

#[test]
fn a_directory_where_the_file_should_be_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("releases.json");
    std::fs::create_dir(&path).unwrap();
    let listed = run(
        dir.path(),
        &["releases", "list", "--state-file", path.to_str().unwrap()],
    );
    assert_eq!(listed.code, 3, "{listed:?}");
    assert!(
        listed
            .stderr
            .contains(&format!("cannot read state file {}: ", path.display())),
        "{listed:?}"
    );
}

/// A state file with some history, and its bytes.
fn seeded(dir: &Path, releases: usize) -> (PathBuf, Vec<u8>) {
    let path = dir.join("releases.json");
    for i in 0..releases {
        let out = worker()
            .args(["add", path.to_str().unwrap(), "prod", &format!("v{i}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let content = bytes(&path).unwrap();
    (path, content)
}

fn assert_write_refused(out: std::process::Output, path: &Path, before: &[u8], cause: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        stderr.contains(&format!("cannot write state file {} (", path.display()))
            && stderr.contains(cause)
            && stderr.contains(
                "nothing was committed and the previous version of the file is unchanged"
            ),
        "{stderr}"
    );
    assert_eq!(bytes(path).unwrap(), before, "the file changed");
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

/// A write that fails part-way (here: the file-size limit, EFBIG, which needs no privileges).
#[test]
fn a_write_error_leaves_the_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (path, before) = seeded(dir.path(), 20);
    assert!(
        before.len() > 8 * 512,
        "the file must exceed the limit below"
    );
    // `ulimit -f` counts 512-byte blocks; SIGXFSZ is ignored so that write() returns EFBIG.
    let script = format!(
        "trap '' XFSZ; ulimit -f 8; exec '{}' add '{}' prod v-big",
        env!("CARGO_BIN_EXE_state-worker"),
        path.display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert_write_refused(out, &path, &before, "File too large");
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        == 0
}

/// A full disk: a 64 KiB tmpfs that holds the current file but not a second copy. Mounting
/// needs root; without it, the EFBIG test above covers the same failure path.
#[test]
fn a_full_disk_leaves_the_previous_file_intact() {
    if !is_root() {
        eprintln!("not root: cannot mount a tmpfs; the EFBIG test covers a failing write");
        return;
    }
    struct Mount(PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("full");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    let _mount = Mount(mnt.clone());
    let path = mnt.join("releases.json");
    // Grow the file until one more copy (the temp file) cannot fit beside it.
    let mut n = 0;
    loop {
        let out = worker()
            .args(["add", path.to_str().unwrap(), "prod", &format!("v{n}")])
            .output()
            .unwrap();
        n += 1;
        if !out.status.success() {
            let before = bytes(&path).unwrap();
            assert!(n > 10, "failed too early: {out:?}");
            assert_write_refused(out, &path, &before, "No space left on device");
            // The previous file still reads, through the binary.
            let listed = run(
                dir.path(),
                &["releases", "list", "--state-file", path.to_str().unwrap()],
            );
            assert_eq!(listed.code, 0, "{listed:?}");
            assert_eq!(
                listed.stdout.lines().count(),
                n,
                "header + {} releases",
                n - 1
            );
            break;
        }
        assert!(n < 1000, "64 KiB never filled up");
    }
}

/// The state directory is not writable by the user running stagecraft. Root ignores
/// permissions, so as root the writer runs as `nobody`, owning the (now read-only) directory.
#[test]
fn an_unwritable_directory_leaves_the_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let (path, before) = seeded(&state_dir, 2);
    let mut cmd = worker();
    cmd.args(["add", path.to_str().unwrap(), "prod", "v-denied"]);
    if is_root() {
        use std::os::unix::process::CommandExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for entry in std::fs::read_dir(&state_dir).unwrap() {
            std::os::unix::fs::chown(entry.unwrap().path(), Some(65534), Some(65534)).unwrap();
        }
        std::os::unix::fs::chown(&state_dir, Some(65534), Some(65534)).unwrap();
        cmd.uid(65534).gid(65534);
    }
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    let out = cmd.output().unwrap();
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_write_refused(out, &path, &before, "Permission denied");
}
