//! Deploy leases: exclusive per environment, named in the "busy" error, freed by the OS the
//! moment the holder dies, and recovering releases a dead holder left running.

mod state_common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use state_common::suite::{self, holder, FileBackend};

// The lease part of the consistency suite (state_common/suite.rs) on the file backend, plus
// what only the file backend has: the lease files.

#[test]
fn a_second_lease_fails_naming_the_holder_and_other_environments_are_free() {
    let fresh = suite::a_second_lease_fails_naming_the_holder(&FileBackend);
    let lease_file = Path::new(&fresh.spec).with_file_name("leases/prod.lock");
    assert_eq!(
        std::fs::read(&lease_file).unwrap(),
        b"",
        "holder details cleared"
    );
}

#[test]
fn a_lease_is_exclusive_within_one_process_too() {
    suite::a_lease_is_exclusive_within_one_process(&FileBackend);
}

#[test]
fn a_waiting_lease_is_granted_when_the_holder_lets_go() {
    suite::a_waiting_lease_is_granted_when_the_holder_lets_go(&FileBackend);
}

#[test]
fn a_holder_killed_with_sigkill_frees_the_lease_at_once_and_its_release_is_recovered() {
    suite::a_sigkilled_holder_frees_the_lease_and_is_recovered(&FileBackend, Duration::ZERO);
}

#[test]
fn unsafe_environment_names_are_refused() {
    let fresh = suite::unsafe_environment_names_are_refused(&FileBackend);
    let leases = Path::new(&fresh.spec).with_file_name("leases");
    assert!(!leases.exists() || std::fs::read_dir(&leases).unwrap().count() == 0);
}

#[test]
fn the_lease_file_records_the_holder_while_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("releases.json");
    let (mut child, _lines, _) = holder("lease", path.to_str().unwrap(), "prod");
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

#[test]
fn a_release_killed_between_phases_is_finished_by_the_next_lease() {
    suite::a_release_killed_between_phases_is_finished_by_the_next_lease(&FileBackend);
}
