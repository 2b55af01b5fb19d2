//! Rollback target resolution and validation, with the original tool's messages word for word.

use crate::error::input_error;
use crate::state::{Release, State};

/// Which earlier release to go back to (exactly one of the CLI's three flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSelector {
    /// `--to-previous`: the current release's `previous_id`.
    Previous,
    /// `--to-release <id>`.
    Release(String),
    /// `--to-version <v>`: the environment's newest release with that version.
    Version(String),
}

impl TargetSelector {
    /// Build the selector from the three flags, refusing none or several.
    pub fn from_flags(
        to_previous: bool,
        to_release: Option<String>,
        to_version: Option<String>,
    ) -> anyhow::Result<TargetSelector> {
        let given = usize::from(to_previous)
            + usize::from(to_release.is_some())
            + usize::from(to_version.is_some());
        match given {
            0 => Err(input_error(
                "rollback target required; use --to-previous, --to-release, or --to-version",
            )),
            1 => Ok(if to_previous {
                TargetSelector::Previous
            } else if let Some(id) = to_release {
                TargetSelector::Release(id.trim().to_string())
            } else {
                TargetSelector::Version(to_version.unwrap_or_default().trim().to_string())
            }),
            _ => Err(input_error(
                "only one rollback target flag may be specified",
            )),
        }
    }
}

/// Resolve and validate the target in `state` for environment `env`.
pub fn resolve_target<'s>(
    state: &'s State,
    env: &str,
    selector: &TargetSelector,
) -> anyhow::Result<&'s Release> {
    let current = state.current(env);
    let target = match selector {
        TargetSelector::Previous => {
            let current = current.ok_or_else(|| {
                input_error(format!("no current release found for environment {env:?}"))
            })?;
            let prev = current
                .previous_id
                .as_ref()
                .ok_or_else(|| input_error("no previous release to rollback to"))?;
            state.get(prev.as_str()).ok_or_else(|| {
                input_error(format!("rollback target not found: {:?}", prev.as_str()))
            })?
        }
        TargetSelector::Release(id) => state
            .get(id)
            .ok_or_else(|| input_error(format!("rollback target not found: {id:?}")))?,
        TargetSelector::Version(v) => state
            .list_env(env)
            .into_iter()
            .find(|r| r.version == *v)
            .ok_or_else(|| {
                input_error(format!(
                    "no release found with version {v:?} in environment {env:?}"
                ))
            })?,
    };
    if target.environment != env {
        return Err(input_error(format!(
            "release {:?} belongs to environment {:?}, not {:?}",
            target.id.as_str(),
            target.environment,
            env
        )));
    }
    if current.is_some_and(|c| c.id == target.id) {
        return Err(input_error(format!(
            "cannot rollback to current release {:?}",
            target.id.as_str()
        )));
    }
    let unfinished = target.unfinished_phases();
    if !unfinished.is_empty() {
        let phases = target
            .phase_statuses()
            .into_iter()
            .map(|(p, s)| format!("{p}={s}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(input_error(format!(
            "rollback target {:?} is not fully deployed (phases: {phases})\n{}",
            target.id.as_str(),
            way_out(state, env, current)
        )));
    }
    Ok(target)
}

