//! The on-disk cache of compiled components: one file per (component sha256, engine
//! compatibility hash), written atomically, and verified before wasmtime is asked to trust it.
//!
//! Entry layout: `MAGIC` (16 bytes), sha256 of the payload (32 bytes), payload (wasmtime's
//! serialized component). Deserializing runs native code produced by whoever wrote the file, so
//! a file is only used when our own header and digest match and wasmtime recognises the payload
//! as a precompiled component; anything else is ignored and rebuilt.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

const MAGIC: &[u8; 16] = b"STAGECRAFT-CWSM1";
const HEADER_LEN: usize = MAGIC.len() + 32;

/// The cache directory: the explicit one, else `STAGECRAFT_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/stagecraft`, else `~/.cache/stagecraft`. `None` when none can be found (no
/// HOME): components are then compiled in memory on every load.
pub(crate) fn resolve_dir(explicit: Option<PathBuf>) -> Option<PathBuf> {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    explicit
        .or_else(|| from_env("STAGECRAFT_CACHE_DIR"))
        .or_else(|| from_env("XDG_CACHE_HOME").map(|d| d.join("stagecraft")))
        .or_else(|| from_env("HOME").map(|d| d.join(".cache").join("stagecraft")))
}

/// Lowercase hex sha256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds `Hash` output into sha256, so the engine's compatibility hash becomes stable bytes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The cache file for a component with this digest under this engine.
pub(crate) fn entry_path(dir: &Path, engine: &Engine, component_digest: &str) -> PathBuf {
    let mut hasher = Sha256Hasher(Sha256::new());
    component_digest.hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let key = hex(&hasher.0.finalize());
    dir.join(format!("{}-{}.cwasm", &component_digest[..16], &key[..32]))
}

/// Why a cache entry was not used (for `--verbose` and tests); `Missing` is the normal miss.
#[derive(Debug)]
pub(crate) enum Miss {
    Missing,
    Rejected(String),
}

/// Load a verified entry, or say why not.
pub(crate) fn lookup(engine: &Engine, path: &Path) -> Result<Component, Miss> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Missing),
        Err(e) => {
            return Err(Miss::Rejected(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Miss::Rejected(format!(
            "{} was not written by stagecraft (bad header)",
            path.display()
        )));
    }
    let payload = &bytes[HEADER_LEN..];
    if Sha256::digest(payload).as_slice() != &bytes[MAGIC.len()..HEADER_LEN] {
        return Err(Miss::Rejected(format!(
            "{} is corrupt or truncated (digest mismatch)",
            path.display()
        )));
    }
    if Engine::detect_precompiled(payload) != Some(Precompiled::Component) {
        return Err(Miss::Rejected(format!(
            "{} does not hold a precompiled component",
            path.display()
        )));
    }
    // SAFETY: the payload is byte-for-byte what `store` wrote from `Component::serialize` (our
    // header and sha256 match), and wasmtime itself checks that it was compiled by a compatible
    // engine; the file name is keyed by that engine's compatibility hash as well.
    unsafe { Component::deserialize(engine, payload) }
        .map_err(|e| Miss::Rejected(format!("{} was rejected by wasmtime: {e}", path.display())))
}

/// Write an entry atomically (temporary file in the same directory, then rename), so a reader
/// never sees half an entry and concurrent writers of the same entry both succeed.
pub(crate) fn store(path: &Path, component: &Component) -> Result<(), String> {
    let payload = component
        .serialize()
        .map_err(|e| format!("cannot serialize the compiled component: {e}"))?;
    let dir = path.parent().ok_or("cache path has no directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    let digest = Sha256::digest(&payload);
    tmp.write_all(MAGIC)
        .and_then(|_| tmp.write_all(&digest))
        .and_then(|_| tmp.write_all(&payload))
        .and_then(|_| tmp.flush())
        .map_err(|e| format!("cannot write {}: {e}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| format!("cannot rename into {}: {}", path.display(), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_dir_wins() {
        assert_eq!(
            resolve_dir(Some(PathBuf::from("/x"))),
            Some(PathBuf::from("/x"))
        );
    }

    #[test]
    fn digest_is_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
