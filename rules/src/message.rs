//! Message templates: what grid workers read, in English and Chinese.
//!
//! ```toml
//! message = { en = "{building}: wall tilt {value}{unit} since installation ({severity})",
//!             zh = "{site}{building}墙体倾斜{value}{unit}，{severity}" }
//! ```
//!
//! Placeholders are checked at load time ([`PLACEHOLDERS`]); rendering cannot fail. `{severity}`
//! is written in the message's language.

use std::collections::BTreeMap;
use std::fmt;

/// Everything a template may name.
pub const PLACEHOLDERS: [&str; 8] = ["sensor", "site", "building", "grid", "value", "unit", "severity", "since"];

/// Languages a rule may give messages in.
pub const LANGUAGES: [&str; 2] = ["en", "zh"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Placeholder(&'static str),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// Why a template did not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder `{{{name}}}`; use {known}", known = PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", "))]
    UnknownPlaceholder { name: String },
    #[error("`{{` is not closed; write `{{{{` for a literal brace")]
    Unclosed,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            literal.push_str(&rest[..open]);
            let brace = &rest[open..];
            if brace.starts_with("{{") || brace.starts_with("}}") {
                literal.push_str(&brace[..1]);
                rest = &brace[2..];
                continue;
            }
            if let Some(after) = brace.strip_prefix('}') {
                literal.push('}');
                rest = after;
                continue;
            }
            let close = brace.find('}').ok_or(TemplateError::Unclosed)?;
            let name = &brace[1..close];
            let known = PLACEHOLDERS.iter().find(|p| **p == name).ok_or_else(|| TemplateError::UnknownPlaceholder { name: name.to_string() })?;
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Placeholder(known));
            rest = &brace[close + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// Fills the placeholders; `value` gives each one's text (missing ones render empty). Two
    /// placeholders written side by side (`{site}{building}`, as Chinese text runs) whose values
    /// would glue two Latin words together ("north-laneB7") are kept apart by a space; Chinese
    /// names join as they are ("北街社区7号楼").
    pub fn render(&self, value: impl Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        let mut after_placeholder = false;
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => {
                    out.push_str(text);
                    after_placeholder = false;
                }
                Piece::Placeholder(name) => {
                    let text = value(name).unwrap_or_default();
                    let glued = |a: Option<char>, b: Option<char>| a.zip(b).is_some_and(|(a, b)| a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric());
                    if after_placeholder && glued(out.chars().next_back(), text.chars().next()) {
                        out.push(' ');
                    }
                    out.push_str(&text);
                    after_placeholder |= !text.is_empty();
                }
            }
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => f.write_str(&text.replace('{', "{{").replace('}', "}}"))?,
                Piece::Placeholder(name) => write!(f, "{{{name}}}")?,
            }
        }
        Ok(())
    }
}

/// A rule's templates by language (`en`, `zh`).
pub type Messages = BTreeMap<String, Template>;

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(name: &str) -> Option<String> {
        match name {
            "building" => Some("B7".into()),
            "value" => Some("7.31".into()),
            _ => None,
        }
    }

    #[test]
    fn renders_placeholders_and_literal_braces() {
        let t = Template::parse("{building}: tilt {value}‰ {{ok}}").unwrap();
        assert_eq!(t.render(fill), "B7: tilt 7.31‰ {ok}");
        assert_eq!(t.to_string(), "{building}: tilt {value}‰ {{ok}}");
    }

    #[test]
    fn chinese_text_is_kept_as_written() {
        let t = Template::parse("{building}墙体倾斜{value}‰").unwrap();
        assert_eq!(t.render(fill), "B7墙体倾斜7.31‰");
    }

    #[test]
    fn side_by_side_latin_ids_are_kept_apart_chinese_names_are_not() {
        let t = Template::parse("{site}{building}（{sensor}）墙体倾斜").unwrap();
        let ids = |name: &str| {
            Some(
                match name {
                    "site" => "north-lane",
                    "building" => "B7",
                    _ => "house-07",
                }
                .to_string(),
            )
        };
        assert_eq!(t.render(ids), "north-lane B7（house-07）墙体倾斜", "an outside tester read 'north-laneB7'");
        let names = |name: &str| {
            Some(
                match name {
                    "site" => "北街社区",
                    "building" => "7号楼",
                    _ => "house-07",
                }
                .to_string(),
            )
        };
        assert_eq!(t.render(names), "北街社区7号楼（house-07）墙体倾斜");
        let mixed = |name: &str| {
            Some(
                match name {
                    "site" => "北街社区",
                    "building" => "B7",
                    _ => "house-07",
                }
                .to_string(),
            )
        };
        assert_eq!(t.render(mixed), "北街社区B7（house-07）墙体倾斜");
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_errors() {
        assert_eq!(Template::parse("{house}"), Err(TemplateError::UnknownPlaceholder { name: "house".into() }));
        assert_eq!(Template::parse("tilt {value"), Err(TemplateError::Unclosed));
        assert!(TemplateError::UnknownPlaceholder { name: "x".into() }.to_string().contains("{sensor}, {site}"));
    }
}
