//! The plugin host through its library API: built-ins, the compiled-component cache, limits
//! (timeout, memory, stack, log volume, outputs), traps, and refusing components that are not
//! phase plugins.

mod plugin_support;

use plugin_support::*;
use stagecraft::plugin::*;

#[test]
fn builtin_noop_completes_and_names_phase_and_version() {
    let host = shared_host();
    let plugin = host.load(&PluginSource::Builtin("noop".into())).unwrap();
    let info = host.describe(&plugin).unwrap();
    assert_eq!(info.name, "noop");
    let project = Project::new();
    let run = host.run(
        &plugin,
        &context("rollout", &[]),
        &project.sandbox(Grants::default()),
        &NullSink,
    );
    let report = run.result.unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    assert!(report.summary.contains("rollout"), "{}", report.summary);
    assert!(report.summary.contains("v2"), "{}", report.summary);
}

#[test]
fn unknown_builtin_lists_the_real_ones() {
    let host = shared_host();
    let err = host
        .load(&PluginSource::Builtin("nope".into()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("builtin:nope"), "{err}");
    assert!(err.contains("builtin:exec"), "{err}");
}

#[test]
fn second_load_uses_the_cache_and_a_tampered_entry_is_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    let first = PluginHost::new(Some(cache.path().to_path_buf())).unwrap();
    let plugin = first.load(&hostile()).unwrap();
    assert!(!plugin.was_cached(), "a fresh cache cannot have the entry");
    assert_eq!(plugin.digest().len(), 64);

    // A second host (as a second process would) finds the compiled component on disk.
    let second = PluginHost::new(Some(cache.path().to_path_buf())).unwrap();
    let again = second.load(&hostile()).unwrap();
    assert!(again.was_cached());
    assert_eq!(again.digest(), plugin.digest());

    // Flip bytes in the middle of every entry: the entry must be ignored, rebuilt and work.
    let entries: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&entries[0], &bytes).unwrap();
    let third = PluginHost::new(Some(cache.path().to_path_buf())).unwrap();
    let rebuilt = third.load(&hostile()).unwrap();
    assert!(!rebuilt.was_cached());
    assert!(rebuilt.cache_note().unwrap().contains("digest mismatch"));
    let project = Project::new();
    let run = third.run(
        &rebuilt,
        &context("build", &[("mode", "ok")]),
        &project.sandbox(Grants::default()),
        &NullSink,
    );
    assert!(run.result.is_ok(), "{:?}", run.result);

    // Truncated and foreign entries are rejected the same way.
    std::fs::write(&entries[0], &bytes[..100]).unwrap();
    let fourth = PluginHost::new(Some(cache.path().to_path_buf())).unwrap();
    assert!(!fourth.load(&hostile()).unwrap().was_cached());
    let fifth = PluginHost::new(Some(cache.path().to_path_buf())).unwrap();
    assert!(
        fifth.load(&hostile()).unwrap().was_cached(),
        "rewritten entry is used"
    );
}

#[cfg(unix)]
#[test]
fn a_read_only_cache_dir_is_not_fatal() {
    use std::os::unix::fs::PermissionsExt;
    let cache = tempfile::tempdir().unwrap();
    let ro = cache.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // root ignores permissions; then there is nothing to test.
    if std::fs::write(ro.join("probe"), b"x").is_ok() {
        return;
    }
    let host = PluginHost::new(Some(ro.clone())).unwrap();
    let plugin = host.load(&hostile()).unwrap();
    assert!(!plugin.was_cached());
    assert!(plugin.cache_note().unwrap().contains("not cached"));
}

