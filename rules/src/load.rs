//! Rule files (TOML) -> compiled [`RuleSet`]. Every problem in every file is reported with
//! file, line, column and key, with the nearest valid key suggested for a typo; a set with any
//! error compiles to nothing (all-or-nothing, so a bad reload keeps the old rules running).
//! The language is documented in docs/rules.md.

use crate::diagnostic::{line_column, Diagnostic, RuleErrors, SourceText};
use crate::expr::ValueExpr;
use crate::message::{Messages, Template, LANGUAGES};
use crate::rule::{Bound, Check, Count, Level, Millis, Origin, Override, Rule, Silence};
use crate::scope::{Scope, SensorKind};
use crate::severity::Severity;
use crate::signal::{BaselineSpec, Relative, Signal, Smooth, SmoothMethod, Transform, Window};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
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
        // Where each kept rule's id stands, for errors found once every rule is known.
        let mut named = Vec::new();
        for (position, source) in sources.iter().enumerate() {
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
                if rules.len() >= crate::rule::MAX_RULES {
                    diagnostics.push(text.diagnostic(id_span, Some("id"), format!("too many rules: at most {} in all files", crate::rule::MAX_RULES)));
                    continue;
                }
                seen.insert(rule.id.clone(), rule.origin.clone());
                rules.push(rule);
                named.push((position, id_span));
            }
        }
        for (rule, (position, id_span)) in rules.iter().zip(&named) {
            for doubter in rule.doubted_by.iter().filter(|doubter| !seen.contains_key(*doubter)) {
                let text = SourceText { name: &sources[*position].name, text: &sources[*position].text };
                diagnostics.push(text.diagnostic(
                    id_span.clone(),
                    Some("doubted_by"),
                    format!("`doubted_by` names `{doubter}`, which is no rule (or one disabled): a box in doubt is one with that rule open on it"),
                ));
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
    defaults: RawDefaults,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

/// `[defaults]`: what every rule of the file takes unless it says otherwise.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    /// Given to each rule with a `value` that has no `unless` of its own (`unless = ""` for
    /// none): a pack's one test for readings that are no measurement.
    unless: Option<Spanned<String>>,
}

/// The keys that define one threshold level, on a rule or in a `[[rule.level]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLevel {
    severity: Option<Spanned<String>>,
    above: Option<Spanned<f64>>,
    below: Option<Spanned<f64>>,
    at_least: Option<Spanned<f64>>,
    at_most: Option<Spanned<f64>>,
    outside: Option<Spanned<Vec<f64>>>,
    clear_below: Option<Spanned<f64>>,
    clear_above: Option<Spanned<f64>>,
    clear_inside: Option<Spanned<Vec<f64>>>,
    #[serde(rename = "for")]
    raise_hold: Option<Spanned<String>>,
    clear_for: Option<Spanned<String>>,
    count: Option<Spanned<String>>,
}

/// `[[rule.override]]`: a scope, and the threshold keys or `[[rule.override.level]]` steps that
/// replace the rule's for the sensors it picks out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    #[serde(default)]
    sensors: Vec<String>,
    #[serde(default)]
    sites: Vec<String>,
    #[serde(default)]
    buildings: Vec<String>,
    #[serde(default)]
    grids: Vec<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    severity: Option<Spanned<String>>,
    above: Option<Spanned<f64>>,
    below: Option<Spanned<f64>>,
    at_least: Option<Spanned<f64>>,
    at_most: Option<Spanned<f64>>,
    outside: Option<Spanned<Vec<f64>>>,
    clear_below: Option<Spanned<f64>>,
    clear_above: Option<Spanned<f64>>,
    clear_inside: Option<Spanned<Vec<f64>>>,
    #[serde(rename = "for")]
    raise_hold: Option<Spanned<String>>,
    clear_for: Option<Spanned<String>>,
    count: Option<Spanned<String>>,
    #[serde(default)]
    level: Vec<Spanned<RawLevel>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    title: Option<String>,
    #[serde(default)]
    message: BTreeMap<String, Spanned<String>>,
    // Scope.
    kind: Option<SensorKind>,
    #[serde(default)]
    sensors: Vec<String>,
    #[serde(default)]
    sites: Vec<String>,
    #[serde(default)]
    buildings: Vec<String>,
    #[serde(default)]
    grids: Vec<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    // Signal.
    value: Option<Spanned<String>>,
    #[serde(default)]
    unit: String,
    baseline: Option<Spanned<String>>,
    from_baseline: Option<Spanned<String>>,
    compensate: Option<Spanned<String>>,
    smooth: Option<Spanned<String>>,
    change_over: Option<Spanned<String>>,
    windows: Option<Spanned<u32>>,
    swing_within: Option<Spanned<String>>,
    lead: Option<Spanned<String>>,
    unless: Option<Spanned<String>>,
    // Check: one threshold level inline, a ladder, or a device check. The level keys repeat
    // `RawLevel`'s because serde cannot combine `flatten` with `deny_unknown_fields`, and a typo
    // must stay an error; `inline_level` moves them into a `RawLevel`.
    severity: Option<Spanned<String>>,
    above: Option<Spanned<f64>>,
    below: Option<Spanned<f64>>,
    at_least: Option<Spanned<f64>>,
    at_most: Option<Spanned<f64>>,
    outside: Option<Spanned<Vec<f64>>>,
    clear_below: Option<Spanned<f64>>,
    clear_above: Option<Spanned<f64>>,
    clear_inside: Option<Spanned<Vec<f64>>>,
    #[serde(rename = "for")]
    raise_hold: Option<Spanned<String>>,
    clear_for: Option<Spanned<String>>,
    count: Option<Spanned<String>>,
    #[serde(default)]
    level: Vec<Spanned<RawLevel>>,
    #[serde(default, rename = "override")]
    overrides: Vec<Spanned<RawOverride>>,
    no_data: Option<Spanned<String>>,
    clock_ahead: Option<Spanned<String>>,
    clock_behind: Option<Spanned<String>>,
    flat_line: Option<Spanned<FlatLineSpec>>,
    #[serde(default)]
    device: bool,
    agree: Option<Spanned<u32>>,
    alone: Option<Spanned<String>>,
    doubted_by: Option<Spanned<Vec<String>>>,
    peers: Option<Spanned<String>>,
    uncompensated: Option<Spanned<String>>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
}

