//! Deploy leases: exclusive per environment, named in the "busy" error, freed by the OS the
//! moment the holder dies, and recovering releases a dead holder left running.

mod state_common;

use std::io::{BufRead, BufReader, Lines, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Stdio};
use std::time::Duration;

use stagecraft::error::{exit_code_for, ExitCode};
use stagecraft::state::{
    FileStore, OverallStatus, PhaseStatus, StateStore, StateStoreExt, CANONICAL_PHASES,
};
use state_common::*;

/// A worker holding `env`'s lease (or stuck mid-deploy), once it has said so.
fn holder(mode: &str, path: &Path, env: &str) -> (Child, Lines<BufReader<ChildStdout>>, String) {
    let mut child = worker()
        .args([mode, path.to_str().unwrap(), env])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().expect("worker said nothing").unwrap();
    (child, lines, ready)
}

#[test]
fn a_second_lease_fails_naming_the_holder_and_other_environments_are_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("releases.json");
    let (mut child, _lines, ready) = holder("lease", &path, "prod");
    assert_eq!(ready, "leased prod");

    let store = FileStore::open(path.clone()).unwrap();
    let err = store
        .lease("prod", Duration::ZERO)
        .err()
        .expect("prod is leased");
    let message = err.to_string();
    let pid = child.id();
    assert!(
        message.starts_with(&format!(
            "environment \"prod\" is being deployed by pid {pid} on "
        )),
        "{message}"
    );
    assert!(
        message.contains("state-worker lease"),
        "names the command: {message}"
    );
    assert!(message.contains(", since 20"), "names the start: {message}");
    assert!(
        message.ends_with("; wait for it, or pass --lock-wait <seconds>"),
        "{message}"
    );
    assert_eq!(exit_code_for(&err), ExitCode::State);
    // A bounded wait that the holder outlasts fails the same way.
    let err = store
        .lease("prod", Duration::from_millis(30))
        .err()
        .unwrap();
    assert!(err.to_string().contains(&format!("pid {pid} ")), "{err}");

    let staging = store.lease("staging", Duration::ZERO).unwrap();
    assert_eq!(staging.environment(), "staging");

    // Closing the holder's stdin makes it drop the lease and exit.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let lease_file = dir.path().join("leases/prod.lock");
    assert_eq!(
        std::fs::read(&lease_file).unwrap(),
        b"",
        "holder details cleared"
    );
    store.lease("prod", Duration::ZERO).unwrap();
}

#[test]
fn a_lease_is_exclusive_within_one_process_too() {
    let dir = tempfile::tempdir().unwrap();
    let a = FileStore::open(dir.path().join("releases.json")).unwrap();
    let b = FileStore::open(dir.path().join("releases.json")).unwrap();
    let first = a.lease("prod", Duration::ZERO).unwrap();
    let err = b.lease("prod", Duration::ZERO).err().unwrap();
    assert!(
        err.to_string()
            .contains(&format!("pid {} ", std::process::id())),
        "{err}"
    );
    drop(first);
    b.lease("prod", Duration::ZERO).unwrap();
}

#[test]
fn a_waiting_lease_is_granted_when_the_holder_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("releases.json");
    let (mut child, _lines, _) = holder("lease", &path, "prod");
    let store = FileStore::open(path).unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| store.lease("prod", Duration::from_secs(60)));
        drop(child.stdin.take());
        child.wait().unwrap();
        let lease = waiter.join().unwrap().unwrap();
        assert_eq!(lease.environment(), "prod");
    });
}

#[test]
fn a_holder_killed_with_sigkill_frees_the_lease_at_once_and_its_release_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("releases.json");
    let store = FileStore::open(path.clone()).unwrap();
    // A staging release also left running must not be touched by prod's recovery.
    store
        .transact(|s| {
            let mut r = release(
                "rel-20261125-050000000",
                "staging",
                "v1",
                &all(PhaseStatus::Pending),
            );
            r.phases.insert("build".into(), PhaseStatus::Running);
            s.releases.push(r);
            Ok(())
        })
        .unwrap();

    let (mut child, _lines, ready) = holder("deploy-hang", &path, "prod");
    let id = ready.strip_prefix("running ").expect(&ready).to_string();
    assert!(store.lease("prod", Duration::ZERO).is_err());
    assert_eq!(
        store.read().unwrap().get(&id).unwrap().overall_status(),
        OverallStatus::Running
    );

    child.kill().unwrap();
    child.wait().unwrap();
    let serial_before = store.read().unwrap().serial;
    let lease = store
        .lease("prod", Duration::ZERO)
        .expect("freed by the kernel");

    let state = store.read().unwrap();
    assert_eq!(
        state.serial,
        serial_before + 1,
        "recovery is one transaction"
    );
    let r = state.get(&id).unwrap();
    assert_eq!(r.status_of("build"), PhaseStatus::Failed);
    assert_eq!(
        r.phase_details["build"].error.as_deref(),
        Some("interrupted: the process running build exited")
    );
    for phase in &CANONICAL_PHASES[1..] {
        assert_eq!(r.status_of(phase), PhaseStatus::Skipped, "{phase}");
    }
    assert_eq!(r.overall_status(), OverallStatus::Failed);
    let staging = state.get("rel-20261125-050000000").unwrap();
    assert_eq!(staging.status_of("build"), PhaseStatus::Running);

    // Nothing left to recover: taking the lease again commits nothing.
    drop(lease);
    let _again = store.lease("prod", Duration::ZERO).unwrap();
    assert_eq!(store.read().unwrap().serial, serial_before + 1);
}

#[test]
fn unsafe_environment_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path().join("releases.json")).unwrap();
    for bad in ["../escape", "Prod", "", "a/b"] {
        let err = store.lease(bad, Duration::ZERO).err().unwrap();
        assert!(
            err.to_string().starts_with("invalid environment name"),
            "{err}"
        );
        assert_eq!(exit_code_for(&err), ExitCode::Invalid);
    }
    assert!(
        !dir.path().join("leases").exists()
            || std::fs::read_dir(dir.path().join("leases"))
                .unwrap()
                .count()
                == 0
    );
}

#[test]
fn the_lease_file_records_the_holder_while_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("releases.json");
    let (mut child, _lines, _) = holder("lease", &path, "prod");
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("leases/prod.lock")).unwrap())
            .unwrap();
    assert_eq!(recorded["pid"], child.id());
    for key in ["host", "user", "command", "since"] {
        assert!(
            recorded[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key}"
        );
    }
    child.stdin.take().unwrap().write_all(b"").unwrap();
    child.wait().unwrap();
}
