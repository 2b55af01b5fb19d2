use super::text::{serialize_state, write_all_pieces};
use super::*;
use crate::state::{PhaseStatus, ReleaseId, Timestamp};

fn err(json: &str) -> String {
    parse_state(
        json.as_bytes(),
        Path::new("/p/r.json"),
        Path::new("/p/r.json.bak"),
        true,
    )
    .unwrap_err()
}

const DOC: &str = r#"{
  "releases": [
    {
      "id": "rel-20261125-060000",
      "environment": "prod",
      "version": "v1",
      "timestamp": "2026-11-25T06:00:00Z",
      "phases": {"build": "completed"}
    }
  ]
}
"#;

#[test]
fn a_good_document_parses() {
    let state = parse_state(
        DOC.as_bytes(),
        Path::new("r.json"),
        Path::new("r.json.bak"),
        true,
    )
    .unwrap();
    assert_eq!(state.releases.len(), 1);
}

#[test]
fn schema_violations_name_the_line_column_and_backup() {
    let e = err(&DOC.replace("\"completed\"", "\"exploded\""));
    assert!(
        e.starts_with(
            "state file /p/r.json does not match the state format: unknown variant `exploded`"
        ),
        "{e}"
    );
    assert!(e.contains("at line 8, column "), "{e}");
    assert!(e.ends_with("the previous version is in /p/r.json.bak; inspect it and copy it over /p/r.json if it is good"), "{e}");
    let e = err(&DOC.replace("rel-20261125-060000", "rel-x"));
    assert!(
        e.contains("invalid release id \"rel-x\"") && e.contains("at line 4, column "),
        "{e}"
    );
    let e = err(&DOC.replace("2026-11-25T06:00:00Z", "yesterday"));
    assert!(
        e.contains("invalid timestamp \"yesterday\"") && e.contains("at line 7, column "),
        "{e}"
    );
}

#[test]
fn broken_json_is_told_apart_from_truncated_and_empty() {
    assert!(err(&DOC[..40]).contains("is truncated:"));
    assert!(err("hello").contains("is not valid JSON: expected value at line 1, column 1;"));
    assert!(err(" \n").starts_with("state file /p/r.json is empty"));
}

#[test]
fn duplicate_ids_are_refused() {
    let doc = DOC.replace("    }\n  ]", "    },\n    {\"id\": \"rel-20261125-060000\", \"environment\": \"prod\", \"version\": \"v2\", \"timestamp\": \"2026-11-25T06:00:00Z\"}\n  ]");
    let e = err(&doc);
    assert!(
        e.contains("duplicate release id \"rel-20261125-060000\" (releases[1])"),
        "{e}"
    );
}

#[test]
fn a_newer_format_is_refused_naming_both_versions() {
    let e = err(&DOC.replacen("{", "{\"format_version\": 3,", 1));
    assert_eq!(e, "state file /p/r.json has format_version 3, but this stagecraft reads at most 2; upgrade stagecraft");
    // Even when the newer format no longer parses as ours.
    let e = err("{\"format_version\": 9, \"releases\": {\"moved\": true}}");
    assert!(
        e.contains("has format_version 9, but this stagecraft reads at most 2"),
        "{e}"
    );
}

#[test]
fn a_missing_backup_is_said() {
    let e = parse_state(
        b"nope",
        Path::new("/p/r.json"),
        Path::new("/p/r.json.bak"),
        false,
    )
    .unwrap_err();
    assert!(
        e.contains("there is no previous version (/p/r.json.bak does not exist)"),
        "{e}"
    );
}

/// What the commit path must write: exactly serde_json's pretty form plus a newline.
fn plain(state: &State) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(state).unwrap();
    bytes.push(b'\n');
    bytes
}

fn concat(text: &StateText) -> Vec<u8> {
    text.pieces().flatten().copied().collect()
}

fn snapshot_of(mut state: State) -> Snapshot {
    let text = serialize_state(&mut state, None).unwrap();
    Snapshot { state, text }
}

