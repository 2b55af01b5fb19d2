//! Runs phase plugins: one wasmtime Engine per process, a compiled-component cache on disk, and a
//! fresh sandboxed Store per run with only the manifest's grants.
//!
//! - [`PluginHost::load`] reads and checks a component, compiles it (or loads the cached
//!   compilation) and links it once ([`LoadedPlugin`] holds the `InstancePre`).
//! - [`PluginHost::run`] instantiates it in a new store per phase run ([`run`]).
//! - [`check_phase_grants`] keeps the state, the cache, the manifest and plugin files and the
//!   state's credentials out of every grant ([`grants`]).

mod bindings;
mod builtin;
mod cache;
mod confine;
mod engine;
mod grants;
mod imports;
mod limits;
mod load;
pub mod net;
mod open_grants;
mod run;
mod types;

pub use builtin::builtin_names;
pub use cache::sha256_hex;
pub use confine::{
    harden_process, kill_running, unsupported_reason as exec_confinement_unsupported,
};
pub use grants::{
    check_grants, check_phase_grants, guest_path, GrantRefusal, Protected, RefusedGrant,
};
pub use imports::EXEC_OUTPUT_CAP;
pub use limits::{format_bytes, MAX_OUTPUTS, MAX_OUTPUT_BYTES, MAX_SUMMARY_BYTES};
pub use load::{
    component_bytes, component_digest, ComponentSummary, COMPILE_TIMEOUT, MAX_COMPONENT_BYTES,
    SUPPORTED_WIT,
};
pub use run::PhaseRun;
pub use run::DESCRIBE_TIMEOUT;
pub use types::*;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::Engine;

use bindings::PhasePluginPre;
use imports::RunState;

/// Loads and runs phase plugins. Create one per process and share it.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<RunState>,
    cache_dir: Option<PathBuf>,
    /// `cache_dir` once [`cache::prepare_dir`] accepted it (checked at the first load);
    /// `Err` says why it is not used.
    private_cache: OnceLock<Result<PathBuf, cache::Unusable>>,
    /// How long compiling one component may take (see [`load::COMPILE_TIMEOUT`]).
    compile_timeout: Duration,
    /// Components already loaded by this host, by sha256.
    loaded: Mutex<HashMap<String, LoadedPlugin>>,
}

/// A checked, compiled and linked component, ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct LoadedPlugin {
    name: String,
    digest: String,
    was_cached: bool,
    load_time: Duration,
    cache_note: Option<String>,
    summary: ComponentSummary,
    pre: PhasePluginPre<RunState>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("was_cached", &self.was_cached)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// `builtin:<name>` or the file path, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Lowercase hex sha256 of the component bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }
    /// True when no compilation was needed (on-disk cache or this host's memory).
    pub fn was_cached(&self) -> bool {
        self.was_cached
    }
    /// Reading, checking, compiling or deserializing, and linking.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }
    /// Why the on-disk cache was not used or not written, when that happened (`--verbose`).
    pub fn cache_note(&self) -> Option<&str> {
        self.cache_note.as_deref()
    }
    /// The component's WIT version and imports (what `plugin check` prints).
    pub fn summary(&self) -> &ComponentSummary {
        &self.summary
    }
}

impl PluginHost {
    /// A host whose compiled-component cache is `cache_dir`, else `STAGECRAFT_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/stagecraft`, else `~/.cache/stagecraft`.
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<PluginHost> {
        let engine = engine::shared_engine()?;
        let mut linker = Linker::<RunState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link WASI: {e:#}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link wasi:http: {e:#}"))?;
        // Our own interfaces only: WASI and wasi:http are linked above.
        bindings::stagecraft::phase::host::add_to_linker::<RunState, HasSelf<RunState>>(
            &mut linker,
            |s| s,
        )
        .and_then(|()| {
            bindings::stagecraft::phase::types::add_to_linker::<RunState, HasSelf<RunState>>(
                &mut linker,
                |s| s,
            )
        })
        .map_err(|e| anyhow::anyhow!("cannot link the host interface: {e:#}"))?;
        Ok(PluginHost {
            engine,
            linker,
            cache_dir: cache::resolve_dir(cache_dir),
            private_cache: OnceLock::new(),
            compile_timeout: load::COMPILE_TIMEOUT,
            loaded: Mutex::new(HashMap::new()),
        })
    }

    /// The directory compiled components are cached in (`None`: compile in memory each time).
    /// It is only used when it is private (spec/plugin-abi.md, "Compiled cache").
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache_dir.as_deref()
    }

    /// The cache directory `PluginHost::new(cache_dir)` would use, without creating or checking
    /// it: what the grant check keeps out of every grant, dry runs included.
    pub fn resolve_cache_dir(cache_dir: Option<PathBuf>) -> Option<PathBuf> {
        cache::resolve_dir(cache_dir)
    }

    /// Bound the time compiling one component may take (default [`load::COMPILE_TIMEOUT`]).
    pub fn set_compile_timeout(&mut self, timeout: Duration) {
        self.compile_timeout = timeout;
    }
}
