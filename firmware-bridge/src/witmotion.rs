//! WitMotion standard protocol (JY901 / WT901 / HWT901B over TTL, RS-232 or USB): a stream of
//! fixed 11-byte frames `0x55, type, D0 D1 D2 D3 (little-endian i16), SUM`, where SUM is the
//! low byte of the sum of the first ten bytes (domain.md §2).
//!
//! [`StreamParser`] is a resynchronising parser: it hunts for 0x55, waits for eleven bytes,
//! checks the sum before consuming, and on a mismatch drops one byte and hunts again.
//! Invariant: no value is ever produced from a frame whose checksum failed; the buffer never
//! holds more than one frame's worth of bytes.

const HEADER: u8 = 0x55;
const FRAME_LEN: usize = 11;

/// One decoded frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Frame {
    /// Type 0x53: roll (x), pitch (y), yaw (z) in degrees; `extra` is D3 (firmware version on
    /// new models, temperature × 100 on old ones).
    Angle { roll: f64, pitch: f64, yaw: f64, extra: i16 },
    /// Type 0x51: acceleration in g and temperature in °C.
    Acceleration { x: f64, y: f64, z: f64, temperature: f64 },
    /// Any other type, with its four raw words.
    Other { kind: u8, words: [i16; 4] },
}

impl Frame {
    /// Named fields in gridwatch's convention (`x`, `y` are the tilt angles in degrees).
    pub fn fields(&self) -> Vec<(String, f64)> {
        match *self {
            Frame::Angle { roll, pitch, yaw, .. } => vec![("x".into(), roll), ("y".into(), pitch), ("z".into(), yaw)],
            Frame::Acceleration { x, y, z, temperature } => {
                vec![("ax".into(), x), ("ay".into(), y), ("az".into(), z), ("temperature".into(), temperature)]
            }
            Frame::Other { .. } => Vec::new(),
        }
    }
}

/// Turns a box's frames into tilt readings: each angle frame's `x`, `y`, `z`, with the box's
/// latest temperature from its acceleration frames (a WitMotion box sends both, several times a
/// second), so that rules can take out what follows the temperature. A temperature outside the
/// box's operating range is not one and is left out.
#[derive(Debug, Default, Clone)]
pub struct TiltReadings {
    temperature: Option<f64>,
}

impl TiltReadings {
    /// The readings of `frames`, in order.
    pub fn take(&mut self, frames: &[Frame]) -> Vec<Vec<(String, f64)>> {
        let mut readings = Vec::new();
        for frame in frames {
            match frame {
                Frame::Acceleration { temperature, .. } => {
                    self.temperature = crate::rion::TEMPERATURE_RANGE.contains(temperature).then_some(*temperature);
                }
                Frame::Angle { .. } => {
                    let mut fields = frame.fields();
                    fields.extend(self.temperature.map(|t| ("temperature".to_string(), t)));
                    readings.push(fields);
                }
                Frame::Other { .. } => {}
            }
        }
        readings
    }
}

/// Counts of what the parser saw, for the per-port counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub frames: u64,
    pub bad_checksums: u64,
    /// Bytes thrown away while hunting for a frame start.
    pub skipped: u64,
}

/// Encodes a frame (tests and simulators use it; firmware does the same).
pub fn encode(kind: u8, words: [i16; 4]) -> [u8; FRAME_LEN] {
    let mut frame = [0u8; FRAME_LEN];
    frame[0] = HEADER;
    frame[1] = kind;
    for (i, word) in words.iter().enumerate() {
        frame[2 + 2 * i..4 + 2 * i].copy_from_slice(&word.to_le_bytes());
    }
    frame[10] = crate::sum8(&frame[..10]);
    frame
}

/// Raw angle word for an angle in degrees (raw / 32768 × 180).
pub fn angle_word(degrees: f64) -> i16 {
    (degrees / 180.0 * 32768.0).round().clamp(i16::MIN as f64, i16::MAX as f64) as i16
}

fn decode(frame: &[u8; FRAME_LEN]) -> Frame {
    let word = |i: usize| i16::from_le_bytes([frame[2 + 2 * i], frame[3 + 2 * i]]);
    let words = [word(0), word(1), word(2), word(3)];
    let angle = |w: i16| f64::from(w) / 32768.0 * 180.0;
    let accel = |w: i16| f64::from(w) / 32768.0 * 16.0;
    match frame[1] {
        0x53 => Frame::Angle { roll: angle(words[0]), pitch: angle(words[1]), yaw: angle(words[2]), extra: words[3] },
        0x51 => Frame::Acceleration { x: accel(words[0]), y: accel(words[1]), z: accel(words[2]), temperature: f64::from(words[3]) / 100.0 },
        kind => Frame::Other { kind, words },
    }
}

/// The resynchronising stream parser.
#[derive(Debug, Default)]
pub struct StreamParser {
    buffer: Vec<u8>,
    pub stats: Stats,
}

impl StreamParser {
    pub fn new() -> StreamParser {
        StreamParser::default()
    }

