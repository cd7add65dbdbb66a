//! `gridwatch selftest`: the installer's last check before leaving. Checks the configuration,
//! rules and roster, that the daemon answers, the MQTT broker (a real CONNECT), InfluxDB's
//! health, that each serial port exists, and sends a clearly marked test notification through
//! every configured channel. Prints one line per check; fails when any check fails.

use crate::alert::Alert;
use crate::commands::cli::Output;
use crate::config::{BrokerConfig, Config};
use crate::metrics::Metrics;
use crate::rule_files;
use crate::sinks::console::ConsoleSink;
use crate::sinks::dingtalk::DingTalkSink;
use crate::sinks::mqtt::MqttAlertSink;
use crate::sinks::webhook::WebhookSink;
use crate::sinks::wecom::WeComSink;
use crate::sinks::Sink;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

fn check(name: impl Into<String>, result: anyhow::Result<String>) -> Check {
    match result {
        Ok(detail) => Check { name: name.into(), passed: true, detail },
        Err(error) => Check { name: name.into(), passed: false, detail: format!("{error:#}") },
    }
}

/// Runs every check; `rule_count` comes from loading the rules (done by the caller).
pub async fn run(config: &Config, rule_count: usize) -> Vec<Check> {
    let mut checks = vec![
        Check { name: "configuration".into(), passed: true, detail: format!("{} sensors, {} serial ports", config.sensors.len(), config.serial.len()) },
        Check { name: "rules".into(), passed: true, detail: format!("{rule_count} rules") },
        Check {
            name: "roster".into(),
            passed: true,
            detail: format!("{} members, {} policies", config.dispatch.roster.members.len(), config.dispatch.policies.len()),
        },
    ];
    checks.push(check("daemon", daemon(config).await));
    checks.push(check("MQTT broker", broker(config).await));
    if let Some(influx) = &config.influxdb {
        checks.push(check("InfluxDB", influx_health(&influx.url).await));
    }
    let frames = serial_frames(config).await;
    for port in &config.serial {
        let result = serial_port(&port.port).and_then(|present| answering(port, frames.as_deref()).map(|how| format!("{present}; {how}")));
        checks.push(check(format!("serial {}", port.port.display()), result));
    }
    for (name, result) in channels(config).await {
        checks.push(check(format!("channel {name}"), result));
    }
    if let Some(pin) = config.gpio.as_ref().and_then(|g| g.siren_pin) {
        checks.push(check("siren", siren(pin).await));
    }
    checks
}

/// Three short blasts on the siren pin (the daemon keeps it low while no red incident sounds).
async fn siren(pin: u8) -> anyhow::Result<String> {
    let mut output = crate::gpio::open_output(pin)?;
    crate::sinks::siren::test_pattern(output.as_mut()).await;
    Ok(format!("GPIO {pin}: three short blasts — did you hear them?"))
}

/// The checks as a pass/fail list.
pub fn report(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let _ = writeln!(out, "{} {:<28} {}", if c.passed { "PASS" } else { "FAIL" }, c.name, c.detail);
    }
    let failed = checks.iter().filter(|c| !c.passed).count();
    let _ = writeln!(out, "{}", if failed == 0 { "all checks passed".to_string() } else { format!("{failed} check(s) failed") });
    out
}

async fn daemon(config: &Config) -> anyhow::Result<String> {
    let Some(listen) = config.http_listen else { anyhow::bail!("no [http] listen: cannot ask the daemon") };
    let url = format!("http://127.0.0.1:{}/healthz", listen.port());
    let response =
        reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?.get(&url).send().await.map_err(|e| anyhow::anyhow!("not running? {url}: {e}"))?;
    let body: serde_json::Value = response.json().await?;
    match body["status"].as_str() {
        Some("ready") => Ok("running, ready".into()),
        _ => anyhow::bail!("running but degraded: {}", body["reasons"]),
    }
}

