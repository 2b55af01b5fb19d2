//! Fuzz-style: thousands of mutated state files and manifests thrown at the parsers, and every
//! state that parses taken through what a deploy then does with it (recovery, queries, a new
//! release, serialization). Each input gives a value or an error,
//! never a panic.
//!
//! Seeded and bounded (a fixed seed in CI, `STAGECRAFT_TEST_SEED` to explore others), so a
//! failure names the seed and the input and replays exactly.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use serde_json::Value;
use stagecraft::state::{parse_state, CANONICAL_PHASES};
use stagecraft_tests::{workspace_root, Rng};

/// Inputs per parser: enough to reach every field with every kind of odd value many times,
/// still a few seconds in a debug build.
const CASES: usize = 4_000;

/// Values that have broken parsers before, or sit at the edge of a type.
const ODD_VALUES: &[&str] = &[
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775809",
    "-1",
    "0",
    "1e400",
    "-1e400",
    "1.5",
    "null",
    "true",
    "[]",
    "{}",
    "\"\"",
    "\"rel-99991231-235959999\"",
    "\"rel-99991231-235959\"",
    "\"rel-00000101-000000000\"",
    "\"rel-20261125-060000\"",
    "\"9999-12-31T23:59:59.999999999Z\"",
    "\"0000-01-01T00:00:00Z\"",
    "\"2026-11-25T06:00:00+23:59\"",
    "\"running\"",
    "\"pending\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"é\u{202e}\u{feff}\"",
    "\"prod\"",
    "\"  \"",
    "{\"build\": \"completed\", \"build\": \"failed\"}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
];

const STATE_SAMPLE: &str = r#"{
  "format_version": 2,
  "lineage": "eac6019a-3f80-413a-9263-0a8255531596",
  "serial": 8,
  "last_release_id": "rel-20261125-133550297",
  "releases": [
    {
      "id": "rel-20261125-133550297",
      "environment": "prod",
      "version": "v1.4.0",
      "commit_sha": "9bd0e44",
      "timestamp": "2026-11-25T13:35:50.297Z",
      "phases": {"build": "completed", "push": "running", "rollout": "pending"},
      "previous_id": "rel-20261125-060000",
      "operation": "rollback",
      "rollback_target": "rel-20261125-060000",
      "pipeline": ["build", "push", "rollout"],
      "phase_details": {
        "build": {"plugin": "builtin:noop", "started_at": "2026-11-25T13:35:50.304Z",
                  "duration_ms": 0, "summary": "ok", "outputs": {"url": "x"},
                  "error_details": {"k": [1, 2]}}
      },
      "deployed_by": "ci"
    },
    {"id": "rel-20261125-060000", "environment": "prod", "version": "v1",
     "timestamp": "2026-11-25T07:00:00+01:00"}
  ],
  "custom": {"kept": true}
}"#;

const MANIFEST_SAMPLE: &str = r#"
[environments.staging]
vars = { url = "http://127.0.0.1:8080", region = "eu" }
[environments.prod]

[pipeline]
phases = ["build", "push", "migrate_pre", "rollout", "migrate_post", "finalize"]

[phases.build]
plugin = "builtin:exec"
config = { command = "make dist VERSION={{version}}" }
timeout = "10m"
memory = "256MiB"
[phases.build.grants]
exec = ["make"]
read = ["src"]
write = ["dist"]
env = ["HOME"]

[phases.rollout]
plugin = "plugins/rollout.wasm"
config = { strategy = "blue-green" }

[state]
backend = "file"
"#;

/// Values for a manifest's keys.
const ODD_TOML: &[&str] = &[
    "\"18446744073709551616B\"",
    "\"99999999999999999999h\"",
    "\"1e400s\"",
    "\"-1m\"",
    "\"0\"",
    "18446744073709551615",
    "-9223372036854775808",
    "1e400",
    "\"\"",
    "[]",
    "{}",
    "\"../..\"",
    "\"/\"",
    "\"\\u0000\"",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "\"builtin:\"",
    "\"postgres\"",
    "true",
];

#[test]
fn mutated_state_files_give_a_value_or_an_error_never_a_panic() {
    let mut rng = Rng::from_env_or(0x5eed_0013, "state fuzz");
    let fixture = std::fs::read(workspace_root().join("tests/fixtures/v1-releases.json")).unwrap();
    let samples: Vec<Vec<u8>> = vec![STATE_SAMPLE.as_bytes().to_vec(), fixture];
    let (mut parsed, mut refused) = (0, 0);
    for case in 0..CASES {
        let sample = rng.pick(&samples).clone();
        let input = if case % 2 == 0 {
            mutate_json_values(&sample, &mut rng, ODD_VALUES)
        } else {
            mutate_bytes(&sample, &mut rng, ODD_VALUES)
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| exercise_state(&input)));
        match outcome {
            Ok(true) => parsed += 1,
            Ok(false) => refused += 1,
            Err(_) => panic!(
                "case {case}: the state parser panicked on:\n{}",
                String::from_utf8_lossy(&input)
            ),
        }
    }
    eprintln!("{CASES} state files: {parsed} parsed and used, {refused} refused");
    assert!(
        parsed > CASES / 10 && refused > CASES / 10,
        "the mutations reach both outcomes"
    );
}

