//! Loading a component: read its bytes, tell a core module or a foreign component from a phase
//! plugin, compile it or take the verified cached compilation, and link it once.
//!
//! A plugin file is untrusted input, so loading is bounded: a file larger than
//! [`MAX_COMPONENT_BYTES`] (or not a regular file: a FIFO, a device) is refused before it is
//! read, and a compilation that takes longer than [`COMPILE_TIMEOUT`] is given up on.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wasmtime::component::Component;

use super::bindings::PhasePluginPre;
use super::cache;
use super::types::PluginSource;
use super::{builtin, LoadedPlugin, PluginHost};
use crate::error::input_error;

/// The WIT package versions this host runs: `stagecraft:phase@0.1.x`.
pub const SUPPORTED_WIT: &str = "0.1.x";
const PACKAGE: &str = "stagecraft:phase";

/// The largest component file stagecraft loads. A Python component is about 18 MiB and a
/// JavaScript one 12 MiB; compiling takes memory and time in proportion to the size.
pub const MAX_COMPONENT_BYTES: u64 = 128 << 20;

/// How long compiling one component may take before the load fails. A Python component
/// compiles in about 8 s on a 2-core machine; this only stops a pathological one.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(300);

/// What a component says about itself before it runs: the contract version it targets and the
/// interfaces it imports (and so the grants it may ask for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSummary {
    /// e.g. `0.1.0`.
    pub wit_version: String,
    /// Imported interface names, e.g. `wasi:filesystem/types@0.2.6`.
    pub imports: Vec<String>,
    /// Component size in bytes.
    pub size: usize,
}

impl PluginHost {
    /// Read, check, compile (or load from the cache) and link a plugin. Errors are
    /// [`crate::error::InputError`]s that say what the file is and what to do about it.
    pub fn load(&self, source: &PluginSource) -> anyhow::Result<LoadedPlugin> {
        self.load_with(source, &|_| {})
    }

