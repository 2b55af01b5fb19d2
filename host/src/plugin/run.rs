//! One phase run: a fresh sandboxed `Store`, the call, and the translation of whatever happened
//! (report, guest error, trap, tripped limit) into a [`PhaseRun`].
//!
//! A run is a future driven on the caller's thread: wasmtime runs the guest on a fiber and hands
//! control back whenever the guest waits (a WASI call, a log line, every epoch tick). Between
//! those the caller prints the run's log lines, and at the deadline it drops the future, which
//! ends the guest wherever it is, even blocked in a WASI call (that call's host-side I/O runs on
//! tokio's blocking pool and is left to finish there).

use std::future::Future;
use std::pin::pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpCtx;

use super::bindings::stagecraft::phase::types as wit;
use super::engine::EPOCH_TICK;
use super::grants::wasi_context;
use super::imports::{ExecPolicy, RunState};
use super::limits::{self, LogBudget, MemoryLimiter};
use super::net::client::{resolve_overrides, MAX_REQUEST_FIELDS};
use super::net::{HttpHooks, NetPolicy};
use super::open_grants::open_grants;
use super::types::*;
use super::{LoadedPlugin, PluginHost};

/// How long past its deadline a run's future is kept before it is dropped. A guest running wasm
/// traps at the first epoch tick past the deadline and is reported with what it wrote to stderr;
/// only a guest waiting on something is ended by the drop.
const DROP_GRACE: Duration = Duration::from_millis(2 * EPOCH_TICK.as_millis() as u64);

/// The outcome of one [`PluginHost::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseRun {
    /// The checked report, or why the phase failed.
    pub result: Result<PhaseReport, PhaseFailure>,
    /// Wall-clock time of the run (instantiation included).
    pub duration: Duration,
    /// Log lines were dropped because the log limit was reached (the sink got a final note).
    pub log_truncated: bool,
}

impl PluginHost {
    /// Run `plugin` once for `ctx` in a fresh store, with only `sandbox`'s grants and limits.
    /// Log lines reach `sink` while the plugin runs. Never panics on plugin behaviour: every
    /// misbehaviour ends as a [`PhaseFailure`].
    pub fn run(
        &self,
        plugin: &LoadedPlugin,
        ctx: &PhaseContext,
        sandbox: &Sandbox,
        sink: &dyn LogSink,
    ) -> PhaseRun {
        let start = Instant::now();
        let (tx, logs) = mpsc::channel::<(LogLevel, String)>();
        let emit: limits::Emit = Box::new(move |level, message| {
            let _ = tx.send((level, message));
        });
        let deadline = start + sandbox.limits.timeout;
        let work = execute(&self.engine, plugin, ctx, sandbox, deadline, emit);
        let finished = drive(work, deadline + DROP_GRACE, || {
            for (level, message) in logs.try_iter() {
                sink.log(level, &message);
            }
        });
        match finished {
            Some((result, log_truncated)) => PhaseRun {
                result,
                duration: start.elapsed(),
                log_truncated,
            },
            // Still waiting on something past its deadline: the run was dropped with its store.
            None => PhaseRun {
                result: Err(PhaseFailure::Limit {
                    limit: LimitKind::Timeout,
                    value: sandbox.limits.timeout_text.clone(),
                }),
                duration: start.elapsed(),
                log_truncated: false,
            },
        }
    }

    /// Ask the plugin about itself: a fresh store with no grants and default limits, bounded
    /// like a run by [`DESCRIBE_TIMEOUT`].
    pub fn describe(&self, plugin: &LoadedPlugin) -> anyhow::Result<PluginInfo> {
        let name = plugin.name();
        let deadline = Instant::now() + DESCRIBE_TIMEOUT;
        let work = describe_in_store(&self.engine, plugin, deadline);
        match drive(work, deadline + DROP_GRACE, || {}) {
            Some(answer) => answer.map_err(|why| anyhow::anyhow!("{name}: {why}")),
            None => anyhow::bail!("{name}: {}", describe_late()),
        }
    }
}

