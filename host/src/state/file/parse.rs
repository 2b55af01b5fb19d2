//! Reading a state file: the model from its bytes, or what is wrong with it, where, and how to
//! recover.

use super::*;

/// Parse a state file's bytes, or say for people what is wrong with it, where, and how to
/// recover (`path` and `bak` name the file and its backup in the message).
pub fn parse_state(
    bytes: &[u8],
    path: &Path,
    bak: &Path,
    bak_exists: bool,
) -> Result<State, String> {
    let recover = if bak_exists {
        format!(
            "the previous version is in {bak}; inspect it and copy it over {file} if it is good",
            bak = bak.display(),
            file = path.display()
        )
    } else {
        format!(
            "there is no previous version ({} does not exist); repair the file by hand, or move \
             it away to start an empty history",
            bak.display()
        )
    };
    let file = path.display();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(format!(
            "state file {file} is empty (a complete file always holds at least {{\"releases\": \
             []}}); {recover}"
        ));
    }
    // The model refuses duplicate keys as it parses (see unique_keys.rs).
    let state: State = match serde_json::from_slice(bytes) {
        Ok(state) => state,
        Err(e) => {
            // A newer format may fail to parse as ours; name the version rather than the symptom.
            if let Some(v) = newer_format_version(bytes) {
                return Err(newer_version_message(path, v));
            }
            let what = match e.classify() {
                serde_json::error::Category::Eof => "is truncated",
                serde_json::error::Category::Syntax => "is not valid JSON",
                serde_json::error::Category::Data => "does not match the state format",
                serde_json::error::Category::Io => "cannot be read",
            };
            let message = e.to_string();
            let detail = strip_position(&message);
            return Err(format!(
                "state file {file} {what}: {detail} at line {}, column {}; {recover}",
                e.line(),
                e.column()
            ));
        }
    };
    if let Some(v) = state.format_version {
        if v > FORMAT_VERSION {
            return Err(newer_version_message(path, u64::from(v)));
        }
    }
    if let Err(e) = state.validate() {
        return Err(format!(
            "state file {file} does not match the state format: {e}; {recover}"
        ));
    }
    Ok(state)
}

fn newer_version_message(path: &Path, version: u64) -> String {
    format!(
        "state file {} has format_version {version}, but this stagecraft reads at most \
         {FORMAT_VERSION}; upgrade stagecraft",
        path.display()
    )
}

/// The file's `format_version` when it is newer than ours (only looked at when parsing failed).
fn newer_format_version(bytes: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Probe {
        format_version: Option<u64>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    probe.format_version.filter(|v| *v > FORMAT_VERSION as u64)
}

/// serde_json appends " at line L column C" to its messages; we state the position ourselves.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}
