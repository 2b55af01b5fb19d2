//! How `releases list` and `releases show` print: an aligned table and a detail view for people,
//! and a stable snake_case JSON shape for machines (spec/state.md, "releases output"). State may
//! hold anything a plugin or another tool wrote, so every value a person sees is escaped
//! ([`escape_controls`]); JSON is escaped by serde_json.

use std::collections::BTreeMap;

use serde::Serialize;

use super::table::{Cell, Fit, TextTable};
use super::terminal::escape_controls;

use crate::state::{
    Operation, OverallStatus, PhaseStatus, Plan, Release, ReleaseId, Retention, State,
};

/// The table of `releases list`: the Go tool's columns (RELEASE ID; ENVIRONMENT unless `--env`
/// narrowed it to one, `with_environment` false; VERSION; TIMESTAMP; STATUS), then OPERATION,
/// then LIVE, a `*` on each environment's live release (its id is in `live`).
pub fn list_table(
    releases: &[&Release],
    live: &[&ReleaseId],
    with_environment: bool,
    fit: Fit,
) -> String {
    if releases.is_empty() {
        return "No releases found\n".to_string();
    }
    let mut header = vec!["RELEASE ID"];
    if with_environment {
        header.push("ENVIRONMENT");
    }
    header.extend(["VERSION", "TIMESTAMP", "STATUS", "OPERATION", "LIVE"]);
    let mut table = TextTable::new(header);
    // Ids, times and the short words after them never wrap: the version and environment do.
    let first_fixed = if with_environment { 3 } else { 2 };
    table.keep_whole(0);
    for c in first_fixed..first_fixed + 4 {
        table.keep_whole(c);
    }
    for r in releases {
        let mut row = vec![Cell::new(r.id.as_str())];
        if with_environment {
            row.push(Cell::new(&r.environment));
        }
        row.extend([
            Cell::new(&r.version),
            Cell::new(&r.timestamp.display_utc()),
            Cell::new(r.overall_status().as_str()),
            Cell::new(r.operation().as_str()),
            Cell::new(if live.contains(&&r.id) { "*" } else { "" }),
        ]);
        table.row(row);
    }
    table.render(fit, "")
}

/// What `releases show` says beside the record itself.
pub struct ShowContext<'a> {
    /// Whether it is its environment's live release.
    pub live: bool,
    /// For a rollback, the release it redeployed, when the history still has it.
    pub rolled_back_to: Option<&'a Release>,
    /// The rollbacks that replaced it while it was current.
    pub rolled_back_by: Vec<&'a Release>,
    /// For an automatic rollback: whether the history still has the failed deploy it answers.
    pub auto_rollback_of_kept: bool,
    /// For a deploy rolled back automatically: whether the history still has that rollback.
    pub auto_rolled_back_by_kept: bool,
    /// Full plugin digests instead of their first 12 hex digits.
    pub verbose: bool,
    pub fit: Fit,
}

