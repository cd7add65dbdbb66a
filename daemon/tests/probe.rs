//! `gridwatch probe` against simulated devices on socat pty pairs: each device answers its own
//! register map at its own address (and refuses other registers as a real probe does, or reads
//! them as zeros); the probe must name the right profile, shipped or the installer's own, and
//! never offer a profile whose values are implausible.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use gridwatch_bridge::modbus;
use gridwatch_tests::PtyPair;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a simulated device does with a register it does not have.
#[derive(Clone, Copy)]
enum Unknown {
    /// Modbus exception 02, illegal data address.
    Refuse,
    /// Reads as 0, as some cheap probes do.
    Zero,
}

/// A Modbus slave at `slave` answering function 03 from `registers` until the port closes.
fn device(path: PathBuf, slave: u8, registers: BTreeMap<u16, u16>, unknown: Unknown) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut port = tokio::fs::OpenOptions::new().read(true).write(true).open(&path).await.unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 64];
        loop {
            let Ok(n) = port.read(&mut buffer).await else { return };
            request.extend_from_slice(&buffer[..n]);
            while request.len() >= 8 {
                let frame: Vec<u8> = request.drain(..8).collect();
                if modbus::crc16(&frame[..6]).to_le_bytes() != [frame[6], frame[7]] || frame[0] != slave || frame[1] != 0x03 {
                    continue;
                }
                let (address, count) = (u16::from_be_bytes([frame[2], frame[3]]), u16::from_be_bytes([frame[4], frame[5]]));
                let values: Option<Vec<u16>> =
                    (address..address.saturating_add(count)).map(|r| registers.get(&r).copied().or(matches!(unknown, Unknown::Zero).then_some(0))).collect();
                let reply = match values {
                    Some(values) => modbus::read_response(slave, modbus::ReadFunction::Holding, &values),
                    None => {
                        let mut reply = vec![slave, 0x83, 0x02];
                        let crc = modbus::crc16(&reply).to_le_bytes();
                        reply.extend(crc);
                        reply
                    }
                };
                let _ = port.write_all(&reply).await;
            }
        }
    })
}

/// Big-endian float32 words, as Renke's DO probe holds them.
fn floats(values: &[f32]) -> Vec<u16> {
    values
        .iter()
        .flat_map(|v| {
            let b = v.to_be_bytes();
            [u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]])]
        })
        .collect()
}

fn map(start: u16, words: &[u16]) -> BTreeMap<u16, u16> {
    (start..).zip(words.iter().copied()).collect()
}

