//! Builds the built-in phase plugins (plugins/builtin/*) and the test fixtures
//! (plugins/fixtures/*) for wasm32-wasip2, embeds the built-ins in the binary, and copies every
//! component to `<target>/wasm-plugins/{builtin,fixtures}/<name>.wasm` where tests and benchmarks
//! find them.
//!
//! The nested cargo gets its own target directory (`<target>/wasm-plugins`): the outer build
//! holds the lock on its own profile directory, and the outer flags (RUSTFLAGS, clippy's wrapper,
//! the host target) must not leak into a wasm build.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (directory name under plugins/builtin, crate name). The directory name is the `builtin:` name.
const BUILTINS: &[&str] = &["noop", "exec", "render", "switch", "http-check"];
const FIXTURES: &[&str] = &[
    "hostile",
    "slow-describe",
    "loud-describe",
    "http-probe",
    "net-hostile",
    "contract-0-1-0",
];
const WASM_TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("host/ has a parent directory")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    if !workspace.join("plugins/builtin").is_dir() || !workspace.join("wit").is_dir() {
        panic!(
            "stagecraft embeds its built-in plugins, which are built from the repository's \
             plugins/ and wit/ directories next to host/ (looked in {}). Build or install from \
             a checkout of the whole repository: `cargo install --path host` in its root.",
            workspace.display()
        );
    }
    for dir in [
        "plugins/sdk",
        "plugins/builtin",
        "plugins/fixtures",
        "wit",
        "spec/wit",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }

    check_wasm_target();

    // OUT_DIR is <target>[/<triple>]/<profile>/build/<pkg>-<hash>/out; the wasm build sits next to
    // the profile directory, which is also where a test executable (<profile>/deps/x) finds it.
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .expect("OUT_DIR has the usual cargo layout");
    let wasm_dir = profile_dir
        .parent()
        .expect("profile directory has a parent")
        .join("wasm-plugins");

    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (key, _) in env::vars_os() {
        let key_str = key.to_string_lossy();
        let inherited_build_setting = key_str.starts_with("CARGO_")
            && !matches!(
                key_str.as_ref(),
                "CARGO_HOME" | "CARGO_NET_OFFLINE" | "CARGO_MAKEFLAGS"
            );
        if inherited_build_setting
            || matches!(
                key_str.as_ref(),
                "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
            )
        {
            cargo.env_remove(&key);
        }
    }
    cargo
        .current_dir(&workspace)
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(WASM_TARGET)
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&wasm_dir);
    for name in BUILTINS {
        cargo.arg("-p").arg(format!("stagecraft-builtin-{name}"));
    }
    for name in FIXTURES {
        cargo.arg("-p").arg(format!("stagecraft-fixture-{name}"));
    }
    let output = cargo.output().unwrap_or_else(|e| {
        panic!("could not run cargo to build the built-in plugins: {e}");
    });
    if !output.status.success() {
        panic!(
            "building the built-in plugins for {WASM_TARGET} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let built = wasm_dir.join(WASM_TARGET).join("release");
    let mut table = String::from(
        "/// Built-in plugins embedded at build time: (name, component bytes).\n\
         pub const EMBEDDED: &[(&str, &[u8])] = &[\n",
    );
    for name in BUILTINS {
        let file = built.join(format!(
            "stagecraft_builtin_{}.wasm",
            name.replace('-', "_")
        ));
        let embedded = out_dir.join(format!("builtin-{name}.wasm"));
        copy(&file, &embedded);
        copy(
            &file,
            &wasm_dir.join("builtin").join(format!("{name}.wasm")),
        );
        table.push_str(&format!(
            "    ({name:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/builtin-{name}.wasm\"))),\n"
        ));
    }
    table.push_str("];\n");
    fs::write(out_dir.join("builtins.rs"), table).expect("write builtins.rs");
    for name in FIXTURES {
        // Cargo names a library artifact after its crate, with `-` turned into `_`.
        let file = built.join(format!(
            "stagecraft_fixture_{}.wasm",
            name.replace('-', "_")
        ));
        copy(
            &file,
            &wasm_dir.join("fixtures").join(format!("{name}.wasm")),
        );
    }
}

fn copy(from: &Path, to: &Path) {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    }
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

/// A missing target makes the nested build fail with a cryptic "can't find crate for `std`";
/// say what to run instead. (Installing it from a build script would download behind the user's
/// back, so the script only checks.)
fn check_wasm_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = libdir
        .as_deref()
        .and_then(|dir| fs::read_dir(dir).ok())
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        })
        .unwrap_or(false);
    if !installed {
        panic!(
            "the Rust target {WASM_TARGET} is not installed, and stagecraft's built-in plugins \
             are built for it. Run `rustup target add {WASM_TARGET}` (or `rustup toolchain \
             install` in the repository root, which reads rust-toolchain.toml) and build again."
        );
    }
}