/// Drive `work` to its end on this thread, calling `handed_back` each time the guest hands
/// control back and once at the end; `None` if it was still unfinished at `give_up` (it is then
/// dropped, which ends the guest).
fn drive<T>(
    work: impl Future<Output = T>,
    give_up: Instant,
    mut handed_back: impl FnMut(),
) -> Option<T> {
    wasmtime_wasi::runtime::in_tokio(async {
        let mut work = pin!(work);
        let mut late = pin!(tokio::time::sleep_until(give_up.into()));
        std::future::poll_fn(|cx| {
            let polled = work.as_mut().poll(cx);
            handed_back();
            match polled {
                Poll::Ready(value) => Poll::Ready(Some(value)),
                Poll::Pending if late.as_mut().poll(cx).is_ready() => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    })
}

/// How long `describe()` may take, instantiation included (`plugin check`, `plugin test`).
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

fn describe_late() -> String {
    format!(
        "describe() did not return within {}s; describe() must answer at once, without \
         waiting on anything (it is called by `plugin check` and `plugin test`)",
        DESCRIBE_TIMEOUT.as_secs()
    )
}

/// The body of [`PluginHost::describe`]. `Err` is the reason, without the plugin's name.
async fn describe_in_store(
    engine: &wasmtime::Engine,
    plugin: &LoadedPlugin,
    deadline: Instant,
) -> Result<PluginInfo, String> {
    let sandbox = Sandbox {
        project_root: std::env::temp_dir(),
        grants: Grants::default(),
        limits: Limits {
            timeout: DESCRIBE_TIMEOUT,
            timeout_text: format!("{}s", DESCRIBE_TIMEOUT.as_secs()),
            ..Limits::default()
        },
    };
    let mut store = new_store(engine, &sandbox, deadline, Box::new(|_, _| {}))
        .map_err(|failure| failure.to_string())?;
    let timed_out = |failure: &PhaseFailure| {
        matches!(
            failure,
            PhaseFailure::Limit {
                limit: LimitKind::Timeout,
                ..
            }
        )
    };
    let instance = match plugin.pre.instantiate_async(&mut store).await {
        Ok(instance) => instance,
        Err(e) => {
            let failure = failure_from_error(&e, &mut store, &sandbox.limits);
            return Err(if timed_out(&failure) {
                describe_late()
            } else {
                format!("cannot be instantiated: {e:#}")
            });
        }
    };
    let info = match instance
        .stagecraft_phase_phase()
        .call_describe(&mut store)
        .await
    {
        Ok(info) => info,
        Err(e) => {
            let failure = failure_from_error(&e, &mut store, &sandbox.limits);
            return Err(if timed_out(&failure) {
                describe_late()
            } else {
                format!("describe() failed: {failure}")
            });
        }
    };
    Ok(bounded_info(info))
}

/// Bounds on what `describe()` answers: plugin text like any other (spec/plugin-abi.md, "Bounds
/// on plugin text"). Phase names are at most 64 bytes in a manifest.
const MAX_INFO_NAME_BYTES: usize = 256;
const MAX_INFO_PHASES: usize = 64;
const MAX_INFO_PHASE_BYTES: usize = 64;

/// The describe() answer, each field one bounded line and at most [`MAX_INFO_PHASES`] phases
/// (then an entry that says how many were cut).
fn bounded_info(info: wit::PluginInfo) -> PluginInfo {
    let cut = info.phases.len().saturating_sub(MAX_INFO_PHASES);
    let mut phases: Vec<String> = info
        .phases
        .iter()
        .take(MAX_INFO_PHASES)
        .map(|phase| limits::bounded_line(phase, MAX_INFO_PHASE_BYTES))
        .collect();
    if cut > 0 {
        phases.push(format!("… [cut {cut} phases]"));
    }
    PluginInfo {
        name: limits::bounded_line(&info.name, MAX_INFO_NAME_BYTES),
        version: limits::bounded_line(&info.version, MAX_INFO_NAME_BYTES),
        description: limits::bounded_summary(&info.description),
        phases,
    }
}

fn new_store(
    engine: &wasmtime::Engine,
    sandbox: &Sandbox,
    deadline: Instant,
    emit: limits::Emit,
) -> Result<Store<RunState>, PhaseFailure> {
    let budget = Arc::new(Mutex::new(LogBudget::new(emit, sandbox.limits.log_bytes)));
    let refusals = Arc::new(Mutex::new(Vec::new()));
    // Grants are opened now, as the phase starts, never earlier (see open_grants).
    let opened =
        Arc::new(open_grants(&sandbox.project_root, &sandbox.grants).map_err(PhaseFailure::Grant)?);
    let wasi = wasi_context(sandbox, &opened, &budget, &refusals).map_err(PhaseFailure::Grant)?;
    let env = sandbox
        .grants
        .env
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v)))
        .collect();
    let mut net_ports: Vec<u16> = sandbox.grants.net.iter().map(|g| g.port).collect();
    net_ports.sort_unstable();
    net_ports.dedup();
    let mut http = WasiHttpCtx::new();
    http.set_field_size_limit(MAX_REQUEST_FIELDS);
    let state = RunState {
        wasi,
        table: ResourceTable::new(),
        memory: MemoryLimiter::new(sandbox.limits.memory_bytes),
        log: budget.clone(),
        exec: ExecPolicy {
            allowed: sandbox.grants.exec.clone(),
            unconfined: sandbox.grants.exec_unconfined.clone(),
            env,
            project_root: sandbox.project_root.clone(),
            grants: opened,
            net_ports,
            jail: None,
            deadline,
            timeout_text: sandbox.limits.timeout_text.clone(),
        },
        refusals: refusals.clone(),
        timed_out: false,
        http,
        http_hooks: HttpHooks::new(NetPolicy {
            grants: sandbox.grants.net.clone(),
            deadline,
            resolve: resolve_overrides().map_err(PhaseFailure::Grant)?.to_vec(),
            budget: budget.clone(),
            refusals,
        }),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.memory);
    // At every epoch tick the guest hands control back to the caller (which prints its log
    // lines); the first tick past the deadline traps instead.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
    // What one call may copy from the guest into the host (a report, an exec call's
    // arguments), whatever the guest's memory holds: a list whose strings all point at the same
    // bytes would otherwise be copied once per element. Said explicitly, not left to the
    // engine's default, because the spec promises it.
    store.set_hostcall_fuel(limits::MAX_COPIED_PER_CALL);
    Ok(store)
}

