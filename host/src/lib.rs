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

pub mod cli;
pub mod error;
pub mod manifest;
pub mod output;
pub mod pipeline;
pub mod plugin;
pub mod state;
