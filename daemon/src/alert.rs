//! One alert event as grid workers, webhooks, MQTT, the journal and the district see it: what
//! happened, where, how bad, since when, to whom. Data only; a rule event becomes an alert in
//! [`crate::pipeline::alerts`], the dispatcher ([`crate::dispatch`]) journals it and the sinks
//! ([`crate::sinks`]) send it.
//!
//! The JSON form is the wire format of webhooks, MQTT alert messages, the journal and the
//! district uplink: `event`, `severity`, `previous_severity` and `audience` are lower-case words
//! (`"fired"`, `"danger"`, `"installer"`).

use crate::clock::rfc3339;
use gridwatch_rules::{EventKind, Severity};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What happened: a rule's judgement ([`EventKind`]) or one of the daemon's own messages about
/// an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The rule's condition is met: an incident opens (or a device alarm is raised).
    Fired,
    /// The incident's severity moved.
    Changed,
    /// The condition is over.
    Cleared,
    /// Nobody acted in time: the people on duty are reminded.
    Reminder,
    /// The incident went up the escalation ladder.
    Escalated,
    /// The incident was handed over to a member (转交).
    HandedOver,
    /// A member was asked to help (加协助人).
    HelpAsked,
    /// The daily supervision report.
    Report,
}

impl Event {
    /// The word in the JSON and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Fired => "fired",
            Event::Changed => "changed",
            Event::Cleared => "cleared",
            Event::Reminder => "reminder",
            Event::Escalated => "escalated",
            Event::HandedOver => "handed_over",
            Event::HelpAsked => "help_asked",
            Event::Report => "report",
        }
    }
}

impl From<EventKind> for Event {
    fn from(kind: EventKind) -> Event {
        match kind {
            EventKind::Fired => Event::Fired,
            EventKind::Changed => Event::Changed,
            EventKind::Cleared => Event::Cleared,
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Who acts on an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Grid workers: something is wrong with a house or the water.
    Grid,
    /// Installers: a device alarm (silent box, stuck value, out of range, a bus down).
    Installer,
    /// The office: the daily supervision report.
    Office,
}

impl Audience {
    /// The word in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Grid => "grid",
            Audience::Installer => "installer",
            Audience::Office => "office",
        }
    }
}

/// One alert event as grid workers, webhooks and the journal see it. This is the JSON body of
/// the webhook and of MQTT alert messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `fired`, `changed` (severity moved), `cleared`, or one of the daemon's own events.
    pub event: Event,
    pub rule: String,
    /// What is wrong, in words.
    pub title: String,
    /// notice | warning | alarm | danger (for `cleared`, the severity it had).
    #[serde(with = "severity_name")]
    pub severity: Severity,
    /// blue | yellow | orange | red.
    pub colour: String,
    /// For `changed`: the severity before.
    #[serde(with = "optional_severity_name")]
    pub previous_severity: Option<Severity>,
    /// Who acts on it.
    pub audience: Audience,
    /// The sensor; for a rule with `agree`, the building's first sensor, which names the
    /// building's incident.
    pub sensor: String,
    /// For a rule with `agree`: how many of the building's sensors agree ("2 of 3 sensors").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<String>,
    pub kind: String,
    pub site: String,
    pub building: Option<String>,
    /// The site's and building's display names (`[names]`), when the configuration gives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building_name: Option<String>,
    pub grid: Option<String>,
    /// The value that decided the event, in `unit`.
    pub value: f64,
    pub unit: String,
    /// What decided the event, e.g. `hypot(x, y) above 0.4011` when fired,
    /// `hypot(x, y) back below 0.37` when cleared.
    pub condition: String,
    /// When it happened (RFC 3339, UTC).
    pub at: String,
    pub at_ms: i64,
    /// When the breach began (RFC 3339, UTC).
    pub since: String,
    /// The rule's message rendered per language (`en`, `zh`); at least `en` (the title when the
    /// rule has no message).
    pub messages: BTreeMap<String, String>,
    /// The incident this event belongs to (`gridwatch incidents show <id>`).
    #[serde(default)]
    pub incident_id: Option<i64>,
    /// This event's id in the box's journal. Every copy and every re-send of one event (after a
    /// crash, on a failover channel) carries the same id, so a receiver that sees an id twice
    /// drops the second; ids grow, so an incident's events sort by it. Absent only on events
    /// that were never journaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<i64>,
    /// The signed link to the incident's page, when worker links are configured (bound to
    /// nobody; on a member's own channel, that member's link).
    #[serde(default)]
    pub link: Option<String>,
    /// Each named recipient's own signed link (name -> link): what they do through it is
    /// recorded as theirs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub member_links: BTreeMap<String, String>,
    /// Who this message is for, by name (the people on duty, and those escalated to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Their phone numbers, for @-mentions in group robots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    /// A "no data" event (a silent sensor): held back while the sensor's bus is down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_data: bool,
    /// A clear of an incident a person had resolved already: nobody needs to go on site for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incident_resolved: bool,
    /// Folded into this open incident of the same house: recorded, sent to nobody (only the
    /// console log shows it; see `store::folding`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded_into: Option<i64>,
    /// Where the sensor is, `[latitude, longitude]`, when the inventory says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<[f64; 2]>,
    /// Made while this box's clock was not set (`at` says "time unknown"): when it happened on
    /// the daemon's monotonic clock, so the store can re-stamp it once the clock is set. Never
    /// sent nor stored in the payload.
    #[serde(skip)]
    pub unset_clock: Option<UnsetClockStamp>,
}

