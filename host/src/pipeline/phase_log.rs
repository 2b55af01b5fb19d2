//! What a phase logged, kept while it runs and bounded before the store keeps it
//! (spec/pipeline.md, "Phase logs").
//!
//! The end of a long log is kept, not its start: a failing phase's last lines say why it
//! failed, and the per-run log budget (spec/plugin-abi.md) already ends a flood with a line
//! saying how much was dropped. A log that had to be cut ends with one more line saying how many
//! earlier lines were cut and why.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::plugin::{format_bytes, LogLevel, LogSink};
use crate::state::{LogCut, LogLine, PhaseLog, Timestamp};

/// The most one phase's kept log holds.
pub const PHASE_LOG_BOUND: u64 = 128 << 10;
/// The most one release's kept logs hold together.
pub const RELEASE_LOG_BOUND: u64 = 1 << 20;
/// What a kept line costs the bounds on top of its message bytes: its time and level, and a
/// floor so that a flood of empty lines is bounded like any other.
pub const KEPT_LINE_COST: u64 = 64;

/// How much of the release's log bound is left for the phases still to run.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseLogBudget {
    left: u64,
    phases_left: u64,
}

impl ReleaseLogBudget {
    /// For a release whose pipeline runs `phases` plugins.
    pub fn new(phases: usize) -> Self {
        ReleaseLogBudget {
            left: RELEASE_LOG_BOUND,
            phases_left: phases as u64,
        }
    }

    /// The bound of the next phase's log: [`PHASE_LOG_BOUND`], or less when the release's bound
    /// left, shared evenly among the phases still to run, is less. Every phase is sure of its
    /// share, however much the earlier ones logged.
    pub fn next_phase(&self) -> PhaseBound {
        let share = self.left / self.phases_left.max(1);
        if share >= PHASE_LOG_BOUND {
            PhaseBound {
                bytes: PHASE_LOG_BOUND,
                why: format!(
                    "a phase keeps the last {} of its log",
                    format_bytes(PHASE_LOG_BOUND)
                ),
            }
        } else {
            PhaseBound {
                bytes: share,
                why: format!(
                    "a release keeps at most {} of logs, shared by its phases; this phase's \
                     share was {share} bytes",
                    format_bytes(RELEASE_LOG_BOUND)
                ),
            }
        }
    }

    /// A phase's log, `cost` bytes, was kept.
    pub fn spent(&mut self, cost: u64) {
        self.left = self.left.saturating_sub(cost);
        self.phases_left = self.phases_left.saturating_sub(1);
    }
}

/// How much of its log a phase keeps, and why that much.
#[derive(Debug, Clone)]
pub struct PhaseBound {
    pub bytes: u64,
    pub why: String,
}

/// Keeps the end of one phase's log within its bound, as lines arrive.
pub struct PhaseLogKeeper {
    phase: String,
    bound: PhaseBound,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    lines: VecDeque<LogLine>,
    cost: u64,
    cut_lines: u64,
    cut_bytes: u64,
}

impl Kept {
    fn push(&mut self, line: LogLine) {
        self.cost += cost(&line);
        self.lines.push_back(line);
    }

    /// Cut lines from the start until `cost` is at most `bound` (all of them if need be).
    fn cut_to(&mut self, bound: u64) {
        while self.cost > bound {
            let Some(first) = self.lines.pop_front() else {
                break;
            };
            self.cost -= cost(&first);
            self.cut_lines += 1;
            self.cut_bytes += first.message.len() as u64;
        }
    }
}

fn cost(line: &LogLine) -> u64 {
    KEPT_LINE_COST + line.message.len() as u64
}

