//! Grants that would hand a plugin the keys are refused when the manifest loads, through the
//! real binary: `deploy` and `rollback`, dry runs included, exit 1 with the grant's file:line and
//! what to do instead, before any state is touched.
//!
//! Refused: a write grant over the manifest or a plugin file (the next run would do what the
//! plugin wrote), a read or write grant over the compiled-component cache (native code the host
//! runs), and an `env` grant naming a variable that leads to the state or its credentials.

use std::path::{Path, PathBuf};

use stagecraft_tests::{run, stagecraft, wasm_plugins_dir, Run};

/// A project directory with a manifest and a copy of a real plugin at `plugins/rollout.wasm`.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        std::fs::copy(
            wasm_plugins_dir().join("builtin/noop.wasm"),
            dir.path().join("plugins/rollout.wasm"),
        )
        .unwrap();
        Project { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write_manifest(&self, text: &str) {
        std::fs::write(self.path().join("stagecraft.toml"), text).unwrap();
    }

    fn state_file(&self) -> PathBuf {
        self.path().join(".stagecraft/releases.json")
    }

    /// What a refusal must leave as it was: the manifest, the plugin and the state file.
    fn snapshot(&self) -> Vec<Option<Vec<u8>>> {
        [
            "stagecraft.toml",
            "plugins/rollout.wasm",
            ".stagecraft/releases.json",
        ]
        .iter()
        .map(|f| std::fs::read(self.path().join(f)).ok())
        .collect()
    }

    /// `deploy` and `rollback`, with and without `--dry-run`, all refuse `manifest` with
    /// `message` at the position of `grant`, and leave everything as it was.
    fn assert_refused(&self, manifest: &str, grant: &str, message: &str) {
        self.write_manifest(manifest);
        let before = self.snapshot();
        let want = format!("{}: {message}", position(manifest, grant));
        let deploy: &[&str] = &["deploy", "--env", "prod", "--version", "v2"];
        let rollback: &[&str] = &["rollback", "--env", "prod", "--to-previous"];
        for (command, dry_run) in [
            (deploy, true),
            (deploy, false),
            (rollback, true),
            (rollback, false),
        ] {
            let mut args = command.to_vec();
            if dry_run {
                args.push("--dry-run");
            }
            let out = run(self.path(), &args);
            assert_eq!(out.code, 1, "{manifest}\n{out:?}");
            assert!(out.stderr.contains(&want), "want {want}\n{out:?}");
            assert!(out.stdout.is_empty(), "{out:?}");
            assert_eq!(self.snapshot(), before, "{manifest}: something changed");
        }
    }

    fn deploy(&self, manifest: &str, dry_run: bool) -> Run {
        self.write_manifest(manifest);
        let mut args = vec!["deploy", "--env", "prod", "--version", "v1"];
        if dry_run {
            args.push("--dry-run");
        }
        run(self.path(), &args)
    }
}

/// `stagecraft.toml:<line>:<column>` of the quoted `grant` in the manifest's grants table
/// (1-based, as the manifest's own errors count).
fn position(manifest: &str, grant: &str) -> String {
    let table = manifest.find(".grants]").expect("a grants table");
    let offset = table
        + manifest[table..]
            .find(&format!("\"{grant}\""))
            .expect("the grant in the grants table");
    let line = manifest[..offset].matches('\n').count() + 1;
    let column = offset - manifest[..offset].rfind('\n').map_or(0, |n| n + 1) + 1;
    format!("stagecraft.toml:{line}:{column}")
}

/// A manifest whose state lives in PostgreSQL (so no state file is what refuses the grant; the
/// refusal comes before any connection) with a `rollout` phase running `plugin`.
fn postgres_manifest(plugin: &str, grants: &str) -> String {
    format!(
        "[environments.prod]\n[state]\nbackend = \"postgres\"\n\n[phases.rollout]\n\
         plugin = \"{plugin}\"\n[phases.rollout.grants]\n{grants}\n"
    )
}

/// A file-state manifest with a `build` phase (builtin:noop) and these grants.
fn file_manifest(grants: &str) -> String {
    format!("[environments.prod]\n[phases.build]\nplugin = \"builtin:noop\"\n[phases.build.grants]\n{grants}\n")
}

