//! `stagecraft plugin new --lang rust|python|js <dir>`: write a phase plugin that builds as it
//! is. The templates live in `plugins/templates/<lang>/` (`{{name}}` and `{{crate}}` are
//! replaced) and are compiled into the binary; every scaffold gets a copy of this binary's
//! `wit/phase.wit` and the WASI packages it uses (`wit/deps/`), so the plugin targets exactly
//! the contract the host runs and builds offline.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::error::{input_error, ExitCode};

/// The contract, as this stagecraft was built with it.
const PHASE_WIT: &str = include_str!("../../../wit/phase.wit");

/// The WASI 0.2 packages the contract imports from (`wasi:http` and what it uses), as
/// `wit/deps/` holds them. A unit test checks that this list names every file there.
const WIT_DEPS: &[(&str, &str)] = &[
    (
        "wit/deps/cli.wit",
        include_str!("../../../wit/deps/cli.wit"),
    ),
    (
        "wit/deps/clocks.wit",
        include_str!("../../../wit/deps/clocks.wit"),
    ),
    (
        "wit/deps/filesystem.wit",
        include_str!("../../../wit/deps/filesystem.wit"),
    ),
    (
        "wit/deps/http.wit",
        include_str!("../../../wit/deps/http.wit"),
    ),
    ("wit/deps/io.wit", include_str!("../../../wit/deps/io.wit")),
    (
        "wit/deps/random.wit",
        include_str!("../../../wit/deps/random.wit"),
    ),
    (
        "wit/deps/sockets.wit",
        include_str!("../../../wit/deps/sockets.wit"),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  stagecraft plugin new --lang python greet
  stagecraft plugin new --lang js --name site-check plugins/site-check

The directory must be empty or not exist yet. Its README.md says how to build and test.")]
pub struct NewArgs {
    /// The language of the plugin.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// The plugin's name (default: the directory's name). Lowercase letters, digits and `-`.
    #[arg(long)]
    pub name: Option<String>,
    /// The directory to create.
    pub dir: PathBuf,
}

/// (path in the scaffold, template text).
fn templates(lang: Lang) -> Vec<(&'static str, &'static str)> {
    let mut files = vec![("wit/phase.wit", PHASE_WIT)];
    files.extend_from_slice(WIT_DEPS);
    match lang {
        Lang::Rust => files.extend([
            (
                "Cargo.toml",
                include_str!("../../../plugins/templates/rust/Cargo.toml.in"),
            ),
            (
                "src/lib.rs",
                include_str!("../../../plugins/templates/rust/lib.rs"),
            ),
            (
                "README.md",
                include_str!("../../../plugins/templates/rust/README.md"),
            ),
            (
                ".gitignore",
                include_str!("../../../plugins/templates/rust/gitignore"),
            ),
        ]),
        Lang::Python => files.extend([
            (
                "app.py",
                include_str!("../../../plugins/templates/python/app.py"),
            ),
            (
                "stagecraft_http.py",
                include_str!("../../../plugins/templates/python/stagecraft_http.py"),
            ),
            (
                "README.md",
                include_str!("../../../plugins/templates/python/README.md"),
            ),
            (
                ".gitignore",
                include_str!("../../../plugins/templates/python/gitignore"),
            ),
        ]),
        Lang::Js => files.extend([
            (
                "plugin.js",
                include_str!("../../../plugins/templates/js/plugin.js"),
            ),
            (
                "package.json",
                include_str!("../../../plugins/templates/js/package.json"),
            ),
            (
                "README.md",
                include_str!("../../../plugins/templates/js/README.md"),
            ),
            (
                ".gitignore",
                include_str!("../../../plugins/templates/js/gitignore"),
            ),
        ]),
    }
    files
}

/// A plugin name must be usable as a Cargo package, a file name and an npm package name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

fn plugin_name(args: &NewArgs) -> anyhow::Result<String> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => args
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase().replace('_', "-"))
            .unwrap_or_default(),
    };
    if !valid_name(&name) {
        return Err(input_error(format!(
            "{name:?} cannot name a plugin: use lowercase letters, digits and `-`, starting with \
             a letter (pass --name to choose one other than the directory's name)"
        )));
    }
    Ok(name)
}

fn ensure_empty(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(input_error(format!(
                    "{} is not empty: `plugin new` only writes into a new or empty directory, \
                     so that it never overwrites your files; pick another directory",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(input_error(format!(
            "{} is a file, not a directory; pick a directory to create the plugin in",
            dir.display()
        ))),
        Err(e) => Err(input_error(format!("cannot read {}: {e}", dir.display()))),
    }
}

pub fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    let mut stdout = crate::output::stdout();
    let name = plugin_name(&args)?;
    ensure_empty(&args.dir)?;
    let crate_name = name.replace('-', "_");
    for (path, template) in templates(args.lang) {
        let target = args.dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let text = template
            .replace("{{name}}", &name)
            .replace("{{crate}}", &crate_name);
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    let build = match args.lang {
        Lang::Rust => "cargo build --target wasm32-wasip2 --release".to_string(),
        Lang::Python => {
            format!("componentize-py -d wit -w phase-plugin componentize app -o {name}.wasm")
        }
        Lang::Js => "npm install && npm run build".to_string(),
    };
    writeln!(
        stdout,
        "Created {} plugin {name} in {}",
        lang_name(args.lang),
        args.dir.display()
    )?;
    writeln!(stdout, "Build it:  cd {} && {build}", args.dir.display())?;
    writeln!(
        stdout,
        "Then run:  stagecraft plugin test <the .wasm> --set target=world (see its README.md)"
    )?;
    Ok(ExitCode::Ok)
}

fn lang_name(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "a Rust",
        Lang::Python => "a Python",
        Lang::Js => "a JavaScript",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_package_rules() {
        assert!(valid_name("greet"));
        assert!(valid_name("site-check2"));
        assert!(!valid_name(""));
        assert!(!valid_name("2fast"));
        assert!(!valid_name("Greet"));
        assert!(!valid_name("a_b"));
        assert!(!valid_name("trailing-"));
    }

    #[test]
    fn every_scaffold_carries_the_contract_and_its_wasi_packages() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let files = templates(lang);
            assert!(files
                .iter()
                .any(|(p, t)| *p == "wit/phase.wit" && *t == PHASE_WIT));
            for dep in WIT_DEPS {
                assert!(files.contains(dep), "{lang:?} lacks {}", dep.0);
            }
            assert!(files.iter().any(|(p, _)| *p == "README.md"));
        }
    }

    #[test]
    fn the_scaffolded_deps_are_all_of_wit_deps() {
        let deps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/deps");
        let mut on_disk: Vec<String> = std::fs::read_dir(&deps)
            .unwrap()
            .map(|e| format!("wit/deps/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        on_disk.sort();
        let scaffolded: Vec<String> = WIT_DEPS.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(
            scaffolded, on_disk,
            "add the new file of wit/deps to WIT_DEPS"
        );
    }
}
