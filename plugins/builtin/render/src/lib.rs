//! `builtin:render`: copies a template directory into `<dest>/<version>/`, substituting
//! placeholders in text files. Re-running for the same version rewrites the same files with the
//! same content, so a retried phase converges.

use std::fs;
use std::path::{Path, PathBuf};

use stagecraft_plugin_sdk::{export_phase, log, Context, Error, Info, Phase, Report};

struct Render;

impl Phase for Render {
    fn describe() -> Info {
        Info::new(
            "render",
            env!("CARGO_PKG_VERSION"),
            "Copies config.source into config.dest/<version>/, substituting {{version}}, \
             {{environment}}, {{release_id}}, {{commit}} and {{var.NAME}} in text files.",
        )
    }

    fn run(ctx: &Context) -> Result<Report, Error> {
        let source = PathBuf::from(ctx.require_config("source")?);
        let dest_root = PathBuf::from(ctx.require_config("dest")?);
        let version = ctx.target_version();
        if version.is_empty() || version.contains('/') || version == "." || version == ".." {
            return Err(Error::new(format!(
                "version {version:?} cannot name a directory: use a tag or SHA without '/'"
            )));
        }
        let dest = dest_root.join(version);
        if !source.is_dir() {
            return Err(Error::new(format!(
                "template directory {} is not readable: add it to this phase's read grant \
                 (or fix config.source)",
                source.display()
            )));
        }
        let mut files = 0usize;
        copy_tree(ctx, &source, &dest, &mut files)?;
        let shown = dest.display().to_string();
        log::info(&format!("rendered {files} files into {shown}"));
        Ok(Report::completed(format!("rendered {files} files into {shown}")).output("path", shown))
    }
}

fn copy_tree(ctx: &Context, from: &Path, to: &Path, files: &mut usize) -> Result<(), Error> {
    fs::create_dir_all(to).map_err(|e| {
        Error::new(format!(
            "cannot create {}: {e} (is it inside this phase's write grant?)",
            to.display()
        ))
    })?;
    let mut entries: Vec<_> = fs::read_dir(from)
        .map_err(|e| Error::new(format!("cannot list {}: {e}", from.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::new(format!("cannot list {}: {e}", from.display())))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| Error::new(format!("cannot stat {}: {e}", path.display())))?;
        if kind.is_dir() {
            copy_tree(ctx, &path, &target, files)?;
        } else if kind.is_file() {
            let bytes = fs::read(&path)
                .map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
            let out = match String::from_utf8(bytes) {
                Ok(text) => ctx.substitute(&text).into_bytes(),
                // Binary files (images, archives) are copied as they are.
                Err(not_text) => not_text.into_bytes(),
            };
            write_if_changed(&target, &out)?;
            *files += 1;
        } else {
            log::warn(&format!(
                "skipping {} (not a file or directory)",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Write through a temporary name and rename, so a reader never sees half a file; skip the write
/// when the content is already there.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if fs::read(path).map(|old| old == bytes).unwrap_or(false) {
        return Ok(());
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".stagecraft-tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes)
        .and_then(|_| fs::rename(&tmp, path))
        .map_err(|e| {
            Error::new(format!(
                "cannot write {}: {e} (is it inside this phase's write grant?)",
                path.display()
            ))
        })
}

export_phase!(Render);
