//! Loading a component: read its bytes, tell a core module or a foreign component from a phase
//! plugin, compile it or take the verified cached compilation, and link it once.

use std::time::Instant;

use wasmtime::component::Component;

use super::bindings::PhasePluginPre;
use super::cache;
use super::types::PluginSource;
use super::{builtin, LoadedPlugin, PluginHost};
use crate::error::input_error;

/// The WIT package versions this host runs: `stagecraft:phase@0.1.x`.
pub const SUPPORTED_WIT: &str = "0.1.x";
const PACKAGE: &str = "stagecraft:phase";

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
        let start = Instant::now();
        let name = source.to_string();
        let file = match source {
            PluginSource::File(path) => Some((path, cache::FileStamp::of(path))),
            PluginSource::Builtin(_) => None,
        };
        if let (Some((path, Some(_))), Some(dir)) = (&file, self.cache_dir.as_deref()) {
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
        let bytes: std::borrow::Cow<'static, [u8]> = match source {
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
            PluginSource::File(path) => std::fs::read(path)
                .map_err(|e| {
                    input_error(format!(
                        "cannot read plugin {}: {e}; check the path (relative paths are \
                         relative to the manifest's directory)",
                        path.display()
                    ))
                })?
                .into(),
        };
        let digest = cache::sha256_hex(&bytes);
        if let Some(hit) = self.memory_hit(&name, &digest, start) {
            return Ok(hit);
        }
        check_binary_kind(&name, &bytes)?;

        let entry = self
            .cache_dir
            .as_deref()
            .map(|dir| cache::entry_path(dir, &self.engine, &digest));
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
                cache_note = Some("no cache directory (set STAGECRAFT_CACHE_DIR)".into());
                None
            }
        };
        let was_cached = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => Component::new(&self.engine, &bytes[..]).map_err(|e| {
                input_error(format!(
                    "{name} is not a valid WebAssembly component: {e:#}"
                ))
            })?,
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
            if let Some(dir) = self.cache_dir.as_deref() {
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
