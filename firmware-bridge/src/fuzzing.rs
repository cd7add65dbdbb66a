//! One entry point per decoder for the fuzz targets in `firmware-bridge/fuzz/` and for the test
//! that replays their corpus (`firmware-bridge/tests/fuzz_corpus.rs`). Each feeds arbitrary
//! bytes through a decoder and checks the invariants that must hold whatever the input; a
//! violation panics, which is what the fuzzer looks for.

use crate::{line, modbus, profile, rion, witmotion};
use std::collections::BTreeMap;

/// The WitMotion stream parser, fed in two pieces.
pub fn witmotion(data: &[u8]) {
    let mut parser = witmotion::StreamParser::new();
    let split = data.len() / 2;
    let mut frames = parser.push(&data[..split]);
    frames.extend(parser.push(&data[split..]));
    assert_eq!(frames.len() as u64, parser.stats.frames);
    for frame in frames {
        assert!(frame.fields().iter().all(|(_, v)| v.is_finite()));
    }
}

/// The RION reply parser.
pub fn rion(data: &[u8]) {
    let mut parser = rion::ReplyParser::new();
    for reply in parser.push(data) {
        if let rion::Reply::Xy { x, y, temperature, .. } = reply {
            assert!([x, y, temperature].iter().all(|v| v.is_finite() && v.abs() < 1000.0));
        }
    }
}

/// The line-protocol parser; every accepted line must re-encode to itself.
pub fn line(data: &[u8]) {
    let mut parser = line::LineParser::new();
    for sample in parser.push(data).into_iter().flatten() {
        assert!(sample.fields.iter().all(|(_, v)| v.is_finite()));
        let fields: Vec<(&str, f64)> = sample.fields.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let again = line::decode(line::encode(&sample.device, sample.seq, &fields).trim_end().as_bytes());
        assert_eq!(again.as_ref(), Ok(&sample));
    }
}

/// The Modbus response parser, for every register count a request could ask.
pub fn modbus(data: &[u8]) {
    let slave = data.first().copied().unwrap_or(1);
    for count in [1u16, 2, 3, 6, 125] {
        if let Ok(Some(modbus::Response::Registers(registers))) = modbus::parse_read_response(data, slave, modbus::ReadFunction::Holding, count) {
            assert_eq!(registers.len(), usize::from(count));
        }
    }
}

/// Profile parsing (the first part of the input as TOML) and decoding (the rest as registers).
pub fn profile(data: &[u8]) {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let Ok(text) = std::str::from_utf8(&data[..split]) else { return };
    let Ok(profile) = profile::Profile::parse("fuzz", text) else { return };
    let registers: BTreeMap<u16, u16> = data[split..].chunks_exact(4).map(|c| (u16::from_be_bytes([c[0], c[1]]), u16::from_be_bytes([c[2], c[3]]))).collect();
    let _ = profile.plan();
    for (_, value) in profile.decode(&registers) {
        assert!(value.is_finite());
    }
}