/// What to do instead of rolling back onto a release that did not finish: the newest fully
/// deployed release of `env` other than the current one, and the command that rolls back to it.
fn way_out(state: &State, env: &str, current: Option<&Release>) -> String {
    let candidate = state
        .list_env(env)
        .into_iter()
        .find(|r| current.is_none_or(|c| c.id != r.id) && r.unfinished_phases().is_empty());
    match candidate {
        Some(r) => format!(
            "The last fully deployed release of {env} is {} ({}): stagecraft rollback --env \
             {env} --to-release {}",
            r.id.as_str(),
            r.version,
            r.id.as_str()
        ),
        None => format!("{env} has no other fully deployed release to roll back to."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{PhaseStatus, ReleaseId, Timestamp, CANONICAL_PHASES};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn rel(
        id: &str,
        env: &str,
        version: &str,
        prev: Option<&str>,
        status: PhaseStatus,
    ) -> Arc<Release> {
        Arc::new(Release {
            id: ReleaseId::parse(id).unwrap(),
            environment: env.into(),
            version: version.into(),
            commit_sha: String::new(),
            timestamp: Timestamp::parse(&format!(
                "2026-11-25T06:00:{}.{}Z",
                &id[17..19],
                &id[19..22]
            ))
            .unwrap(),
            phases: CANONICAL_PHASES
                .iter()
                .map(|p| (p.to_string(), status))
                .collect(),
            previous_id: prev.map(|p| ReleaseId::parse(p).unwrap()),
            operation: None,
            rollback_target: None,
            pipeline: Vec::new(),
            phase_details: BTreeMap::new(),
            created_by: None,
            auto_rollback_of: None,
            auto_rolled_back_by: None,
            plan: None,
            plan_of: None,
            message: None,
            extra: Default::default(),
        })
    }

    const A: &str = "rel-20261125-060001000";
    const B: &str = "rel-20261125-060002000";
    const C: &str = "rel-20261125-060003000";
    const S: &str = "rel-20261125-060004000";

    fn state() -> State {
        let mut s = State::default();
        s.releases
            .push(rel(A, "prod", "v1", None, PhaseStatus::Completed));
        s.releases
            .push(rel(B, "prod", "v2", Some(A), PhaseStatus::Completed));
        s.releases
            .push(rel(C, "prod", "v3", Some(B), PhaseStatus::Completed));
        s.releases
            .push(rel(S, "staging", "v9", None, PhaseStatus::Completed));
        s
    }

    fn err(state: &State, env: &str, sel: TargetSelector) -> String {
        resolve_target(state, env, &sel).unwrap_err().to_string()
    }

    #[test]
    fn flags_must_name_exactly_one_target() {
        let none = TargetSelector::from_flags(false, None, None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            none,
            "rollback target required; use --to-previous, --to-release, or --to-version"
        );
        let two = TargetSelector::from_flags(true, Some("x".into()), None)
            .unwrap_err()
            .to_string();
        assert_eq!(two, "only one rollback target flag may be specified");
    }

    #[test]
    fn resolves_each_selector() {
        let s = state();
        assert_eq!(
            resolve_target(&s, "prod", &TargetSelector::Previous)
                .unwrap()
                .id
                .as_str(),
            B
        );
        assert_eq!(
            resolve_target(&s, "prod", &TargetSelector::Release(A.into()))
                .unwrap()
                .id
                .as_str(),
            A
        );
        assert_eq!(
            resolve_target(&s, "prod", &TargetSelector::Version("v1".into()))
                .unwrap()
                .id
                .as_str(),
            A
        );
    }

    #[test]
    fn every_refusal_uses_the_original_words() {
        let s = state();
        assert_eq!(
            err(&s, "dev", TargetSelector::Previous),
            "no current release found for environment \"dev\""
        );
        assert_eq!(
            err(&s, "staging", TargetSelector::Previous),
            "no previous release to rollback to"
        );
        assert_eq!(
            err(
                &s,
                "prod",
                TargetSelector::Release("rel-20990101-000000000".into())
            ),
            "rollback target not found: \"rel-20990101-000000000\""
        );
        assert_eq!(
            err(&s, "prod", TargetSelector::Release(C.into())),
            format!("cannot rollback to current release \"{C}\"")
        );
        assert_eq!(
            err(&s, "prod", TargetSelector::Release(S.into())),
            format!("release \"{S}\" belongs to environment \"staging\", not \"prod\"")
        );
        assert_eq!(
            err(&s, "prod", TargetSelector::Version("v7".into())),
            "no release found with version \"v7\" in environment \"prod\""
        );
    }

    #[test]
    fn a_failed_target_is_refused_naming_each_phase_status() {
        let mut s = state();
        let b = s.get_mut(B).unwrap();
        b.phases.insert("rollout".into(), PhaseStatus::Failed);
        b.phases.insert("migrate_post".into(), PhaseStatus::Skipped);
        assert_eq!(
            err(&s, "prod", TargetSelector::Previous),
            format!(
                "rollback target \"{B}\" is not fully deployed (phases: build=completed, \
                 push=completed, migrate_pre=completed, rollout=failed, migrate_post=skipped, \
                 finalize=completed)\nThe last fully deployed release of prod is {A} (v1): \
                 stagecraft rollback --env prod --to-release {A}"
            )
        );
        // With nothing else fully deployed, it says so.
        s.get_mut(A)
            .unwrap()
            .phases
            .insert("build".into(), PhaseStatus::Failed);
        assert!(
            err(&s, "prod", TargetSelector::Previous)
                .ends_with("\nprod has no other fully deployed release to roll back to."),
            "{}",
            err(&s, "prod", TargetSelector::Previous)
        );
    }
}
