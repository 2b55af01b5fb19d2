//! Torture: many `stagecraft deploy` and `rollback` processes across several environments,
//! SIGKILLed at random moments (and, on PostgreSQL, the server restarted at random moments),
//! with the history's invariants checked after every round (`suite::assert_invariants`, the
//! checker the consistency suite uses too):
//!
//! - the state reads (parses and validates);
//! - no finished release (no phase pending or running) was lost or changed;
//! - ids are unique and increase in the order releases were created;
//! - after the next deploy of each environment, nothing there is pending or running.
//!
//! Seeded and bounded: a fixed seed by default (`STAGECRAFT_TEST_SEED` replays or explores
//! others), a fixed number of rounds and processes. Sleeps here only choose *when* a kill or
//! restart lands; no assertion depends on timing.

mod state_common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use stagecraft::state::{Release, State, StateStore, StoreTarget};
use stagecraft_tests::pg::PgServer;
use stagecraft_tests::{stagecraft, Rng, Run};
use state_common::suite::{assert_invariants, unfinished};

const ENVIRONMENTS: [&str; 3] = ["e0", "e1", "e2"];

/// A project deploying the six canonical phases with builtin:noop to three environments.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut m = String::new();
    for env in ENVIRONMENTS {
        m.push_str(&format!("[environments.{env}]\n"));
    }
    for p in stagecraft::state::CANONICAL_PHASES {
        m.push_str(&format!("[phases.{p}]\nplugin = \"builtin:noop\"\n"));
    }
    std::fs::write(dir.path().join("stagecraft.toml"), m).unwrap();
    dir
}

/// What one round does.
struct Round {
    processes: usize,
    /// The longest a kill waits after the processes start, in ms.
    kill_within_ms: u64,
    /// Whether to restart the PostgreSQL server somewhere in the round.
    restart: bool,
}

/// One store under torture: where it is, and how to restart its server (PostgreSQL only).
struct Target<'a> {
    flag: [&'a str; 2],
    store: Box<dyn StateStore>,
    server: Option<&'a mut PgServer>,
}

fn spawn(project: &Path, target: &Target<'_>, args: &[&str]) -> Child {
    stagecraft(project)
        .args(args)
        .args(target.flag)
        .args(["--lock-wait", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finished(state: &State) -> Vec<Release> {
    state
        .releases
        .iter()
        .filter(|r| {
            !r.phase_statuses().iter().any(|(_, s)| {
                matches!(
                    s,
                    stagecraft::state::PhaseStatus::Pending
                        | stagecraft::state::PhaseStatus::Running
                )
            })
        })
        .map(|r| (**r).clone())
        .collect()
}

fn torture(
    target: &mut Target<'_>,
    rounds: usize,
    rng: &mut Rng,
    pick: impl Fn(&mut Rng) -> Round,
) {
    let project = project();
    let mut seen_finished: Vec<Release> = Vec::new();
    let (mut killed, mut restarts, mut version) = (0usize, 0usize, 0usize);
    for round in 0..rounds {
        let plan = pick(rng);
        let mut children: Vec<Child> = (0..plan.processes)
            .map(|_| {
                let env = *rng.pick(&ENVIRONMENTS);
                version += 1;
                let v = format!("v{version}");
                if rng.below(3) == 0 {
                    spawn(
                        project.path(),
                        target,
                        &["rollback", "--env", env, "--to-previous"],
                    )
                } else {
                    spawn(
                        project.path(),
                        target,
                        &["deploy", "--env", env, "--version", &v],
                    )
                }
            })
            .collect();
        let restart_at = plan
            .restart
            .then(|| rng.below(plan.kill_within_ms as usize + 1) as u64);
        // Three in five processes are killed, each at its own moment.
        let mut kills: Vec<(u64, usize)> = Vec::new();
        for i in 0..children.len() {
            if rng.below(5) < 3 {
                kills.push((rng.below(plan.kill_within_ms as usize + 1) as u64, i));
            }
        }
        kills.sort_unstable();
        let mut elapsed = 0u64;
        let mut restarted = false;
        for (at, i) in kills {
            if let (Some(r), false) = (restart_at, restarted) {
                if r <= at {
                    std::thread::sleep(Duration::from_millis(r - elapsed));
                    elapsed = r;
                    restart(target);
                    restarted = true;
                    restarts += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(at - elapsed));
            elapsed = at;
            // Already exited is fine: the kill came too late to matter.
            if children[i].kill().is_ok() {
                killed += 1;
            }
        }
        if restart_at.is_some() && !restarted {
            restart(target);
            restarts += 1;
        }
        for child in children.drain(..) {
            let out: Run = child.wait_with_output().unwrap().into();
            // Killed (no code), or one of the documented exit codes: never a panic.
            assert!(
                (-1..=3).contains(&out.code) && !out.stderr.contains("panicked"),
                "round {round}: {out:?}"
            );
        }

        let state = target
            .store
            .read()
            .unwrap_or_else(|e| panic!("round {round}: the state does not read: {e:#}"));
        assert_invariants(&state, &seen_finished);
        // The next deploy of each environment leaves nothing there unfinished.
        for env in ENVIRONMENTS {
            version += 1;
            let out: Run = spawn(
                project.path(),
                target,
                &["deploy", "--env", env, "--version", &format!("v{version}")],
            )
            .wait_with_output()
            .unwrap()
            .into();
            assert_eq!(out.code, 0, "round {round}, deploy of {env}: {out:?}");
            let state = target.store.read().unwrap();
            assert_eq!(
                unfinished(&state, env),
                Vec::<String>::new(),
                "round {round}: {env}"
            );
        }
        let state = target.store.read().unwrap();
        assert_invariants(&state, &seen_finished);
        seen_finished = finished(&state);
    }
    let total = target.store.read().unwrap().releases.len();
    eprintln!(
        "{rounds} rounds: {killed} processes killed, {restarts} server restarts, {total} releases"
    );
    assert!(killed > 0, "no kill landed");
}

fn restart(target: &mut Target<'_>) {
    if let Some(server) = target.server.as_deref_mut() {
        server.stop();
        server.start_again();
    }
}

#[test]
fn file_backend_survives_sigkills_of_concurrent_deploys_and_rollbacks() {
    let mut rng = Rng::from_env_or(0x7047_0013, "file torture");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/releases.json");
    let spec = path.to_str().unwrap().to_string();
    let mut target = Target {
        flag: ["--state-file", &spec],
        store: StoreTarget::parse(&spec, "the test").open().unwrap(),
        server: None,
    };
    torture(&mut target, 60, &mut rng, |rng| Round {
        processes: 3 + rng.below(5),
        kill_within_ms: 40 + rng.below(200) as u64,
        restart: false,
    });
    // The last backup is a whole, readable history too.
    let bak = StoreTarget::parse(&format!("{spec}.bak"), "the test")
        .open()
        .unwrap();
    bak.read().unwrap();
}

#[test]
fn postgres_backend_survives_sigkills_and_server_restarts() {
    let mut rng = Rng::from_env_or(0x7047_0014, "postgres torture");
    let mut server = PgServer::start();
    let url = server.create_database("torture");
    let mut target = Target {
        flag: ["--state-url", &url],
        store: StoreTarget::parse(&url, "the test").open().unwrap(),
        server: Some(&mut server),
    };
    torture(&mut target, 25, &mut rng, |rng| Round {
        processes: 3 + rng.below(4),
        kill_within_ms: 40 + rng.below(200) as u64,
        restart: rng.below(3) == 0,
    });
}
