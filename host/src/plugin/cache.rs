//! The on-disk cache of compiled components: one entry per (component sha256, engine
//! compatibility hash), written atomically, and verified before wasmtime is asked to trust it.
//!
//! An entry is two files: `<key>.cwasm`, wasmtime's serialized component as it is (so a warm
//! load can map it instead of reading and copying tens of megabytes), and `<key>.cwasm.sha256`,
//! `MAGIC` (16 bytes) then the sha256 of the `.cwasm` (32 bytes). Deserializing runs native code
//! produced by whoever wrote the file, so an entry is only used when our header and digest match
//! and wasmtime recognises the payload as a precompiled component; anything else is ignored and
//! rebuilt. [`KnownSource`] lets a warm load skip re-hashing files that were not written since.
//!
//! A digest only proves that whoever wrote an entry also wrote its digest, so the cache is only
//! as trustworthy as the people who can write it: the directory must be ours and private
//! ([`prepare_dir`] creates it `0700` and refuses one owned by another user or writable by
//! group or others), and a file in it that is not ours, or is writable by others, is ignored.

use std::fs::{File, Metadata};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
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

/// Why a cache directory is not used: components are then compiled in memory on every load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// Someone else could plant native code in it. The message says how to fix it; the host
    /// says so once on stderr.
    Unsafe(String),
    /// It cannot be created or read (read-only file system, not a directory): only slower.
    Unavailable(String),
}

impl Unusable {
    pub(crate) fn why(&self) -> &str {
        match self {
            Unusable::Unsafe(why) | Unusable::Unavailable(why) => why,
        }
    }
}

/// Make `dir` ready to hold compiled components: create it (and missing parents) `0700`, or
/// check that the existing one is a directory owned by the effective user and not writable by
/// group or others.
pub(crate) fn prepare_dir(dir: &Path) -> Result<(), Unusable> {
    let created = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    let meta = match (created, std::fs::metadata(dir)) {
        (_, Ok(meta)) => meta,
        (Err(e), _) | (Ok(()), Err(e)) => {
            return Err(Unusable::Unavailable(format!(
                "cannot create the cache directory {}: {e}",
                dir.display()
            )))
        }
    };
    if !meta.is_dir() {
        return Err(Unusable::Unavailable(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Unusable::Unsafe(format!(
            "the compiled-component cache {dir} belongs to another user (uid {owner}), who could \
             plant native code in it; components are compiled in memory instead. Use a directory \
             of your own (set STAGECRAFT_CACHE_DIR), or take this one over: `chown {me} {dir} && \
             chmod 700 {dir}`",
            dir = dir.display(),
            owner = meta.uid(),
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Unusable::Unsafe(format!(
            "the compiled-component cache {dir} is writable by {who} (mode {mode:04o}), who could \
             plant native code in it; components are compiled in memory instead. Make it \
             private: `chmod 700 {dir}`",
            dir = dir.display(),
            who = if meta.mode() & 0o002 != 0 {
                "anyone"
            } else {
                "its group"
            },
            mode = meta.mode() & 0o7777,
        )));
    }
    Ok(())
}

/// A file of the cache may be trusted only when we wrote it: a regular file owned by the
/// effective user that nobody else can write.
fn check_ours(path: &Path, meta: &Metadata) -> Result<(), String> {
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(format!(
            "{} belongs to another user (uid {})",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by others (mode {:04o})",
            path.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Read a file of the cache, checked with [`check_ours`] on the open file (so the file checked
/// is the file read).
fn read_ours(path: &Path) -> Result<Vec<u8>, Miss> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Missing),
        Err(e) => {
            return Err(Miss::Rejected(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| Miss::Rejected(format!("cannot read {}: {e}", path.display())))?;
    check_ours(path, &meta).map_err(Miss::Rejected)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| Miss::Rejected(format!("cannot read {}: {e}", path.display())))?;
    Ok(bytes)
}

/// Lowercase hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
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
    let payload = read_ours(path)?;
    let header = match read_ours(&digest_path(path)) {
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
    // header and sha256 match, and both files are ours, in a directory only we can write), and
    // wasmtime itself checks that it was compiled by a compatible engine; the file name is keyed
    // by that engine's compatibility hash as well.
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
        let text = read_ours(&known_path(dir, source)?).ok()?;
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
        let created = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent);
        if created.is_err() {
            return;
        }
        if let (Ok(mut tmp), Ok(json)) = (private_temp_file(parent), serde_json::to_vec(&record)) {
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
    check_ours(path, &std::fs::metadata(path).ok()?).ok()?;
    if Engine::detect_precompiled_file(path).ok()? != Some(Precompiled::Component) {
        return None;
    }
    // SAFETY: this file's digest was checked against our header (or it was written by `store`)
    // when its stamp was recorded, and it has not been written since (entries are replaced by
    // rename, never rewritten in place, so the mapping stays valid); it is ours and nobody else
    // can write it or its directory; wasmtime checks engine compatibility itself.
    unsafe { Component::deserialize_file(engine, path) }.ok()
}

/// A temporary file in `dir` that only we can read or write (`0600`), to be renamed into place.
fn private_temp_file(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
}

/// Write an entry atomically (temporary `0600` files in the same directory, then rename), so a
/// reader never sees half an entry and concurrent writers of the same entry both succeed. The
/// digest goes last: an entry without one is never used. The directory is the one
/// [`prepare_dir`] accepted.
pub(crate) fn store(path: &Path, component: &Component) -> Result<(), String> {
    let payload = component
        .serialize()
        .map_err(|e| format!("cannot serialize the compiled component: {e}"))?;
    let dir = path.parent().ok_or("cache path has no directory")?;
    let write = |target: &Path, parts: &[&[u8]]| -> Result<(), String> {
        let mut tmp = private_temp_file(dir)
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

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_new_cache_directory_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("home/.cache/stagecraft");
        assert_eq!(prepare_dir(&dir), Ok(()));
        assert_eq!(mode(&dir), 0o700);
        // An existing private directory is used as it is.
        assert_eq!(prepare_dir(&dir), Ok(()));
    }

    #[test]
    fn a_cache_directory_others_can_write_is_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        for (bits, who) in [(0o777, "anyone"), (0o770, "its group"), (0o1777, "anyone")] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(bits)).unwrap();
            match prepare_dir(&dir) {
                Err(Unusable::Unsafe(why)) => {
                    assert!(why.contains(&format!("writable by {who}")), "{why}");
                    assert!(
                        why.contains(&format!("chmod 700 {}", dir.display())),
                        "{why}"
                    );
                }
                other => panic!("mode {bits:o}: {other:?}"),
            }
        }
        // Readable by others is not a way in.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(prepare_dir(&dir), Ok(()));
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(prepare_dir(&file), Err(Unusable::Unavailable(_))));
    }

    #[test]
    fn a_cache_file_others_can_write_is_never_read() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("entry.cwasm");
        std::fs::write(&file, b"planted").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        match read_ours(&file) {
            Err(Miss::Rejected(why)) => assert!(why.contains("writable by others"), "{why}"),
            other => panic!("{other:?}"),
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_ours(&file).ok(), Some(b"planted".to_vec()));
        assert!(matches!(
            read_ours(&tmp.path().join("missing")),
            Err(Miss::Missing)
        ));
    }

    #[test]
    fn temporary_files_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let file = private_temp_file(tmp.path()).unwrap();
        assert_eq!(mode(file.path()), 0o600);
    }

    #[test]
    fn digest_is_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
