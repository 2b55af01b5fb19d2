//! Pure operations on a [`State`]: queries, id allocation, recovery and validation. Every backend
//! uses these, so the rules live in one place and are unit-tested without I/O.

use std::collections::HashSet;
use std::sync::Arc;

use time::OffsetDateTime;

use super::model::*;

impl State {
    /// The release with `id`, in any environment.
    pub fn get(&self, id: &str) -> Option<&Release> {
        self.releases
            .iter()
            .map(|r| &**r)
            .find(|r| r.id.as_str() == id)
    }

    /// The release with `id`, to change: copied first if anything else shares it (see
    /// [`State::releases`]).
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Release> {
        self.releases
            .iter_mut()
            .find(|r| r.id.as_str() == id)
            .map(Arc::make_mut)
    }

    /// `env`'s releases, newest first: timestamp descending, then id descending.
    pub fn list_env(&self, env: &str) -> Vec<&Release> {
        let mut out: Vec<&Release> = self
            .releases
            .iter()
            .map(|r| &**r)
            .filter(|r| r.environment == env)
            .collect();
        out.sort_by(|a, b| newest_first(a, b));
        out
    }

    /// Every release, grouped by environment (ascending), newest first within each.
    pub fn list_all(&self) -> Vec<&Release> {
        let mut out: Vec<&Release> = self.releases.iter().map(|r| &**r).collect();
        out.sort_by(|a, b| {
            a.environment
                .cmp(&b.environment)
                .then_with(|| newest_first(a, b))
        });
        out
    }

    /// `env`'s current release: its newest by timestamp, ties broken by the larger id.
    pub fn current(&self, env: &str) -> Option<&Release> {
        self.list_env(env).into_iter().next()
    }

    /// Append a new release of `version` to `env`, created at `now`, with each of `phases`
    /// pending: a fresh id (see [`State::allocate_release_id`]) and the environment's current
    /// release as its previous one. The caller fills in what only it knows (operation, rollback
    /// target, pipeline) through the returned reference.
    pub fn push_release(
        &mut self,
        env: &str,
        version: &str,
        commit_sha: &str,
        phases: &[String],
        now: OffsetDateTime,
    ) -> &mut Release {
        let id = self.allocate_release_id(now);
        let previous_id = self.current(env).map(|r| r.id.clone());
        self.releases.push(Arc::new(Release {
            id,
            environment: env.to_string(),
            version: version.to_string(),
            commit_sha: commit_sha.to_string(),
            timestamp: Timestamp::from_datetime(now),
            phases: phases
                .iter()
                .map(|p| (p.clone(), PhaseStatus::Pending))
                .collect(),
            previous_id,
            operation: None,
            rollback_target: None,
            pipeline: Vec::new(),
            phase_details: Default::default(),
            extra: Default::default(),
        }));
        Arc::make_mut(self.releases.last_mut().expect("just pushed"))
    }

    /// A new release id for a release created at `now`: the id of `now`, or, if that is not
    /// greater than every id ever issued, the next millisecond after the highest. Ids therefore
    /// stay unique and chronological even when many releases start in the same millisecond, and
    /// are never reused. Records the id as issued.
    pub fn allocate_release_id(&mut self, now: OffsetDateTime) -> ReleaseId {
        let mut highest = self.last_release_id.clone();
        for r in &self.releases {
            if highest.as_ref().is_none_or(|h| r.id > *h) {
                highest = Some(r.id.clone());
            }
        }
        let mut candidate = ReleaseId::at(now);
        if let Some(h) = highest {
            if candidate <= h {
                candidate = h.next();
            }
        }
        self.last_release_id = Some(candidate.clone());
        candidate
    }

