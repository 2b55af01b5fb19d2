//! Crash safety: a writer killed with SIGKILL at random moments never leaves a damaged file, and
//! the file always holds exactly a prefix of the transactions the writer committed.

mod state_common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use stagecraft::state::{FileStore, StateStore};
use stagecraft_tests::{run, Rng};
use state_common::worker;

const KILLS: usize = 200;

fn committed_number(line: &str) -> u64 {
    line.strip_prefix("committed ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line from the worker: {line:?}"))
}

#[test]
fn sigkilled_writers_leave_exactly_a_prefix_of_their_commits() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed: {seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".stagecraft/releases.json");
    let store = FileStore::open(path.clone()).unwrap();
    let mut durable = 0u64;
    let (mut mid_write, mut unacknowledged) = (0, 0);
    for kill in 0..KILLS {
        let mut child = worker()
            .args(["commit-loop", path.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill after 0-3 acknowledged commits: sometimes before the first commit (even before
        // the directory exists), usually in the middle of a later one.
        let wait_for = rng.next_u64() % 4;
        let mut acknowledged = durable;
        for _ in 0..wait_for {
            let line = lines.next().unwrap().unwrap();
            acknowledged = committed_number(&line);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Lines still in the pipe were printed after their commit returned.
        for line in lines {
            acknowledged = committed_number(&line.unwrap());
        }

        let state = store
            .read()
            .unwrap_or_else(|e| panic!("kill {kill} (seed {seed}): {e:#}"));
        let sequence: Vec<u64> = state
            .extra
            .get("sequence")
            .map(|s| {
                s.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        let m = sequence.len() as u64;
        assert_eq!(
            sequence,
            (1..=m).collect::<Vec<_>>(),
            "kill {kill} (seed {seed}): not a prefix"
        );
        // Every acknowledged commit is there; at most one more, whose line the kill prevented.
        assert!(
            m == acknowledged || m == acknowledged + 1,
            "kill {kill} (seed {seed}): file holds {m} commits, {acknowledged} acknowledged"
        );
        assert_eq!(state.serial, m, "kill {kill}: serial");
        assert_eq!(state.releases.len() as u64, m, "kill {kill}: releases");
        if m == acknowledged + 1 {
            unacknowledged += 1;
        }
        if dir.path().join(".stagecraft/releases.json.tmp").exists() {
            mid_write += 1;
        }
        durable = m;
    }
    // For the record (not asserted: where a kill lands is up to the scheduler).
    eprintln!(
        "{KILLS} kills: {mid_write} left a temp file behind (killed mid-write), \
         {unacknowledged} after a commit but before its acknowledgement"
    );
    assert!(durable > 0, "no commit ever completed (seed {seed})");
    // The survivor is a normal state file for the binary too, and its backup parses.
    let listed = run(
        dir.path(),
        &[
            "releases",
            "list",
            "--json",
            "--state-file",
            path.to_str().unwrap(),
        ],
    );
    assert_eq!(listed.code, 0, "{listed:?}");
    let bak = FileStore::open(dir.path().join(".stagecraft/releases.json.bak")).unwrap();
    assert_eq!(bak.read().unwrap().serial, durable - 1);
}
