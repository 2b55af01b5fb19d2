//! `stagecraft plugin ...`: inspect a component (`check`), run the conformance scenarios
//! against it (`test`), and create a new plugin (`new`, in `scaffold.rs`). Subcommands are variants of [`PluginCommand`]; adding one is a variant
//! plus a match arm in [`run`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::error::{input_error, ExitCode};
use crate::output::terminal::escape_controls;
use crate::plugin::net::NetGrant;
use crate::plugin::*;

use super::plugin_net::{self, LocalServer};

#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Say which contract version a component targets, what it says about itself and which
    /// imports (and so which grants) it needs. Exit 1 if it is not a usable phase plugin.
    #[command(after_help = "\
Examples:
  stagecraft plugin check target/wasm32-wasip2/release/my_phase.wasm
  stagecraft plugin check builtin:exec --json")]
    Check(CheckArgs),
    /// Run the conformance scenarios (spec/conformance.md) against a plugin in a fresh sandbox
    /// and print a pass/fail table. Exit 2 if any scenario fails, 1 if the plugin is unusable.
    #[command(after_help = "\
Examples:
  stagecraft plugin test my_phase.wasm
  stagecraft plugin test my_phase.wasm --phase migrate_pre --set dsn_env=DATABASE_URL
  stagecraft plugin test builtin:exec --set command='echo hi' --exec echo")]
    Test(TestArgs),
    /// Create a plugin that builds as it is: Rust, Python or JavaScript, with the WIT, a
    /// sample phase and a README that says how to build and test it.
    New(super::scaffold::NewArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A `.wasm` component, or `builtin:<name>`.
    pub plugin: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also say how long loading took and whether the component came from the cache.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// A `.wasm` component, or `builtin:<name>`.
    pub plugin: String,
    /// The phase name the scenarios use (default: the first phase the plugin declares, else
    /// `build`).
    #[arg(long, value_name = "PHASE")]
    pub phase: Option<String>,
    /// The phase config, as a JSON object of strings (numbers and booleans are converted).
    #[arg(long, value_name = "JSON")]
    pub config_json: Option<String>,
    /// One config value (repeatable; beats --config-json).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// A directory copied into each scenario's temporary project (templates, release dirs).
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// A program the plugin may run through `exec` (repeatable).
    #[arg(long = "exec", value_name = "PROGRAM")]
    pub exec: Vec<String>,
    /// An environment variable passed through to the plugin (repeatable).
    #[arg(long = "env", value_name = "NAME")]
    pub env: Vec<String>,
    /// The config key holding the URL the plugin requests: runs the network scenarios against
    /// a server of this command's on 127.0.0.1 (a granted request must succeed, an ungranted one
    /// must be refused with the grant named).
    #[arg(long, value_name = "KEY")]
    pub net_url: Option<String>,
    /// Each scenario's timeout (a hanging plugin fails the scenario, not the command).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub timeout: String,
    /// Each scenario's memory limit.
    #[arg(long, value_name = "SIZE", default_value = "512MiB")]
    pub memory: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also say, on stderr, how loading went and whether the compiled-component cache was used.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

pub fn run(args: PluginArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PluginCommand::Check(args) => check(args),
        PluginCommand::Test(args) => test(args),
        PluginCommand::New(args) => super::scaffold::run(args),
    }
}

/// `builtin:<name>` or a path.
pub fn parse_source(raw: &str) -> PluginSource {
    match raw.strip_prefix("builtin:") {
        Some(name) => PluginSource::Builtin(name.to_string()),
        None => PluginSource::File(PathBuf::from(raw)),
    }
}