/// `flat_line = 240` (identical readings in a row) or `flat_line = "2h"` (identical for that
/// long, over at least [`FLAT_LINE_MIN_READINGS`] readings).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FlatLineSpec {
    Readings(u32),
    Lasting(String),
}

/// How long a `clock_behind` check holds unless its rule says (`for`): long enough that a
/// backlog drained over minutes shows its lag shrinking.
const CLOCK_BEHIND_HOLD_MS: Millis = 30 * 60_000;

/// The least `clock_behind` allowance: a reading's way here and the engine's tick take seconds.
const CLOCK_BEHIND_LEAST_MS: Millis = 60_000;

/// The fewest identical readings a `flat_line` given as a duration needs.
const FLAT_LINE_MIN_READINGS: u32 = 3;

fn enabled_by_default() -> bool {
    true
}

/// Moves the threshold keys of a rule or override table into a [`RawLevel`] (the tables repeat
/// the keys because serde cannot `flatten` under `deny_unknown_fields`).
macro_rules! take_level {
    ($table:expr, $severity:expr) => {
        RawLevel {
            severity: $severity,
            above: $table.above.take(),
            below: $table.below.take(),
            at_least: $table.at_least.take(),
            at_most: $table.at_most.take(),
            outside: $table.outside.take(),
            clear_below: $table.clear_below.take(),
            clear_above: $table.clear_above.take(),
            clear_inside: $table.clear_inside.take(),
            raise_hold: $table.raise_hold.take(),
            clear_for: $table.clear_for.take(),
            count: $table.count.take(),
        }
    };
}

impl RawLevel {
    /// Whether a trigger key (`above`, `below`, `at_least`, `at_most`, `outside`) is given.
    fn has_trigger(&self) -> bool {
        self.above.is_some() || self.below.is_some() || self.at_least.is_some() || self.at_most.is_some() || self.outside.is_some()
    }
}

impl RawRule {
    /// Moves the rule-level threshold keys into a level; `None` when none is given.
    fn inline_level(&mut self) -> Option<RawLevel> {
        let level = take_level!(self, None);
        let any = level.has_trigger();
        let stray = level.clear_below.is_some()
            || level.clear_above.is_some()
            || level.clear_inside.is_some()
            || level.raise_hold.is_some()
            || level.clear_for.is_some()
            || level.count.is_some();
        (any || stray).then_some(level)
    }
}

/// Collects diagnostics for one file.
struct Checker<'a, 'b> {
    text: &'b SourceText<'a>,
    diagnostics: &'b mut Vec<Diagnostic>,
}

impl Checker<'_, '_> {
    fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.diagnostics.push(self.text.diagnostic(span, Some(key), message));
    }
}

/// Compiles one file's enabled rules. Returns each rule with the span of its id.
fn compile_file(text: &SourceText<'_>, diagnostics: &mut Vec<Diagnostic>) -> Vec<(Rule, Range<usize>)> {
    // Every misspelt key of the file in one run, not one per run (an outside tester's operator
    // fixed `belwo`, ran again and met `colour`): each unknown key's line is blanked (its bytes
    // kept, so later spans still point at the file) and the file read again.
    let mut blanked: Option<String> = None;
    let mut unknown_keys = 0;
    let file: RawRuleFile = loop {
        let err = match toml::from_str(blanked.as_deref().unwrap_or(text.text)) {
            Ok(file) => break file,
            Err(err) => err,
        };
        let span = err.span().unwrap_or(0..0);
        diagnostics.push(text.diagnostic(span.clone(), None, with_suggestion(err.message().trim_end())));
        let current = blanked.get_or_insert_with(|| text.text.to_string());
        if !err.message().starts_with("unknown field") || unknown_keys >= MAX_UNKNOWN_KEYS || !blank_key_line(current, span.start) {
            return Vec::new();
        }
        unknown_keys += 1;
    };
    if blanked.is_some() {
        return Vec::new();
    }
    let mut rules = Vec::new();
    let mut check = Checker { text, diagnostics };
    // Parsed once and shared: the engine judges one reading's `unless` once for all its rules.
    let default_unless = file.defaults.unless.as_ref().and_then(|text| unless_of(&mut check, text)).flatten();
    for raw in file.rule {
        let rule_span = raw.span();
        let raw = raw.into_inner();
        if !raw.enabled {
            continue;
        }
        let before = check.diagnostics.len();
        let rule = compile_rule(&mut check, rule_span.start, raw, default_unless.as_ref());
        if check.diagnostics.len() == before {
            rules.extend(rule);
        }
    }
    rules
}

