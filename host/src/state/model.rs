//! The release model: what one release records, and the whole state document.
//!
//! The JSON layout is the original Stagecraft's (`{"releases": [...]}` with its field names);
//! everything we add is an extra field the original tool ignores, and every field we do not know
//! is kept (`extra`) so a file round-trips through us unchanged.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::unique_keys;
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// An environment's name, checked once wherever one comes in (the manifest, `--env`, a lease, a
/// transaction): a lowercase letter, then lowercase letters, digits, `_` or `-`, at most 64
/// bytes. It names lease files and rows, so its alphabet is safe in a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvironmentName(String);

/// Why a string is not an [`EnvironmentName`]; says what a name may be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid environment name {0:?}: names are a lowercase letter followed by lowercase \
     letters, digits, '_' or '-' (at most 64 characters)"
)]
pub struct InvalidEnvironmentName(pub String);

/// `env` is a valid [`EnvironmentName`], or an input error (exit 1) saying what a name may be.
/// Every lease and transaction checks its environment with this before it touches anything:
/// names become lease file names and rows.
pub fn check_environment_name(env: &str) -> anyhow::Result<()> {
    EnvironmentName::parse(env)
        .map(drop)
        .map_err(|e| crate::error::input_error(e.to_string()))
}

impl EnvironmentName {
    pub fn parse(name: &str) -> Result<EnvironmentName, InvalidEnvironmentName> {
        let mut chars = name.chars();
        let ok = name.len() <= 64
            && chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok {
            Ok(EnvironmentName(name.to_string()))
        } else {
            Err(InvalidEnvironmentName(name.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvironmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for EnvironmentName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// The canonical phases, in order, used when a manifest declares no `[pipeline]`.
pub const CANONICAL_PHASES: [&str; 6] = [
    "build",
    "push",
    "migrate_pre",
    "rollout",
    "migrate_post",
    "finalize",
];

/// The newest state format this build reads and writes. Files without `format_version` are
/// original (v1) files; they read as is and are upgraded on our first write.
pub const FORMAT_VERSION: u32 = 2;

/// The whole state document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Absent in original v1 files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_version: Option<u32>,
    /// A random id given to a state file when we first write it; never changes afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<String>,
    /// The number of commits this document has seen; +1 on every commit.
    #[serde(default)]
    pub serial: u64,
    /// The highest release id ever issued, so ids are never reused even if releases are removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_release_id: Option<ReleaseId>,
    /// The history, each release shared copy-on-write: cloning a `State` copies pointers, and a
    /// release is only copied when it is changed (`Arc::make_mut`, as [`State::get_mut`] does).
    /// So after a transaction, a release that still points where it did before is unchanged,
    /// which a backend learns without comparing it field by field.
    #[serde(default)]
    pub releases: Vec<Arc<Release>>,
    /// Fields we do not know, kept verbatim.
    #[serde(flatten, deserialize_with = "unique_keys::unknown_fields")]
    pub extra: Map<String, Value>,
}

impl Default for State {
    fn default() -> Self {
        State {
            format_version: None,
            lineage: None,
            serial: 0,
            last_release_id: None,
            releases: Vec::new(),
            extra: Map::new(),
        }
    }
}

/// Why a release exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    #[default]
    Deploy,
    Rollback,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Deploy => "deploy",
            Operation::Rollback => "rollback",
        }
    }
}

/// A phase's status. The names and meanings are the original tool's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Skipped,
}

impl PhaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseStatus::Pending => "pending",
            PhaseStatus::Running => "running",
            PhaseStatus::Completed => "completed",
            PhaseStatus::Failed => "failed",
            PhaseStatus::Skipped => "skipped",
        }
    }
}

impl fmt::Display for PhaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A release id: `rel-YYYYMMDD-HHMMSSmmm` (UTC). Original files may hold the 19-character form
/// without milliseconds. Lexicographic order is chronological order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReleaseId(String);

