//! Silences: maintenance windows during which matching alerts are journaled and attached to
//! their incident but not sent, and start no reminders. A silence names a sensor, a building, a
//! grid or a rule, has a reason, an author and an expiry. Red (danger) alerts pass through every
//! silence unless it says `include_red` explicitly — an installer zeroing one box must not hide
//! a collapsing house.

use crate::alert::Alert;
use gridwatch_rules::Severity;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// What a silence covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Sensor,
    Building,
    Grid,
    Rule,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Sensor => "sensor",
            Scope::Building => "building",
            Scope::Grid => "grid",
            Scope::Rule => "rule",
        }
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Scope, String> {
        match text {
            "sensor" => Ok(Scope::Sensor),
            "building" => Ok(Scope::Building),
            "grid" => Ok(Scope::Grid),
            "rule" => Ok(Scope::Rule),
            other => Err(format!("`{other}` is not a silence scope: sensor, building, grid or rule")),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One silence as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Silence {
    pub id: i64,
    pub scope: Scope,
    pub target: String,
    pub include_red: bool,
    pub reason: String,
    pub author: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    /// Ended early by a person.
    pub ended_ms: Option<i64>,
}

impl Silence {
    /// The silence the daemon applies itself to a no-data alarm its sensor's bus explains (see
    /// `buses`): for that one alert, logged with its reason.
    pub fn bus_down(sensor: &str, reason: String, now: i64) -> Silence {
        Silence {
            id: 0,
            scope: Scope::Sensor,
            target: sensor.into(),
            include_red: true,
            reason,
            author: "gridwatch".into(),
            created_ms: now,
            expires_ms: now + 1,
            ended_ms: None,
        }
    }

    /// Whether this silence is in force at `now` and covers `alert`.
    pub fn covers(&self, alert: &Alert, now: i64) -> bool {
        let active = self.created_ms <= now && now < self.expires_ms && self.ended_ms.is_none_or(|ended| now < ended);
        let red_allowed = alert.severity != Severity::Danger || self.include_red;
        let target = Some(self.target.as_str());
        let matches = match self.scope {
            Scope::Sensor => alert.sensor == self.target,
            Scope::Building => alert.building.as_deref() == target,
            Scope::Grid => alert.grid.as_deref() == target,
            Scope::Rule => alert.rule == self.target,
        };
        active && red_allowed && matches
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;

    fn silence(scope: Scope, target: &str, include_red: bool) -> Silence {
        Silence {
            id: 1,
            scope,
            target: target.into(),
            include_red,
            reason: "re-mounting the box".into(),
            author: "installer".into(),
            created_ms: 100,
            expires_ms: 200,
            ended_ms: None,
        }
    }

    #[test]
    fn a_silence_covers_its_scope_within_its_window() {
        let mut alert = sample_alert("fired", 2.3);
        alert.severity = gridwatch_rules::Severity::Warning;
        assert!(silence(Scope::Sensor, "house-07", false).covers(&alert, 150));
        assert!(silence(Scope::Building, "B7", false).covers(&alert, 150));
        assert!(silence(Scope::Grid, "grid-3", false).covers(&alert, 150));
        assert!(silence(Scope::Rule, "tilt-danger", false).covers(&alert, 150));
        assert!(!silence(Scope::Sensor, "house-08", false).covers(&alert, 150));
        assert!(!silence(Scope::Sensor, "house-07", false).covers(&alert, 99), "not yet");
        assert!(!silence(Scope::Sensor, "house-07", false).covers(&alert, 200), "expired");
        let mut ended = silence(Scope::Sensor, "house-07", false);
        ended.ended_ms = Some(120);
        assert!(!ended.covers(&alert, 150), "ended early");
    }

    #[test]
    fn red_passes_unless_the_silence_says_so() {
        let alert = sample_alert("fired", 7.3);
        assert_eq!(alert.severity, Severity::Danger);
        assert!(!silence(Scope::Building, "B7", false).covers(&alert, 150));
        assert!(silence(Scope::Building, "B7", true).covers(&alert, 150));
    }
}