#[test]
fn an_endless_loop_hits_the_timeout() {
    let host = shared_host();
    let project = Project::new();
    let mut sandbox = project.sandbox(Grants::default());
    sandbox.limits = short_timeout(300);
    let (run, _) = run_hostile(&host, &sandbox, &[("mode", "loop")]);
    assert_eq!(failure(&run), "timeout limit of 300ms exceeded");
    assert!(matches!(
        run.result,
        Err(PhaseFailure::Limit {
            limit: LimitKind::Timeout,
            ..
        })
    ));
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    let host = shared_host();
    let project = Project::new();
    let mut sandbox = project.sandbox(Grants::default());
    sandbox.limits.memory_bytes = 64 << 20;
    sandbox.limits.memory_text = "64MiB".into();
    let (run, _) = run_hostile(&host, &sandbox, &[("mode", "alloc")]);
    assert_eq!(failure(&run), "memory limit of 64MiB exceeded");
}

#[test]
fn unbounded_recursion_is_a_stack_overflow() {
    let host = shared_host();
    let project = Project::new();
    let (run, _) = run_hostile(
        &host,
        &project.sandbox(Grants::default()),
        &[("mode", "recurse")],
    );
    assert_eq!(run.result, Err(PhaseFailure::Trap("stack overflow".into())));
}

#[test]
fn a_panic_is_a_trap_that_quotes_the_panic() {
    let host = shared_host();
    let project = Project::new();
    let (run, lines) = run_hostile(
        &host,
        &project.sandbox(Grants::default()),
        &[("mode", "panic")],
    );
    let msg = failure(&run);
    assert!(msg.starts_with("plugin crashed:"), "{msg}");
    assert!(msg.contains("fixture panicked on purpose"), "{msg}");
    assert!(lines.text().contains("fixture panicked on purpose"));
}

#[test]
fn megabytes_of_log_are_truncated_not_fatal() {
    let host = shared_host();
    let project = Project::new();
    let (run, lines) = run_hostile(
        &host,
        &project.sandbox(Grants::default()),
        &[("mode", "log"), ("megabytes", "4")],
    );
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert!(run.log_truncated);
    let all = lines.all();
    let kept: usize = all[..all.len() - 1].iter().map(|(_, m)| m.len()).sum();
    assert!(kept as u64 <= Limits::default().log_bytes);
    let last = &all.last().unwrap().1;
    assert!(
        last.starts_with("... ") && last.contains("bytes of log dropped"),
        "{last}"
    );
    // Lines from all three channels made it in before the cut.
    assert!(all.iter().any(|(l, _)| *l == LogLevel::Info));
    assert!(all.iter().any(|(l, _)| *l == LogLevel::Warn));
}

#[test]
fn enormous_outputs_hit_the_outputs_limit() {
    let host = shared_host();
    let project = Project::new();
    let (run, _) = run_hostile(
        &host,
        &project.sandbox(Grants::default()),
        &[("mode", "outputs")],
    );
    assert_eq!(
        failure(&run),
        "outputs limit of 64 entries / 64KiB exceeded"
    );
    // Exactly at the bound is fine.
    let (run, _) = run_hostile(
        &host,
        &project.sandbox(Grants::default()),
        &[("mode", "outputs"), ("count", "64")],
    );
    assert_eq!(run.result.unwrap().outputs.len(), 64);
}

#[test]
fn the_host_survives_every_hostile_mode_in_turn() {
    let host = shared_host();
    let project = Project::new();
    let mut sandbox = project.sandbox(Grants::default());
    sandbox.limits = short_timeout(200);
    sandbox.limits.memory_bytes = 32 << 20;
    for mode in ["loop", "alloc", "recurse", "panic", "socket", "exec", "env"] {
        let (run, _) = run_hostile(&host, &sandbox, &[("mode", mode)]);
        assert!(run.result.is_err(), "{mode} completed: {:?}", run.result);
    }
    let (run, _) = run_hostile(&host, &sandbox, &[("mode", "ok")]);
    assert!(run.result.is_ok());
}

#[test]
fn a_core_module_is_refused_with_a_build_hint() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("core.wasm");
    std::fs::write(
        &file,
        wat::parse_str("(module (func (export \"run\")))").unwrap(),
    )
    .unwrap();
    let host = shared_host();
    let err = host.load(&PluginSource::File(file.clone())).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("core WebAssembly module, not a component"),
        "{msg}"
    );
    assert!(msg.contains("wasm32-wasip2"), "{msg}");
    assert!(msg.contains("core.wasm"), "{msg}");
    assert_eq!(
        stagecraft::error::exit_code_for(&err),
        stagecraft::error::ExitCode::Invalid
    );
}