    /// Feeds bytes as they came off the port; returns the frames completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        for &byte in bytes {
            if self.buffer.is_empty() && byte != HEADER {
                self.stats.skipped += 1;
                continue;
            }
            self.buffer.push(byte);
            while self.buffer.len() == FRAME_LEN {
                if crate::sum8(&self.buffer[..10]) == self.buffer[10] {
                    let mut frame = [0u8; FRAME_LEN];
                    frame.copy_from_slice(&self.buffer);
                    frames.push(decode(&frame));
                    self.stats.frames += 1;
                    self.buffer.clear();
                } else {
                    // Drop the false start and hunt for the next header in what we hold.
                    self.stats.bad_checksums += 1;
                    let next = self.buffer[1..].iter().position(|&b| b == HEADER).map(|p| p + 1);
                    let drop = next.unwrap_or(self.buffer.len());
                    self.stats.skipped += drop as u64;
                    self.buffer.drain(..drop);
                }
            }
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn angle_readings_carry_the_latest_temperature_once_one_is_known() {
        let mut readings = TiltReadings::default();
        let angle = Frame::Angle { roll: 0.5, pitch: -0.25, yaw: 10.0, extra: 0 };
        let warm = Frame::Acceleration { x: 0.0, y: 0.0, z: 1.0, temperature: 21.37 };
        let broken = Frame::Acceleration { x: 0.0, y: 0.0, z: 1.0, temperature: 327.0 };
        let out = readings.take(&[angle, warm, angle, Frame::Other { kind: 0x52, words: [0; 4] }, broken, angle]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], vec![("x".into(), 0.5), ("y".into(), -0.25), ("z".into(), 10.0)], "no temperature seen yet");
        assert_eq!(out[1].last(), Some(&("temperature".to_string(), 21.37)));
        assert!(out[2].iter().all(|(name, _)| name != "temperature"), "327 °C is not a temperature: {:?}", out[2]);
    }
    use crate::hex;
    use proptest::prelude::*;

    #[test]
    fn decodes_the_vectors_from_the_domain_notes() {
        let mut parser = StreamParser::new();
        let frames = parser.push(&hex("55 53 00 00 00 00 00 00 00 00 A8  55 53 11 01 6E FF 00 00 00 00 27  55 51 00 00 00 00 00 08 C4 09 7B"));
        assert_eq!(frames[0], Frame::Angle { roll: 0.0, pitch: 0.0, yaw: 0.0, extra: 0 });
        let Frame::Angle { roll, pitch, yaw, .. } = frames[1] else { panic!("{:?}", frames[1]) };
        assert!((roll - 1.4996).abs() < 1e-4 && (pitch + 0.8020).abs() < 1e-4 && yaw == 0.0, "{roll} {pitch}");
        assert_eq!(frames[2], Frame::Acceleration { x: 0.0, y: 0.0, z: 1.0, temperature: 25.0 });
        assert_eq!(parser.stats, Stats { frames: 3, bad_checksums: 0, skipped: 0 });
    }

    #[test]
    fn a_frame_split_across_reads_is_assembled() {
        let bytes = hex("55 53 11 01 6E FF 00 00 00 00 27");
        let mut parser = StreamParser::new();
        assert!(parser.push(&bytes[..4]).is_empty());
        assert_eq!(parser.push(&bytes[4..]).len(), 1);
    }

    #[test]
    fn a_corrupted_frame_yields_nothing_and_the_next_one_is_found() {
        let mut bytes = hex("55 53 11 01 6E FF 00 00 00 00 27");
        bytes[4] ^= 0x01;
        bytes.extend(encode(0x53, [100, 200, 0, 0]));
        let mut parser = StreamParser::new();
        let frames = parser.push(&bytes);
        assert_eq!(frames.len(), 1);
        assert!(matches!(frames[0], Frame::Angle { .. }));
        assert_eq!(parser.stats.bad_checksums, 1);
    }

    #[test]
    fn a_megabyte_of_noise_is_skipped_with_bounded_memory() {
        let mut parser = StreamParser::new();
        let noise: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let frames = parser.push(&noise);
        assert!(parser.buffer.len() < FRAME_LEN);
        // Random bytes can form a valid frame by chance (1 in 256 per candidate); what matters
        // is that every frame produced passed its checksum, which `push` guarantees.
        assert_eq!(parser.stats.frames as usize, frames.len());
    }

    #[test]
    fn angle_words_round_trip() {
        for degrees in [-179.9, -0.4011, 0.0, 0.0573, 1.4996, 90.0] {
            let back = f64::from(angle_word(degrees)) / 32768.0 * 180.0;
            assert!((back - degrees).abs() <= 180.0 / 32768.0, "{degrees} -> {back}");
        }
    }

    proptest! {
        /// Whatever noise surrounds valid frames, every value produced is one that was sent.
        #[test]
        fn noise_never_produces_a_value_that_was_not_sent(
            sent in proptest::collection::vec(proptest::array::uniform4(any::<i16>()), 1..20),
            noise in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 21),
        ) {
            let mut stream = Vec::new();
            for (i, words) in sent.iter().enumerate() {
                stream.extend(noise[i].iter().filter(|&&b| b != HEADER));
                stream.extend(encode(0x53, *words));
            }
            let mut parser = StreamParser::new();
            let frames = parser.push(&stream);
            let sent_frames: Vec<Frame> = sent.iter().map(|w| decode(&encode(0x53, *w))).collect();
            prop_assert_eq!(frames, sent_frames);
        }

        /// Arbitrary bytes never panic, and the buffer stays bounded.
        #[test]
        fn arbitrary_bytes_are_handled(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut parser = StreamParser::new();
            let _ = parser.push(&bytes);
            prop_assert!(parser.buffer.len() < FRAME_LEN);
        }
    }
}
