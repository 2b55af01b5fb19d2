//! Per-run budgets that are not wasmtime's own: the memory limiter that remembers it tripped,
//! the log budget shared by `host.log` and the guest's stdout/stderr (truncating, never a trap),
//! and the bounds every string a plugin hands the host is cut to before it is kept or printed
//! (spec/plugin-abi.md, "Bounds on plugin text").

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use super::types::LogLevel;

/// Bytes one call may copy out of a guest (its arguments to a host function, or what an export
/// returns): wasmtime's "hostcall fuel". Past it the call fails ("too much data is being copied
/// between the host and the guest"), so host memory per run stays within the guest's memory
/// limit plus this.
pub const MAX_COPIED_PER_CALL: usize = 128 << 20;

/// At most this many outputs in a report.
pub const MAX_OUTPUTS: usize = 64;
/// At most this many bytes of keys plus values in a report's outputs.
pub const MAX_OUTPUT_BYTES: usize = 64 << 10;
/// A longer summary is cut here (it is one line for humans).
pub const MAX_SUMMARY_BYTES: usize = 4 << 10;
/// A longer skip reason is cut here (it becomes the phase's summary).
pub const MAX_SKIP_REASON_BYTES: usize = 4 << 10;
/// A longer error message is cut here (it is the phase's one-line `error`).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4 << 10;
/// Longer error details keep their last this many bytes (the end of a log is where the error
/// is).
pub const MAX_ERROR_DETAILS_BYTES: usize = 64 << 10;
/// A longer Python traceback keeps its end (the frames nearest the raise).
pub const MAX_TRACEBACK_BYTES: usize = 16 << 10;
/// A longer log line (`host.log`) is cut here; stdout/stderr text is split into pieces of this
/// size instead, because it has no message boundaries of its own.
pub const MAX_LOG_LINE_BYTES: usize = 16 << 10;
/// What every log line costs the log budget on top of its bytes, so that a loop of empty lines
/// runs out of budget like any other flood (it costs the host a tagged terminal line each).
pub const LOG_LINE_COST: u64 = 64;
/// An `exec` program name longer than this is refused (no program on PATH has such a name; the
/// refusal shows it cut to this size).
pub const MAX_EXEC_PROGRAM_BYTES: usize = 256;
/// An `exec` argument longer than this is refused: Linux refuses one longer than 128 KiB
/// (MAX_ARG_STRLEN) anyway, so no working program call is lost.
pub const MAX_EXEC_ARG_BYTES: usize = 128 << 10;
/// At most this many `exec` arguments.
pub const MAX_EXEC_ARGS: usize = 4096;
/// At most this many bytes of `exec` arguments in all (Linux's usual ARG_MAX is 2 MiB).
pub const MAX_EXEC_ARGS_TOTAL_BYTES: usize = 1 << 20;
/// A run remembers at most this many sandbox refusals (the first one is what a failure names).
pub const MAX_REFUSALS: usize = 16;
/// A refusal message is cut here before it is remembered or logged.
pub const MAX_REFUSAL_BYTES: usize = 4 << 10;
/// Table elements one run may allocate (function references; a few thousand is typical).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Counts linear memory across the instance's memories and refuses growth past the limit.
/// Refusing (rather than trapping) lets a guest handle it; the run's failure still names the
/// limit because `tripped` is remembered.
pub(crate) struct MemoryLimiter {
    pub limit: usize,
    pub used: usize,
    pub tripped: bool,
}

