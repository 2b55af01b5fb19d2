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

    /// `env`'s releases, newest first: in the reverse of the order they were allocated in, which
    /// is their ids' order (see [`State::allocate_release_id`]), whatever their timestamps say.
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

    /// `env`'s current release: the one allocated last (the largest id). Not the newest
    /// timestamp: a clock that was ahead once would keep its release current forever.
    pub fn current(&self, env: &str) -> Option<&Release> {
        self.releases
            .iter()
            .map(|r| &**r)
            .filter(|r| r.environment == env)
            .max_by(|a, b| a.id.cmp(&b.id))
    }

    /// Append a new release of `version` to `env`, created at `now`, with each of `phases`
    /// pending: a fresh id (see [`State::allocate_release_id`]) and the environment's current
    /// release as its previous one. The caller fills in what only it knows (operation, rollback
    /// target, pipeline) through the returned reference. Fails, changing nothing, when no id
    /// can follow the highest one issued.
    pub fn push_release(
        &mut self,
        env: &str,
        version: &str,
        commit_sha: &str,
        phases: &[String],
        now: OffsetDateTime,
    ) -> Result<&mut Release, IdsExhausted> {
        let id = self.allocate_release_id(now)?;
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
            created_by: None,
            auto_rollback_of: None,
            auto_rolled_back_by: None,
            plan: None,
            plan_of: None,
            message: None,
            extra: Default::default(),
        }));
        Ok(Arc::make_mut(
            self.releases.last_mut().expect("just pushed"),
        ))
    }

    /// A new release id for a release created at `now`: the id of `now`, or, if that is not
    /// greater than every id ever issued, the next millisecond after the highest. Ids therefore
    /// stay unique and increase in allocation order even when many releases start in the same
    /// millisecond or the clock steps back, and are never reused. Records the id as issued.
    /// Fails, changing nothing, when the highest id is the last one there can be.
    pub fn allocate_release_id(&mut self, now: OffsetDateTime) -> Result<ReleaseId, IdsExhausted> {
        let mut highest = self
            .last_release_id
            .clone()
            .map(|id| (id, "last_release_id".to_string()));
        for r in &self.releases {
            if highest.as_ref().is_none_or(|(h, _)| r.id > *h) {
                highest = Some((
                    r.id.clone(),
                    format!("the id of release {} ({})", r.id, r.environment),
                ));
            }
        }
        let mut candidate = ReleaseId::at(now);
        if let Some((h, field)) = highest {
            if candidate <= h {
                candidate = h.next().ok_or(IdsExhausted { highest: h, field })?;
            }
        }
        self.last_release_id = Some(candidate.clone());
        Ok(candidate)
    }

    /// What is live in `env`: its newest fully deployed release (every phase completed or
    /// skipped), if it has one.
    pub fn live(&self, env: &str) -> Option<&Release> {
        self.list_env(env)
            .into_iter()
            .find(|r| r.unfinished_phases().is_empty())
    }

    /// What is deployed in `env` and what is under way, as `stagecraft status` shows it.
    pub fn environment_summary(&self, env: &str) -> EnvironmentSummary<'_> {
        let newest = self.list_env(env);
        EnvironmentSummary {
            current: newest.first().copied(),
            live: self.live(env),
            unfinished: newest
                .iter()
                .filter(|r| r.is_unfinished())
                .copied()
                .collect(),
            last_failure: newest
                .iter()
                .find(|r| r.overall_status() == OverallStatus::Failed)
                .copied(),
        }
    }

    /// What every whole-state commit does, on both backends, between the closure and the
    /// write: check the invariants, stamp the format version and a lineage (once), and count
    /// the commit in `serial`. An error says why nothing may be written; the backend words it
    /// with its location.
    pub fn seal_for_commit(&mut self) -> Result<(), Unsealable> {
        self.validate().map_err(Unsealable::Invalid)?;
        self.format_version = Some(FORMAT_VERSION);
        if self.lineage.is_none() {
            self.lineage = Some(uuid::Uuid::new_v4().to_string());
        }
        self.serial = self.next_serial().map_err(Unsealable::SerialFull)?;
        Ok(())
    }

    /// The `serial` the next commit records, or an error naming the field when it cannot count
    /// further.
    pub fn next_serial(&self) -> Result<u64, String> {
        self.serial.checked_add(1).ok_or_else(|| {
            format!(
                "serial is {}, the largest number it can hold, so it cannot count another \
                 commit; nothing was written. Set serial to a smaller number by hand",
                self.serial
            )
        })
    }

    /// Finishes every release of `env` left unfinished (a phase `pending` or `running`) by a
    /// process that no longer holds the lease, so none stays stuck: the first unfinished phase
    /// `failed` ("interrupted: the process running <phase> exited" when it was running,
    /// "interrupted: the process exited before <phase> started" when the process died between
    /// two phases), every later unfinished phase `skipped`. A release that already had a failed
    /// phase before it only has the rest skipped. Returns the ids it changed. Only call this
    /// while holding `env`'s lease.
    pub fn recover_interrupted(&mut self, env: &str) -> Vec<ReleaseId> {
        self.recover_interrupted_with(env, &|_, _| None)
    }

    /// [`State::recover_interrupted`], with `note(release, phase)` giving what is known about a
    /// phase left `running` (for example that it finished but its end could not be recorded),
    /// used as its error instead of "the process running <phase> exited".
    pub fn recover_interrupted_with(
        &mut self,
        env: &str,
        note: &dyn Fn(&ReleaseId, &str) -> Option<String>,
    ) -> Vec<ReleaseId> {
        let now = Timestamp::now();
        let mut changed = Vec::new();
        for shared in self.releases.iter_mut().filter(|r| r.environment == env) {
            if !shared.is_unfinished() {
                continue;
            }
            let order = shared.phase_order();
            // Copied only now that it changes, so untouched releases stay shared.
            let release = Arc::make_mut(shared);
            // The first phase that did not finish: failed already, or interrupted now. Every
            // unfinished phase after it is skipped.
            let first = order.iter().find(|p| {
                matches!(
                    release.status_of(p),
                    PhaseStatus::Failed | PhaseStatus::Running | PhaseStatus::Pending
                )
            });
            if let Some(phase) = first {
                match release.status_of(phase) {
                    PhaseStatus::Failed => {
                        release.skip_unfinished_after(phase, &format!("{phase} failed"))
                    }
                    status => {
                        let error = match status {
                            PhaseStatus::Running => note(&release.id, phase).unwrap_or_else(|| {
                                format!("interrupted: the process running {phase} exited")
                            }),
                            _ => format!("interrupted: the process exited before {phase} started"),
                        };
                        release.fail_phase(
                            phase,
                            |detail| {
                                detail.error = Some(error);
                                detail.finished_at = Some(now.as_str().to_string());
                            },
                            &format!("{phase} was interrupted"),
                        );
                    }
                }
            }
            changed.push(release.id.clone());
        }
        changed
    }

    /// What keeping `keep` releases of `env` means (see [`Retention`]): the newest `keep` by
    /// allocation order stay, and so does every release one of the rules below needs, whatever
    /// its age. Changes nothing; [`State::prune`] applies it.
    pub fn retention(&self, env: &str, keep: usize) -> Retention {
        let newest = self.list_env(env);
        let mut kept: Vec<(ReleaseId, KeptBecause)> = Vec::new();
        let keep_as = |kept: &mut Vec<(ReleaseId, KeptBecause)>, id: &ReleaseId, why| {
            if !kept.iter().any(|(k, _)| k == id) {
                kept.push((id.clone(), why));
            }
        };
        for release in newest.iter().take(keep) {
            keep_as(&mut kept, &release.id, KeptBecause::Newest);
        }
        if let Some(current) = newest.first() {
            keep_as(&mut kept, &current.id, KeptBecause::Current);
        }
        if let Some(live) = self.live(env) {
            keep_as(&mut kept, &live.id, KeptBecause::Live);
        }
        for release in newest.iter().filter(|r| r.is_unfinished()) {
            keep_as(&mut kept, &release.id, KeptBecause::Unfinished);
        }
        // What the releases kept so far point back to: `--to-previous` from any of them, and
        // the target an unfinished rollback is running. Not followed further: a release only
        // becomes current by being created, so no older link can ever be needed.
        let mut links = Vec::new();
        for (id, _) in &kept {
            let Some(release) = self.get(id.as_str()) else {
                continue;
            };
            if let Some(previous) = &release.previous_id {
                links.push((
                    previous.clone(),
                    KeptBecause::PreviousOf(release.id.clone()),
                ));
            }
            if release.is_unfinished() {
                if let Some(target) = &release.rollback_target {
                    links.push((target.clone(), KeptBecause::TargetOf(release.id.clone())));
                }
            }
        }
        for (id, why) in links {
            if self.get(id.as_str()).is_some_and(|r| r.environment == env) {
                keep_as(&mut kept, &id, why);
            }
        }
        let removed = newest
            .iter()
            .rev()
            .filter(|r| !kept.iter().any(|(k, _)| *k == r.id))
            .map(|r| r.id.clone())
            .collect();
        let beyond = kept
            .into_iter()
            .filter(|(id, _)| !newest.iter().take(keep).any(|r| r.id == *id))
            .collect();
        Retention {
            environment: env.to_string(),
            keep,
            removed,
            kept_beyond: beyond,
        }
    }

    /// Apply [`State::retention`]: remove what it would remove, and return it. Ids stay
    /// monotonic: `last_release_id` keeps the highest id ever issued.
    pub fn prune(&mut self, env: &str, keep: usize) -> Retention {
        let retention = self.retention(env, keep);
        self.remove_per(&retention);
        retention
    }

    /// Remove what `retention` (from [`State::retention`] on this state) removes.
    pub fn remove_per(&mut self, retention: &Retention) {
        if retention.removed.is_empty() {
            return;
        }
        let highest = self.releases.iter().map(|r| r.id.clone()).max();
        if let Some(highest) = highest {
            if self.last_release_id.as_ref().is_none_or(|l| *l < highest) {
                self.last_release_id = Some(highest);
            }
        }
        let gone: HashSet<&ReleaseId> = retention.removed.iter().collect();
        self.releases.retain(|r| !gone.contains(&r.id));
    }

    /// The part of this state a transaction on `env` sees (see [`super::Window`]): the same
    /// header, and `env`'s releases that `window` names, in their order. Releases are shared,
    /// not copied.
    pub fn window(&self, env: &str, window: super::Window<'_>) -> State {
        let current = self.current(env).map(|r| r.id.clone());
        let wanted = |r: &Release| match window {
            super::Window::Whole => true,
            super::Window::Recent(ids) => {
                Some(&r.id) == current.as_ref() || r.is_unfinished() || ids.contains(&r.id)
            }
        };
        State {
            releases: self
                .releases
                .iter()
                .filter(|r| r.environment == env && wanted(r))
                .cloned()
                .collect(),
            format_version: self.format_version,
            lineage: self.lineage.clone(),
            serial: self.serial,
            // An id allocated in the window must be new across every environment: when the
            // highest id issued is a release the window leaves out (an original file records
            // no last_release_id), the window's last_release_id says so.
            last_release_id: self
                .highest_release_id()
                .filter(|h| {
                    !self
                        .releases
                        .iter()
                        .any(|r| r.id == *h && r.environment == env)
                })
                .max(self.last_release_id.clone()),
            extra: self.extra.clone(),
        }
    }

    /// The highest release id this state has issued: `last_release_id`, or a release's id if
    /// higher.
    pub fn highest_release_id(&self) -> Option<ReleaseId> {
        let highest = self.releases.iter().map(|r| &r.id).max();
        match (&self.last_release_id, highest) {
            (Some(last), Some(h)) => Some(last.max(h).clone()),
            (last, h) => last.clone().or_else(|| h.cloned()),
        }
    }

    /// Run `f` on [`State::window`] of `env` and put what it left back in place: releases it
    /// changed replace theirs where they were, those it removed are removed, new ones are
    /// appended in its order, and an id it allocated is recorded. Fails, changing nothing, if
    /// `f` fails or leaves a release of another environment. Returns whether `f` changed
    /// anything.
    pub fn scoped(
        &mut self,
        env: &str,
        window: super::Window<'_>,
        f: &mut dyn FnMut(&mut State) -> anyhow::Result<bool>,
    ) -> anyhow::Result<bool> {
        let mut scoped = self.window(env, window);
        let seen: HashSet<ReleaseId> = scoped.releases.iter().map(|r| r.id.clone()).collect();
        if !f(&mut scoped)? {
            return Ok(false);
        }
        scoped.check_window(env, self)?;
        self.merge_window(&seen, scoped);
        Ok(true)
    }

    /// What a transaction on `env` left (`self`, from `before`) holds only releases of `env`,
    /// and the store's own fields as they were: those belong to whole-state transactions.
    pub fn check_window(&self, env: &str, before: &State) -> Result<(), super::StateError> {
        if let Some(other) = self.releases.iter().find(|r| r.environment != env) {
            return Err(super::StateError::new(format!(
                "a transaction on environment \"{env}\" cannot change releases of \"{}\" \
                 (release {}); nothing was written",
                other.environment, other.id
            )));
        }
        if self.extra != before.extra
            || self.lineage != before.lineage
            || self.format_version != before.format_version
            || self.serial != before.serial
        {
            return Err(super::StateError::new(format!(
                "a transaction on environment \"{env}\" cannot change the store's own fields \
                 (serial, lineage, format_version, unknown fields); nothing was written"
            )));
        }
        Ok(())
    }

    /// Put a scoped transaction's result back (see [`State::scoped`]), once
    /// [`State::check_window`] accepted it. `seen` is what the transaction was shown.
    fn merge_window(&mut self, seen: &HashSet<ReleaseId>, scoped: State) {
        let highest_before = self.highest_release_id();
        let mut by_id: std::collections::HashMap<ReleaseId, Arc<Release>> = scoped
            .releases
            .iter()
            .map(|r| (r.id.clone(), r.clone()))
            .collect();
        let mut merged = Vec::with_capacity(self.releases.len() + 1);
        for release in self.releases.drain(..) {
            if !seen.contains(&release.id) {
                merged.push(release);
            } else if let Some(kept) = by_id.remove(&release.id) {
                merged.push(kept);
            }
        }
        merged.extend(
            scoped
                .releases
                .into_iter()
                .filter(|r| by_id.contains_key(&r.id)),
        );
        self.releases = merged;
        // Recorded only when the transaction allocated an id (the window's value is the
        // highest issued, which an original file does not record until an id is allocated).
        if scoped.last_release_id > highest_before {
            self.last_release_id = scoped.last_release_id;
        }
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

/// What retention keeps and removes in one environment (see [`State::retention`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub environment: String,
    /// How many of the newest releases are kept whatever they are.
    pub keep: usize,
    /// Removed (or to remove), oldest first.
    pub removed: Vec<ReleaseId>,
    /// Releases kept although they are older than the newest `keep`, each with the first rule
    /// that keeps it.
    pub kept_beyond: Vec<(ReleaseId, KeptBecause)>,
}