/// What each import family means for the phase's grants.
fn import_meaning(name: &str) -> &'static str {
    let iface = name.split('@').next().unwrap_or(name);
    match iface {
        "stagecraft:phase/host" => "log, and exec of programs in the `exec` grant",
        "stagecraft:phase/types" => "shared types",
        i if i.starts_with("wasi:filesystem/") => "files: only `read`/`write` grants are visible",
        "wasi:cli/environment" => "environment: only variables in the `env` grant",
        i if i.starts_with("wasi:sockets/") => "sockets: never granted (always refused)",
        i if i.starts_with("wasi:http/") => "HTTP(S): only origins in the `net` grant",
        i if i.starts_with("wasi:cli/std") || i.starts_with("wasi:cli/terminal") => {
            "stdio: stdout/stderr go to the phase log, stdin is empty"
        }
        i if i.starts_with("wasi:clocks/") => "clocks",
        i if i.starts_with("wasi:random/") => "random numbers",
        "wasi:cli/exit" => "exit (a non-zero exit is a crash)",
        i if i.starts_with("wasi:io/") => "streams",
        _ => "",
    }
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut stdout = crate::output::stdout();
    let host = PluginHost::new(None)?;
    let source = parse_source(&args.plugin);
    let plugin = host.load(&source)?;
    let info = host
        .describe(&plugin)
        .map_err(|e| input_error(format!("{e:#}")))?;
    let summary = plugin.summary();
    if args.json {
        let imports: Vec<_> = summary
            .imports
            .iter()
            .map(|i| serde_json::json!({ "name": i, "meaning": import_meaning(i) }))
            .collect();
        let out = serde_json::json!({
            "plugin": plugin.name(),
            "contract": format!("stagecraft:phase@{}", summary.wit_version),
            "supported": format!("stagecraft:phase@{SUPPORTED_WIT}"),
            // Named as a phase's plugin and digest are in release JSON.
            "plugin_digest": plugin.digest(),
            "size_bytes": summary.size,
            "info": info,
            "imports": imports,
        });
        writeln!(stdout, "{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(ExitCode::Ok);
    }
    writeln!(stdout, "plugin       {}", plugin.name())?;
    writeln!(
        stdout,
        "contract     stagecraft:phase@{} (this stagecraft runs {SUPPORTED_WIT})",
        summary.wit_version
    )?;
    writeln!(stdout, "sha256       {}", plugin.digest())?;
    writeln!(
        stdout,
        "size         {:.1} KiB",
        summary.size as f64 / 1024.0
    )?;
    // What describe() returned is plugin text: shown escaped, like every plugin string.
    writeln!(stdout, "name         {}", escape_controls(&info.name))?;
    writeln!(stdout, "version      {}", escape_controls(&info.version))?;
    writeln!(
        stdout,
        "description  {}",
        escape_controls(&info.description)
    )?;
    writeln!(
        stdout,
        "phases       {}",
        if info.phases.is_empty() {
            "any".to_string()
        } else {
            escape_controls(&info.phases.join(", ")).into_owned()
        }
    )?;
    writeln!(stdout, "imports")?;
    let width = summary.imports.iter().map(|i| i.len()).max().unwrap_or(0);
    for import in &summary.imports {
        writeln!(stdout, "  {import:width$}  {}", import_meaning(import))?;
    }
    if args.verbose {
        writeln!(
            stdout,
            "loaded in {:.1} ms ({})",
            plugin.load_time().as_secs_f64() * 1000.0,
            if plugin.was_cached() {
                "from the compiled-component cache"
            } else {
                "compiled"
            }
        )?;
        if let Some(note) = plugin.cache_note() {
            writeln!(stdout, "cache: {note}")?;
        }
    }
    Ok(ExitCode::Ok)
}

/// The config given on the command line.
fn config_from(args: &TestArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut config = BTreeMap::new();
    if let Some(json) = &args.config_json {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| input_error(format!("--config-json is not valid JSON: {e}")))?;
        let object = value.as_object().ok_or_else(|| {
            input_error("--config-json must be a JSON object, e.g. '{\"command\": \"make\"}'")
        })?;
        for (key, value) in object {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(input_error(format!(
                        "--config-json: {key} is {other}; config values are strings, numbers \
                         or booleans"
                    )))
                }
            };
            config.insert(key.clone(), text);
        }
    }
    for pair in &args.set {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| input_error(format!("--set {pair:?} is not KEY=VALUE")))?;
        config.insert(key.to_string(), value.to_string());
    }
    Ok(config)
}

/// One conformance scenario's verdict.
#[derive(Debug, serde::Serialize)]
struct Verdict {
    /// The scenario's name (`name`, as every named thing in JSON output).
    #[serde(rename = "name")]
    scenario: &'static str,
    pass: bool,
    detail: String,
}

/// The same outcome twice means the same report, or the same failure message.
fn outcome_text(result: &Result<PhaseReport, PhaseFailure>) -> String {
    match result {
        Ok(r) => {
            let outcome = match &r.outcome {
                Outcome::Completed => "completed".to_string(),
                Outcome::Skipped(reason) => format!("skipped ({reason})"),
            };
            format!("{outcome}: {}", r.summary)
        }
        Err(f) => format!("failed: {f}"),
    }
}

/// Decides a scenario from the run's result: (pass, detail).
type Judge<'a> = dyn Fn(&Result<PhaseReport, PhaseFailure>) -> (bool, String) + 'a;