    /// Marks `env`'s releases left `running` (by a process that no longer holds the lease) as
    /// failed: the running phase `failed` with "interrupted: the process running <phase>
    /// exited", every later pending/running phase `skipped`. Returns the ids it changed. Only
    /// call this while holding `env`'s lease.
    pub fn recover_interrupted(&mut self, env: &str) -> Vec<ReleaseId> {
        let now = Timestamp::now();
        let mut changed = Vec::new();
        for shared in self.releases.iter_mut().filter(|r| r.environment == env) {
            let order = shared.phase_order();
            let Some(first_running) = order
                .iter()
                .position(|p| shared.status_of(p) == PhaseStatus::Running)
            else {
                continue;
            };
            // Copied only now that it changes, so untouched releases stay shared.
            let release = Arc::make_mut(shared);
            for (i, phase) in order.iter().enumerate() {
                let status = release.status_of(phase);
                if i == first_running {
                    release.phases.insert(phase.clone(), PhaseStatus::Failed);
                    let detail = release.phase_details.entry(phase.clone()).or_default();
                    detail.error = Some(format!("interrupted: the process running {phase} exited"));
                    detail.finished_at = Some(now.as_str().to_string());
                } else if i > first_running
                    && matches!(status, PhaseStatus::Pending | PhaseStatus::Running)
                {
                    release.phases.insert(phase.clone(), PhaseStatus::Skipped);
                    let detail = release.phase_details.entry(phase.clone()).or_default();
                    detail.summary =
                        Some(format!("skipped: {} was interrupted", order[first_running]));
                }
            }
            changed.push(release.id.clone());
        }
        changed
    }

    /// Checks what the type system cannot: unique ids, non-empty environment and version.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for (i, r) in self.releases.iter().enumerate() {
            if !seen.insert(r.id.as_str()) {
                return Err(format!(
                    "duplicate release id {:?} (releases[{i}])",
                    r.id.as_str()
                ));
            }
            if r.environment.trim().is_empty() {
                return Err(format!(
                    "release {} (releases[{i}]) has an empty environment",
                    r.id
                ));
            }
            if r.version.trim().is_empty() {
                return Err(format!(
                    "release {} (releases[{i}]) has an empty version",
                    r.id
                ));
            }
        }
        Ok(())
    }
}