fn compile_rule(check: &mut Checker<'_, '_>, rule_start: usize, mut raw: RawRule, default_unless: Option<&Arc<ValueExpr>>) -> Option<(Rule, Range<usize>)> {
    let id_span = raw.id.span();
    let id = raw.id.get_ref().clone();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        check.error(id_span.clone(), "id", format!("`{id}` is not a rule id: use letters, digits, `-`, `_` and `.`"));
    }
    let here = rule_start..rule_start;

    // A `clock_behind` rule's `for` is its own hold, not a threshold's.
    let behind_hold = if raw.clock_behind.is_some() { raw.raise_hold.take() } else { None };
    let inline = raw.inline_level();
    let clock = raw.clock_ahead.is_some() || raw.clock_behind.is_some();
    let forms =
        [inline.is_some(), !raw.level.is_empty(), raw.no_data.is_some(), raw.flat_line.is_some(), raw.clock_ahead.is_some(), raw.clock_behind.is_some()];
    if forms.iter().filter(|&&f| f).count() != 1 {
        check.error(
            here.clone(),
            "above",
            "a rule needs exactly one check: a threshold (`above`, `below` or `outside`), `[[rule.level]]` steps, `no_data`, `flat_line`, `clock_ahead` or `clock_behind`",
        );
        return None;
    }

    // Problems are collected, not returned at once, so one run reports them all.
    let signal: Option<Option<Signal>> = match (&raw.value, raw.no_data.is_some() || clock) {
        (Some(value), true) => {
            check.error(value.span(), "value", "a `no_data`, `clock_ahead` or `clock_behind` rule watches the readings' arrival or time and takes no `value`");
            None
        }
        (None, true) => match &raw.unless {
            Some(unless) => {
                check.error(unless.span(), "unless", "`unless` skips readings a `value` would judge; this rule has no `value`");
                None
            }
            None => Some(None),
        },
        (None, false) => {
            check.error(here.clone(), "value", "missing `value`: the field or expression the rule compares");
            None
        }
        (Some(_), false) => compile_signal(check, &raw, default_unless).map(Some),
    };

    let rule_severity = raw.severity.as_ref().and_then(|s| severity(check, s));
    let (checked, device) = if let Some(inline) = inline {
        if raw.severity.is_none() {
            check.error(here.clone(), "severity", "missing `severity`: notice, warning, alarm or danger");
        }
        // Without a valid severity an error is already recorded and the rule is discarded; the
        // placeholder only lets the level's own keys be checked in the same run.
        let level = compile_level(check, &inline, Some(rule_severity.unwrap_or(Severity::Notice)), &here);
        (Check::Ladder(vec![level?]), raw.device)
    } else if !raw.level.is_empty() {
        if let Some(s) = &raw.severity {
            check.error(s.span(), "severity", "with `[[rule.level]]` each level has its own `severity`");
        }
        let mut levels = Vec::new();
        for level in &raw.level {
            levels.push(compile_level(check, level.get_ref(), None, &level.span())?);
        }
        check_ladder(check, &raw.level, &levels)?;
        (Check::Ladder(levels), raw.device)
    } else if let Some(allowed) = &raw.clock_ahead {
        let allowed_ms = duration(check, allowed, "clock_ahead")?;
        (Check::Clock { allowed_ms, severity: rule_severity.unwrap_or(Severity::Warning) }, true)
    } else if let Some(allowed) = &raw.clock_behind {
        let allowed_ms = duration(check, allowed, "clock_behind");
        if allowed_ms.is_some_and(|ms| ms < CLOCK_BEHIND_LEAST_MS) {
            check.error(allowed.span(), "clock_behind", format!("`{}`: a reading takes seconds to arrive; allow at least 1m", allowed.get_ref()));
            return None;
        }
        let hold_ms = match &behind_hold {
            Some(hold) => duration(check, hold, "for"),
            None => Some(CLOCK_BEHIND_HOLD_MS),
        };
        (Check::ClockBehind { allowed_ms: allowed_ms?, hold_ms: hold_ms?, severity: rule_severity.unwrap_or(Severity::Warning) }, true)
    } else if let Some(no_data) = &raw.no_data {
        let after = silence(check, no_data)?;
        (Check::NoData { after, severity: rule_severity.unwrap_or(Severity::Warning) }, true)
    } else {
        let spec = raw.flat_line.as_ref()?;
        let (samples, lasting_ms) = match spec.get_ref() {
            FlatLineSpec::Readings(samples) if *samples < 2 => {
                check.error(spec.span(), "flat_line", "needs at least 2 identical samples");
                return None;
            }
            FlatLineSpec::Readings(samples) => (*samples, 0),
            FlatLineSpec::Lasting(text) => (FLAT_LINE_MIN_READINGS, window_length(check, &Spanned::new(spec.span(), text.clone()), "flat_line")?),
        };
        (Check::FlatLine { samples, lasting_ms, severity: rule_severity.unwrap_or(Severity::Warning) }, true)
    };

    if let (Some(n), Check::Ladder(levels)) = (&raw.windows, &checked) {
        if *n.get_ref() > 1 && levels.iter().any(|level| !matches!(level.bound.one_sided(), Some((_, true)))) {
            check.error(n.span(), "windows", "consecutive windows take the smallest window change: use them with `above` or `at_least`");
        }
    }
    let agree = match &raw.agree {
        None => None,
        Some(k) if !matches!(checked, Check::Ladder(_)) => {
            check.error(k.span(), "agree", "only threshold rules can ask sensors to agree");
            None
        }
        Some(k) if !(1..=MAX_AGREE).contains(k.get_ref()) => {
            check.error(k.span(), "agree", format!("must be 1 to {MAX_AGREE} sensors"));
            None
        }
        Some(k) => u8::try_from(*k.get_ref()).ok(),
    };
    let alone = match (&raw.alone, &raw.agree) {
        (None, _) => None,
        (Some(text), None) => {
            check.error(text.span(), "alone", "`alone` is what one box may raise while the others do not agree: it needs `agree`");
            None
        }
        (Some(text), Some(_)) => severity(check, text),
    };
    let doubted_by = match (&raw.doubted_by, &alone) {
        (None, _) => Vec::new(),
        (Some(names), None) => {
            check.error(names.span(), "doubted_by", "a box in doubt counts as one alone: `doubted_by` needs `agree` and `alone`");
            Vec::new()
        }
        (Some(names), Some(_)) => names.get_ref().clone(),
    };
    let peers = match &raw.peers {
        None => false,
        Some(text) if text.get_ref() != "building" => {
            check.error(text.span(), "peers", format!("`{}`: the only peers are the other boxes of the building (`peers = \"building\"`)", text.get_ref()));
            false
        }
        Some(text) if !matches!(checked, Check::Ladder(_)) => {
            check.error(text.span(), "peers", "only threshold rules can compare a box with its building's other boxes");
            false
        }
        Some(text) if matches!(&checked, Check::Ladder(levels) if levels.iter().any(|level| !matches!(level.bound.one_sided(), Some((_, true))))) => {
            check.error(text.span(), "peers", "a box is judged by how far it moved that the others did not: use `above` or `at_least`");
            false
        }
        Some(text) if raw.agree.is_some() => {
            check.error(text.span(), "peers", "a rule judges either the building (`agree`) or each box against the others (`peers`), not both");
            false
        }
        Some(_) => true,
    };
    let uncompensated = match &raw.uncompensated {
        None => None,
        Some(text) if raw.compensate.is_none() => {
            check.error(text.span(), "uncompensated", "`uncompensated` is what a box without temperature compensation may raise: it needs `compensate`");
            None
        }
        Some(text) if !matches!(checked, Check::Ladder(_)) => {
            check.error(text.span(), "uncompensated", "only threshold rules have levels to leave silent");
            None
        }
        Some(text) => severity(check, text),
    };

    let mut messages = Messages::new();
    for (language, text) in &raw.message {
        if !LANGUAGES.contains(&language.as_str()) {
            check.error(text.span(), "message", format!("unknown language `{language}`: use {}", LANGUAGES.join(" or ")));
            continue;
        }
        match Template::parse(text.get_ref()) {
            Ok(template) => {
                messages.insert(language.clone(), template);
            }
            Err(error) => check.error(text.span(), "message", error.to_string()),
        }
    }
    let overrides = compile_overrides(check, std::mem::take(&mut raw.overrides), &checked, &rule_severity);
    let signal = signal?;
    let (line, _) = line_column(check.text.text, rule_start);
    let rule = Rule {
        title: raw.title.unwrap_or_else(|| id.clone()),
        messages,
        id,
        scope: Scope {
            kinds: raw.kind.into_iter().collect(),
            sensors: raw.sensors,
            sites: raw.sites,
            buildings: raw.buildings,
            grids: raw.grids,
            tags: raw.tags,
        },
        signal,
        unit: raw.unit,
        check: checked,
        overrides,
        device,
        agree,
        alone,
        doubted_by,
        peers,
        uncompensated,
        origin: Origin { file: check.text.name.to_string(), line },
    };
    Some((rule, id_span))
}