/// Runs `gridwatch probe` on a pty whose far end is one simulated device; returns stdout.
async fn probe(name: &str, slave: u8, registers: BTreeMap<u16, u16>, unknown: Unknown, args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let bus = PtyPair::start(dir.path(), name).await.expect("socat (package socat)");
    let simulator = device(bus.simulator.clone(), slave, registers, unknown);
    let mut all = vec!["probe".to_string(), "--port".into(), bus.device.display().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let output = tokio::task::spawn_blocking(move || common::gridwatch().args(&all).output().unwrap()).await.unwrap();
    simulator.abort();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ph_probe_is_named_with_its_values_and_a_config_snippet() {
    let (ok, out) = probe("ph", 1, map(0, &[2450, 721]), Unknown::Refuse, &["--baud", "9600"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("found: Modbus RTU slave 1, profile `sensecap-ph` fits at 9600 baud: temperature=24.5 ph=7.21"), "{out}");
    assert!(out.contains("protocol = \"modbus\"\n[[serial.device]]\nsensor = \"CHANGE-ME\"\nprofile = \"sensecap-ph\"\nslave = 1"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_do_probe_is_never_offered_as_a_ph_probe() {
    let (ok, out) = probe("renke", 1, map(0, &floats(&[95.3, 8.62, 21.4])), Unknown::Refuse, &["--baud", "4800"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("profile `renke-do` fits at 4800 baud: do_saturation=95.3 do=8.62 temperature=21.4"), "{out}");
    assert!(out.contains("not `sensecap-ph`: temperature="), "the pH profile must be shown rejected, with why: {out}");
    assert!(out.contains("profile = \"renke-do\""), "{out}");
    assert!(!out.contains("profile = \"sensecap-ph\""), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turbidity_probe_that_reads_unused_registers_as_zero_is_named_by_its_baud_rate() {
    // 18.6 NTU; register 1 reads 0, so the pH profile's values (temperature 1.86, pH 0) are in
    // range too: the probe's factory baud rate decides, and the pH profile is shown as ambiguous.
    let (ok, out) = probe("turbidity", 1, map(0, &[186]), Unknown::Zero, &["--baud", "4800"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("profile `dfrobot-turbidity` fits at 4800 baud: turbidity=18.6"), "{out}");
    assert!(out.contains("profile = \"dfrobot-turbidity\""), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installers_own_profile_is_tried_at_any_address() {
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("acme-orp.toml");
    std::fs::write(&own, "name = \"acme-orp\"\nbaud = 9600\nslave = 7\nfunction = \"holding\"\n[[field]]\nname = \"orp\"\naddress = 0x0010\ntype = \"i16\"\nscale = 1.0\nunit = \"mV\"\nrange = [-2000, 2000]\n").unwrap();
    let own = own.display().to_string();
    // Set to address 12 in the field, not the profile's 7.
    let (ok, out) =
        probe("orp", 12, map(0, &[3]).into_iter().chain(map(0x10, &[(-215i16) as u16])).collect(), Unknown::Refuse, &["--baud", "9600", "--profile", &own])
            .await;
    assert!(ok, "{out}");
    assert!(out.contains("found: Modbus RTU slave 12, profile `acme-orp` fits at 9600 baud: orp=-215"), "{out}");
    let (_, without) =
        probe("orp-shipped-only", 12, map(0, &[3]).into_iter().chain(map(0x10, &[(-215i16) as u16])).collect(), Unknown::Refuse, &["--baud", "9600"]).await;
    // Register 0 reads as 0.3 NTU through the one-register turbidity profile: weak evidence at
    // neither its baud rate nor its address, so shown as a "maybe", never put in the snippet.
    assert!(without.contains("Modbus RTU slave 12, unknown device"), "{without}");
    assert!(without.contains("maybe `dfrobot-turbidity` (turbidity=0.3)"), "{without}");
    assert!(without.contains("profile = \"WRITE-A-PROFILE\""), "{without}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_every_register_is_an_unknown_device_not_a_guess() {
    // A device whose registers hold values no shipped profile can decode plausibly.
    let garbage: Vec<u16> = (0..8).map(|i| 0xFFF0 - i).collect();
    let (ok, out) = probe("garbage", 1, map(0, &garbage), Unknown::Zero, &["--baud", "9600"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("Modbus RTU slave 1, unknown device"), "{out}");
    assert!(out.contains("profile = \"WRITE-A-PROFILE\""), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_on_an_empty_port_says_so_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let empty = PtyPair::start(dir.path(), "empty").await.expect("socat (package socat)");
    let port = empty.device.display().to_string();
    let output = tokio::task::spawn_blocking(move || common::gridwatch().args(["probe", "--port", &port, "--baud", "9600"]).output().unwrap()).await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("nothing answered on"), "{}", String::from_utf8_lossy(&output.stdout));
}

/// An outside tester probed a port the running daemon held and read only "Unable to acquire
/// exclusive lock": the error now says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_on_a_port_the_daemon_holds_says_to_stop_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PtyPair::start(dir.path(), "held").await.expect("socat (package socat)");
    // Held as the daemon holds its ports: exclusively.
    let _held = tokio_serial::SerialPortBuilderExt::open_native_async(tokio_serial::new(bus.device.to_string_lossy(), 9600)).unwrap();
    let port = bus.device.display().to_string();
    let output = tokio::task::spawn_blocking(move || common::gridwatch().args(["probe", "--port", &port, "--baud", "9600"]).output().unwrap()).await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("another program has it open: is gridwatch running? Stop it first"), "{stderr}");
}

/// A device that answers every question with bytes no protocol reads (a wrong baud rate, A and
/// B swapped): an outside tester's probe said "nothing answered", as for an empty port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_answers_garbage_is_not_called_silent() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PtyPair::start(dir.path(), "garbage").await.expect("socat (package socat)");
    let simulator = bus.simulator.clone();
    let _device = tokio::spawn(async move {
        let mut port = tokio::fs::OpenOptions::new().read(true).write(true).open(&simulator).await.unwrap();
        let mut buffer = [0u8; 64];
        while let Ok(n) = port.read(&mut buffer).await {
            if n == 0 || port.write_all(&[0xF0, 0x0F, 0xAA, 0x55, 0x00, 0xFF, 0x13]).await.is_err() {
                return;
            }
        }
    });
    let port = bus.device.display().to_string();
    let output = tokio::task::spawn_blocking(move || common::gridwatch().args(["probe", "--port", &port, "--baud", "9600"]).output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("but the port is not silent") && stdout.contains("at 9600 baud that no protocol reads") && stdout.contains("A and B swapped"),
        "{stdout}"
    );
}

/// A line-protocol box that reports seldom, its lines coming after probe's first second of
/// listening: an outside tester's box (every 3 s) sent lines during the whole Modbus scan and
/// probe said "nothing answered".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_protocol_box_that_reports_seldom_is_found_in_what_it_said_during_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PtyPair::start(dir.path(), "slow-line").await.expect("socat (package socat)");
    let simulator = bus.simulator.clone();
    let _device = tokio::spawn(async move {
        let mut port = tokio::fs::OpenOptions::new().read(true).write(true).open(&simulator).await.unwrap();
        // Its first line comes after probe's listening, once the questions begin.
        let mut question = [0u8; 8];
        if port.read(&mut question).await.is_err() {
            return;
        }
        for seq in 0.. {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let line = gridwatch_bridge::line::encode("house-09", seq, &[("x", 0.12), ("y", -0.05)]);
            if port.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let port = bus.device.display().to_string();
    let output = tokio::task::spawn_blocking(move || common::gridwatch().args(["probe", "--port", &port, "--baud", "9600"]).output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("gridwatch line protocol, device `house-09`"), "{stdout}");
}
