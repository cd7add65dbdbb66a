//! RION-style 0x68 inclinometer protocol (request/response, packed BCD), domain.md §2:
//! frame `68 LEN ADDR CMD DATA… CS`, where LEN counts the bytes from LEN to CS (so the frame is
//! LEN + 1 bytes), CS is the low byte of the sum from LEN to the last data byte, and a reply
//! sets CMD | 0x80. Read X+Y is `68 04 ADDR 04 CS`; its reply carries X, Y and temperature as
//! three 3-byte BCD numbers: high nibble of the first byte = sign (1 = negative), then five
//! digits `ddd.dd`.
//!
//! [`ReplyParser`] resynchronises like the WitMotion parser: a frame with a bad checksum or bad
//! BCD digits yields nothing, and hunting restarts one byte later.

const START: u8 = 0x68;
/// Command: read X and Y.
pub const READ_XY: u8 = 0x04;
/// Command: set the current position as zero.
pub const SET_ZERO: u8 = 0x05;
/// Longest frame we accept (LEN is one byte, but real replies are short).
const MAX_FRAME: usize = 64;

/// A request frame: `68 LEN ADDR CMD DATA… CS`.
pub fn request(address: u8, command: u8, data: &[u8]) -> Vec<u8> {
    let mut frame = vec![START, (data.len() + 4) as u8, address, command];
    frame.extend_from_slice(data);
    frame.push(crate::sum8(&frame[1..]));
    frame
}

/// Read X and Y (`68 04 00 04 08` for address 0).
pub fn read_xy(address: u8) -> Vec<u8> {
    request(address, READ_XY, &[])
}

/// Zero the inclinometer at its current position (`68 05 00 05 00 0A` for address 0).
pub fn set_zero(address: u8) -> Vec<u8> {
    request(address, SET_ZERO, &[0x00])
}

/// A decoded reply.
/// Operating temperatures of RION inclinometers, °C: a third value outside is not one.
pub const TEMPERATURE_RANGE: std::ops::RangeInclusive<f64> = -40.0..=85.0;

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Angles in degrees and temperature in °C.
    Xy { address: u8, x: f64, y: f64, temperature: f64 },
    /// Any other reply, with its data bytes.
    Other { address: u8, command: u8, data: Vec<u8> },
}

impl Reply {
    /// The readings: `x`, `y`, and `temperature` when the third value can be one. Some models
    /// send something else there (a real capture reads 159.22): outside the inclinometers'
    /// operating range ([`TEMPERATURE_RANGE`]) it is left out rather than called a temperature.
    pub fn fields(&self) -> Vec<(String, f64)> {
        match self {
            Reply::Xy { x, y, temperature, .. } => {
                let mut fields = vec![("x".into(), *x), ("y".into(), *y)];
                if TEMPERATURE_RANGE.contains(temperature) {
                    fields.push(("temperature".into(), *temperature));
                }
                fields
            }
            Reply::Other { .. } => Vec::new(),
        }
    }
}

/// Decodes a 3-byte packed BCD `s d d | d d | d d` (sign nibble, then ddd.dd).
pub fn decode_bcd(bytes: [u8; 3]) -> Option<f64> {
    let sign = bytes[0] >> 4;
    let digits = [bytes[0] & 0x0F, bytes[1] >> 4, bytes[1] & 0x0F, bytes[2] >> 4, bytes[2] & 0x0F];
    if sign > 1 || digits.iter().any(|&d| d > 9) {
        return None;
    }
    let value = digits.iter().fold(0u32, |acc, &d| acc * 10 + u32::from(d)) as f64 / 100.0;
    Some(if sign == 1 { -value } else { value })
}

/// Encodes a value as 3-byte packed BCD (|value| < 1000, two decimals).
pub fn encode_bcd(value: f64) -> [u8; 3] {
    let hundredths = (value.abs() * 100.0).round().min(99_999.0) as u32;
    let d = |p: u32| ((hundredths / 10u32.pow(p)) % 10) as u8;
    let sign = u8::from(value < 0.0 && hundredths > 0);
    [(sign << 4) | d(4), (d(3) << 4) | d(2), (d(1) << 4) | d(0)]
}

/// A reply to read X+Y (what an inclinometer simulator sends).
pub fn xy_reply(address: u8, x: f64, y: f64, temperature: f64) -> Vec<u8> {
    let mut data = Vec::with_capacity(9);
    for value in [x, y, temperature] {
        data.extend(encode_bcd(value));
    }
    request(address, READ_XY | 0x80, &data)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub frames: u64,
    pub bad_frames: u64,
    pub skipped: u64,
}

/// Resynchronising reply parser.
#[derive(Debug, Default)]
pub struct ReplyParser {
    buffer: Vec<u8>,
    pub stats: Stats,
}

impl ReplyParser {
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    pub fn push(&mut self, bytes: &[u8]) -> Vec<Reply> {
        let mut replies = Vec::new();
        for &byte in bytes {
            if self.buffer.is_empty() && byte != START {
                self.stats.skipped += 1;
                continue;
            }
            self.buffer.push(byte);
            while let Some(outcome) = self.try_frame() {
                match outcome {
                    Ok(Some(reply)) => replies.push(reply),
                    Ok(None) => {}
                    Err(()) => self.resync(),
                }
            }
        }
        replies
    }