impl ReleaseId {
    /// Checks the shape: `rel-` + 8 digits + `-` + 6 or 9 digits.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = s.len() == 19 || s.len() == 22;
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        let shaped =
            ok && s.starts_with("rel-") && b[12] == b'-' && digits(4..12) && digits(13..s.len());
        if shaped && Self::instant_of(s).is_some() {
            Ok(ReleaseId(s.to_string()))
        } else {
            Err(format!(
                "invalid release id {s:?}: expected rel-YYYYMMDD-HHMMSSmmm"
            ))
        }
    }

    /// The UTC instant an id of either length encodes (19-character ids at `.000`).
    fn instant_of(s: &str) -> Option<OffsetDateTime> {
        let dt = time::PrimitiveDateTime::parse(
            &format!("{}{}", &s[4..12], &s[13..19]),
            time::macros::format_description!("[year][month][day][hour][minute][second]"),
        )
        .ok()?;
        let ms: i64 = if s.len() == 22 {
            s[19..22].parse().ok()?
        } else {
            0
        };
        Some(dt.assume_utc() + time::Duration::milliseconds(ms))
    }

    /// The id one millisecond after this one, or `None` after `rel-99991231-235959999`, the
    /// last instant an id can encode.
    pub fn next(&self) -> Option<ReleaseId> {
        let at = Self::instant_of(&self.0)?;
        let next = at.checked_add(time::Duration::milliseconds(1))?;
        (next.year() <= 9999).then(|| ReleaseId::at(next))
    }

    /// The id for a release created at `at` (UTC, millisecond precision; years 0 to 9999, as
    /// the clock gives).
    pub fn at(at: OffsetDateTime) -> Self {
        let at = at.to_offset(time::UtcOffset::UTC);
        ReleaseId(format!(
            "rel-{:04}{:02}{:02}-{:02}{:02}{:02}{:03}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ReleaseId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ReleaseId::parse(s)
    }
}

impl TryFrom<String> for ReleaseId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ReleaseId::parse(&s)
    }
}

impl From<ReleaseId> for String {
    fn from(id: ReleaseId) -> String {
        id.0
    }
}

/// An RFC 3339 timestamp, kept as written (so original files round-trip byte for byte) and
/// compared as an instant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timestamp {
    raw: String,
    at: OffsetDateTime,
}

impl Timestamp {
    pub fn parse(s: &str) -> Result<Self, String> {
        let at = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("invalid timestamp {s:?}: {e}"))?;
        Ok(Timestamp {
            raw: s.to_string(),
            at,
        })
    }

    /// `at` in UTC with millisecond precision, e.g. `2026-11-25T06:01:02.345Z`.
    pub fn from_datetime(at: OffsetDateTime) -> Self {
        let at = at.to_offset(time::UtcOffset::UTC);
        let at = at
            .replace_nanosecond(at.millisecond() as u32 * 1_000_000)
            .unwrap_or(at);
        let raw = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        );
        Timestamp { raw, at }
    }

    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn datetime(&self) -> OffsetDateTime {
        self.at
    }

    /// `YYYY-MM-DD HH:MM:SS` in UTC, as `releases list` shows it.
    pub fn display_utc(&self) -> String {
        let at = self.at.to_offset(time::UtcOffset::UTC);
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        )
    }
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Timestamp {}
impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl TryFrom<String> for Timestamp {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Timestamp::parse(&s)
    }
}
impl From<Timestamp> for String {
    fn from(t: Timestamp) -> String {
        t.raw
    }
}

/// What the host recorded about one phase's run, beyond its status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseDetail {
    /// `builtin:<name>` or the plugin path as written in the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// sha256 of the component that ran, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The plugin's one-line summary, or why the phase was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "unique_keys::outputs"
    )]
    pub outputs: BTreeMap<String, String>,
    /// Why the phase failed, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When a budget tripped: its name (`timeout`, `memory`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(flatten, deserialize_with = "unique_keys::unknown_fields")]
    pub extra: Map<String, Value>,
}

/// One release. Field names are the original tool's; ours are extra.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub id: ReleaseId,
    pub environment: String,
    pub version: String,
    #[serde(default)]
    pub commit_sha: String,
    pub timestamp: Timestamp,
    /// Phase -> status. Absent in some original records, meaning every phase is pending.
    #[serde(default, deserialize_with = "unique_keys::phases")]
    pub phases: BTreeMap<String, PhaseStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<ReleaseId>,
    /// Absent in original records, meaning `deploy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// For a rollback: the release whose version and commit this one redeploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_target: Option<ReleaseId>,
    /// The phase order this release ran with; absent in original records (canonical order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipeline: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "unique_keys::phase_details"
    )]
    pub phase_details: BTreeMap<String, PhaseDetail>,
    /// Who created the release; absent in records of the Go tool and of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<super::Identity>,
    /// Why, as given with `--message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For a rollback that `on_failure = "rollback"` started: the failed deploy it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback_of: Option<ReleaseId>,
    /// For a deploy that failed and was rolled back automatically: that rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rolled_back_by: Option<ReleaseId>,
    /// What the release ran (manifest digest; per phase plugin, digest, config, grants,
    /// limits); absent in releases from before plans and in records of the Go tool.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::plan::one_line"
    )]
    pub plan: Option<super::Plan>,
    /// For a rollback that ran its target's recorded plan: that target, whose plan this
    /// release's copies. Absent when a rollback ran the manifest of its day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_of: Option<ReleaseId>,
    #[serde(flatten, deserialize_with = "unique_keys::unknown_fields")]
    pub extra: Map<String, Value>,
}

