//! Helpers shared by the state tests: the child-process worker and a release builder.
#![allow(dead_code)]

pub mod suite;

use std::path::Path;
use std::process::Command;

use stagecraft::state::{PhaseStatus, Release, ReleaseId, Timestamp};

/// The `state-worker` test binary (tests/src/bin/state-worker.rs), built with these tests.
pub fn worker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_state-worker"))
}

/// A release with the given phases (name, status) in canonical order.
pub fn release(id: &str, env: &str, version: &str, phases: &[(&str, PhaseStatus)]) -> Release {
    let at = ReleaseId::parse(id).expect("test id");
    let ts = format!(
        "{}-{}-{}T{}:{}:{}.{}Z",
        &id[4..8],
        &id[8..10],
        &id[10..12],
        &id[13..15],
        &id[15..17],
        &id[17..19],
        if id.len() == 22 { &id[19..22] } else { "000" }
    );
    Release {
        id: at,
        environment: env.into(),
        version: version.into(),
        commit_sha: String::new(),
        timestamp: Timestamp::parse(&ts).expect("test timestamp"),
        phases: phases.iter().map(|(p, s)| (p.to_string(), *s)).collect(),
        previous_id: None,
        operation: None,
        rollback_target: None,
        pipeline: Vec::new(),
        phase_details: Default::default(),
        created_by: None,
        auto_rollback_of: None,
        auto_rolled_back_by: None,
        plan: None,
        plan_of: None,
        message: None,
        extra: Default::default(),
    }
}

/// Every canonical phase with the same status.
pub fn all(status: PhaseStatus) -> Vec<(&'static str, PhaseStatus)> {
    stagecraft::state::CANONICAL_PHASES
        .iter()
        .map(|p| (*p, status))
        .collect()
}

/// The bytes of a file, or None if it is missing.
pub fn bytes(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}