/// The body of a run: a future the caller drives (see [`drive`]).
async fn execute(
    engine: &wasmtime::Engine,
    plugin: &LoadedPlugin,
    ctx: &PhaseContext,
    sandbox: &Sandbox,
    deadline: Instant,
    emit: limits::Emit,
) -> (Result<PhaseReport, PhaseFailure>, bool) {
    let mut store = match new_store(engine, sandbox, deadline, emit) {
        Ok(store) => store,
        Err(failure) => return (Err(failure), false),
    };
    let result = match plugin.pre.instantiate_async(&mut store).await {
        Err(e) => Err(failure_from_error(&e, &mut store, &sandbox.limits)),
        Ok(instance) => {
            let wit_ctx = to_wit(ctx);
            match instance
                .stagecraft_phase_phase()
                .call_run(&mut store, &wit_ctx)
                .await
            {
                Err(e) => Err(failure_from_error(&e, &mut store, &sandbox.limits)),
                Ok(Err(err)) => Err(guest_failure(err, &mut store, &sandbox.limits)),
                Ok(Ok(report)) => check_report(report),
            }
        }
    };
    let truncated = store
        .data()
        .log
        .lock()
        .map(|mut b| b.finish(&limits::format_bytes(sandbox.limits.log_bytes)))
        .unwrap_or(false);
    (result, truncated)
}

/// A tripped budget explains any failure that follows it, so it wins over the guest's message.
fn tripped_limit(store: &mut Store<RunState>, limits: &Limits) -> Option<PhaseFailure> {
    let state = store.data();
    if state.memory.tripped {
        return Some(PhaseFailure::Limit {
            limit: LimitKind::Memory,
            value: limits.memory_text.clone(),
        });
    }
    if state.timed_out {
        return Some(PhaseFailure::Limit {
            limit: LimitKind::Timeout,
            value: limits.timeout_text.clone(),
        });
    }
    None
}

fn failure_from_error(
    err: &wasmtime::Error,
    store: &mut Store<RunState>,
    limits: &Limits,
) -> PhaseFailure {
    if let Some(limit) = tripped_limit(store, limits) {
        return limit;
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PhaseFailure::Limit {
            limit: LimitKind::Timeout,
            value: limits.timeout_text.clone(),
        },
        Some(Trap::StackOverflow) => PhaseFailure::Trap("stack overflow".into()),
        Some(trap) => {
            let stderr: Vec<String> = store
                .data()
                .log
                .lock()
                .map(|b| b.last_stderr.iter().cloned().collect())
                .unwrap_or_default();
            if let Some(failure) = uncaught_python_exception(&stderr) {
                return failure;
            }
            match last_meaningful_line(&stderr) {
                Some(line) => PhaseFailure::Trap(format!(
                    "{trap} (stderr: {})",
                    limits::bounded(line, limits::MAX_ERROR_MESSAGE_BYTES)
                )),
                None => PhaseFailure::Trap(format!(
                    "{trap} (the guest aborted without writing anything to stderr)"
                )),
            }
        }
        None => PhaseFailure::Trap(error_text(err)),
    }
}