impl MemoryLimiter {
    pub fn new(limit: u64) -> MemoryLimiter {
        MemoryLimiter {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            used: 0,
            tripped: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        if self.used.saturating_add(growth) > self.limit {
            self.tripped = true;
            return Ok(false);
        }
        self.used += growth;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Where kept log lines go (in a run: a channel to the thread that owns the caller's sink).
pub(crate) type Emit = Box<dyn Fn(LogLevel, String) + Send>;

/// The log volume budget of one run. Lines within budget go to the sink at once; the rest are
/// counted and reported by one final line. The last few stderr lines are kept even when dropped,
/// because a crash message is the most useful thing a trap can carry.
pub(crate) struct LogBudget {
    out: Emit,
    remaining: u64,
    /// Bytes of the lines dropped for want of budget.
    pub dropped: u64,
    /// How many lines were dropped (an empty line is a line too).
    pub dropped_lines: u64,
    pub last_stderr: VecDeque<String>,
    partial: [Vec<u8>; 2],
}

/// Stream index into `LogBudget::partial`.
#[derive(Clone, Copy)]
pub(crate) enum Stdio {
    Out = 0,
    Err = 1,
}

/// Enough for a Python traceback, which becomes the details of an uncaught exception.
const KEPT_STDERR_LINES: usize = 64;

impl LogBudget {
    pub fn new(out: Emit, limit: u64) -> LogBudget {
        LogBudget {
            out,
            remaining: limit,
            dropped: 0,
            dropped_lines: 0,
            last_stderr: VecDeque::new(),
            partial: [Vec::new(), Vec::new()],
        }
    }

    /// One structured line (host `log`, or a complete stdout/stderr line). It costs its bytes
    /// plus [`LOG_LINE_COST`]; what is passed on is cut to [`MAX_LOG_LINE_BYTES`].
    pub fn emit(&mut self, level: LogLevel, message: &str) {
        let cost = LOG_LINE_COST.saturating_add(message.len() as u64);
        if cost <= self.remaining {
            self.remaining -= cost;
            (self.out)(level, bounded(message, MAX_LOG_LINE_BYTES).into_owned());
        } else {
            self.remaining = 0;
            self.dropped = self.dropped.saturating_add(message.len() as u64);
            self.dropped_lines += 1;
        }
    }

    /// Raw bytes from the guest's stdout or stderr, split into lines.
    pub fn write_stdio(&mut self, stream: Stdio, bytes: &[u8]) {
        let mut buf = std::mem::take(&mut self.partial[stream as usize]);
        buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(&buf[start..start + pos]).into_owned();
            self.stdio_line(stream, line);
            start += pos + 1;
        }
        buf.drain(..start);
        while buf.len() > MAX_LOG_LINE_BYTES {
            let piece: Vec<u8> = buf.drain(..MAX_LOG_LINE_BYTES).collect();
            self.stdio_line(stream, String::from_utf8_lossy(&piece).into_owned());
        }
        self.partial[stream as usize] = buf;
    }

    fn stdio_line(&mut self, stream: Stdio, line: String) {
        match stream {
            Stdio::Out => self.emit(LogLevel::Info, &line),
            Stdio::Err => {
                if self.last_stderr.len() == KEPT_STDERR_LINES {
                    self.last_stderr.pop_front();
                }
                self.last_stderr.push_back(line.clone());
                self.emit(LogLevel::Warn, &line);
            }
        }
    }

    /// Emit unterminated stdout/stderr text and the note about dropped bytes. Returns whether
    /// anything was dropped.
    pub fn finish(&mut self, limit_text: &str) -> bool {
        for stream in [Stdio::Out, Stdio::Err] {
            let rest = std::mem::take(&mut self.partial[stream as usize]);
            if !rest.is_empty() {
                self.stdio_line(stream, String::from_utf8_lossy(&rest).into_owned());
            }
        }
        if self.dropped_lines > 0 {
            (self.out)(
                LogLevel::Warn,
                format!(
                    "... {} bytes of log dropped in {} lines (log limit of {limit_text} per phase)",
                    self.dropped, self.dropped_lines
                ),
            );
            true
        } else {
            false
        }
    }
}

/// The guest's stdout or stderr: every write goes into the shared [`LogBudget`]. Writes always
/// succeed, so a chatty guest is truncated, never trapped.
#[derive(Clone)]
pub(crate) struct StdioCapture {
    pub budget: Arc<Mutex<LogBudget>>,
    pub stream: Stdio,
}

impl StdioCapture {
    fn write_bytes(&self, bytes: &[u8]) {
        // A poisoned lock means a host thread panicked mid-write; dropping output is the only
        // safe thing left to do with it.
        if let Ok(mut budget) = self.budget.lock() {
            budget.write_stdio(self.stream, bytes);
        }
    }
}

impl IsTerminal for StdioCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StdioCapture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for StdioCapture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.write_bytes(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 << 10)
    }
}

#[async_trait]
impl Pollable for StdioCapture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StdioCapture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// "1MiB", "512KiB", "100B": how limits are shown in messages.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// Whether a report's outputs fit the bounds.
pub fn outputs_within_bounds<'a>(outputs: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
    let mut count = 0usize;
    let mut bytes = 0usize;
    for (k, v) in outputs {
        count += 1;
        bytes += k.len() + v.len();
    }
    count <= MAX_OUTPUTS && bytes <= MAX_OUTPUT_BYTES
}

