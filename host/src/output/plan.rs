//! What `stagecraft plan` (and a dry run) says a deploy would change: from the environment's
//! live release's recorded plan to the manifest's, phase by phase.

use serde::Serialize;

use super::terminal::escape_controls;
use crate::pipeline::plan::PhaseChange;
use crate::state::Release;

/// The live release a plan is compared with: `None` when the environment has none.
pub struct Baseline<'a> {
    pub live: Option<&'a Release>,
}

impl Baseline<'_> {
    /// The first line: what is live, and what would replace it.
    fn headline(&self, environment: &str, version: &str) -> String {
        let env = escape_controls(environment);
        let version = escape_controls(version);
        match self.live {
            None => format!(
                "Plan for {env}: no live release -> {version} (a first deploy: every phase and \
                 grant is new, and needs no consent)"
            ),
            Some(r) if r.plan.is_none() => format!(
                "Plan for {env}: {} ({}, live; recorded before plans, so everything is shown as \
                 new) -> {version}",
                escape_controls(&r.version),
                r.id
            ),
            Some(r) => format!(
                "Plan for {env}: {} ({}, live) -> {version}",
                escape_controls(&r.version),
                r.id
            ),
        }
    }

    /// Whether widening grants needs consent: only against a live release's recorded plan.
    pub fn needs_consent(&self) -> bool {
        self.live.is_some_and(|r| r.plan.is_some())
    }
}

fn short(digest: &str) -> String {
    digest.chars().take(12).collect()
}

/// The text view.
pub fn text(
    environment: &str,
    version: &str,
    baseline: &Baseline<'_>,
    changes: &[PhaseChange],
) -> String {
    let mut out = baseline.headline(environment, version);
    out.push('\n');
    let width = changes
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        .max(12);
    let indent = " ".repeat(width + 3 + 9);
    for c in changes {
        let plugin = match (
            &c.plugin_before,
            &c.digest_before,
            &c.plugin_after,
            &c.digest_after,
        ) {
            (Some(pb), Some(db), Some(pa), Some(da)) if pb == pa && db == da => {
                format!("{} {}", escape_controls(pa), short(da))
            }
            (Some(pb), Some(db), Some(pa), Some(da)) => format!(
                "{} {} -> {} {}",
                escape_controls(pb),
                short(db),
                escape_controls(pa),
                short(da)
            ),
            (_, _, Some(pa), Some(da)) => format!("{} {}", escape_controls(pa), short(da)),
            (Some(pb), Some(db), _, _) => format!("{} {}", escape_controls(pb), short(db)),
            _ => String::new(),
        };
        out.push_str(&format!("  {:<width$} {:<8} {plugin}\n", c.name, c.change));
        for (key, before, after) in &c.config {
            let show = |v: &Option<String>| {
                v.as_ref()
                    .map_or("(unset)".to_string(), |v| format!("{v:?}"))
            };
            out.push_str(&format!(
                "{indent}config {}: {} -> {}\n",
                escape_controls(key),
                show(before),
                show(after)
            ));
        }
        for (label, grants) in [
            ("grants added", &c.grants_added),
            ("grants removed", &c.grants_removed),
        ] {
            if grants.is_empty() {
                continue;
            }
            let kinds: Vec<String> = grants
                .iter()
                .map(|(kind, entries)| format!("{kind} {}", escape_controls(&entries.join(", "))))
                .collect();
            out.push_str(&format!("{indent}{label}: {}\n", kinds.join("; ")));
        }
        if c.version_before.is_some() || c.version_after.is_some() {
            let show = |v: &Option<crate::pipeline::plan::PluginVersion>| match v {
                Some(v) => format!(
                    "{} {}",
                    escape_controls(&v.name),
                    escape_controls(&v.version)
                ),
                None => "(unknown)".to_string(),
            };
            out.push_str(&format!(
                "{indent}describe(): {} -> {}\n",
                show(&c.version_before),
                show(&c.version_after)
            ));
        }
        for (limit, before, after) in &c.limits {
            out.push_str(&format!(
                "{indent}{limit} {} -> {}\n",
                escape_controls(before),
                escape_controls(after)
            ));
        }
    }
    let widening: Vec<&str> = changes
        .iter()
        .filter(|c| c.widens())
        .map(|c| c.name.as_str())
        .collect();
    if baseline.needs_consent() && !widening.is_empty() {
        out.push_str(&format!(
            "Grants widen in: {}. A deploy asks first: pass --approve-grants (or confirm on a \
             terminal), or set [deploy] grant_changes = \"allow\".\n",
            widening.join(", ")
        ));
    }
    out
}

