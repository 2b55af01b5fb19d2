use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;
use crate::plugin::{LogLevel, NullSink};
use crate::state::{Lease, OverallStatus, PhaseLog, ReleaseId, State};

/// An in-memory store that can be told to fail its Nth commit, and to fail writing logs.
struct MemoryStore {
    state: Mutex<State>,
    commits: AtomicUsize,
    fail_commit: Option<usize>,
    logs: Mutex<Vec<(ReleaseId, PhaseLog)>>,
    fail_logs: bool,
    components: Mutex<BTreeMap<String, Vec<u8>>>,
    fail_components: bool,
}

impl MemoryStore {
    fn new(fail_commit: Option<usize>) -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            commits: AtomicUsize::new(0),
            fail_commit,
            logs: Mutex::new(Vec::new()),
            fail_logs: false,
            components: Mutex::new(BTreeMap::new()),
            fail_components: false,
        }
    }
}

impl StateStore for MemoryStore {
    fn location(&self) -> String {
        "memory".into()
    }
    fn read(&self) -> anyhow::Result<State> {
        Ok(self.state.lock().unwrap().clone())
    }
    fn transact_if_changed_dyn(
        &self,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let mut guard = self.state.lock().unwrap();
        let mut next = guard.clone();
        if !f(&mut next)? {
            return Ok(());
        }
        let n = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        if Some(n) == self.fail_commit {
            return Err(crate::state::StateError::new("disk full").into());
        }
        next.serial += 1;
        *guard = next;
        Ok(())
    }
    fn lease_observed(
        &self,
        env: &str,
        _wait: Duration,
        _observer: &dyn crate::state::LeaseWaitObserver,
    ) -> anyhow::Result<Lease> {
        Ok(Lease::new(env, Box::new(())))
    }
    fn lease_status(&self, _env: &str) -> anyhow::Result<crate::state::LeaseStatus> {
        Ok(crate::state::LeaseStatus::Free)
    }
    fn write_phase_log(&self, release: &ReleaseId, log: &PhaseLog) -> anyhow::Result<()> {
        if self.fail_logs {
            anyhow::bail!("no room for logs");
        }
        let mut logs = self.logs.lock().unwrap();
        logs.retain(|(id, l)| !(id == release && l.phase == log.phase));
        logs.push((release.clone(), log.clone()));
        Ok(())
    }
    fn phase_logs(&self, release: &ReleaseId) -> anyhow::Result<Vec<PhaseLog>> {
        let logs = self.logs.lock().unwrap();
        Ok(logs
            .iter()
            .filter(|(id, _)| id == release)
            .map(|(_, l)| l.clone())
            .collect())
    }
    fn sweep_phase_logs(&self) -> anyhow::Result<usize> {
        let state = self.state.lock().unwrap();
        let mut logs = self.logs.lock().unwrap();
        let before = logs.len();
        logs.retain(|(id, _)| state.get(id.as_str()).is_some());
        Ok(before - logs.len())
    }
    fn missing_components(&self, digests: &[String]) -> anyhow::Result<Vec<String>> {
        let kept = self.components.lock().unwrap();
        Ok(digests
            .iter()
            .filter(|d| !kept.contains_key(*d))
            .cloned()
            .collect())
    }
    fn put_component(&self, digest: &str, bytes: &[u8]) -> anyhow::Result<()> {
        if self.fail_components {
            return Err(crate::state::StateError::new("no room for components").into());
        }
        self.components
            .lock()
            .unwrap()
            .insert(digest.to_string(), bytes.to_vec());
        Ok(())
    }
    fn component(&self, digest: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.components.lock().unwrap().get(digest).cloned())
    }
    fn sweep_components(&self) -> anyhow::Result<usize> {
        let used = crate::state::referenced_components(&self.state.lock().unwrap());
        let mut kept = self.components.lock().unwrap();
        let before = kept.len();
        kept.retain(|d, _| used.contains(d));
        Ok(before - kept.len())
    }
}