impl PhaseLogKeeper {
    pub fn new(phase: &str, bound: PhaseBound) -> Self {
        PhaseLogKeeper {
            phase: phase.to_string(),
            bound,
            kept: Mutex::new(Kept::default()),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep one line (a message of several lines is kept as several lines, as the console
    /// shows it).
    pub fn keep(&self, level: LogLevel, message: &str) {
        let time = Timestamp::now().as_str().to_string();
        let mut kept = self.kept();
        // `lines()` of "" is nothing, but an empty message is still a line the console showed.
        let mut pieces: Vec<&str> = message.lines().collect();
        if pieces.is_empty() {
            pieces.push("");
        }
        for piece in pieces {
            kept.push(LogLine {
                time: time.clone(),
                level: level.as_str().to_string(),
                message: piece.to_string(),
            });
        }
        kept.cut_to(self.bound.bytes);
    }

    /// The log as kept so far, ending with the note about what was cut (if anything was), and
    /// what it costs the release's bound. Leaves the keeper empty.
    pub fn finish(&self) -> (PhaseLog, u64) {
        let mut kept = std::mem::take(&mut *self.kept());
        let mut note = None;
        if kept.cut_lines > 0 {
            // The note makes room for itself: each line it cuts is counted in it.
            loop {
                let line = LogLine {
                    time: Timestamp::now().as_str().to_string(),
                    level: LogLevel::Warn.as_str().to_string(),
                    message: format!(
                        "... {} earlier line{} ({} bytes) of this log cut: {}",
                        kept.cut_lines,
                        if kept.cut_lines == 1 { "" } else { "s" },
                        kept.cut_bytes,
                        self.bound.why
                    ),
                };
                if kept.cost + cost(&line) <= self.bound.bytes || kept.lines.is_empty() {
                    note = Some(line);
                    break;
                }
                kept.cut_to(kept.cost - 1);
            }
        }
        let cut = note.is_some().then(|| LogCut {
            lines: kept.cut_lines,
            bytes: kept.cut_bytes,
            bound: self.bound.bytes,
            why: self.bound.why.clone(),
        });
        if let Some(note) = note {
            kept.push(note);
        }
        let log = PhaseLog {
            phase: self.phase.clone(),
            lines: kept.lines.into(),
            cut,
        };
        (log, kept.cost)
    }
}

/// The console's sink and the phase's keeper, fed the same lines.
pub struct Tee<'a> {
    pub console: &'a dyn LogSink,
    pub keeper: &'a PhaseLogKeeper,
}

impl LogSink for Tee<'_> {
    fn log(&self, level: LogLevel, message: &str) {
        self.console.log(level, message);
        self.keeper.keep(level, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(bytes: u64) -> PhaseBound {
        PhaseBound {
            bytes,
            why: "test bound".into(),
        }
    }

    fn total(log: &PhaseLog) -> u64 {
        log.lines.iter().map(cost).sum()
    }

    #[test]
    fn a_short_log_is_kept_whole_with_no_note() {
        let keeper = PhaseLogKeeper::new("build", bound(PHASE_LOG_BOUND));
        keeper.keep(LogLevel::Info, "one");
        keeper.keep(LogLevel::Warn, "two\nthree");
        keeper.keep(LogLevel::Info, "");
        let (log, spent) = keeper.finish();
        let messages: Vec<&str> = log.lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["one", "two", "three", ""]);
        assert_eq!(log.lines[1].level, "warn");
        assert_eq!(log.cut, None);
        assert_eq!(spent, total(&log));
    }

    #[test]
    fn a_long_log_keeps_its_end_and_says_what_was_cut_within_the_bound() {
        let keeper = PhaseLogKeeper::new("build", bound(4096));
        for i in 0..1000 {
            keeper.keep(LogLevel::Info, &format!("line {i:04}"));
        }
        let (log, spent) = keeper.finish();
        assert!(spent <= 4096, "{spent}");
        assert_eq!(spent, total(&log));
        let last = log.lines.last().unwrap();
        let cut = log.cut.as_ref().unwrap();
        assert_eq!(
            last.message,
            format!(
                "... {} earlier lines ({} bytes) of this log cut: test bound",
                cut.lines, cut.bytes
            )
        );
        assert_eq!(last.level, "warn");
        // The line before the note is the last one logged, and nothing between is missing.
        let kept = &log.lines[..log.lines.len() - 1];
        assert_eq!(kept.last().unwrap().message, "line 0999");
        assert_eq!(cut.lines as usize + kept.len(), 1000);
        assert_eq!(cut.bytes, cut.lines * 9);
        assert_eq!(kept[0].message, format!("line {:04}", cut.lines));
    }

    #[test]
    fn a_line_larger_than_the_bound_leaves_only_the_note() {
        let keeper = PhaseLogKeeper::new("build", bound(256));
        keeper.keep(LogLevel::Info, &"x".repeat(1000));
        let (log, _) = keeper.finish();
        assert_eq!(log.lines.len(), 1);
        assert_eq!(log.cut.as_ref().unwrap().lines, 1);
        assert_eq!(log.cut.as_ref().unwrap().bytes, 1000);
    }

    #[test]
    fn the_release_bound_is_shared_so_that_every_phase_keeps_its_share() {
        // Eight phases or fewer each keep a phase's whole bound.
        assert_eq!(ReleaseLogBudget::new(8).next_phase().bytes, PHASE_LOG_BOUND);
        let mut budget = ReleaseLogBudget::new(10);
        let first = budget.next_phase();
        assert_eq!(first.bytes, RELEASE_LOG_BOUND / 10);
        assert!(first.why.contains("1MiB"), "{}", first.why);
        let mut spent = 0;
        for _ in 0..10 {
            let b = budget.next_phase();
            assert!(b.bytes >= RELEASE_LOG_BOUND / 10);
            spent += b.bytes;
            budget.spent(b.bytes);
        }
        assert!(spent <= RELEASE_LOG_BOUND);
        // Quiet phases leave more to the later ones, up to a phase's own bound.
        let mut budget = ReleaseLogBudget::new(10);
        for _ in 0..5 {
            budget.spent(0);
        }
        assert_eq!(budget.next_phase().bytes, PHASE_LOG_BOUND);
        assert!(budget.next_phase().why.contains("128KiB"));
    }
}