/// An `unless` text: `Some(None)` for `""` (none), `None` after an error.
fn unless_of(check: &mut Checker<'_, '_>, text: &Spanned<String>) -> Option<Option<Arc<ValueExpr>>> {
    if text.get_ref().trim().is_empty() {
        return Some(None);
    }
    ValueExpr::parse(text.get_ref()).map(|expr| Some(Arc::new(expr))).map_err(|e| check.error(text.span(), "unless", e.to_string())).ok()
}

fn compile_signal(check: &mut Checker<'_, '_>, raw: &RawRule, default_unless: Option<&Arc<ValueExpr>>) -> Option<Signal> {
    let value = raw.value.as_ref()?;
    let unless = match &raw.unless {
        None => Some(default_unless.cloned()),
        Some(text) => unless_of(check, text),
    };
    let expr = ValueExpr::parse(value.get_ref()).map_err(|e| check.error(value.span(), "value", e.to_string())).ok();
    let baseline = match &raw.baseline {
        None => Some(None),
        Some(text) => baseline(check, text).map(Some),
    };
    let smooth = match &raw.smooth {
        None => Some(None),
        Some(text) => smoothing(check, text).map(Some),
    };
    let relative = match (&raw.from_baseline, &raw.baseline) {
        (None, _) => Some(Relative::Difference),
        (Some(mode), None) => {
            check.error(mode.span(), "from_baseline", "`from_baseline` needs a `baseline` to be relative to");
            None
        }
        (Some(mode), Some(_)) => match mode.get_ref().trim() {
            "difference" => Some(Relative::Difference),
            "ratio" => Some(Relative::Ratio),
            other => {
                check.error(mode.span(), "from_baseline", format!("`{other}`: expected \"difference\" (value - baseline) or \"ratio\" (value / baseline)"));
                None
            }
        },
    };
    let compensate = match (&raw.compensate, baseline.flatten(), relative) {
        (None, _, _) => Some(None),
        (Some(field), Some(BaselineSpec::Learn { .. } | BaselineSpec::Calibrated), Some(Relative::Difference)) => {
            let name = field.get_ref().trim();
            let is_field_name = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_');
            let judged = expr.as_ref().is_some_and(|expr| expr.fields().iter().any(|f| crate::expr::same_name(f, name)));
            if !is_field_name {
                check.error(field.span(), "compensate", format!("`{name}`: expected the name of the field that reports the temperature, e.g. \"temp\""));
                None
            } else if expr.as_ref().is_some_and(|expr| expr.fields().len() > crate::thermal::MAX_FIELDS) {
                check.error(field.span(), "compensate", format!("compensation corrects at most {} fields; `value` reads more", crate::thermal::MAX_FIELDS));
                None
            } else if judged {
                check.error(field.span(), "compensate", format!("`{name}` is a field of `value`; compensate with the temperature field, not a judged one"));
                None
            } else {
                Some(Some(std::sync::Arc::from(name)))
            }
        }
        (Some(field), _, _) => {
            check.error(field.span(), "compensate", "temperature compensation corrects the change from an installation baseline: it needs `baseline = \"learn …\"` or `\"calibrated\"` and `from_baseline = \"difference\"`");
            None
        }
    };
    let windows = match (&raw.windows, &raw.change_over) {
        (None, _) => Some(1),
        (Some(n), None) => {
            check.error(n.span(), "windows", "`windows` counts consecutive `change_over` windows; add `change_over`");
            None
        }
        (Some(n), Some(_)) if !(1..=MAX_CONSECUTIVE_WINDOWS).contains(n.get_ref()) => {
            check.error(n.span(), "windows", format!("must be 1 to {MAX_CONSECUTIVE_WINDOWS}"));
            None
        }
        (Some(n), Some(_)) => Some(*n.get_ref()),
    };
    let transform = match (&raw.change_over, &raw.swing_within, &raw.lead) {
        (Some(_), Some(swing), _) => {
            check.error(swing.span(), "swing_within", "use either `change_over` or `swing_within`, not both");
            None
        }
        (Some(_), None, Some(lead)) | (None, Some(_), Some(lead)) => {
            check.error(lead.span(), "lead", "`lead` carries a level ahead: not with `change_over` or `swing_within`");
            None
        }
        (Some(window), None, None) => {
            window_length(check, window, "change_over").and_then(|window| Some(Some(Transform::ChangeOver { window, windows: windows? })))
        }
        (None, Some(window), None) => window_length(check, window, "swing_within").map(|ms| Some(Transform::SwingWithin(ms))),
        (None, None, Some(lead)) => window_length(check, lead, "lead").map(|ms| Some(Transform::Lead(ms))),
        (None, None, None) => Some(None),
    };
    // A baseline, `steady` or `apart` hands the expression values relative to something, not readings.
    let steps_between_readings = matches!(smooth, Some(Some(Smooth { method: SmoothMethod::Steady | SmoothMethod::Apart, .. })));
    if expr.as_ref().is_some_and(ValueExpr::judges_reported_values) && (raw.baseline.is_some() || steps_between_readings) {
        check.error(value.span(), "value", "`out_of_range` counts readings as reported: not with a `baseline`, `steady` or `apart` smoothing");
        return None;
    }
    Some(Signal { expr: expr?, unless: unless?, baseline: baseline?, relative: relative?, compensate: compensate?, smooth: smooth?, transform: transform? })
}