/// Plays a script: phase name -> what its plugin does. Records every context it was given.
struct ScriptedRunner {
    fail_in: Option<&'static str>,
    skip_in: Option<&'static str>,
    seen: Mutex<Vec<PhaseContext>>,
}

impl ScriptedRunner {
    fn new() -> Self {
        ScriptedRunner {
            fail_in: None,
            skip_in: None,
            seen: Mutex::new(Vec::new()),
        }
    }
}

impl Runner for ScriptedRunner {
    type Loaded = String;
    fn load(&self, spec: &PhaseSpec, _compiling: &dyn Fn(bool)) -> anyhow::Result<String> {
        Ok(spec.plugin_ref.clone())
    }
    fn digest(&self, plugin: &String) -> String {
        crate::plugin::sha256_hex(plugin.as_bytes())
    }
    fn bytes(&self, spec: &PhaseSpec) -> anyhow::Result<std::borrow::Cow<'static, [u8]>> {
        Ok(spec.plugin_ref.clone().into_bytes().into())
    }
    fn was_cached(&self, _: &String) -> bool {
        true
    }
    fn run(
        &self,
        _: &String,
        ctx: &PhaseContext,
        _: &Sandbox,
        sink: &dyn LogSink,
    ) -> Result<PhaseReport, PhaseFailure> {
        sink.log(LogLevel::Info, "hello");
        self.seen.lock().unwrap().push(ctx.clone());
        if self.fail_in == Some(ctx.phase.as_str()) {
            return Err(PhaseFailure::Guest {
                message: format!("{} broke", ctx.phase),
                details: None,
            });
        }
        if self.skip_in == Some(ctx.phase.as_str()) {
            return Ok(PhaseReport {
                outcome: Outcome::Skipped("nothing to migrate".into()),
                summary: String::new(),
                outputs: BTreeMap::new(),
            });
        }
        Ok(PhaseReport {
            outcome: Outcome::Completed,
            summary: format!("{} done", ctx.phase),
            outputs: [(format!("{}_out", ctx.phase), ctx.release.version.clone())].into(),
        })
    }
}

struct QuietEvents;
impl Events for QuietEvents {
    fn plugin_compiling(&self, _: &str, _: &str, _: bool) {}
    fn plugin_loaded(&self, _: &str, _: &str, _: bool, _: Duration) {}
    fn release_created(&self, _: &Release) {}
    fn phase_started(&self, _: &str, _: &str) {}
    fn phase_finished(&self, _: &str, _: PhaseStatus, _: &PhaseDetail) {}
    fn log_sink(&self, _: &str, _: &str) -> Box<dyn LogSink + '_> {
        Box::new(NullSink)
    }
    fn warning(&self, _: &str) {}
}

/// Every canonical phase configured with builtin:noop except `push`.
fn manifest() -> Manifest {
    let mut text = String::from("[environments.prod]\nvars = { region = \"eu\" }\n");
    for phase in crate::state::CANONICAL_PHASES {
        if phase != "push" {
            text.push_str(&format!("[phases.{phase}]\nplugin = \"builtin:noop\"\n"));
        }
    }
    let root = std::env::temp_dir();
    crate::manifest::parse(&text, std::path::Path::new("stagecraft.toml"), &root).unwrap()
}

fn deploy(version: &str) -> Request {
    Request {
        environment: "prod".into(),
        version: version.into(),
        commit: "abc".into(),
        operation: Operation::Deploy,
        rollback_target: None,
        message: None,
        auto_rollback_of: None,
        plan_of: None,
    }
}

fn execute(store: &MemoryStore, runner: &ScriptedRunner, req: &Request) -> anyhow::Result<Release> {
    let m = manifest();
    let loaded = load_plugins(&m, runner, &QuietEvents).unwrap();
    Pipeline {
        manifest: &m,
        store,
        runner,
        events: &QuietEvents,
    }
    .execute(&loaded, req)
}