/// Why retention keeps a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptBecause {
    /// Among the newest `keep`.
    Newest,
    /// The environment's current release (allocated last).
    Current,
    /// The newest fully deployed release: what is live.
    Live,
    /// A phase is pending or running.
    Unfinished,
    /// `rollback --to-previous` from this kept release goes there.
    PreviousOf(ReleaseId),
    /// This unfinished rollback is rolling back to it.
    TargetOf(ReleaseId),
}

impl std::fmt::Display for KeptBecause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeptBecause::Newest => write!(f, "one of the newest"),
            KeptBecause::Current => write!(f, "the current release"),
            KeptBecause::Live => write!(f, "the live release (newest fully deployed)"),
            KeptBecause::Unfinished => write!(f, "unfinished"),
            KeptBecause::PreviousOf(id) => write!(f, "rollback --to-previous target of {id}"),
            KeptBecause::TargetOf(id) => write!(f, "rollback target of {id}, still running"),
        }
    }
}

/// Allocation order, reversed: ids are allocated in increasing order (see
/// [`State::allocate_release_id`]); the original tool's ids and timestamps agree, so its files
/// list as they always did.
fn newest_first(a: &Release, b: &Release) -> std::cmp::Ordering {
    b.id.cmp(&a.id)
}

/// No release id can follow the highest one issued: it is the last instant an id can encode
/// (`rel-99991231-235959999`).
/// One environment as [`State::environment_summary`] sees it; every release is `env`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentSummary<'a> {
    /// The newest release, whatever its status.
    pub current: Option<&'a Release>,
    /// The newest fully deployed release (every phase completed or skipped): what is live.
    pub live: Option<&'a Release>,
    /// Releases with a phase pending or running, newest first.
    pub unfinished: Vec<&'a Release>,
    /// The newest release with a failed phase.
    pub last_failure: Option<&'a Release>,
}

