//! Consent before a deploy or rollback widens a phase's grants since the environment's live
//! release: the one check both commands make under the lease (spec/cli.md, "Grant consent").

use crate::cli::release;
use crate::error::input_error;
use crate::output::terminal::escape_controls;
use crate::state::Operation;

/// A release whose plan widens a phase's grants since the environment's live release (its
/// recorded plan) goes ahead only with consent: a yes on a terminal, else refused (exit 1) with
/// the widening and how to approve it. Checked under the lease, on fresh state, before the
/// release is created. A first deploy, or one over a live release from before plans, needs none.
/// Rollbacks are asked too, about the plan they run (`target`: a recorded plan, or today's
/// manifest): the plan they record becomes the live one, so a widening not asked about there
/// would never be asked about again. `allow` is today's manifest's `[deploy] grant_changes =
/// "allow"`, whatever plan runs: a rollback to a plan recorded under `allow` does not bring the
/// setting back.
pub fn consent_to_widened_grants(
    store: &dyn crate::state::StateStore,
    target: &release::Target,
    allow: bool,
    operation: Operation,
    version: &str,
    json: bool,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let state = store.read()?;
    let live = state.live(&target.environment);
    let Some(live_plan) = live.and_then(|r| r.plan.as_ref()) else {
        return Ok(());
    };
    // Only grants are compared: no component is read again.
    let new = crate::pipeline::plan::grants_plan_of_manifest(&target.manifest);
    let changes = crate::pipeline::plan::diff(Some(live_plan), &new);
    let widened: Vec<String> = changes
        .iter()
        .filter(|c| c.widens())
        .map(|c| {
            let added: Vec<String> = c
                .grants_added
                .iter()
                .map(|(kind, entries)| format!("{kind} {}", entries.join(", ")))
                .collect();
            format!("  {}: {}", c.name, escape_controls(&added.join("; ")))
        })
        .collect();
    if widened.is_empty() {
        return Ok(());
    }
    let live = live.expect("a live plan has a live release");
    // `allow` counts once a release made with it is live: the change that turns it on is asked
    // about like any other widening.
    let allow_note = match (allow, live_plan.grant_changes_allowed) {
        (true, true) => return Ok(()),
        (true, false) => {
            "\n[deploy] grant_changes = \"allow\" is new in this manifest: it applies once a release \
             made with it is live, not to the change that turns it on"
        }
        (false, _) => "",
    };
    let (noun, verb) = match operation {
        Operation::Deploy => ("deploy", "Deploy"),
        Operation::Rollback => ("rollback", "Roll back"),
    };
    let what = format!(
        "the grants of this {noun} widen since the live release {} ({}):\n{}{allow_note}",
        live.id,
        escape_controls(&live.version),
        widened.join("\n")
    );
    let interactive = !json && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if interactive {
        crate::output::progress::eprint_above(&format!("{what}\n{verb} with these grants? [y/N] "));
        let mut answer = String::new();
        // EOF or an unreadable stdin is no answer, so no consent.
        let _ = std::io::stdin().read_line(&mut answer);
        if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            return Ok(());
        }
    }
    Err(input_error(format!(
        "{noun} refused: {what}\nreview them (stagecraft plan --env {} --version {}), then pass \
         --approve-grants, or set [deploy] grant_changes = \"allow\" if manifests are reviewed \
         elsewhere",
        escape_controls(&target.environment),
        escape_controls(version)
    )))
}