    /// `None`: need more bytes. `Some(Err)`: the bytes at the start are not a good frame.
    /// `Some(Ok(None))`: a well-framed reply whose numbers are not valid BCD (counted, dropped).
    fn try_frame(&mut self) -> Option<Result<Option<Reply>, ()>> {
        let len = usize::from(*self.buffer.get(1)?);
        if !(4..MAX_FRAME).contains(&len) {
            return Some(Err(()));
        }
        if self.buffer.len() < len + 1 {
            return None;
        }
        if crate::sum8(&self.buffer[1..len]) != self.buffer[len] {
            return Some(Err(()));
        }
        let frame: Vec<u8> = self.buffer.drain(..len + 1).collect();
        let (address, command, data) = (frame[2], frame[3], &frame[4..len]);
        if command == READ_XY | 0x80 && data.len() == 9 {
            let bcd = |i: usize| decode_bcd([data[i], data[i + 1], data[i + 2]]);
            return Some(Ok(match (bcd(0), bcd(3), bcd(6)) {
                (Some(x), Some(y), Some(temperature)) => {
                    self.stats.frames += 1;
                    Some(Reply::Xy { address, x, y, temperature })
                }
                _ => {
                    self.stats.bad_frames += 1;
                    None
                }
            }));
        }
        self.stats.frames += 1;
        Some(Ok(Some(Reply::Other { address, command, data: data.to_vec() })))
    }

    /// Drops the first byte and hunts for the next start byte.
    fn resync(&mut self) {
        self.stats.bad_frames += 1;
        let next = self.buffer.iter().skip(1).position(|&b| b == START).map_or(self.buffer.len(), |p| p + 1);
        self.stats.skipped += next as u64;
        self.buffer.drain(..next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use proptest::prelude::*;

    #[test]
    fn requests_match_the_domain_vectors() {
        assert_eq!(read_xy(0), hex("68 04 00 04 08"));
        assert_eq!(set_zero(0), hex("68 05 00 05 00 0A"));
    }

    #[test]
    fn decodes_the_domain_reply() {
        let mut parser = ReplyParser::new();
        let replies = parser.push(&hex("68 0D 00 84 00 01 23 10 00 45 00 26 50 80"));
        assert_eq!(replies, vec![Reply::Xy { address: 0, x: 1.23, y: -0.45, temperature: 26.5 }]);
        assert_eq!(xy_reply(0, 1.23, -0.45, 26.5), hex("68 0D 00 84 00 01 23 10 00 45 00 26 50 80"));
    }

    #[test]
    fn bad_checksum_or_bcd_yields_nothing() {
        let mut bad_sum = hex("68 0D 00 84 00 01 23 10 00 45 00 26 50 81");
        bad_sum.extend(xy_reply(0, 0.5, 0.25, 20.0));
        let mut parser = ReplyParser::new();
        assert_eq!(parser.push(&bad_sum), vec![Reply::Xy { address: 0, x: 0.5, y: 0.25, temperature: 20.0 }]);
        assert!(parser.stats.bad_frames >= 1);

        let mut bad_bcd = hex("68 0D 00 84 0A 01 23 10 00 45 00 26 50");
        let sum = crate::sum8(&bad_bcd[1..]);
        bad_bcd.push(sum);
        assert!(ReplyParser::new().push(&bad_bcd).is_empty());
    }

    proptest! {
        #[test]
        fn bcd_round_trips(hundredths in -99_999i32..=99_999) {
            let value = f64::from(hundredths) / 100.0;
            prop_assert_eq!(decode_bcd(encode_bcd(value)), Some(value));
        }

        #[test]
        fn noise_never_produces_a_reading_that_was_not_sent(
            sent in proptest::collection::vec((-9000i32..9000, -9000i32..9000), 1..10),
            noise in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 11),
        ) {
            let mut stream = Vec::new();
            for (i, (x, y)) in sent.iter().enumerate() {
                stream.extend(noise[i].iter().filter(|&&b| b != START));
                stream.extend(xy_reply(1, f64::from(*x) / 100.0, f64::from(*y) / 100.0, 21.0));
            }
            let replies = ReplyParser::new().push(&stream);
            let expected: Vec<Reply> = sent.iter().map(|(x, y)| Reply::Xy { address: 1, x: f64::from(*x) / 100.0, y: f64::from(*y) / 100.0, temperature: 21.0 }).collect();
            prop_assert_eq!(replies, expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1000)) {
            let mut parser = ReplyParser::new();
            let _ = parser.push(&bytes);
            prop_assert!(parser.buffer.len() < MAX_FRAME + 1);
        }
    }

    #[test]
    fn a_third_value_that_cannot_be_a_temperature_is_left_out() {
        let reply = |temperature| Reply::Xy { address: 0, x: 0.12, y: -0.3, temperature };
        assert_eq!(reply(21.5).fields().len(), 3);
        assert_eq!(reply(159.22).fields(), vec![("x".to_string(), 0.12), ("y".to_string(), -0.3)]);
    }
}
