//! `gridwatch probe --port PATH [--baud auto|N] [--profile FILE]…`: what is on this serial port?
//! Listens for the talking protocols (WitMotion stream, gridwatch line protocol) and stops there
//! when one is heard; otherwise asks the polled ones: Modbus addresses 1–16 and every profile's
//! own address, each address that answers read through *every* profile (shipped and the
//! installer's own), RION inclinometers at address 0. Each profile's values are judged against
//! the ranges it declares ([`gridwatch_bridge::profile::Fit`]), candidates are ranked (plausible
//! values first, then the profile's own baud rate and address), and the report names the best
//! with the values read, lists the rest with why they lost, and prints a ready-to-paste
//! `[[serial]]` snippet.
//!
//! Bounded time: 1 s of listening and a few dozen questions of 150 ms per baud rate, so an
//! empty port takes a few seconds per baud rate, never minutes.

use crate::commands::cli::{Baud, Output};
use crate::config::SerialConfig;
use anyhow::Context;
use gridwatch_bridge::modbus::{self, ReadFunction, Response};
use gridwatch_bridge::profile::{builtin_profiles, Fit, Function, Profile};
use gridwatch_bridge::{line, rion, witmotion};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_serial::SerialStream;

/// Baud rates tried with `--baud auto`, most common first.
pub const AUTO_BAUDS: [u32; 4] = [9600, 4800, 115_200, 19_200];
const LISTEN: Duration = Duration::from_secs(1);
const ASK_TIMEOUT: Duration = Duration::from_millis(150);

/// One device that answered.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Found {
    pub protocol: &'static str,
    pub baud: u32,
    /// Modbus slave or RION address.
    pub address: Option<u8>,
    /// The line protocol's device id, or the Modbus profile whose values fit (the best
    /// candidate when it is plausible).
    pub profile: Option<String>,
    pub fields: Vec<(String, f64)>,
    /// Modbus: every profile the device answered, best first.
    pub candidates: Vec<Candidate>,
}

/// A Modbus device read through one profile.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Candidate {
    pub profile: String,
    pub fields: Vec<(String, f64)>,
    pub fit: Fit,
    /// The probe's baud rate is the one the profile says the device ships with.
    pub own_baud: bool,
    /// The device answered at the address the profile says it ships with.
    pub own_address: bool,
}

impl Candidate {
    /// Plausible on enough evidence to be named: two or more values in range, or the device
    /// answered at the profile's factory baud rate or address. (A one-register profile read at
    /// neither reads "plausible" values from almost any device.)
    fn confident(&self) -> bool {
        self.fit.plausible() && (self.fit.in_range >= 2 || self.own_baud || self.own_address)
    }

    /// Higher is better: plausible values first, then fewer values out of range, the device's
    /// factory baud rate and address, and the most values confirmed by a range.
    fn rank(&self) -> (bool, std::cmp::Reverse<usize>, bool, bool, usize) {
        (
            self.fit.plausible(),
            std::cmp::Reverse(self.fit.out_of_range.len() + self.fit.missing + usize::from(self.fit.all_zero)),
            self.own_baud,
            self.own_address,
            self.fit.in_range,
        )
    }
}

/// The shipped profiles followed by the installer's own.
pub fn profiles_to_try(own: Vec<Profile>) -> Vec<Profile> {
    let mut profiles: Vec<Profile> = builtin_profiles().into_iter().filter_map(|(name, text)| Profile::parse(name, text).ok()).collect();
    profiles.extend(own);
    profiles
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
    crate::sources::serial::open(&config).map_err(|error| {
        // The daemon holds its ports exclusively (an outside tester read only "Unable to acquire
        // exclusive lock").
        let hint = if error.to_string().contains("exclusive") {
            " — another program has it open: is gridwatch running? Stop it first (`sudo systemctl stop gridwatch`), probe, then start it again"
        } else {
            ""
        };
        anyhow::anyhow!("opening {}: {error}{hint}", port.display())
    })
}

/// A port being probed, and every byte heard on it: a device that answers too late for its
/// question, in a protocol no profile reads, or at a wrong baud rate still shows there.
struct Port {
    stream: SerialStream,
    heard: Vec<u8>,
}

/// The most bytes kept of what a port said.
const HEARD_KEPT: usize = 64 * 1024;

/// Reads whatever arrives until `deadline`.
async fn read_until(port: &mut Port, deadline: Instant, mut done: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buffer = [0u8; 512];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, port.stream.read(&mut buffer)).await {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buffer[..n]);
        if port.heard.len() + n <= HEARD_KEPT {
            port.heard.extend_from_slice(&buffer[..n]);
        }
        if done(&all) {
            break;
        }
    }
    all
}

/// What a probe found on a port, and, where nothing answered, how many bytes it heard at each
/// baud rate that nothing it knows reads.
#[derive(Debug, Default)]
pub struct Probed {
    pub found: Vec<Found>,
    pub unread: Vec<(u32, usize)>,
}

