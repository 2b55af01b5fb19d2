//! Plain aligned tables for people: no borders and no control characters, columns left-aligned
//! and two spaces apart, measured in display width (`日本語` takes six columns, not three). On a
//! terminal a table fits its width, long values wrapping inside their column; on a pipe nothing
//! is ever cut, so a script reading the text gets every value whole. Every cell is escaped when
//! it is made ([`Cell`]), so no value reaches the terminal raw.

use std::io::IsTerminal;

use comfy_table::{presets::NOTHING, Column, ColumnConstraint, ContentArrangement, Table, Width};

use super::terminal::escape_controls;

/// Space between two columns.
const GAP: u16 = 2;

/// The narrowest a wrapping column gets on a narrow terminal (or its longest value, if
/// shorter, and never narrower than its header): below that a value is shredded into a
/// column of single characters, and a line longer than the terminal reads better.
const MIN_WRAP_WIDTH: u16 = 10;

/// How wide a table may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// As wide as its values: nothing wraps or is cut (a pipe, a file).
    Unbounded,
    /// At most this many columns; long values wrap within their column (a terminal).
    Width(u16),
}

impl Fit {
    /// The terminal's width when standard output is one, else [`Fit::Unbounded`].
    pub fn stdout() -> Fit {
        let stdout = std::io::stdout();
        if !stdout.is_terminal() {
            return Fit::Unbounded;
        }
        match terminal_size::terminal_size_of(&stdout) {
            Some((terminal_size::Width(w), _)) if w > 0 => Fit::Width(w),
            _ => Fit::Unbounded,
        }
    }
}

/// One cell's text, escaped when made: a value from state, a plugin or the user can only be put
/// in a table through here.
#[derive(Debug, Clone, Default)]
pub struct Cell(String);

impl Cell {
    pub fn new(text: &str) -> Cell {
        Cell(escape_controls(text).into_owned())
    }

    /// A cell of several lines, each escaped on its own (a phase's summary, error and outputs).
    pub fn lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Cell {
        let lines: Vec<String> = lines
            .into_iter()
            .map(|l| escape_controls(l).into_owned())
            .collect();
        Cell(lines.join("\n"))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell::new(text)
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell::new(&text)
    }
}

/// A table: a header, rows, and the columns that must never wrap (ids, timestamps, statuses).
pub struct TextTable {
    header: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
    whole: Vec<usize>,
}

impl TextTable {
    pub fn new(header: Vec<&'static str>) -> TextTable {
        TextTable {
            header,
            rows: Vec::new(),
            whole: Vec::new(),
        }
    }

    /// Column `index` keeps its values on one line whatever the width; others wrap first.
    pub fn keep_whole(&mut self, index: usize) -> &mut Self {
        self.whole.push(index);
        self
    }

    pub fn row(&mut self, cells: Vec<Cell>) -> &mut Self {
        debug_assert_eq!(cells.len(), self.header.len(), "one cell per column");
        self.rows.push(cells);
        self
    }

    /// Leave out every column whose cells are all empty, except those in `keep`.
    pub fn drop_empty_columns(&mut self, keep: &[usize]) -> &mut Self {
        let empty: Vec<usize> = (0..self.header.len())
            .filter(|c| !keep.contains(c) && self.rows.iter().all(|r| r[*c].is_empty()))
            .collect();
        for c in empty.iter().rev() {
            self.header.remove(*c);
            for row in &mut self.rows {
                row.remove(*c);
            }
        }
        // Column indices after the removed ones move left.
        self.whole = self
            .whole
            .iter()
            .filter(|w| !empty.contains(w))
            .map(|w| w - empty.iter().filter(|e| *e < w).count())
            .collect();
        self
    }

