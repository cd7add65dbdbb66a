//! The value a rule compares: one field of a sample, its absolute value, or the length of the
//! vector of two fields (`hypot(x, y)`, the combined tilt of both axes).
//!
//! Parsed once at load time; evaluating it cannot fail, it only says "this sample does not carry
//! the fields I need" by returning `None`.

use std::fmt;

/// A compiled value expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueExpr {
    /// `name`: the field as reported.
    Field(String),
    /// `abs(name)`: the field's magnitude, for signed quantities such as one tilt axis.
    Abs(String),
    /// `hypot(a, b)`: sqrt(a² + b²), e.g. the vector tilt of a two-axis box.
    Hypot(String, String),
}

/// Why an expression did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}; expected a field name, `abs(field)` or `hypot(field, field)`")]
pub struct ExprError(String);

impl ValueExpr {
    pub fn parse(text: &str) -> Result<ValueExpr, ExprError> {
        let text = text.trim();
        if let Some(inner) = call_argument(text, "abs") {
            return Ok(ValueExpr::Abs(field_name(inner)?));
        }
        if let Some(inner) = call_argument(text, "hypot") {
            let mut parts = inner.split(',');
            let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(ExprError(format!("`hypot` takes two fields, got `{inner}`")));
            };
            return Ok(ValueExpr::Hypot(field_name(a)?, field_name(b)?));
        }
        Ok(ValueExpr::Field(field_name(text)?))
    }

    /// The expression's value for a sample's fields, or `None` when a field is missing.
    pub fn evaluate<K: AsRef<str>>(&self, fields: &[(K, f64)]) -> Option<f64> {
        match self {
            ValueExpr::Field(name) => lookup(fields, name),
            ValueExpr::Abs(name) => lookup(fields, name).map(f64::abs),
            ValueExpr::Hypot(a, b) => Some(lookup(fields, a)?.hypot(lookup(fields, b)?)),
        }
    }
}

impl fmt::Display for ValueExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueExpr::Field(name) => f.write_str(name),
            ValueExpr::Abs(name) => write!(f, "abs({name})"),
            ValueExpr::Hypot(a, b) => write!(f, "hypot({a}, {b})"),
        }
    }
}

fn lookup<K: AsRef<str>>(fields: &[(K, f64)], name: &str) -> Option<f64> {
    fields.iter().find(|(key, _)| key.as_ref() == name).map(|&(_, value)| value)
}

fn call_argument<'a>(text: &'a str, function: &str) -> Option<&'a str> {
    text.strip_prefix(function)?.trim_start().strip_prefix('(')?.strip_suffix(')')
}

fn field_name(text: &str) -> Result<String, ExprError> {
    let name = text.trim();
    let mut chars = name.chars();
    let valid_start = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if valid_start && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(name.to_string())
    } else {
        Err(ExprError(format!("`{name}` is not a field name")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_field_abs_and_hypot() {
        assert_eq!(ValueExpr::parse("do"), Ok(ValueExpr::Field("do".into())));
        assert_eq!(ValueExpr::parse(" abs( x ) "), Ok(ValueExpr::Abs("x".into())));
        assert_eq!(ValueExpr::parse("hypot(x, y)"), Ok(ValueExpr::Hypot("x".into(), "y".into())));
    }

    #[test]
    fn rejects_what_is_not_a_field() {
        assert!(ValueExpr::parse("").is_err());
        assert!(ValueExpr::parse("x + y").is_err());
        assert!(ValueExpr::parse("hypot(x)").is_err());
        assert!(ValueExpr::parse("hypot(x, y, z)").is_err());
        assert!(ValueExpr::parse("9x").is_err());
    }

    #[test]
    fn hypot_combines_both_axes() {
        let expr = ValueExpr::parse("hypot(x, y)").unwrap();
        assert_eq!(expr.evaluate(&[("x", 3.0), ("y", -4.0)]), Some(5.0));
    }

    #[test]
    fn missing_field_yields_none() {
        let expr = ValueExpr::parse("abs(x)").unwrap();
        assert_eq!(expr.evaluate(&[("y", 1.0)]), None);
        assert_eq!(expr.evaluate(&[("x", -2.5)]), Some(2.5));
    }
}