/// A scenario that needs the plugin to work: completed or skipped passes.
fn must_succeed(result: &Result<PhaseReport, PhaseFailure>) -> (bool, String) {
    (result.is_ok(), outcome_text(result))
}

/// A sandbox per scenario: `<tmp>/project` (read-write, with --project copied in), beside
/// `<tmp>/outside` and `<tmp>/state` that nothing may touch.
struct Playground {
    dir: tempfile::TempDir,
}

impl Playground {
    fn new(seed: Option<&Path>) -> anyhow::Result<Playground> {
        let dir = tempfile::Builder::new()
            .prefix("stagecraft-plugin-test")
            .tempdir()
            .context("creating a temporary project")?;
        let project = dir.path().join("project");
        std::fs::create_dir_all(&project)?;
        if let Some(seed) = seed {
            copy_dir(seed, &project)
                .with_context(|| format!("copying --project {}", seed.display()))?;
        }
        std::fs::create_dir_all(dir.path().join("outside"))?;
        std::fs::write(dir.path().join("outside/sentinel.txt"), b"untouched")?;
        std::fs::create_dir_all(dir.path().join("state"))?;
        std::fs::write(dir.path().join("state/releases.json"), b"{}")?;
        Ok(Playground { dir })
    }

    fn project(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    /// Every file outside the project, with its bytes.
    fn outside_snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        for top in ["outside", "state"] {
            snapshot(&self.dir.path().join(top), &mut out);
        }
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !["project", "outside", "state"].contains(&name.to_string_lossy().as_ref()) {
                    out.insert(entry.path(), Vec::new());
                }
            }
        }
        out
    }
}

