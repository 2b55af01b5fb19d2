//! The store consistency suite, written once and run against every backend (state_store.rs and
//! state_lease.rs for the file backend, state_postgres.rs for PostgreSQL): read-after-write
//! across instances and processes, no lost updates under many processes and threads, all-or-
//! nothing transactions, whole snapshots for readers, and exclusive, named leases that die with
//! their holder and recover what it left running.

use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdout, Stdio};
use std::time::Duration;

use serde_json::Value;
use stagecraft::error::{exit_code_for, ExitCode};
use stagecraft::state::{
    is_postgres_url, OverallStatus, PhaseStatus, State, StateStore, StateStoreExt, StoreTarget,
    Window, CANONICAL_PHASES,
};
use stagecraft_tests::pg::PgServer;
use stagecraft_tests::run;

use super::{all, release, worker};

/// A fresh, empty store: its spec (a path or a URL) and whatever keeps it alive.
pub struct Fresh {
    pub spec: String,
    /// The directory the store (file backend) or the test's files live in.
    pub dir: tempfile::TempDir,
}

impl Fresh {
    pub fn open(&self) -> Box<dyn StateStore> {
        StoreTarget::parse(&self.spec, "the test").open().unwrap()
    }

    /// The CLI flag that selects this store.
    pub fn flag(&self) -> [&str; 2] {
        if is_postgres_url(&self.spec) {
            ["--state-url", &self.spec]
        } else {
            ["--state-file", &self.spec]
        }
    }
}

/// A kind of store the suite runs against.
pub trait Backend {
    /// A new empty store, named after `tag` where the backend has names.
    fn fresh(&self, tag: &str) -> Fresh;
}

/// The file backend: a state file in a new temp dir (the directory is created by the first
/// commit).
pub struct FileBackend;

impl Backend for FileBackend {
    fn fresh(&self, _tag: &str) -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir
            .path()
            .join("state/releases.json")
            .to_str()
            .unwrap()
            .to_string();
        Fresh { spec, dir }
    }
}

/// PostgreSQL: a database per store on the test's own server.
pub struct PgBackend {
    pub server: PgServer,
}

impl PgBackend {
    pub fn start() -> PgBackend {
        PgBackend {
            server: PgServer::start(),
        }
    }
}