/// A release's overall status, derived from its phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverallStatus {
    Pending,
    Running,
    Completed,
    Failed,
}

impl OverallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OverallStatus::Pending => "pending",
            OverallStatus::Running => "running",
            OverallStatus::Completed => "completed",
            OverallStatus::Failed => "failed",
        }
    }
}

impl Release {
    pub fn operation(&self) -> Operation {
        self.operation.unwrap_or_default()
    }

    /// Phase names in pipeline order: the recorded pipeline, else the canonical phases, then any
    /// other phase the record holds, by name.
    pub fn phase_order(&self) -> Vec<String> {
        let mut order: Vec<String> = if self.pipeline.is_empty() {
            CANONICAL_PHASES.iter().map(|s| s.to_string()).collect()
        } else {
            self.pipeline.clone()
        };
        for name in self.phases.keys() {
            if !order.contains(name) {
                order.push(name.clone());
            }
        }
        order
    }

    /// The status of `phase`; a phase the record does not list is pending (original records may
    /// have no `phases` at all).
    pub fn status_of(&self, phase: &str) -> PhaseStatus {
        self.phases
            .get(phase)
            .copied()
            .unwrap_or(PhaseStatus::Pending)
    }

    /// Phases with their statuses, in pipeline order.
    pub fn phase_statuses(&self) -> Vec<(String, PhaseStatus)> {
        self.phase_order()
            .into_iter()
            .map(|p| {
                let s = self.status_of(&p);
                (p, s)
            })
            .collect()
    }

    /// Any failed -> failed; else all done (completed, or skipped) -> completed; else any
    /// running -> running; else pending.
    pub fn overall_status(&self) -> OverallStatus {
        let statuses: Vec<PhaseStatus> =
            self.phase_statuses().into_iter().map(|(_, s)| s).collect();
        if statuses.contains(&PhaseStatus::Failed) {
            OverallStatus::Failed
        } else if statuses
            .iter()
            .all(|s| matches!(s, PhaseStatus::Completed | PhaseStatus::Skipped))
        {
            OverallStatus::Completed
        } else if statuses.contains(&PhaseStatus::Running) {
            OverallStatus::Running
        } else {
            OverallStatus::Pending
        }
    }

    /// A phase is still `pending` or `running`: the release is being deployed, or was left so
    /// by a process that died (recovery finishes it).
    pub fn is_unfinished(&self) -> bool {
        self.phase_order().iter().any(|p| {
            matches!(
                self.status_of(p),
                PhaseStatus::Pending | PhaseStatus::Running
            )
        })
    }

    /// Phases that are not done (neither completed nor skipped), with their statuses.
    pub fn unfinished_phases(&self) -> Vec<(String, PhaseStatus)> {
        self.phase_statuses()
            .into_iter()
            .filter(|(_, s)| !matches!(s, PhaseStatus::Completed | PhaseStatus::Skipped))
            .collect()
    }

    /// `phase` failed: its status becomes `failed`, `record` fills in its details (the error,
    /// when it finished), and every later phase still pending or running is skipped with
    /// `skipped: <cause>`. The one way a phase fails, for the pipeline, the signal handler and
    /// recovery alike.
    pub fn fail_phase(&mut self, phase: &str, record: impl FnOnce(&mut PhaseDetail), cause: &str) {
        self.phases.insert(phase.to_string(), PhaseStatus::Failed);
        record(self.phase_details.entry(phase.to_string()).or_default());
        self.skip_unfinished_after(phase, cause);
    }

    /// Every phase after `phase` that is still pending or running becomes `skipped`, its summary
    /// `skipped: <cause>`. The one rule for what follows a phase that failed or was interrupted,
    /// shared by the pipeline, the signal handler and recovery.
    pub fn skip_unfinished_after(&mut self, phase: &str, cause: &str) {
        let order = self.phase_order();
        let at = order.iter().position(|p| p == phase).unwrap_or(order.len());
        for later in &order[(at + 1).min(order.len())..] {
            if matches!(
                self.status_of(later),
                PhaseStatus::Pending | PhaseStatus::Running
            ) {
                self.phases.insert(later.clone(), PhaseStatus::Skipped);
                self.phase_details.entry(later.clone()).or_default().summary =
                    Some(format!("skipped: {cause}"));
            }
        }
    }
}