/// When an event happened, for a box whose wall clock was not set: the daemon's elapsed time
/// ([`crate::clock::Clock::elapsed_ms`]) at the event, and how long its breach had lasted then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsetClockStamp {
    pub elapsed_ms: i64,
    pub lasting_ms: i64,
}

/// The `kind` of the alerts the daemon raises itself ([`Alert::device`]).
pub const DAEMON_KIND: &str = "gridwatch";

impl Alert {
    /// Whether it is about a red incident that is not over (its alarm, a rise to red, a
    /// reminder, an escalation…): such a message goes first where a channel must choose.
    pub fn is_red(&self) -> bool {
        self.severity == Severity::Danger && self.event != Event::Cleared
    }

    /// Says "time unknown" instead of a time stamped by a clock that is not set, keeping the
    /// monotonic `elapsed_ms` of the stamp for the store to re-stamp it once the clock is set.
    pub fn stamped_by_unset_clock(&mut self, elapsed_ms: i64) {
        self.at = crate::clock::TIME_UNKNOWN.into();
        self.since = crate::clock::TIME_UNKNOWN.into();
        self.unset_clock = Some(UnsetClockStamp { elapsed_ms, lasting_ms: 0 });
    }

    /// A device alarm the daemon raises itself (not from a rule): for installers, about
    /// `subject` (a bus, the daemon), with the English message `condition` until set otherwise.
    #[allow(clippy::too_many_arguments)] // each is one field of the alarm
    pub fn device(rule: &str, subject: &str, site: &str, event: Event, severity: Severity, title: &str, condition: String, now_ms: i64) -> Alert {
        let at = rfc3339(now_ms);
        Alert {
            event,
            rule: rule.into(),
            title: title.into(),
            severity,
            colour: severity.colour().into(),
            previous_severity: None,
            audience: Audience::Installer,
            sensor: subject.into(),
            agreement: None,
            kind: DAEMON_KIND.into(),
            site: site.into(),
            building: None,
            site_name: None,
            building_name: None,
            grid: None,
            value: 1.0,
            unit: String::new(),
            messages: [("en".to_string(), condition.clone())].into_iter().collect(),
            condition,
            at: at.clone(),
            at_ms: now_ms,
            since: at,
            incident_id: None,
            event_id: None,
            link: None,
            member_links: BTreeMap::new(),
            recipients: Vec::new(),
            mentions: Vec::new(),
            no_data: false,
            incident_resolved: false,
            folded_into: None,
            location: None,
            unset_clock: None,
        }
    }

    /// The English message (the title when the rule has none).
    pub fn message(&self) -> &str {
        self.messages.get("en").map_or(self.title.as_str(), String::as_str)
    }

