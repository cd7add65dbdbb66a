//! `gridwatch probe --port PATH [--baud auto|N]`: what is on this serial port? Listens for the
//! talking protocols (WitMotion stream, gridwatch line protocol), then asks the polled ones
//! (every shipped Modbus profile at its own address, a quick scan of Modbus addresses 1–16,
//! RION inclinometers at address 0), at each candidate baud rate; prints what answered with a
//! decoded value and a ready-to-paste `[[serial]]` snippet.
//!
//! Bounded time: 1 s of listening and at most ~30 questions of 150 ms per baud rate, so an
//! empty port takes about 6 s per baud rate, never minutes.

use crate::config::SerialConfig;
use anyhow::Context;
use gridwatch_bridge::modbus::{self, ReadFunction, Response};
use gridwatch_bridge::profile::{builtin_profiles, Function, Profile};
use gridwatch_bridge::{line, rion, witmotion};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_serial::SerialStream;

/// Baud rates tried with `--baud auto`, most common first.
pub const AUTO_BAUDS: [u32; 4] = [9600, 4800, 115_200, 19_200];
const LISTEN: Duration = Duration::from_secs(1);
const ASK_TIMEOUT: Duration = Duration::from_millis(150);

/// One device that answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub protocol: &'static str,
    pub baud: u32,
    /// Modbus slave or RION address.
    pub address: Option<u8>,
    pub profile: Option<String>,
    pub fields: Vec<(String, f64)>,
}

fn open(port: &Path, baud: u32) -> anyhow::Result<SerialStream> {
    let config = SerialConfig {
        port: port.to_path_buf(),
        baud,
        protocol: crate::config::SerialProtocol::Line,
        timeout: ASK_TIMEOUT,
        min_interval: Duration::ZERO,
        devices: Vec::new(),
    };
    crate::serial::open(&config).with_context(|| format!("opening {}", port.display()))
}

/// Reads whatever arrives until `deadline`.
async fn read_until(port: &mut SerialStream, deadline: Instant, mut done: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buffer = [0u8; 512];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, port.read(&mut buffer)).await {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buffer[..n]);
        if done(&all) {
            break;
        }
    }
    all
}

/// Probes one port at the given baud rates.
pub async fn probe(port: &Path, bauds: &[u32]) -> anyhow::Result<Vec<Found>> {
    let mut found = Vec::new();
    for &baud in bauds {
        let mut stream = open(port, baud)?;
        found.extend(listen(&mut stream, baud).await);
        if found.iter().any(|f| f.baud == baud) {
            continue;
        }
        found.extend(ask_modbus(&mut stream, baud).await?);
        found.extend(ask_rion(&mut stream, baud).await?);
        if !found.is_empty() {
            break;
        }
    }
    Ok(found)
}

async fn listen(port: &mut SerialStream, baud: u32) -> Vec<Found> {
    let bytes = read_until(port, Instant::now() + LISTEN, |_| false).await;
    let mut found = Vec::new();
    let frames = witmotion::StreamParser::new().push(&bytes);
    if let Some(frame) = frames.iter().find(|f| matches!(f, witmotion::Frame::Angle { .. })) {
        found.push(Found { protocol: "witmotion", baud, address: None, profile: None, fields: frame.fields() });
    }
    for sample in line::LineParser::new().push(&bytes).into_iter().flatten() {
        if !found.iter().any(|f| f.protocol == "line" && f.profile.as_deref() == Some(sample.device.as_str())) {
            found.push(Found { protocol: "line", baud, address: None, profile: Some(sample.device), fields: sample.fields });
        }
    }
    found
}

async fn ask(port: &mut SerialStream, request: &[u8], complete: impl FnMut(&[u8]) -> bool) -> anyhow::Result<Vec<u8>> {
    port.write_all(request).await.context("writing to the port")?;
    Ok(read_until(port, Instant::now() + ASK_TIMEOUT, complete).await)
}

