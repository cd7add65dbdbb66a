//! Polled protocols: Modbus RTU (through `tokio-modbus`) and RION 0x68 inclinometers. Several
//! devices on one bus are asked one at a time, each on its own interval, with a short gap
//! between frames. A device that does not answer is retried once, then backed off (its
//! interval doubling up to ten minutes) so a dead slave never starves the others.

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
/// Longest back-off for a device that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// When each device is due, and how often in a row it failed.
struct Schedule {
    due: Vec<Instant>,
    failures: Vec<u32>,
}

impl Schedule {
    fn new(devices: usize) -> Schedule {
        Schedule { due: vec![Instant::now(); devices], failures: vec![0; devices] }
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
        let factor = 1u32 << self.failures[index].min(10);
        self.due[index] = Instant::now() + (interval * factor).min(MAX_BACKOFF.max(interval));
    }
}

/// Why one poll of one device failed.
enum PollError {
    /// No answer, an exception or a garbled answer: the device's problem.
    Device(String),
    /// The port itself failed.
    Port(String),
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
        if matches!(outcome, Err(PollError::Device(_))) {
            tokio::time::sleep(FRAME_GAP).await;
            outcome = poll_modbus(&mut ctx, config, device, profile).await;
        }
        match outcome {
            Ok(fields) => {
                outputs.metrics.serial_frames.get_or_create(&label.with("good")).inc();
                schedule.done(index, device.interval, true);
                if !outputs.emit(device.sensor, fields).await {
                    return Ended::Shutdown;
                }
            }
            Err(PollError::Device(reason)) => {
                outputs.metrics.serial_frames.get_or_create(&label.with("no_answer")).inc();
                if schedule.failures[index] < 3 {
                    tracing::warn!(port = %label.port, slave = device.slave, reason = %reason, "Modbus device did not answer");
                }
                schedule.done(index, device.interval, false);
                if schedule.all_failing() {
                    outputs.bus_down();
                }
            }
            Err(PollError::Port(reason)) => return Ended::PortLost(reason),
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
            Ok(Ok(Err(exception))) => return Err(PollError::Device(format!("exception: {exception}"))),
            Ok(Err(tokio_modbus::Error::Transport(error))) if error.kind() != std::io::ErrorKind::InvalidData => {
                return Err(PollError::Port(error.to_string()))
            }
            Ok(Err(error)) => return Err(PollError::Device(error.to_string())),
            Err(_) => return Err(PollError::Device(format!("no answer within {} ms", config.timeout.as_millis()))),
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
                schedule.done(index, device.interval, true);
                if !outputs.emit(device.sensor, reply.fields()).await {
                    return Ended::Shutdown;
                }
            }
            None => {
                outputs.metrics.serial_frames.get_or_create(&label.with("no_answer")).inc();
                schedule.done(index, device.interval, false);
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
