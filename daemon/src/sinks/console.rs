//! The console sink: one line per alert event on standard output (journald keeps it). Logs go
//! to standard error, so stdout is exactly the alert stream — the alarms folded into their
//! house's open one too, marked, though no other channel gets them (`store::folding`).

use super::Sink;
use crate::alert::Alert;
use std::io::Write;

/// The console sink's name among the channels.
pub const NAME: &str = "console";

#[derive(Debug, Default)]
pub struct ConsoleSink;

/// The line printed for an alert: time, event, severity, rule, sensor, value, condition, place
/// and the English message.
pub fn format_line(alert: &Alert) -> String {
    format!(
        "{at} {event:<7} {severity:<7} rule={rule} sensor={sensor} value={value:.4}{unit} ({condition}){change} since={since} | {place} | {message}{incident}{folded}",
        at = alert.at,
        event = alert.event.as_str(),
        severity = alert.severity.as_str(),
        rule = alert.rule,
        sensor = alert.sensor,
        value = alert.value,
        unit = alert.unit,
        condition = alert.condition,
        since = alert.since,
        change = alert.previous_severity.as_ref().map(|p| format!(" was {p}")).unwrap_or_default(),
        place = alert.place(),
        message = alert.message(),
        incident = alert.incident_id.map(|id| format!(" | incident #{id}")).unwrap_or_default(),
        folded = alert.folded_into.map(|id| format!(" | folded into #{id}, not sent")).unwrap_or_default(),
    )
}

impl Sink for ConsoleSink {
    fn name(&self) -> String {
        NAME.into()
    }

    async fn deliver(&mut self, alert: &Alert) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", format_line(alert))?;
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;

    #[test]
    fn line_names_rule_sensor_value_and_event() {
        let line = format_line(&sample_alert("cleared", 0.3));
        assert!(line.contains(" cleared "), "{line}");
        assert!(line.contains("rule=tilt-danger sensor=house-07 value=0.3000°"), "{line}");
        assert!(line.contains("| house-07 at north-lane, building B7, grid-3 |"), "{line}");
    }
}
