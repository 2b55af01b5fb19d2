//! The file store's guarantees: read-after-write across instances and processes, no lost updates
//! under many concurrent writers, and the original-format file kept intact.

mod state_common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use stagecraft::error::{exit_code_for, ExitCode};
use stagecraft::state::{FileStore, PhaseStatus, StateStore, StateStoreExt};
use stagecraft_tests::{run, workspace_root};
use state_common::suite::{self, FileBackend};
use state_common::*;

fn add(store: &FileStore, id: &str, env: &str) {
    store
        .transact(|s| {
            s.releases
                .push(release(id, env, "v1", &all(PhaseStatus::Pending)).into());
            Ok(())
        })
        .unwrap();
}

// The consistency suite (state_common/suite.rs) on the file backend; state_postgres.rs runs the
// same functions on PostgreSQL.

#[test]
fn read_after_write_across_two_instances_in_one_process() {
    suite::read_after_write_across_two_instances(&FileBackend);
}

#[test]
fn read_after_write_across_processes() {
    suite::read_after_write_across_processes(&FileBackend);
}

/// 8 processes x 3 threads (each its own store instance) x 50 increments of the thread's own
/// counter, all released at once, 20 rounds.
#[test]
fn no_lost_updates_under_many_processes_and_threads() {
    suite::no_lost_updates(&FileBackend, 20, 8, 3, 50);
}

#[test]
fn a_failing_transaction_commits_nothing_through_the_generic_suite() {
    suite::a_failing_transaction_writes_nothing(&FileBackend);
}

#[test]
fn reading_never_creates_anything_and_the_first_write_creates_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join(".stagecraft");
    let listed = run(dir.path(), &["releases", "list"]);
    assert_eq!(
        (listed.code, listed.stdout.as_str()),
        (0, "No releases found\n")
    );
    assert!(
        !state_dir.exists(),
        "reading created {}",
        state_dir.display()
    );

    let path = state_dir.join("releases.json");
    let store = FileStore::open(path.clone()).unwrap();
    assert!(store.read().unwrap().releases.is_empty());
    assert!(!state_dir.exists());
    add(&store, "rel-20261125-060000000", "prod");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state_dir), 0o700);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&state_dir.join("releases.json.lock")), 0o600);
    // The default location is the one `releases` reads.
    let listed = run(dir.path(), &["releases", "list", "--json"]);
    let v: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(v[0]["id"], "rel-20261125-060000000");
    // The second commit keeps the first version as .bak, byte for byte.
    let first = bytes(&path).unwrap();
    add(&store, "rel-20261125-060000001", "prod");
    assert_eq!(bytes(&state_dir.join("releases.json.bak")).unwrap(), first);
    assert_eq!(mode(&state_dir.join("releases.json.bak")), 0o600);
    let names: Vec<String> = std::fs::read_dir(&state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with(".tmp")),
        "temp files left: {names:?}"
    );
}

#[test]
fn a_failing_transaction_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("releases.json");
    let store = FileStore::open(path.clone()).unwrap();
    add(&store, "rel-20261125-060000000", "prod");
    let before = bytes(&path).unwrap();
    let err = store
        .transact(|s| -> anyhow::Result<()> {
            s.releases.clear();
            anyhow::bail!("changed my mind")
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "changed my mind");
    // A closure that breaks an invariant is refused too, before anything is written.
    let err = store
        .transact(|s| {
            let copy = s.releases[0].clone();
            s.releases.push(copy);
            Ok(())
        })
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("refusing to commit an invalid state")
            && err.to_string().contains("duplicate release id"),
        "{err}"
    );
    assert_eq!(bytes(&path).unwrap(), before);
}

