//! The PostgreSQL backend against a real server of the test's own (tests/src/pg.rs): the same
//! consistency suite as the file backend, then what only PostgreSQL has: migrations under
//! concurrent first use, the holder table, lost lease connections, and connection failures.

mod state_common;

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use stagecraft::error::{exit_code_for, ExitCode};
use stagecraft::state::{
    latest_schema_version, PgStore, PhaseStatus, State, StateStore, StateStoreExt,
};
use stagecraft_tests::pg::PASSWORD;
use state_common::suite::{self, holder, Backend, PgBackend};
use state_common::*;

#[test]
fn read_after_write_across_two_instances_in_one_process() {
    suite::read_after_write_across_two_instances(&PgBackend::start());
}

#[test]
fn read_after_write_across_processes() {
    suite::read_after_write_across_processes(&PgBackend::start());
}

/// 8 processes x 3 threads x 50 transactions on one database: every counter complete and
/// serial equal to the number of commits.
#[test]
fn no_lost_updates_under_many_processes_and_threads() {
    suite::no_lost_updates(&PgBackend::start(), 1, 8, 3, 50);
}

/// 8 threads on four environments x 50 scoped commits, beside whole-state commits: every id
/// race between environments ends in unique, increasing ids.
#[test]
fn scoped_commits_lose_nothing_across_environments() {
    suite::scoped_commits_lose_nothing_across_environments(&PgBackend::start(), 8, 50);
}

#[test]
fn a_scoped_transaction_changes_only_its_environment() {
    suite::a_scoped_transaction_changes_only_its_environment(&PgBackend::start());
}

#[test]
fn environments_commit_without_waiting_for_each_other() {
    suite::environments_commit_without_waiting_for_each_other(&PgBackend::start());
}

#[test]
fn a_failing_transaction_writes_nothing() {
    suite::a_failing_transaction_writes_nothing(&PgBackend::start());
}

#[test]
fn readers_never_see_a_partial_state() {
    suite::readers_never_see_a_partial_state(&PgBackend::start(), 100);
}

/// A release id that a commit in flight has claimed (here a transaction of the test's own
/// holding the claim on the next ids) is skipped, never waited for: the commit allocates past
/// it in the same transaction, and past a whole run of claimed ids too.
#[test]
fn a_release_id_claimed_by_a_commit_in_flight_is_skipped_without_waiting() {
    let pg = PgBackend::start();
    let fresh = pg.fresh("id_claims");
    let store = fresh.open();
    // Ids ahead of the clock, as after a burst of commits: the next is the highest plus 1 ms.
    let highest = stagecraft::state::ReleaseId::parse("rel-20990101-000000000").unwrap();
    store
        .transact(|s| {
            let r = release(highest.as_str(), "old", "v1", &all(PhaseStatus::Completed));
            s.releases.push(r.into());
            Ok(())
        })
        .unwrap();
    let after = |n: usize| {
        let mut id = highest.clone();
        for _ in 0..n {
            id = id.next().unwrap();
        }
        id
    };
    let mut db = pg.server.client("id_claims");
    let deploy = |env: &str| {
        store
            .transact_env(env, stagecraft::state::Window::Recent(&[]), |s| {
                let phases = vec!["build".to_string()];
                let now = time::OffsetDateTime::now_utc();
                Ok(s.push_release(env, "v2", "", &phases, now)
                    .unwrap()
                    .id
                    .clone())
            })
            .unwrap()
    };
    for (claimed, expected) in [(2, after(3)), (40, after(44))] {
        // The claims of commits in flight: the class and key a commit's claim uses.
        let first = store.read().unwrap().highest_release_id().unwrap();
        let mut tx = db.transaction().unwrap();
        for n in 1..=claimed {
            let mut id = first.clone();
            for _ in 0..n {
                id = id.next().unwrap();
            }
            tx.execute(
                "SELECT pg_advisory_xact_lock(1396918596, hashtext($1))",
                &[&id.as_str()],
            )
            .unwrap();
        }
        let env = format!("beta{claimed}");
        assert_eq!(deploy(&env), expected, "{claimed} ids claimed in flight");
        tx.rollback().unwrap();
    }
    // Nothing was written for the ids skipped; the next commit follows the highest.
    assert_eq!(deploy("gamma"), after(45));
    let state = store.read().unwrap();
    assert_eq!(state.releases.len(), 4);
}

