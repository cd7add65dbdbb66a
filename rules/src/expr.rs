//! The value a rule looks at, computed from one sample's fields:
//!
//! - `name` — a field as reported;
//! - `name?` — a field if the sample has it, else 0: for a device check that should take in a
//!   field where a box reports one (a stuck box freezes its temperature too);
//! - `abs(e)` — magnitude, for signed quantities such as one tilt axis;
//! - `hypot(a, b)` — sqrt(a² + b²), the vector change of a two-axis tilt box;
//! - `permille(e)` — an angle in degrees as a tilt ratio in ‰ (tan(angle) × 1000), the unit the
//!   standards use;
//! - `lacks(a, b, …)` — how many of the named fields the sample does not carry (a box that lost
//!   an axis, or renamed its fields, is otherwise skipped by every rule without a word);
//! - `first_of(a, b, …)` — the first of the named fields the sample carries: for a device check
//!   on whichever field a probe reports (a stuck water probe), at one lookup on an ordinary
//!   reading;
//! - `none_of(a, b, …)` — 1 when the sample carries none of the named fields, else 0 (a probe
//!   whose fields are all named otherwise); it stops at the first field the sample carries, so a
//!   long list costs one lookup on an ordinary reading, where `lacks` looks every name up;
//! - `same(a, b, …)` — 1 when the sample carries three or more of the named fields and every one
//!   of them reads exactly the same value, else 0: a probe whose sensor head is off or whose
//!   registers do not answer sends 0 (or an error code) in every field, and three measurements of
//!   water never agree to the last digit (two may: a tap with no chlorine reads turbidity 0.00
//!   and chlorine 0.00, a danger); a rule's `unless` skips such a reading;
//! - `mostly_same(a, b, …)` — 1 when three or more of the named fields the sample carries read
//!   exactly one value and they are more than half of the named fields it carries: a sonde whose
//!   head is off while other instruments of the same logger read on (DO, pH, ORP, turbidity and
//!   conductivity 0 beside a real ammonia), or a converter that sends 0 everywhere but the pH
//!   electrode's neutral 7.00. Named over fields that water does not read as one value at once
//!   (a sonde's own): clean water reads ammonia, phosphorus and turbidity 0.00 together;
//! - `any(e, f, …)` — 1 when any of the expressions is 1 or more, else 0: a rule's `unless` for
//!   readings that are either of two kinds of fault, and the device rule that tells them;
//! - `within(name, lo, hi)` — a field whose reported value lies in lo..=hi, else no value: a
//!   reading no river or tap can give (DO −0.5, an error sentinel 9999, µg/L sent as mg/L) is
//!   skipped by the rule as a reading without the field is, instead of raising a grid alarm;
//! - `out_of_range(within(a, lo, hi), …)` — how many of those fields the sample carries with a
//!   value outside its range: the installers' side of `within`, which grid rules skip silently.
//!
//! Parsed once at load time; evaluating cannot fail, it only says "this sample does not carry
//! the fields I need" by returning `None`.
//!
//! A `within` range judges the value as the sample reports it, before any baseline is taken
//! off: that is where a reading is physically possible or not. So the range is applied where
//! fields are read from the sample ([`ValueExpr::reported`]), and the expression is evaluated
//! over what passed it; `out_of_range` counts what did not, so its ranges filter nothing.

use std::fmt;
use std::hash::{Hash, Hasher};

/// A compiled value expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ValueExpr {
    Field(String),
    /// `name?`: the field, or 0 when the sample does not have it.
    Optional(String),
    Abs(Box<ValueExpr>),
    Hypot(Box<ValueExpr>, Box<ValueExpr>),
    Permille(Box<ValueExpr>),
    /// `lacks(a, b, …)`: how many of these fields the sample does not carry.
    Lacks(Vec<String>),
    /// `none_of(a, b, …)`: 1 when the sample carries none of these fields, else 0.
    NoneOf(Vec<String>),
    /// `first_of(a, b, …)`: the first of these fields the sample carries.
    FirstOf(Vec<String>),
    /// `same(a, b, …)` / `mostly_same(a, b, …)`: 1 when three or more of these fields the sample
    /// carries read one value, and they are every one (or more than half) of those it carries.
    Same(Vec<String>, Share),
    /// `within(name, lo, hi)`: the field, when its reported value lies in the range.
    Within(String, Range),
    /// `out_of_range(within(a, lo, hi), …)`: how many of these fields the sample carries outside
    /// their range.
    OutOfRange(Vec<(String, Range)>),
    /// `any(e, f, …)`: 1 when any of these is 1 or more.
    Any(Vec<ValueExpr>),
}