/// A wasmtime error that is not a trap, as a phase error. It may quote the guest (a backtrace
/// names the component's own functions), so it is bounded like any plugin text.
fn error_text(err: &wasmtime::Error) -> String {
    limits::bounded(&format!("{err:#}"), limits::MAX_ERROR_MESSAGE_BYTES).into_owned()
}

/// componentize-py turns an exception that escapes an export into a trap, after printing the
/// traceback and a runtime panic to stderr. For the plugin author that is an error like any
/// other: report the exception line (`ValueError: ...`) as the phase error and the traceback as
/// its details. `None` unless stderr ends with exactly that shape.
fn uncaught_python_exception(stderr: &[String]) -> Option<PhaseFailure> {
    let start = stderr
        .iter()
        .rposition(|l| l.starts_with("Traceback (most recent call last):"))?;
    let panic = start
        + stderr[start..]
            .iter()
            .position(|l| l.starts_with("thread '") && l.contains("panicked at"))?;
    let after = stderr.get(panic + 1)?;
    if !after.contains("Python function threw an unexpected exception") {
        return None;
    }
    let exception = stderr[start + 1..panic]
        .iter()
        .rev()
        .find(|l| !l.is_empty() && !l.starts_with(char::is_whitespace))?;
    Some(PhaseFailure::Guest {
        message: limits::bounded_line(exception, limits::MAX_ERROR_MESSAGE_BYTES),
        details: Some(tail(&stderr[start..panic], limits::MAX_TRACEBACK_BYTES)),
    })
}

/// The traceback's lines joined, keeping its last `max` bytes after the cut marker. stderr keeps
/// at most 64 lines of at most 16 KiB each, so the join itself is bounded.
fn tail(lines: &[String], max: usize) -> String {
    limits::bounded_tail(&lines.join("\n"), max).into_owned()
}

/// The line of a crashed guest's stderr that most likely says why: the last one that is not a
/// stack frame, a blank, or a runtime's boilerplate (Rust's backtrace hint, SpiderMonkey's abort
/// redirect). A Rust panic's message follows its `panicked at` line, so it wins.
fn last_meaningful_line(stderr: &[String]) -> Option<&str> {
    const BOILERPLATE: &[&str] = &[
        "note: run with `RUST_BACKTRACE=1`",
        "Redirecting call to abort() to mozalloc_abort",
        "Stack:",
    ];
    stderr.iter().rev().map(|l| l.trim_end()).find(|l| {
        !l.is_empty()
            && !l.starts_with(char::is_whitespace)
            && !BOILERPLATE.iter().any(|b| l.starts_with(b))
    })
}

fn guest_failure(
    err: wit::PhaseError,
    store: &mut Store<RunState>,
    limits: &Limits,
) -> PhaseFailure {
    if let Some(limit) = tripped_limit(store, limits) {
        return limit;
    }
    // Bounded first, and the plugin's strings dropped with `err` before anything is kept.
    let mut message = limits::bounded_line(&err.message, limits::MAX_ERROR_MESSAGE_BYTES);
    let details = err
        .details
        .map(|d| limits::bounded_tail(&d, limits::MAX_ERROR_DETAILS_BYTES).into_owned());
    if message.trim().is_empty() {
        message = "the plugin returned an error without a message".into();
    }
    let first_refusal = store
        .data()
        .refusals
        .lock()
        .ok()
        .and_then(|r| r.first().cloned());
    // Named once: a plugin that passes the refusal on as its own error already says it.
    if let Some(first) = first_refusal.filter(|first| !message.contains(first.as_str())) {
        message = format!(
            "{message} ({})",
            limits::bounded(&first, limits::MAX_REFUSAL_BYTES)
        );
    }
    PhaseFailure::Guest { message, details }
}

fn check_report(report: wit::PhaseReport) -> Result<PhaseReport, PhaseFailure> {
    if !limits::outputs_within_bounds(report.outputs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        return Err(PhaseFailure::Limit {
            limit: LimitKind::Outputs,
            value: limits::outputs_limit_text(),
        });
    }
    Ok(PhaseReport {
        outcome: match report.outcome {
            wit::Outcome::Completed => Outcome::Completed,
            wit::Outcome::Skipped(reason) => {
                Outcome::Skipped(limits::bounded_line(&reason, limits::MAX_SKIP_REASON_BYTES))
            }
        },
        summary: limits::bounded_summary(&report.summary),
        // Later duplicates win, as in a map literal.
        outputs: report.outputs.into_iter().collect(),
    })
}