fn sample() -> State {
    let doc = r#"{
  "format_version": 2, "serial": 4, "custom_top": {"kept": [1, 2.5, null]},
  "releases": [
    {"id": "rel-20261125-060000", "environment": "prod", "version": "v1",
     "timestamp": "2026-11-25T07:00:00+01:00", "phases": {"build": "completed"},
     "go_only_field": {"nested": {"deep": []}}, "empty": {}},
    {"id": "rel-20261125-060000001", "environment": "staging", "version": "v2",
     "commit_sha": "abc", "timestamp": "2026-11-25T06:00:00.001Z",
     "phase_details": {"build": {"summary": "line \"quoted\"\nsecond", "outputs": {"a": "b"}}}},
    {"id": "rel-20261125-060000002", "environment": "prod", "version": "v3",
     "timestamp": "2026-11-25T06:00:00.002Z"}
  ],
  "trailing_unknown": "x"
}"#;
    parse_state(doc.as_bytes(), Path::new("r"), Path::new("r.bak"), false).unwrap()
}

#[test]
fn serialized_state_is_exactly_serde_jsons_pretty_form() {
    for state in [State::default(), sample()] {
        let mut copy = state.clone();
        let text = serialize_state(&mut copy, None).unwrap();
        assert_eq!(
            String::from_utf8(concat(&text)).unwrap(),
            String::from_utf8(plain(&state)).unwrap()
        );
        assert_eq!(text.len(), plain(&state).len());
        assert_eq!(copy, state);
        assert_eq!(text.releases.len(), state.releases.len());
        for (piece, release) in text.releases.iter().zip(&state.releases) {
            let parsed: Release = serde_json::from_slice(&piece[1..]).unwrap();
            assert_eq!(&parsed, &**release);
        }
    }
}

#[test]
fn reused_release_text_matches_a_full_serialization_after_any_change() {
    type Change = fn(&mut State);
    let changes: [(&str, Change); 8] = [
        ("nothing", |_| {}),
        ("one phase", |s| {
            Arc::make_mut(&mut s.releases[1])
                .phases
                .insert("push".into(), PhaseStatus::Running);
        }),
        ("a release added", |s| {
            let mut r = (*s.releases[2]).clone();
            r.id = ReleaseId::parse("rel-20261125-060000003").unwrap();
            s.releases.push(Arc::new(r));
        }),
        ("a release removed", |s| {
            s.releases.remove(0);
        }),
        ("releases reordered", |s| s.releases.swap(0, 2)),
        ("a release replaced by an equal copy", |s| {
            s.releases[1] = Arc::new((*s.releases[1]).clone());
        }),
        ("the same instant written another way", |s| {
            Arc::make_mut(&mut s.releases[0]).timestamp =
                Timestamp::parse("2026-11-25T06:00:00Z").unwrap();
        }),
        ("top-level fields", |s| {
            s.serial += 1;
            s.extra
                .insert("added".into(), serde_json::json!({"k": [true]}));
        }),
    ];
    for (what, change) in changes {
        let previous = snapshot_of(sample());
        let mut state = previous.state.clone();
        change(&mut state);
        let text = serialize_state(&mut state, Some(previous)).unwrap();
        assert_eq!(
            String::from_utf8(concat(&text)).unwrap(),
            String::from_utf8(plain(&state)).unwrap(),
            "after {what}"
        );
    }
}

#[test]
fn only_changed_releases_are_serialized_again() {
    let mut previous = snapshot_of(sample());
    // Mark every release's stored text, so reused text can be told from fresh text.
    for text in &mut previous.text.releases {
        let at = text.windows(9).position(|w| w == b"\"version\"").unwrap();
        text[at + 1] = b'V';
    }
    let mut state = previous.state.clone();
    state
        .get_mut("rel-20261125-060000001")
        .unwrap()
        .phases
        .insert("push".into(), PhaseStatus::Running);
    let text = String::from_utf8(concat(
        &serialize_state(&mut state, Some(previous)).unwrap(),
    ))
    .unwrap();
    assert_eq!(text.matches("\"Version\"").count(), 2, "{text}");
    assert_eq!(text.matches("\"version\"").count(), 1, "{text}");
}

