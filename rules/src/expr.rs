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
//!   an axis, or renamed its fields, is otherwise skipped by every rule without a word).
//!
//! Parsed once at load time; evaluating cannot fail, it only says "this sample does not carry
//! the fields I need" by returning `None`.

use std::fmt;

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
}

/// Why an expression did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}; expected a field name, `name?`, or abs(…), hypot(…, …), permille(…), lacks(name, …)")]
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
    pub fn evaluate(&self, field: &impl Fn(&str) -> Option<f64>) -> Option<f64> {
        match self {
            ValueExpr::Field(name) => field(name),
            ValueExpr::Optional(name) => Some(field(name).unwrap_or(0.0)),
            ValueExpr::Abs(inner) => inner.evaluate(field).map(f64::abs),
            ValueExpr::Hypot(a, b) => Some(a.evaluate(field)?.hypot(b.evaluate(field)?)),
            ValueExpr::Permille(inner) => inner.evaluate(field).map(|degrees| degrees.to_radians().tan() * 1000.0),
            ValueExpr::Lacks(names) => Some(names.iter().filter(|name| field(name).is_none_or(|v| !v.is_finite())).count() as f64),
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
            ValueExpr::Field(name) | ValueExpr::Optional(name) => {
                if !out.contains(&name.as_str()) {
                    out.push(name);
                }
            }
            ValueExpr::Abs(inner) | ValueExpr::Permille(inner) => inner.collect_fields(out),
            ValueExpr::Hypot(a, b) => {
                a.collect_fields(out);
                b.collect_fields(out);
            }
            ValueExpr::Lacks(names) => {
                for name in names {
                    if !out.contains(&name.as_str()) {
                        out.push(name);
                    }
                }
            }
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
        }
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
        if name == "lacks" {
            let mut names = vec![self.name()?.to_string()];
            while self.eat(',') {
                names.push(self.name()?.to_string());
            }
            if !self.eat(')') {
                return Err(ExprError("`lacks(` takes field names and is not closed where expected".into()));
            }
            return Ok(ValueExpr::Lacks(names));
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
            other => return Err(ExprError(format!("unknown function `{other}`"))),
        };
        if !self.eat(')') {
            return Err(ExprError(format!("`{name}(` is not closed where expected")));
        }
        Ok(expr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, fields: &[(&str, f64)]) -> Option<f64> {
        ValueExpr::parse(text).unwrap().evaluate(&|name| lookup(fields, name))
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
}