/// How many of the named fields a sample carries must read one value for `same` to be 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Share {
    /// `same`: every one of them.
    Every,
    /// `mostly_same`: more than half of them.
    Most,
}

/// The values a field can physically take, bounds included; both finite, `lo < hi`.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    lo: f64,
    hi: f64,
}

impl Range {
    /// `None` unless both bounds are finite and `lo < hi`. A bound of −0 is stored as 0, so
    /// that equal ranges hash alike (rules with the same expression share one computation).
    pub fn new(lo: f64, hi: f64) -> Option<Range> {
        (lo.is_finite() && hi.is_finite() && lo < hi).then_some(Range { lo: lo + 0.0, hi: hi + 0.0 })
    }

    #[inline]
    pub fn contains(self, value: f64) -> bool {
        self.lo <= value && value <= self.hi
    }
}

// Bounds are finite and never −0, so comparing their bits is comparing their values.
impl PartialEq for Range {
    fn eq(&self, other: &Range) -> bool {
        self.lo.to_bits() == other.lo.to_bits() && self.hi.to_bits() == other.hi.to_bits()
    }
}

impl Eq for Range {}

impl Hash for Range {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.lo.to_bits().hash(state);
        self.hi.to_bits().hash(state);
    }
}

/// Why an expression did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}; expected a field name, `name?`, or abs(…), hypot(…, …), permille(…), lacks(name, …), none_of(name, …), first_of(name, …), within(name, lo, hi), out_of_range(within(…), …)")]
pub struct ExprError(String);

impl ValueExpr {
    pub fn parse(text: &str) -> Result<ValueExpr, ExprError> {
        let mut parser = Parser { text, pos: 0 };
        let expr = parser.expr()?;
        parser.skip_space();
        if parser.pos != text.len() {
            return Err(ExprError(format!("unexpected `{}`", &text[parser.pos..])));
        }
        Ok(expr)
    }

    /// The expression's value, reading fields through `field`; `None` when one is missing.
    /// `field` gives what passed [`ValueExpr::reported`] (then taken relative to a baseline, if
    /// the rule has one): `within` has already left out a value outside its range.
    pub fn evaluate(&self, field: &impl Fn(&str) -> Option<f64>) -> Option<f64> {
        match self {
            ValueExpr::Field(name) | ValueExpr::Within(name, _) => field(name),
            ValueExpr::Optional(name) => Some(field(name).unwrap_or(0.0)),
            ValueExpr::Abs(inner) => inner.evaluate(field).map(f64::abs),
            ValueExpr::Hypot(a, b) => Some(a.evaluate(field)?.hypot(b.evaluate(field)?)),
            ValueExpr::Permille(inner) => inner.evaluate(field).map(|degrees| degrees.to_radians().tan() * 1000.0),
            ValueExpr::Lacks(names) => Some(names.iter().filter(|name| field(name).is_none_or(|v| !v.is_finite())).count() as f64),
            ValueExpr::NoneOf(names) => Some(if names.iter().any(|name| field(name).is_some_and(f64::is_finite)) { 0.0 } else { 1.0 }),
            ValueExpr::FirstOf(names) => names.iter().find_map(|name| field(name).filter(|v| v.is_finite())),
            ValueExpr::Same(names, share) => Some(if one_value(names, *share, field) { 1.0 } else { 0.0 }),
            ValueExpr::OutOfRange(ranges) => {
                Some(ranges.iter().filter(|(name, range)| field(name).is_some_and(|v| v.is_finite() && !range.contains(v))).count() as f64)
            }
            ValueExpr::Any(parts) => Some(if parts.iter().any(|part| part.evaluate(field).is_some_and(|v| v >= 1.0)) { 1.0 } else { 0.0 }),
        }
    }

