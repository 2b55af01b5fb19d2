//! How `releases list` and `releases show` print: an aligned table and a detail view for people,
//! and a stable snake_case JSON shape for machines (spec/state.md, "releases output"). State may
//! hold anything a plugin or another tool wrote, so every value a person sees is escaped
//! ([`escape_controls`]); JSON is escaped by serde_json.

use std::collections::BTreeMap;

use serde::Serialize;

use super::terminal::escape_controls;

use crate::state::{OverallStatus, PhaseStatus, Release, Retention};

/// The table of `releases list`; `with_environment` is false when `--env` narrowed it to one.
pub fn list_table(releases: &[&Release], with_environment: bool) -> String {
    if releases.is_empty() {
        return "No releases found\n".to_string();
    }
    let mut header = vec!["RELEASE ID"];
    if with_environment {
        header.push("ENVIRONMENT");
    }
    header.extend(["VERSION", "TIMESTAMP", "STATUS"]);
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in releases {
        let mut row = vec![r.id.to_string()];
        if with_environment {
            row.push(escape_controls(&r.environment).into_owned());
        }
        row.push(escape_controls(&r.version).into_owned());
        row.push(r.timestamp.display_utc());
        row.push(r.overall_status().as_str().to_string());
        rows.push(row);
    }
    table(&rows)
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                let pad = widths[c] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// The detail view of `releases show`.
pub fn show_text(r: &Release) -> String {
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
        fields.push(("Rollback Target", target.to_string()));
    }
    if let Some(who) = &r.created_by {
        fields.push(("Created By", escape_controls(&who.to_string()).into_owned()));
    }
    if let Some(message) = &r.message {
        fields.push(("Message", escape_controls(message).into_owned()));
    }
    fields.push(("Status", r.overall_status().as_str().to_string()));
    let label_width = fields.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (label, value) in &fields {
        out.push_str(&format!("{:<label_width$} {value}\n", format!("{label}:")));
    }
    out.push_str("\nPhases:\n");
    let phases = r.phase_statuses();
    let name_width = phases
        .iter()
        .map(|(p, _)| escape_controls(p).chars().count())
        .max()
        .unwrap_or(0);
    for (phase, status) in &phases {
        let shown = escape_controls(phase);
        out.push_str(&format!("  {shown:<name_width$}  {status}\n"));
        if let Some(detail) = r.phase_details.get(phase) {
            if let Some(summary) = &detail.summary {
                let summary = escape_controls(summary);
                out.push_str(&format!("  {:name_width$}    summary: {summary}\n", ""));
            }
            if let Some(error) = &detail.error {
                let error = escape_controls(error);
                out.push_str(&format!("  {:name_width$}    error: {error}\n", ""));
            }
        }
    }
    out
}

/// `releases list --json`: an array of release objects (the shape of [`show_json`]).
pub fn list_json(releases: &[&Release]) -> String {
    let views: Vec<ReleaseView> = releases.iter().map(|r| ReleaseView::of(r)).collect();
    let mut out = serde_json::to_string_pretty(&views).expect("release views serialize");
    out.push('\n');
    out
}

/// `releases show --json`: one release object.
pub fn show_json(release: &Release) -> String {
    let mut out =
        serde_json::to_string_pretty(&ReleaseView::of(release)).expect("release views serialize");
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
    /// Who created it; null in records from before it was recorded.
    created_by: Option<IdentityView<'a>>,
    /// `--message`.
    message: Option<&'a str>,
    phases: Vec<PhaseView<'a>>,
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
    pub(crate) fn of(r: &'a Release) -> Self {
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
            phases,
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
        out.push_str(&list_table(&refs, false));
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