#[derive(Serialize)]
struct LiveView<'a> {
    id: &'a str,
    version: &'a str,
    plan_recorded: bool,
}

#[derive(Serialize)]
struct PlanChangesView<'a> {
    environment: &'a str,
    version: &'a str,
    live: Option<LiveView<'a>>,
    phases: Vec<ChangeView<'a>>,
    widens: Vec<&'a str>,
    needs_consent: bool,
}

#[derive(Serialize)]
struct ChangeView<'a> {
    name: &'a str,
    change: &'static str,
    plugin_before: Option<&'a str>,
    digest_before: Option<&'a str>,
    plugin_after: Option<&'a str>,
    digest_after: Option<&'a str>,
    config: Vec<ConfigChangeView<'a>>,
    grants_added: &'a std::collections::BTreeMap<&'static str, Vec<String>>,
    grants_removed: &'a std::collections::BTreeMap<&'static str, Vec<String>>,
    limits: Vec<LimitChangeView<'a>>,
    version_before: Option<&'a crate::pipeline::plan::PluginVersion>,
    version_after: Option<&'a crate::pipeline::plan::PluginVersion>,
}

#[derive(Serialize)]
struct ConfigChangeView<'a> {
    key: &'a str,
    before: Option<&'a str>,
    after: Option<&'a str>,
}

#[derive(Serialize)]
struct LimitChangeView<'a> {
    limit: &'static str,
    before: &'a str,
    after: &'a str,
}

/// The JSON view (spec/cli.md, `stagecraft plan`).
pub fn json_value(
    environment: &str,
    version: &str,
    baseline: &Baseline<'_>,
    changes: &[PhaseChange],
) -> serde_json::Value {
    let widens: Vec<&str> = changes
        .iter()
        .filter(|c| c.widens())
        .map(|c| c.name.as_str())
        .collect();
    let view = PlanChangesView {
        environment,
        version,
        live: baseline.live.map(|r| LiveView {
            id: r.id.as_str(),
            version: &r.version,
            plan_recorded: r.plan.is_some(),
        }),
        needs_consent: baseline.needs_consent() && !widens.is_empty(),
        widens,
        phases: changes
            .iter()
            .map(|c| ChangeView {
                name: &c.name,
                change: c.change,
                plugin_before: c.plugin_before.as_deref(),
                digest_before: c.digest_before.as_deref(),
                plugin_after: c.plugin_after.as_deref(),
                digest_after: c.digest_after.as_deref(),
                config: c
                    .config
                    .iter()
                    .map(|(k, b, a)| ConfigChangeView {
                        key: k,
                        before: b.as_deref(),
                        after: a.as_deref(),
                    })
                    .collect(),
                grants_added: &c.grants_added,
                grants_removed: &c.grants_removed,
                limits: c
                    .limits
                    .iter()
                    .map(|(l, b, a)| LimitChangeView {
                        limit: l,
                        before: b,
                        after: a,
                    })
                    .collect(),
                version_before: c.version_before.as_ref(),
                version_after: c.version_after.as_ref(),
            })
            .collect(),
    };
    serde_json::to_value(view).expect("plan views serialize")
}
