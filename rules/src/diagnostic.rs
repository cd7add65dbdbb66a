//! Diagnostics for rule files: every problem names the file, line, column and key, so an
//! operator can jump straight to it (`gridwatch rules check` prints them one per line).

use std::fmt;
use std::ops::Range;

/// One problem found in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the operator named it (or `builtin:<pack>` for shipped packs).
    pub file: String,
    /// 1-based line of the offending text.
    pub line: usize,
    /// 1-based column (in characters) of the offending text.
    pub column: usize,
    /// The key the problem is about, when there is one (`above`, `value`, …).
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: error", self.file, self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, " in `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems found while loading a set of rule files. Loading is all-or-nothing: if this is
/// returned, no rule of the set was compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.0))]
pub struct RuleErrors(pub Vec<Diagnostic>);

fn render(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// A file's text with a way to turn byte offsets (from TOML spans) into line and column.
#[derive(Debug)]
pub(crate) struct SourceText<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

impl SourceText<'_> {
    /// Builds a diagnostic pointing at `span` (byte offsets into the text).
    pub fn diagnostic(&self, span: Range<usize>, key: Option<&str>, message: impl Into<String>) -> Diagnostic {
        let (line, column) = line_column(self.text, span.start);
        Diagnostic { file: self.name.to_string(), line, column, key: key.map(str::to_string), message: message.into() }
    }
}

/// 1-based line and column of a byte offset; offsets past the end point at the last line.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 8), (2, 3));
    }

    #[test]
    fn line_column_counts_characters_not_bytes() {
        let text = "t = \"倾斜\" x";
        let offset = text.find('x').unwrap();
        assert_eq!(line_column(text, offset), (1, 10));
    }

    #[test]
    fn diagnostic_renders_file_line_column_and_key() {
        let d = Diagnostic { file: "r.toml".into(), line: 3, column: 9, key: Some("above".into()), message: "must be a number".into() };
        assert_eq!(d.to_string(), "r.toml:3:9: error in `above`: must be a number");
    }
}