/// The most consecutive `change_over` windows a rule may ask for.
const MAX_CONSECUTIVE_WINDOWS: u32 = 12;
/// The most readings a `steady` smoothing may ask for.
const MAX_STEADY_READINGS: usize = 8;
/// The most sensors of one building an `agree` rule may ask for.
const MAX_AGREE: u32 = 16;

fn severity(check: &mut Checker<'_, '_>, text: &Spanned<String>) -> Option<Severity> {
    text.get_ref().parse::<Severity>().map_err(|e| check.error(text.span(), "severity", e.to_string())).ok()
}

fn duration(check: &mut Checker<'_, '_>, text: &Spanned<String>, key: &str) -> Option<Millis> {
    match humantime::parse_duration(text.get_ref()) {
        Ok(d) => Millis::try_from(d.as_millis()).map_err(|_| check.error(text.span(), key, "duration is too long")).ok(),
        Err(e) => {
            check.error(text.span(), key, format!("`{}` is not a duration ({e}); write e.g. \"90s\", \"10m\", \"2h\"", text.get_ref()));
            None
        }
    }
}

/// A window over readings: windows keep whole seconds, so at least one second.
fn window_length(check: &mut Checker<'_, '_>, text: &Spanned<String>, key: &str) -> Option<Millis> {
    let ms = duration(check, text, key)?;
    if ms < 1000 {
        check.error(text.span(), key, format!("`{}`: a window must be at least 1s (windows keep whole seconds)", text.get_ref()));
        return None;
    }
    Some(ms)
}

