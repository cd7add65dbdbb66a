//! Rules at run time: building the engine for the inventory (restoring saved state, applying
//! installation baselines) and reloading rule files without a restart — on SIGHUP
//! (`systemctl reload`) and when a rule file changes on disk. The roster file (`[dispatch]
//! roster`) is reloaded the same ways: a worker who joins, leaves or changes phone is named on
//! the next alarm, not after the next restart.
//!
//! A reload is all-or-nothing: the new files are read and checked first; if any is bad, the
//! old rules keep running and the errors are logged with file:line:column. State of rules that
//! did not change carries over (see `gridwatch_rules::snapshot`). Each attempt is counted
//! (`gridwatch_reloads_total{result}`), and `gridwatch_reload_success` says whether the last
//! one was refused, so a monitoring system sees a reload that did not take.

use crate::config::{Config, SensorConfig};
use crate::metrics::Metrics;
use crate::rule_files;
use crate::store::Calibration;
use gridwatch_rules::snapshot::Restored;
use gridwatch_rules::{Engine, RuleSet, SubjectId};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often rule files are checked for changes.
const POLL: Duration = Duration::from_secs(2);

/// Builds the engine for the inventory: takes over `previous` state where rules are unchanged,
/// then applies the configured installation baselines (the config wins over saved state).
pub fn build_engine(
    rules: RuleSet,
    sensors: &[SensorConfig],
    restore: impl FnOnce(&mut Engine) -> Restored,
    calibrations: &[Calibration],
) -> (Engine, Restored) {
    let mut engine = Engine::new(rules, &subjects(sensors));
    let restored = restore(&mut engine);
    for (index, sensor) in sensors.iter().enumerate() {
        for (field, value) in &sensor.baseline {
            engine.set_baseline(SubjectId(index), field, *value);
        }
    }
    // `gridwatch calibrate` is newer than the inventory's baseline.
    for calibration in calibrations {
        if let Some(index) = sensors.iter().position(|s| *s.id == *calibration.sensor) {
            engine.set_baseline(SubjectId(index), &calibration.field, calibration.value);
        }
    }
    (engine, restored)
}

/// What identifies the current state of the rule files on disk.
fn file_stamps(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let files = rule_files::expand(paths).unwrap_or_default();
    files
        .into_iter()
        .map(|file| {
            let meta = std::fs::metadata(&file).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (file, modified, len)
        })
        .collect()
}

/// The configuration file the daemon started from and the inventory it runs, to tell on SIGHUP
/// what in the file changed that a reload cannot apply; and the roster file with the roster in
/// force, which a reload replaces (not in a district, whose hub puts the roster).
#[derive(Debug)]
pub struct Running {
    pub file: PathBuf,
    pub sensors: std::sync::Arc<[SensorConfig]>,
    pub roster: Option<(PathBuf, crate::dispatch::InForce)>,
    /// The last good copy, which keeps each roster put in force (a boot on a broken roster
    /// otherwise brought back the one of the last start, and paged a worker taken off it since).
    pub last_good: Option<crate::last_good::LastGood>,
}

/// Puts the roster of the configuration as it is now in force, when it reads without error;
/// otherwise the roster in force stays and the log says why (file:line:column).
fn reload_roster(running: &Running, roster: &crate::dispatch::InForce, reason: &str) {
    match Config::load(&running.file) {
        Ok(now) => {
            if let Some(changes) = needs_restart(&running.sensors, &now.sensors) {
                tracing::warn!(file = %running.file.display(), changes = %changes, "the configuration changed in ways a reload does not apply: restart the daemon (systemctl restart gridwatch)");
            }
            let members = now.dispatch.roster.members.len();
            let text = now.roster_file.as_ref().and_then(|file| std::fs::read_to_string(file).ok());
            roster.replace(now.dispatch);
            tracing::info!(reason, members, "roster reloaded");
            if let (Some(last_good), Some(text)) = (&running.last_good, text) {
                if let Err(error) = last_good.keep_roster(text) {
                    tracing::warn!(error = %format!("{error:#}"), "cannot keep the reloaded roster in the last good copy; a boot on a broken roster would go back to the one before");
                }
            }
        }
        Err(error) => {
            tracing::error!(reason, error = %error, "the roster or the configuration is invalid now; the roster and configuration in force stay (fix them before the next restart)")
        }
    }
}