    /// [`PluginHost::load`], calling `compiling` just before a component is compiled (it was
    /// in neither cache), with whether the compilation will be cached for later runs: the
    /// compile takes seconds to a minute, which a person at a terminal should hear about.
    pub fn load_with(
        &self,
        source: &PluginSource,
        compiling: &dyn Fn(bool),
    ) -> anyhow::Result<LoadedPlugin> {
        let start = Instant::now();
        let name = source.to_string();
        let file = match source {
            PluginSource::File(path) => Some((path, cache::FileStamp::of(path))),
            PluginSource::Builtin(_) | PluginSource::Stored { .. } => None,
        };
        let cache_dir = self.private_cache_dir();
        let cache_dir = cache_dir.as_ref().ok().map(|dir| dir.as_path());
        if let (Some((path, Some(_))), Some(dir)) = (&file, cache_dir) {
            if let Some(known) = cache::KnownSource::lookup(dir, path) {
                if let Some(hit) = self.memory_hit(&name, &known.digest, start) {
                    return Ok(hit);
                }
                let entry = cache::entry_path(dir, &self.engine, &known.digest);
                if let Some(component) = cache::lookup_verified(&self.engine, &entry, &known.entry)
                {
                    let size = known.source.size() as usize;
                    return self.link(name, known.digest, component, size, true, None, start);
                }
            }
        }
        let bytes: Cow<'static, [u8]> = match source {
            PluginSource::Builtin(builtin_name) => builtin::bytes(builtin_name)
                .ok_or_else(|| {
                    input_error(format!(
                        "there is no built-in plugin `{name}`; built-ins are: {}",
                        builtin::builtin_names()
                            .iter()
                            .map(|n| format!("builtin:{n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?
                .into(),
            PluginSource::File(path) => read_component(path)?.into(),
            PluginSource::Stored { bytes, .. } => bytes.to_vec().into(),
        };
        let digest = cache::sha256_hex(&bytes);
        if let Some(hit) = self.memory_hit(&name, &digest, start) {
            return Ok(hit);
        }
        check_binary_kind(&name, &bytes)?;

        let entry = cache_dir.map(|dir| cache::entry_path(dir, &self.engine, &digest));
        let mut cache_note = None;
        let cached = match &entry {
            Some(path) => match cache::lookup(&self.engine, path) {
                Ok(component) => Some(component),
                Err(cache::Miss::Missing) => None,
                Err(cache::Miss::Rejected(why)) => {
                    cache_note = Some(format!("cache entry ignored and rebuilt: {why}"));
                    None
                }
            },
            None => {
                if let Err(unusable) = self.private_cache_dir() {
                    cache_note = Some(format!("not using the cache: {}", unusable.why()));
                }
                None
            }
        };
        let was_cached = cached.is_some();
        let (bytes, component) = match cached {
            Some(component) => (bytes, component),
            None => {
                compiling(entry.is_some());
                let (bytes, compiled) = compile(&self.engine, bytes, self.compile_timeout)
                    .map_err(|late| input_error(format!("{name}: {late}")))?;
                let component = compiled.map_err(|e| {
                    input_error(format!(
                        "{name} is not a valid WebAssembly component: {e:#}"
                    ))
                })?;
                (bytes, component)
            }
        };
        if !was_cached {
            // Check the component before it goes into the cache.
            check_world(&name, &self.engine, &component, bytes.len())?;
            if let Some(path) = &entry {
                // An unusable cache (read-only, full disk) only costs time: compile again next
                // run, and say why under --verbose.
                if let Err(why) = cache::store(path, &component) {
                    cache_note = Some(format!("compiled component not cached: {why}"));
                }
            }
        }
        if let (Some((path, Some(stamp))), Some(entry), None) = (&file, &entry, &cache_note) {
            // The entry is verified or freshly written: later loads of this file skip hashing.
            if let Some(dir) = cache_dir {
                cache::KnownSource::record(dir, path, *stamp, &digest, entry);
            }
        }
        self.link(
            name,
            digest,
            component,
            bytes.len(),
            was_cached,
            cache_note,
            start,
        )
    }

    /// The cache directory, checked (and created `0700`) at the first load. A directory that
    /// someone else could write is refused once, on stderr, with the fix: fail closed, but keep
    /// working by compiling in memory.
    fn private_cache_dir(&self) -> &Result<std::path::PathBuf, cache::Unusable> {
        self.private_cache.get_or_init(|| {
            let dir = self.cache_dir.clone().ok_or_else(|| {
                cache::Unusable::Unavailable("no cache directory (set STAGECRAFT_CACHE_DIR)".into())
            })?;
            let prepared = cache::prepare_dir(&dir);
            if let Err(cache::Unusable::Unsafe(why)) = &prepared {
                eprintln!("warning: {why}");
            }
            prepared.map(|()| dir)
        })
    }

    /// A component this host already loaded (by digest), under a new name.
    fn memory_hit(&self, name: &str, digest: &str, start: Instant) -> Option<LoadedPlugin> {
        let hit = self.loaded.lock().ok()?.get(digest).cloned()?;
        Some(LoadedPlugin {
            name: name.to_string(),
            was_cached: true,
            load_time: start.elapsed(),
            cache_note: None,
            ..hit
        })
    }

    /// Check the component's world, link it, and remember it by digest.
    #[allow(clippy::too_many_arguments)]
    fn link(
        &self,
        name: String,
        digest: String,
        component: Component,
        size: usize,
        was_cached: bool,
        cache_note: Option<String>,
        start: Instant,
    ) -> anyhow::Result<LoadedPlugin> {
        let summary = check_world(&name, &self.engine, &component, size)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| input_error(format!("{name} cannot be linked: {e:#}")))?;
        let pre = PhasePluginPre::new(pre).map_err(|e| {
            input_error(format!(
                "{name} does not match world phase-plugin of {PACKAGE}@{SUPPORTED_WIT}: {e:#}"
            ))
        })?;
        let loaded = LoadedPlugin {
            name,
            digest: digest.clone(),
            was_cached,
            load_time: start.elapsed(),
            cache_note,
            summary,
            pre,
        };
        if let Ok(mut map) = self.loaded.lock() {
            map.insert(digest, loaded.clone());
        }
        Ok(loaded)
    }
}

/// Read a plugin file: a regular file of at most [`MAX_COMPONENT_BYTES`]. It is opened
/// non-blocking, so a FIFO named as a plugin is refused instead of waiting for a writer.
/// The sha256 of a plugin's component, without compiling it (what a plan records).
pub fn component_digest(source: &PluginSource) -> anyhow::Result<String> {
    Ok(cache::sha256_hex(&component_bytes(source)?))
}

/// A plugin's component as it is kept in the state's component store: the bytes its digest is
/// taken of.
pub fn component_bytes(source: &PluginSource) -> anyhow::Result<Cow<'static, [u8]>> {
    Ok(match source {
        PluginSource::Builtin(name) => builtin::bytes(name)
            .ok_or_else(|| input_error(format!("there is no built-in plugin `builtin:{name}`")))?
            .into(),
        PluginSource::File(path) => read_component(path)?.into(),
        PluginSource::Stored { bytes, .. } => bytes.to_vec().into(),
    })
}

fn read_component(path: &Path) -> anyhow::Result<Vec<u8>> {
    let unreadable = |e: &dyn std::fmt::Display| {
        input_error(format!(
            "cannot read plugin {}: {e}; check the path (relative paths are relative to the \
             manifest's directory)",
            path.display()
        ))
    };
    let flags =
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, rustix::fs::Mode::empty())
        .map_err(|e| unreadable(&std::io::Error::from(e)))?;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(|e| unreadable(&e))?;
    if !meta.is_file() {
        return Err(input_error(format!(
            "{} is not a regular file: point at the .wasm file your build produced",
            path.display()
        )));
    }
    let too_large = || {
        input_error(format!(
            "{} is larger than {} (the largest component stagecraft loads)",
            path.display(),
            super::format_bytes(MAX_COMPONENT_BYTES)
        ))
    };
    if meta.len() > MAX_COMPONENT_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_COMPONENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(&e))?;
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        return Err(too_large()); // it grew while being read
    }
    Ok(bytes)
}