#[test]
fn a_clean_run_completes_every_configured_phase_and_skips_the_rest() {
    let store = MemoryStore::new(None);
    let runner = ScriptedRunner::new();
    let release = execute(&store, &runner, &deploy("v1")).unwrap();
    let stored = store.read().unwrap();
    assert_eq!(
        stored.releases,
        vec![std::sync::Arc::new(release.clone())],
        "the returned record is the stored one"
    );
    assert_eq!(release.overall_status(), OverallStatus::Completed);
    assert_eq!(release.status_of("push"), PhaseStatus::Skipped);
    assert_eq!(
        release.phase_details["push"].summary.as_deref(),
        Some("no plugin configured")
    );
    assert_eq!(release.status_of("rollout"), PhaseStatus::Completed);
    assert_eq!(
        release.phase_details["rollout"].summary.as_deref(),
        Some("rollout done")
    );
    assert_eq!(
        release.phase_details["rollout"].outputs["rollout_out"],
        "v1"
    );
    assert_eq!(release.operation, Some(Operation::Deploy));
    // create + (running, finished) for 5 phases + 1 skip.
    assert_eq!(stored.serial, 1 + 5 * 2 + 1);

    let seen = runner.seen.lock().unwrap();
    let finalize = seen.iter().find(|c| c.phase == "finalize").unwrap();
    let phases: Vec<&str> = finalize
        .earlier_outputs
        .iter()
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(phases, ["build", "migrate_pre", "rollout", "migrate_post"]);
    assert_eq!(finalize.vars["region"], "eu");
}

#[test]
fn a_failure_in_each_phase_fails_it_and_skips_every_later_one() {
    let configured = [
        "build",
        "migrate_pre",
        "rollout",
        "migrate_post",
        "finalize",
    ];
    for (i, failing) in configured.iter().enumerate() {
        let store = MemoryStore::new(None);
        let mut runner = ScriptedRunner::new();
        runner.fail_in = Some(failing);
        let err = execute(&store, &runner, &deploy("v1")).unwrap_err();
        let failed = err
            .downcast_ref::<PhaseFailed>()
            .expect("a PhaseFailed error");
        assert_eq!(failed.phase, *failing);
        let release = store.read().unwrap().releases.pop().unwrap();
        for (j, phase) in configured.iter().enumerate() {
            let expected = match j.cmp(&i) {
                std::cmp::Ordering::Less => PhaseStatus::Completed,
                std::cmp::Ordering::Equal => PhaseStatus::Failed,
                std::cmp::Ordering::Greater => PhaseStatus::Skipped,
            };
            assert_eq!(
                release.status_of(phase),
                expected,
                "{phase} when {failing} fails"
            );
        }
        assert_eq!(
            release.phase_details[*failing].error.as_deref(),
            Some(format!("{failing} broke").as_str())
        );
        assert_eq!(
            runner.seen.lock().unwrap().len(),
            i + 1,
            "nothing runs after a failure"
        );
    }
}

#[test]
fn a_skipped_outcome_records_the_reason_and_goes_on() {
    let store = MemoryStore::new(None);
    let mut runner = ScriptedRunner::new();
    runner.skip_in = Some("migrate_pre");
    let release = execute(&store, &runner, &deploy("v1")).unwrap();
    assert_eq!(release.status_of("migrate_pre"), PhaseStatus::Skipped);
    assert_eq!(
        release.phase_details["migrate_pre"].summary.as_deref(),
        Some("nothing to migrate")
    );
    assert_eq!(release.overall_status(), OverallStatus::Completed);
}

#[test]
fn a_failed_status_write_stops_everything() {
    // Commits: 1 creates the release, 2 and 3 run build, 4 skips push (no plugin), 5 would
    // mark migrate_pre running: fail that one.
    let store = MemoryStore::new(Some(5));
    let runner = ScriptedRunner::new();
    let err = execute(&store, &runner, &deploy("v1")).unwrap_err();
    assert!(err.is::<crate::state::StateError>(), "{err:#}");
    let ran: Vec<String> = runner
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.phase.clone())
        .collect();
    assert_eq!(ran, ["build"], "no plugin runs after a failed status write");
}