fn baseline(check: &mut Checker<'_, '_>, text: &Spanned<String>) -> Option<BaselineSpec> {
    let value = text.get_ref().trim();
    if value == "calibrated" {
        return Some(BaselineSpec::Calibrated);
    }
    if let Some(window) = value.strip_prefix("learn ") {
        let window = Spanned::new(text.span(), window.trim().to_string());
        return duration(check, &window, "baseline").map(|window_ms| BaselineSpec::Learn { window_ms });
    }
    if let Some(window) = value.strip_prefix("recent ") {
        let window = Spanned::new(text.span(), window.trim().to_string());
        return window_length(check, &window, "baseline").map(|window_ms| BaselineSpec::Recent { window_ms });
    }
    check.error(
        text.span(),
        "baseline",
        format!("`{value}`: expected \"calibrated\", \"learn <duration>\" (e.g. \"learn 24h\") or \"recent <duration>\" (e.g. \"recent 1h\")"),
    );
    None
}

fn smoothing(check: &mut Checker<'_, '_>, text: &Spanned<String>) -> Option<Smooth> {
    let value = text.get_ref().trim();
    if value == "apart" {
        // No window: the reading and the one before it.
        return Some(Smooth { method: SmoothMethod::Apart, window: Window::Samples(2), within: None });
    }
    // `steady n within d`: how far apart readings that agree may lie.
    let (value, within) = match value.split_once(" within ") {
        Some((value, within)) => match within.trim().parse::<f64>() {
            Ok(d) if d.is_finite() && d > 0.0 && value.trim_start().starts_with("steady") => (value.trim(), Some(d)),
            _ => {
                check.error(
                    text.span(),
                    "smooth",
                    format!("`{value}`: \"within\" takes a positive number after \"steady <readings>\", e.g. \"steady 2 within 0.03\""),
                );
                return None;
            }
        },
        None => (value, None),
    };
    let (method, window) = value.split_once(' ').unwrap_or((value, ""));
    let method = match method {
        "median" => SmoothMethod::Median,
        "mean" => SmoothMethod::Mean,
        "steady" => SmoothMethod::Steady,
        _ => {
            check.error(
                text.span(),
                "smooth",
                format!(
                    "`{value}`: expected \"median <window>\", \"mean <window>\", \"steady <readings>\" or \"apart\", e.g. \"median 1h\", \"median 5\" or \"steady 2\""
                ),
            );
            return None;
        }
    };
    let window = window.trim();
    let window = match window.parse::<usize>() {
        Ok(0 | 1) => {
            check.error(text.span(), "smooth", "a window of samples needs at least 2");
            return None;
        }
        Ok(n) if n > crate::signal::MAX_WINDOW_SAMPLES => {
            check.error(text.span(), "smooth", format!("at most {} samples", crate::signal::MAX_WINDOW_SAMPLES));
            return None;
        }
        Ok(n) => Window::Samples(n),
        Err(_) => Window::Time(window_length(check, &Spanned::new(text.span(), window.to_string()), "smooth")?),
    };
    if method == SmoothMethod::Steady && !matches!(window, Window::Samples(2..=MAX_STEADY_READINGS)) {
        check.error(text.span(), "smooth", format!("`{value}`: \"steady\" counts readings, 2 to {MAX_STEADY_READINGS}, e.g. \"steady 2\""));
        return None;
    }
    Some(Smooth { method, window, within })
}

fn silence(check: &mut Checker<'_, '_>, text: &Spanned<String>) -> Option<Silence> {
    let value = text.get_ref().trim();
    if let Some(inner) = value.strip_prefix("max(").and_then(|rest| rest.strip_suffix(')')) {
        let floor_error = |check: &mut Checker<'_, '_>| {
            check.error(text.span(), "no_data", format!("`{value}`: write a multiple of the report interval and the shortest silence, e.g. \"max(2x, 10m)\""));
        };
        let Some((factor, floor)) = inner.split_once(',') else {
            floor_error(check);
            return None;
        };
        let factor = interval_factor(check, text, factor.trim())?;
        return match humantime::parse_duration(floor.trim()).ok().and_then(|d| Millis::try_from(d.as_millis()).ok()) {
            Some(floor) => Some(Silence::IntervalsAtLeast(factor, floor)),
            None => {
                floor_error(check);
                None
            }
        };
    }
    if value.ends_with('x') {
        return interval_factor(check, text, value).map(Silence::Intervals);
    }
    duration(check, text, "no_data").map(Silence::Fixed)
}

/// `"2x"`: a multiple of the report interval, at least 1.
fn interval_factor(check: &mut Checker<'_, '_>, text: &Spanned<String>, factor: &str) -> Option<f64> {
    match factor.strip_suffix('x').map(|f| f.trim().parse::<f64>()) {
        Some(Ok(f)) if f.is_finite() && f >= 1.0 => Some(f),
        _ => {
            check.error(text.span(), "no_data", format!("`{factor}`: a multiple of the report interval must be at least 1, e.g. \"2x\""));
            None
        }
    }
}

fn finite(check: &mut Checker<'_, '_>, value: &Spanned<f64>, key: &str) -> Option<f64> {
    let v = *value.get_ref();
    if v.is_finite() {
        Some(v)
    } else {
        check.error(value.span(), key, "must be a finite number");
        None
    }
}

fn band(check: &mut Checker<'_, '_>, value: &Spanned<Vec<f64>>, key: &str) -> Option<(f64, f64)> {
    match value.get_ref().as_slice() {
        &[low, high] if low.is_finite() && high.is_finite() && low < high => Some((low, high)),
        _ => {
            check.error(value.span(), key, "must be [low, high] with finite low < high");
            None
        }
    }
}