#[test]
fn a_file_is_only_taken_for_the_last_commit_when_every_byte_matches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("releases.json");
    let store = FileStore::open(path.clone()).unwrap();
    let cap_dir = Dir::open_ambient_dir(dir.path(), ambient_authority()).unwrap();
    let snapshot = snapshot_of(sample());
    let exact = concat(&snapshot.text);
    assert!(
        !store.file_holds(&cap_dir, &snapshot.text).unwrap(),
        "no file"
    );
    std::fs::write(&path, &exact).unwrap();
    assert!(store.file_holds(&cap_dir, &snapshot.text).unwrap());
    // One byte changed inside a release's text, in the head, and in the tail.
    let inside = snapshot.text.head.len() + snapshot.text.releases[0].len() + 20;
    for at in [inside, 3, exact.len() - 3] {
        let mut changed = exact.clone();
        changed[at] ^= 0x20;
        std::fs::write(&path, &changed).unwrap();
        assert!(
            !store.file_holds(&cap_dir, &snapshot.text).unwrap(),
            "byte {at}"
        );
    }
    for wrong_length in [&exact[..exact.len() - 1], &[&exact[..], b" "].concat()[..]] {
        std::fs::write(&path, wrong_length).unwrap();
        assert!(!store.file_holds(&cap_dir, &snapshot.text).unwrap());
    }
}