async fn broker(config: &Config) -> anyhow::Result<String> {
    let mut mqtt = config.mqtt.clone();
    mqtt.client_id = format!("{}-selftest", mqtt.client_id);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(crate::sources::mqtt::options(&mqtt, "check"), 10);
    let handshake = async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(anyhow::anyhow!("{error}")),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), handshake).await.map_err(|_| anyhow::anyhow!("no answer within 5 s"))??;
    let _ = client.try_disconnect();
    Ok(match &config.mqtt.broker {
        BrokerConfig::Embedded { listen } => format!("embedded broker on {listen} answers"),
        BrokerConfig::External { host, port } => format!("{host}:{port} accepts our connection{}", if config.mqtt.tls.is_some() { " (TLS)" } else { "" }),
    })
}

async fn influx_health(url: &reqwest::Url) -> anyhow::Result<String> {
    let health = url.join("health")?;
    let response = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?.get(health.clone()).send().await?;
    anyhow::ensure!(response.status().is_success(), "{} answered {}", crate::redact::redacted(&health), response.status());
    Ok(format!("{} healthy", crate::redact::redacted(url)))
}

fn serial_port(path: &std::path::Path) -> anyhow::Result<String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{e}: is the adapter plugged in?"))?;
    anyhow::ensure!(meta.file_type().is_char_device(), "is not a serial device");
    Ok("present".into())
}

/// The daemon's serial frame counters (its `/metrics` text), when it answers.
async fn serial_frames(config: &Config) -> Option<String> {
    let listen = config.http_listen?;
    let url = format!("http://127.0.0.1:{}/metrics", listen.port());
    let response = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().ok()?.get(&url).send().await.ok()?;
    response.text().await.ok()
}

