//! `gridwatch incidents list | show ID | act ID accept|on-site|resolve|close --by NAME |
//! silence SCOPE TARGET --for D --reason R --by NAME | silences | unsilence ID`: the closed loop
//! and maintenance windows from the command line, on the same store the daemon writes (SQLite in
//! WAL mode lets both work at once).

use crate::clock::rfc3339;
use crate::commands::cli::{IncidentsCommand, Output};
use crate::config::Config;
use crate::store::{IncidentRow, NewSilence, Store};
use serde_json::json;
use std::fmt::Write as _;

pub fn run(config: &Config, command: IncidentsCommand, output: Output) -> anyhow::Result<String> {
    // Reading commands never create a state directory: before the daemon's first start there
    // is simply nothing to list.
    let fresh = !config.state_dir.join("gridwatch.db").exists();
    let mut out = String::new();
    match command {
        IncidentsCommand::List { .. } | IncidentsCommand::Silences { .. } | IncidentsCommand::Export { .. } | IncidentsCommand::Show { .. } if fresh => {
            if let IncidentsCommand::Show { id } = command {
                anyhow::bail!("no incident {id}: no store yet in {} (has the daemon run with this configuration?)", config.state_dir.display());
            }
            if matches!(command, IncidentsCommand::Export { .. }) {
                out.push_str("incident,rule,sensor,severity,at,actor,action,note\n");
            } else {
                out = output.render(
                    || format!("nothing yet: no store in {} (has the daemon run with this configuration?)\n", config.state_dir.display()),
                    || json!([]),
                );
            }
            return Ok(out);
        }
        _ => {}
    }
    let store = Store::open(&config.state_dir)?;
    // On a read-only card the store is a copy in this process's memory: a step taken there
    // would say it worked and be lost (an outside tester's "accepted" left the incident open and
    // its ladder running).
    if store.is_memory_copy() && matches!(command, IncidentsCommand::Act { .. } | IncidentsCommand::Silence { .. } | IncidentsCommand::Unsilence { .. }) {
        anyhow::bail!(
            "the state directory {} is read-only (has the SD card failed?): nothing this command changes can be kept, and the running daemon would not hear of it; act from the incident's link, which the daemon takes, or once the card is writable again",
            config.state_dir.display()
        );
    }
    // Times people read, in the installation's zone; JSON and CSV keep RFC 3339 UTC.
    let local = |ms: i64| crate::local_time::labelled(ms, config.time_zone);
    // A time stamped before the box's clock was set (and not re-stamped) is unknown.
    let local_if_known = |ms: i64, known: bool| if known { local(ms) } else { crate::clock::TIME_UNKNOWN.to_string() };
    match command {
        IncidentsCommand::List { all } => {
            let rows = store.incidents(all)?;
            if output == Output::Json {
                return Ok(format!("{:#}\n", json!(rows.iter().map(incident_json).collect::<Vec<_>>())));
            }
            if rows.is_empty() {
                out.push_str(if all { "no incidents\n" } else { "no open incidents\n" });
            }
            for row in rows {
                let normal = if row.sensor_normal { " (sensor normal)" } else { "" };
                let folded = row.folded_into.map(|into| format!(" folded into #{into}")).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "#{:<5} {:<9} {:<8} rule={} sensor={} value={:.4} firings={} opened={}{normal}{folded}",
                    row.id,
                    row.state,
                    row.severity,
                    row.rule,
                    row.sensor,
                    row.last_value,
                    row.firings,
                    local_if_known(row.opened_ms, row.opened_known)
                );
            }
        }
        IncidentsCommand::Show { id } => {
            let row = store.incidents(true)?.into_iter().find(|r| r.id == id).ok_or_else(|| anyhow::anyhow!("no incident {id}"))?;
            let history = store.incident_history(id)?;
            if output == Output::Json {
                let mut value = incident_json(&row);
                value["history"] = json!(history
                    .iter()
                    .map(|e| json!({"at": known_rfc3339(e.at_ms, e.at_known), "at_ms": e.at_ms, "actor": e.actor, "action": e.action, "note": e.note}))
                    .collect::<Vec<_>>());
                return Ok(format!("{value:#}\n"));
            }
            let _ = writeln!(
                out,
                "incident #{} — {} on {}: {} (worst {}), {}{}",
                row.id,
                row.rule,
                row.sensor,
                row.severity,
                row.worst_severity,
                row.state,
                if row.sensor_normal { ", sensor normal" } else { "" }
            );
            for entry in history {
                let _ = writeln!(
                    out,
                    "  {} {:<12} {}{}",
                    local_if_known(entry.at_ms, entry.at_known),
                    entry.actor,
                    entry.action,
                    entry.note.map(|n| format!(": {n}")).unwrap_or_default()
                );
            }
        }
        IncidentsCommand::Export { since } => {
            let mut csv = csv::Writer::from_writer(Vec::new());
            csv.write_record(["incident", "rule", "sensor", "severity", "at", "actor", "action", "note"])?;
            for (incident, entry) in store.audit_trail(since.unwrap_or(i64::MIN))? {
                let id = incident.id.to_string();
                csv.write_record([
                    id.as_str(),
                    &incident.rule,
                    &incident.sensor,
                    &incident.severity,
                    &known_rfc3339(entry.at_ms, entry.at_known),
                    &entry.actor,
                    &entry.action,
                    entry.note.as_deref().unwrap_or(""),
                ])?;
            }
            out.push_str(&String::from_utf8(csv.into_inner()?)?);
        }
        IncidentsCommand::Act { id, action, by, note } => {
            let state = store.incident_action(id, action, &by, note.as_deref(), crate::clock::Clock::System.now())?;
            out = output.render(|| format!("incident #{id} is now {state}\n"), || json!({"id": id, "state": state.to_string()}));
        }
        IncidentsCommand::Silence { scope, target, duration, reason, by, include_red } => {
            let now = crate::clock::Clock::System.now();
            let expires_ms = now + i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2);
            let id = store.add_silence(&NewSilence { scope, target: target.clone(), include_red, reason, author: by, starts_ms: now, expires_ms })?;
            let red = if include_red { ", red included" } else { "; red alerts still go out" };
            out = output.render(
                || format!("silence #{id}: {scope} {target} until {}{red}\n", local(expires_ms)),
                || json!({"id": id, "scope": scope.to_string(), "target": target, "until": rfc3339(expires_ms), "include_red": include_red}),
            );
        }
        IncidentsCommand::Silences { all } => {
            let now = crate::clock::Clock::System.now();
            let mut silences = store.silences(now, all)?;
            silences.extend(config.alerts.silences.iter().filter(|s| all || s.expires_ms > now).cloned());
            if output == Output::Json {
                let list: Vec<serde_json::Value> = silences
                    .iter()
                    .map(|s| json!({"id": (s.id != 0).then_some(s.id), "from_config": s.id == 0, "scope": s.scope.to_string(), "target": s.target, "include_red": s.include_red, "reason": s.reason, "by": s.author, "until": rfc3339(s.expires_ms), "ended": s.ended_ms.map(rfc3339), "in_force": s.ended_ms.is_none() && s.expires_ms > now}))
                    .collect();
                return Ok(format!("{:#}\n", json!(list)));
            }
            if silences.is_empty() {
                out.push_str("no silences in force\n");
            }
            for s in silences {
                let state = match s.ended_ms {
                    Some(ended) => format!("ended {}", local(ended)),
                    None if s.expires_ms <= now => "expired".to_string(),
                    None => format!("until {}", local(s.expires_ms)),
                };
                let red = if s.include_red { " (red included)" } else { "" };
                let id = if s.id == 0 { "config".to_string() } else { format!("#{}", s.id) };
                let _ = writeln!(out, "{id:<6} {} {} {state}{red} by {}: {}", s.scope, s.target, s.author, s.reason);
            }
        }
        IncidentsCommand::Unsilence { id } => {
            if store.end_silence(id, crate::clock::Clock::System.now())? {
                out = output.render(|| format!("silence #{id} ended\n"), || json!({"id": id, "ended": true}));
            } else {
                anyhow::bail!("no silence #{id} in force");
            }
        }
    }
    Ok(out)
}

/// RFC 3339, or "time unknown" for a time stamped before the box's clock was set.
fn known_rfc3339(ms: i64, known: bool) -> String {
    if known {
        rfc3339(ms)
    } else {
        crate::clock::TIME_UNKNOWN.to_string()
    }
}

/// One incident for scripts: the stored row with readable times.
fn incident_json(row: &IncidentRow) -> serde_json::Value {
    json!({
        "id": row.id, "rule": row.rule, "sensor": row.sensor, "severity": row.severity, "worst_severity": row.worst_severity,
        "state": row.state, "sensor_normal": row.sensor_normal, "firings": row.firings, "last_value": row.last_value,
        "opened": known_rfc3339(row.opened_ms, row.opened_known), "opened_ms": row.opened_ms, "updated": rfc3339(row.updated_ms), "updated_ms": row.updated_ms,
        "folded_into": row.folded_into,
    })
}

/// `gridwatch incidents …` on the configuration at `config`.
pub fn command(config: &std::path::Path, command: IncidentsCommand, output: Output) -> std::process::ExitCode {
    match super::load_config(config) {
        Ok(config) => super::print_or_fail(run(&config, command, output)),
        Err(code) => code,
    }
}