impl<'a> ShowContext<'a> {
    /// The context of `r` in `state`.
    pub fn of(r: &Release, state: &'a State, verbose: bool, fit: Fit) -> ShowContext<'a> {
        ShowContext {
            live: state.live(&r.environment).is_some_and(|l| l.id == r.id),
            rolled_back_to: r
                .rollback_target
                .as_ref()
                .and_then(|t| state.get(t.as_str())),
            rolled_back_by: state
                .list_env(&r.environment)
                .into_iter()
                .rev()
                .filter(|x| {
                    x.operation() == Operation::Rollback && x.previous_id.as_ref() == Some(&r.id)
                })
                .collect(),
            auto_rollback_of_kept: r
                .auto_rollback_of
                .as_ref()
                .is_some_and(|id| state.get(id.as_str()).is_some()),
            auto_rolled_back_by_kept: r
                .auto_rolled_back_by
                .as_ref()
                .is_some_and(|id| state.get(id.as_str()).is_some()),
            verbose,
            fit,
        }
    }
}

/// How many hex digits of a plugin digest `releases show` prints without `--verbose`.
const SHORT_DIGEST: usize = 12;

/// The detail view of `releases show`: the Go tool's fields first, then ours, then a table of
/// the phases in pipeline order.
pub fn show_text(r: &Release, context: &ShowContext<'_>) -> String {
    let or_na = |s: &str| {
        if s.trim().is_empty() {
            "N/A".to_string()
        } else {
            escape_controls(s).into_owned()
        }
    };
    let mut fields: Vec<(&str, String)> = vec![
        ("Release ID", r.id.to_string()),
        ("Environment", escape_controls(&r.environment).into_owned()),
        ("Version", escape_controls(&r.version).into_owned()),
        ("Commit SHA", or_na(&r.commit_sha)),
        ("Timestamp", format!("{} UTC", r.timestamp.display_utc())),
        (
            "Previous Release",
            r.previous_id
                .as_ref()
                .map_or_else(|| "N/A".to_string(), |id| id.to_string()),
        ),
        ("Operation", r.operation().as_str().to_string()),
    ];
    if let Some(target) = &r.rollback_target {
        let version = match context.rolled_back_to {
            Some(t) => escape_controls(&t.version).into_owned(),
            None => "no longer in the history".to_string(),
        };
        fields.push(("Rolled Back To", format!("{target} ({version})")));
    }
    if !context.rolled_back_by.is_empty() {
        let by: Vec<String> = context
            .rolled_back_by
            .iter()
            .map(|x| {
                let to = x.rollback_target.as_ref().map_or("?", |t| t.as_str());
                format!("{} (to {to})", x.id)
            })
            .collect();
        fields.push(("Rolled Back By", by.join(", ")));
    }
    let gone = " (no longer in the history)";
    if let Some(failed) = &r.auto_rollback_of {
        let note = if context.auto_rollback_of_kept {
            " (it failed; on_failure = \"rollback\")"
        } else {
            gone
        };
        fields.push(("Automatic Rollback Of", format!("{failed}{note}")));
    }
    if let Some(rollback) = &r.auto_rolled_back_by {
        let note = if context.auto_rolled_back_by_kept {
            ""
        } else {
            gone
        };
        fields.push(("Rolled Back Automatically By", format!("{rollback}{note}")));
    }
    if let Some(who) = &r.created_by {
        fields.push(("Created By", escape_controls(&who.to_string()).into_owned()));
    }
    if let Some(message) = &r.message {
        fields.push(("Message", escape_controls(message).into_owned()));
    }
    let status = r.overall_status().as_str();
    fields.push((
        "Status",
        if context.live {
            format!("{status} (live)")
        } else {
            status.to_string()
        },
    ));
    let label_width = fields.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (label, value) in &fields {
        out.push_str(&format!("{:<label_width$} {value}\n", format!("{label}:")));
    }
    out.push_str("\nPhases:\n");
    out.push_str(&phase_table(r, context).render(context.fit, "  "));
    // A release from before plans (or the Go tool's) shows exactly what it showed before.
    if let Some(plan) = &r.plan {
        out.push_str(&plan_text(r, plan, context.verbose));
    }
    out
}

/// What the release ran: per phase, its plugin and digest, limits, grants and config.
fn plan_text(r: &Release, plan: &Plan, verbose: bool) -> String {
    let short = |digest: &str| -> String {
        if verbose {
            digest.to_string()
        } else {
            digest.chars().take(12).collect()
        }
    };
    // A rollback says whose plan it ran.
    let whose = match (&r.plan_of, r.operation()) {
        (Some(target), _) => format!("; the recorded plan of {target}"),
        (None, Operation::Rollback) => "; the manifest of its day, not the target's plan".into(),
        (None, Operation::Deploy) => String::new(),
    };
    let mut out = format!(
        "\nPlan (manifest {}{whose}):\n",
        short(&plan.manifest_digest)
    );
    let width = plan.phases.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let plugins: Vec<String> = plan
        .phases
        .iter()
        .map(|p| escape_controls(&p.plugin).into_owned())
        .collect();
    let plugin_width = plugins.iter().map(|p| p.chars().count()).max().unwrap_or(0);
    for (phase, plugin) in plan.phases.iter().zip(&plugins) {
        out.push_str(&format!(
            "  {:<width$}  {plugin:<plugin_width$}  {}  timeout {}, memory {}\n",
            phase.name,
            short(&phase.digest),
            escape_controls(&phase.timeout),
            escape_controls(&phase.memory),
        ));
        let indent = " ".repeat(width + 4);
        let grants: Vec<String> = phase
            .grants
            .kinds()
            .iter()
            .filter(|(_, list)| !list.is_empty())
            .map(|(kind, list)| format!("{kind} {}", escape_controls(&list.join(", "))))
            .collect();
        if !grants.is_empty() {
            out.push_str(&format!("{indent}grants: {}\n", grants.join("; ")));
        }
        if !phase.config.is_empty() {
            let config: Vec<String> = phase
                .config
                .iter()
                .map(|(k, v)| format!("{} = {v:?}", escape_controls(k)))
                .collect();
            out.push_str(&format!("{indent}config: {}\n", config.join(", ")));
        }
    }
    out
}

/// One row per phase: name, status, how long it took, which plugin (and which build of it)
/// ran, and what it said: its summary, error, the limit that stopped it, its outputs. Columns
/// no phase has anything in are left out (records of the Go tool have only statuses).
fn phase_table(r: &Release, context: &ShowContext<'_>) -> TextTable {
    let mut table = TextTable::new(vec![
        "PHASE", "STATUS", "DURATION", "PLUGIN", "DIGEST", "DETAIL",
    ]);
    for c in [0, 1, 2, 4] {
        table.keep_whole(c);
    }
    for (phase, status) in r.phase_statuses() {
        let detail = r.phase_details.get(&phase);
        let digest = detail.and_then(|d| d.plugin_digest.as_deref()).map(|d| {
            if context.verbose {
                d
            } else {
                d.get(..SHORT_DIGEST).unwrap_or(d)
            }
        });
        let mut lines: Vec<String> = Vec::new();
        if let Some(d) = detail {
            if let Some(summary) = &d.summary {
                lines.push(format!("summary: {summary}"));
            }
            if let Some(error) = &d.error {
                lines.push(format!("error: {error}"));
            }
            if let Some(limit) = &d.limit {
                lines.push(format!("limit: {limit}"));
            }
            for (key, value) in &d.outputs {
                lines.push(format!("output: {key} = {value}"));
            }
        }
        table.row(vec![
            Cell::new(&phase),
            Cell::new(status.as_str()),
            Cell::new(
                &detail
                    .and_then(|d| d.duration_ms)
                    .map(duration)
                    .unwrap_or_default(),
            ),
            Cell::new(detail.and_then(|d| d.plugin.as_deref()).unwrap_or("")),
            Cell::new(digest.unwrap_or("")),
            Cell::lines(lines.iter().map(String::as_str)),
        ]);
    }
    table.drop_empty_columns(&[0, 1]);
    table
}

/// A phase's duration for people: `850ms`, `1.5s`, `2m05s`, `1h02m`.
fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// `releases list --json`: an array of release objects (the shape of [`show_json`]); `live`
/// holds the ids of the live releases.
pub fn list_json(releases: &[&Release], live: &[&ReleaseId]) -> String {
    let views: Vec<ReleaseView> = releases
        .iter()
        .map(|r| ReleaseView::of(r, live.contains(&&r.id)))
        .collect();
    let mut out = serde_json::to_string_pretty(&views).expect("release views serialize");
    out.push('\n');
    out
}

/// `releases show --json`: one release object; `live` when it is its environment's live
/// release.
pub fn show_json(release: &Release, live: bool) -> String {
    let mut out = serde_json::to_string_pretty(&ReleaseView::of(release, live))
        .expect("release views serialize");
    out.push('\n');
    out
}

/// The JSON shape of a release. Every key is always present (null when unknown), and phases are
/// an array in pipeline order, so scripts need no special cases for original records.
#[derive(Serialize)]
pub(crate) struct ReleaseView<'a> {
    id: &'a str,
    environment: &'a str,
    version: &'a str,
    commit_sha: &'a str,
    /// As recorded (RFC 3339, any offset).
    timestamp: &'a str,
    previous_id: Option<&'a str>,
    operation: &'static str,
    rollback_target: Option<&'a str>,
    status: OverallStatus,
    /// Whether it is its environment's live release (newest fully deployed) when printed.
    live: bool,
    /// Who created it; null in records from before it was recorded.
    created_by: Option<IdentityView<'a>>,
    /// `--message`.
    message: Option<&'a str>,
    /// The failed deploy an automatic rollback answers (`on_failure = "rollback"`).
    auto_rollback_of: Option<&'a str>,
    /// The automatic rollback that answered this failed deploy.
    auto_rolled_back_by: Option<&'a str>,
    phases: Vec<PhaseView<'a>>,
    /// What it ran; null for releases from before plans were recorded.
    plan: Option<PlanView<'a>>,
    /// For a rollback that ran its target's recorded plan: that target.
    plan_of: Option<&'a str>,
}