/// The outputs bound as shown in a failure.
pub fn outputs_limit_text() -> String {
    format!(
        "{MAX_OUTPUTS} entries / {}",
        format_bytes(MAX_OUTPUT_BYTES as u64)
    )
}

/// What ends (or, for a kept tail, starts) text the host cut: `… [cut <n> bytes]`, where `n`
/// is how many bytes of the plugin's text were removed.
pub fn cut_marker(removed: usize) -> String {
    format!("… [cut {removed} bytes]")
}

/// `text` when it fits in `max` bytes; otherwise its longest prefix of at most `max` bytes that
/// ends on a character boundary, followed by [`cut_marker`]. Borrows when nothing is cut.
pub(crate) fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let end = text.floor_char_boundary(max);
    let mut out = String::with_capacity(end + 32);
    out.push_str(&text[..end]);
    out.push_str(&cut_marker(text.len() - end));
    Cow::Owned(out)
}

/// `text` when it fits in `max` bytes; otherwise [`cut_marker`] followed by its longest suffix
/// of at most `max` bytes that starts on a character boundary (for logs and tracebacks, whose
/// end says what went wrong).
pub(crate) fn bounded_tail(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let start = text.ceil_char_boundary(text.len() - max);
    Cow::Owned(format!("{}\n{}", cut_marker(start), &text[start..]))
}

/// The first line of `text`, [`bounded`] to `max` bytes: summaries, skip reasons and error
/// messages are one line for humans.
pub(crate) fn bounded_line(text: &str, max: usize) -> String {
    bounded(text.lines().next().unwrap_or(""), max).into_owned()
}

/// Cut a summary to one bounded line.
pub fn bounded_summary(summary: &str) -> String {
    bounded_line(summary, MAX_SUMMARY_BYTES)
}

/// Why `exec(program, args)` is refused before anything is looked up, when the plugin handed
/// over more text than any real program call needs; the reason shows the program name cut to
/// [`MAX_EXEC_PROGRAM_BYTES`]. `None` when the call is within bounds.
pub(crate) fn exec_call_out_of_bounds(program: &str, args: &[String]) -> Option<String> {
    let shown = bounded(program, MAX_EXEC_PROGRAM_BYTES);
    if program.len() > MAX_EXEC_PROGRAM_BYTES {
        return Some(format!(
            "exec of `{shown}` refused: a program name is at most {MAX_EXEC_PROGRAM_BYTES} bytes"
        ));
    }
    if args.len() > MAX_EXEC_ARGS {
        return Some(format!(
            "exec of `{shown}` refused: {} arguments, more than the {MAX_EXEC_ARGS} allowed",
            args.len()
        ));
    }
    if let Some((i, arg)) = args
        .iter()
        .enumerate()
        .find(|(_, a)| a.len() > MAX_EXEC_ARG_BYTES)
    {
        return Some(format!(
            "exec of `{shown}` refused: argument {} is {} bytes, more than the {} allowed",
            i + 1,
            arg.len(),
            format_bytes(MAX_EXEC_ARG_BYTES as u64)
        ));
    }
    let total: usize = args.iter().map(String::len).sum();
    if total > MAX_EXEC_ARGS_TOTAL_BYTES {
        return Some(format!(
            "exec of `{shown}` refused: its arguments are {total} bytes in all, more than the {} \
             allowed",
            format_bytes(MAX_EXEC_ARGS_TOTAL_BYTES as u64)
        ));
    }
    None
}

