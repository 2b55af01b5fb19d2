//! `builtin:exec`: runs `config.command` as one host program through the host's `exec` import.
//!
//! The command is split into words the way a POSIX shell would split them (quotes and
//! backslashes), but it is never given to a shell: no pipes, globs or variable expansion, so the
//! program named first must be in the phase's `exec` grant. Placeholders are substituted in each
//! word after splitting, so a value containing spaces stays one argument.

use stagecraft_plugin_sdk::{exec, export_phase, log, Context, Error, Info, Phase, Report};

/// How much of stderr a failure carries: enough for a compiler error, not a whole build log.
const STDERR_TAIL_LINES: usize = 20;

struct Exec;

impl Phase for Exec {
    fn describe() -> Info {
        Info::new(
            "exec",
            env!("CARGO_PKG_VERSION"),
            "Runs config.command (split like a shell would, without a shell) with {{version}}, \
             {{environment}}, {{release_id}}, {{phase}}, {{commit}}, {{operation}}, \
             {{rollback_target}} and {{var.NAME}} substituted; a non-zero exit fails the phase.",
        )
    }

    fn run(ctx: &Context) -> Result<Report, Error> {
        let command = ctx.require_config("command")?;
        let words = split_words(command)
            .map_err(|e| Error::new(format!("config.command {command:?} cannot be split: {e}")))?;
        let words: Vec<String> = words.iter().map(|w| ctx.substitute(w)).collect();
        let Some((program, args)) = words.split_first() else {
            return Err(Error::new("config.command is empty: name a program to run"));
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let shown = words.join(" ");
        log::info(&format!("running {shown}"));
        let out = exec(program, &args).map_err(Error::new)?;
        for line in out.stdout.lines() {
            log::info(line);
        }
        for line in out.stderr.lines() {
            log::warn(line);
        }
        match out.exit_code {
            Some(0) => Ok(Report::completed(format!("ran `{shown}`")).output("exit_code", "0")),
            status => {
                let status = match status {
                    Some(code) => format!("exited with status {code}"),
                    None => "was killed by a signal".to_string(),
                };
                let tail = tail(&out.stderr, STDERR_TAIL_LINES);
                let mut err = Error::new(format!("`{shown}` {status}"));
                if !tail.is_empty() {
                    err = err.with_details(tail);
                }
                Err(err)
            }
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Split like a POSIX shell: whitespace separates words; 'single quotes' keep everything;
/// "double quotes" keep everything but `\"`, `\\`, `\$` and `` \` `` escapes; a backslash outside
/// quotes escapes the next character.
fn split_words(input: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = input.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

export_phase!(Exec);

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            split_words(r#"make dist VERSION={{version}} 'a b' "c \"d\"" e\ f ''"#).unwrap(),
            vec![
                "make",
                "dist",
                "VERSION={{version}}",
                "a b",
                "c \"d\"",
                "e f",
                ""
            ]
        );
        assert!(split_words("echo 'oops").is_err());
        assert!(split_words("echo \"oops").is_err());
        assert_eq!(split_words("   ").unwrap(), Vec::<String>::new());
    }
}
