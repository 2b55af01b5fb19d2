//! Rendering for people (tables, one line per phase) and for machines (`--json`), and the one
//! way commands reach standard output ([`stdout`], [`print`]).

pub mod deploy;
pub mod logs;
pub mod plan;
pub mod progress;
pub mod releases;
pub mod status;
pub mod table;
pub mod terminal;

/// Standard output, for a command's result. Every command writes through this or [`print`] and
/// returns write errors as they are: `cli::main` alone judges them, and a closed pipe
/// (`stagecraft plugin check x.wasm | head`) ends the output with exit 0 instead of a panic.
/// (A deploy's phase lines are the exception: output/deploy.rs ignores write errors so that a
/// closed stdout never stops a release half-way.)
pub fn stdout() -> std::io::StdoutLock<'static> {
    std::io::stdout().lock()
}

/// Write `text` to standard output whole and flush it; see [`stdout`].
pub fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = stdout();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| anyhow::Error::new(e).context("writing to standard output"))
}