/// Probes one port at the given baud rates with the given profiles. Stops at the first baud
/// rate where anything answered. A device that talks on its own more seldom than the first
/// listen (a line-protocol box every few seconds) is read from what it said during the
/// questions.
pub async fn probe(port: &Path, bauds: &[u32], profiles: &[Profile]) -> anyhow::Result<Probed> {
    let mut probed = Probed::default();
    for &baud in bauds {
        let mut stream = Port { stream: open(port, baud)?, heard: Vec::new() };
        let streams = listen(&mut stream, baud).await;
        if !streams.is_empty() {
            probed.found = streams;
            return Ok(probed);
        }
        let mut found = ask_modbus(&mut stream, baud, profiles).await?;
        found.extend(ask_rion(&mut stream, baud).await?);
        if found.is_empty() {
            found = frames_in(&stream.heard, baud);
        }
        if !found.is_empty() {
            probed.found = found;
            return Ok(probed);
        }
        if !stream.heard.is_empty() {
            probed.unread.push((baud, stream.heard.len()));
        }
    }
    Ok(probed)
}

async fn listen(port: &mut Port, baud: u32) -> Vec<Found> {
    let bytes = read_until(port, Instant::now() + LISTEN, |_| false).await;
    frames_in(&bytes, baud)
}

/// The devices that stream on their own (WitMotion, the line protocol) in `bytes`.
fn frames_in(bytes: &[u8], baud: u32) -> Vec<Found> {
    let mut found = Vec::new();
    let frames = witmotion::StreamParser::new().push(bytes);
    if let Some(frame) = frames.iter().find(|f| matches!(f, witmotion::Frame::Angle { .. })) {
        found.push(Found { protocol: "witmotion", baud, address: None, profile: None, fields: frame.fields(), candidates: Vec::new() });
    }
    for sample in line::LineParser::new().push(bytes).into_iter().flatten() {
        if !found.iter().any(|f| f.protocol == "line" && f.profile.as_deref() == Some(sample.device.as_str())) {
            found.push(Found { protocol: "line", baud, address: None, profile: Some(sample.device), fields: sample.fields, candidates: Vec::new() });
        }
    }
    found
}

async fn ask(port: &mut Port, request: &[u8], complete: impl FnMut(&[u8]) -> bool) -> anyhow::Result<Vec<u8>> {
    port.stream.write_all(request).await.context("writing to the port")?;
    Ok(read_until(port, Instant::now() + ASK_TIMEOUT, complete).await)
}

async fn ask_modbus(port: &mut Port, baud: u32, profiles: &[Profile]) -> anyhow::Result<Vec<Found>> {
    let mut found = Vec::new();
    let addresses: BTreeSet<u8> = (1..=16u8).chain(profiles.iter().map(|p| p.slave)).collect();
    for slave in addresses {
        let request = modbus::read_request(slave, ReadFunction::Holding, 0, 1);
        let reply = ask(port, &request, |b| !matches!(modbus::parse_read_response(b, slave, ReadFunction::Holding, 1), Ok(None))).await?;
        let present = match modbus::parse_read_response(&reply, slave, ReadFunction::Holding, 1) {
            Ok(Some(Response::Registers(registers))) => Some(vec![("register_0".to_string(), f64::from(registers[0]))]),
            Ok(Some(Response::Exception(_))) => Some(Vec::new()),
            _ => None,
        };
        // Something answered here: read it through every profile. Nothing did: a device may
        // still refuse register 0 silently, so try the profiles that ship at this address.
        let mut candidates = Vec::new();
        for profile in profiles.iter().filter(|p| present.is_some() || p.slave == slave) {
            if let Some(fields) = read_profile(port, profile, slave).await? {
                let fit = profile.fit(&fields);
                candidates.push(Candidate { profile: profile.name.clone(), fields, fit, own_baud: profile.baud == baud, own_address: profile.slave == slave });
            }
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.rank()));
        let best = candidates.first().filter(|c| c.confident());
        let (profile, fields) = match (best, present) {
            (Some(best), _) => (Some(best.profile.clone()), best.fields.clone()),
            (None, Some(fields)) => (None, fields),
            (None, None) if !candidates.is_empty() => (None, Vec::new()),
            (None, None) => continue,
        };
        found.push(Found { protocol: "modbus", baud, address: Some(slave), profile, fields, candidates });
    }
    Ok(found)
}