    /// The table as text, one `\n`-terminated line per line, no trailing spaces; every line
    /// starts with `indent`.
    pub fn render(&self, fit: Fit, indent: &str) -> String {
        let mut table = Table::new();
        table.load_style(NOTHING);
        table.set_header(self.header.clone());
        for row in &self.rows {
            table.add_row(row.iter().map(|c| c.0.as_str()).collect::<Vec<_>>());
        }
        match fit {
            Fit::Unbounded => {
                table.set_content_arrangement(ContentArrangement::Disabled);
            }
            Fit::Width(width) => {
                let indent_width = u16::try_from(indent.len()).unwrap_or(u16::MAX);
                table
                    .set_content_arrangement(ContentArrangement::Dynamic)
                    .set_width(width.saturating_sub(indent_width).max(1));
            }
        }
        let last = self.header.len().saturating_sub(1);
        // The longest value of each column in display width, the header included.
        let longest = table.column_max_content_widths();
        let padding = |c: usize| if c == last { 0 } else { GAP };
        // comfy-table's widths include the column's padding.
        let minimum: Vec<u16> = (0..self.header.len())
            .map(|c| {
                let header = u16::try_from(self.header[c].len()).unwrap_or(u16::MAX);
                let content = header.max(longest.get(c).copied().unwrap_or(0).min(MIN_WRAP_WIDTH));
                content.saturating_add(padding(c))
            })
            .collect();
        let columns: Vec<&mut Column> = table.column_iter_mut().collect();
        for (i, column) in columns.into_iter().enumerate() {
            column.set_padding((0, padding(i)));
            column.set_constraint(if self.whole.contains(&i) {
                ColumnConstraint::ContentWidth
            } else {
                ColumnConstraint::LowerBoundary(Width::Fixed(minimum[i]))
            });
        }
        let mut out = String::new();
        for line in table.lines() {
            out.push_str(indent);
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(version: &str) -> TextTable {
        let mut t = TextTable::new(vec!["RELEASE ID", "VERSION", "STATUS"]);
        t.keep_whole(0).keep_whole(2);
        t.row(vec![
            "rel-20261122-120000000".into(),
            version.into(),
            "completed".into(),
        ]);
        t.row(vec![
            "rel-20261121-110000500".into(),
            "v1".into(),
            "failed".into(),
        ]);
        t
    }

    /// The display column where `needle` starts on `line`.
    fn column_of(line: &str, needle: &str) -> usize {
        let at = line.find(needle).unwrap();
        unicode_width(&line[..at])
    }

    fn unicode_width(text: &str) -> usize {
        // Wide (CJK) characters take two columns; everything in these tests is ASCII or CJK.
        text.chars()
            .map(|c| {
                if ('\u{3040}'..='\u{9fff}').contains(&c) {
                    2
                } else {
                    1
                }
            })
            .sum()
    }

    #[test]
    fn columns_align_by_display_width() {
        let text = sample("v5-日本語").render(Fit::Unbounded, "");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "RELEASE ID              VERSION    STATUS");
        assert_eq!(lines[1], "rel-20261122-120000000  v5-日本語  completed");
        assert_eq!(
            column_of(lines[1], "completed"),
            column_of(lines[0], "STATUS")
        );
        assert_eq!(column_of(lines[2], "failed"), column_of(lines[0], "STATUS"));
    }

    #[test]
    fn unbounded_never_cuts_and_a_terminal_width_wraps_inside_the_column() {
        let long = "v".repeat(70);
        let text = sample(&long).render(Fit::Unbounded, "");
        assert!(text.contains(&long), "{text}");
        let narrow = sample(&long).render(Fit::Width(60), "  ");
        for line in narrow.lines() {
            assert!(line.chars().count() <= 60, "{line:?} in\n{narrow}");
            assert!(line.starts_with("  "), "{line:?}");
        }
        // Every character is still there, across lines, and ids and statuses stay whole.
        assert_eq!(narrow.matches('v').count(), 70 + 1, "{narrow}");
        assert!(narrow.contains("rel-20261122-120000000"), "{narrow}");
        assert!(narrow.contains("completed"), "{narrow}");
    }

    #[test]
    fn cells_are_escaped_and_lines_carry_no_trailing_space() {
        let mut t = TextTable::new(vec!["A", "B"]);
        t.row(vec!["\x1b[2Jx".into(), "".into()]);
        t.row(vec!["y".into(), Cell::lines(["one\r", "two"])]);
        let text = t.render(Fit::Unbounded, "");
        assert_eq!(
            text,
            "A         B\n\\x1b[2Jx\ny         one\\r\n          two\n"
        );
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
    }

    #[test]
    fn empty_columns_can_be_left_out() {
        let mut t = TextTable::new(vec!["A", "B", "C"]);
        t.keep_whole(2);
        t.row(vec!["a".into(), "".into(), "c".into()]);
        t.drop_empty_columns(&[0]);
        assert_eq!(t.render(Fit::Unbounded, ""), "A  C\na  c\n");
        assert_eq!(t.whole, vec![1]);
    }
}
