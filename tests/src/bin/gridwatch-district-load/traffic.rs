//! The simulated sensors of every community: one MQTT connection per box's broker, publishing
//! QoS 1 readings of its water probes round-robin at the box's share of the total rate, each
//! payload carrying its send time as `ts` (the time of the alert event it may cause, from which
//! the box → PostgreSQL latency is measured). A share of each box's sensors (the "alarming"
//! ones) flip a `marker` field at a steady rate: each flip fires or clears the marker rule, one
//! alert event. Each reading also carries its sensor's sequence number as the field `n`, the
//! value the failure scenarios count at the district's InfluxDB (every sensor's `n` from 0 up,
//! each exactly once).

use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one box's publisher is to send.
#[derive(Debug, Clone)]
pub struct Plan {
    pub port: u16,
    pub sensors: usize,
    /// Readings per second to this box.
    pub rate: f64,
    pub seconds: u64,
    /// Sensors `p0` … `p<alarming - 1>` are the ones that flip their marker.
    pub alarming: usize,
    /// Marker flips (alert events) per second at this box.
    pub alerts_per_sec: f64,
    /// Set by a failure scenario when its faults are done: the publisher stops early.
    pub stop: Arc<AtomicBool>,
}

/// What one box's publisher sent.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    /// Readings published per sensor (`p<i>` sent `n` = 0 … `per_sensor[i] - 1`).
    pub per_sensor: Vec<u64>,
    pub published: u64,
    /// Readings the broker acknowledged (PUBACK).
    pub acked: u64,
    /// Marker flips, each of which must become one alert event at the box.
    pub flips: u64,
}

/// Publishes `plan` to one box's broker; returns when every reading is sent and acknowledged
/// (or 30 s after the last was sent).
pub async fn publish(name: String, plan: Plan) -> anyhow::Result<Sent> {
    let mut options = MqttOptions::new(format!("district-load-{name}-{}", std::process::id()), "127.0.0.1", plan.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(200);
    let (client, mut eventloop) = AsyncClient::new(options, 10_000);
    let acked = Arc::new(AtomicU64::new(0));
    let closing = Arc::new(AtomicBool::new(false));
    let poller = {
        let (acked, closing, name) = (acked.clone(), closing.clone(), name.clone());
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        if !closing.load(Ordering::Relaxed) {
                            eprintln!("publisher of {name}: {error}");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };
    let topics: Vec<String> = (0..plan.sensors).map(|i| format!("gridwatch/{}/p{i}/telemetry", super::district::SITE)).collect();
    let mut seq = vec![0u64; plan.sensors];
    let mut marker = vec![false; plan.sensors];
    let total = (plan.rate * plan.seconds as f64) as u64;
    let mut sent = Sent::default();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while sent.published < total && !plan.stop.load(Ordering::Relaxed) {
        let elapsed = start.elapsed().as_secs_f64();
        let due = ((elapsed * plan.rate) as u64).min(total);
        let flips_due = (elapsed * plan.alerts_per_sec) as u64;
        while sent.published < due {
            let i = (sent.published % plan.sensors as u64) as usize;
            if i < plan.alarming && sent.flips < flips_due {
                marker[i] = !marker[i];
                sent.flips += 1;
            }
            let wobble = ((sent.published as f64) * 0.37).sin() * 0.01;
            let payload = format!(
                r#"{{"ts":{},"seq":{},"n":{},"do":{:.3},"ph":7.3,"nh3n":0.3,"marker":{}}}"#,
                gridwatch_tests::now_ms(),
                seq[i],
                seq[i],
                7.0 + wobble,
                u8::from(marker[i])
            );
            seq[i] += 1;
            client.publish(topics[i].as_str(), QoS::AtLeastOnce, false, payload).await.context("queueing a reading")?;
            sent.published += 1;
        }
        tick.tick().await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::Relaxed) < sent.published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    closing.store(true, Ordering::Relaxed);
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    poller.abort();
    sent.acked = acked.load(Ordering::Relaxed);
    sent.per_sensor = seq;
    Ok(sent)
}
