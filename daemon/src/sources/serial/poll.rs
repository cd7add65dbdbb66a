//! Polled protocols: Modbus RTU (through `tokio-modbus`) and RION 0x68 inclinometers. Several
//! devices on one bus are asked one at a time, each on its own interval, with a short gap
//! between frames. A device that does not answer is retried once, then backed off (its
//! interval doubling, to at most [`MAX_BACKOFF_INTERVALS`] intervals) so a dead slave never
//! starves the others and one that comes back is read again within a few intervals.
//!
//! Every attempt is counted (`gridwatch_serial_frames_total{result}`): `good`; `bad` for an
//! answer that is there but wrong (a CRC error, a garbled frame, a Modbus exception: line noise
//! or a wrong register map); `no_answer` for silence (a dead slave, a wrong address or baud
//! rate). A device that has never answered since the port opened is named in the log with the
//! likely cause: its address or the port's baud rate.

use super::{Ended, SerialOutputs};
use crate::config::{SerialConfig, SerialDevice};
use crate::metrics::{Metrics, PortLabel};
use gridwatch_bridge::profile::{Function, Profile};
use gridwatch_bridge::rion;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::slave::{Slave, SlaveContext};
use tokio_serial::SerialStream;

/// Pause between one answer and the next request on the bus.
const FRAME_GAP: Duration = Duration::from_millis(20);
/// Longest back-off for a device that keeps failing, in its own intervals.
const MAX_BACKOFF_INTERVALS: u32 = 4;

/// When each device is due, how often in a row it failed, and whether it ever answered.
struct Schedule {
    due: Vec<Instant>,
    failures: Vec<u32>,
    answered: Vec<bool>,
}

impl Schedule {
    fn new(devices: usize) -> Schedule {
        Schedule { due: vec![Instant::now(); devices], failures: vec![0; devices], answered: vec![false; devices] }
    }

    fn next(&self) -> Option<(usize, Instant)> {
        self.due.iter().copied().enumerate().min_by_key(|&(_, due)| due)
    }

    /// Every device failed at least twice in a row: the bus, not a device, is the problem.
    fn all_failing(&self) -> bool {
        self.failures.iter().all(|&f| f >= 2)
    }

    fn done(&mut self, index: usize, interval: Duration, ok: bool) {
        self.failures[index] = if ok { 0 } else { self.failures[index] + 1 };
        self.answered[index] |= ok;
        let factor = (1u32 << self.failures[index].min(4)).min(MAX_BACKOFF_INTERVALS);
        self.due[index] = Instant::now() + interval * factor;
    }
}

/// Why one poll of one device failed.
enum PollError {
    /// Silence within the timeout: a dead slave, or the wrong address or baud rate.
    NoAnswer(String),
    /// An answer that is there but wrong: CRC, garbled frame, Modbus exception.
    Bad(String),
    /// The port itself failed.
    Port(String),
}

impl PollError {
    /// The `result` label the attempt is counted under; `None` for a lost port.
    fn result(&self) -> Option<&'static str> {
        match self {
            PollError::NoAnswer(_) => Some("no_answer"),
            PollError::Bad(_) => Some("bad"),
            PollError::Port(_) => None,
        }
    }
}

/// The log line for a device that has never answered since the port opened: what to check.
fn never_answered(config: &SerialConfig, device: &SerialDevice, profile: &Profile) -> String {
    let mut causes = vec![format!("slave address {} (is the device set to it?)", device.slave)];
    if profile.baud != config.baud {
        causes.insert(0, format!("the baud rate: the port runs at {}, profile `{}` ships at {}", config.baud, profile.name, profile.baud));
    } else {
        causes.push(format!("the baud rate {} (the device may have been set to another)", config.baud));
    }
    format!("likely cause: {}; run `gridwatch probe --port {}` with the daemon stopped", causes.join(", or "), config.port.display())
}