fn compile_level(check: &mut Checker<'_, '_>, raw: &RawLevel, inherited: Option<Severity>, span: &Range<usize>) -> Option<Level> {
    let severity = match (&raw.severity, inherited) {
        (Some(text), _) => severity(check, text),
        (None, Some(severity)) => Some(severity),
        (None, None) => {
            check.error(span.clone(), "severity", "each `[[rule.level]]` needs a `severity`");
            None
        }
    };
    let raise_hold_ms = raw.raise_hold.as_ref().map_or(Some(0), |t| duration(check, t, "for"));
    let clear_hold_ms = raw.clear_for.as_ref().map_or(Some(0), |t| duration(check, t, "clear_for"));
    let count = raw.count.as_ref().map_or(Some(None), |t| count(check, t).map(Some));
    let bound = match (&raw.above, &raw.at_least, &raw.below, &raw.at_most, &raw.outside) {
        (Some(trigger), None, None, None, None) => upward(check, raw, trigger, "above", |trigger, clear| Bound::Above { trigger, clear }),
        (None, Some(trigger), None, None, None) => upward(check, raw, trigger, "at_least", |trigger, clear| Bound::AtLeast { trigger, clear }),
        (None, None, Some(trigger), None, None) => downward(check, raw, trigger, "below", |trigger, clear| Bound::Below { trigger, clear }),
        (None, None, None, Some(trigger), None) => downward(check, raw, trigger, "at_most", |trigger, clear| Bound::AtMost { trigger, clear }),
        (None, None, None, None, Some(outside)) => {
            misplaced(check, &raw.clear_below, "clear_below", "with `outside` use `clear_inside = [low, high]`");
            misplaced(check, &raw.clear_above, "clear_above", "with `outside` use `clear_inside = [low, high]`");
            let (low, high) = band(check, outside, "outside")?;
            let (clear_low, clear_high) = match &raw.clear_inside {
                Some(inside) => band(check, inside, "clear_inside")?,
                None => (low, high),
            };
            if clear_low < low || clear_high > high {
                let at = raw.clear_inside.as_ref().map_or(outside.span(), Spanned::span);
                check.error(at, "clear_inside", format!("the clear band {clear_low}..{clear_high} must lie within {low}..{high}"));
                None
            } else {
                Some(Bound::Outside { low, high, clear_low, clear_high })
            }
        }
        (None, None, None, None, None) => {
            check.error(span.clone(), "above", "a threshold needs `above`, `at_least`, `below`, `at_most` or `outside`");
            None
        }
        _ => {
            check.error(span.clone(), "above", "a threshold takes one of `above`, `at_least`, `below`, `at_most` or `outside`");
            None
        }
    };
    Some(Level { severity: severity?, bound: bound?, raise_hold_ms: raise_hold_ms?, clear_hold_ms: clear_hold_ms?, count: count? })
}

/// A bound that is bad upwards (`above`, `at_least`), cleared with `clear_below`.
fn upward(check: &mut Checker<'_, '_>, raw: &RawLevel, trigger: &Spanned<f64>, key: &str, make: fn(f64, f64) -> Bound) -> Option<Bound> {
    misplaced(check, &raw.clear_above, "clear_above", &format!("`clear_above` goes with `below`; with `{key}` use `clear_below`"));
    misplaced(check, &raw.clear_inside, "clear_inside", "`clear_inside` goes with `outside`");
    let value = finite(check, trigger, key);
    let clear = raw.clear_below.as_ref().map_or(value, |c| finite(check, c, "clear_below"));
    match (value, clear) {
        (Some(value), Some(clear)) if clear > value => {
            let at = raw.clear_below.as_ref().map_or(trigger.span(), Spanned::span);
            check.error(at, "clear_below", format!("clear level {clear} must not be above the trigger {value}"));
            None
        }
        (Some(value), Some(clear)) => Some(make(value, clear)),
        _ => None,
    }
}

/// A bound that is bad downwards (`below`, `at_most`), cleared with `clear_above`.
fn downward(check: &mut Checker<'_, '_>, raw: &RawLevel, trigger: &Spanned<f64>, key: &str, make: fn(f64, f64) -> Bound) -> Option<Bound> {
    misplaced(check, &raw.clear_below, "clear_below", &format!("`clear_below` goes with `above`; with `{key}` use `clear_above`"));
    misplaced(check, &raw.clear_inside, "clear_inside", "`clear_inside` goes with `outside`");
    let value = finite(check, trigger, key);
    let clear = raw.clear_above.as_ref().map_or(value, |c| finite(check, c, "clear_above"));
    match (value, clear) {
        (Some(value), Some(clear)) if clear < value => {
            let at = raw.clear_above.as_ref().map_or(trigger.span(), Spanned::span);
            check.error(at, "clear_above", format!("clear level {clear} must not be below the trigger {value}"));
            None
        }
        (Some(value), Some(clear)) => Some(make(value, clear)),
        _ => None,
    }
}

fn misplaced<T>(check: &mut Checker<'_, '_>, value: &Option<Spanned<T>>, key: &str, message: &str) {
    if let Some(value) = value {
        check.error(value.span(), key, message);
    }
}

fn count(check: &mut Checker<'_, '_>, text: &Spanned<String>) -> Option<Count> {
    let parsed = text.get_ref().split_once(" of ").and_then(|(k, n)| Some((k.trim().parse::<u8>().ok()?, n.trim().parse::<u8>().ok()?)));
    match parsed {
        Some((k, n)) if k >= 1 && k <= n && n <= 64 => Some(Count { k, n }),
        _ => {
            check.error(text.span(), "count", format!("`{}`: expected \"k of n\" with 1 <= k <= n <= 64, e.g. \"3 of 5\"", text.get_ref()));
            None
        }
    }
}

