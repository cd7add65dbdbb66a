//! Severity levels of a rule, ordered from least to most urgent. The colour names used in
//! Chinese emergency practice (blue / yellow / orange / red) are accepted as aliases.

use std::fmt;
use std::str::FromStr;

/// How urgent a firing is. Ordered: `Notice < Warning < Alarm < Danger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Severity {
    /// Blue: worth a look in the daily digest.
    Notice,
    /// Yellow: a grid worker should check within hours.
    Warning,
    /// Orange: a grid worker should be on site soon.
    Alarm,
    /// Red: someone must go now.
    Danger,
}

impl Severity {
    pub const ALL: [Severity; 4] = [Severity::Notice, Severity::Warning, Severity::Alarm, Severity::Danger];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Alarm => "alarm",
            Severity::Danger => "danger",
        }
    }

    /// The level as Chinese warning practice names it.
    pub fn zh(self) -> &'static str {
        match self {
            Severity::Notice => "蓝色提示",
            Severity::Warning => "黄色预警",
            Severity::Alarm => "橙色预警",
            Severity::Danger => "红色预警",
        }
    }

    /// The colour of the level in Chinese warning practice.
    pub fn colour(self) -> &'static str {
        match self {
            Severity::Notice => "blue",
            Severity::Warning => "yellow",
            Severity::Alarm => "orange",
            Severity::Danger => "red",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of the level names or colours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity `{0}`: expected notice, warning, alarm, danger (or blue, yellow, orange, red)")]
pub struct UnknownSeverity(pub String);

impl FromStr for Severity {
    type Err = UnknownSeverity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "notice" | "blue" => Ok(Severity::Notice),
            "warning" | "yellow" => Ok(Severity::Warning),
            "alarm" | "orange" => Ok(Severity::Alarm),
            "danger" | "red" => Ok(Severity::Danger),
            other => Err(UnknownSeverity(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_aliases_of_levels() {
        for level in Severity::ALL {
            assert_eq!(level.colour().parse::<Severity>(), Ok(level));
            assert_eq!(level.as_str().parse::<Severity>(), Ok(level));
        }
    }

    #[test]
    fn levels_are_ordered_by_urgency() {
        assert!(Severity::Notice < Severity::Warning);
        assert!(Severity::Alarm < Severity::Danger);
    }

    #[test]
    fn unknown_severity_lists_the_choices() {
        let err = "critical".parse::<Severity>().unwrap_err();
        assert!(err.to_string().contains("notice, warning, alarm, danger"));
    }
}