/// The hand-written original-format file (tests/fixtures/v1-releases.json) reads unchanged and
/// keeps every field, known or not, through our first write.
#[test]
fn an_original_file_survives_a_write_with_every_field_intact() {
    let fixture = workspace_root().join("tests/fixtures/v1-releases.json");
    let original_bytes = std::fs::read(&fixture).unwrap();
    let original: Value = serde_json::from_slice(&original_bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("releases.json");
    std::fs::write(&path, &original_bytes).unwrap();

    let out = worker()
        .args(["add", path.to_str().unwrap(), "prod", "v2.0.0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let new_id = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(written["format_version"], 2);
    assert_eq!(written["serial"], 1);
    assert!(written["lineage"].as_str().is_some_and(|l| l.len() == 36));
    assert_eq!(
        written["notes"], original["notes"],
        "top-level unknown field"
    );
    let old = original["releases"].as_array().unwrap();
    let new = written["releases"].as_array().unwrap();
    assert_eq!(new.len(), old.len() + 1);
    for (o, n) in old.iter().zip(new) {
        for (key, value) in o.as_object().unwrap() {
            assert_eq!(&n[key], value, "release {} field {key}", o["id"]);
        }
    }
    // The new release follows the environment's current one.
    assert_eq!(new[old.len()]["previous_id"], "rel-20240303-080000456");
    assert_eq!(
        std::fs::read(dir.path().join("releases.json.bak")).unwrap(),
        original_bytes
    );
    let listed = run(
        dir.path(),
        &[
            "releases",
            "list",
            "--env",
            "prod",
            "--state-file",
            path.to_str().unwrap(),
        ],
    );
    assert_eq!(listed.code, 0, "{listed:?}");
    let ids: Vec<&str> = listed
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            new_id.as_str(),
            "rel-20240303-080000456",
            "rel-20240302-090000123"
        ]
    );
}

/// Concurrent readers always see a whole file while a writer commits in a loop.
#[test]
fn readers_never_see_a_partial_file() {
    suite::readers_never_see_a_partial_state(&FileBackend, 200);
}

/// Symlinks planted in the state directory cannot redirect a write outside it.
#[test]
fn planted_symlinks_cannot_redirect_writes() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join(".stagecraft");
    let outside = dir.path().join("precious.txt");
    std::fs::write(&outside, "do not touch").unwrap();
    let path = state_dir.join("releases.json");
    let store = FileStore::open(path.clone()).unwrap();
    add(&store, "rel-20261125-060000000", "prod");

    // A temp-file name pointing outside: removed and recreated, never followed.
    std::os::unix::fs::symlink(&outside, state_dir.join("releases.json.tmp")).unwrap();
    add(&store, "rel-20261125-060000001", "prod");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "do not touch");
    assert_eq!(store.read().unwrap().releases.len(), 2);

    // The state file itself swapped for a symlink (here leading out of the directory):
    // refused, whatever it points to, by reads and commits alike.
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&outside, &path).unwrap();
    let err = store.read().unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "state file {} is a symbolic link (to {}); ",
            path.display(),
            outside.display()
        )),
        "{err}"
    );
    assert!(store
        .transact(|s| {
            s.releases.clear();
            Ok(())
        })
        .is_err());
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "do not touch");
}

/// 8 threads on four environments x 50 scoped commits, beside whole-state commits.
#[test]
fn scoped_commits_lose_nothing_across_environments() {
    suite::scoped_commits_lose_nothing_across_environments(&FileBackend, 8, 50);
}

#[test]
fn a_scoped_transaction_changes_only_its_environment() {
    suite::a_scoped_transaction_changes_only_its_environment(&FileBackend);
}

#[test]
fn components_are_kept_checked_and_swept() {
    let fresh = suite::components_are_kept_checked_and_swept(&FileBackend);
    // Beside the state file, named by digest, private.
    let dir = fresh.dir.path().join("state/releases.components");
    let store = fresh.open();
    let kept: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let digest = kept[0].strip_suffix(".wasm").unwrap().to_string();
    let file = dir.join(&kept[0]);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let bytes = std::fs::read(&file).unwrap();

    // A damaged copy is refused, saying what to do; removing it lets the next keep repair it.
    let mut damaged = bytes.clone();
    damaged[0] ^= 1;
    std::fs::write(&file, &damaged).unwrap();
    let err = store.component(&digest).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "component {} is damaged (its {} bytes have sha256 ",
            file.display(),
            bytes.len()
        )),
        "{err}"
    );
    assert_eq!(exit_code_for(&err), ExitCode::State);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        store
            .missing_components(std::slice::from_ref(&digest))
            .unwrap(),
        vec![digest.clone()]
    );
    store.put_component(&digest, &bytes).unwrap();
    assert_eq!(
        store.component(&digest).unwrap().as_deref(),
        Some(&bytes[..])
    );

    // A symlink planted in a component's place is never followed, and keeping the component
    // replaces it.
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &file).unwrap();
    let err = store.component(&digest).unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(
        store
            .missing_components(std::slice::from_ref(&digest))
            .unwrap(),
        vec![digest.clone()]
    );
    store.put_component(&digest, &bytes).unwrap();
    assert!(std::fs::symlink_metadata(&file)
        .unwrap()
        .file_type()
        .is_file());

    // A sweep removes temporary files whose writer is gone, and no other.
    let gone = dir.join(format!(".{digest}.999999999.0.tmp"));
    let ours = dir.join(format!(".{digest}.{}.7.tmp", std::process::id()));
    let foreign = dir.join("notes.txt");
    for f in [&gone, &ours, &foreign] {
        std::fs::write(f, b"x").unwrap();
    }
    // One whose writer is in no process this sweep can see, but which is still locked (a
    // writer in another PID namespace sharing the directory), stays too.
    let elsewhere = dir.join(format!(".{digest}.999999998.1.tmp"));
    std::fs::write(&elsewhere, b"x").unwrap();
    let writing = std::fs::File::open(&elsewhere).unwrap();
    rustix::fs::flock(&writing, rustix::fs::FlockOperation::LockExclusive).unwrap();
    assert_eq!(store.sweep_components().unwrap(), 0);
    assert!(!gone.exists());
    assert!(ours.exists() && foreign.exists() && file.exists() && elsewhere.exists());
    drop(writing);
    store.sweep_components().unwrap();
    assert!(!elsewhere.exists(), "its writer let go");
}

/// 4 threads x 30 deploys and prunes over shared components, beside a thread that sweeps.
#[test]
fn a_sweep_never_removes_a_component_a_committed_release_runs() {
    suite::a_sweep_never_removes_a_component_a_committed_release_runs(&FileBackend, 4, 30);
}
