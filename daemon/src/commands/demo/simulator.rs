//! The demo's simulated field: tilt boxes on houses and water probes, publishing over MQTT in
//! the default convention exactly as real boxes do. Time is the demo's accelerated clock; one
//! reading per sensor per simulated minute.
//!
//! The scenario (simulated minutes from the start):
//! - house-01: a sound house, angles jitter around 0.02°.
//! - house-02: leaning fast: starts at 0.05° and leans a further 0.008° a minute, past 2‰, 4‰ and
//!   finally 7‰ (0.40°) after about 45 minutes: `tilt-sudden` once it has moved 0.08°; the daily
//!   level (`tilt-change`) is not judged before its readings span three hours.
//! - house-03: steady at 0.03° until minute 12, then a sudden jump to 0.45° (a wall moved, or
//!   the box was knocked) that stays.
//! - pond-01: healthy water, DO about 7.2 mg/L.
//! - canal-02: DO sinks from 6.0 mg/L from minute 5 at 0.15 mg/L a minute, below the class III
//!   line (5 mg/L); an aerator starts at minute 30 and DO recovers (the alarm clears after a
//!   day past its clear level, or once a worker resolves it, as every GB 3838 class alarm does:
//!   `rules/packs/water-gb3838.toml`).
//! - at minute 20 house-01's firmware glitches once and sends `NaN` (rejected and counted).

use crate::clock::Clock;
use crate::config::SensorConfig;
use crate::sources::mqtt::topics::default_topic;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Fields of one simulated reading at `minute` for sensor `id`.
pub fn reading(id: &str, minute: f64, rng: &mut fastrand::Rng) -> Vec<(&'static str, f64)> {
    let mut noise = |amplitude: f64| (rng.f64() - 0.5) * 2.0 * amplitude;
    match id {
        "house-01" => vec![("x", 0.02 + noise(0.004)), ("y", -0.01 + noise(0.004))],
        "house-02" => {
            let lean = 0.05 + 0.008 * minute;
            vec![("x", lean * 0.8 + noise(0.002)), ("y", lean * 0.6 + noise(0.002))]
        }
        "house-03" => {
            let x = if minute < 12.0 { 0.03 } else { 0.45 };
            vec![("x", x + noise(0.003)), ("y", 0.01 + noise(0.003))]
        }
        "pond-01" => vec![("do", 7.2 + noise(0.1)), ("ph", 7.4 + noise(0.05)), ("nh3n", 0.4 + noise(0.02))],
        "canal-02" => {
            let sinking = 6.0 - 0.15 * (minute.min(30.0) - 5.0).max(0.0);
            let recovering = 0.4 * (minute - 30.0).max(0.0);
            let dissolved_oxygen = (sinking + recovering).min(6.5);
            vec![("do", dissolved_oxygen + noise(0.05)), ("ph", 7.1 + noise(0.05)), ("nh3n", 0.6 + noise(0.02))]
        }
        _ => vec![],
    }
}

/// Publishes the scenario until `stop`.
pub async fn run(options: MqttOptions, sensors: std::sync::Arc<[SensorConfig]>, clock: Clock, stop: CancellationToken) {
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let connection = tokio::spawn(async move {
        loop {
            if let Err(error) = eventloop.poll().await {
                tracing::debug!(error = %error, "simulator connection error");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let start = clock.now();
    let period = Duration::from_secs_f64(60.0 / clock.speed());
    let mut ticker = tokio::time::interval(period);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut seq = 0u64;
    let mut glitched = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = clock.now();
        let minute = (now - start) as f64 / 60_000.0;
        seq += 1;
        for sensor in sensors.iter() {
            let fields = reading(&sensor.id, minute, &mut rng);
            let mut payload = serde_json::Map::new();
            for (name, value) in fields {
                payload.insert(name.into(), serde_json::json!((value * 10_000.0).round() / 10_000.0));
            }
            payload.insert("ts".into(), now.into());
            payload.insert("seq".into(), seq.into());
            let mut body = serde_json::Value::Object(payload).to_string();
            if &*sensor.id == "house-01" && minute >= 20.0 && !glitched {
                glitched = true;
                body = r#"{"x": NaN, "y": 0.01}"#.to_string();
            }
            let topic = default_topic(&sensor.place.site, &sensor.id);
            if client.publish(topic, QoS::AtLeastOnce, false, body).await.is_err() {
                break;
            }
        }
    }
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    connection.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(id: &str, minute: f64, field: &str) -> f64 {
        let fields = reading(id, minute, &mut fastrand::Rng::with_seed(1));
        fields.iter().find(|(name, _)| *name == field).map(|(_, v)| *v).unwrap()
    }

    #[test]
    fn creeping_house_passes_seven_per_mille_within_the_hour() {
        let tilt = |m: f64| value("house-02", m, "x").hypot(value("house-02", m, "y"));
        assert!(tilt(0.0) < 0.1146);
        assert!(tilt(50.0) > 0.4011);
    }

    #[test]
    fn canal_oxygen_dips_below_class_three_and_recovers() {
        assert!(value("canal-02", 4.0, "do") > 5.3);
        assert!(value("canal-02", 25.0, "do") < 5.0);
        assert!(value("canal-02", 40.0, "do") > 5.3);
    }

    #[test]
    fn jump_happens_at_minute_twelve() {
        assert!(value("house-03", 11.0, "x") < 0.05);
        assert!(value("house-03", 12.5, "x") > 0.4);
    }
}