fn sorted(map: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn to_wit(ctx: &PhaseContext) -> wit::PhaseContext {
    wit::PhaseContext {
        phase: ctx.phase.clone(),
        operation: match ctx.operation {
            Operation::Deploy => wit::Operation::Deploy,
            Operation::Rollback => wit::Operation::Rollback,
        },
        release: wit::ReleaseInfo {
            id: ctx.release.id.clone(),
            environment: ctx.release.environment.clone(),
            version: ctx.release.version.clone(),
            commit: ctx.release.commit.clone(),
            previous_id: ctx.release.previous_id.clone(),
        },
        rollback_target: ctx.rollback_target.as_ref().map(|t| wit::RollbackTarget {
            release_id: t.release_id.clone(),
            version: t.version.clone(),
            commit: t.commit.clone(),
        }),
        config: sorted(&ctx.config),
        vars: sorted(&ctx.vars),
        earlier_outputs: ctx
            .earlier_outputs
            .iter()
            .map(|(phase, outputs)| wit::PhaseOutputs {
                phase: phase.clone(),
                outputs: sorted(outputs),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn an_uncaught_python_exception_is_the_phase_error() {
        let stderr = lines(
            "Traceback (most recent call last):\n  File \"/0/app.py\", line 13, in run\n\
             ValueError: boom\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\n\
             Python function threw an unexpected exception\n\
             note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
        );
        match uncaught_python_exception(&stderr) {
            Some(PhaseFailure::Guest { message, details }) => {
                assert_eq!(message, "ValueError: boom");
                let details = details.unwrap();
                assert!(details.starts_with("Traceback"), "{details}");
                assert!(details.ends_with("ValueError: boom"), "{details}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_wasmtime_error_quoting_the_guest_is_bounded() {
        let name = "f".repeat(1 << 20);
        let err = wasmtime::Error::msg(format!("error while executing at wasm backtrace: {name}"));
        let text = error_text(&err);
        assert!(
            text.len() < limits::MAX_ERROR_MESSAGE_BYTES + 32,
            "{}",
            text.len()
        );
        assert!(text.ends_with(" bytes]"), "{}", &text[text.len() - 40..]);
        assert_eq!(error_text(&wasmtime::Error::msg("short")), "short");
    }

    #[test]
    fn a_long_traceback_keeps_its_end_after_the_cut_marker() {
        let frames: Vec<String> = (0..40)
            .map(|i| format!("  File \"x.py\", line {i}{}", " ".repeat(1000)))
            .collect();
        let details = tail(&frames, limits::MAX_TRACEBACK_BYTES);
        let joined = frames.join("\n");
        let removed = joined.len() - limits::MAX_TRACEBACK_BYTES;
        assert!(
            details.starts_with(&format!("… [cut {removed} bytes]\n")),
            "{}",
            &details[..40]
        );
        assert!(details.ends_with(&frames[39]));
        assert_eq!(
            tail(&frames[..2], limits::MAX_TRACEBACK_BYTES),
            frames[..2].join("\n")
        );
    }

    #[test]
    fn a_traceback_without_the_runtime_panic_is_not_an_exception() {
        // A plugin that printed a caught traceback and then aborted crashed.
        let stderr = lines("Traceback (most recent call last):\nValueError: handled");
        assert_eq!(uncaught_python_exception(&stderr), None);
        assert_eq!(last_meaningful_line(&stderr), Some("ValueError: handled"));
    }

    #[test]
    fn the_meaningful_crash_line_skips_frames_and_boilerplate() {
        let js = lines(
            "expected a string, received [undefined]\nStack:\n  f@x.js:1:1\n\
             Redirecting call to abort() to mozalloc_abort",
        );
        assert_eq!(
            last_meaningful_line(&js),
            Some("expected a string, received [undefined]")
        );
        let rust = lines(
            "thread 'main' panicked at src/lib.rs:3:5:\nout of widgets\n\
             note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
        );
        assert_eq!(last_meaningful_line(&rust), Some("out of widgets"));
        assert_eq!(last_meaningful_line(&lines("\n  \n")), None);
    }
}
