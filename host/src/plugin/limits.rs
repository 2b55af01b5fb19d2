//! Per-run budgets that are not wasmtime's own: the memory limiter that remembers it tripped,
//! the log budget shared by `host.log` and the guest's stdout/stderr (truncating, never a trap),
//! and the bounds a report must fit in.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use super::types::LogLevel;

/// At most this many outputs in a report.
pub const MAX_OUTPUTS: usize = 64;
/// At most this many bytes of keys plus values in a report's outputs.
pub const MAX_OUTPUT_BYTES: usize = 64 << 10;
/// A longer summary is cut here (it is one line for humans).
pub const MAX_SUMMARY_BYTES: usize = 4 << 10;
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
    pub dropped: u64,
    pub last_stderr: VecDeque<String>,
    partial: [Vec<u8>; 2],
}

/// Stream index into `LogBudget::partial`.
#[derive(Clone, Copy)]
pub(crate) enum Stdio {
    Out = 0,
    Err = 1,
}

/// A line longer than this is emitted in pieces rather than buffered without bound.
const MAX_LINE: usize = 16 << 10;
/// Enough for a Python traceback, which becomes the details of an uncaught exception.
const KEPT_STDERR_LINES: usize = 64;

impl LogBudget {
    pub fn new(out: Emit, limit: u64) -> LogBudget {
        LogBudget {
            out,
            remaining: limit,
            dropped: 0,
            last_stderr: VecDeque::new(),
            partial: [Vec::new(), Vec::new()],
        }
    }

    /// One structured line (host `log`, or a complete stdout/stderr line).
    pub fn emit(&mut self, level: LogLevel, message: &str) {
        let cost = message.len() as u64;
        if cost <= self.remaining {
            self.remaining -= cost;
            (self.out)(level, message.to_string());
        } else {
            self.remaining = 0;
            self.dropped += cost;
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
        while buf.len() > MAX_LINE {
            let piece: Vec<u8> = buf.drain(..MAX_LINE).collect();
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
        if self.dropped > 0 {
            (self.out)(
                LogLevel::Warn,
                format!(
                    "... {} bytes of log dropped (log limit of {limit_text} per phase)",
                    self.dropped
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

/// Cut a summary to one bounded line.
pub fn bounded_summary(summary: &str) -> String {
    let line = summary.lines().next().unwrap_or("");
    if line.len() <= MAX_SUMMARY_BYTES {
        return line.to_string();
    }
    let mut end = MAX_SUMMARY_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
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
        let (mut budget, rx) = channel_budget(10);
        budget.emit(LogLevel::Info, "12345");
        budget.emit(LogLevel::Info, "123456");
        budget.emit(LogLevel::Info, "1234");
        assert!(budget.finish("10B"));
        let lines: Vec<_> = rx.try_iter().map(|(_, m)| m).collect();
        assert_eq!(lines[0], "12345");
        // Once the budget is exceeded everything after is dropped too, so the log is a prefix.
        assert_eq!(lines.len(), 2);
        assert!(
            lines[1].starts_with("... 10 bytes of log dropped"),
            "{lines:?}"
        );
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