    /// "house-07 at north-lane, building B7, grid-3".
    pub fn place(&self) -> String {
        let mut place = format!("{} at {}", self.sensor, self.site);
        if let Some(building) = &self.building {
            place.push_str(&format!(", building {building}"));
        }
        if let Some(grid) = &self.grid {
            place.push_str(&format!(", {grid}"));
        }
        place
    }
}

/// A severity as its lower-case word (`"danger"`), as the wire format has always had it.
mod severity_name {
    use gridwatch_rules::Severity;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(severity: &Severity, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(severity.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Severity, D::Error> {
        let word = String::deserialize(deserializer)?;
        word.parse().map_err(serde::de::Error::custom)
    }
}

/// [`severity_name`] for an optional severity (`null` when absent).
mod optional_severity_name {
    use gridwatch_rules::Severity;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(severity: &Option<Severity>, serializer: S) -> Result<S::Ok, S::Error> {
        match severity {
            Some(severity) => serializer.serialize_str(severity.as_str()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Severity>, D::Error> {
        let word = Option::<String>::deserialize(deserializer)?;
        word.map(|word| word.parse().map_err(serde::de::Error::custom)).transpose()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A representative alert for sink and store tests.
    pub fn sample_alert(event: &str, value: f64) -> Alert {
        let event: Event = serde_json::from_value(serde_json::Value::String(event.into())).unwrap();
        Alert {
            event,
            rule: "tilt-danger".into(),
            title: "Wall tilt past 7‰ (red)".into(),
            severity: Severity::Danger,
            colour: "red".into(),
            previous_severity: None,
            audience: Audience::Grid,
            sensor: "house-07".into(),
            agreement: None,
            kind: "tilt".into(),
            site: "north-lane".into(),
            building: Some("B7".into()),
            site_name: None,
            building_name: None,
            grid: Some("grid-3".into()),
            value,
            unit: "°".into(),
            condition: "hypot(x, y) above 0.4011".into(),
            at: rfc3339(1_795_392_000_000),
            at_ms: 1_795_392_000_000,
            since: rfc3339(1_795_391_940_000),
            messages: BTreeMap::from([("en".to_string(), "north-lane B7 (house-07): wall tilt changed 7.31‰ since installation — danger".to_string())]),
            incident_id: None,
            event_id: None,
            link: None,
            member_links: BTreeMap::new(),
            recipients: Vec::new(),
            mentions: Vec::new(),
            no_data: false,
            incident_resolved: false,
            folded_into: None,
            location: None,
            unset_clock: None,
        }
    }

    #[test]
    fn place_names_site_building_and_grid() {
        assert_eq!(sample_alert("fired", 0.5).place(), "house-07 at north-lane, building B7, grid-3");
    }

    #[test]
    fn alert_json_carries_what_a_receiver_needs() {
        let json = serde_json::to_value(sample_alert("fired", 0.5)).unwrap();
        for key in ["event", "rule", "title", "severity", "sensor", "site", "value", "unit", "at", "since"] {
            assert!(json.get(key).is_some(), "missing {key}: {json}");
        }
        assert_eq!(json["event"], "fired");
    }

    #[test]
    fn the_wire_format_keeps_its_lower_case_words() {
        let mut alert = sample_alert("changed", 0.5);
        (alert.previous_severity, alert.audience) = (Some(Severity::Alarm), Audience::Installer);
        let json = serde_json::to_string(&alert).unwrap();
        for word in [r#""event":"changed""#, r#""severity":"danger""#, r#""previous_severity":"alarm""#, r#""audience":"installer""#] {
            assert!(json.contains(word), "{word} not in {json}");
        }
        assert_eq!(serde_json::from_str::<Alert>(&json).unwrap(), alert, "read back as written");
        let handed = serde_json::to_string(&Alert { event: Event::HandedOver, previous_severity: None, ..alert }).unwrap();
        assert!(handed.contains(r#""event":"handed_over""#) && handed.contains(r#""previous_severity":null"#), "{handed}");
    }
}