#[test]
fn not_webassembly_and_foreign_components_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = shared_host();
    let text = dir.path().join("text.wasm");
    std::fs::write(&text, "hello").unwrap();
    let msg = host
        .load(&PluginSource::File(text))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not a WebAssembly binary"), "{msg}");

    let other_world = dir.path().join("other.wasm");
    std::fs::write(
        &other_world,
        wat::parse_str("(component (core module $m) (core instance (instantiate $m)))").unwrap(),
    )
    .unwrap();
    let msg = host
        .load(&PluginSource::File(other_world))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not a Stagecraft phase plugin"), "{msg}");

    let missing = dir.path().join("missing.wasm");
    let msg = host
        .load(&PluginSource::File(missing))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cannot read plugin"), "{msg}");
}

#[test]
fn a_component_for_another_wit_version_is_refused_by_version() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("future.wasm");
    let wat = r#"(component
        (instance $i)
        (export "stagecraft:phase/phase@0.2.0" (instance $i)))"#;
    std::fs::write(&file, wat::parse_str(wat).unwrap()).unwrap();
    let host = shared_host();
    let msg = host
        .load(&PluginSource::File(file))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("targets stagecraft:phase@0.2.0; this stagecraft supports 0.1.x"),
        "{msg}"
    );
}

/// Warm loads of a file skip re-hashing it while it is unchanged; a rewritten file (new bytes,
/// even of the same size) or a damaged record is never mistaken for the old component.
#[test]
fn a_rewritten_plugin_file_is_never_served_from_its_old_cache_record() {
    let cache = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let plugin = files.path().join("plugin.wasm");
    std::fs::copy(fixture("hostile"), &plugin).unwrap();
    let source = PluginSource::File(plugin.clone());
    let fresh_host = || PluginHost::new(Some(cache.path().to_path_buf())).unwrap();

    let first = fresh_host().load(&source).unwrap();
    assert!(!first.was_cached());
    let warm_host = fresh_host();
    let warm = warm_host.load(&source).unwrap();
    assert!(warm.was_cached());
    assert_eq!(warm.digest(), first.digest());
    assert_eq!(warm_host.describe(&warm).unwrap().name, "hostile");

    // Rewritten in place: another component at the same path.
    let noop = wasm_dir().join("builtin/noop.wasm");
    std::fs::copy(&noop, &plugin).unwrap();
    let host = fresh_host();
    let swapped = host.load(&source).unwrap();
    assert_ne!(swapped.digest(), first.digest());
    assert_eq!(host.describe(&swapped).unwrap().name, "noop");

    // A damaged record only costs the hashing.
    for entry in std::fs::read_dir(cache.path().join("sources")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"{not json").unwrap();
    }
    let host = fresh_host();
    let again = host.load(&source).unwrap();
    assert!(again.was_cached());
    assert_eq!(again.digest(), swapped.digest());
}

#[test]
fn a_compilation_past_its_deadline_fails_the_load_naming_the_plugin() {
    // Compiling takes milliseconds at least, so a deadline of one nanosecond always passes
    // first: the load must give up rather than wait for the compiler.
    let (mut hurried, _cache) = host();
    hurried.set_compile_timeout(std::time::Duration::from_nanos(1));
    let err = hurried.load(&hostile()).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "{}: compiling did not finish within 1ns",
            fixture("hostile").display()
        )),
        "{err}"
    );
    // A component already compiled (here: taken from the cache) is not held to it.
    let (warm, cache) = host();
    warm.load(&hostile()).unwrap();
    let mut hurried = PluginHost::new(Some(cache.path().to_path_buf())).unwrap();
    hurried.set_compile_timeout(std::time::Duration::from_nanos(1));
    assert!(hurried.load(&hostile()).unwrap().was_cached());
}
