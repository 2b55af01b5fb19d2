//! Text that reaches a terminal: any character a terminal would act on rather than show is
//! shown escaped. Plugin text (summaries, skip reasons, errors, log lines), values read back from
//! state and user-given values all pass through [`escape_controls`] before a human sees them, so
//! no plugin can clear the screen, retitle the window, move the cursor or reorder a line with
//! bidi overrides, and a phase is always exactly one line. `--json` output needs none of this:
//! serde_json escapes every control character itself.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether a terminal could act on `c` instead of showing it: the C0 controls (newline and tab
/// included), DEL, the C1 controls (U+0080..U+009F, which some terminals read as escape
/// sequences: U+009B is CSI), and the bidi embeddings, overrides and isolates (U+202A..U+202E,
/// U+2066..U+2069), which reorder what follows them on the line.
pub fn is_terminal_control(c: char) -> bool {
    matches!(c, '\0'..='\x1f' | '\x7f'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `text` holds any character [`is_terminal_control`] names (a value that must be
/// refused, not stored, such as a `--version`).
pub fn contains_controls(text: &str) -> bool {
    text.chars().any(is_terminal_control)
}

/// `text` with every terminal control shown as an escape: `\n`, `\r`, `\t`, `\x1b` for the
/// other ASCII controls, and `\u{9b}` / `\u{202e}` beyond ASCII. Everything else, including any
/// other non-ASCII text (`日本語`), is left as it is. Borrows when there is nothing to escape.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    let Some(first) = text.find(is_terminal_control) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii() && is_terminal_control(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_terminal_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Text that may span lines on purpose (an error message with a quoted manifest excerpt): each
/// line is escaped on its own and the newlines between them are kept.
pub fn escape_controls_by_line(text: &str) -> Cow<'_, str> {
    if !text.split('\n').any(contains_controls) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.split('\n')
            .map(escape_controls)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_line_breaks_are_shown_not_interpreted() {
        assert_eq!(
            escape_controls("\x1b[2J\x1b]0;pwned\x07"),
            "\\x1b[2J\\x1b]0;pwned\\x07"
        );
        assert_eq!(
            escape_controls("done\r  rollout       completed\nnext"),
            "done\\r  rollout       completed\\nnext"
        );
        assert_eq!(escape_controls("a\tb\0c\x7f"), "a\\tb\\x00c\\x7f");
    }

    #[test]
    fn c1_controls_and_bidi_overrides_are_escaped() {
        assert_eq!(escape_controls("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(escape_controls("\u{85}"), "\\u{85}");
        assert_eq!(
            escape_controls("v1\u{202e}lmth.exe\u{2066}x\u{2069}"),
            "v1\\u{202e}lmth.exe\\u{2066}x\\u{2069}"
        );
        assert_eq!(
            escape_controls("\u{202a}\u{202d}\u{2067}\u{2068}"),
            "\\u{202a}\\u{202d}\\u{2067}\\u{2068}"
        );
    }

    #[test]
    fn ordinary_text_is_borrowed_untouched() {
        for text in [
            "",
            "rendered 3 files",
            "日本語 ✓ café",
            "C:\\path\\x1b",
            "\u{a0}\u{2028}\u{2065}\u{206a}",
        ] {
            assert!(
                matches!(escape_controls(text), Cow::Borrowed(t) if t == text),
                "{text:?}"
            );
            assert!(!contains_controls(text), "{text:?}");
        }
        assert!(contains_controls("v1\x1b[2J"));
        assert!(contains_controls("v1\n"));
        assert!(contains_controls("v\u{202e}1"));
    }

    #[test]
    fn by_line_keeps_the_newlines_between_lines() {
        assert_eq!(
            escape_controls_by_line("manifest:3:1: bad\n  | x = \x1b[31m\n"),
            "manifest:3:1: bad\n  | x = \\x1b[31m\n"
        );
        assert!(matches!(
            escape_controls_by_line("one\ntwo\n"),
            Cow::Borrowed(_)
        ));
        assert_eq!(escape_controls_by_line("a\r\nb"), "a\\r\nb");
    }
}