fn snapshot(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                snapshot(&path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                out.insert(path, bytes);
            }
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Under `--verbose`, on stderr: whether the component was compiled or came from the cache (the
/// same words `deploy --verbose` uses), and why the cache was not used when it was not.
fn report_load(plugin: &LoadedPlugin) {
    eprintln!(
        "[{}] {} in {:.1} ms",
        plugin.name(),
        if plugin.was_cached() {
            "loaded from cache"
        } else {
            "compiled"
        },
        plugin.load_time().as_secs_f64() * 1000.0
    );
    if let Some(note) = plugin.cache_note() {
        eprintln!("[{}] cache: {note}", plugin.name());
    }
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let mut stdout = crate::output::stdout();
    crate::pipeline::kill_programs_on_signal()?;
    let config = config_from(&args)?;
    crate::plugin::net::client::resolve_overrides().map_err(input_error)?;
    let limits = Limits {
        timeout: crate::manifest::parse_duration(&args.timeout)
            .map_err(|e| input_error(format!("--timeout: {e}")))?,
        timeout_text: args.timeout.trim().to_string(),
        memory_bytes: crate::manifest::parse_size(&args.memory)
            .map_err(|e| input_error(format!("--memory: {e}")))?,
        memory_text: args.memory.trim().to_string(),
        ..Limits::default()
    };
    if let Some(seed) = &args.project {
        if !seed.is_dir() {
            return Err(input_error(format!(
                "--project {} is not a directory",
                seed.display()
            )));
        }
    }
    let host = PluginHost::new(None)?;
    let plugin = host.load(&parse_source(&args.plugin))?;
    if args.verbose {
        report_load(&plugin);
    }
    let mut verdicts = Vec::new();

    // describe: stable, named, versioned. A second call only when the first answered: a
    // describe() that hangs costs its deadline once, not twice.
    let first = host.describe(&plugin);
    let second = match &first {
        Ok(_) => host.describe(&plugin),
        Err(_) => Err(anyhow::anyhow!("not called again")),
    };
    let info = match (first, second) {
        (Ok(a), Ok(b)) => {
            let (pass, detail) = if a.name.trim().is_empty() || a.version.trim().is_empty() {
                (
                    false,
                    "describe() returned an empty name or version".to_string(),
                )
            } else if a != b {
                (
                    false,
                    "describe() answered differently in two fresh stores".to_string(),
                )
            } else {
                (true, format!("{} {}", a.name, a.version))
            };
            verdicts.push(Verdict {
                scenario: "describe",
                pass,
                detail,
            });
            Some(a)
        }
        (Err(e), _) | (_, Err(e)) => {
            verdicts.push(Verdict {
                scenario: "describe",
                pass: false,
                detail: format!("{e:#}"),
            });
            None
        }
    };
    let declared = info.as_ref().map(|i| i.phases.clone()).unwrap_or_default();
    let phase = args
        .phase
        .clone()
        .or_else(|| declared.first().cloned())
        .unwrap_or_else(|| "build".to_string());
    if !declared.is_empty() && !declared.contains(&phase) {
        verdicts.push(Verdict {
            scenario: "phase",
            pass: false,
            detail: format!(
                "the plugin declares phases {}; --phase {phase} is not one of them",
                declared.join(", ")
            ),
        });
    }

    // With --net-url, every scenario with a config requests a server of ours that the grant
    // names, and `net-refused` one that it does not.
    let servers = match &args.net_url {
        Some(_) => Some((LocalServer::start()?, LocalServer::start()?)),
        None => None,
    };
    let mut config = config;
    let mut net = Vec::new();
    if let (Some(key), Some((granted, _))) = (&args.net_url, &servers) {
        config.insert(key.clone(), granted.origin());
        net.push(NetGrant::parse(&granted.origin()).map_err(anyhow::Error::msg)?);
    }
    let grants = Grants {
        read: Vec::new(),
        write: vec![PathBuf::from(".")],
        env: args.env.clone(),
        exec: args.exec.clone(),
        exec_unconfined: Vec::new(),
        net,
    };
    let mut reports: Vec<(&'static str, PhaseReport)> = Vec::new();
    let mut escapes: Vec<String> = Vec::new();
    let mut scenario_with = |name: &'static str,
                             ctx: PhaseContext,
                             grants: &Grants,
                             judge: &Judge<'_>|
     -> anyhow::Result<String> {
        let playground = Playground::new(args.project.as_deref())?;
        let before = playground.outside_snapshot();
        let sandbox = Sandbox {
            project_root: playground.project(),
            grants: grants.clone(),
            limits: limits.clone(),
        };
        let run = host.run(&plugin, &ctx, &sandbox, &NullSink);
        let after = playground.outside_snapshot();
        if before != after {
            let changed: Vec<String> = after
                .keys()
                .chain(before.keys())
                .filter(|k| before.get(*k) != after.get(*k))
                .map(|k| k.display().to_string())
                .collect();
            escapes.push(format!("{name}: {}", changed.join(", ")));
        }
        let (pass, detail) = judge(&run.result);
        verdicts.push(Verdict {
            scenario: name,
            pass,
            detail,
        });
        if let Ok(report) = &run.result {
            reports.push((name, report.clone()));
        }
        Ok(outcome_text(&run.result))
    };

    let mut scenario = |name: &'static str, ctx: PhaseContext, judge: &Judge<'_>| {
        scenario_with(name, ctx, &grants, judge)
    };
    let deploy = conformance_context(&phase, &config, Shape::Deploy);
    let first = scenario("deploy", deploy.clone(), &must_succeed)?;
    scenario(
        "rollback",
        conformance_context(&phase, &config, Shape::Rollback),
        &must_succeed,
    )?;
    scenario(
        "empty-config",
        conformance_context(&phase, &BTreeMap::new(), Shape::Deploy),
        &|result| match result {
            Ok(_) => (true, outcome_text(result)),
            Err(PhaseFailure::Guest { message, .. }) if !message.trim().is_empty() => {
                (true, format!("refused: {message}"))
            }
            Err(_) => (
                false,
                format!(
                    "{} (missing config must be a phase error with a message, not a crash)",
                    outcome_text(result)
                ),
            ),
        },
    )?;
    scenario(
        "full-config",
        conformance_context(&phase, &config, Shape::Full),
        &must_succeed,
    )?;
    scenario(
        "earlier-outputs",
        conformance_context(&phase, &config, Shape::EarlierOutputs),
        &must_succeed,
    )?;
    scenario("repeatable", deploy, &|result| {
        let again = outcome_text(result);
        let before = &first;
        if again == *before {
            (true, "same result in a fresh store".to_string())
        } else {
            (false, format!("first run: {before}; second run: {again}"))
        }
    })?;

    let imports_http = plugin
        .summary()
        .imports
        .iter()
        .any(|i| i.starts_with("wasi:http/outgoing-handler"));
    match (&args.net_url, &servers) {
        (Some(key), Some((granted, ungranted))) => {
            let reached = plugin_net::judge_granted(granted, &first);
            let mut refused_config = config.clone();
            refused_config.insert(key.clone(), ungranted.origin());
            scenario_with(
                "net-refused",
                conformance_context(&phase, &refused_config, Shape::Deploy),
                &grants,
                &|result| plugin_net::judge_refused(result, ungranted, outcome_text(result)),
            )?;
            let at = verdicts.len() - 1;
            verdicts.insert(
                at,
                Verdict {
                    scenario: "net-granted",
                    pass: reached.0,
                    detail: reached.1,
                },
            );
        }
        _ if imports_http => verdicts.push(Verdict {
            scenario: "net",
            pass: true,
            detail: "not run: the plugin imports wasi:http; pass --net-url <config key of the \
                     URL it requests> to test a granted and a refused request"
                .to_string(),
        }),
        _ => {}
    }

    let bad: Vec<String> = reports
        .iter()
        .filter(|(_, r)| r.summary.trim().is_empty())
        .map(|(name, _)| format!("{name}: empty summary"))
        .collect();
    verdicts.push(Verdict {
        scenario: "report-bounds",
        pass: bad.is_empty(),
        detail: if bad.is_empty() {
            format!(
                "every report has a summary and at most {MAX_OUTPUTS} outputs / {}",
                format_bytes(MAX_OUTPUT_BYTES as u64)
            )
        } else {
            bad.join("; ")
        },
    });
    verdicts.push(Verdict {
        scenario: "sandbox",
        pass: escapes.is_empty(),
        detail: if escapes.is_empty() {
            "nothing outside the granted project directory changed".to_string()
        } else {
            format!("changed outside the grant: {}", escapes.join("; "))
        },
    });

    let failed = verdicts.iter().filter(|v| !v.pass).count();
    if args.json {
        let out = serde_json::json!({
            "plugin": plugin.name(),
            "phase": phase,
            "scenarios": verdicts,
            "passed": verdicts.len() - failed,
            "failed": failed,
        });
        writeln!(stdout, "{}", serde_json::to_string_pretty(&out)?)?;
    } else {
        writeln!(stdout, "{} (phase {phase})", plugin.name())?;
        let width = verdicts.iter().map(|v| v.scenario.len()).max().unwrap_or(0);
        writeln!(stdout, "{:width$}  result  detail", "scenario")?;
        for v in &verdicts {
            writeln!(
                stdout,
                "{:width$}  {:6}  {}",
                v.scenario,
                if v.pass { "pass" } else { "FAIL" },
                escape_controls(&v.detail)
            )?;
        }
        writeln!(
            stdout,
            "{} passed, {failed} failed",
            verdicts.len() - failed
        )?;
    }
    Ok(if failed == 0 {
        ExitCode::Ok
    } else {
        ExitCode::PhaseFailed
    })
}

#[derive(Clone, Copy)]
enum Shape {
    Deploy,
    Rollback,
    /// Every optional context field set: vars, commit, previous release.
    Full,
    /// A deploy with outputs from two earlier phases.
    EarlierOutputs,
}

fn conformance_context(
    phase: &str,
    config: &BTreeMap<String, String>,
    shape: Shape,
) -> PhaseContext {
    let mut ctx = PhaseContext {
        phase: phase.to_string(),
        operation: Operation::Deploy,
        release: ReleaseInfo {
            id: "rel-20260101-120000000".into(),
            environment: "conformance".into(),
            version: "v2".into(),
            commit: String::new(),
            previous_id: None,
        },
        rollback_target: None,
        config: config.clone(),
        vars: BTreeMap::new(),
        earlier_outputs: Vec::new(),
    };
    match shape {
        Shape::Deploy => {}
        Shape::Rollback => {
            ctx.operation = Operation::Rollback;
            ctx.release.version = "v1".into();
            ctx.release.commit = "1111111111111111111111111111111111111111".into();
            ctx.release.previous_id = Some("rel-20260101-110000000".into());
            ctx.rollback_target = Some(RollbackTarget {
                release_id: "rel-20260101-100000000".into(),
                version: "v1".into(),
                commit: "1111111111111111111111111111111111111111".into(),
            });
        }
        Shape::Full => {
            ctx.release.commit = "2222222222222222222222222222222222222222".into();
            ctx.release.previous_id = Some("rel-20260101-110000000".into());
            ctx.vars = BTreeMap::from([
                ("region".to_string(), "eu-west".to_string()),
                ("replicas".to_string(), "3".to_string()),
                ("url".to_string(), "https://example.test/".to_string()),
            ]);
        }
        Shape::EarlierOutputs => {
            ctx.earlier_outputs = vec![
                (
                    "build".to_string(),
                    BTreeMap::from([("artifact".to_string(), "dist/app-v2.tar".to_string())]),
                ),
                (
                    "push".to_string(),
                    BTreeMap::from([
                        ("digest".to_string(), format!("sha256:{}", "a".repeat(64))),
                        ("note".to_string(), "x".repeat(1024)),
                    ]),
                ),
            ];
        }
    }
    ctx
}
