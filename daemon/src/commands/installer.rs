//! `gridwatch status | watch | calibrate`: the installer's commands. They talk to the running
//! daemon over its local HTTP endpoint (`[http] listen`), never by peeking at its files.

use crate::commands::cli::Output;
use crate::config::Config;
use crate::web::installer_api::{CalibrateAnswer, CalibrateRequest, SensorView, StatusView};
use anyhow::bail;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// The daemon's HTTP address from the configuration (a wildcard listen means this box).
fn endpoint(config: &Config) -> anyhow::Result<String> {
    let Some(listen) = config.http_listen else {
        bail!("the configuration has no [http] listen: the installer commands talk to the daemon over it");
    };
    let addr = if listen.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], listen.port())) } else { listen };
    Ok(format!("http://{addr}"))
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?)
}

/// The daemon did not answer on its HTTP endpoint (exit code 69, EX_UNAVAILABLE).
#[derive(Debug, thiserror::Error)]
#[error("is the daemon running? no answer from {url}: {reason}")]
pub struct Unreachable {
    pub url: String,
    pub reason: String,
}

async fn get<T: serde::de::DeserializeOwned>(config: &Config, path: &str) -> anyhow::Result<T> {
    let url = format!("{}{path}", endpoint(config)?);
    let response = client()?.get(&url).send().await.map_err(|error| Unreachable { url: url.clone(), reason: error.to_string() })?;
    if !response.status().is_success() {
        bail!("{url} answered {}", response.status());
    }
    Ok(response.json().await?)
}

/// `gridwatch status`: what runs now, and whether it is degraded (exit code 1).
pub async fn status(config: &Config, output: Output) -> anyhow::Result<(String, bool)> {
    let status: StatusView = get(config, "/api/status").await?;
    let degraded = !status.degraded.is_empty() || !status.mqtt_connected;
    let json = || serde_json::to_value(&status).unwrap_or_default();
    Ok((output.render(|| status_text(&status), json), degraded))
}

fn status_text(status: &StatusView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gridwatch {} — {}",
        status.version,
        if status.degraded.is_empty() { "ready".to_string() } else { format!("DEGRADED: {}", status.degraded.join("; ")) }
    );
    let _ = writeln!(out, "MQTT: {}", if status.mqtt_connected { "connected" } else { "NOT connected" });
    let _ = writeln!(out, "sensors: {} reporting of {}; {} readings evaluated", status.sensors_reporting, status.sensors, status.samples_accepted);
    if !status.silent.is_empty() {
        let _ = writeln!(out, "SILENT (more than 3 report intervals): {}", status.silent.join(", "));
    }
    let open: Vec<String> = status.open_incidents.iter().map(|(severity, n)| format!("{n} {severity}")).collect();
    let _ = writeln!(out, "open incidents: {}", if open.is_empty() { "none".to_string() } else { open.join(", ") });
    let _ = writeln!(out, "telemetry spool: {} readings waiting", status.spool_points);
    out
}

/// The table of `gridwatch watch`, for the sensors picked (all when `ids` is empty).
pub async fn watch_table(config: &Config, ids: &[String], building: Option<&str>, output: Output) -> anyhow::Result<String> {
    let sensors: Vec<SensorView> = get(config, "/api/sensors").await?;
    let picked: Vec<&SensorView> =
        sensors.iter().filter(|s| ids.is_empty() || ids.contains(&s.id)).filter(|s| building.is_none() || s.building.as_deref() == building).collect();
    if picked.is_empty() {
        bail!("no such sensor in the daemon's inventory");
    }
    if output == Output::Json {
        return Ok(format!("{:#}\n", serde_json::to_value(&picked)?));
    }
    let mut out = format!("{:<14} {:<6} {:<14} {:>8}  {:<24} {}\n", "sensor", "kind", "site/building", "age", "status", "last reading");
    for s in picked {
        let place = match &s.building {
            Some(b) => format!("{}/{b}", s.site),
            None => s.site.clone(),
        };
        let age = s.age_secs.map_or("never".to_string(), |a| format!("{a} s"));
        let fields: Vec<String> = s.fields.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
        let status = if s.incidents.is_empty() {
            "ok".to_string()
        } else {
            s.incidents.iter().map(|(rule, severity, state)| format!("{severity} {rule} ({state})")).collect::<Vec<_>>().join("; ")
        };
        let _ = writeln!(out, "{:<14} {:<6} {:<14} {:>8}  {:<24} {}", s.id, s.kind, place, age, status, fields.join(" "));
    }
    Ok(out)
}

/// `gridwatch calibrate`: the recent median becomes the box's installation baseline.
pub async fn calibrate(config: &Config, sensor: &str, window: Duration, by: &str, even_in_alarm: bool) -> anyhow::Result<String> {
    let url = format!("{}/api/calibrate", endpoint(config)?);
    let request = CalibrateRequest { sensor: sensor.to_string(), window_secs: window.as_secs(), by: by.to_string(), even_in_alarm };
    let response = client()?.post(&url).json(&request).send().await.map_err(|error| Unreachable { url: url.clone(), reason: error.to_string() })?;
    if !response.status().is_success() {
        bail!("{}", response.text().await.unwrap_or_default());
    }
    let answer: CalibrateAnswer = response.json().await?;
    let mut out = format!(
        "{} calibrated by {by} at {} from the median of {} readings:\n",
        answer.sensor,
        crate::local_time::labelled(crate::clock::Clock::System.now(), config.time_zone),
        answer.readings
    );
    for (field, old, new) in answer.fields {
        // The angles in degrees; a temperature (its daily level, which compensation measures from) in °C.
        let unit = if field == "x" || field == "y" { "°" } else { " °C" };
        let old = old.map_or("none (learned)".to_string(), |v| format!("{v:.4}{unit}"));
        let _ = writeln!(out, "  {field}: {old} -> {new:.4}{unit}");
    }
    Ok(out)
}

/// `status` found the daemon degraded: exit code 1 after printing the status.
#[derive(Debug, thiserror::Error)]
#[error("the daemon is degraded")]
struct Degraded;

/// `gridwatch status`: prints the status; exit 1 when degraded, 69 when the daemon is not there.
pub fn status_command(config: &Path, output: Output) -> ExitCode {
    match super::load_config(config) {
        Ok(config) => super::block_on(async move {
            let (text, degraded) = status(&config, output).await?;
            print!("{text}");
            anyhow::ensure!(!degraded, Degraded);
            Ok(())
        }),
        Err(code) => code,
    }
}

/// `gridwatch watch`: redraws the table every 2 s until Ctrl-C (once with `--once` or JSON).
pub fn watch_command(config: &Path, sensors: &[String], building: Option<&str>, once: bool, output: Output) -> ExitCode {
    match super::load_config(config) {
        Ok(config) => super::block_on(async move {
            loop {
                let table = watch_table(&config, sensors, building, output).await?;
                if once || output == Output::Json {
                    print!("{table}");
                    return Ok(());
                }
                // Clear the screen and redraw in place.
                print!("\x1b[H\x1b[2J{table}\n(every 2 s; Ctrl-C to stop)\n");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }),
        Err(code) => code,
    }
}

/// `gridwatch calibrate`: asks the daemon to zero `sensor` and prints its answer.
pub fn calibrate_command(config: &Path, sensor: &str, window: Duration, by: &str, even_in_alarm: bool) -> ExitCode {
    match super::load_config(config) {
        Ok(config) => super::block_on(async move {
            print!("{}", calibrate(&config, sensor, window, by, even_in_alarm).await?);
            Ok(())
        }),
        Err(code) => code,
    }
}