/// Whether the running daemon has heard the devices on a polled port: a port where nothing has
/// ever answered is named with the likely cause (baud rate or address), garbled answers with
/// theirs (baud rate, wiring, profile).
fn answering(port: &crate::config::SerialConfig, metrics: Option<&str>) -> anyhow::Result<String> {
    if matches!(port.protocol, crate::config::SerialProtocol::Line | crate::config::SerialProtocol::Witmotion) {
        return Ok("streams on its own".into());
    }
    let Some(metrics) = metrics else { return Ok("the daemon does not answer: devices not checked".into()) };
    let label = port.port.display().to_string();
    let count = |result: &str| -> f64 {
        let key = format!("gridwatch_serial_frames_total{{port=\"{label}\",result=\"{result}\"}} ");
        metrics.lines().find_map(|line| line.strip_prefix(&key)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
    };
    let (good, bad, silent) = (count("good"), count("bad"), count("no_answer"));
    match (good > 0.0, bad > 0.0, silent > 0.0) {
        (true, _, _) => Ok(format!("{good} good answers since the daemon started ({bad} garbled, {silent} unanswered)")),
        (false, true, _) => anyhow::bail!("{bad} answers since start, all garbled: a wrong baud rate ({} here), swapped A/B wires or a profile that does not match the device", port.baud),
        (false, false, true) => anyhow::bail!(
            "no device has answered since the daemon started ({silent} questions unanswered): a wrong baud rate ({} here) or slave address is the likely cause; stop the daemon and run `gridwatch probe --port {}`",
            port.baud,
            port.port.display()
        ),
        (false, false, false) => Ok("not asked yet".into()),
    }
}

/// A notification nobody can mistake for an alarm.
fn test_alert() -> Alert {
    let mut alert = crate::last_good::fallback_alert("this is a test of the alert channel — no action needed", crate::clock::Clock::System.now());
    alert.rule = "gridwatch-selftest".into();
    alert.title = "TEST — gridwatch selftest, please ignore".into();
    alert.severity = gridwatch_rules::Severity::Notice;
    alert.colour = "blue".into();
    alert.messages = [
        ("en".to_string(), "TEST — gridwatch selftest: this channel works. No action needed.".to_string()),
        ("zh".to_string(), "【测试】gridwatch 自检：本通道正常，无需处理。".to_string()),
    ]
    .into_iter()
    .collect();
    alert
}

async fn deliver(mut sink: impl Sink) -> anyhow::Result<String> {
    let name = sink.name();
    sink.deliver(&test_alert()).await?;
    sink.finish().await;
    Ok(format!("test notification delivered via {name}"))
}

async fn channels(config: &Config) -> Vec<(String, anyhow::Result<String>)> {
    let mut results = Vec::new();
    if config.alerts.console {
        results.push(("console".to_string(), deliver(ConsoleSink).await));
    }
    for hook in &config.alerts.webhooks {
        let once = crate::config::WebhookConfig { max_attempts: 1, ..hook.clone() };
        let result = match WebhookSink::new(&once, Arc::new(Metrics::new())) {
            Ok(sink) => deliver(sink).await,
            Err(error) => Err(error),
        };
        results.push((hook.name.clone(), result));
    }
    for robot in &config.alerts.wecom {
        results.push((
            robot.name.clone(),
            match WeComSink::new(robot.clone()) {
                Ok(sink) => deliver(sink).await,
                Err(error) => Err(error),
            },
        ));
    }
    for robot in &config.alerts.dingtalk {
        results.push((
            robot.name.clone(),
            match DingTalkSink::new(robot.clone()) {
                Ok(sink) => deliver(sink).await,
                Err(error) => Err(error),
            },
        ));
    }
    for gateway in &config.alerts.sms {
        results.push((gateway.name.clone(), Ok("configured; no test SMS is sent (it would reach people's phones)".to_string())));
    }
    if let Some(prefix) = &config.alerts.mqtt_topic_prefix {
        let mut mqtt = config.mqtt.clone();
        mqtt.client_id = format!("{}-selftest", mqtt.client_id);
        results.push(("mqtt".to_string(), deliver(MqttAlertSink::connect(&mqtt, prefix.clone())).await));
    }
    results
}

/// `gridwatch selftest` on the configuration at `config`: exit 1 when a check fails.
pub fn command(config: &std::path::Path, output: Output) -> ExitCode {
    let loaded = match super::load_config(config) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    match rule_files::load(&loaded.rules.paths, loaded.rules.builtin_packs) {
        Ok((rules, _)) => super::block_on(async move {
            let checks = run(&loaded, rules.rules.len()).await;
            print!("{}", output.render(|| report(&checks), || serde_json::to_value(&checks).unwrap_or_default()));
            anyhow::ensure!(checks.iter().all(|c| c.passed), "selftest failed");
            Ok(())
        }),
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(super::EX_CONFIG)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SerialConfig, SerialProtocol};

    fn bus() -> SerialConfig {
        SerialConfig {
            port: "/dev/ttyUSB0".into(),
            baud: 9600,
            protocol: SerialProtocol::Modbus,
            timeout: Duration::from_millis(500),
            min_interval: Duration::ZERO,
            devices: Vec::new(),
        }
    }

    fn frames(good: u32, bad: u32, silent: u32) -> String {
        format!(
            "# TYPE gridwatch_serial_frames_total counter\ngridwatch_serial_frames_total{{port=\"/dev/ttyUSB0\",result=\"good\"}} {good}\ngridwatch_serial_frames_total{{port=\"/dev/ttyUSB0\",result=\"bad\"}} {bad}\ngridwatch_serial_frames_total{{port=\"/dev/ttyUSB0\",result=\"no_answer\"}} {silent}\n"
        )
    }

    #[test]
    fn a_bus_where_nothing_ever_answered_names_baud_rate_and_address() {
        let error = answering(&bus(), Some(&frames(0, 0, 12))).unwrap_err().to_string();
        assert!(error.contains("wrong baud rate (9600 here) or slave address") && error.contains("gridwatch probe --port /dev/ttyUSB0"), "{error}");
        let garbled = answering(&bus(), Some(&frames(0, 5, 3))).unwrap_err().to_string();
        assert!(garbled.contains("all garbled") && garbled.contains("A/B"), "{garbled}");
        assert!(answering(&bus(), Some(&frames(40, 1, 2))).unwrap().starts_with("40 good answers"));
        assert!(answering(&bus(), None).is_ok(), "no daemon: nothing to judge the bus by");
    }
}