/// Reads a profile's registers from `slave`; `None` if it did not answer properly.
async fn read_profile(port: &mut Port, profile: &Profile, slave: u8) -> anyhow::Result<Option<Vec<(String, f64)>>> {
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

async fn ask_rion(port: &mut Port, baud: u32) -> anyhow::Result<Vec<Found>> {
    let mut parser = rion::ReplyParser::new();
    let reply = ask(port, &rion::read_xy(0), |b| b.len() >= 14).await?;
    Ok(parser
        .push(&reply)
        .into_iter()
        .filter(|r| matches!(r, rion::Reply::Xy { .. }))
        .map(|r| Found { protocol: "rion", baud, address: Some(0), profile: None, fields: r.fields(), candidates: Vec::new() })
        .collect())
}

/// The report for people: what answered, which profile fits and why the others do not, and a
/// config snippet for the port.
pub fn report(port: &Path, probed: &Probed) -> String {
    let mut out = String::new();
    let found = &probed.found;
    if found.is_empty() && probed.unread.is_empty() {
        let _ =
            writeln!(out, "nothing answered on {} (tried WitMotion, gridwatch line protocol, Modbus RTU profiles and addresses 1–16, RION)", port.display());
        return out;
    }
    if found.is_empty() {
        // Not silent: a device an installer should not be told is absent.
        let heard: Vec<String> = probed.unread.iter().map(|(baud, bytes)| format!("{bytes} bytes at {baud} baud")).collect();
        let _ = writeln!(
            out,
            "no device gridwatch can read on {}, but the port is not silent: {} that no protocol reads (tried WitMotion, gridwatch line protocol, Modbus RTU profiles and addresses 1–16, RION).\nLikely: {}a device that answers too slowly or speaks another protocol (check its manual; write a profile), or the RS-485 pair's A and B swapped.",
            port.display(),
            heard.join(", "),
            // Every rate of `--baud auto` was tried already when more than one was heard.
            if probed.unread.len() > 1 { "a baud rate outside 9600, 4800, 115200 and 19200 (give it with --baud), " } else { "a wrong baud rate (try --baud auto), " }
        );
        return out;
    }
    for f in found {
        let what = match (f.protocol, f.address, &f.profile) {
            ("modbus", Some(a), Some(p)) => format!("Modbus RTU slave {a}, profile `{p}` fits"),
            ("modbus", Some(a), None) if f.candidates.is_empty() => format!("Modbus RTU slave {a}, no profile could read it (write one)"),
            ("modbus", Some(a), None) => format!("Modbus RTU slave {a}, unknown device: no profile reads plausible values (write one; closest below)"),
            ("line", _, Some(device)) => format!("gridwatch line protocol, device `{device}`"),
            ("rion", Some(a), _) => format!("RION 0x68 inclinometer at address {a}"),
            _ => "WitMotion angle stream".to_string(),
        };
        let values = if f.fields.is_empty() && f.protocol == "modbus" { "(exception reply)".to_string() } else { values(&f.fields) };
        let _ = writeln!(out, "found: {what} at {} baud: {values}", f.baud);
        let best = f.profile.as_deref().filter(|_| f.protocol == "modbus");
        for candidate in f.candidates.iter().filter(|c| Some(c.profile.as_str()) != best) {
            let _ = writeln!(out, "  {}", judgement(candidate));
        }
    }
    let first = &found[0];
    let _ = writeln!(out, "\n[[serial]]\nport = \"{}\"\nbaud = {}\nprotocol = \"{}\"", port.display(), first.baud, first.protocol);
    let devices: Vec<&Found> = found.iter().filter(|f| f.baud == first.baud && f.protocol == first.protocol).collect();
    for (n, f) in devices.iter().enumerate() {
        // Each its own name to change: two alike would be refused as one sensor twice.
        let name = if devices.len() > 1 { format!("CHANGE-ME-{}", n + 1) } else { "CHANGE-ME".to_string() };
        let _ = write!(out, "[[serial.device]]\nsensor = \"{name}\"\n");
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

fn values(fields: &[(String, f64)]) -> String {
    fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// One line on a profile that is not the answer: why, or that it fits as well (ambiguous).
fn judgement(candidate: &Candidate) -> String {
    let fit = &candidate.fit;
    if candidate.confident() {
        return format!("`{}` also reads plausible values ({}): check the label on the device", candidate.profile, values(&candidate.fields));
    }
    if fit.plausible() {
        return format!(
            "maybe `{}` ({}), but that is one value, at neither its factory baud rate nor address: check the label on the device",
            candidate.profile,
            values(&candidate.fields)
        );
    }
    let mut why: Vec<String> = fit.out_of_range.iter().map(|(name, value, [low, high])| format!("{name}={value} outside {low}–{high}")).collect();
    if fit.missing > 0 {
        why.push(format!("{} of its registers not read", fit.missing));
    }
    if fit.all_zero {
        why.push("every value 0 (registers it does not use)".into());
    }
    format!("not `{}`: {}", candidate.profile, why.join(", "))
}

/// `gridwatch probe`: what answers on `port`, tried at `baud` with the shipped profiles and
/// the installer's own `profiles`; exit 1 when nothing does.
pub fn command(port: PathBuf, baud: Baud, profiles: Vec<PathBuf>, output: Output) -> ExitCode {
    let bauds: Vec<u32> = match baud {
        Baud::Auto => AUTO_BAUDS.to_vec(),
        Baud::Fixed(rate) => vec![rate],
    };
    super::block_on(async move {
        let mut own = Vec::new();
        for path in &profiles {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading profile {}", path.display()))?;
            own.push(Profile::parse(&path.display().to_string(), &text)?);
        }
        let found = probe(&port, &bauds, &profiles_to_try(own)).await?;
        print!("{}", output.render(|| report(&port, &found), || serde_json::to_value(&found.found).unwrap_or_default()));
        if found.found.is_empty() {
            anyhow::bail!("no device found on {}", port.display());
        }
        Ok(())
    })
}
