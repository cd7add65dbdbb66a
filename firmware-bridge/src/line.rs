//! The gridwatch line protocol, for boxes we build ourselves (docs/firmware-protocol.md):
//!
//! ```text
//! $GW,<device>,<seq>,<field>=<value>[,<field>=<value>…]*<CRC>\r?\n
//! $GW,house-07,42,x=0.1234,y=-0.0567,t=21.5*8FAD
//! ```
//!
//! Text, one sample per line; `<device>` is 1–32 of `A-Z a-z 0-9 - _ .`; `<seq>` a decimal
//! counter (0–4294967295) the box increments per line; fields are 1–16 `name=value` pairs,
//! names `[a-z][a-z0-9_]{0,31}`, values decimal numbers (no NaN, no infinity); `<CRC>` is
//! CRC-16/MODBUS of the bytes between `$` and `*` (exclusive), as four uppercase hex digits.
//! A line is at most [`MAX_LINE`] bytes; anything longer is skipped up to the next newline.
//!
//! [`LineParser`] never yields a value from a line whose CRC or syntax is wrong, and its
//! buffer never holds more than [`MAX_LINE`] bytes.

use crate::modbus::crc16;

/// Longest line, newline included.
pub const MAX_LINE: usize = 256;
const MAX_FIELDS: usize = 16;

/// One line's sample.
#[derive(Debug, Clone, PartialEq)]
pub struct LineSample {
    pub device: String,
    pub seq: u32,
    pub fields: Vec<(String, f64)>,
}

/// Why a line was not a sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("line does not start with $GW,")]
    NoStart,
    #[error("no *CRC at the end")]
    NoCrc,
    #[error("CRC mismatch: line says {received:04X}, computed {computed:04X}")]
    BadCrc { received: u16, computed: u16 },
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// Encodes a sample as a line (with `\n`). Non-finite values are left out.
pub fn encode(device: &str, seq: u32, fields: &[(&str, f64)]) -> String {
    let mut body = format!("GW,{device},{seq}");
    for (name, value) in fields.iter().filter(|(_, v)| v.is_finite()) {
        body.push_str(&format!(",{name}={value}"));
    }
    format!("${body}*{:04X}\n", crc16(body.as_bytes()))
}