/// What changed in the configuration file since start that only a restart applies, in words;
/// `None` when the inventory is the same.
pub fn needs_restart(running: &[SensorConfig], now: &[SensorConfig]) -> Option<String> {
    let ids = |list: &[SensorConfig]| list.iter().map(|s| s.id.to_string()).collect::<std::collections::BTreeSet<_>>();
    let (before, after) = (ids(running), ids(now));
    let added: Vec<&String> = after.difference(&before).collect();
    let removed: Vec<&String> = before.difference(&after).collect();
    let changed: Vec<&str> = now.iter().filter(|s| running.iter().any(|r| r.id == s.id && r != *s)).map(|s| &*s.id).collect();
    let mut parts = Vec::new();
    let list = |ids: Vec<&str>| ids.join(", ");
    if !added.is_empty() {
        parts.push(format!("new sensors {}", list(added.iter().map(|s| s.as_str()).collect())));
    }
    if !removed.is_empty() {
        parts.push(format!("sensors removed {}", list(removed.iter().map(|s| s.as_str()).collect())));
    }
    if !changed.is_empty() {
        parts.push(format!("sensors changed {}", list(changed)));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// On SIGHUP: tells in the log what in the configuration file a reload does not apply.
fn check_config_file(running: &Running) {
    match Config::load(&running.file) {
        Ok(now) => {
            if let Some(changes) = needs_restart(&running.sensors, &now.sensors) {
                tracing::warn!(file = %running.file.display(), changes = %changes, "the configuration changed in ways a reload does not apply: restart the daemon (systemctl restart gridwatch)");
            }
        }
        Err(error) => {
            tracing::error!(file = %running.file.display(), error = %error, "the configuration file is invalid now; the running configuration stays (fix it before the next restart)")
        }
    }
}

/// Watches for reload requests until `shutdown`; sends each new valid rule set to `updates`.
/// Started once the rules are loaded, which counts as the last good load.
pub async fn watch(
    paths: Vec<PathBuf>,
    builtin: bool,
    running: Option<Running>,
    updates: mpsc::Sender<RuleSet>,
    metrics: Arc<Metrics>,
    clock: crate::clock::Clock,
    shutdown: CancellationToken,
) {
    metrics.rules_loaded_at_start(clock.now());
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(error = %error, "cannot listen for SIGHUP; rules reload only when files change");
            None
        }
    };
    let mut stamps = file_stamps(&paths);
    let roster_file = running.as_ref().and_then(|r| r.roster.as_ref()).map(|(file, _)| file.clone());
    let mut roster_stamps = file_stamps(roster_file.as_slice());
    // How many rules run: a reload that would leave none is refused.
    let mut running_rules = rule_files::load(&paths, builtin).map_or(0, |(rules, _)| rules.rules.len());
    // A rule file gone from its directory is looked at once more before its rules go: moved
    // away and back (`rsync --delete`, a `git checkout`), it was a reload to no rules and back.
    let mut gone_once = false;
    let mut poll = tokio::time::interval(POLL);
    loop {
        let reason = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(()) = async { match hangup.as_mut() { Some(signal) => signal.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = poll.tick() => {
                let roster_now = file_stamps(roster_file.as_slice());
                if roster_now != roster_stamps {
                    roster_stamps = roster_now;
                    if let Some((running, (_, roster))) = running.as_ref().and_then(|r| Some((r, r.roster.as_ref()?))) {
                        reload_roster(running, roster, "roster file changed");
                    }
                }
                let now = file_stamps(&paths);
                if now == stamps {
                    gone_once = false;
                    continue;
                }
                if now.len() < stamps.len() && !gone_once {
                    gone_once = true;
                    continue;
                }
                gone_once = false;
                stamps = now;
                "rule files changed"
            }
        };
        if let (Some(running), "SIGHUP") = (&running, reason) {
            // With a roster to reload, its reload reads the configuration and says what is wrong.
            match &running.roster {
                Some((_, roster)) => reload_roster(running, roster, reason),
                None => check_config_file(running),
            }
        }
        match rule_files::load(&paths, builtin) {
            Ok((rules, files)) if rules.rules.is_empty() && running_rules > 0 => {
                tracing::error!(
                    reason,
                    files,
                    running = running_rules,
                    "the new rule set has no rule; the running rules stay (an emptied rule directory is taken for files being moved: restart the daemon to run without rules)"
                );
                metrics.record_reload(false, clock.now());
            }
            Ok((rules, files)) => {
                running_rules = rules.rules.len();
                tracing::info!(reason, rules = rules.rules.len(), files, "rules checked; reloading");
                if updates.send(rules).await.is_err() {
                    return;
                }
                metrics.record_reload(true, clock.now());
            }
            Err(error) => {
                tracing::error!(reason, error = %error, "new rules are invalid; the old rules keep running");
                metrics.record_reload(false, clock.now());
            }
        }
    }
}

/// The engine's view of the inventory.
pub fn subjects(sensors: &[SensorConfig]) -> Vec<gridwatch_rules::Subject> {
    sensors
        .iter()
        .map(|s| gridwatch_rules::Subject {
            id: s.id.clone(),
            kind: s.kind,
            site: s.place.site.clone(),
            building: s.place.building.clone(),
            grid: s.place.grid.clone(),
            tags: s.rule_tags(),
            interval_ms: s.interval.as_millis() as i64,
        })
        .collect()
}

/// Rules of the operator's own files that no sensor of this inventory falls under, or that name
/// a sensor, site, building or grid it does not have, as "rules.d/tilt.toml:12: rule `x` matches
/// no sensor of this configuration: no sensor `house-7`": a typo in a name leaves a rule (or one
/// box of its list) unwatched, and nothing else would say so. Warnings, not errors: one rule
/// file may serve several boxes. The shipped packs are left out (a box without water probes
/// runs the water packs idle).
pub fn rule_scope_warnings(rules: &RuleSet, sensors: &[SensorConfig]) -> Vec<String> {
    let subjects = subjects(sensors);
    let unknown = |listed: &[String], known: &dyn Fn(&gridwatch_rules::Subject) -> Option<String>, what: &str| {
        listed
            .iter()
            .filter(|name| !subjects.iter().any(|s| known(s).as_deref() == Some(name.as_str())))
            .map(|name| format!("no {what} `{name}`"))
            .collect::<Vec<_>>()
    };
    rules
        .rules
        .iter()
        .filter(|rule| !rule.origin.file.starts_with("builtin:"))
        .filter_map(|rule| {
            let scope = &rule.scope;
            let mut why = unknown(&scope.sensors, &|s| Some(s.id.to_string()), "sensor");
            why.extend(unknown(&scope.sites, &|s| Some(s.site.to_string()), "site"));
            why.extend(unknown(&scope.buildings, &|s| s.building.as_ref().map(|b| b.to_string()), "building"));
            why.extend(unknown(&scope.grids, &|s| s.grid.as_ref().map(|g| g.to_string()), "grid"));
            let matches_some = subjects.iter().any(|subject| rule.scope.matches(subject));
            let (what, why) = match (matches_some, why.is_empty()) {
                (true, true) => return None,
                (true, false) => ("names what this configuration does not have", why.join(", ")),
                (false, true) => ("matches no sensor of this configuration", "no sensor has all it asks for (kind, place and tags together)".to_string()),
                (false, false) => ("matches no sensor of this configuration", why.join(", ")),
            };
            Some(format!("{}:{}: rule `{}` {what}: {why}", rule.origin.file, rule.origin.line, rule.id))
        })
        .collect()
}
