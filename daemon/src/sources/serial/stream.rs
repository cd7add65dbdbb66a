//! Stream protocols: the device talks, we listen (WitMotion 0x55 frames, the gridwatch line
//! protocol). At most one reading per device every `min_interval` is handed on — a WitMotion
//! box sends ten angle frames a second.

use super::{Ended, SerialOutputs};
use crate::config::{SerialConfig, SerialProtocol};
use crate::metrics::Metrics;
use gridwatch_bridge::{line, witmotion};
use std::collections::HashMap;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_serial::SerialStream;

/// Per sensor, the `seq` and values of its latest line-protocol readings, kept across the port's
/// sessions: a line sent again (a box re-sending what it buffered when the port came back) is
/// refused as a duplicate, as over MQTT, instead of being judged again at its arrival (an
/// outside tester got every alarm and clear twice). A rebooted box's new readings carry other
/// values and pass.
pub(super) type RecentLines = HashMap<usize, std::collections::VecDeque<(u32, u64)>>;

pub(super) async fn run(config: &SerialConfig, mut port: SerialStream, outputs: &SerialOutputs, recent: &mut RecentLines) -> Ended {
    let label = Metrics::port(&config.port.display().to_string());
    let mut witmotion = witmotion::StreamParser::new();
    let mut tilt_readings = witmotion::TiltReadings::default();
    let mut lines = line::LineParser::new();
    let by_device: HashMap<&str, usize> = config.devices.iter().map(|d| (d.device_id.as_str(), d.sensor)).collect();
    let mut last_emit: HashMap<usize, Instant> = HashMap::new();
    let mut buffer = [0u8; 1024];
    loop {
        let read = match port.read(&mut buffer).await {
            Ok(0) => return Ended::PortLost("read 0 bytes (unplugged?)".into()),
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(error) => return Ended::PortLost(error.to_string()),
        };
        let readings: Vec<(usize, Vec<(String, f64)>)> = match config.protocol {
            SerialProtocol::Witmotion => {
                let before = witmotion.stats;
                let frames = witmotion.push(&buffer[..read]);
                count(outputs, &label, witmotion.stats.frames - before.frames, witmotion.stats.bad_checksums - before.bad_checksums);
                let sensor = config.devices.first().map(|d| d.sensor);
                tilt_readings.take(&frames).into_iter().filter_map(|fields| Some((sensor?, fields))).collect()
            }
            _ => {
                let mut out = Vec::new();
                for outcome in lines.push(&buffer[..read]) {
                    match outcome {
                        Ok(sample) => match by_device.get(sample.device.as_str()).copied().or_else(|| outputs.sensors.position(&sample.device)) {
                            Some(sensor) => {
                                count(outputs, &label, 1, 0);
                                let seen = recent.entry(sensor).or_default();
                                let key = (sample.seq, crate::sources::mqtt::source::fields_hash(&sample.fields));
                                if seen.contains(&key) {
                                    outputs.metrics.reject(&crate::sources::mqtt::payload::Rejection::DuplicateSeq {
                                        sensor: sample.device.clone(),
                                        seq: u64::from(sample.seq),
                                    });
                                    continue;
                                }
                                if seen.len() == crate::sources::mqtt::source::RECENT_READINGS {
                                    seen.pop_front();
                                }
                                seen.push_back(key);
                                out.push((sensor, sample.fields));
                            }
                            None => {
                                outputs.metrics.reject(&crate::sources::mqtt::payload::Rejection::UnknownSensor(sample.device.clone()));
                            }
                        },
                        Err(error) => {
                            count(outputs, &label, 0, 1);
                            tracing::debug!(port = %label.port, error = %error, "bad line");
                        }
                    }
                }
                out
            }
        };
        for (sensor, fields) in readings {
            let due = last_emit.get(&sensor).is_none_or(|at| at.elapsed() >= config.min_interval);
            if due {
                last_emit.insert(sensor, Instant::now());
                if !outputs.emit(sensor, fields).await {
                    return Ended::Shutdown;
                }
            }
        }
    }
}

fn count(outputs: &SerialOutputs, label: &crate::metrics::PortLabel, good: u64, bad: u64) {
    if good > 0 {
        outputs.metrics.serial_frames.get_or_create(&label.with("good")).inc_by(good);
    }
    if bad > 0 {
        outputs.metrics.serial_frames.get_or_create(&label.with("bad")).inc_by(bad);
    }
}