pub(super) async fn run_modbus(config: &SerialConfig, port: SerialStream, outputs: &SerialOutputs) -> Ended {
    let label = Metrics::port(&config.port.display().to_string());
    let mut ctx = tokio_modbus::client::rtu::attach_slave(port, Slave(1));
    let mut schedule = Schedule::new(config.devices.len());
    while let Some((index, due)) = schedule.next() {
        tokio::time::sleep_until(due).await;
        let device = &config.devices[index];
        let Some(profile) = &device.profile else { return Ended::PortLost("Modbus device without a profile".into()) };
        let mut outcome = poll_modbus(&mut ctx, config, device, profile).await;
        if let Some(result) = outcome.as_ref().err().and_then(PollError::result) {
            // Counted even when the retry then succeeds: line noise shows before it kills.
            outputs.metrics.serial_frames.get_or_create(&label.with(result)).inc();
            tokio::time::sleep(FRAME_GAP).await;
            outcome = poll_modbus(&mut ctx, config, device, profile).await;
        }
        match outcome {
            Ok(fields) => {
                outputs.metrics.serial_frames.get_or_create(&label.with("good")).inc();
                schedule.done(index, outputs.poll_interval(device), true);
                if !outputs.emit(device.sensor, fields).await {
                    return Ended::Shutdown;
                }
            }
            Err(PollError::Port(reason)) => return Ended::PortLost(reason),
            Err(error) => {
                let (result, reason) = match &error {
                    PollError::NoAnswer(reason) | PollError::Bad(reason) => (error.result().unwrap_or("no_answer"), reason.as_str()),
                    PollError::Port(_) => ("no_answer", ""),
                };
                outputs.metrics.serial_frames.get_or_create(&label.with(result)).inc();
                if schedule.failures[index] < 3 {
                    tracing::warn!(port = %label.port, slave = device.slave, result, reason = %reason, "Modbus device did not answer properly");
                }
                schedule.done(index, outputs.poll_interval(device), false);
                if schedule.failures[index] == 3 && !schedule.answered[index] {
                    let sensor = outputs.sensors.sensors().get(device.sensor).map(|s| s.id.clone()).unwrap_or_default();
                    tracing::warn!(port = %label.port, slave = device.slave, sensor = %sensor, hint = %never_answered(config, device, profile), "Modbus device has never answered since the port opened");
                }
                if schedule.all_failing() {
                    outputs.bus_down();
                }
            }
        }
        tokio::time::sleep(FRAME_GAP).await;
    }
    Ended::PortLost("no devices to poll".into())
}

async fn poll_modbus(ctx: &mut Context, config: &SerialConfig, device: &SerialDevice, profile: &Profile) -> Result<Vec<(String, f64)>, PollError> {
    ctx.set_slave(Slave(device.slave));
    let mut registers = BTreeMap::new();
    for block in profile.plan() {
        let read = async {
            match profile.function {
                Function::Holding => ctx.read_holding_registers(block.address, block.count).await,
                Function::Input => ctx.read_input_registers(block.address, block.count).await,
            }
        };
        match tokio::time::timeout(config.timeout, read).await {
            Ok(Ok(Ok(values))) => registers.extend((block.address..).zip(values)),
            Ok(Ok(Err(exception))) => return Err(PollError::Bad(format!("exception: {exception}"))),
            Ok(Err(tokio_modbus::Error::Transport(error))) if error.kind() != std::io::ErrorKind::InvalidData => {
                return Err(PollError::Port(error.to_string()))
            }
            Ok(Err(error)) => return Err(PollError::Bad(error.to_string())),
            Err(_) => return Err(PollError::NoAnswer(format!("no answer within {} ms", config.timeout.as_millis()))),
        }
    }
    Ok(profile.decode(&registers))
}

pub(super) async fn run_rion(config: &SerialConfig, mut port: SerialStream, outputs: &SerialOutputs) -> Ended {
    let label = Metrics::port(&config.port.display().to_string());
    let mut schedule = Schedule::new(config.devices.len());
    let mut parser = rion::ReplyParser::new();
    let mut buffer = [0u8; 256];
    while let Some((index, due)) = schedule.next() {
        tokio::time::sleep_until(due).await;
        let device = &config.devices[index];
        if let Err(error) = port.write_all(&rion::read_xy(device.address)).await {
            return Ended::PortLost(error.to_string());
        }
        let deadline = Instant::now() + config.timeout;
        let mut reply = None;
        while reply.is_none() {
            match tokio::time::timeout_at(deadline, port.read(&mut buffer)).await {
                Err(_) => break,
                Ok(Ok(0)) => return Ended::PortLost("read 0 bytes (unplugged?)".into()),
                Ok(Ok(n)) => reply = parser.push(&buffer[..n]).into_iter().find(|r| matches!(r, rion::Reply::Xy { address, .. } if *address == device.address)),
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::TimedOut => {}
                Ok(Err(error)) => return Ended::PortLost(error.to_string()),
            }
        }
        match reply {
            Some(reply) => {
                outputs.metrics.serial_frames.get_or_create(&label.with("good")).inc();
                schedule.done(index, outputs.poll_interval(device), true);
                if !outputs.emit(device.sensor, reply.fields()).await {
                    return Ended::Shutdown;
                }
            }
            None => {
                outputs.metrics.serial_frames.get_or_create(&label.with("no_answer")).inc();
                schedule.done(index, outputs.poll_interval(device), false);
                if schedule.all_failing() {
                    outputs.bus_down();
                }
            }
        }
        tokio::time::sleep(FRAME_GAP).await;
    }
    Ended::PortLost("no devices to poll".into())
}

impl PortLabel {
    /// The label for a frame outcome on this port.
    pub fn with(&self, result: &str) -> crate::metrics::PortResultLabel {
        crate::metrics::PortResultLabel { port: self.port.clone(), result: result.into() }
    }
}