impl Backend for PgBackend {
    fn fresh(&self, tag: &str) -> Fresh {
        let spec = self.server.create_database(tag);
        Fresh {
            spec,
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

fn add(store: &dyn StateStore, id: &str, env: &str) {
    store
        .transact(|s| {
            s.releases
                .push(release(id, env, "v1", &all(PhaseStatus::Pending)).into());
            Ok(())
        })
        .unwrap();
}

/// Two instances of one store in one process: each sees the other's commits at once, and
/// `serial` counts every commit.
pub fn read_after_write_across_two_instances(backend: &dyn Backend) {
    let fresh = backend.fresh("raw_instances");
    let (a, b) = (fresh.open(), fresh.open());
    assert_eq!(a.read().unwrap(), State::default());
    for i in 0..20u32 {
        let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let id = format!("rel-20261125-0600{i:02}000");
        add(writer.as_ref(), &id, "prod");
        let seen = reader.read().unwrap();
        assert!(seen.get(&id).is_some(), "round {i}: {id} not visible");
        assert_eq!(seen.serial, u64::from(i) * 2 + 1);
        // A phase update through one instance is seen by the other at once: the seed's bug.
        reader
            .transact(|s| {
                s.get_mut(&id)
                    .unwrap()
                    .phases
                    .insert("build".into(), PhaseStatus::Completed);
                Ok(())
            })
            .unwrap();
        assert_eq!(
            writer.read().unwrap().get(&id).unwrap().status_of("build"),
            PhaseStatus::Completed
        );
        assert_eq!(writer.read().unwrap().serial, u64::from(i) * 2 + 2);
    }
}

/// A worker process writes and this one reads; this one writes and the real binary reads.
pub fn read_after_write_across_processes(backend: &dyn Backend) {
    let fresh = backend.fresh("raw_processes");
    let store = fresh.open();
    for i in 0..5 {
        let out = worker()
            .args(["add", &fresh.spec, "prod", &format!("v{i}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert_eq!(
            store.read().unwrap().get(&id).unwrap().version,
            format!("v{i}")
        );
        store
            .transact(|s| {
                let r = s.get_mut(&id).unwrap();
                r.phases.insert("build".into(), PhaseStatus::Completed);
                Ok(())
            })
            .unwrap();
        let mut args = vec!["releases", "show", &id, "--json"];
        args.extend(fresh.flag());
        let shown = run(fresh.dir.path(), &args);
        assert_eq!(shown.code, 0, "{shown:?}");
        let v: Value = serde_json::from_str(&shown.stdout).unwrap();
        assert_eq!(v["phases"][0]["name"], "build");
        assert_eq!(v["phases"][0]["status"], "completed");
    }
}

/// `processes` x `threads` (each thread its own store instance) x `txns` increments of the
/// thread's own counter, all released at once. A lost update would leave some counter short, or
/// `serial` short of the number of commits.
pub fn no_lost_updates(
    backend: &dyn Backend,
    rounds: usize,
    processes: usize,
    threads: usize,
    txns: usize,
) {
    assert!(processes >= 8 && txns >= 50, "the suite's minimum load");
    for round in 0..rounds {
        let fresh = backend.fresh(&format!("lost_updates_{round}"));
        let mut children: Vec<_> = (0..processes)
            .map(|p| {
                worker()
                    .args([
                        "hammer",
                        &fresh.spec,
                        &threads.to_string(),
                        &txns.to_string(),
                        &format!("p{p}"),
                    ])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // Every process is started before any begins, so they all contend.
        for child in &mut children {
            child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        }
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
        }
        let state = fresh.open().read().unwrap();
        let counters = state.extra["counters"].as_object().unwrap();
        assert_eq!(counters.len(), processes * threads, "round {round}");
        for (key, value) in counters {
            assert_eq!(value.as_u64(), Some(txns as u64), "round {round}: {key}");
        }
        assert_eq!(
            state.serial,
            (processes * threads * txns) as u64,
            "round {round}"
        );
        assert_eq!(state.format_version, Some(2));
    }
}

/// A closure's error, or a state that breaks an invariant, commits nothing.
pub fn a_failing_transaction_writes_nothing(backend: &dyn Backend) -> Fresh {
    let fresh = backend.fresh("failing_txn");
    let store = fresh.open();
    add(store.as_ref(), "rel-20261125-060000000", "prod");
    let before = store.read().unwrap();
    let err = store
        .transact(|s| -> anyhow::Result<()> {
            s.releases.clear();
            s.extra.insert("half".into(), Value::Bool(true));
            anyhow::bail!("changed my mind")
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "changed my mind");
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
    assert_eq!(exit_code_for(&err), ExitCode::State);
    assert_eq!(store.read().unwrap(), before);
    fresh
}

/// A reader always sees a whole committed state while a writer commits in a loop: each commit
/// adds one release and bumps serial, so the two always agree and never go back.
pub fn readers_never_see_a_partial_state(backend: &dyn Backend, reads: usize) {
    let fresh = backend.fresh("partial_reads");
    let mut child = worker()
        .args(["commit-loop", &fresh.spec])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let store = fresh.open();
    let mut last_serial = 0;
    for _ in 0..reads {
        let line = lines.next().unwrap().unwrap();
        let n: u64 = line
            .strip_prefix("committed ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        let state = store.read().unwrap();
        assert!(state.serial >= n, "commit {n} acknowledged but not visible");
        assert!(state.serial >= last_serial, "serial went back");
        assert_eq!(state.releases.len() as u64, state.serial);
        let sequence = state.extra["sequence"].as_array().unwrap();
        assert_eq!(sequence.len() as u64, state.serial);
        last_serial = state.serial;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A worker holding `env`'s lease (or stuck mid-deploy), once it has said so.
pub fn holder(mode: &str, spec: &str, env: &str) -> (Child, Lines<BufReader<ChildStdout>>, String) {
    let mut child = worker()
        .args([mode, spec, env])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().expect("worker said nothing").unwrap();
    (child, lines, ready)
}

/// A second lease fails at once, and after a bounded wait, naming the holder; other
/// environments are free; the holder letting go frees it. Returns the store for backend-specific
/// checks of the recorded holder.
pub fn a_second_lease_fails_naming_the_holder(backend: &dyn Backend) -> Fresh {
    let fresh = backend.fresh("lease_named");
    let (mut child, _lines, ready) = holder("lease", &fresh.spec, "prod");
    assert_eq!(ready, "leased prod");

    let store = fresh.open();
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
        message.ends_with(
            "; wait for it, or pass --lock-wait <duration> (e.g. --lock-wait 5m) to wait here"
        ),
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
    store.lease("prod", Duration::ZERO).unwrap();
    fresh
}

/// Two instances in one process exclude each other too.
pub fn a_lease_is_exclusive_within_one_process(backend: &dyn Backend) {
    let fresh = backend.fresh("lease_in_process");
    let (a, b) = (fresh.open(), fresh.open());
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

/// A waiting lease is granted when the holder lets go.
pub fn a_waiting_lease_is_granted_when_the_holder_lets_go(backend: &dyn Backend) {
    let fresh = backend.fresh("lease_wait");
    let (mut child, _lines, _) = holder("lease", &fresh.spec, "prod");
    let store = fresh.open();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| store.lease("prod", Duration::from_secs(60)));
        drop(child.stdin.take());
        child.wait().unwrap();
        let lease = waiter.join().unwrap().unwrap();
        assert_eq!(lease.environment(), "prod");
    });
}

/// A holder killed with SIGKILL mid-deploy frees the lease at once; the next holder marks its
/// release interrupted in one transaction and touches no other environment. `wait` bounds the
/// moment between the kill and the backend noticing it: zero for the file backend (the kernel
/// drops the flock with the process); PostgreSQL ends the session when it reads the closed
/// socket, and a waiting lease is woken by the server the moment that happens.
pub fn a_sigkilled_holder_frees_the_lease_and_is_recovered(backend: &dyn Backend, wait: Duration) {
    let fresh = backend.fresh("lease_sigkill");
    let store = fresh.open();
    store
        .transact(|s| {
            let mut r = release(
                "rel-20261125-050000000",
                "staging",
                "v1",
                &all(PhaseStatus::Pending),
            );
            r.phases.insert("build".into(), PhaseStatus::Running);
            s.releases.push(r.into());
            Ok(())
        })
        .unwrap();

    let (mut child, _lines, ready) = holder("deploy-hang", &fresh.spec, "prod");
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
        .lease("prod", wait)
        .expect("freed when the holder died");

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

/// Names that are not environment names are refused before anything is touched (exit 1).
pub fn unsafe_environment_names_are_refused(backend: &dyn Backend) -> Fresh {
    let fresh = backend.fresh("lease_names");
    let store = fresh.open();
    for bad in ["../escape", "Prod", "", "a/b"] {
        let err = store.lease(bad, Duration::ZERO).err().unwrap();
        assert!(
            err.to_string().starts_with("invalid environment name"),
            "{err}"
        );
        assert_eq!(exit_code_for(&err), ExitCode::Invalid);
    }
    fresh
}

/// A holder killed between two phases (one phase's end committed, the next one's start not)
/// leaves phases `pending` and none `running`; a release killed right after it was created has
/// every phase pending. The next lease of the environment finishes both in one transaction: the
/// first unfinished phase `failed`, the rest `skipped`, so nothing of the environment is left
/// unfinished. Other environments are not touched.
pub fn a_release_killed_between_phases_is_finished_by_the_next_lease(backend: &dyn Backend) {
    use PhaseStatus::*;
    let fresh = backend.fresh("lease_between");
    let store = fresh.open();
    store
        .transact(|s| {
            let mut between = release("rel-20261125-060000000", "prod", "v1", &all(Pending));
            for done in ["build", "push"] {
                between.phases.insert(done.into(), Completed);
            }
            s.releases.push(between.into());
            s.releases
                .push(release("rel-20261125-060100000", "prod", "v2", &all(Pending)).into());
            s.releases
                .push(release("rel-20261125-060200000", "staging", "v1", &all(Pending)).into());
            Ok(())
        })
        .unwrap();
    let serial_before = store.read().unwrap().serial;

    let _lease = store.lease("prod", Duration::ZERO).unwrap();
    let state = store.read().unwrap();
    assert_eq!(
        state.serial,
        serial_before + 1,
        "recovery is one transaction"
    );
    let r = state.get("rel-20261125-060000000").unwrap();
    assert_eq!(r.status_of("push"), Completed);
    assert_eq!(r.status_of("migrate_pre"), Failed);
    assert_eq!(
        r.phase_details["migrate_pre"].error.as_deref(),
        Some("interrupted: the process exited before migrate_pre started")
    );
    for phase in &CANONICAL_PHASES[3..] {
        assert_eq!(r.status_of(phase), Skipped, "{phase}");
    }
    let fresh_one = state.get("rel-20261125-060100000").unwrap();
    assert_eq!(fresh_one.status_of("build"), Failed);
    assert_invariants(&state, &[]);
    assert!(
        unfinished(&state, "prod").is_empty(),
        "{:?}",
        unfinished(&state, "prod")
    );
    assert_eq!(
        state
            .get("rel-20261125-060200000")
            .unwrap()
            .overall_status(),
        OverallStatus::Pending,
        "staging is not prod's to finish"
    );
}

/// The ids of `env`'s releases that still have a phase `pending` or `running`.
pub fn unfinished(state: &State, env: &str) -> Vec<String> {
    state
        .releases
        .iter()
        .filter(|r| r.environment == env)
        .filter(|r| {
            r.phase_statuses()
                .iter()
                .any(|(_, s)| matches!(s, PhaseStatus::Pending | PhaseStatus::Running))
        })
        .map(|r| r.id.to_string())
        .collect()
}

/// The invariants every state must keep, whatever was killed when (the torture test checks
/// them after every round, the suite after its own scenarios):
///
/// - ids are unique, and within each environment strictly increase in the order releases were
///   appended (allocation order), never above `last_release_id`. (Across environments,
///   PostgreSQL lists releases in the order their commits wrote them: two environments'
///   commits run in parallel, so one that allocated a lower id may write after.)
/// - every release of `finished`, a list of releases seen completed or failed earlier, is still
///   there, unchanged.
pub fn assert_invariants(state: &State, finished: &[stagecraft::state::Release]) {
    let ids: Vec<&str> = state.releases.iter().map(|r| r.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "duplicate ids: {ids:?}");
    let mut environments: Vec<&str> = state
        .releases
        .iter()
        .map(|r| r.environment.as_str())
        .collect();
    environments.sort_unstable();
    environments.dedup();
    for env in environments {
        let appended: Vec<&str> = state
            .releases
            .iter()
            .filter(|r| r.environment == env)
            .map(|r| r.id.as_str())
            .collect();
        let mut sorted = appended.clone();
        sorted.sort_unstable();
        assert_eq!(appended, sorted, "{env}: ids not in allocation order");
    }
    if let (Some(last), Some(highest)) = (&state.last_release_id, ids.last()) {
        assert!(
            last.as_str() >= *highest,
            "last_release_id {last} < {highest}"
        );
    }
    for before in finished {
        let now = state
            .get(before.id.as_str())
            .unwrap_or_else(|| panic!("finished release {} was lost", before.id));
        assert_eq!(now, before, "finished release {} changed", before.id);
    }
}

/// A new release of `env` through a scoped transaction, every phase completed at once (so the
/// window stays the current release): what a deploy's commits amount to.
fn deploy_scoped(store: &dyn StateStore, env: &str, version: &str) -> stagecraft::state::ReleaseId {
    store
        .transact_env(env, Window::Recent(&[]), |s| {
            let phases: Vec<String> = CANONICAL_PHASES.iter().map(|p| p.to_string()).collect();
            let release = s
                .push_release(env, version, "", &phases, time::OffsetDateTime::now_utc())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for phase in &phases {
                release.phases.insert(phase.clone(), PhaseStatus::Completed);
            }
            release.pipeline = phases.clone();
            Ok(release.id.clone())
        })
        .unwrap()
}

/// `threads` threads (each its own store instance) on four environments, each committing `txns`
/// new releases through scoped transactions, while one more thread makes whole-state commits:
/// nothing lost, ids unique across environments and increasing in the order they were issued,
/// `serial` equal to the number of commits.
pub fn scoped_commits_lose_nothing_across_environments(
    backend: &dyn Backend,
    threads: usize,
    txns: usize,
) {
    let fresh = backend.fresh("scoped_no_lost_updates");
    let barrier = std::sync::Barrier::new(threads + 1);
    let issued: Vec<Vec<stagecraft::state::ReleaseId>> = std::thread::scope(|scope| {
        let whole = scope.spawn(|| {
            let store = fresh.open();
            barrier.wait();
            for i in 0..txns {
                store
                    .transact(|s| {
                        s.extra.insert("whole".into(), Value::from(i + 1));
                        Ok(())
                    })
                    .unwrap();
            }
        });
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (fresh, barrier) = (&fresh, &barrier);
                scope.spawn(move || {
                    let store = fresh.open();
                    let env = format!("env{}", t % 4);
                    barrier.wait();
                    (0..txns)
                        .map(|i| deploy_scoped(store.as_ref(), &env, &format!("t{t}-{i}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        whole.join().unwrap();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let state = fresh.open().read().unwrap();
    state.validate().unwrap();
    assert_eq!(state.releases.len(), threads * txns);
    for ids in &issued {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }
    for env in 0..4 {
        let env = format!("env{env}");
        let expected = (0..threads).filter(|t| t % 4 == env[3..].parse::<usize>().unwrap());
        assert_eq!(state.list_env(&env).len(), expected.count() * txns, "{env}");
        // Each release's previous is the one committed before it in that environment.
        let list = state.list_env(&env);
        for pair in list.windows(2) {
            assert_eq!(pair[0].previous_id.as_ref(), Some(&pair[1].id), "{env}");
        }
    }
    assert_eq!(state.extra["whole"], Value::from(txns));
    assert_eq!(state.serial, ((threads + 1) * txns) as u64);
}

/// A transaction on one environment can change nothing else: not another environment's
/// releases, not the store's own fields. Nothing is written either way.
pub fn a_scoped_transaction_changes_only_its_environment(backend: &dyn Backend) {
    let fresh = backend.fresh("scoped_only_its_env");
    let store = fresh.open();
    add(store.as_ref(), "rel-20261125-060000000", "staging");
    deploy_scoped(store.as_ref(), "prod", "v1");
    let before = store.read().unwrap();
    let err = store
        .transact_env("prod", Window::Whole, |s| {
            s.releases.push(
                release(
                    "rel-20261125-070000000",
                    "staging",
                    "v9",
                    &all(PhaseStatus::Pending),
                )
                .into(),
            );
            Ok(())
        })
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "a transaction on environment \"prod\" cannot change releases of \"staging\""
        ),
        "{err}"
    );
    assert_eq!(exit_code_for(&err), ExitCode::State);
    let err = store
        .transact_env("prod", Window::Recent(&[]), |s| {
            s.extra.insert("sneaky".into(), Value::Bool(true));
            Ok(())
        })
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot change the store's own fields"),
        "{err}"
    );
    // What the window does not show stays as it was: the staging release is not in prod's.
    store
        .transact_env("prod", Window::Whole, |s| {
            assert!(s.releases.iter().all(|r| r.environment == "prod"));
            Ok(())
        })
        .unwrap();
    let after = store.read().unwrap();
    assert_eq!(after.releases, before.releases);
}

/// While a transaction on one environment is open (its closure waits), a transaction on another
/// environment, allocating a release id, commits: they do not wait on each other. The first then
/// commits too, after the second's id. (Not for the file backend: one file, one commit lock.)
pub fn environments_commit_without_waiting_for_each_other(backend: &dyn Backend) {
    let fresh = backend.fresh("scoped_parallel");
    let (inside_tx, inside) = std::sync::mpsc::channel::<()>();
    let (go_tx, go) = std::sync::mpsc::channel::<()>();
    let (other_tx, other) = std::sync::mpsc::channel::<stagecraft::state::ReleaseId>();
    let patience = Duration::from_secs(60);
    let fresh = &fresh;
    std::thread::scope(|scope| {
        let first = scope.spawn(move || {
            let store = fresh.open();
            let mut tries = 0;
            store
                .transact_env("alpha", Window::Recent(&[]), |s| {
                    tries += 1;
                    if tries == 1 {
                        inside_tx.send(()).unwrap();
                        go.recv_timeout(patience).expect("told to go on");
                    }
                    let phases = vec!["build".to_string()];
                    Ok(
                        s.push_release("alpha", "a1", "", &phases, time::OffsetDateTime::now_utc())
                            .unwrap()
                            .id
                            .clone(),
                    )
                })
                .unwrap()
        });
        inside
            .recv_timeout(patience)
            .expect("the first transaction started");
        scope.spawn(move || {
            let store = fresh.open();
            other_tx
                .send(deploy_scoped(store.as_ref(), "beta", "b1"))
                .unwrap();
        });
        let beta = other
            .recv_timeout(patience)
            .expect("beta committed while alpha's transaction was open");
        go_tx.send(()).unwrap();
        let alpha = first.join().unwrap();
        assert!(alpha > beta, "alpha {alpha} allocated after beta {beta}");
    });
    let state = fresh.open().read().unwrap();
    assert_eq!(state.releases.len(), 2);
    assert_eq!(state.serial, 2);
}

/// A plan whose one phase ran the component `digest`.
fn plan_running(digest: &str) -> stagecraft::state::Plan {
    stagecraft::state::Plan {
        manifest_digest: "m".repeat(64),
        phases: vec![stagecraft::state::PlannedPhase {
            name: "rollout".into(),
            plugin: "plugins/rollout.wasm".into(),
            digest: digest.to_string(),
            config: Default::default(),
            grants: Default::default(),
            timeout: "10m".into(),
            memory: "512MiB".into(),
        }],
        grant_changes_allowed: false,
    }
}

/// Commit a finished release of `env` whose plan ran `digest`.
fn deploy_running(store: &dyn StateStore, env: &str, digest: &str) -> stagecraft::state::ReleaseId {
    store
        .transact_env(env, Window::Recent(&[]), |s| {
            let phases = vec!["rollout".to_string()];
            let release = s
                .push_release(env, "v", "", &phases, time::OffsetDateTime::now_utc())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            release
                .phases
                .insert("rollout".into(), PhaseStatus::Completed);
            release.pipeline = phases;
            release.plan = Some(plan_running(digest));
            Ok(release.id.clone())
        })
        .unwrap()
}

/// A component's bytes and their digest (any bytes do: the store checks only the digest).
fn blob(tag: &str) -> (String, Vec<u8>) {
    let bytes = format!("\0asm component {tag}").into_bytes();
    (sha256_hex(&bytes), bytes)
}

use stagecraft::plugin::sha256_hex;

/// The component store: kept once, read back checked against the digest, refused when the
/// bytes are not the digest's, and swept only when no release names it.
pub fn components_are_kept_checked_and_swept(backend: &dyn Backend) -> Fresh {
    let fresh = backend.fresh("components");
    let store = fresh.open();
    let (a, a_bytes) = blob("a");
    let (b, b_bytes) = blob("b");
    // Nothing is created by looking.
    assert_eq!(
        store.missing_components(std::slice::from_ref(&a)).unwrap(),
        vec![a.clone()]
    );
    assert_eq!(store.component(&a).unwrap(), None);
    assert_eq!(store.sweep_components().unwrap(), 0);

    let wrong = store.put_component(&a, &b_bytes).unwrap_err().to_string();
    assert!(
        wrong.starts_with(&format!("refusing to keep component {a}: its ")),
        "{wrong}"
    );
    let not_a_digest = store
        .put_component("../../x", &a_bytes)
        .unwrap_err()
        .to_string();
    assert!(
        not_a_digest.contains("is not a component digest"),
        "{not_a_digest}"
    );

    store.put_component(&a, &a_bytes).unwrap();
    store.put_component(&a, &a_bytes).unwrap(); // Once however often.
    store.put_component(&b, &b_bytes).unwrap();
    assert_eq!(store.component(&a).unwrap().as_deref(), Some(&a_bytes[..]));
    assert!(store
        .missing_components(&[a.clone(), b.clone()])
        .unwrap()
        .is_empty());

    deploy_running(store.as_ref(), "prod", &a);
    assert_eq!(
        store.sweep_components().unwrap(),
        1,
        "b: no release names it"
    );
    assert_eq!(
        store.missing_components(&[a.clone(), b.clone()]).unwrap(),
        vec![b.clone()]
    );
    assert_eq!(store.component(&a).unwrap().as_deref(), Some(&a_bytes[..]));
    assert_eq!(
        fresh.open().component(&a).unwrap().as_deref(),
        Some(&a_bytes[..])
    );
    fresh
}

/// Many threads (each its own store instance, one environment each) deploy releases that run
/// components from a small pool and prune their environment to its newest release, so each
/// component is named, unnamed and named again, while another thread sweeps unused components
/// all along. Each deploy keeps its component, commits, then checks it again (the pipeline's
/// order, state/components.rs). Once a deploy has done that, its component is held, whatever the
/// sweeps did; and at the end every release's component is held.
pub fn a_sweep_never_removes_a_component_a_committed_release_runs(
    backend: &dyn Backend,
    threads: usize,
    rounds: usize,
) {
    let fresh = backend.fresh("component_sweeps");
    let done = std::sync::atomic::AtomicBool::new(false);
    let swept = std::thread::scope(|scope| {
        let sweeper = scope.spawn(|| {
            let store = fresh.open();
            let mut swept = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                swept += store.sweep_components().unwrap();
                // Let a waiting commit have the lock between two sweeps.
                std::thread::yield_now();
            }
            swept
        });
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let fresh = &fresh;
                scope.spawn(move || {
                    let store = fresh.open();
                    let env = format!("env{t}");
                    // Shared by every thread, so one component is named by several
                    // environments at once; larger than the number of environments, so some
                    // are unnamed at any moment.
                    let pool: Vec<(String, Vec<u8>)> =
                        (0..threads + 2).map(|k| blob(&k.to_string())).collect();
                    for round in 0..rounds {
                        let (digest, bytes) = &pool[(round + t) % pool.len()];
                        let keep = |store: &dyn StateStore| {
                            for missing in store
                                .missing_components(std::slice::from_ref(digest))
                                .unwrap()
                            {
                                store.put_component(&missing, bytes).unwrap();
                            }
                        };
                        keep(store.as_ref());
                        deploy_running(store.as_ref(), &env, digest);
                        keep(store.as_ref());
                        assert_eq!(
                            store.component(digest).unwrap().as_deref(),
                            Some(&bytes[..]),
                            "round {round} of {env}: a sweep removed the component of a \
                             committed release"
                        );
                        store
                            .transact_env_if_changed(&env, Window::Whole, |s| {
                                let pruned = s.prune(&env, 1);
                                Ok(((), !pruned.removed.is_empty()))
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        // Every worker is waited for before the sweeper is stopped, and the sweeper before a
        // worker's failure is passed on: a failed worker must not leave it sweeping forever.
        let results: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let swept = sweeper.join().unwrap();
        for result in results {
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
        }
        swept
    });
    let store = fresh.open();
    // Each environment now names the components of its last two rounds (retention keeps the
    // release before the newest): with the 4 threads and 30 rounds the tests use, environment t
    // names (28 + t) % 6 and (29 + t) % 6, so component 3 of the pool is unused, and this sweep
    // finds it if the sweeper has not already.
    let swept = swept + store.sweep_components().unwrap();
    let state = store.read().unwrap();
    let named: Vec<String> = stagecraft::state::referenced_components(&state)
        .into_iter()
        .collect();
    assert!(store.missing_components(&named).unwrap().is_empty());
    // The sweeps had something to do: components were unnamed by prunes along the way.
    assert!(
        swept > 0,
        "no sweep removed anything; the test proves nothing"
    );
}
