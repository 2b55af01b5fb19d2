//! Runs phase plugins: one wasmtime Engine per process, a compiled-component cache on disk, and a
//! fresh sandboxed Store per run with only the manifest's grants.

mod types;

pub use types::*;