    /// A field as the sample reports it, when the expression can take it: present, finite and
    /// inside every `within` range the expression puts on it.
    #[inline]
    pub fn reported<K: AsRef<str>>(&self, fields: &[(K, f64)], name: &str) -> Option<f64> {
        lookup(fields, name).filter(|&value| value.is_finite() && self.accepts(name, value))
    }

    /// Whether `value` of field `name` lies inside every `within` range on it. A plain field is
    /// one comparison of the variant: the hot path pays nothing for ranges it does not use.
    fn accepts(&self, name: &str, value: f64) -> bool {
        match self {
            ValueExpr::Within(field, range) => !same_name(field, name) || range.contains(value),
            ValueExpr::Abs(inner) | ValueExpr::Permille(inner) => inner.accepts(name, value),
            ValueExpr::Hypot(a, b) => a.accepts(name, value) && b.accepts(name, value),
            ValueExpr::Any(parts) => parts.iter().all(|part| part.accepts(name, value)),
            // `out_of_range` counts the values outside its ranges: it must see them.
            ValueExpr::Field(_)
            | ValueExpr::Optional(_)
            | ValueExpr::Lacks(_)
            | ValueExpr::NoneOf(_)
            | ValueExpr::FirstOf(_)
            | ValueExpr::Same(..)
            | ValueExpr::OutOfRange(_) => true,
        }
    }

    /// Whether the expression reads fields as reported, whatever the rule's baseline: a count of
    /// readings outside their physical range means nothing on a value minus its baseline.
    pub fn judges_reported_values(&self) -> bool {
        match self {
            ValueExpr::OutOfRange(_) => true,
            ValueExpr::Abs(inner) | ValueExpr::Permille(inner) => inner.judges_reported_values(),
            ValueExpr::Hypot(a, b) => a.judges_reported_values() || b.judges_reported_values(),
            ValueExpr::Any(parts) => parts.iter().any(ValueExpr::judges_reported_values),
            ValueExpr::Field(_)
            | ValueExpr::Optional(_)
            | ValueExpr::Lacks(_)
            | ValueExpr::NoneOf(_)
            | ValueExpr::FirstOf(_)
            | ValueExpr::Same(..)
            | ValueExpr::Within(..) => false,
        }
    }

    /// Every field the expression reads, in order of appearance, without repeats (inline up to
    /// four: no allocation on the hot path).
    pub fn fields(&self) -> Fields<'_> {
        let mut out = Fields::new();
        self.collect_fields(&mut out);
        out
    }

    fn collect_fields<'a>(&'a self, out: &mut Fields<'a>) {
        match self {
            ValueExpr::Field(name) | ValueExpr::Optional(name) | ValueExpr::Within(name, _) => {
                if !out.contains(&name.as_str()) {
                    out.push(name);
                }
            }
            ValueExpr::Abs(inner) | ValueExpr::Permille(inner) => inner.collect_fields(out),
            ValueExpr::Hypot(a, b) => {
                a.collect_fields(out);
                b.collect_fields(out);
            }
            ValueExpr::Any(parts) => parts.iter().for_each(|part| part.collect_fields(out)),
            ValueExpr::Lacks(names) | ValueExpr::NoneOf(names) | ValueExpr::FirstOf(names) | ValueExpr::Same(names, _) => {
                for name in names {
                    if !out.contains(&name.as_str()) {
                        out.push(name);
                    }
                }
            }
            ValueExpr::OutOfRange(ranges) => {
                for (name, _) in ranges {
                    if !out.contains(&name.as_str()) {
                        out.push(name);
                    }
                }
            }
        }
    }
}

/// Whether three or more of `names` that `field` carries read exactly one value, and they are
/// the `share` of those it carries (0 and −0 are one value).
fn one_value(names: &[String], share: Share, field: impl Fn(&str) -> Option<f64>) -> bool {
    let mut carried = names.iter().filter_map(|name| field(name)).filter(|v| v.is_finite());
    match share {
        // Stops at the first field that differs: one lookup or two on an ordinary reading.
        Share::Every => {
            carried.next().is_some_and(|first| carried.try_fold(1, |count, value| (value == first).then_some(count + 1)).is_some_and(|count| count >= 3))
        }
        Share::Most => {
            let carried: smallvec::SmallVec<[f64; 16]> = carried.collect();
            let alike = |value: f64| carried.iter().filter(|&&other| other == value).count();
            carried.len() >= 3 && carried.iter().any(|&value| alike(value) >= (carried.len() / 2 + 1).max(3))
        }
    }
}