fn newest_first(a: &Release, b: &Release) -> std::cmp::Ordering {
    b.timestamp.cmp(&a.timestamp).then_with(|| b.id.cmp(&a.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn release(id: &str, env: &str, ts: &str, phases: &[(&str, PhaseStatus)]) -> Arc<Release> {
        Arc::new(Release {
            id: ReleaseId::parse(id).unwrap(),
            environment: env.into(),
            version: "v1".into(),
            commit_sha: String::new(),
            timestamp: Timestamp::parse(ts).unwrap(),
            phases: phases
                .iter()
                .map(|(p, s)| (p.to_string(), *s))
                .collect::<BTreeMap<_, _>>(),
            previous_id: None,
            operation: None,
            rollback_target: None,
            pipeline: Vec::new(),
            phase_details: BTreeMap::new(),
            extra: Default::default(),
        })
    }

    #[test]
    fn push_release_links_the_previous_release_and_never_reuses_an_id() {
        let mut state = State::default();
        let now = OffsetDateTime::UNIX_EPOCH;
        let phases = ["build".to_string(), "rollout".to_string()];
        let first = state
            .push_release("prod", "v1", "abc", &phases, now)
            .id
            .clone();
        let second = state.push_release("prod", "v2", "", &phases, now).clone();
        assert!(second.id > first, "same millisecond, still a new, later id");
        assert_eq!(second.previous_id.as_ref(), Some(&first));
        assert_eq!(second.phases.get("rollout"), Some(&PhaseStatus::Pending));
        let other = state.push_release("staging", "v1", "", &phases, now);
        assert_eq!(other.previous_id, None, "previous is per environment");
    }

    #[test]
    fn ids_in_the_same_millisecond_stay_unique_and_ordered() {
        let mut state = State::default();
        let now = time::macros::datetime!(2026-11-25 06:00:00.123 UTC);
        let ids: Vec<ReleaseId> = (0..1500).map(|_| state.allocate_release_id(now)).collect();
        assert_eq!(ids[0].as_str(), "rel-20261125-060000123");
        assert_eq!(ids[1].as_str(), "rel-20261125-060000124");
        assert_eq!(ids[1499].as_str(), "rel-20261125-060001622");
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn ids_are_never_reused_after_removal() {
        let mut state = State::default();
        let now = time::macros::datetime!(2026-11-25 06:00:00.5 UTC);
        let first = state.allocate_release_id(now);
        state.releases.clear();
        assert!(state.allocate_release_id(now) > first);
    }

    #[test]
    fn short_v1_ids_are_followed_correctly() {
        let mut state = State::default();
        state.releases.push(release(
            "rel-20261125-060000",
            "prod",
            "2026-11-25T06:00:00Z",
            &[],
        ));
        let now = time::macros::datetime!(2026-11-25 05:00:00 UTC);
        assert_eq!(
            state.allocate_release_id(now).as_str(),
            "rel-20261125-060000001"
        );
    }

    #[test]
    fn current_breaks_timestamp_ties_by_larger_id() {
        let mut state = State::default();
        state.releases.push(release(
            "rel-20261125-060000002",
            "prod",
            "2026-11-25T06:00:00Z",
            &[],
        ));
        state.releases.push(release(
            "rel-20261125-060000009",
            "prod",
            "2026-11-25T06:00:00Z",
            &[],
        ));
        state.releases.push(release(
            "rel-20261125-060000005",
            "prod",
            "2026-11-25T06:00:00Z",
            &[],
        ));
        assert_eq!(
            state.current("prod").unwrap().id.as_str(),
            "rel-20261125-060000009"
        );
    }

    #[test]
    fn timestamps_compare_as_instants_across_offsets() {
        let mut state = State::default();
        // 07:00+02:00 is 05:00Z, older than 06:00Z.
        state.releases.push(release(
            "rel-20261125-050000",
            "prod",
            "2026-11-25T07:00:00+02:00",
            &[],
        ));
        state.releases.push(release(
            "rel-20261125-060000",
            "prod",
            "2026-11-25T06:00:00Z",
            &[],
        ));
        assert_eq!(
            state.current("prod").unwrap().id.as_str(),
            "rel-20261125-060000"
        );
    }

    #[test]
    fn list_all_groups_by_environment_then_newest_first() {
        let mut state = State::default();
        state.releases.push(release(
            "rel-20261125-060000001",
            "staging",
            "2026-11-25T06:00:00Z",
            &[],
        ));
        state.releases.push(release(
            "rel-20261125-060000002",
            "prod",
            "2026-11-25T06:00:01Z",
            &[],
        ));
        state.releases.push(release(
            "rel-20261125-060000003",
            "prod",
            "2026-11-25T06:00:02Z",
            &[],
        ));
        let ids: Vec<&str> = state.list_all().iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "rel-20261125-060000003",
                "rel-20261125-060000002",
                "rel-20261125-060000001"
            ]
        );
    }

    #[test]
    fn recovery_fails_the_running_phase_and_skips_the_rest() {
        use PhaseStatus::*;
        let mut state = State::default();
        state.releases.push(release(
            "rel-20261125-060000001",
            "prod",
            "2026-11-25T06:00:00Z",
            &[
                ("build", Completed),
                ("push", Running),
                ("migrate_pre", Pending),
            ],
        ));
        state.releases.push(release(
            "rel-20261125-060000002",
            "staging",
            "2026-11-25T06:00:00Z",
            &[("build", Running)],
        ));
        let changed = state.recover_interrupted("prod");
        assert_eq!(changed.len(), 1);
        let r = state.get("rel-20261125-060000001").unwrap();
        assert_eq!(r.status_of("build"), Completed);
        assert_eq!(r.status_of("push"), Failed);
        assert_eq!(r.status_of("migrate_pre"), Skipped);
        assert_eq!(r.status_of("finalize"), Skipped);
        assert_eq!(
            r.phase_details["push"].error.as_deref(),
            Some("interrupted: the process running push exited")
        );
        assert_eq!(r.overall_status(), OverallStatus::Failed);
        // Another environment's running release is not ours to touch.
        assert_eq!(
            state
                .get("rel-20261125-060000002")
                .unwrap()
                .status_of("build"),
            Running
        );
    }

    #[test]
    fn changes_copy_only_the_releases_they_touch_and_never_the_state_they_came_from() {
        use PhaseStatus::*;
        let mut before = State::default();
        for (id, env, status) in [
            ("rel-20261125-060000001", "prod", Running),
            ("rel-20261125-060000002", "prod", Completed),
            ("rel-20261125-060000003", "staging", Running),
        ] {
            before.releases.push(release(
                id,
                env,
                "2026-11-25T06:00:00Z",
                &[("build", status)],
            ));
        }
        let mut after = before.clone();
        after.recover_interrupted("prod");
        after.get_mut("rel-20261125-060000003").unwrap().version = "v2".into();
        let shared: Vec<bool> = before
            .releases
            .iter()
            .zip(&after.releases)
            .map(|(b, a)| Arc::ptr_eq(b, a))
            .collect();
        // The recovered release and the renamed one were copied; the untouched one is shared.
        assert_eq!(shared, [false, true, false]);
        // The state they were copied from is as it was.
        assert_eq!(before.releases[0].status_of("build"), Running);
        assert_eq!(before.releases[2].version, "v1");
        assert_eq!(after.releases[0].status_of("build"), Failed);
        assert_eq!(after.releases[2].version, "v2");
    }

    #[test]
    fn overall_status_follows_the_v1_rules() {
        use PhaseStatus::*;
        let all = |s| CANONICAL_PHASES.iter().map(|p| (*p, s)).collect::<Vec<_>>();
        let r = release(
            "rel-20261125-060000001",
            "prod",
            "2026-11-25T06:00:00Z",
            &all(Completed),
        );
        assert_eq!(r.overall_status(), OverallStatus::Completed);
        let mut mixed = all(Completed);
        mixed[2].1 = Skipped;
        let r = release(
            "rel-20261125-060000001",
            "prod",
            "2026-11-25T06:00:00Z",
            &mixed,
        );
        assert_eq!(r.overall_status(), OverallStatus::Completed);
        mixed[3].1 = Running;
        let r = release(
            "rel-20261125-060000001",
            "prod",
            "2026-11-25T06:00:00Z",
            &mixed,
        );
        assert_eq!(r.overall_status(), OverallStatus::Running);
        mixed[4].1 = Failed;
        let r = release(
            "rel-20261125-060000001",
            "prod",
            "2026-11-25T06:00:00Z",
            &mixed,
        );
        assert_eq!(r.overall_status(), OverallStatus::Failed);
        // No phases key at all: every phase pending.
        let r = release(
            "rel-20261125-060000001",
            "prod",
            "2026-11-25T06:00:00Z",
            &[],
        );
        assert_eq!(r.overall_status(), OverallStatus::Pending);
    }

    #[test]
    fn release_ids_parse_both_lengths_and_reject_others() {
        assert!(ReleaseId::parse("rel-20261125-060000").is_ok());
        assert!(ReleaseId::parse("rel-20261125-060000123").is_ok());
        assert!(ReleaseId::parse("rel-2026112-060000123").is_err());
        assert!(ReleaseId::parse("rel-20261125-06000012").is_err());
        assert!(ReleaseId::parse("rel-20261125x060000123").is_err());
        assert!(ReleaseId::parse("").is_err());
        assert!(
            ReleaseId::parse("rel-20261325-060000123").is_err(),
            "month 13"
        );
    }
}