fn valid_device(text: &str) -> bool {
    (1..=32).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn valid_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    (1..=32).contains(&bytes.len()) && bytes[0].is_ascii_lowercase() && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// Decodes one line (without its newline).
pub fn decode(line: &[u8]) -> Result<LineSample, LineError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() >= MAX_LINE {
        return Err(LineError::TooLong);
    }
    let body = line.strip_prefix(b"$").ok_or(LineError::NoStart)?;
    if !body.starts_with(b"GW,") {
        return Err(LineError::NoStart);
    }
    let star = body.iter().rposition(|&b| b == b'*').ok_or(LineError::NoCrc)?;
    let (payload, crc_text) = (&body[..star], &body[star + 1..]);
    let received = std::str::from_utf8(crc_text)
        .ok()
        .filter(|t| t.len() == 4 && t.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
        .and_then(|t| u16::from_str_radix(t, 16).ok())
        .ok_or(LineError::NoCrc)?;
    let computed = crc16(payload);
    if received != computed {
        return Err(LineError::BadCrc { received, computed });
    }
    let text = std::str::from_utf8(payload).map_err(|_| LineError::Malformed("not text"))?;
    let mut parts = text.split(',').skip(1);
    let device = parts.next().filter(|d| valid_device(d)).ok_or(LineError::Malformed("device id"))?;
    let seq = parts.next().and_then(|s| s.parse::<u32>().ok()).ok_or(LineError::Malformed("sequence number"))?;
    let mut fields = Vec::new();
    for part in parts {
        let (name, value) = part.split_once('=').ok_or(LineError::Malformed("field without ="))?;
        if !valid_name(name) {
            return Err(LineError::Malformed("field name"));
        }
        let value: f64 = value.parse().map_err(|_| LineError::Malformed("field value"))?;
        if !value.is_finite() {
            return Err(LineError::Malformed("NaN or infinite value"));
        }
        fields.push((name.to_string(), value));
    }
    if fields.is_empty() || fields.len() > MAX_FIELDS {
        return Err(LineError::Malformed("number of fields"));
    }
    Ok(LineSample { device: device.to_string(), seq, fields })
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub lines: u64,
    pub bad_lines: u64,
    pub too_long: u64,
}

/// Splits a byte stream into lines and decodes them.
#[derive(Debug, Default)]
pub struct LineParser {
    buffer: Vec<u8>,
    /// Inside a line that is already too long: skip to the next newline.
    skipping: bool,
    pub stats: Stats,
}

impl LineParser {
    pub fn new() -> LineParser {
        LineParser::default()
    }

    /// Feeds bytes; returns each complete line's outcome.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Result<LineSample, LineError>> {
        let mut out = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                if self.skipping {
                    self.skipping = false;
                } else if !self.buffer.is_empty() {
                    let outcome = decode(&self.buffer);
                    match &outcome {
                        Ok(_) => self.stats.lines += 1,
                        Err(_) => self.stats.bad_lines += 1,
                    }
                    out.push(outcome);
                }
                self.buffer.clear();
                continue;
            }
            if self.skipping {
                continue;
            }
            self.buffer.push(byte);
            if self.buffer.len() >= MAX_LINE {
                self.buffer.clear();
                self.skipping = true;
                self.stats.too_long += 1;
                out.push(Err(LineError::TooLong));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_documented_vectors_hold() {
        // docs/firmware-protocol.md lists these lines; keep the two in step.
        assert_eq!(encode("house-07", 42, &[("x", 0.1234), ("y", -0.0567), ("t", 21.5)]), "$GW,house-07,42,x=0.1234,y=-0.0567,t=21.5*8FAD\n");
        assert_eq!(encode("canal-02", 7, &[("do", 4.87), ("ph", 7.2)]), "$GW,canal-02,7,do=4.87,ph=7.2*4888\n");
        let sample = decode(b"$GW,house-07,42,x=0.1234,y=-0.0567,t=21.5*8FAD").unwrap();
        assert_eq!(sample, LineSample { device: "house-07".into(), seq: 42, fields: vec![("x".into(), 0.1234), ("y".into(), -0.0567), ("t".into(), 21.5)] });
    }

    #[test]
    fn each_kind_of_bad_line_is_named() {
        assert_eq!(decode(b"GW,a,1,x=1*0000"), Err(LineError::NoStart));
        assert_eq!(decode(b"$GW,a,1,x=1"), Err(LineError::NoCrc));
        assert!(matches!(decode(b"$GW,house-07,42,x=0.1234,y=-0.0567,t=21.6*8FAD"), Err(LineError::BadCrc { .. })));
        let body = "GW,a,1,x=NaN";
        assert_eq!(decode(format!("${body}*{:04X}", crc16(body.as_bytes())).as_bytes()), Err(LineError::Malformed("NaN or infinite value")));
        let body = "GW,a b,1,x=1";
        assert_eq!(decode(format!("${body}*{:04X}", crc16(body.as_bytes())).as_bytes()), Err(LineError::Malformed("device id")));
    }

    #[test]
    fn a_megabyte_without_a_newline_is_skipped_and_the_next_line_read() {
        let mut parser = LineParser::new();
        let junk = vec![b'A'; 1_000_000];
        let outcomes = parser.push(&junk);
        assert_eq!(outcomes, vec![Err(LineError::TooLong)]);
        assert!(parser.buffer.len() < MAX_LINE);
        let good = encode("house-07", 1, &[("x", 0.5)]);
        let outcomes = parser.push(format!("\n{good}").as_bytes());
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].as_ref().map(|s| s.seq), Ok(1));
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            device in "[a-z0-9][a-z0-9_.-]{0,20}",
            seq in any::<u32>(),
            fields in proptest::collection::vec(("[a-z][a-z0-9_]{0,10}", -1e6f64..1e6), 1..8),
        ) {
            let borrowed: Vec<(&str, f64)> = fields.iter().map(|(n, v)| (n.as_str(), *v)).collect();
            let line = encode(&device, seq, &borrowed);
            let mut parser = LineParser::new();
            let out = parser.push(line.as_bytes());
            prop_assert_eq!(out, vec![Ok(LineSample { device, seq, fields })]);
        }

        /// A corrupted byte never yields a value that was not sent.
        #[test]
        fn a_flipped_byte_is_caught(position in 1usize..40, flip in 1u8..=255) {
            let line = encode("house-07", 42, &[("x", 0.1234), ("y", -0.0567), ("t", 21.5)]);
            let mut bytes = line.into_bytes();
            let position = position.min(bytes.len() - 2);
            bytes[position] ^= flip;
            if let Some(Ok(sample)) = LineParser::new().push(&bytes).into_iter().next() {
                prop_assert_eq!(sample, decode(b"$GW,house-07,42,x=0.1234,y=-0.0567,t=21.5*8FAD").unwrap());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let mut parser = LineParser::new();
            let _ = parser.push(&bytes);
            prop_assert!(parser.buffer.len() < MAX_LINE);
        }
    }
}