#[derive(Serialize)]
struct PlanView<'a> {
    manifest_digest: &'a str,
    phases: Vec<PlannedPhaseView<'a>>,
}

#[derive(Serialize)]
struct PlannedPhaseView<'a> {
    name: &'a str,
    plugin: &'a str,
    digest: &'a str,
    config: &'a BTreeMap<String, String>,
    grants: GrantsView<'a>,
    timeout: &'a str,
    memory: &'a str,
}

#[derive(Serialize)]
struct GrantsView<'a> {
    read: &'a [String],
    write: &'a [String],
    env: &'a [String],
    exec: &'a [String],
    exec_unconfined: &'a [String],
    net: &'a [String],
}

impl<'a> PlanView<'a> {
    fn of(plan: &'a Plan) -> Self {
        PlanView {
            manifest_digest: &plan.manifest_digest,
            phases: plan
                .phases
                .iter()
                .map(|p| PlannedPhaseView {
                    name: &p.name,
                    plugin: &p.plugin,
                    digest: &p.digest,
                    config: &p.config,
                    grants: GrantsView {
                        read: &p.grants.read,
                        write: &p.grants.write,
                        env: &p.grants.env,
                        exec: &p.grants.exec,
                        exec_unconfined: &p.grants.exec_unconfined,
                        net: &p.grants.net,
                    },
                    timeout: &p.timeout,
                    memory: &p.memory,
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct IdentityView<'a> {
    user: &'a str,
    host: &'a str,
    ci: Option<CiView<'a>>,
}

#[derive(Serialize)]
struct CiView<'a> {
    system: &'a str,
    url: Option<&'a str>,
    actor: Option<&'a str>,
}

#[derive(Serialize)]
struct PhaseView<'a> {
    name: String,
    status: PhaseStatus,
    summary: Option<&'a str>,
    error: Option<&'a str>,
    limit: Option<&'a str>,
    plugin: Option<&'a str>,
    plugin_digest: Option<&'a str>,
    started_at: Option<&'a str>,
    finished_at: Option<&'a str>,
    duration_ms: Option<u64>,
    outputs: BTreeMap<&'a str, &'a str>,
}

impl<'a> ReleaseView<'a> {
    pub(crate) fn of(r: &'a Release, live: bool) -> Self {
        let phases = r
            .phase_statuses()
            .into_iter()
            .map(|(name, status)| {
                let d = r.phase_details.get(&name);
                PhaseView {
                    status,
                    summary: d.and_then(|d| d.summary.as_deref()),
                    error: d.and_then(|d| d.error.as_deref()),
                    limit: d.and_then(|d| d.limit.as_deref()),
                    plugin: d.and_then(|d| d.plugin.as_deref()),
                    plugin_digest: d.and_then(|d| d.plugin_digest.as_deref()),
                    started_at: d.and_then(|d| d.started_at.as_deref()),
                    finished_at: d.and_then(|d| d.finished_at.as_deref()),
                    duration_ms: d.and_then(|d| d.duration_ms),
                    outputs: d
                        .map(|d| {
                            d.outputs
                                .iter()
                                .map(|(k, v)| (k.as_str(), v.as_str()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    name,
                }
            })
            .collect();
        ReleaseView {
            id: r.id.as_str(),
            environment: &r.environment,
            version: &r.version,
            commit_sha: &r.commit_sha,
            timestamp: r.timestamp.as_str(),
            previous_id: r.previous_id.as_ref().map(|id| id.as_str()),
            operation: r.operation().as_str(),
            rollback_target: r.rollback_target.as_ref().map(|id| id.as_str()),
            status: r.overall_status(),
            live,
            created_by: r.created_by.as_ref().map(|who| IdentityView {
                user: &who.user,
                host: &who.host,
                ci: who.ci.as_ref().map(|ci| CiView {
                    system: &ci.system,
                    url: ci.url.as_deref(),
                    actor: ci.actor.as_deref(),
                }),
            }),
            message: r.message.as_deref(),
            auto_rollback_of: r.auto_rollback_of.as_ref().map(|id| id.as_str()),
            auto_rolled_back_by: r.auto_rolled_back_by.as_ref().map(|id| id.as_str()),
            phases,
            plan: r.plan.as_ref().map(PlanView::of),
            plan_of: r.plan_of.as_ref().map(|id| id.as_str()),
        }
    }
}

/// What `releases prune` says: the releases it removed (or would remove, `dry_run`), as a
/// `releases list` table, then the older releases it kept and why.
pub fn prune_text(retention: &Retention, removed: &[Release], dry_run: bool) -> String {
    let env = escape_controls(&retention.environment);
    let keep = retention.keep;
    let mut out = String::new();
    if removed.is_empty() {
        out.push_str(&format!(
            "Nothing to prune in {env}: retention keeps every release (the newest {keep} and \
             those listed below).\n"
        ));
    } else {
        let verb = if dry_run { "Would remove" } else { "Removed" };
        let n = removed.len();
        let noun = if n == 1 { "release" } else { "releases" };
        out.push_str(&format!(
            "{verb} {n} {noun} of {env}, keeping the newest {keep}:\n"
        ));
        let refs: Vec<&Release> = removed.iter().collect();
        // Retention never removes the live release.
        out.push_str(&list_table(&refs, &[], false, Fit::stdout()));
    }
    if !retention.kept_beyond.is_empty() {
        out.push_str(&format!("Kept although older than the newest {keep}:\n"));
        for (id, why) in &retention.kept_beyond {
            out.push_str(&format!("  {id}  {why}\n"));
        }
    }
    if dry_run {
        out.push_str("Dry run: nothing was changed.\n");
    }
    out
}

/// `releases prune --json`: one object.
pub fn prune_json(retention: &Retention, dry_run: bool) -> String {
    #[derive(Serialize)]
    struct Kept<'a> {
        id: &'a str,
        reason: String,
    }
    #[derive(Serialize)]
    struct Pruned<'a> {
        environment: &'a str,
        keep: usize,
        dry_run: bool,
        removed: Vec<&'a str>,
        kept_beyond: Vec<Kept<'a>>,
    }
    let value = Pruned {
        environment: &retention.environment,
        keep: retention.keep,
        dry_run,
        removed: retention.removed.iter().map(|id| id.as_str()).collect(),
        kept_beyond: retention
            .kept_beyond
            .iter()
            .map(|(id, why)| Kept {
                id: id.as_str(),
                reason: why.to_string(),
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&value).expect("plain data serializes");
    text.push('\n');
    text
}
