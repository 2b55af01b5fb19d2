//! End-to-end: every string a plugin hands the host is bounded before it is kept or printed, and
//! no plugin text or user-given value reaches the terminal raw (spec/plugin-abi.md, "Bounds on
//! plugin text"; spec/cli.md, "Terminal safety"). Driven through the real binary with the hostile
//! fixture's `text` mode: `config.text` repeated `config.repeat` times, handed over as
//! `config.field`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use stagecraft_tests::{run, wasm_plugins_dir, Run};

const MIB_50: usize = 50 << 20;
/// The bounds of spec/plugin-abi.md, as a plugin author reads them there.
const SKIP_REASON_BOUND: usize = 4 << 10;
const ERROR_MESSAGE_BOUND: usize = 4 << 10;
const ERROR_DETAILS_BOUND: usize = 64 << 10;

/// The fixture's default text: an OSC title, a screen clear, a colour, a carriage return and a
/// newline followed by a forged phase line.
const FORGED_LINE: &str = "  rollout       completed forged";

/// A project whose `build` phase is the hostile fixture with `config`, and no other phase.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(config: &[(&str, &str)]) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let config: Vec<String> = config
            .iter()
            .map(|(k, v)| format!("{k} = {}", Value::from(*v)))
            .collect();
        let manifest = format!(
            "[environments.prod]\n\n[phases.build]\nplugin = {}\nconfig = {{ mode = \"text\", \
             {} }}\n",
            Value::from(hostile().display().to_string()),
            config.join(", ")
        );
        std::fs::write(dir.path().join("stagecraft.toml"), manifest).unwrap();
        Project { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Run {
        run(self.path(), args)
    }

    fn deploy(&self) -> Run {
        self.run(&["deploy", "--env", "prod", "--version", "v1"])
    }

    fn state_file(&self) -> PathBuf {
        self.path().join(".stagecraft/releases.json")
    }

    /// The build phase's detail as the state file holds it.
    fn build_detail(&self) -> Value {
        let state: Value =
            serde_json::from_slice(&std::fs::read(self.state_file()).unwrap()).unwrap();
        state["releases"][0]["phase_details"]["build"].clone()
    }

    fn release_id(&self) -> String {
        let out = self.run(&["releases", "list", "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        let list: Value = serde_json::from_str(&out.stdout).unwrap();
        list[0]["id"].as_str().unwrap().to_string()
    }
}

fn hostile() -> PathBuf {
    let path = wasm_plugins_dir().join("fixtures/hostile.wasm");
    assert!(
        path.exists(),
        "{} is missing: build the host first (cargo build -p stagecraft)",
        path.display()
    );
    path
}

fn marker(removed: usize) -> String {
    format!("… [cut {removed} bytes]")
}

/// The state file stays the size of a few bounded strings, however much the plugin returned.
fn assert_small_state(project: &Project) {
    let size = std::fs::metadata(project.state_file()).unwrap().len();
    assert!(size < 1 << 20, "the state file is {size} bytes");
}

#[test]
fn a_50_mib_skip_reason_is_kept_cut_to_its_bound_with_the_marker() {
    let repeat = MIB_50.to_string();
    let project = Project::new(&[("field", "skip"), ("text", "\u{1}"), ("repeat", &repeat)]);
    let out = project.deploy();
    assert_eq!(out.code, 0, "{}", &out.stderr);
    assert_small_state(&project);
    // The SDK's `skipped` sets the reason and the summary: both are cut on their own.
    let reason = format!(
        "{}{}",
        "\u{1}".repeat(SKIP_REASON_BOUND),
        marker(MIB_50 - SKIP_REASON_BOUND)
    );
    let summary = project.build_detail()["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(summary, format!("{reason}: {reason}"));
    // Later reads are as quick as any: `releases list` reads a small file.
    assert_eq!(project.run(&["releases", "list"]).code, 0);
}

#[test]
fn a_50_mib_error_and_its_details_are_kept_cut_to_their_bounds() {
    let repeat = MIB_50.to_string();
    let project = Project::new(&[("field", "details"), ("text", "\u{1}"), ("repeat", &repeat)]);
    let out = project.deploy();
    assert_eq!(out.code, 2, "{}", &out.stderr);
    assert_small_state(&project);
    let details = project.build_detail()["error_details"]
        .as_str()
        .unwrap()
        .to_string();
    // Details keep their end, where a log's error is.
    assert_eq!(
        details,
        format!(
            "{}\n{}",
            marker(MIB_50 - ERROR_DETAILS_BOUND),
            "\u{1}".repeat(ERROR_DETAILS_BOUND)
        )
    );

    let project = Project::new(&[("field", "error"), ("text", "\u{1}"), ("repeat", &repeat)]);
    let out = project.deploy();
    assert_eq!(out.code, 2, "{}", &out.stderr);
    assert_small_state(&project);
    let error = format!(
        "{}{}",
        "\u{1}".repeat(ERROR_MESSAGE_BOUND),
        marker(MIB_50 - ERROR_MESSAGE_BOUND)
    );
    assert_eq!(project.build_detail()["error"], error.as_str());
    // On the terminal the same error, escaped, on one line.
    let shown = format!(
        "{}{}",
        "\\x01".repeat(ERROR_MESSAGE_BOUND),
        marker(MIB_50 - ERROR_MESSAGE_BOUND)
    );
    assert!(out.stderr.contains(&shown), "{}", &out.stderr[..200]);
    assert!(!out.stderr.contains('\u{1}'));
}

/// No escape, bell or carriage return on either stream; the forged phase line never starts a
/// line; stdout is exactly the release line, one line for the phase, and the closing line.
fn assert_terminal_safe(out: &Run, build_status: &str) {
    for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        for raw in ['\x1b', '\x07', '\r', '\u{9b}', '\u{202e}'] {
            assert!(!text.contains(raw), "{raw:?} reached {name} raw: {out:?}");
        }
        assert!(
            !text.lines().any(|l| l.starts_with(FORGED_LINE)),
            "a forged phase line on {name}: {out:?}"
        );
    }
    // Every indented stdout line is one phase's line, each phase at most once.
    let phase_lines: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("  ")).collect();
    let phases: Vec<&str> = phase_lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    let mut unique = phases.clone();
    unique.dedup();
    assert_eq!(phases, unique, "{out:?}");
    assert!(phases.iter().all(|p| PHASES.contains(p)), "{out:?}");
    assert!(
        phase_lines[0].starts_with(&format!("  build         {build_status}")),
        "{out:?}"
    );
}

const PHASES: [&str; 6] = [
    "build",
    "push",
    "migrate_pre",
    "rollout",
    "migrate_post",
    "finalize",
];

#[test]
fn escapes_in_a_summary_skip_reason_or_error_are_shown_escaped_on_one_line() {
    for (field, status, code) in [
        ("summary", "completed", 0),
        ("skip", "skipped", 0),
        ("error", "failed", 2),
    ] {
        let project = Project::new(&[("field", field)]);
        let out = project.deploy();
        assert_eq!(out.code, code, "{field}: {out:?}");
        assert_terminal_safe(&out, status);
        // The summary keeps its first line; an error shows the escapes as text.
        let shown = "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred";
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(all.contains(shown), "{field}: {out:?}");

        // What the state holds is shown escaped by `releases show` and `list` too.
        let show = project.run(&["releases", "show", &project.release_id()]);
        assert_eq!(show.code, 0, "{show:?}");
        assert!(show.stdout.contains(shown), "{field}: {show:?}");
        for raw in ['\x1b', '\x07', '\r'] {
            assert!(!show.stdout.contains(raw), "{field}: {show:?}");
        }
        // `--json` stays the raw text, escaped by JSON itself.
        let json = project.run(&["releases", "show", &project.release_id(), "--json"]);
        let record: Value = serde_json::from_str(&json.stdout).unwrap();
        let kept = match field {
            "error" => &record["phases"][0]["error"],
            _ => &record["phases"][0]["summary"],
        };
        assert!(
            kept.as_str().unwrap().contains("\u{1b}]0;pwned\u{7}"),
            "{record}"
        );
    }
}

#[test]
fn escapes_in_log_lines_are_shown_escaped() {
    for field in ["log", "stdout"] {
        let project = Project::new(&[("field", field)]);
        let out = project.deploy();
        assert_eq!(out.code, 0, "{field}: {out:?}");
        assert_terminal_safe(&out, "completed");
        assert!(
            out.stderr
                .contains("\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred"),
            "{field}: {out:?}"
        );
        // Each line of a message is its own tagged line: the forged one is visibly a log line.
        let forged: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.contains("rollout       completed forged"))
            .collect();
        assert!(!forged.is_empty(), "{field}: {out:?}");
        assert!(forged.iter().all(|l| l.starts_with("[build ")), "{out:?}");
    }
}