/// Remember one sandbox refusal: cut to [`MAX_REFUSAL_BYTES`], and only while fewer than
/// [`MAX_REFUSALS`] are kept (a failure names the first; the rest only need to be bounded).
pub(crate) fn keep_refusal(refusals: &mut Vec<String>, reason: &str) {
    if refusals.len() < MAX_REFUSALS {
        refusals.push(bounded(reason, MAX_REFUSAL_BYTES).into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Receiver};

    fn channel_budget(limit: u64) -> (LogBudget, Receiver<(LogLevel, String)>) {
        let (tx, rx) = channel();
        let tx = Mutex::new(tx);
        let emit: Emit = Box::new(move |level, message| {
            let _ = tx.lock().unwrap().send((level, message));
        });
        (LogBudget::new(emit, limit), rx)
    }

    #[test]
    fn budget_truncates_and_reports_dropped_bytes() {
        let limit = 2 * LOG_LINE_COST + 10;
        let (mut budget, rx) = channel_budget(limit);
        budget.emit(LogLevel::Info, "12345");
        budget.emit(LogLevel::Info, "123456");
        budget.emit(LogLevel::Info, "1234");
        assert!(budget.finish("138B"));
        let lines: Vec<_> = rx.try_iter().map(|(_, m)| m).collect();
        assert_eq!(lines[0], "12345");
        // Once the budget is exceeded everything after is dropped too, so the log is a prefix.
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1],
            "... 10 bytes of log dropped in 2 lines (log limit of 138B per phase)"
        );
    }

    #[test]
    fn every_line_costs_at_least_the_fixed_amount() {
        let limit = 1 << 20;
        let (mut budget, rx) = channel_budget(limit);
        let mut sent = 0u64;
        while budget.dropped_lines == 0 {
            budget.emit(LogLevel::Info, "");
            sent += 1;
            assert!(sent <= limit, "empty lines never ran out of budget");
        }
        assert_eq!(sent - 1, limit / LOG_LINE_COST);
        assert!(budget.finish("1MiB"));
        let last = rx.try_iter().last().unwrap().1;
        assert_eq!(
            last,
            "... 0 bytes of log dropped in 1 lines (log limit of 1MiB per phase)"
        );
        // Empty stdout lines count the same.
        let (mut budget, _rx) = channel_budget(10 * LOG_LINE_COST);
        budget.write_stdio(Stdio::Out, &[b'\n'; 11]);
        assert_eq!(budget.dropped_lines, 1);
    }

    #[test]
    fn a_long_log_line_is_cut_with_the_marker() {
        let (mut budget, rx) = channel_budget(1 << 20);
        budget.emit(LogLevel::Info, &"é".repeat(MAX_LOG_LINE_BYTES));
        let (_, line) = rx.try_iter().next().unwrap();
        let kept = "é".repeat(MAX_LOG_LINE_BYTES / 2);
        assert_eq!(line, format!("{kept}… [cut {} bytes]", MAX_LOG_LINE_BYTES));
    }

    #[test]
    fn bounded_cuts_at_a_char_boundary_and_says_how_much() {
        assert!(matches!(bounded("short", 5), Cow::Borrowed("short")));
        assert_eq!(bounded("abcdefgh", 3), "abc… [cut 5 bytes]");
        // 'é' is two bytes: a cut inside it moves back to the boundary, and N counts the half.
        assert_eq!(bounded("aéé", 2), "a… [cut 4 bytes]");
        assert_eq!(bounded("日本語", 4), "日… [cut 6 bytes]");
        assert_eq!(bounded("日本語", 0), "… [cut 9 bytes]");
        let big = bounded(&"\u{1}".repeat(50 << 20), MAX_SKIP_REASON_BYTES).into_owned();
        assert_eq!(
            big,
            format!(
                "{}… [cut {} bytes]",
                "\u{1}".repeat(MAX_SKIP_REASON_BYTES),
                (50 << 20) - MAX_SKIP_REASON_BYTES
            )
        );
        assert!(
            big.capacity() < 2 * MAX_SKIP_REASON_BYTES,
            "{}",
            big.capacity()
        );
    }

    #[test]
    fn bounded_tail_keeps_the_end_after_the_marker() {
        assert!(matches!(bounded_tail("short", 5), Cow::Borrowed("short")));
        assert_eq!(bounded_tail("abcdefgh", 3), "… [cut 5 bytes]\nfgh");
        assert_eq!(bounded_tail("ééa", 2), "… [cut 4 bytes]\na");
    }

    #[test]
    fn lines_keep_their_first_line_then_are_cut() {
        assert_eq!(bounded_line("one\ntwo", 10), "one");
        assert_eq!(bounded_line("", 10), "");
        assert_eq!(
            bounded_summary(&"x".repeat(MAX_SUMMARY_BYTES + 7)),
            format!("{}… [cut 7 bytes]", "x".repeat(MAX_SUMMARY_BYTES))
        );
    }

    #[test]
    fn exec_calls_beyond_the_bounds_are_refused_naming_the_bound() {
        assert_eq!(
            exec_call_out_of_bounds("git", &["status".to_string()]),
            None
        );
        let long_name = "g".repeat(64 << 20);
        let why = exec_call_out_of_bounds(&long_name, &[]).unwrap();
        assert!(why.len() < 1024, "{}", why.len());
        assert!(
            why.contains(&cut_marker((64 << 20) - MAX_EXEC_PROGRAM_BYTES)),
            "{why}"
        );
        let one_big = vec!["a".repeat(MAX_EXEC_ARG_BYTES + 1)];
        assert!(exec_call_out_of_bounds("git", &one_big)
            .unwrap()
            .contains("argument 1 is 131073 bytes, more than the 128KiB allowed"));
        let many = vec![String::new(); MAX_EXEC_ARGS + 1];
        assert!(exec_call_out_of_bounds("git", &many).is_some());
        let wide = vec!["a".repeat(MAX_EXEC_ARG_BYTES); 9];
        assert!(exec_call_out_of_bounds("git", &wide)
            .unwrap()
            .contains("more than the 1MiB allowed"));
    }

    #[test]
    fn refusals_are_bounded_in_number_and_size() {
        let mut refusals = Vec::new();
        for _ in 0..1000 {
            keep_refusal(&mut refusals, &"r".repeat(1 << 20));
        }
        assert_eq!(refusals.len(), MAX_REFUSALS);
        assert!(refusals.iter().all(|r| r.len() < MAX_REFUSAL_BYTES + 32));
    }

    #[test]
    fn stdio_is_split_into_lines_and_remembers_stderr() {
        let (mut budget, rx) = channel_budget(1 << 20);
        budget.write_stdio(Stdio::Out, b"a\nb");
        budget.write_stdio(Stdio::Out, b"c\n");
        budget.write_stdio(Stdio::Err, b"boom");
        assert!(!budget.finish("1MiB"));
        let lines: Vec<_> = rx.try_iter().collect();
        assert_eq!(
            lines,
            vec![
                (LogLevel::Info, "a".to_string()),
                (LogLevel::Info, "bc".to_string()),
                (LogLevel::Warn, "boom".to_string())
            ]
        );
        assert_eq!(budget.last_stderr.back().unwrap(), "boom");
    }

    #[test]
    fn memory_limiter_counts_all_growth() {
        use wasmtime::ResourceLimiter;
        let mut m = MemoryLimiter::new(100);
        assert!(m.memory_growing(0, 60, None).unwrap());
        assert!(!m.memory_growing(60, 120, None).unwrap());
        assert!(m.tripped);
    }

    #[test]
    fn formats_and_bounds() {
        assert_eq!(format_bytes(512 << 20), "512MiB");
        assert_eq!(format_bytes(1000), "1000B");
        assert_eq!(outputs_limit_text(), "64 entries / 64KiB");
        let many: Vec<(String, String)> = (0..65).map(|i| (i.to_string(), String::new())).collect();
        assert!(!outputs_within_bounds(
            many.iter().map(|(k, v)| (k.as_str(), v.as_str()))
        ));
        assert_eq!(bounded_summary("one\ntwo"), "one");
    }
}
