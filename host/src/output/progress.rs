//! What a person sees while a deploy or rollback waits on something: a plugin compiling for the
//! first time, a phase running, another process holding the environment's lease.
//!
//! On a terminal (stderr is one, `NO_COLOR` is not set, `TERM` is not `dumb`) each of those is
//! one live line on stderr, drawn by indicatif: a spinner, what is happening and the seconds
//! spent (or, for a lease wait, the seconds left), redrawn in place. Lines written meanwhile
//! (plugin logs, phase results) are printed above it, and it is erased when the wait is over.
//! Anywhere else, a compile and a lease wait are said once, as plain lines without control
//! characters, and a running phase is not announced (its result line follows).
//!
//! Only one thing is waited on at a time (plugins load one by one, phases run one by one, and
//! the lease is taken between the two), so there is at most one live line, kept process-wide in
//! [`LIVE`]: messages printed from elsewhere while it is drawn (a commit-lock wait, a lost lease,
//! an interruption) go above it through [`eprint_above`], and a process that exits from a
//! background thread erases it first and keeps it from being drawn again ([`close_live_line`]).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often a live line is redrawn (spinner frame and seconds).
const TICK: Duration = Duration::from_millis(120);

/// Whether progress is drawn live: stderr is a terminal and the environment does not ask for
/// plain output.
pub fn live_wanted() -> bool {
    std::io::stderr().is_terminal()
        && !plain_asked(
            std::env::var_os("NO_COLOR").as_deref(),
            std::env::var_os("TERM").as_deref(),
        )
}

/// `NO_COLOR` set to anything but the empty string (no-color.org), or `TERM=dumb`, asks for
/// output without control sequences.
fn plain_asked(no_color: Option<&OsStr>, term: Option<&OsStr>) -> bool {
    no_color.is_some_and(|v| !v.is_empty()) || term == Some(OsStr::new("dumb"))
}

/// What the live line counts.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// Seconds since it began (`3.2s`).
    Elapsed,
    /// Seconds left of this much (`27s left`).
    Countdown(Duration),
}

/// The live line on the screen, if any (one console per process).
struct Live {
    bar: Option<ProgressBar>,
    /// Set once the process is stopping: no line is drawn again.
    closed: bool,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    bar: None,
    closed: false,
});

/// The lock is held from a line's first draw until it is recorded here, so a thread that
/// erases it (a signal's, exiting) never finds a line on the screen that is not yet in [`LIVE`].
fn live_line() -> std::sync::MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run `write` (which prints whole lines) with the live line out of the way, so what it prints
/// stays on the screen above the line, which is then drawn again below it.
fn above<R>(write: impl FnOnce() -> R) -> R {
    match live_line().bar.as_ref() {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// Print `message` (whole lines) on stderr, above the live line when one is drawn. For what is
/// said outside the pipeline's events; the text must already be escaped.
pub fn eprint_above(message: &str) {
    above(|| {
        let _ = writeln!(std::io::stderr().lock(), "{message}");
    });
}

/// Erase the live line, if one is drawn.
pub fn erase_live_line() {
    if let Some(bar) = live_line().bar.take() {
        bar.finish_and_clear();
    }
}

/// Erase the live line and draw none again: what a process exiting from a thread that cannot
/// return through the command calls first (error::stop_process), while main may still be
/// beginning a wait.
pub fn close_live_line() {
    let mut live = live_line();
    live.closed = true;
    if let Some(bar) = live.bar.take() {
        bar.finish_and_clear();
    }
}

/// The one live line, or plain lines.
pub struct Progress {
    live: bool,
}

impl Progress {
    pub fn new(live: bool) -> Self {
        Progress { live }
    }

    /// Begin a wait. Live: a spinner line `{prefix} ⠋ {message} {clock}` replaces any earlier
    /// one. Plain: `plain`, when given, is printed once on stderr. Both texts must already be
    /// escaped (see `terminal::escape_controls`).
    pub fn begin(&self, prefix: &str, message: &str, clock: Clock, plain: Option<&str>) {
        let mut live = live_line();
        if let Some(bar) = live.bar.take() {
            bar.finish_and_clear();
        }
        if !self.live {
            if let Some(line) = plain {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            return;
        }
        if live.closed {
            return;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
            .with_style(style(clock))
            .with_prefix(prefix.to_string())
            .with_message(message.to_string());
        // Drawn now, not at the ticker thread's first turn: a wait shorter than a tick is still
        // seen (and a test can look for it).
        bar.tick();
        bar.enable_steady_tick(TICK);
        live.bar = Some(bar);
    }

    /// The wait is over: erase the live line (nothing to do for plain output).
    pub fn end(&self) {
        erase_live_line();
    }

    /// [`above`]: print whole lines above the live line.
    pub fn above<R>(&self, write: impl FnOnce() -> R) -> R {
        above(write)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.end();
    }
}

fn style(clock: Clock) -> ProgressStyle {
    let template = match clock {
        Clock::Elapsed => "{prefix}{spinner} {wide_msg} {clock}",
        Clock::Countdown(_) => "{prefix}{spinner} {wide_msg} {clock} left",
    };
    ProgressStyle::with_template(template)
        .expect("the progress template is valid")
        .tick_strings(&["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏", "✓"])
        .with_key(
            "clock",
            move |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = out.write_str(&clock_text(clock, state.elapsed()));
            },
        )
}

/// `3.2s` spent, or whole seconds left (never below zero).
fn clock_text(clock: Clock, elapsed: Duration) -> Cow<'static, str> {
    match clock {
        Clock::Elapsed => format!("{:.1}s", elapsed.as_secs_f64()).into(),
        Clock::Countdown(total) => {
            format!("{}s", total.saturating_sub(elapsed).as_secs_f64().ceil()).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_or_a_dumb_terminal_asks_for_plain_lines() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert!(!plain_asked(None, os("xterm-256color")));
        assert!(!plain_asked(None, None));
        assert!(plain_asked(os("1"), os("xterm")));
        // no-color.org: an empty NO_COLOR does not count.
        assert!(!plain_asked(os(""), os("xterm")));
        assert!(plain_asked(None, os("dumb")));
    }

    #[test]
    fn the_clock_counts_up_or_down() {
        let at = Duration::from_millis(3_240);
        assert_eq!(clock_text(Clock::Elapsed, at), "3.2s");
        let wait = Duration::from_secs(30);
        assert_eq!(clock_text(Clock::Countdown(wait), at), "27s");
        assert_eq!(
            clock_text(Clock::Countdown(wait), Duration::from_secs(40)),
            "0s"
        );
    }

    #[test]
    fn plain_progress_runs_writes_in_place_and_keeps_no_line() {
        let progress = Progress::new(false);
        progress.begin("", "compiling", Clock::Elapsed, None);
        assert_eq!(progress.above(|| 7), 7);
        assert!(live_line().bar.is_none());
        progress.end();
    }
}