#[test]
fn an_endless_stream_of_empty_log_lines_runs_out_of_log_budget() {
    let project = Project::new(&[("field", "log"), ("text", ""), ("count", "100000")]);
    let out = project.deploy();
    assert_eq!(out.code, 0, "{}", &out.stderr);
    assert!(
        out.stderr.contains("bytes of log dropped in "),
        "empty lines cost nothing: {}",
        out.stderr.lines().last().unwrap_or("")
    );
}

#[test]
fn a_version_or_commit_with_control_characters_is_refused() {
    let project = Project::new(&[("field", "summary"), ("text", "fine")]);
    for args in [
        ["--version", "v1\x1b[2J"],
        ["--version", "v1\nv2"],
        ["--version", "v1\u{202e}"],
        ["--commit", "ab\rc"],
    ] {
        let mut all = vec!["deploy", "--env", "prod"];
        if args[0] == "--commit" {
            all.extend(["--version", "v1"]);
        }
        all.extend(args);
        let out = project.run(&all);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(&format!("{} ", args[0]))
                && out.stderr.contains("control character"),
            "{args:?}: {out:?}"
        );
        for raw in ['\x1b', '\r', '\u{202e}'] {
            assert!(!out.stderr.contains(raw), "{args:?}: {out:?}");
        }
        assert!(
            !project.state_file().exists(),
            "{args:?}: state was written"
        );
    }
    // A dry run refuses it as well.
    let out = project.run(&[
        "deploy",
        "--env",
        "prod",
        "--version",
        "v1\x1b[2J",
        "--dry-run",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    // Surrounding whitespace is trimmed, as for any version: a trailing newline is harmless.
    let out = project.run(&["deploy", "--env", "prod", "--version", "v1\n"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("Release rel-"), "{out:?}");
    assert!(out.stdout.contains(": deploy v1 to prod\n"), "{out:?}");
}

#[test]
fn a_version_read_back_from_state_is_shown_escaped() {
    // State written by another tool (or an older stagecraft) may hold anything.
    let project = Project::new(&[("field", "summary"), ("text", "fine")]);
    assert_eq!(project.deploy().code, 0);
    let text = std::fs::read_to_string(project.state_file()).unwrap();
    let edited = text.replace("\"version\": \"v1\"", "\"version\": \"v1\\u001b[2J\\n\"");
    assert_ne!(text, edited);
    std::fs::write(project.state_file(), edited).unwrap();
    let list = project.run(&["releases", "list"]);
    assert_eq!(list.code, 0, "{list:?}");
    assert!(list.stdout.contains("v1\\x1b[2J\\n"), "{list:?}");
    assert_eq!(list.stdout.lines().count(), 2, "{list:?}");
    let show = project.run(&["releases", "show", &project.release_id()]);
    assert!(show.stdout.contains(" v1\\x1b[2J\\n\n"), "{show:?}");
    assert!(!show.stdout.contains('\x1b') && !list.stdout.contains('\x1b'));
}
