//! How `stagecraft status` prints: per environment, what is live, what is under way, who holds
//! the lease, and the last failure; for people, and as JSON (spec/cli.md, "status"). Every value
//! read from the state is escaped ([`escape_controls`]); JSON is escaped by serde_json.

use serde::Serialize;

use super::releases::ReleaseView;
use super::terminal::escape_controls;
use crate::state::{EnvironmentSummary, LeaseHolder, LeaseStatus, PhaseStatus, Release};

/// One environment's status: its name, what the history says, and its lease.
pub struct EnvironmentStatus<'a> {
    pub name: &'a str,
    pub summary: EnvironmentSummary<'a>,
    pub lease: LeaseStatus,
}

/// The text view: a block per environment, a blank line between blocks.
pub fn text(environments: &[EnvironmentStatus<'_>]) -> String {
    let blocks: Vec<String> = environments.iter().map(block).collect();
    blocks.join("\n")
}

fn block(env: &EnvironmentStatus<'_>) -> String {
    let s = &env.summary;
    let mut lines: Vec<(&str, String)> = Vec::new();
    if s.current.is_none() {
        lines.push(("live", "none: no releases yet".to_string()));
    } else {
        lines.push((
            "live",
            match s.live {
                Some(r) => format!(
                    "{}, deployed {} UTC{}",
                    headline(r),
                    r.timestamp.display_utc(),
                    who_and_why(r)
                ),
                None => "none: no release has completed every phase".to_string(),
            },
        ));
    }
    for r in &s.unfinished {
        // With the lease free, nothing is running it: its process is gone.
        let orphaned = if env.lease == LeaseStatus::Free {
            format!(
                "; interrupted (no deploy holds the lease): the next deploy or rollback of {} \
                 marks it failed",
                escape_controls(env.name)
            )
        } else {
            String::new()
        };
        lines.push((
            "in progress",
            format!(
                "{}, {}{}{orphaned}",
                headline(r),
                progress(r),
                who_and_why(r)
            ),
        ));
    }
    lines.push(("lease", lease(&env.lease)));
    if let Some(r) = s.last_failure {
        let (phase, error) = failure(r);
        let error = error.map_or(String::new(), |e| format!(": {}", escape_controls(e)));
        lines.push((
            "last failure",
            format!(
                "{}, failed in {}{error} ({} UTC)",
                headline(r),
                escape_controls(&phase),
                r.timestamp.display_utc()
            ),
        ));
    }
    // One width for every block, so that environments line up under each other.
    const WIDTH: usize = "last failure:".len();
    let mut out = format!("{}\n", escape_controls(env.name));
    for (label, value) in lines {
        out.push_str(&format!("  {:<WIDTH$}  {value}\n", format!("{label}:")));
    }
    out
}

/// `rel-… v1.2.3` (and `rollback of rel-…` for a rollback).
fn headline(r: &Release) -> String {
    let mut out = format!("{}  {}", r.id, escape_controls(&r.version));
    if let Some(target) = &r.rollback_target {
        out.push_str(&format!(" (rollback to {target})"));
    }
    out
}

/// ` by alice on build-7: "why"`, as far as the release recorded them.
fn who_and_why(r: &Release) -> String {
    let mut out = String::new();
    if let Some(who) = &r.created_by {
        out.push_str(&format!(" by {}", escape_controls(&who.to_string())));
    }
    if let Some(message) = &r.message {
        out.push_str(&format!(": \"{}\"", escape_controls(message)));
    }
    out
}

/// The phase an unfinished release is at: the one running, else the next pending.
fn progress(r: &Release) -> String {
    let phases = r.phase_statuses();
    let at = phases
        .iter()
        .find(|(_, s)| *s == PhaseStatus::Running)
        .or_else(|| phases.iter().find(|(_, s)| *s == PhaseStatus::Pending));
    match at {
        Some((phase, status)) => format!("{} {status}", escape_controls(phase)),
        None => "unfinished".to_string(),
    }
}

/// The first failed phase of `r` and its recorded error.
fn failure(r: &Release) -> (String, Option<&str>) {
    let phase = r
        .phase_statuses()
        .into_iter()
        .find(|(_, s)| *s == PhaseStatus::Failed)
        .map(|(p, _)| p)
        .unwrap_or_default();
    let error = r.phase_details.get(&phase).and_then(|d| d.error.as_deref());
    (phase, error)
}

fn lease(status: &LeaseStatus) -> String {
    match status {
        LeaseStatus::Free => "free".to_string(),
        LeaseStatus::Held(None) => "held (the holder has not recorded itself yet)".to_string(),
        LeaseStatus::Held(Some(h)) => format!(
            "held by pid {} on {} (user {}) since {}: {}",
            h.pid,
            escape_controls(&h.host),
            escape_controls(&h.user),
            escape_controls(&h.since),
            escape_controls(&h.command)
        ),
    }
}

/// `status --json`: `{"environments": [...]}`, every key always present (null when none).
pub fn json(environments: &[EnvironmentStatus<'_>]) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        environments: Vec<EnvView<'a>>,
    }
    #[derive(Serialize)]
    struct EnvView<'a> {
        name: &'a str,
        live: Option<ReleaseView<'a>>,
        current: Option<ReleaseView<'a>>,
        unfinished: Vec<ReleaseView<'a>>,
        lease: LeaseView<'a>,
        last_failure: Option<FailureView<'a>>,
    }
    #[derive(Serialize)]
    struct LeaseView<'a> {
        held: bool,
        holder: Option<HolderView<'a>>,
    }
    /// The lease file's holder without its bookkeeping (`unrecorded`), every key present.
    #[derive(Serialize)]
    struct HolderView<'a> {
        pid: u32,
        host: &'a str,
        user: &'a str,
        command: &'a str,
        since: &'a str,
    }
    #[derive(Serialize)]
    struct FailureView<'a> {
        phase: String,
        error: Option<&'a str>,
        release: ReleaseView<'a>,
    }
    let out = Out {
        environments: environments
            .iter()
            .map(|env| {
                let s = &env.summary;
                EnvView {
                    name: env.name,
                    live: s.live.map(|r| ReleaseView::of(r, true)),
                    current: s
                        .current
                        .map(|r| ReleaseView::of(r, s.live.is_some_and(|l| l.id == r.id))),
                    // A release with a phase pending or running is not fully deployed.
                    unfinished: s
                        .unfinished
                        .iter()
                        .map(|r| ReleaseView::of(r, false))
                        .collect(),
                    lease: match &env.lease {
                        LeaseStatus::Free => LeaseView {
                            held: false,
                            holder: None,
                        },
                        LeaseStatus::Held(holder) => LeaseView {
                            held: true,
                            holder: holder.as_ref().map(|h: &LeaseHolder| HolderView {
                                pid: h.pid,
                                host: &h.host,
                                user: &h.user,
                                command: &h.command,
                                since: &h.since,
                            }),
                        },
                    },
                    last_failure: s.last_failure.map(|r| {
                        let (phase, error) = failure(r);
                        FailureView {
                            phase,
                            error,
                            release: ReleaseView::of(r, false),
                        }
                    }),
                }
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&out).expect("status serializes");
    text.push('\n');
    text
}
