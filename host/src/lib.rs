//! Stagecraft records and runs releases. Every deploy phase is a sandboxed WebAssembly component;
//! the host owns all release state and a plugin can only return a report.
//!
//! Modules, each with one job (see spec/ and ../shared/design/architecture.md):
//! - [`cli`]: flags to calls, exit codes.
//! - [`manifest`]: `stagecraft.toml`, parsed once into a validated model.
//! - [`pipeline`]: the one phase executor shared by deploy and rollback.
//! - [`plugin`]: the wasmtime host, its sandbox and compiled-component cache.
//! - [`state`]: the release model and the transactional `StateStore`.
//! - [`output`]: human tables and `--json`.

// The sandbox of the programs plugins run (Landlock, user and PID namespaces, seccomp, openat2)
// exists only on Linux. Elsewhere, refuse to build rather than ship a sandbox with holes.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "stagecraft builds only for Linux: it confines the programs plugins run with Landlock, \
     user and PID namespaces and seccomp, which other systems do not have"
);

pub mod cli;
pub mod error;
pub mod manifest;
pub mod output;
pub mod pipeline;
pub mod plugin;
pub mod state;
pub mod suggest;
