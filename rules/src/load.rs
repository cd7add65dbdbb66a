//! Rule files (TOML) -> compiled [`RuleSet`]. Every problem in every file is reported with
//! file, line, column and key; a set with any error compiles to nothing (all-or-nothing, so a
//! bad reload can keep the old rules running).
//!
//! ```toml
//! [[rule]]
//! id = "tilt-danger"
//! title = "Wall tilt past 7‰ — danger point (JGJ 125)"
//! kind = "tilt"                  # scope: kind, sensors, sites, buildings, grids
//! value = "hypot(x, y)"          # a field, abs(field) or hypot(field, field)
//! unit = "°"
//! above = 0.4011                 # or below = …
//! clear_below = 0.35             # hysteresis; clear_above goes with below
//! for = "1m"                     # raise hold; clear_for is the clear hold
//! severity = "danger"            # notice | warning | alarm | danger (or blue … red)
//! ```

use crate::diagnostic::{Diagnostic, RuleErrors, SourceText};
use crate::expr::ValueExpr;
use crate::rule::{Direction, Millis, Origin, Rule, Threshold};
use crate::scope::{Scope, SensorKind};
use crate::severity::Severity;
use serde::Deserialize;
use std::collections::HashMap;
use toml::Spanned;

/// One rule file's name and text. The caller reads files; this crate never opens anything.
#[derive(Debug, Clone)]
pub struct RuleSource {
    /// Shown in diagnostics: a path, or `builtin:<pack>`.
    pub name: String,
    pub text: String,
}

