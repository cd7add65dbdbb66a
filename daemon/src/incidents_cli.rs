//! `gridwatch incidents list | show ID | act ID accept|on-site|resolve|close --by NAME`: the
//! closed loop from the command line, on the same store the daemon writes (SQLite in WAL mode
//! lets both work at once).

use crate::cli::IncidentsCommand;
use crate::clock::rfc3339;
use crate::config::Config;
use crate::store::Store;
use std::fmt::Write as _;

pub fn run(config: &Config, command: IncidentsCommand) -> anyhow::Result<String> {
    let store = Store::open(&config.state_dir)?;
    let mut out = String::new();
    match command {
        IncidentsCommand::List { all } => {
            let rows = store.incidents(all)?;
            if rows.is_empty() {
                out.push_str(if all { "no incidents\n" } else { "no open incidents\n" });
            }
            for row in rows {
                let normal = if row.sensor_normal { " (sensor normal)" } else { "" };
                let _ = writeln!(out, "#{:<5} {:<9} {:<8} rule={} sensor={} value={:.4} firings={} opened={}{normal}", row.id, row.state, row.severity, row.rule, row.sensor, row.last_value, row.firings, rfc3339(row.opened_ms));
            }
        }
        IncidentsCommand::Show { id } => {
            let row = store.incidents(true)?.into_iter().find(|r| r.id == id).ok_or_else(|| anyhow::anyhow!("no incident {id}"))?;
            let _ = writeln!(out, "incident #{} — {} on {}: {} (worst {}), {}{}", row.id, row.rule, row.sensor, row.severity, row.worst_severity, row.state, if row.sensor_normal { ", sensor normal" } else { "" });
            for entry in store.incident_history(id)? {
                let _ = writeln!(out, "  {} {:<12} {}{}", rfc3339(entry.at_ms), entry.actor, entry.action, entry.note.map(|n| format!(": {n}")).unwrap_or_default());
            }
        }
        IncidentsCommand::Act { id, action, by, note } => {
            let state = store.incident_action(id, action, &by, note.as_deref(), chrono::Utc::now().timestamp_millis())?;
            let _ = writeln!(out, "incident #{id} is now {state}");
        }
    }
    Ok(out)
}
