//! The on-disk cache of compiled components: one entry per (component sha256, engine
//! compatibility hash), written atomically, and verified before wasmtime is asked to trust it.
//!
//! An entry is two files: `<key>.cwasm`, wasmtime's serialized component as it is (so a warm
//! load can map it instead of reading and copying tens of megabytes), and `<key>.cwasm.sha256`,
//! `MAGIC` (16 bytes) then the sha256 of the `.cwasm` (32 bytes). Deserializing runs native code
//! produced by whoever wrote the file, so an entry is only used when our header and digest match
//! and wasmtime recognises the payload as a precompiled component; anything else is ignored and
//! rebuilt. [`KnownSource`] lets a warm load skip re-hashing files that were not written since.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

const MAGIC: &[u8; 16] = b"STAGECRAFT-CWSM1";
const HEADER_LEN: usize = MAGIC.len() + 32;

/// `<key>.cwasm.sha256` beside `<key>.cwasm`.
fn digest_path(entry: &Path) -> PathBuf {
    let mut name = entry.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

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
    let read = |path: &Path| match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Miss::Missing),
        Err(e) => Err(Miss::Rejected(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    };
    let payload = read(path)?;
    let header = match read(&digest_path(path)) {
        Err(Miss::Missing) => {
            return Err(Miss::Rejected(format!(
                "{} has no {} beside it (not written by stagecraft)",
                path.display(),
                digest_path(path).display()
            )))
        }
        other => other?,
    };
    if header.len() != HEADER_LEN || &header[..MAGIC.len()] != MAGIC {
        return Err(Miss::Rejected(format!(
            "{} was not written by stagecraft (bad header)",
            digest_path(path).display()
        )));
    }
    if Sha256::digest(&payload).as_slice() != &header[MAGIC.len()..] {
        return Err(Miss::Rejected(format!(
            "{} is corrupt or truncated (digest mismatch)",
            path.display()
        )));
    }
    if Engine::detect_precompiled(&payload) != Some(Precompiled::Component) {
        return Err(Miss::Rejected(format!(
            "{} does not hold a precompiled component",
            path.display()
        )));
    }
    // SAFETY: the payload is byte-for-byte what `store` wrote from `Component::serialize` (our
    // header and sha256 match), and wasmtime itself checks that it was compiled by a compatible
    // engine; the file name is keyed by that engine's compatibility hash as well.
    unsafe { Component::deserialize(engine, &payload) }
        .map_err(|e| Miss::Rejected(format!("{} was rejected by wasmtime: {e}", path.display())))
}

/// What identifies a file's bytes without reading them. `ctime` changes on every write and
/// cannot be set by a user, so an unchanged stamp means the file was not written since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    pub(crate) fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        let ns = |secs: i64, nsecs: i64| secs as i128 * 1_000_000_000 + nsecs as i128;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }
}

/// A plugin file this cache has seen: its stamp and sha256 then, and the stamp of its cache
/// entry right after that entry was verified (read back and digest-checked) or written.
///
/// A large component (a Python one is 18 MB, its compiled form 35 MB) costs ~100 ms to read and
/// hash twice on every load. When neither file was written since (same stamps), the digest is
/// known and the entry is as verified, so a warm load only reads the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KnownSource {
    pub(crate) source: FileStamp,
    pub(crate) digest: String,
    pub(crate) entry: FileStamp,
}

fn known_path(dir: &Path, source: &Path) -> Option<PathBuf> {
    let canonical = std::fs::canonicalize(source).ok()?;
    let key = sha256_hex(canonical.as_os_str().as_encoded_bytes());
    Some(dir.join("sources").join(format!("{}.json", &key[..32])))
}

impl KnownSource {
    /// The record for `source`, when the file still has the recorded stamp.
    pub(crate) fn lookup(dir: &Path, source: &Path) -> Option<KnownSource> {
        let stamp = FileStamp::of(source)?;
        let text = std::fs::read(known_path(dir, source)?).ok()?;
        let known: KnownSource = serde_json::from_slice(&text).ok()?;
        (known.source == stamp && known.digest.len() == 64).then_some(known)
    }

    /// Remember `source` (stamped before it was read) and its verified `entry`. Failing to
    /// write only costs time on the next load, so errors are ignored.
    pub(crate) fn record(dir: &Path, source: &Path, stamp: FileStamp, digest: &str, entry: &Path) {
        let (Some(path), Some(entry)) = (known_path(dir, source), FileStamp::of(entry)) else {
            return;
        };
        let record = KnownSource {
            source: stamp,
            digest: digest.to_string(),
            entry,
        };
        let Some(parent) = path.parent() else { return };
        if std::fs::create_dir_all(parent).is_err() {
            return;
        }
        if let (Ok(mut tmp), Ok(json)) = (
            tempfile::NamedTempFile::new_in(parent),
            serde_json::to_vec(&record),
        ) {
            if tmp.write_all(&json).is_ok() {
                let _ = tmp.persist(&path);
            }
        }
    }
}

/// Load an entry verified earlier (see [`KnownSource`]): `None` unless it still has the stamp
/// it had then and wasmtime recognises it; the caller then takes the full path ([`lookup`]).
pub(crate) fn lookup_verified(
    engine: &Engine,
    path: &Path,
    stamp: &FileStamp,
) -> Option<Component> {
    if FileStamp::of(path).as_ref() != Some(stamp) {
        return None;
    }
    if Engine::detect_precompiled_file(path).ok()? != Some(Precompiled::Component) {
        return None;
    }
    // SAFETY: this file's digest was checked against our header (or it was written by `store`)
    // when its stamp was recorded, and it has not been written since (entries are replaced by
    // rename, never rewritten in place, so the mapping stays valid); wasmtime checks engine
    // compatibility itself.
    unsafe { Component::deserialize_file(engine, path) }.ok()
}

/// Write an entry atomically (temporary files in the same directory, then rename), so a reader
/// never sees half an entry and concurrent writers of the same entry both succeed. The digest
/// goes last: an entry without one is never used.
pub(crate) fn store(path: &Path, component: &Component) -> Result<(), String> {
    let payload = component
        .serialize()
        .map_err(|e| format!("cannot serialize the compiled component: {e}"))?;
    let dir = path.parent().ok_or("cache path has no directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let write = |target: &Path, parts: &[&[u8]]| -> Result<(), String> {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        for part in parts {
            tmp.write_all(part)
                .map_err(|e| format!("cannot write {}: {e}", tmp.path().display()))?;
        }
        tmp.flush()
            .map_err(|e| format!("cannot write {}: {e}", tmp.path().display()))?;
        tmp.persist(target)
            .map_err(|e| format!("cannot rename into {}: {}", target.display(), e.error))?;
        Ok(())
    };
    let digest = Sha256::digest(&payload);
    write(path, &[&payload])?;
    write(&digest_path(path), &[MAGIC, &digest])
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