/// A checked, compiled set of rules with unique ids.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// Compiles all sources together (ids must be unique across them).
    pub fn compile(sources: &[RuleSource]) -> Result<RuleSet, RuleErrors> {
        let mut diagnostics = Vec::new();
        let mut rules = Vec::new();
        let mut seen: HashMap<String, Origin> = HashMap::new();
        for source in sources {
            let text = SourceText { name: &source.name, text: &source.text };
            for (rule, id_span) in compile_file(&text, &mut diagnostics) {
                if let Some(first) = seen.get(&rule.id) {
                    diagnostics.push(text.diagnostic(
                        id_span,
                        Some("id"),
                        format!("duplicate rule id `{}` (first defined at {}:{})", rule.id, first.file, first.line),
                    ));
                    continue;
                }
                seen.insert(rule.id.clone(), rule.origin.clone());
                rules.push(rule);
            }
        }
        if diagnostics.is_empty() {
            Ok(RuleSet { rules })
        } else {
            Err(RuleErrors(diagnostics))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    title: Option<String>,
    kind: Option<SensorKind>,
    #[serde(default)]
    sensors: Vec<String>,
    #[serde(default)]
    sites: Vec<String>,
    #[serde(default)]
    buildings: Vec<String>,
    #[serde(default)]
    grids: Vec<String>,
    value: Spanned<String>,
    #[serde(default)]
    unit: String,
    above: Option<Spanned<f64>>,
    below: Option<Spanned<f64>>,
    clear_below: Option<Spanned<f64>>,
    clear_above: Option<Spanned<f64>>,
    #[serde(rename = "for")]
    raise_hold: Option<Spanned<String>>,
    clear_for: Option<Spanned<String>>,
    severity: Spanned<String>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// Compiles one file's enabled rules, pushing every problem found. Returns each rule with the
/// span of its id (for duplicate reports).
fn compile_file(text: &SourceText<'_>, diagnostics: &mut Vec<Diagnostic>) -> Vec<(Rule, std::ops::Range<usize>)> {
    let file: RawRuleFile = match toml::from_str(text.text) {
        Ok(file) => file,
        Err(err) => {
            let span = err.span().unwrap_or(0..0);
            diagnostics.push(text.diagnostic(span, None, err.message().trim_end()));
            return Vec::new();
        }
    };
    let mut rules = Vec::new();
    for raw in file.rule {
        let rule_span = raw.span();
        let raw = raw.into_inner();
        if !raw.enabled {
            continue;
        }
        let before = diagnostics.len();
        let rule = compile_rule(text, rule_span.start, raw, diagnostics);
        if diagnostics.len() == before {
            rules.extend(rule);
        }
    }
    rules
}

fn compile_rule(
    text: &SourceText<'_>,
    rule_start: usize,
    raw: RawRule,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(Rule, std::ops::Range<usize>)> {
    let mut error = |span: std::ops::Range<usize>, key: &str, message: String| {
        diagnostics.push(text.diagnostic(span, Some(key), message));
    };

    let id_span = raw.id.span();
    let id = raw.id.into_inner();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        error(id_span.clone(), "id", format!("`{id}` is not a rule id: use letters, digits, `-`, `_` and `.`"));
    }

    let value = ValueExpr::parse(raw.value.get_ref())
        .map_err(|e| error(raw.value.span(), "value", e.to_string()))
        .ok();
    let severity = raw
        .severity
        .get_ref()
        .parse::<Severity>()
        .map_err(|e| error(raw.severity.span(), "severity", e.to_string()))
        .ok();
    let raise_hold_ms = parse_hold(raw.raise_hold.as_ref(), "for", &mut error);
    let clear_hold_ms = parse_hold(raw.clear_for.as_ref(), "clear_for", &mut error);

    for (key, level) in [("above", &raw.above), ("below", &raw.below), ("clear_below", &raw.clear_below), ("clear_above", &raw.clear_above)] {
        if let Some(level) = level {
            if !level.get_ref().is_finite() {
                error(level.span(), key, "must be a finite number".into());
            }
        }
    }

    let threshold = match (&raw.above, &raw.below) {
        (Some(_), Some(below)) => {
            error(below.span(), "below", "a rule takes either `above` or `below`, not both".into());
            None
        }
        (None, None) => {
            error(rule_start..rule_start, "above", "a rule needs a threshold: `above = …` or `below = …`".into());
            None
        }
        (Some(above), None) => {
            if let Some(wrong) = &raw.clear_above {
                error(wrong.span(), "clear_above", "`clear_above` goes with `below`; with `above` use `clear_below`".into());
            }
            let trigger = *above.get_ref();
            let clear = raw.clear_below.as_ref().map_or(trigger, |c| *c.get_ref());
            if clear > trigger {
                error(
                    raw.clear_below.as_ref().map_or(above.span(), Spanned::span),
                    "clear_below",
                    format!("clear level {clear} must not be above the trigger {trigger}"),
                );
            }
            Some((Direction::Above, trigger, clear))
        }
        (None, Some(below)) => {
            if let Some(wrong) = &raw.clear_below {
                error(wrong.span(), "clear_below", "`clear_below` goes with `above`; with `below` use `clear_above`".into());
            }
            let trigger = *below.get_ref();
            let clear = raw.clear_above.as_ref().map_or(trigger, |c| *c.get_ref());
            if clear < trigger {
                error(
                    raw.clear_above.as_ref().map_or(below.span(), Spanned::span),
                    "clear_above",
                    format!("clear level {clear} must not be below the trigger {trigger}"),
                );
            }
            Some((Direction::Below, trigger, clear))
        }
    };

    let (Some(value), Some(severity), Some(raise_hold_ms), Some(clear_hold_ms), Some((direction, trigger, clear))) =
        (value, severity, raise_hold_ms, clear_hold_ms, threshold)
    else {
        return None;
    };
    let (line, _) = crate::diagnostic::line_column(text.text, rule_start);
    let rule = Rule {
        title: raw.title.unwrap_or_else(|| id.clone()),
        id,
        scope: Scope {
            kinds: raw.kind.into_iter().collect(),
            sensors: raw.sensors,
            sites: raw.sites,
            buildings: raw.buildings,
            grids: raw.grids,
        },
        value,
        unit: raw.unit,
        threshold: Threshold { direction, trigger, clear, raise_hold_ms, clear_hold_ms },
        severity,
        origin: Origin { file: text.name.to_string(), line },
    };
    Some((rule, id_span))
}

/// Parses a hold time such as `"10m"`; absent means no hold. `None` means an error was pushed.
fn parse_hold(
    hold: Option<&Spanned<String>>,
    key: &str,
    error: &mut impl FnMut(std::ops::Range<usize>, &str, String),
) -> Option<Millis> {
    let Some(hold) = hold else { return Some(0) };
    match humantime::parse_duration(hold.get_ref()) {
        Ok(d) => match Millis::try_from(d.as_millis()) {
            Ok(ms) => Some(ms),
            Err(_) => {
                error(hold.span(), key, "duration is too long".into());
                None
            }
        },
        Err(e) => {
            error(hold.span(), key, format!("`{}` is not a duration ({e}); write e.g. \"90s\", \"10m\", \"2h\"", hold.get_ref()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<RuleSet, RuleErrors> {
        RuleSet::compile(&[RuleSource { name: "test.toml".into(), text: text.into() }])
    }

    fn errors(text: &str) -> Vec<String> {
        compile(text).unwrap_err().0.iter().map(ToString::to_string).collect()
    }

    const GOOD: &str = r#"
[[rule]]
id = "do-low"
title = "Dissolved oxygen below class III"
kind = "water"
value = "do"
unit = "mg/L"
below = 5.0
clear_above = 5.5
for = "10m"
clear_for = "30m"
severity = "yellow"
"#;

    #[test]
    fn compiles_a_complete_rule() {
        let set = compile(GOOD).unwrap();
        let rule = &set.rules[0];
        assert_eq!(rule.id, "do-low");
        assert_eq!(rule.severity, Severity::Warning);
        assert_eq!(rule.threshold, Threshold { direction: Direction::Below, trigger: 5.0, clear: 5.5, raise_hold_ms: 600_000, clear_hold_ms: 1_800_000 });
        assert_eq!(rule.scope.kinds, vec![SensorKind::Water]);
        assert_eq!(rule.origin, Origin { file: "test.toml".into(), line: 2 });
    }

    #[test]
    fn unknown_key_is_reported_at_its_line() {
        let text = GOOD.replace("unit = ", "unti = ");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("test.toml:7:1: error: unknown field `unti`"), "{}", errs[0]);
    }

    #[test]
    fn bad_values_are_all_reported_with_their_keys() {
        let text = GOOD.replace("\"10m\"", "\"ten minutes\"").replace("\"yellow\"", "\"critical\"").replace("\"do\"", "\"do + 1\"");
        let errs = errors(&text).join("\n");
        assert!(errs.contains("test.toml:6:9: error in `value`"), "{errs}");
        assert!(errs.contains("test.toml:10:7: error in `for`: `ten minutes` is not a duration"), "{errs}");
        assert!(errs.contains("test.toml:12:12: error in `severity`: unknown severity `critical`"), "{errs}");
    }

    #[test]
    fn clear_level_on_the_wrong_side_is_an_error() {
        let errs = errors(&GOOD.replace("clear_above = 5.5", "clear_above = 4.5"));
        assert_eq!(errs, vec!["test.toml:9:15: error in `clear_above`: clear level 4.5 must not be below the trigger 5"]);
    }

    #[test]
    fn rule_without_threshold_is_an_error() {
        let errs = errors(&GOOD.replace("below = 5.0\nclear_above = 5.5\n", ""));
        assert_eq!(errs, vec!["test.toml:2:1: error in `above`: a rule needs a threshold: `above = …` or `below = …`"]);
    }

    #[test]
    fn nan_threshold_is_an_error() {
        let errs = errors(&GOOD.replace("below = 5.0", "below = nan"));
        assert!(errs[0].contains("error in `below`: must be a finite number"), "{errs:?}");
    }

    #[test]
    fn mismatched_clear_key_is_explained() {
        let errs = errors(&GOOD.replace("clear_above", "clear_below"));
        assert!(errs[0].contains("`clear_below` goes with `above`"), "{errs:?}");
    }

    #[test]
    fn duplicate_ids_across_files_name_the_first_definition() {
        let a = RuleSource { name: "a.toml".into(), text: GOOD.into() };
        let b = RuleSource { name: "b.toml".into(), text: format!("\n\n{GOOD}") };
        let errs = RuleSet::compile(&[a, b]).unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].to_string(), "b.toml:5:6: error in `id`: duplicate rule id `do-low` (first defined at a.toml:2)");
    }

    #[test]
    fn toml_syntax_error_points_at_the_problem() {
        let errs = errors("[[rule]]\nid = \"x\nvalue = 1\n");
        assert!(errs[0].starts_with("test.toml:2:"), "{errs:?}");
    }

    #[test]
    fn disabled_rules_are_skipped() {
        let set = compile(&GOOD.replace("severity = \"yellow\"", "severity = \"yellow\"\nenabled = false")).unwrap();
        assert!(set.rules.is_empty());
    }
}
