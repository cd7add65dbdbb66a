//! The simulated sensors: one MQTT connection publishing QoS 1 readings for N water probes at
//! R readings per second in total (0: as fast as the broker takes them), each payload carrying
//! its send time as `ts`. A fixed share of readings flips a `marker` field that a load rule
//! fires on, so alerts flow at a steady rate whatever N and R are.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What was published.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Readings the broker acknowledged (PUBACK).
    pub acked: u64,
    /// Marker flips, each of which must reach the webhook as one alert event.
    pub flips: u64,
}

pub struct Plan {
    pub port: u16,
    pub sensors: usize,
    /// Readings per second in total; 0 = unpaced.
    pub rate: u64,
    pub readings: u64,
    /// Alert events wanted per second (marker flips), roughly.
    pub alerts_per_sec: u64,
}

/// Topic of sensor `i`: the daemon's default convention.
pub fn topic(i: usize) -> String {
    format!("gridwatch/load/p{i}/telemetry")
}

pub async fn publish(plan: &Plan) -> anyhow::Result<Sent> {
    let mut options = MqttOptions::new(format!("gridwatch-load-{}", std::process::id()), "127.0.0.1", plan.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(200);
    let (client, mut eventloop) = AsyncClient::new(options, 10_000);
    let acked = Arc::new(AtomicU64::new(0));
    let counter = acked.clone();
    let closing = Arc::new(AtomicBool::new(false));
    let closed = closing.clone();
    let poller = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(error) => {
                    if !closed.load(Ordering::Relaxed) {
                        eprintln!("load publisher: {error}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    let topics: Vec<String> = (0..plan.sensors).map(topic).collect();
    let mut seq = vec![0u64; plan.sensors];
    let mut marker = vec![false; plan.sensors];
    // No marker flips for 0 alerts per second (a quiet community's disk writes).
    let flip_every = match (plan.rate, plan.alerts_per_sec) {
        (_, 0) => u64::MAX,
        (0, _) => 1000,
        (rate, alerts) => (rate / alerts).max(1),
    };
    let mut flips = 0;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut published = 0u64;
    while published < plan.readings {
        let due = match plan.rate {
            0 => plan.readings,
            rate => (start.elapsed().as_secs_f64() * rate as f64) as u64,
        }
        .min(plan.readings);
        while published < due {
            let i = (published % plan.sensors as u64) as usize;
            if published % flip_every == flip_every - 1 {
                marker[i] = !marker[i];
                flips += 1;
            }
            let wobble = ((published as f64) * 0.37).sin() * 0.01;
            let payload = format!(
                r#"{{"ts":{},"seq":{},"do":{:.3},"ph":7.3,"nh3n":0.3,"marker":{}}}"#,
                gridwatch_tests::now_ms(),
                seq[i],
                7.0 + wobble,
                u8::from(marker[i])
            );
            seq[i] += 1;
            client.publish(topics[i].as_str(), QoS::AtLeastOnce, false, payload).await?;
            published += 1;
        }
        if plan.rate != 0 {
            tick.tick().await;
        }
    }
    // Let the last PUBACKs arrive.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::Relaxed) < published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    closing.store(true, Ordering::Relaxed);
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    poller.abort();
    Ok(Sent { acked: acked.load(Ordering::Relaxed), flips })
}