/// Compile on a thread of its own and wait at most `timeout`. Cranelift cannot be interrupted,
/// so a compilation past the deadline is left to finish on its thread (the CLI exits with the
/// error); `Err` is the message for that case. The bytes come back for the cache and the size.
#[allow(clippy::type_complexity)]
fn compile(
    engine: &wasmtime::Engine,
    bytes: Cow<'static, [u8]>,
    timeout: Duration,
) -> Result<(Cow<'static, [u8]>, wasmtime::Result<Component>), String> {
    let late = format!(
        "compiling did not finish within {timeout:?}; the component is too large or \
         pathological to compile (a Python component takes seconds)"
    );
    let (tx, rx) = mpsc::channel();
    let engine = engine.clone();
    let spawned = std::thread::Builder::new()
        .name("stagecraft-compile".into())
        .spawn(move || {
            let compiled = Component::new(&engine, &bytes[..]);
            let _ = tx.send((bytes, compiled));
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start the compiler thread: {e}"));
    }
    match rx.recv_timeout(timeout) {
        Ok(done) => Ok(done),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(late),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("the compiler stopped without a \
             result (an internal error; please report it with the component)"
            .into()),
    }
}

/// Tell "not WebAssembly" and "a core module" apart from a component before compiling.
fn check_binary_kind(name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(input_error(format!(
            "{name} is not a WebAssembly binary (it does not start with \\0asm): point at the \
             .wasm file your build produced"
        )));
    }
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    match layer {
        0 => Err(input_error(format!(
            "{name} is a core WebAssembly module, not a component: build it with `cargo build \
             --target wasm32-wasip2` (Rust), componentize-py (Python) or componentize-js \
             (JavaScript) against wit/phase.wit; see docs/writing-plugins.md"
        ))),
        1 => Ok(()),
        other => Err(input_error(format!(
            "{name} is a WebAssembly binary of unknown layer {other}; stagecraft runs \
             components (layer 1)"
        ))),
    }
}

/// `stagecraft:phase/phase@0.1.0` -> Some(("phase", "0.1.0")) for our package.
fn our_interface(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    match rest.split_once('@') {
        Some((iface, version)) => Some((iface, version)),
        None => Some((rest, "")),
    }
}

fn supported(version: &str) -> bool {
    version.starts_with("0.1.")
}

/// The component must export our `phase` interface in a supported version and import nothing
/// but our `host`/`types` interfaces and WASI 0.2.
fn check_world(
    name: &str,
    engine: &wasmtime::Engine,
    component: &Component,
    size: usize,
) -> anyhow::Result<ComponentSummary> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let version_error = |version: &str| {
        input_error(format!(
            "{name} targets {PACKAGE}@{version}; this stagecraft supports {SUPPORTED_WIT}. \
             Rebuild the plugin against this stagecraft's wit/phase.wit, or run it with a \
             stagecraft that supports {version}"
        ))
    };
    let phase_export = exports
        .iter()
        .find_map(|e| our_interface(e).filter(|(iface, _)| *iface == "phase"));
    let wit_version = match phase_export {
        Some((_, version)) if supported(version) => version.to_string(),
        Some((_, version)) => return Err(version_error(version)),
        None => {
            return Err(input_error(format!(
                "{name} is a component but not a Stagecraft phase plugin: it does not export \
                 {PACKAGE}/phase (it exports: {}). Build it for world phase-plugin of \
                 wit/phase.wit",
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            )))
        }
    };
    for import in &imports {
        if let Some((_, version)) = our_interface(import) {
            if !supported(version) {
                return Err(version_error(version));
            }
        } else if !import.starts_with("wasi:") {
            return Err(input_error(format!(
                "{name} imports {import}, which stagecraft does not provide: a phase may import \
                 only {PACKAGE}/host and WASI 0.2 interfaces"
            )));
        }
    }
    Ok(ComponentSummary {
        wit_version,
        imports,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_binary_kinds() {
        assert!(check_binary_kind("x", b"hello world").is_err());
        let core = [0, b'a', b's', b'm', 1, 0, 0, 0];
        let err = check_binary_kind("x.wasm", &core).unwrap_err().to_string();
        assert!(err.contains("core WebAssembly module"), "{err}");
        let component = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];
        assert!(check_binary_kind("x", &component).is_ok());
    }

    #[test]
    fn parses_interface_names() {
        assert_eq!(
            our_interface("stagecraft:phase/phase@0.1.0"),
            Some(("phase", "0.1.0"))
        );
        assert_eq!(our_interface("wasi:cli/environment@0.2.0"), None);
        assert!(supported("0.1.7"));
        assert!(!supported("0.2.0"));
        assert!(!supported("1.1.0"));
    }
}