/// Compiles `[[rule.override]]` tables; only threshold rules can be overridden.
fn compile_overrides(check: &mut Checker<'_, '_>, raw: Vec<Spanned<RawOverride>>, base: &Check, base_severity: &Option<Severity>) -> Vec<Override> {
    let mut overrides = Vec::new();
    for item in raw {
        let span = item.span();
        let mut o = item.into_inner();
        if !matches!(base, Check::Ladder(_)) {
            check.error(span.clone(), "override", "only threshold rules can be overridden");
            continue;
        }
        let scope = Scope {
            kinds: Vec::new(),
            sensors: std::mem::take(&mut o.sensors),
            sites: std::mem::take(&mut o.sites),
            buildings: std::mem::take(&mut o.buildings),
            grids: std::mem::take(&mut o.grids),
            tags: std::mem::take(&mut o.tags),
        };
        if scope == Scope::default() {
            check.error(span.clone(), "override", "an override needs a scope: sensors, sites, buildings, grids or tags");
            continue;
        }
        let inline = take_level!(o, o.severity.take());
        let has_inline = inline.has_trigger();
        let levels = match (has_inline, o.level.is_empty()) {
            (true, true) => compile_level(check, &inline, *base_severity, &span).map(|level| vec![level]),
            (false, false) => {
                let levels: Option<Vec<Level>> = o.level.iter().map(|l| compile_level(check, l.get_ref(), None, &l.span())).collect();
                levels.filter(|levels| check_ladder(check, &o.level, levels).is_some())
            }
            _ => {
                check.error(
                    span.clone(),
                    "override",
                    "an override gives either threshold keys (`above`, `below`, `outside`) or `[[rule.override.level]]` steps",
                );
                None
            }
        };
        if overrides.len() >= crate::rule::MAX_RULES {
            check.error(span.clone(), "override", format!("a rule has at most {} overrides", crate::rule::MAX_RULES));
            continue;
        }
        if let Some(levels) = levels {
            overrides.push(Override { scope, check: Check::Ladder(levels) });
        }
    }
    overrides
}

/// Ladder levels must climb: severities strictly increasing, one kind of bound, triggers on the
/// bad side of (or equal to) the level before — an equal trigger with a longer hold means
/// "and it has lasted".
fn check_ladder(check: &mut Checker<'_, '_>, raw: &[Spanned<RawLevel>], levels: &[Level]) -> Option<()> {
    let before = check.diagnostics.len();
    for (pair, spans) in levels.windows(2).zip(raw.windows(2)) {
        let (lower, upper) = (&pair[0], &pair[1]);
        let span = spans[1].span();
        if upper.severity <= lower.severity {
            check.error(span.clone(), "severity", format!("levels must be listed from least to most severe: `{}` after `{}`", upper.severity, lower.severity));
        }
        let climbs = match (lower.bound, upper.bound) {
            (Bound::Outside { low: la, high: ha, .. }, Bound::Outside { low: lb, high: hb, .. }) => lb <= la && hb >= ha,
            _ => match (lower.bound.one_sided(), upper.bound.one_sided()) {
                (Some((a, true)), Some((b, true))) => b >= a,
                (Some((a, false)), Some((b, false))) => b <= a,
                _ => {
                    check.error(span.clone(), "above", "all levels of a ladder are bad on the same side");
                    continue;
                }
            },
        };
        if !climbs {
            check.error(span, "above", "each level's threshold must be on the bad side of the one before (or equal)");
        }
    }
    (check.diagnostics.len() == before).then_some(())
}

/// The most unknown keys one file is read again for.
const MAX_UNKNOWN_KEYS: usize = 50;

/// Blanks the `key = value` line that begins at byte `start` of `text` with spaces, when the
/// value ends on that line (a value over several lines is left: the caller stops there).
fn blank_key_line(text: &mut String, start: usize) -> bool {
    let Some(rest) = text.get(start..) else { return false };
    let end = start + rest.find('\n').unwrap_or(rest.len());
    let line = &text[start..end];
    if !line.contains('=') || line.parse::<toml::Table>().is_err() {
        return false;
    }
    let spaces = " ".repeat(end - start);
    text.replace_range(start..end, &spaces);
    true
}

/// Adds "did you mean …?" to serde's unknown-field messages.
fn with_suggestion(message: &str) -> String {
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let Some((unknown, candidates)) = quoted.split_first() else { return message.to_string() };
    if !message.starts_with("unknown field") && !message.starts_with("unknown variant") {
        return message.to_string();
    }
    match closest(unknown, candidates) {
        Some(candidate) => format!("{message}; did you mean `{candidate}`?"),
        None => message.to_string(),
    }
}

/// The candidate a misspelt `unknown` most likely meant: at most two edits away, or one that
/// starts with it (`drink` → `drinking`). For "did you mean …?" hints.
pub fn closest<'a>(unknown: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let (distance, candidate) = candidates.iter().map(|c| (edit_distance(unknown, c), *c)).min()?;
    (distance <= 2 || candidate.starts_with(unknown)).then_some(candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (row[j + 1] + 1).min(row[j] + 1).min(previous + usize::from(ca != cb));
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