/// The fields an expression reads.
pub type Fields<'a> = smallvec::SmallVec<[&'a str; 4]>;

/// Looks a field up in a sample's `(name, value)` pairs.
pub fn lookup<K: AsRef<str>>(fields: &[(K, f64)], name: &str) -> Option<f64> {
    fields.iter().find(|(key, _)| same_name(key.as_ref(), name)).map(|&(_, value)| value)
}

/// Whether two field names are equal. Names are short ("x", "do"): comparing their bytes in
/// line costs less than the call to `memcmp` that `==` makes, on the engine's hottest path.
#[inline]
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

impl fmt::Display for ValueExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueExpr::Field(name) => f.write_str(name),
            ValueExpr::Optional(name) => write!(f, "{name}?"),
            ValueExpr::Abs(inner) => write!(f, "abs({inner})"),
            ValueExpr::Hypot(a, b) => write!(f, "hypot({a}, {b})"),
            ValueExpr::Permille(inner) => write!(f, "permille({inner})"),
            ValueExpr::Lacks(names) => write!(f, "lacks({})", names.join(", ")),
            ValueExpr::NoneOf(names) => write!(f, "none_of({})", names.join(", ")),
            ValueExpr::FirstOf(names) => write!(f, "first_of({})", names.join(", ")),
            ValueExpr::Same(names, Share::Every) => write!(f, "same({})", names.join(", ")),
            ValueExpr::Same(names, Share::Most) => write!(f, "mostly_same({})", names.join(", ")),
            ValueExpr::Within(name, range) => write!(f, "{}", Within(name, range)),
            ValueExpr::OutOfRange(ranges) => {
                let ranges: Vec<String> = ranges.iter().map(|(name, range)| Within(name, range).to_string()).collect();
                write!(f, "out_of_range({})", ranges.join(", "))
            }
            ValueExpr::Any(parts) => {
                let parts: Vec<String> = parts.iter().map(ToString::to_string).collect();
                write!(f, "any({})", parts.join(", "))
            }
        }
    }
}

/// `within(name, lo, hi)` as written (a float prints the shortest text that reads back the same).
struct Within<'a>(&'a str, &'a Range);