/// Why [`State::seal_for_commit`] refused a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsealable {
    /// An invariant does not hold ([`State::validate`]'s reason).
    Invalid(String),
    /// `serial` cannot count another commit ([`State::next_serial`]'s reason).
    SerialFull(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no release id can follow {highest} ({field}), the last id there can be; nothing was \
     written. Ids must encode a time before the year 10000: repair {field} by hand"
)]
pub struct IdsExhausted {
    pub highest: ReleaseId,
    /// Where the highest id is: `last_release_id` or `the id of release <id> (<env>)`.
    pub field: String,
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
            created_by: None,
            auto_rollback_of: None,
            auto_rolled_back_by: None,
            plan: None,
            plan_of: None,
            message: None,
            extra: Default::default(),
        })
    }

    /// `count` releases of `env` pushed one millisecond apart, each completed unless `unfinished`
    /// names its index, with `previous_id` links as deploys make them. Returns their ids, oldest
    /// first.
    fn history(state: &mut State, env: &str, count: usize, failed: &[usize]) -> Vec<ReleaseId> {
        let phases = ["build".to_string(), "rollout".to_string()];
        let mut ids = Vec::new();
        for i in 0..count {
            let at = OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(i as i64);
            let release = state
                .push_release(env, &format!("v{i}"), "", &phases, at)
                .unwrap();
            let status = if failed.contains(&i) {
                PhaseStatus::Failed
            } else {
                PhaseStatus::Completed
            };
            release.pipeline = phases.to_vec();
            release.phases.insert("build".into(), status);
            release
                .phases
                .insert("rollout".into(), PhaseStatus::Completed);
            ids.push(release.id.clone());
        }
        ids
    }

    fn because(retention: &Retention, id: &ReleaseId) -> Option<KeptBecause> {
        retention
            .kept_beyond
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, why)| why.clone())
    }

    #[test]
    fn retention_keeps_the_newest_and_what_they_roll_back_to_and_nothing_else() {
        let mut state = State::default();
        let prod = history(&mut state, "prod", 6, &[]);
        let staging = history(&mut state, "staging", 3, &[]);
        let retention = state.prune("prod", 2);
        // Kept: prod[5], prod[4] (newest two) and prod[3] (--to-previous of prod[4]).
        assert_eq!(retention.removed, prod[..3].to_vec());
        assert_eq!(
            because(&retention, &prod[3]),
            Some(KeptBecause::PreviousOf(prod[4].clone()))
        );
        assert_eq!(retention.kept_beyond.len(), 1, "{retention:?}");
        let left: Vec<&ReleaseId> = state.list_env("prod").iter().map(|r| &r.id).collect();
        assert_eq!(left, vec![&prod[5], &prod[4], &prod[3]]);
        assert_eq!(
            state.list_env("staging").len(),
            3,
            "another environment is untouched"
        );
        // Pruning again removes nothing, and ids never go back.
        assert!(state.prune("prod", 2).removed.is_empty());
        assert!(
            state
                .allocate_release_id(OffsetDateTime::UNIX_EPOCH)
                .unwrap()
                > staging[2]
        );
    }

    #[test]
    fn retention_never_removes_the_live_release_behind_failed_ones() {
        let mut state = State::default();
        // v0..v2 completed, then v3..v5 failed: v2 is live.
        let prod = history(&mut state, "prod", 6, &[3, 4, 5]);
        let retention = state.retention("prod", 1);
        assert_eq!(
            because(&retention, &prod[2]),
            Some(KeptBecause::Live),
            "{retention:?}"
        );
        assert_eq!(
            because(&retention, &prod[4]),
            Some(KeptBecause::PreviousOf(prod[5].clone()))
        );
        assert_eq!(
            because(&retention, &prod[1]),
            Some(KeptBecause::PreviousOf(prod[2].clone()))
        );
        assert_eq!(retention.removed, vec![prod[0].clone(), prod[3].clone()]);
    }

    #[test]
    fn retention_never_removes_an_unfinished_release_or_the_target_it_rolls_back_to() {
        let mut state = State::default();
        let prod = history(&mut state, "prod", 8, &[]);
        // prod[1] was left running long ago; prod[7] is a rollback to prod[2], still running.
        state
            .get_mut(prod[1].as_str())
            .unwrap()
            .phases
            .insert("rollout".into(), PhaseStatus::Running);
        let rollback = state.get_mut(prod[7].as_str()).unwrap();
        rollback
            .phases
            .insert("rollout".into(), PhaseStatus::Pending);
        rollback.rollback_target = Some(prod[2].clone());
        let retention = state.prune("prod", 1);
        assert_eq!(because(&retention, &prod[1]), Some(KeptBecause::Unfinished));
        assert_eq!(
            because(&retention, &prod[2]),
            Some(KeptBecause::TargetOf(prod[7].clone()))
        );
        assert_eq!(because(&retention, &prod[6]), Some(KeptBecause::Live));
        assert!(state.get(prod[1].as_str()).is_some() && state.get(prod[2].as_str()).is_some());
        assert_eq!(
            because(&retention, &prod[0]),
            Some(KeptBecause::PreviousOf(prod[1].clone()))
        );
        assert_eq!(
            retention.removed,
            vec![prod[3].clone(), prod[4].clone()],
            "{retention:?}"
        );
    }

    #[test]
    fn retention_of_an_environment_with_few_releases_removes_nothing() {
        let mut state = State::default();
        history(&mut state, "prod", 3, &[]);
        assert!(state.prune("prod", 3).removed.is_empty());
        assert!(state.prune("prod", 10).removed.is_empty());
        assert!(state.prune("nowhere", 1).removed.is_empty());
    }

    #[test]
    fn a_scoped_transaction_sees_its_window_and_changes_only_its_environment() {
        use crate::state::Window;
        let mut state = State::default();
        let prod = history(&mut state, "prod", 4, &[]);
        let staging = history(&mut state, "staging", 2, &[]);
        // An original file: no last_release_id, and staging holds the highest id.
        state.last_release_id = None;
        state
            .get_mut(prod[1].as_str())
            .unwrap()
            .phases
            .insert("rollout".into(), PhaseStatus::Running);

        let window = state.window("prod", Window::Recent(std::slice::from_ref(&prod[0])));
        let ids: Vec<&ReleaseId> = window.releases.iter().map(|r| &r.id).collect();
        assert_eq!(
            ids,
            vec![&prod[0], &prod[1], &prod[3]],
            "named, unfinished, current"
        );
        assert_eq!(window.last_release_id.as_ref(), Some(&staging[1]));
        assert_eq!(state.window("prod", Window::Whole).releases.len(), 4);

        // Changes go back in place; a new release follows every id issued anywhere.
        let before = state.clone();
        let phases = ["build".to_string(), "rollout".to_string()];
        state
            .scoped("prod", Window::Recent(&[]), &mut |s| {
                s.get_mut(prod[1].as_str())
                    .unwrap()
                    .phases
                    .insert("rollout".into(), PhaseStatus::Failed);
                let id = s
                    .push_release("prod", "v9", "", &phases, OffsetDateTime::UNIX_EPOCH)
                    .unwrap()
                    .id
                    .clone();
                assert!(id > staging[1], "{id}");
                Ok(true)
            })
            .unwrap();
        assert_eq!(state.releases.len(), 7);
        assert_eq!(state.releases[1].id, prod[1]);
        assert_eq!(state.releases[1].status_of("rollout"), PhaseStatus::Failed);
        assert_eq!(state.releases[6].version, "v9");
        assert_eq!(state.last_release_id.as_ref(), Some(&state.releases[6].id));
        assert_eq!(
            state.releases[4..6],
            before.releases[4..6],
            "staging untouched"
        );

        // A release of another environment is refused, and nothing changes.
        let before = state.clone();
        let err = state
            .scoped("prod", Window::Recent(&[]), &mut |s| {
                s.push_release("staging", "x", "", &phases, OffsetDateTime::UNIX_EPOCH)
                    .unwrap();
                Ok(true)
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "a transaction on environment \"prod\" cannot change releases of \"staging\""
            ),
            "{err}"
        );
        assert_eq!(state, before);
    }

    #[test]
    fn push_release_links_the_previous_release_and_never_reuses_an_id() {
        let mut state = State::default();
        let now = OffsetDateTime::UNIX_EPOCH;
        let phases = ["build".to_string(), "rollout".to_string()];
        let first = state
            .push_release("prod", "v1", "abc", &phases, now)
            .unwrap()
            .id
            .clone();
        let second = state
            .push_release("prod", "v2", "", &phases, now)
            .unwrap()
            .clone();
        assert!(second.id > first, "same millisecond, still a new, later id");
        assert_eq!(second.previous_id.as_ref(), Some(&first));
        assert_eq!(second.phases.get("rollout"), Some(&PhaseStatus::Pending));
        let other = state
            .push_release("staging", "v1", "", &phases, now)
            .unwrap();
        assert_eq!(other.previous_id, None, "previous is per environment");
    }

    #[test]
    fn ids_in_the_same_millisecond_stay_unique_and_ordered() {
        let mut state = State::default();
        let now = time::macros::datetime!(2026-11-25 06:00:00.123 UTC);
        let ids: Vec<ReleaseId> = (0..1500)
            .map(|_| state.allocate_release_id(now).unwrap())
            .collect();
        assert_eq!(ids[0].as_str(), "rel-20261125-060000123");
        assert_eq!(ids[1].as_str(), "rel-20261125-060000124");
        assert_eq!(ids[1499].as_str(), "rel-20261125-060001622");
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn ids_are_never_reused_after_removal() {
        let mut state = State::default();
        let now = time::macros::datetime!(2026-11-25 06:00:00.5 UTC);
        let first = state.allocate_release_id(now).unwrap();
        state.releases.clear();
        assert!(state.allocate_release_id(now).unwrap() > first);
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
            state.allocate_release_id(now).unwrap().as_str(),
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
    fn recovery_finishes_a_release_killed_between_two_phases() {
        use PhaseStatus::*;
        let mut state = State::default();
        // Killed after push's end was committed, before migrate_pre's start.
        state.releases.push(release(
            "rel-20261125-060000001",
            "prod",
            "2026-11-25T06:00:00Z",
            &[
                ("build", Completed),
                ("push", Completed),
                ("migrate_pre", Pending),
                ("rollout", Pending),
                ("migrate_post", Pending),
                ("finalize", Pending),
            ],
        ));
        // Killed right after it was created: no phase ever started.
        state.releases.push(release(
            "rel-20261125-060000002",
            "prod",
            "2026-11-25T06:00:01Z",
            &[("build", Pending)],
        ));
        let changed = state.recover_interrupted("prod");
        assert_eq!(changed.len(), 2);
        let r = state.get("rel-20261125-060000001").unwrap();
        assert_eq!(r.status_of("push"), Completed);
        assert_eq!(r.status_of("migrate_pre"), Failed);
        assert_eq!(
            r.phase_details["migrate_pre"].error.as_deref(),
            Some("interrupted: the process exited before migrate_pre started")
        );
        for later in ["rollout", "migrate_post", "finalize"] {
            assert_eq!(r.status_of(later), Skipped, "{later}");
            assert_eq!(
                r.phase_details[later].summary.as_deref(),
                Some("skipped: migrate_pre was interrupted")
            );
        }
        assert_eq!(r.overall_status(), OverallStatus::Failed);
        let r = state.get("rel-20261125-060000002").unwrap();
        assert_eq!(r.status_of("build"), Failed);
        assert_eq!(r.overall_status(), OverallStatus::Failed);
        let unfinished = |r: &&Release| {
            r.phase_statuses()
                .iter()
                .any(|(_, s)| matches!(s, Pending | Running))
        };
        assert!(!state.list_env("prod").iter().any(unfinished));
        // Finished releases are left alone: a second pass changes nothing.
        assert!(state.recover_interrupted("prod").is_empty());
    }

    #[test]
    fn current_is_the_release_allocated_last_whatever_the_clock_said() {
        let mut state = State::default();
        let phases = ["build".to_string()];
        // A clock that was a year ahead once...
        let ahead = time::macros::datetime!(2027-11-25 06:00:00 UTC);
        let future = state
            .push_release("prod", "v1", "", &phases, ahead)
            .unwrap()
            .id
            .clone();
        // ...and is right again for the next two deploys.
        let now = time::macros::datetime!(2026-11-25 06:00:00 UTC);
        let second = state
            .push_release("prod", "v2", "", &phases, now)
            .unwrap()
            .clone();
        assert_eq!(second.previous_id.as_ref(), Some(&future));
        let third = state
            .push_release("prod", "v3", "", &phases, now)
            .unwrap()
            .clone();
        assert_eq!(
            third.previous_id.as_ref(),
            Some(&second.id),
            "the previous release is the one allocated before, not the one stamped latest"
        );
        assert_eq!(state.current("prod").unwrap().id, third.id);
        let listed: Vec<&str> = state
            .list_env("prod")
            .iter()
            .map(|r| r.version.as_str())
            .collect();
        assert_eq!(listed, ["v3", "v2", "v1"]);
    }

    #[test]
    fn the_last_possible_id_is_an_error_not_a_panic() {
        let mut state = State {
            last_release_id: Some(ReleaseId::parse("rel-99991231-235959999").unwrap()),
            ..State::default()
        };
        let err = state
            .allocate_release_id(OffsetDateTime::UNIX_EPOCH)
            .unwrap_err()
            .to_string();
        assert!(err.contains("last_release_id"), "{err}");
        assert!(err.contains("rel-99991231-235959999"), "{err}");
        assert_eq!(
            state.last_release_id.as_ref().map(ReleaseId::as_str),
            Some("rel-99991231-235959999"),
            "unchanged"
        );
        // The same when the highest id is only in a release, not in last_release_id.
        let mut state = State::default();
        state.releases.push(release(
            "rel-99991231-235959999",
            "prod",
            "2026-11-25T06:00:00Z",
            &[],
        ));
        let err = state
            .allocate_release_id(OffsetDateTime::UNIX_EPOCH)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the id of release rel-99991231-235959999 (prod)"),
            "{err}"
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
            // Every phase but build done, so only build's status decides what recovery does.
            let mut phases: Vec<(&str, PhaseStatus)> =
                CANONICAL_PHASES.iter().map(|p| (*p, Completed)).collect();
            phases[0].1 = status;
            before
                .releases
                .push(release(id, env, "2026-11-25T06:00:00Z", &phases));
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

    #[test]
    fn the_summary_names_live_unfinished_and_last_failed() {
        let mut state = State::default();
        let phases: Vec<String> = CANONICAL_PHASES.iter().map(|p| p.to_string()).collect();
        let at = |s: i64| OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(s);
        // Every phase completed but `build` and `rollout`, which are as given.
        let mut push = |version: &str, statuses: [PhaseStatus; 2], s: i64| {
            let r = state
                .push_release("prod", version, "", &phases, at(s))
                .unwrap();
            for status in r.phases.values_mut() {
                *status = PhaseStatus::Completed;
            }
            r.phases.insert("build".into(), statuses[0]);
            r.phases.insert("rollout".into(), statuses[1]);
        };
        use PhaseStatus::*;
        push("v1", [Completed, Completed], 1);
        push("v2", [Completed, Skipped], 2);
        push("v3", [Failed, Skipped], 3);
        push("v4", [Completed, Running], 4);
        let summary = state.environment_summary("prod");
        let version = |r: Option<&Release>| r.map(|r| r.version.clone());
        assert_eq!(
            version(summary.live),
            Some("v2".into()),
            "skipped counts as done"
        );
        assert_eq!(version(summary.current), Some("v4".into()));
        assert_eq!(version(summary.last_failure), Some("v3".into()));
        let unfinished: Vec<&str> = summary
            .unfinished
            .iter()
            .map(|r| r.version.as_str())
            .collect();
        assert_eq!(unfinished, ["v4"]);
        assert_eq!(state.environment_summary("staging").current, None);
    }
}
