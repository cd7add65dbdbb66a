//! Serial sources: one task per `[[serial]]` port. The task opens the port by its (stable)
//! path, runs the port's protocol — a stream to parse (WitMotion, line protocol) or devices to
//! poll (Modbus RTU, RION) — and hands readings to the same pipeline and spool as MQTT. The
//! byte-level work is in `gridwatch-bridge`; this module owns the port and the timing.
//!
//! A port that cannot be opened, reads 0 bytes (unplugged) or fails is closed and reopened
//! with backoff (1 s doubling to 30 s): never a busy loop.

mod poll;
mod stream;

use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::config::{SerialConfig, SerialProtocol};
use crate::metrics::Metrics;
use crate::sample::Sample;
use crate::telemetry::spooler::Spooled;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tokio_util::sync::CancellationToken;

/// Where a port's readings go.
#[derive(Debug, Clone)]
pub struct SerialOutputs {
    pub samples: mpsc::Sender<Sample>,
    /// The spooler, when readings are stored here (not in `gridwatch bridge`).
    pub spool: Option<mpsc::Sender<Spooled>>,
    /// The inventory (sensor ids by position, positions by id).
    pub sensors: crate::config::SensorIndex,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// This port's bus, reported up on each reading and down when the port fails (none in
    /// `gridwatch bridge`).
    pub bus: Option<crate::sources::buses::BusHandle>,
    /// Polled tilt boxes are asked faster while their house is at yellow or above (none in
    /// `gridwatch bridge`).
    pub report_rates: Option<Arc<crate::report_rate::ReportRates>>,
}

impl SerialOutputs {
    /// How often a polled device is asked: its interval, or faster while its house is at yellow
    /// or above ([`crate::report_rate`]).
    pub(crate) fn poll_interval(&self, device: &crate::config::SerialDevice) -> std::time::Duration {
        let sensor = self.sensors.sensors().get(device.sensor).map(|s| s.id.clone());
        let faster = sensor.and_then(|id| self.report_rates.as_ref()?.every(&id));
        faster.map_or(device.interval, |every| every.min(device.interval))
    }

    /// Reports this port's bus down (the port failed, or no device on it answers).
    pub(crate) fn bus_down(&self) {
        if let Some(bus) = &self.bus {
            bus.down(self.clock.now());
        }
    }

    /// Hands one reading on; `false` when the daemon is shutting down.
    pub(crate) async fn emit(&self, sensor: usize, fields: Vec<(String, f64)>) -> bool {
        let fields: Vec<(String, f64)> = fields.into_iter().filter(|(_, v)| v.is_finite()).collect();
        if fields.is_empty() {
            return true;
        }
        if let Some(bus) = &self.bus {
            bus.up();
        }
        let clock_untrusted = !self.clock.synchronized();
        let sample = Sample { sensor, ts: self.clock.now(), seq: None, fields, clock_untrusted, own_time: false, refused_stamp: None, hub_seq: None };
        let Some(spool) = &self.spool else { return self.samples.send(sample).await.is_ok() };
        if clock_untrusted {
            self.metrics.drop_telemetry("clock_not_set", 1);
            return self.samples.send(sample).await.is_ok();
        }
        let keep = crate::telemetry::spooler::kept(self.sensors.sensors(), &sample);
        self.samples.send(sample).await.is_ok() && spool.send(Spooled { sample: keep, ack: None }).await.is_ok()
    }
}

/// Why a session on an open port ended.
#[derive(Debug)]
enum Ended {
    /// The daemon is stopping.
    Shutdown,
    /// The port failed or went away; reopen it.
    PortLost(String),
}

pub fn open(config: &SerialConfig) -> tokio_serial::Result<SerialStream> {
    tokio_serial::new(config.port.to_string_lossy(), config.baud).timeout(config.timeout).open_native_async()
}

/// Runs one port until `shutdown`.
pub async fn run_port(config: SerialConfig, outputs: SerialOutputs, shutdown: CancellationToken) {
    let port = config.port.display().to_string();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut recent_lines = stream::RecentLines::new();
    loop {
        let ended = match open(&config) {
            Ok(stream) => {
                tracing::info!(port = %port, baud = config.baud, protocol = ?config.protocol, "serial port open");
                backoff.reset();
                let session = async {
                    match config.protocol {
                        SerialProtocol::Witmotion | SerialProtocol::Line => stream::run(&config, stream, &outputs, &mut recent_lines).await,
                        SerialProtocol::Modbus => poll::run_modbus(&config, stream, &outputs).await,
                        SerialProtocol::Rion => poll::run_rion(&config, stream, &outputs).await,
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => Ended::Shutdown,
                    ended = session => ended,
                }
            }
            Err(error) => Ended::PortLost(format!("cannot open: {error}")),
        };
        match ended {
            Ended::Shutdown => return,
            Ended::PortLost(reason) => {
                outputs.metrics.serial_port_errors.get_or_create(&Metrics::port(&port)).inc();
                outputs.bus_down();
                let delay = backoff.next_delay();
                tracing::warn!(port = %port, reason = %reason, retry_in_ms = delay.as_millis() as u64, "serial port lost; reopening");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readings_stamped_by_an_unset_clock_are_judged_but_not_stored() {
        let (samples_tx, mut samples) = mpsc::channel(4);
        let (spool_tx, mut spool) = mpsc::channel(4);
        let metrics = Arc::new(Metrics::new());
        let booted_at_1970 = Clock::starting_at(86_400_000, false);
        let outputs = SerialOutputs {
            samples: samples_tx,
            spool: Some(spool_tx),
            sensors: crate::config::SensorIndex::new(vec![crate::config::SensorConfig::test_tilt("house-07", "north-lane")].into()),
            clock: booted_at_1970,
            metrics: metrics.clone(),
            bus: None,
            report_rates: None,
        };
        assert!(outputs.emit(0, vec![("x".into(), 0.3)]).await);
        let judged = samples.try_recv().expect("the rules get it");
        assert!(judged.clock_untrusted);
        assert!(spool.try_recv().is_err(), "nothing is stored with a 1970 time");
        assert_eq!(metrics.telemetry_points_dropped.get_or_create(&crate::metrics::ReasonLabel { reason: "clock_not_set".into() }).get(), 1);

        let outputs = SerialOutputs { clock: Clock::accelerated(1.0), ..outputs };
        assert!(outputs.emit(0, vec![("x".into(), 0.3)]).await);
        assert!(!samples.try_recv().unwrap().clock_untrusted);
        assert!(spool.try_recv().is_ok(), "with a set clock it is stored");
    }
}