impl fmt::Display for Within<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "within({}, {}, {})", self.0, self.1.lo, self.1.hi)
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.text[self.pos..].starts_with(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        if self.text[self.pos..].starts_with(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn name(&mut self) -> Result<&str, ExprError> {
        self.skip_space();
        let rest = &self.text[self.pos..];
        let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let name = &rest[..len];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            let shown = if rest.is_empty() { "end of text".to_string() } else { format!("`{rest}`") };
            return Err(ExprError(format!("expected a field name at {shown}")));
        }
        self.pos += len;
        Ok(name)
    }

    fn expr(&mut self) -> Result<ValueExpr, ExprError> {
        let name = self.name()?.to_string();
        if self.text[self.pos..].starts_with('?') {
            self.pos += 1;
            return Ok(ValueExpr::Optional(name));
        }
        if !self.eat('(') {
            return Ok(ValueExpr::Field(name));
        }
        if matches!(name.as_str(), "lacks" | "none_of" | "first_of" | "same" | "mostly_same") {
            let mut names = vec![self.name()?.to_string()];
            while self.eat(',') {
                names.push(self.name()?.to_string());
            }
            if !self.eat(')') {
                return Err(ExprError(format!("`{name}(` takes field names and is not closed where expected")));
            }
            return Ok(match name.as_str() {
                "lacks" => ValueExpr::Lacks(names),
                "none_of" => ValueExpr::NoneOf(names),
                "same" => ValueExpr::Same(names, Share::Every),
                "mostly_same" => ValueExpr::Same(names, Share::Most),
                _ => ValueExpr::FirstOf(names),
            });
        }
        if name == "within" {
            let (field, range) = self.within_arguments()?;
            return Ok(ValueExpr::Within(field, range));
        }
        if name == "out_of_range" {
            let mut ranges = vec![self.within_term()?];
            while self.eat(',') {
                ranges.push(self.within_term()?);
            }
            if !self.eat(')') {
                return Err(ExprError("`out_of_range(` takes within(name, lo, hi) terms and is not closed where expected".into()));
            }
            return Ok(ValueExpr::OutOfRange(ranges));
        }
        let first = self.expr()?;
        let expr = match name.as_str() {
            "abs" => ValueExpr::Abs(Box::new(first)),
            "permille" => ValueExpr::Permille(Box::new(first)),
            "hypot" => {
                if !self.eat(',') {
                    return Err(ExprError("`hypot` takes two arguments".into()));
                }
                ValueExpr::Hypot(Box::new(first), Box::new(self.expr()?))
            }
            "any" => {
                let mut parts = vec![first];
                while self.eat(',') {
                    parts.push(self.expr()?);
                }
                ValueExpr::Any(parts)
            }
            other => return Err(ExprError(format!("unknown function `{other}`"))),
        };
        if !self.eat(')') {
            return Err(ExprError(format!("`{name}(` is not closed where expected")));
        }
        Ok(expr)
    }

    /// `name, lo, hi)` after `within(`.
    fn within_arguments(&mut self) -> Result<(String, Range), ExprError> {
        let field = self.name()?.to_string();
        let mut bound =
            || if self.eat(',') { self.number() } else { Err(ExprError("`within` takes a field name and two bounds: within(name, lo, hi)".into())) };
        let (lo, hi) = (bound()?, bound()?);
        if !self.eat(')') {
            return Err(ExprError("`within(` takes a field name and two bounds and is not closed where expected".into()));
        }
        let range = Range::new(lo, hi).ok_or_else(|| ExprError(format!("`within({field}, {lo}, {hi})`: the lower bound must be below the upper one")))?;
        Ok((field, range))
    }

    /// `within(name, lo, hi)` inside `out_of_range(…)`.
    fn within_term(&mut self) -> Result<(String, Range), ExprError> {
        if self.name()? != "within" || !self.eat('(') {
            return Err(ExprError("`out_of_range` takes within(name, lo, hi) terms".into()));
        }
        self.within_arguments()
    }

    /// A finite decimal number, signed: `-1500`, `0.2`, `25`.
    fn number(&mut self) -> Result<f64, ExprError> {
        self.skip_space();
        let rest = &self.text[self.pos..];
        let len = rest.find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))).unwrap_or(rest.len());
        let value = rest[..len].parse::<f64>().ok().filter(|v| v.is_finite());
        let Some(value) = value else {
            let shown = if rest.is_empty() { "end of text".to_string() } else { format!("`{rest}`") };
            return Err(ExprError(format!("expected a number at {shown}")));
        };
        self.pos += len;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As the engine evaluates: fields read through [`ValueExpr::reported`].
    fn eval(text: &str, fields: &[(&str, f64)]) -> Option<f64> {
        let expr = ValueExpr::parse(text).unwrap();
        expr.evaluate(&|name| expr.reported(fields, name))
    }

    #[test]
    fn parses_nested_functions() {
        let expr = ValueExpr::parse(" permille( hypot(x, abs(y)) ) ").unwrap();
        assert_eq!(expr.to_string(), "permille(hypot(x, abs(y)))");
        assert_eq!(expr.fields().as_slice(), ["x", "y"]);
    }

    #[test]
    fn rejects_what_is_not_an_expression() {
        for bad in ["", "x + y", "hypot(x)", "hypot(x, y, z)", "9x", "sqrt(x)", "abs(x"] {
            assert!(ValueExpr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hypot_combines_both_axes() {
        assert_eq!(eval("hypot(x, y)", &[("x", 3.0), ("y", -4.0)]), Some(5.0));
    }

    #[test]
    fn permille_converts_degrees_to_tilt_ratio() {
        // domain.md: 7‰ = 0.4011°, 1% = 0.5729°.
        assert!((eval("permille(a)", &[("a", 0.4011)]).unwrap() - 7.0).abs() < 0.001);
        assert!((eval("permille(a)", &[("a", 0.5729)]).unwrap() - 10.0).abs() < 0.001);
    }

    #[test]
    fn an_optional_field_counts_as_zero_where_a_sample_lacks_it() {
        let expr = ValueExpr::parse("hypot(hypot(x, y), temp?)").unwrap();
        assert_eq!(expr.to_string(), "hypot(hypot(x, y), temp?)");
        assert_eq!(expr.fields().as_slice(), ["x", "y", "temp"]);
        assert_eq!(eval("hypot(x, t?)", &[("x", 3.0), ("t", 4.0)]), Some(5.0));
        assert_eq!(eval("hypot(x, t?)", &[("x", 3.0)]), Some(3.0));
        assert_eq!(eval("hypot(x?, t)", &[("x", 3.0)]), None, "only the marked field may be missing");
        assert!(ValueExpr::parse("abs(x)?").is_err() && ValueExpr::parse("x ?").is_err());
    }

    #[test]
    fn first_of_is_the_first_named_field_a_sample_carries() {
        assert_eq!(ValueExpr::parse("first_of(do, ph)").unwrap().to_string(), "first_of(do, ph)");
        assert_eq!(eval("first_of(do, ph, nh3n)", &[("nh3n", 0.5), ("ph", 7.6)]), Some(7.6));
        assert_eq!(eval("first_of(do, ph, nh3n)", &[("do", f64::NAN), ("nh3n", 0.5)]), Some(0.5), "NaN is not carried");
        assert_eq!(eval("first_of(do, ph)", &[("DO", 7.0)]), None);
    }

    #[test]
    fn none_of_is_one_only_for_a_sample_carrying_none_of_the_named_fields() {
        let expr = ValueExpr::parse("none_of(do, ph, nh3n)").unwrap();
        assert_eq!(expr.to_string(), "none_of(do, ph, nh3n)");
        assert_eq!(expr.fields().as_slice(), ["do", "ph", "nh3n"]);
        assert_eq!(eval("none_of(do, ph, nh3n)", &[("DO", 1.0), ("NH3N", 5.0)]), Some(1.0), "renamed fields");
        assert_eq!(eval("none_of(do, ph, nh3n)", &[("nh3n", 5.0)]), Some(0.0));
        assert_eq!(eval("none_of(do, ph, nh3n)", &[("do", f64::NAN)]), Some(1.0));
        assert!(ValueExpr::parse("none_of(do,").is_err());
    }

    #[test]
    fn same_is_one_only_when_three_or_more_carried_fields_read_one_value() {
        let text = "same(do, ph, nh3n, cl2)";
        assert_eq!(eval(text, &[("do", 0.0), ("ph", 0.0), ("nh3n", 0.0), ("temperature", 14.0)]), Some(1.0), "a sensor head that is off");
        assert_eq!(eval(text, &[("do", 9999.0), ("ph", 9999.0), ("nh3n", 9999.0)]), Some(1.0), "an error code in every field it reads");
        assert_eq!(eval(text, &[("do", 0.0), ("ph", -0.0), ("nh3n", 0.0)]), Some(1.0), "0 and −0 are one value");
        assert_eq!(eval(text, &[("do", 0.0), ("ph", 7.1), ("nh3n", 0.0)]), Some(0.0), "an anoxic canal");
        assert_eq!(eval(text, &[("cl2", 0.0), ("nh3n", 0.0)]), Some(0.0), "two may agree: a tap without chlorine");
        assert_eq!(eval(text, &[("x", 1.0)]), Some(0.0));
        assert_eq!(ValueExpr::parse(text).map(|e| e.to_string()).as_deref(), Ok(text));
    }

    #[test]
    fn mostly_same_is_one_when_three_or_more_and_more_than_half_of_the_carried_fields_read_one_value() {
        let text = "mostly_same(do, ph, nh3n, codmn, tp, orp, turbidity, conductivity)";
        let head_off = [("do", 0.0), ("ph", 0.0), ("orp", 0.0), ("turbidity", 0.0), ("conductivity", 0.0), ("nh3n", 0.42), ("tp", 0.08), ("codmn", 3.1)];
        assert_eq!(eval(text, &head_off), Some(1.0), "a sonde's head off beside instruments that read on: 5 of 8");
        let neutral = [("do", 0.0), ("ph", 7.0), ("nh3n", 0.0), ("codmn", 0.0), ("turbidity", 0.0), ("conductivity", 0.0)];
        assert_eq!(eval(text, &neutral), Some(1.0), "0 everywhere but the pH electrode's 7.00");
        assert_eq!(eval(&text.replace("mostly_same", "same"), &neutral), Some(0.0), "`same` needs every field");
        let clean = [("do", 9.1), ("ph", 7.6), ("nh3n", 0.0), ("tp", 0.0), ("turbidity", 0.0), ("conductivity", 212.0), ("orp", 240.0)];
        assert_eq!(eval(text, &clean), Some(0.0), "three clean-water zeros of seven are not most");
        let half = [("do", 0.0), ("ph", 0.0), ("nh3n", 0.0), ("tp", 0.0), ("turbidity", 3.0), ("conductivity", 212.0), ("orp", 240.0), ("codmn", 2.0)];
        assert_eq!(eval(text, &half), Some(0.0), "half is not more than half");
        assert_eq!(eval(text, &[("do", 0.0), ("ph", 0.0), ("nh3n", 1.0)]), Some(0.0), "two of three are fewer than three");
        assert_eq!(eval(text, &[("do", 0.0), ("ph", 0.0), ("nh3n", 0.0), ("x", 5.0)]), Some(1.0), "fields not named do not count");
        assert_eq!(ValueExpr::parse(text).map(|e| e.to_string()).as_deref(), Ok(text));
        assert_eq!(ValueExpr::parse(text).unwrap().fields().len(), 8);
    }

    #[test]
    fn any_is_one_when_one_of_its_parts_is() {
        let text = "any(same(do, ph, nh3n, tp), mostly_same(do, ph, orp, turbidity, conductivity))";
        let expr = ValueExpr::parse(text).unwrap();
        assert_eq!(expr.to_string(), text);
        assert_eq!(expr.fields().as_slice(), ["do", "ph", "nh3n", "tp", "orp", "turbidity", "conductivity"]);
        assert_eq!(eval(text, &[("do", 0.0), ("nh3n", 0.0), ("tp", 0.0)]), Some(1.0), "every field alike: the first");
        let head_off = [("do", 0.0), ("ph", 0.0), ("orp", 0.0), ("turbidity", 0.0), ("conductivity", 0.0), ("nh3n", 0.4), ("tp", 0.1)];
        assert_eq!(eval(text, &head_off), Some(1.0), "the sonde's fields alike: the second");
        let clean = [("do", 6.1), ("nh3n", 0.0), ("tp", 0.0), ("turbidity", 0.0)];
        assert_eq!(eval(text, &clean), Some(0.0), "clean water: neither");
        assert_eq!(eval("any(abs(x), y)", &[("x", -0.5), ("y", 2.0)]), Some(1.0));
        assert_eq!(eval("any(abs(x), y)", &[("x", -0.5)]), Some(0.0), "a part without its field is not 1");
        for bad in ["any()", "any(x,", "any(x y)"] {
            assert!(ValueExpr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lacks_counts_the_named_fields_a_sample_does_not_carry() {
        let expr = ValueExpr::parse("lacks(x, y)").unwrap();
        assert_eq!(expr.to_string(), "lacks(x, y)");
        assert_eq!(expr.fields().as_slice(), ["x", "y"]);
        assert_eq!(eval("lacks(x, y)", &[("x", 0.1), ("y", 0.2)]), Some(0.0));
        assert_eq!(eval("lacks(x, y)", &[("x", 0.1), ("temperature", 20.0)]), Some(1.0));
        assert_eq!(eval("lacks(x, y)", &[("angle_x", 0.1), ("angle_y", 0.2)]), Some(2.0), "renamed fields");
        assert_eq!(eval("lacks(x, y)", &[("x", f64::NAN), ("y", 0.2)]), Some(1.0));
        for bad in ["lacks()", "lacks(abs(x))", "lacks(x, y", "lacks(x,)"] {
            assert!(ValueExpr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_field_yields_none() {
        assert_eq!(eval("abs(x)", &[("y", 1.0)]), None);
        assert_eq!(eval("abs(x)", &[("x", -2.5)]), Some(2.5));
    }

    #[test]
    fn within_yields_a_field_inside_its_range_and_nothing_outside_it() {
        let expr = ValueExpr::parse("within( do , 0, 25 )").unwrap();
        assert_eq!(expr.to_string(), "within(do, 0, 25)");
        assert_eq!(expr.fields().as_slice(), ["do"]);
        for inside in [0.0, 1.0, 25.0] {
            assert_eq!(eval("within(do, 0, 25)", &[("do", inside)]), Some(inside));
        }
        for outside in [-0.5, 25.01, 9999.0, f64::NAN] {
            assert_eq!(eval("within(do, 0, 25)", &[("do", outside)]), None, "{outside}");
        }
        assert_eq!(eval("within(do, 0, 25)", &[("ph", 7.0)]), None, "as a reading without the field");
        assert_eq!(eval("within(orp, -1500, 1500.5)", &[("orp", -1500.0)]), Some(-1500.0));
        assert_eq!(eval("abs(within(x, -1, 1))", &[("x", -0.5)]), Some(0.5), "it nests");
        assert_eq!(ValueExpr::parse("within(orp, -1500, 1.5e3)").unwrap().to_string(), "within(orp, -1500, 1500)");
    }

    #[test]
    fn within_judges_the_value_as_reported_before_a_baseline() {
        // A learned turbidity of 10 NTU: a reading of 9999 is 999.9 times it, which no ratio
        // range can tell from a flood; the range must see 9999.
        let expr = ValueExpr::parse("within(turbidity, 0, 4000)").unwrap();
        let ratio = |fields: &[(&str, f64)]| expr.evaluate(&|name| expr.reported(fields, name).map(|v| v / 10.0));
        assert_eq!(ratio(&[("turbidity", 25.0)]), Some(2.5));
        assert_eq!(ratio(&[("turbidity", 9999.0)]), None);
    }

    #[test]
    fn equal_ranges_are_one_expression() {
        let a = ValueExpr::parse("within(x, -0, 1)").unwrap();
        let b = ValueExpr::parse("within(x, 0.0, 1)").unwrap();
        assert_eq!(a, b);
        let hash = |e: &ValueExpr| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            e.hash(&mut hasher);
            hasher.finish()
        };
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(a, ValueExpr::parse("within(x, 0, 2)").unwrap());
    }

    #[test]
    fn out_of_range_counts_the_fields_carried_outside_their_range() {
        let text = "out_of_range(within(do, 0, 25), within(ph, 0, 14), within(nh3n, 0, 200))";
        let expr = ValueExpr::parse(text).unwrap();
        assert_eq!(expr.to_string(), text);
        assert_eq!(expr.fields().as_slice(), ["do", "ph", "nh3n"]);
        assert!(expr.judges_reported_values() && !ValueExpr::parse("within(do, 0, 25)").unwrap().judges_reported_values());
        assert_eq!(eval(text, &[("do", 8.0), ("ph", 7.0), ("nh3n", 0.3)]), Some(0.0));
        assert_eq!(eval(text, &[("do", -0.5), ("ph", 14.5), ("nh3n", 9999.0)]), Some(3.0));
        assert_eq!(eval(text, &[("do", -0.5)]), Some(1.0), "a field not carried is not outside its range");
        assert_eq!(eval(text, &[("temperature", 20.0)]), Some(0.0));
    }

    #[test]
    fn rejects_ranges_that_are_not_ranges() {
        for bad in [
            "within(x)",
            "within(x, 0)",
            "within(x, 1, 0)",
            "within(x, 1, 1)",
            "within(x, 0, inf)",
            "within(x, 0, 1e999)",
            "within(x, a, 1)",
            "within(abs(x), 0, 1)",
            "within(x, 0, 1",
            "within(x, 0, 1, 2)",
            "out_of_range()",
            "out_of_range(x)",
            "out_of_range(within(x, 0, 1), y)",
            "out_of_range(within(x, 0, 1)",
        ] {
            assert!(ValueExpr::parse(bad).is_err(), "{bad}");
        }
    }
}