#[test]
fn a_history_longer_than_one_read_chunk_is_compared_and_written_whole() {
    // Over 1 MiB and over 1,024 pieces: several reads, and several writev calls.
    let template = (*sample().releases[1]).clone();
    let mut state = sample();
    state.releases.clear();
    for i in 0..3_000u32 {
        let mut r = template.clone();
        r.id = ReleaseId::parse(&format!("rel-20261125-{:06}{:03}", i / 1000, i % 1000)).unwrap();
        r.version = format!("v{i}-{}", "x".repeat(400));
        state.releases.push(Arc::new(r));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("releases.json");
    let cap_dir = Dir::open_ambient_dir(dir.path(), ambient_authority()).unwrap();
    let store = FileStore::open(path.clone()).unwrap();
    let snapshot = snapshot_of(state.clone());
    assert!(snapshot.text.len() > 1 << 20);
    let mut file = std::fs::File::create(&path).unwrap();
    write_all_pieces(&mut file, snapshot.text.pieces()).unwrap();
    drop(file);
    assert_eq!(std::fs::read(&path).unwrap(), plain(&state));
    assert!(store.file_holds(&cap_dir, &snapshot.text).unwrap());
    let mut bytes = plain(&state);
    let last = bytes.len() - 10;
    bytes[last] = b'#';
    std::fs::write(&path, &bytes).unwrap();
    assert!(!store.file_holds(&cap_dir, &snapshot.text).unwrap());
}

#[test]
fn consecutive_commits_of_one_store_write_what_a_fresh_serialization_would() {
    use crate::state::StateStoreExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("releases.json");
    std::fs::write(&path, plain(&sample())).unwrap();
    let store = FileStore::open(path.clone()).unwrap();
    // Applied in turn to the store and to a model of what the file must hold.
    let steps: [fn(&mut State); 8] = [
        |s| {
            Arc::make_mut(&mut s.releases[1])
                .phases
                .insert("push".into(), PhaseStatus::Running);
        },
        |s| {
            Arc::make_mut(&mut s.releases[1])
                .phases
                .insert("push".into(), PhaseStatus::Completed);
        },
        |s| {
            let mut r = (*s.releases[2]).clone();
            r.id = ReleaseId::parse("rel-20261125-060000009").unwrap();
            s.releases.push(Arc::new(r));
        },
        |s| {
            s.releases.remove(0);
        },
        |s| s.releases.swap(0, 1),
        |s| {
            Arc::make_mut(&mut s.releases[2]).timestamp =
                Timestamp::parse("2026-11-25T08:00:00.002+02:00").unwrap();
        },
        |s| {
            s.extra.insert("note".into(), "kept".into());
        },
        |s| {
            Arc::make_mut(&mut s.releases[0]).version = "v9".into();
        },
    ];
    let mut model = sample();
    for (i, step) in steps.iter().enumerate() {
        store
            .transact(|state| {
                step(state);
                Ok(())
            })
            .unwrap();
        step(&mut model);
        model.format_version = Some(FORMAT_VERSION);
        model.serial += 1;
        let on_disk = std::fs::read(&path).unwrap();
        let parsed = parse_state(&on_disk, &path, &path, false).unwrap();
        model.lineage.clone_from(&parsed.lineage);
        assert_eq!(
            String::from_utf8(on_disk).unwrap(),
            String::from_utf8(plain(&model)).unwrap(),
            "after step {i}"
        );
        // A transaction that changes nothing through the lease's path keeps the snapshot.
        store.commit_with(&mut |_| Ok(false)).unwrap();
        // So does one that changes every release and then fails: nothing of it may reach
        // the file, now or through the next commit's reused text.
        let failed = store.transact_dyn(&mut |s| {
            for release in &mut s.releases {
                Arc::make_mut(release).version = "never committed".into();
            }
            anyhow::bail!("the closure failed")
        });
        assert_eq!(failed.unwrap_err().to_string(), "the closure failed");
        assert!(store.last_seen.lock().unwrap().is_some(), "step {i}");
    }
    assert_eq!(store.read().unwrap(), model);
    assert!(!String::from_utf8(std::fs::read(&path).unwrap())
        .unwrap()
        .contains("never committed"));
}

#[test]
fn a_parsed_file_is_reused_until_it_changes_and_its_own_text_never_is() {
    use crate::state::StateStoreExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("releases.json");
    // Valid, but not how we write it: compact, on one line.
    let compact = serde_json::to_vec(&sample()).unwrap();
    std::fs::write(&path, &compact).unwrap();
    let store = FileStore::open(path.clone()).unwrap();

    // A read keeps what it parsed, and so does a transaction that writes nothing.
    assert_eq!(store.read().unwrap(), sample());
    assert!(store.last_seen.lock().unwrap().is_some());
    store.commit_with(&mut |_| Ok(false)).unwrap();
    assert!(store.last_seen.lock().unwrap().is_some());
    assert_eq!(std::fs::read(&path).unwrap(), compact, "nothing written");

    // Edited behind the store's back, to the same length: both a read and a commit see it.
    let edited = String::from_utf8(compact)
        .unwrap()
        .replace("\"v2\"", "\"v7\"");
    std::fs::write(&path, &edited).unwrap();
    let read = store.read().unwrap();
    assert_eq!(read.releases[1].version, "v7");
    std::fs::write(&path, edited.replace("\"v7\"", "\"v8\"")).unwrap();
    store
        .transact(|s| {
            Arc::make_mut(&mut s.releases[0]).version = "v0".into();
            Ok(())
        })
        .unwrap();
    // Written as a fresh serialization would be: every release in our own form, the edit
    // kept, none of the compact text carried over.
    let mut model = sample();
    Arc::make_mut(&mut model.releases[0]).version = "v0".into();
    Arc::make_mut(&mut model.releases[1]).version = "v8".into();
    let on_disk = std::fs::read(&path).unwrap();
    let parsed = parse_state(&on_disk, &path, &path, false).unwrap();
    model.format_version = Some(FORMAT_VERSION);
    model.serial += 1;
    model.lineage.clone_from(&parsed.lineage);
    assert_eq!(
        String::from_utf8(on_disk).unwrap(),
        String::from_utf8(plain(&model)).unwrap()
    );
}

#[test]
fn environment_names_are_checked_before_becoming_file_names() {
    for good in ["prod", "staging-2", "eu_west"] {
        assert!(check_environment_name(good).is_ok(), "{good}");
    }
    for bad in ["", "../x", "Prod", "2prod", "a/b", ".lock", &"a".repeat(65)] {
        assert!(check_environment_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn explicit_paths_resolve_against_the_working_directory() {
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        resolve_state_path(Some(Path::new("x/s.json")), Path::new("/proj")),
        cwd.join("x/s.json")
    );
    assert_eq!(
        resolve_state_path(Some(Path::new("/abs/s.json")), Path::new("/proj")),
        PathBuf::from("/abs/s.json")
    );
}