async fn ask_modbus(port: &mut SerialStream, baud: u32) -> anyhow::Result<Vec<Found>> {
    let mut found = Vec::new();
    let profiles: Vec<Profile> = builtin_profiles().into_iter().filter_map(|(name, text)| Profile::parse(name, text).ok()).collect();
    for profile in &profiles {
        if found.iter().any(|f: &Found| f.address == Some(profile.slave)) {
            continue;
        }
        if let Some(fields) = read_profile(port, profile, profile.slave).await? {
            found.push(Found { protocol: "modbus", baud, address: Some(profile.slave), profile: Some(profile.name.clone()), fields });
        }
    }
    for slave in 1..=16u8 {
        if found.iter().any(|f| f.address == Some(slave)) {
            continue;
        }
        let request = modbus::read_request(slave, ReadFunction::Holding, 0, 1);
        let reply = ask(port, &request, |b| !matches!(modbus::parse_read_response(b, slave, ReadFunction::Holding, 1), Ok(None))).await?;
        match modbus::parse_read_response(&reply, slave, ReadFunction::Holding, 1) {
            Ok(Some(Response::Registers(registers))) => {
                let fields = vec![("register_0".to_string(), f64::from(registers[0]))];
                found.push(Found { protocol: "modbus", baud, address: Some(slave), profile: None, fields });
            }
            Ok(Some(Response::Exception(_))) => found.push(Found { protocol: "modbus", baud, address: Some(slave), profile: None, fields: Vec::new() }),
            _ => {}
        }
    }
    Ok(found)
}

/// Reads a profile's registers from `slave`; `None` if it did not answer properly.
async fn read_profile(port: &mut SerialStream, profile: &Profile, slave: u8) -> anyhow::Result<Option<Vec<(String, f64)>>> {
    let function = match profile.function {
        Function::Holding => ReadFunction::Holding,
        Function::Input => ReadFunction::Input,
    };
    let mut registers = BTreeMap::new();
    for block in profile.plan() {
        let request = modbus::read_request(slave, function, block.address, block.count);
        let reply = ask(port, &request, |b| !matches!(modbus::parse_read_response(b, slave, function, block.count), Ok(None))).await?;
        match modbus::parse_read_response(&reply, slave, function, block.count) {
            Ok(Some(Response::Registers(values))) => registers.extend((block.address..).zip(values)),
            _ => return Ok(None),
        }
    }
    Ok(Some(profile.decode(&registers)))
}

async fn ask_rion(port: &mut SerialStream, baud: u32) -> anyhow::Result<Vec<Found>> {
    let mut parser = rion::ReplyParser::new();
    let reply = ask(port, &rion::read_xy(0), |b| b.len() >= 14).await?;
    Ok(parser
        .push(&reply)
        .into_iter()
        .filter(|r| matches!(r, rion::Reply::Xy { .. }))
        .map(|r| Found { protocol: "rion", baud, address: Some(0), profile: None, fields: r.fields() })
        .collect())
}

/// The report for people: what answered, and a config snippet per port.
pub fn report(port: &Path, found: &[Found]) -> String {
    let mut out = String::new();
    if found.is_empty() {
        let _ = writeln!(out, "nothing answered on {} (tried WitMotion, gridwatch line protocol, Modbus RTU profiles and addresses 1–16, RION)", port.display());
        return out;
    }
    for f in found {
        let values: Vec<String> = f.fields.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
        let what = match (f.protocol, f.address, &f.profile) {
            ("modbus", Some(a), Some(p)) => format!("Modbus RTU slave {a}, answers like profile `{p}`"),
            ("modbus", Some(a), None) => format!("Modbus RTU slave {a} (no shipped profile matched: write one)"),
            ("line", _, Some(device)) => format!("gridwatch line protocol, device `{device}`"),
            ("rion", Some(a), _) => format!("RION 0x68 inclinometer at address {a}"),
            _ => "WitMotion angle stream".to_string(),
        };
        let _ = writeln!(out, "found: {what} at {} baud: {}", f.baud, if values.is_empty() { "(exception reply)".into() } else { values.join(" ") });
    }
    let first = &found[0];
    let _ = writeln!(out, "\n[[serial]]\nport = \"{}\"\nbaud = {}\nprotocol = \"{}\"", port.display(), first.baud, first.protocol);
    for f in found.iter().filter(|f| f.baud == first.baud && f.protocol == first.protocol) {
        let _ = write!(out, "[[serial.device]]\nsensor = \"CHANGE-ME\"\n");
        match (f.protocol, f.address, &f.profile) {
            ("modbus", Some(a), profile) => {
                let _ = writeln!(out, "profile = \"{}\"\nslave = {a}\ninterval_secs = 60", profile.as_deref().unwrap_or("WRITE-A-PROFILE"));
            }
            ("rion", Some(a), _) => {
                let _ = writeln!(out, "address = {a}\ninterval_secs = 60");
            }
            ("line", _, Some(device)) => {
                let _ = writeln!(out, "device_id = \"{device}\"");
            }
            _ => {}
        }
    }
    out
}