#[test]
fn releases_chain_previous_ids_and_rollbacks_carry_their_target() {
    let store = MemoryStore::new(None);
    let runner = ScriptedRunner::new();
    let first = execute(&store, &runner, &deploy("v1")).unwrap();
    let second = execute(&store, &runner, &deploy("v2")).unwrap();
    assert_eq!(second.previous_id.as_ref(), Some(&first.id));
    assert!(second.id > first.id);

    let state = store.read().unwrap();
    let target = resolve_target(&state, "prod", &TargetSelector::Previous)
        .unwrap()
        .clone();
    let req = Request {
        environment: "prod".into(),
        version: target.version.clone(),
        commit: target.commit_sha.clone(),
        operation: Operation::Rollback,
        rollback_target: Some(target.clone()),
        message: None,
        auto_rollback_of: None,
        plan_of: None,
    };
    let third = execute(&store, &runner, &req).unwrap();
    assert_eq!(third.operation, Some(Operation::Rollback));
    assert_eq!(third.rollback_target.as_ref(), Some(&first.id));
    assert_eq!(third.version, "v1");
    let seen = runner.seen.lock().unwrap();
    let ctx = seen.last().unwrap();
    assert_eq!(ctx.operation, PluginOperation::Rollback);
    assert_eq!(
        ctx.rollback_target.as_ref().unwrap().release_id,
        first.id.as_str()
    );
}

#[test]
fn each_phase_that_ran_keeps_its_log_and_a_failed_log_write_changes_nothing() {
    let store = MemoryStore::new(None);
    let mut runner = ScriptedRunner::new();
    runner.fail_in = Some("rollout");
    let err = execute(&store, &runner, &deploy("v1")).unwrap_err();
    assert!(err.downcast_ref::<PhaseFailed>().is_some(), "{err:#}");
    let release = store.read().unwrap().releases[0].id.clone();
    let mut logs = store.phase_logs(&release).unwrap();
    logs.sort_by(|a, b| a.phase.cmp(&b.phase));
    let phases: Vec<&str> = logs.iter().map(|l| l.phase.as_str()).collect();
    // Phases that ran, the failed one included; not the unconfigured or the skipped ones.
    assert_eq!(phases, ["build", "migrate_pre", "rollout"]);
    for log in &logs {
        assert_eq!(log.lines.len(), 1, "{log:?}");
        assert_eq!(log.lines[0].message, "hello");
        assert_eq!(log.lines[0].level, "info");
        assert_eq!(log.cut, None);
    }

    let mut store = MemoryStore::new(None);
    store.fail_logs = true;
    let release = execute(&store, &ScriptedRunner::new(), &deploy("v1")).unwrap();
    assert_eq!(release.overall_status(), OverallStatus::Completed);
}

#[test]
fn a_release_keeps_the_components_it_runs_once() {
    let store = MemoryStore::new(None);
    let runner = ScriptedRunner::new();
    execute(&store, &runner, &deploy("v1")).unwrap();
    execute(&store, &runner, &deploy("v2")).unwrap();
    // Every configured phase runs builtin:noop: one component, kept once.
    let kept = store.components.lock().unwrap().clone();
    let digest = crate::plugin::sha256_hex(b"builtin:noop");
    assert_eq!(kept.keys().collect::<Vec<_>>(), [&digest]);
    assert_eq!(kept[&digest], b"builtin:noop");
    let state = store.read().unwrap();
    assert!(state
        .releases
        .iter()
        .all(|r| r.plan.as_ref().unwrap().phases[0].digest == digest));
}

#[test]
fn a_store_that_cannot_keep_the_components_records_nothing() {
    let mut store = MemoryStore::new(None);
    store.fail_components = true;
    let runner = ScriptedRunner::new();
    let err = execute(&store, &runner, &deploy("v1")).unwrap_err();
    let text = crate::error::describe(&err);
    assert!(
        text.starts_with(
            "nothing was recorded: the components this release runs cannot be kept in state \
             memory: no room for components"
        ),
        "{text}"
    );
    assert_eq!(
        crate::error::exit_code_for(&err),
        crate::error::ExitCode::State
    );
    assert!(store.read().unwrap().releases.is_empty());
    assert!(runner.seen.lock().unwrap().is_empty(), "no phase ran");
}
