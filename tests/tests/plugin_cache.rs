//! The compiled-component cache is private, through the real binary: a cache entry is native
//! code the host runs, so only a directory and files that nobody else can write are trusted.
//!
//! The planted entries below are real: the compiled `builtin:noop` with a valid digest, filed
//! under the hostile fixture's name. A host that trusts the entry describes the plugin as `noop`;
//! one that ignores it compiles the fixture and describes it as `hostile`.

mod plugin_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use plugin_support::fixture;
use stagecraft_tests::{stagecraft, Run};

/// `stagecraft plugin check --json <plugin>` with `cache` as the cache directory.
fn check(cache: &Path, plugin: &str) -> (Run, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let out: Run = stagecraft(dir.path())
        .env("STAGECRAFT_CACHE_DIR", cache)
        .args(["plugin", "check", "--json", plugin])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
    let json = serde_json::from_str(&out.stdout).unwrap();
    (out, json)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every file and directory under `dir`, sorted, with its bytes (directories: none).
fn contents(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.push((path.clone(), None));
            out.extend(contents(&path));
        } else {
            out.push((path.clone(), Some(std::fs::read(&path).unwrap())));
        }
    }
    out.sort();
    out
}

/// The `.cwasm` entry of the component whose sha256 is `digest` in `cache`.
fn entry_of(cache: &Path, digest: &str) -> PathBuf {
    std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&digest[..16]) && name.ends_with(".cwasm")
        })
        .unwrap_or_else(|| panic!("no entry for {digest} in {}", cache.display()))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Make `dir` hold the compiled `builtin:noop`, with its valid digest file, under the hostile
/// fixture's entry name. Returns the planted `.cwasm`.
fn plant_noop_as_hostile(dir: &Path) -> PathBuf {
    let trusted = tempfile::tempdir().unwrap();
    let (_, hostile) = check(trusted.path(), &fixture("hostile").display().to_string());
    let (_, noop) = check(trusted.path(), "builtin:noop");
    let hostile_entry = entry_of(trusted.path(), hostile["plugin_digest"].as_str().unwrap());
    let noop_entry = entry_of(trusted.path(), noop["plugin_digest"].as_str().unwrap());
    std::fs::create_dir_all(dir).unwrap();
    let planted = dir.join(hostile_entry.file_name().unwrap());
    std::fs::copy(&noop_entry, &planted).unwrap();
    std::fs::copy(
        with_suffix(&noop_entry, ".sha256"),
        with_suffix(&planted, ".sha256"),
    )
    .unwrap();
    planted
}

#[test]
fn a_new_cache_directory_and_its_files_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("home/.cache/stagecraft");
    check(&cache, &fixture("hostile").display().to_string());
    assert_eq!(mode(&cache), 0o700);
    let entries = contents(&cache);
    assert!(
        entries
            .iter()
            .any(|(p, _)| p.extension().is_some_and(|e| e == "cwasm")),
        "the component was cached: {entries:?}"
    );
    for (path, bytes) in entries {
        let want = if bytes.is_some() { 0o600 } else { 0o700 };
        assert_eq!(mode(&path), want, "{}", path.display());
    }
}

#[test]
fn a_cache_directory_others_can_write_is_never_used() {
    let hostile = fixture("hostile").display().to_string();
    let tmp = tempfile::tempdir().unwrap();

    // The planted entry is what the test says it is: in a private directory it is trusted,
    // and the host runs noop's code for the hostile fixture.
    let private = tmp.path().join("private");
    plant_noop_as_hostile(&private);
    chmod(&private, 0o700);
    let (_, json) = check(&private, &hostile);
    assert_eq!(json["info"]["name"], "noop", "the planted entry is used");

    let open = tmp.path().join("open");
    plant_noop_as_hostile(&open);
    chmod(&open, 0o777);
    let before = contents(&open);
    let (out, json) = check(&open, &hostile);
    assert_eq!(
        json["info"]["name"], "hostile",
        "compiled, not deserialized"
    );
    assert_eq!(
        contents(&open),
        before,
        "nothing read into use, nothing written"
    );
    assert_eq!(out.stderr.matches("warning:").count(), 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "the compiled-component cache {} is writable by anyone (mode 0777)",
            open.display()
        )),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains(&format!("`chmod 700 {}`", open.display())),
        "{out:?}"
    );

    let group = tmp.path().join("group");
    plant_noop_as_hostile(&group);
    chmod(&group, 0o770);
    let (out, json) = check(&group, &hostile);
    assert_eq!(json["info"]["name"], "hostile");
    assert!(out.stderr.contains("is writable by its group"), "{out:?}");
}

#[test]
fn a_cache_file_others_can_write_is_ignored() {
    let hostile = fixture("hostile").display().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let planted = plant_noop_as_hostile(&cache);
    chmod(&cache, 0o700);
    chmod(&planted, 0o666);
    let (out, json) = check(&cache, &hostile);
    assert_eq!(
        json["info"]["name"], "hostile",
        "compiled, not deserialized"
    );
    assert!(
        !out.stderr.contains("warning:"),
        "the directory is fine: {out:?}"
    );
    // The rebuilt entry replaced the planted one, privately.
    assert_eq!(mode(&planted), 0o600);
}
