//! `builtin:switch`: atomically points a `current` symlink at `<releases>/<version>`.
//!
//! The new link is created under a temporary name next to `current` and renamed over it, so a
//! reader always sees either the old target or the new one. On a rollback the version is the
//! rollback target's.

use std::fs;
use std::path::{Component, Path, PathBuf};

use stagecraft_plugin_sdk::{export_phase, log, Context, Error, Info, Phase, Report};

struct Switch;

impl Phase for Switch {
    fn describe() -> Info {
        Info::new(
            "switch",
            env!("CARGO_PKG_VERSION"),
            "Atomically points the config.current symlink at config.releases/<version>.",
        )
    }

    fn run(ctx: &Context) -> Result<Report, Error> {
        let releases = normalized(ctx.require_config("releases")?, "releases")?;
        let current = normalized(&ctx.config_or("current", "current"), "current")?;
        let version = ctx.target_version();
        if version.is_empty() || version.contains('/') || version == "." || version == ".." {
            return Err(Error::new(format!(
                "version {version:?} cannot name a directory: use a tag or SHA without '/'"
            )));
        }
        let target = releases.join(version);
        if !target.is_dir() {
            return Err(Error::new(format!(
                "{} does not exist: the release directory must be created (e.g. by \
                 builtin:render) before switching to it",
                target.display()
            )));
        }
        let link_text = relative_link(&current, &target);
        let previous = fs::read_link(&current).ok();
        if previous.as_deref() == Some(link_text.as_path()) {
            return Ok(Report::completed(format!(
                "{} already points at {}",
                current.display(),
                target.display()
            ))
            .output("current", target.display().to_string()));
        }
        if current.exists() && previous.is_none() {
            return Err(Error::new(format!(
                "{} exists and is not a symlink: move it away so switch can manage it",
                current.display()
            )));
        }
        let mut tmp_name = current.as_os_str().to_owned();
        tmp_name.push(format!(".switch-{}", ctx.release.id));
        let tmp = PathBuf::from(tmp_name);
        let _ = fs::remove_file(&tmp);
        symlink(&link_text, &tmp).map_err(|e| {
            Error::new(format!(
                "cannot create symlink {}: {e} (is its directory inside this phase's write grant?)",
                tmp.display()
            ))
        })?;
        fs::rename(&tmp, &current).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::new(format!("cannot replace {}: {e}", current.display()))
        })?;
        log::info(&format!("{} -> {}", current.display(), link_text.display()));
        let mut report = Report::completed(format!(
            "{} now points at {}",
            current.display(),
            target.display()
        ))
        .output("current", target.display().to_string());
        if let Some(previous) = previous {
            report = report.output("previous", previous.display().to_string());
        }
        Ok(report)
    }
}

/// Both paths are relative to the project root; `..` would leave the grants anyway, so it is
/// refused up front with a clearer message than the sandbox would give.
fn normalized(raw: &str, key: &str) -> Result<PathBuf, Error> {
    let mut out = PathBuf::new();
    for part in Path::new(raw).components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => {
                return Err(Error::new(format!(
                    "config.{key} = {raw:?} must be a relative path inside the project without '..'"
                )))
            }
        }
    }
    if out.as_os_str().is_empty() && key == "current" {
        return Err(Error::new(
            "config.current must name a link, not the project root",
        ));
    }
    Ok(out)
}

/// The link text that makes `link` resolve to `target` (both relative to the same root).
fn relative_link(link: &Path, target: &Path) -> PathBuf {
    let link_dir: Vec<_> = link
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    let target_parts: Vec<_> = target.components().collect();
    let common = link_dir
        .iter()
        .zip(&target_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in common..link_dir.len() {
        out.push("..");
    }
    for part in &target_parts[common..] {
        out.push(part);
    }
    out
}

/// `std::os::wasi::fs::symlink_path` is still unstable; the deprecated portable `soft_link` is
/// the stable way to reach WASI's `symlink-at`.
#[allow(deprecated)]
fn symlink(
    target: impl AsRef<std::path::Path>,
    link: impl AsRef<std::path::Path>,
) -> std::io::Result<()> {
    std::fs::soft_link(target, link)
}

export_phase!(Switch);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_text_is_relative_to_the_link() {
        assert_eq!(
            relative_link(Path::new("current"), Path::new("releases/v2")),
            PathBuf::from("releases/v2")
        );
        assert_eq!(
            relative_link(Path::new("releases/current"), Path::new("releases/v2")),
            PathBuf::from("v2")
        );
        assert_eq!(
            relative_link(Path::new("www/current"), Path::new("releases/v2")),
            PathBuf::from("../releases/v2")
        );
    }
}