#[test]
fn a_second_lease_fails_naming_the_holder_and_other_environments_are_free() {
    let pg = PgBackend::start();
    let fresh = suite::a_second_lease_fails_naming_the_holder(&pg);
    // Every lease the suite took has been let go, and each cleared its holder row.
    let mut db = pg.server.client("lease_named");
    let holders: Vec<Option<serde_json::Value>> = db
        .query(
            "SELECT holder FROM stagecraft_environments ORDER BY name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(holders, [None, None], "prod and staging both let go");
    drop(fresh);
}

#[test]
fn a_lease_is_exclusive_within_one_process_too() {
    suite::a_lease_is_exclusive_within_one_process(&PgBackend::start());
}

#[test]
fn a_waiting_lease_is_granted_when_the_holder_lets_go() {
    suite::a_waiting_lease_is_granted_when_the_holder_lets_go(&PgBackend::start());
}

#[test]
fn a_holder_killed_with_sigkill_frees_the_lease_and_its_release_is_recovered() {
    suite::a_sigkilled_holder_frees_the_lease_and_is_recovered(
        &PgBackend::start(),
        Duration::from_secs(30),
    );
}

#[test]
fn a_release_killed_between_phases_is_finished_by_the_next_lease() {
    suite::a_release_killed_between_phases_is_finished_by_the_next_lease(&PgBackend::start());
}

#[test]
fn unsafe_environment_names_are_refused() {
    let pg = PgBackend::start();
    suite::unsafe_environment_names_are_refused(&pg);
    let mut db = pg.server.client("lease_names");
    let rows = db
        .query("SELECT name FROM stagecraft_environments", &[])
        .map(|r| r.len())
        .unwrap_or(0);
    assert_eq!(rows, 0);
}

/// The holder is recorded beside the lock while held, and cleared when let go.
#[test]
fn the_holder_table_records_the_holder_while_held() {
    let pg = PgBackend::start();
    let fresh = pg.fresh("holder_row");
    let (mut child, _lines, ready) = holder("lease", &fresh.spec, "prod");
    assert_eq!(ready, "leased prod");
    let mut db = pg.server.client("holder_row");
    let row = db
        .query_one(
            "SELECT holder, holder_backend_pid FROM stagecraft_environments WHERE name = 'prod'",
            &[],
        )
        .unwrap();
    let recorded: serde_json::Value = row.get(0);
    let backend_pid: Option<i32> = row.get(1);
    assert_eq!(recorded["pid"], child.id());
    for key in ["host", "user", "command", "since"] {
        assert!(
            recorded[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key}"
        );
    }
    assert!(backend_pid.is_some());
    child.stdin.take().unwrap().write_all(b"").unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let cleared: Option<serde_json::Value> = db
        .query_one(
            "SELECT holder FROM stagecraft_environments WHERE name = 'prod'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(cleared, None);
}

/// Eight processes using a new database at once: the schema is created exactly once and every
/// commit lands.
#[test]
fn concurrent_first_use_migrates_once() {
    let pg = PgBackend::start();
    let fresh = pg.fresh("first_use");
    let children: Vec<_> = (0..8)
        .map(|i| {
            state_common::worker()
                .args(["add", &fresh.spec, "prod", &format!("v{i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let mut db = pg.server.client("first_use");
    let versions: Vec<i32> = db
        .query(
            "SELECT version FROM stagecraft_schema ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=latest_schema_version()).collect::<Vec<_>>());
    let state = fresh.open().read().unwrap();
    assert_eq!(state.releases.len(), 8);
    assert_eq!(state.serial, 8);
}

/// Reading a database without the schema creates nothing; a schema newer than this build is
/// refused with a message that says to upgrade.
#[test]
fn reads_create_nothing_and_a_newer_schema_is_refused() {
    let pg = PgBackend::start();
    let fresh = pg.fresh("schema_versions");
    assert_eq!(fresh.open().read().unwrap(), State::default());
    let mut db = pg.server.client("schema_versions");
    let exists: bool = db
        .query_one("SELECT to_regclass('stagecraft_schema') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!exists, "a read created the schema");

    let store = fresh.open();
    store
        .transact(|s| {
            s.releases.push(
                release(
                    "rel-20261125-060000000",
                    "prod",
                    "v1",
                    &all(PhaseStatus::Completed),
                )
                .into(),
            );
            Ok(())
        })
        .unwrap();
    db.execute(
        "INSERT INTO stagecraft_schema (version, description) VALUES ($1, 'from the future')",
        &[&(latest_schema_version() + 1)],
    )
    .unwrap();
    let err = fresh.open().read().unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "is version {}, but this stagecraft knows at most {}; upgrade stagecraft",
            latest_schema_version() + 1,
            latest_schema_version()
        )),
        "{err}"
    );
    assert_eq!(exit_code_for(&err), ExitCode::State);
}

/// Every part of the model survives a commit and a read: ids, statuses, details, order,
/// unknown fields, lineage, last issued id and serial.
#[test]
fn the_whole_model_round_trips() {
    let pg = PgBackend::start();
    let fresh = pg.fresh("round_trip");
    let fixture = stagecraft_tests::workspace_root().join("tests/fixtures/v1-releases.json");
    let original: State = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let store = fresh.open();
    // Stored in an order that is not the order of ids, to prove order is kept.
    let mut expected = original.clone();
    expected.releases.reverse();
    expected.extra.insert(
        "nested".into(),
        serde_json::json!({"a": [1, 2.5, null, "x"]}),
    );
    store
        .transact(|s| {
            *s = expected.clone();
            Ok(())
        })
        .unwrap();
    let read = store.read().unwrap();
    assert_eq!(read.releases, expected.releases);
    assert_eq!(read.extra, expected.extra);
    assert_eq!(read.last_release_id, expected.last_release_id);
    assert_eq!(read.serial, expected.serial + 1);
    assert_eq!(read.format_version, Some(2));
    let lineage = read
        .lineage
        .clone()
        .expect("a lineage is given on first commit");
    // Reordering, changing one release and removing another are written and read back too.
    store
        .transact(|s| {
            s.releases.swap(0, 1);
            Arc::make_mut(&mut s.releases[0]).version = "changed".into();
            s.releases.pop();
            Ok(())
        })
        .unwrap();
    let mut want = read.clone();
    want.releases.swap(0, 1);
    Arc::make_mut(&mut want.releases[0]).version = "changed".into();
    want.releases.pop();
    let again = fresh.open().read().unwrap();
    assert_eq!(again.releases, want.releases);
    assert_eq!(again.lineage.as_deref(), Some(lineage.as_str()));
    assert_eq!(again.serial, read.serial + 1);
}

/// The lease's connection dies (the server ends its session) while the deploy still runs: its
/// next commit fails with a clear error and writes nothing.
#[test]
fn a_dropped_lease_connection_stops_its_holder_before_the_next_one_recovers() {
    let pg = PgBackend::start();
    let fresh = pg.fresh("lost_lease");
    // A holder in the middle of a phase, in its own process: losing the lease stops it.
    let (mut holder, _lines, ready) = suite::holder("deploy-hang", &fresh.spec, "prod");
    let id = ready.strip_prefix("running ").expect(&ready).to_string();
    let store = fresh.open();
    let before = store.read().unwrap();
    let mut db = pg.server.client("lost_lease");
    let terminated: bool = db
        .query_one(
            "SELECT pg_terminate_backend(holder_backend_pid) FROM stagecraft_environments \
             WHERE name = 'prod'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(terminated);
    // The lock dies with the session at once; the heartbeat is recent, so the next holder
    // waits until the old holder is gone before recovering its release.
    let taken = store
        .lease("prod", Duration::from_secs(30))
        .expect("the lock died with the session");
    let exited = holder.try_wait().unwrap();
    assert!(
        exited.is_some(),
        "the old holder still ran when the new one took over"
    );
    assert_eq!(exited.unwrap().code(), Some(3));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut holder.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("lost the lease on environment \"prod\": its connection to PostgreSQL at postgres://postgres@")
            && stderr.contains("nothing was written after that"),
        "{stderr}"
    );
    let after = store.read().unwrap();
    assert_eq!(
        after.get(&id).unwrap().status_of("build"),
        PhaseStatus::Failed
    );
    assert_eq!(
        after.serial,
        before.serial + 1,
        "only the recovery committed"
    );
    drop(taken);
}

/// A previous holder on another machine, whose heartbeat is recent, cannot be seen to be gone:
/// the next holder waits until the bound has passed on the database's clock (the old holder
/// stops itself within it) before it recovers anything.
#[test]
fn a_recent_heartbeat_from_another_host_is_waited_out_on_the_database_clock() {
    let pg = PgBackend::start();
    let fresh = pg.fresh("heartbeat_wait");
    let store = fresh.open();
    drop(store.lease("prod", Duration::ZERO).unwrap());
    store
        .transact(|s| {
            let mut r = release(
                "rel-20261125-060000000",
                "prod",
                "v1",
                &all(PhaseStatus::Pending),
            );
            r.phases.insert("build".into(), PhaseStatus::Running);
            s.releases.push(r.into());
            Ok(())
        })
        .unwrap();
    // What a holder on another machine leaves when its session ends under it.
    let mut db = pg.server.client("heartbeat_wait");
    let heartbeat: std::time::SystemTime = db
        .query_one(
            "UPDATE stagecraft_environments
             SET holder = '{\"pid\": 1, \"host\": \"elsewhere\", \"user\": \"ci\", \"command\": \"stagecraft deploy\", \"since\": \"2026-11-25T06:00:00Z\"}',
                 heartbeat_at = clock_timestamp()
             WHERE name = 'prod' RETURNING heartbeat_at",
            &[],
        )
        .unwrap()
        .get(0);
    let _lease = store.lease("prod", Duration::ZERO).unwrap();
    let bound = stagecraft::state::PG_LEASE_BOUND.as_secs_f64();
    let waited_out: bool = db
        .query_one(
            "SELECT clock_timestamp() >= $1::timestamptz + make_interval(secs => $2)",
            &[&heartbeat, &bound],
        )
        .unwrap()
        .get(0);
    assert!(
        waited_out,
        "recovered before the old holder's bound had passed"
    );
    let r = store.read().unwrap();
    assert_eq!(
        r.get("rel-20261125-060000000").unwrap().status_of("build"),
        PhaseStatus::Failed
    );
}

/// A transaction that holds the store row and never ends (a stopped process mid-commit) makes a
/// commit fail after the commit wait, naming what to do, instead of hanging every deploy.
#[test]
fn a_stuck_transaction_on_the_store_row_is_waited_for_within_the_commit_wait() {
    let pg = PgBackend::start();
    let fresh = pg.fresh("stuck_row");
    let store = fresh.open();
    store.transact(|_| Ok(())).unwrap();
    let mut stuck = pg.server.client("stuck_row");
    let mut tx = stuck.transaction().unwrap();
    tx.execute(
        "SELECT 1 FROM stagecraft_store WHERE id = 1 FOR UPDATE",
        &[],
    )
    .unwrap();
    store.set_lock_wait(Duration::from_millis(500));
    // In a thread, so that a regression fails below instead of hanging the test.
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(
            store
                .transact(|_| Ok(()))
                .map_err(|e| (e.to_string(), exit_code_for(&e))),
        );
    });
    let result = outcome
        .recv_timeout(Duration::from_secs(30))
        .expect("the commit still waits for the stuck transaction");
    let (message, code) = result.unwrap_err();
    assert!(
        message.starts_with("cannot commit to PostgreSQL at postgres://postgres@")
            && message.contains(
                "another transaction held the store row (stagecraft_store) for more than 0.5s"
            )
            && message.contains("wait longer with a larger --lock-wait (e.g. 60s)"),
        "{message}"
    );
    assert_eq!(code, ExitCode::State);
    tx.rollback().unwrap();
}

#[test]
fn an_unreachable_server_is_a_state_error_naming_it() {
    let pg = PgBackend::start();
    let url = pg.server.unreachable_url("nowhere");
    let store = PgStore::open(&url, "$STAGECRAFT_DATABASE_URL").unwrap();
    for err in [
        store.read().unwrap_err(),
        store.transact(|_| Ok(())).unwrap_err(),
        store.lease("prod", Duration::ZERO).err().unwrap(),
    ] {
        let message = err.to_string();
        assert!(
            message.starts_with("cannot connect to PostgreSQL at postgres://postgres@"),
            "{message}"
        );
        assert!(message.contains("No such file or directory"), "{message}");
        assert!(
            message.ends_with(
                "check that the server is running and reachable, and the URL given by \
                 $STAGECRAFT_DATABASE_URL"
            ),
            "{message}"
        );
        assert!(!message.contains(PASSWORD), "{message}");
        assert_eq!(exit_code_for(&err), ExitCode::State);
    }
}

#[test]
fn wrong_credentials_are_a_state_error_without_the_password() {
    let pg = PgBackend::start();
    let fresh = pg.fresh("credentials");
    let url = pg
        .server
        .url_with_password("credentials", "not-the-password");
    let err = PgStore::open(&url, "--state-url")
        .unwrap()
        .read()
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(
            "the server refused the login: password authentication failed for user \
             \"postgres\"; check the user name and password in the URL given by --state-url"
        ),
        "{message}"
    );
    assert!(!message.contains("not-the-password"), "{message}");
    assert_eq!(exit_code_for(&err), ExitCode::State);
    // A missing database is named too.
    let err = PgStore::open(&pg.server.url("no_such_db"), "--state-url")
        .unwrap()
        .read()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("database \"no_such_db\" does not exist; create the database"),
        "{err}"
    );
    drop(fresh);
}

/// TLS follows the URL's sslmode, as with libpq: this server accepts TCP only over TLS.
#[test]
fn tls_follows_the_urls_sslmode() {
    let server = stagecraft_tests::pg::PgServer::start_tls();
    server.create_database("tls");
    let open = |query: &str| PgStore::open(&server.tcp_url("tls", query), "--state-url").unwrap();

    // Without TLS the server refuses the connection.
    let err = open("sslmode=disable").read().unwrap_err();
    assert!(err.to_string().contains("no encryption"), "{err}");
    assert_eq!(exit_code_for(&err), ExitCode::State);

    // require (and the default, prefer): encrypted, the certificate is not checked.
    open("sslmode=require")
        .transact(|s| {
            s.releases.push(
                release(
                    "rel-20261125-060000000",
                    "prod",
                    "v1",
                    &all(PhaseStatus::Completed),
                )
                .into(),
            );
            Ok(())
        })
        .unwrap();
    assert_eq!(open("").read().unwrap().releases.len(), 1);

    // verify-full with the server's CA: the chain and the host name check out.
    let ca = server.ca_cert();
    let verified = open(&format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    assert_eq!(verified.read().unwrap().releases.len(), 1);

    // verify-ca with a CA that did not sign the certificate: refused, exit 3.
    let other_dir = tempfile::tempdir().unwrap();
    let other = stagecraft_tests::pg::make_ca(other_dir.path(), "other");
    let err = open(&format!(
        "sslmode=verify-ca&sslrootcert={}",
        other.display()
    ))
    .read()
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("cannot connect to PostgreSQL at postgres://postgres@localhost:")
            && message.contains("error performing TLS handshake"),
        "{message}"
    );
    assert_eq!(exit_code_for(&err), ExitCode::State);

    // A missing root certificate is a configuration error.
    let err = PgStore::open(
        &server.tcp_url("tls", "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
        "--state-url",
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("cannot read sslrootcert /nonexistent/ca.pem"),
        "{err}"
    );
    assert_eq!(exit_code_for(&err), ExitCode::Invalid);
}

/// A database the previous version wrote (schema 2: the migrations as shipped, rows as it wrote
/// them, including a release a killed deploy left running) is upgraded in place on first use,
/// reads the same history, and works with scoped commits: recovery finds the running release
/// through the backfilled flag, and a new release gets an id after every existing one.
#[test]
fn a_database_at_schema_2_is_upgraded_in_place_and_reads_the_same_history() {
    let pg = PgBackend::start();
    let fresh = pg.fresh("upgrade");
    let mut db = pg.server.client("upgrade");
    db.batch_execute(
        "CREATE TABLE stagecraft_schema (
             version integer PRIMARY KEY,
             description text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .unwrap();
    for (version, description, sql) in stagecraft::state::MIGRATIONS.iter().take(2) {
        db.batch_execute(sql).unwrap();
        db.execute(
            "INSERT INTO stagecraft_schema (version, description) VALUES ($1, $2)",
            &[version, description],
        )
        .unwrap();
    }
    let mut running = all(PhaseStatus::Completed);
    running[3].1 = PhaseStatus::Running;
    let old = [
        release(
            "rel-20261125-060000000",
            "prod",
            "v1",
            &all(PhaseStatus::Completed),
        ),
        release("rel-20261125-070000000", "prod", "v2", &running),
        // Not current: only the upgrade's unfinished flag puts the running release above in
        // the window recovery reads.
        release(
            "rel-20261125-073000000",
            "prod",
            "v3",
            &all(PhaseStatus::Completed),
        ),
        release(
            "rel-20261125-080000000",
            "staging",
            "v1",
            &all(PhaseStatus::Completed),
        ),
    ];
    for (position, r) in old.iter().enumerate() {
        db.execute(
            "INSERT INTO stagecraft_releases (id, environment, position, record)
             VALUES ($1, $2, $3, $4)",
            &[
                &r.id.as_str(),
                &r.environment,
                &(position as i64),
                &serde_json::to_value(r).unwrap(),
            ],
        )
        .unwrap();
    }
    db.execute(
        "UPDATE stagecraft_store SET format_version = 2, lineage = 'lineage-of-old', serial = 5,
         last_release_id = 'rel-20261125-080000000' WHERE id = 1",
        &[],
    )
    .unwrap();

    let store = fresh.open();
    let state = store.read().unwrap();
    let ids: Vec<&str> = state.releases.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "rel-20261125-060000000",
            "rel-20261125-070000000",
            "rel-20261125-073000000",
            "rel-20261125-080000000"
        ]
    );
    assert_eq!(
        state.releases.iter().map(|r| &**r).collect::<Vec<_>>(),
        old.iter().collect::<Vec<_>>()
    );
    assert_eq!(state.serial, 5);
    assert_eq!(state.lineage.as_deref(), Some("lineage-of-old"));
    let version: i32 = db
        .query_one("SELECT max(version) FROM stagecraft_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, latest_schema_version());

    // Recovery reads prod's window, which holds the running release only if the upgrade
    // flagged it unfinished.
    drop(store.lease("prod", Duration::from_secs(5)).unwrap());
    let state = store.read().unwrap();
    assert_eq!(
        state.get("rel-20261125-070000000").unwrap().phases["rollout"],
        PhaseStatus::Failed
    );
    let new = store
        .transact_env("prod", stagecraft::state::Window::Recent(&[]), |s| {
            let phases = vec!["build".to_string()];
            Ok(
                s.push_release("prod", "v4", "", &phases, time::OffsetDateTime::UNIX_EPOCH)
                    .unwrap()
                    .clone(),
            )
        })
        .unwrap();
    assert!(new.id.as_str() > "rel-20261125-080000000", "{}", new.id);
    assert_eq!(
        new.previous_id.as_ref().map(|id| id.as_str()),
        Some("rel-20261125-073000000")
    );
    let state = store.read().unwrap();
    assert_eq!(
        state.releases.last().unwrap().id,
        new.id,
        "appended after the old rows"
    );
    assert_eq!(
        state.serial, 7,
        "the old serial, recovery and the new release"
    );
}

#[test]
fn components_are_kept_checked_and_swept() {
    let pg = PgBackend::start();
    let fresh = suite::components_are_kept_checked_and_swept(&pg);
    // A row whose bytes are not its digest's is refused, saying what to do.
    let store = fresh.open();
    let digest: String = {
        let mut client = postgres::Client::connect(&fresh.spec, postgres::NoTls).unwrap();
        let row = client
            .query_one(
                "UPDATE stagecraft_components SET bytes = '\\x00'::bytea RETURNING digest",
                &[],
            )
            .unwrap();
        row.get(0)
    };
    let err = store.component(&digest).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "component {digest} in PostgreSQL at {} is damaged (its 1 bytes have sha256 ",
            store.location()
        )),
        "{err}"
    );
    assert_eq!(exit_code_for(&err), ExitCode::State);
}

/// 4 threads x 30 deploys and prunes over shared components, beside a connection that sweeps.
#[test]
fn a_sweep_never_removes_a_component_a_committed_release_runs() {
    suite::a_sweep_never_removes_a_component_a_committed_release_runs(&PgBackend::start(), 4, 30);
}
