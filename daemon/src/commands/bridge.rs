//! `gridwatch bridge --config FILE`: only the serial sources, publishing every reading to MQTT
//! in the default convention (`gridwatch/<site>/<sensor>/telemetry`, JSON with `ts` and `seq`)
//! for a box whose rules run elsewhere. Publishes with QoS 1 on its own connection
//! (`<client_id>-bridge`); the per-sensor `seq` lets the receiving daemon count gaps.

use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::sample::Sample;
use crate::sources::mqtt::topics::default_topic;
use crate::sources::serial::SerialOutputs;
use rumqttc::{AsyncClient, QoS};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The JSON payload of the default convention for a reading.
pub fn payload(sample: &Sample, seq: u64) -> String {
    let mut object = serde_json::Map::new();
    for (name, value) in &sample.fields {
        object.insert(name.clone(), serde_json::json!(value));
    }
    object.insert("ts".into(), sample.ts.into());
    object.insert("seq".into(), seq.into());
    serde_json::Value::Object(object).to_string()
}

/// Runs until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    if config.serial.is_empty() {
        anyhow::bail!("the configuration has no [[serial]] port to bridge");
    }
    crate::clock::use_sync_source(config.clock_synchronized.clone());
    let metrics = Arc::new(Metrics::new());
    let (client, mut eventloop) = AsyncClient::new(crate::sources::mqtt::options(&config.mqtt, "bridge"), 256);
    let connection = tokio::spawn(async move {
        loop {
            if let Err(error) = eventloop.poll().await {
                tracing::warn!(error = %error, "bridge MQTT connection failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    let (samples, mut readings) = mpsc::channel(1024);
    let outputs = SerialOutputs {
        samples,
        spool: None,
        bus: None,
        report_rates: None,
        sensors: crate::config::SensorIndex::new(config.sensors.clone()),
        clock: Clock::System,
        metrics,
    };
    let ports: Vec<_> =
        config.serial.iter().map(|port| tokio::spawn(crate::sources::serial::run_port(port.clone(), outputs.clone(), shutdown.clone()))).collect();
    drop(outputs);
    tracing::info!(ports = ports.len(), "bridging serial readings to MQTT");
    let mut seqs: HashMap<usize, u64> = HashMap::new();
    while let Some(sample) = readings.recv().await {
        let Some(sensor) = config.sensors.get(sample.sensor) else { continue };
        let seq = seqs.entry(sample.sensor).and_modify(|s| *s += 1).or_insert(0);
        if let Err(error) = client.publish(default_topic(&sensor.place.site, &sensor.id), QoS::AtLeastOnce, false, payload(&sample, *seq)).await {
            tracing::error!(error = %error, "reading not published");
        }
    }
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    connection.abort();
    Ok(())
}

/// `gridwatch bridge` on the configuration at `config`, until SIGTERM.
pub fn command(config: &std::path::Path) -> std::process::ExitCode {
    match super::load_config(config) {
        Ok(config) => super::block_on(async move { run(config, super::cancelled_on_stop_signal()).await }),
        Err(code) => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_follows_the_default_convention() {
        let sample = Sample {
            sensor: 0,
            ts: 1_795_392_000_000,
            seq: None,
            fields: vec![("x".into(), 0.12), ("y".into(), -0.03)],
            clock_untrusted: false,
            own_time: true,
            refused_stamp: None,
            hub_seq: None,
        };
        let decoded = crate::sources::mqtt::payload::decode(
            payload(&sample, 7).as_bytes(),
            &crate::sources::mqtt::payload::Limits { max_bytes: 4096, max_fields: 32, max_field_name_bytes: 64 },
            &Default::default(),
        )
        .unwrap();
        assert_eq!(decoded.fields, sample.fields);
        assert_eq!((decoded.ts, decoded.seq), (Some(sample.ts), Some(7)));
    }
}