/// Parse `bytes` as a state file and, if it parses, do with it what a deploy does. Whether it
/// parsed.
fn exercise_state(bytes: &[u8]) -> bool {
    let path = Path::new("/fuzz/releases.json");
    let Ok(mut state) = parse_state(bytes, path, Path::new("/fuzz/releases.json.bak"), false)
    else {
        return false;
    };
    for env in ["prod", "staging"] {
        let _ = state.current(env).map(|r| r.overall_status());
        state.recover_interrupted(env);
        let phases: Vec<String> = CANONICAL_PHASES.iter().map(|p| p.to_string()).collect();
        let now = stagecraft::state::Timestamp::now().datetime();
        let _ = state.push_release(env, "v9", "", &phases, now);
    }
    for r in state.list_all() {
        let _ = (
            r.overall_status(),
            r.unfinished_phases(),
            r.timestamp.display_utc(),
        );
    }
    let _ = serde_json::to_vec_pretty(&state);
    true
}

#[test]
fn mutated_manifests_give_a_value_or_an_error_never_a_panic() {
    let mut rng = Rng::from_env_or(0x5eed_0014, "manifest fuzz");
    let quickstart =
        std::fs::read(workspace_root().join("examples/quickstart/stagecraft.toml")).unwrap();
    let samples: Vec<Vec<u8>> = vec![MANIFEST_SAMPLE.as_bytes().to_vec(), quickstart];
    let root = tempfile::tempdir().unwrap();
    // What the samples' read grants name: a read grant must exist at load.
    for dir in ["src", "site"] {
        std::fs::create_dir(root.path().join(dir)).unwrap();
    }
    let (mut parsed, mut refused) = (0, 0);
    for case in 0..CASES {
        let sample = rng.pick(&samples).clone();
        let input = if case % 2 == 0 {
            mutate_toml_values(&sample, &mut rng)
        } else {
            mutate_bytes(&sample, &mut rng, ODD_TOML)
        };
        let text = String::from_utf8_lossy(&input);
        let path = root.path().join("stagecraft.toml");
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            stagecraft::manifest::parse(&text, &path, root.path()).is_ok()
        }));
        match outcome {
            Ok(true) => parsed += 1,
            Ok(false) => refused += 1,
            Err(_) => panic!("case {case}: the manifest parser panicked on:\n{text}"),
        }
    }
    eprintln!("{CASES} manifests: {parsed} parsed, {refused} refused");
    assert!(
        parsed > CASES / 20 && refused > CASES / 10,
        "the mutations reach both outcomes"
    );
}

/// A few random byte-level edits: flip, insert, delete, duplicate a range, splice in an odd
/// value.
fn mutate_bytes(sample: &[u8], rng: &mut Rng, odd: &[&str]) -> Vec<u8> {
    let mut out = sample.to_vec();
    for _ in 0..1 + rng.below(3) {
        if out.is_empty() {
            out.push(b'{');
        }
        let at = rng.below(out.len());
        match rng.below(6) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out.insert(at, rng.next_u64() as u8),
            2 => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at..end);
            }
            3 => {
                let end = (at + 1 + rng.below(64)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            4 => {
                let value = rng.pick(odd).as_bytes().to_vec();
                out.splice(at..at, value);
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// Replace one or two values of the parsed sample (any depth) with an odd value, or add a key
/// holding one, and serialize it again (sometimes with a duplicate key spliced in): inputs that
/// get past the JSON syntax to the state format's own rules.
fn mutate_json_values(sample: &[u8], rng: &mut Rng, odd: &[&str]) -> Vec<u8> {
    let mut doc: Value = serde_json::from_slice(sample).unwrap();
    for _ in 0..1 + rng.below(2) {
        // Some odd values (1e400, a lone surrogate) are not JSON values; bytes carry those.
        let text: &str = odd[rng.below(odd.len())];
        let Ok(odd_value) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        let mut nodes = Vec::new();
        collect_paths(&doc, &mut Vec::new(), &mut nodes);
        let path = rng.pick(&nodes).clone();
        let target = node_at(&mut doc, &path);
        if rng.below(4) == 0 {
            if let Value::Object(map) = target {
                map.insert(format!("k{}", rng.below(3)), odd_value);
                continue;
            }
        }
        *target = odd_value;
    }
    let mut text = serde_json::to_string_pretty(&doc).unwrap();
    if rng.below(8) == 0 {
        // A key written twice: find an object key and repeat its member.
        if let Some(at) = text.find("\"phases\": {") {
            text.insert_str(at + "\"phases\": {".len(), "\"build\": \"failed\",");
        }
    }
    text.into_bytes()
}

/// Paths (keys and indexes) to every value in `doc`.
fn collect_paths(doc: &Value, at: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    out.push(at.clone());
    match doc {
        Value::Object(map) => {
            for (k, v) in map {
                at.push(PathStep::Key(k.clone()));
                collect_paths(v, at, out);
                at.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                at.push(PathStep::Index(i));
                collect_paths(v, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn node_at<'a>(doc: &'a mut Value, path: &[PathStep]) -> &'a mut Value {
    path.iter().fold(doc, |node, step| match step {
        PathStep::Key(k) => &mut node[k.as_str()],
        PathStep::Index(i) => &mut node[*i],
    })
}

/// Replace the value of one `key = value` line of the manifest with an odd TOML value.
fn mutate_toml_values(sample: &[u8], rng: &mut Rng) -> Vec<u8> {
    let text = String::from_utf8_lossy(sample);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for _ in 0..1 + rng.below(2) {
        let assignments: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains(" = ") && !l.trim_start().starts_with('#'))
            .map(|(i, _)| i)
            .collect();
        if assignments.is_empty() {
            break;
        }
        let i = *rng.pick(&assignments);
        let key = lines[i].split(" = ").next().unwrap().to_string();
        lines[i] = format!("{key} = {}", rng.pick(ODD_TOML));
    }
    (lines.join("\n") + "\n").into_bytes()
}