#[test]
fn write_grants_over_the_manifest_or_a_plugin_file_are_refused() {
    let p = Project::new();
    let root = std::fs::canonicalize(p.path()).unwrap();
    let plugin = root.join("plugins/rollout.wasm");

    let m = postgres_manifest("plugins/rollout.wasm", "write = [\".\"]");
    p.assert_refused(
        &m,
        ".",
        &format!(
            "phase rollout: the write grant {} would let the phase rewrite {} (the manifest), \
             which decides what runs next",
            root.display(),
            root.join("stagecraft.toml").display()
        ),
    );

    for (grant, resolved) in [
        ("plugins", "plugins"),
        ("plugins/rollout.wasm", "plugins/rollout.wasm"),
        ("./plugins/../plugins", "plugins"),
    ] {
        let m = postgres_manifest("plugins/rollout.wasm", &format!("write = [\"{grant}\"]"));
        p.assert_refused(
            &m,
            grant,
            &format!(
                "phase rollout: the write grant {} would let the phase rewrite {} (the plugin \
                 of phase rollout), which decides what runs next: grant a directory that does \
                 not contain it",
                root.join(resolved).display(),
                plugin.display()
            ),
        );
    }

    // A plugin reached through a link is protected where the link points, too.
    std::fs::create_dir(p.path().join("vendor")).unwrap();
    std::fs::rename(&plugin, p.path().join("vendor/rollout.wasm")).unwrap();
    std::fs::remove_dir(p.path().join("plugins")).unwrap();
    std::os::unix::fs::symlink("vendor", p.path().join("plugins")).unwrap();
    let m = postgres_manifest("plugins/rollout.wasm", "write = [\"vendor\"]");
    p.assert_refused(
        &m,
        "vendor",
        &format!(
            "phase rollout: the write grant {} would let the phase rewrite {} (the plugin of \
             phase rollout)",
            root.join("vendor").display(),
            root.join("vendor/rollout.wasm").display()
        ),
    );
    // ... and so is every link on the way to it.
    std::fs::create_dir(p.path().join("a")).unwrap();
    std::os::unix::fs::symlink("../vendor", p.path().join("a/plugins")).unwrap();
    let m = postgres_manifest("a/plugins/rollout.wasm", "write = [\"a\"]");
    p.assert_refused(
        &m,
        "a",
        &format!(
            "phase rollout: the write grant {} would let the phase rewrite {} (the plugin of \
             phase rollout)",
            root.join("a").display(),
            root.join("a/plugins/rollout.wasm").display()
        ),
    );

    // Reading them is fine, and so is writing beside them.
    let m = postgres_manifest(
        "plugins/rollout.wasm",
        "read = [\".\", \"plugins\"]\nwrite = [\"dist\"]",
    );
    let out = p.deploy(&m, true);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn env_grants_naming_the_state_or_its_credentials_are_refused() {
    let p = Project::new();
    // A first release, so there is state to leave untouched.
    let out = p.deploy(&file_manifest("env = [\"HOME\"]"), false);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(p.state_file().exists());

    for (name, what) in [
        ("STAGECRAFT_DATABASE_URL", "the state database's URL"),
        ("STAGECRAFT_STATE_FILE", "the state file's location"),
        ("PGPASSWORD", "the PostgreSQL credentials"),
        ("PGPASSFILE", "the PostgreSQL credentials"),
        ("PGSERVICEFILE", "the PostgreSQL credentials"),
    ] {
        let m = file_manifest(&format!("env = [\"HOME\", \"{name}\"]"));
        p.assert_refused(
            &m,
            name,
            &format!("phase build: the env grant {name} would hand the plugin {what}"),
        );
    }

    // The manifest's own state URL variable, whatever it is called.
    let m = "[environments.prod]\n[state]\nbackend = \"postgres\"\nurl_env = \"TEAM_DB\"\n\
             [phases.build]\nplugin = \"builtin:noop\"\n[phases.build.grants]\n\
             env = [\"TEAM_DB\"]\n";
    p.assert_refused(
        m,
        "TEAM_DB",
        "phase build: the env grant TEAM_DB would hand the plugin the state database's URL: \
         remove it from the grant",
    );
}

#[test]
fn a_grant_over_the_compiled_component_cache_is_refused() {
    let p = Project::new();
    let cache = p.path().join("var/cache/stagecraft");
    let deploy = |manifest: &str, dry_run: bool| -> Run {
        p.write_manifest(manifest);
        let mut cmd = stagecraft(p.path());
        cmd.env("STAGECRAFT_CACHE_DIR", &cache).args([
            "deploy",
            "--env",
            "prod",
            "--version",
            "v1",
        ]);
        if dry_run {
            cmd.arg("--dry-run");
        }
        cmd.output().unwrap().into()
    };
    let out = deploy(&file_manifest("write = [\"dist\"]"), false);
    assert_eq!(out.code, 0, "{out:?}");
    let state = std::fs::read(p.state_file()).unwrap();
    let cached = std::fs::read_dir(&cache).unwrap().count();
    assert!(cached > 0, "the deploy cached its plugin");
    let cache = std::fs::canonicalize(&cache).unwrap().display().to_string();
    let root = std::fs::canonicalize(p.path())
        .unwrap()
        .display()
        .to_string();

    for (grants, grant, message) in [
        (
            "read = [\"var/cache/stagecraft\"]",
            "var/cache/stagecraft",
            "the read grant {cache} would expose the compiled-component cache {cache}, whose \
             files are native code stagecraft runs: grant a directory that does not contain \
             it, or move the cache elsewhere (STAGECRAFT_CACHE_DIR)",
        ),
        (
            "write = [\"dist\", \"var\"]",
            "var",
            "the write grant {root}/var would expose the compiled-component cache {cache}",
        ),
        (
            "write = [\"var/cache/stagecraft/sub\"]",
            "var/cache/stagecraft/sub",
            "the write grant {cache}/sub is inside the compiled-component cache {cache}",
        ),
    ] {
        let manifest = file_manifest(grants);
        let want = format!(
            "{}: phase build: {}",
            position(&manifest, grant),
            message.replace("{cache}", &cache).replace("{root}", &root)
        );
        for dry_run in [true, false] {
            let out = deploy(&manifest, dry_run);
            assert_eq!(out.code, 1, "{out:?}");
            assert!(out.stderr.contains(&want), "want {want}\n{out:?}");
        }
        assert_eq!(std::fs::read(p.state_file()).unwrap(), state);
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), cached);
    }
}
