//! The crash log: every reading since the rule state was last saved, appended to segment files
//! `unsaved-<n>.log` beside the database, judged again after a crash (see [`super::unsaved`]).
//! An append touches only the end of one file — a page of a card written once per writeback for
//! many readings, not a SQLite page per commit.
//!
//! A reading InfluxDB has committed is appended without a sync: the page cache survives the
//! daemon's death, and a power cut costs at most the judging of the last seconds again (the
//! readings themselves are in InfluxDB). A reading InfluxDB has not taken (no InfluxDB, or it
//! lags) is synced before its acknowledgement, like the spool.
//!
//! A segment is compact binary (a quiet community's card pays for every page an append dirties
//! again after the kernel wrote it back, so bytes per reading count): the magic
//! [`BINARY_MAGIC`], then one frame per append of at most [`READINGS_PER_FRAME`] readings or
//! [`FRAME_CLOSED_AT`] bytes — [`FRAME_MARK`], `len` (varint), the readings, CRC-32C of them
//! (4 bytes, little-endian). A reading is its sensor id, its time (zigzag varint of ms), and its
//! fields as name and value; a value with at most nine decimals is written as those digits (6.997
//! as 6997 and 3), any other as its eight bytes — every value comes back bit for bit. A frame cut short or whose check fails (a torn
//! tail, a damaged block) is skipped and its bytes counted; reading takes up again at the next
//! frame whose mark, length and check hold. Segments of older versions, one JSON line per
//! reading, are still read.
//!
//! Invariants: each run appends to a new segment (a torn tail stays at the end of its own file,
//! where it is skipped and counted); a segment is deleted only when a saved rule state has
//! judged every reading in it; segments are read back in the order they were written.

use gridwatch_rules::Millis;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The first bytes of a binary segment (older segments start with `[`).
const BINARY_MAGIC: &[u8] = b"GWLOG2\n";
/// The first bytes of every frame: where a reader takes up again after a damaged part.
const FRAME_MARK: [u8; 2] = [0xF7, 0x4C];
/// Readings in one frame at most: a reader's batch ends at a frame's end.
const READINGS_PER_FRAME: usize = 256;
/// A frame is closed once it holds this many bytes (a reading's size is bounded by the ingest
/// limits, far below [`FRAME_AT_MOST`]).
const FRAME_CLOSED_AT: usize = 1024 * 1024;
/// A frame longer than this is not one (a damaged length).
const FRAME_AT_MOST: u64 = 64 * 1024 * 1024;
/// Bytes looked through at once for the next frame after a damaged part.
const RESYNC_CHUNK: usize = 256 * 1024;
/// The value marker of a value written as its eight bytes.
const RAW_VALUE: u8 = 0xFF;
/// Powers of ten by the decimals a value written as digits has (exact as doubles).
const SCALES: [f64; 10] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

const FRAME_CHECK: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// One reading as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedReading {
    pub sensor: String,
    pub ts: Millis,
    pub fields: Vec<(String, f64)>,
}

/// Where reading back the log got to: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCursor {
    pub segment: u64,
    pub offset: u64,
    /// In the log kept beside the card (the runtime directory), read after the card's.
    pub beside_card: bool,
}

#[derive(Debug)]
pub struct CrashLog {
    dir: PathBuf,
    /// The segment this run appends to, opened at the first append.
    current: Option<(u64, File)>,
    /// The number of the next segment.
    next: u64,
    /// Whether the current segment's directory entry is on disk.
    entry_synced: bool,
}

impl CrashLog {
    pub fn open(dir: &Path) -> CrashLog {
        let next = segments(dir).last().map_or(1, |(n, _)| n + 1);
        CrashLog { dir: dir.to_path_buf(), current: None, next, entry_synced: false }
    }

    /// Appends `readings` (written to the page cache, not synced).
    pub fn append<'a>(&mut self, readings: impl Iterator<Item = (&'a str, Millis, &'a [(String, f64)])>) -> std::io::Result<()> {
        let (mut frames, mut frame, mut in_frame) = (Vec::with_capacity(4096), Vec::with_capacity(4096), 0);
        for (sensor, ts, fields) in readings {
            encode_reading(&mut frame, sensor, ts, fields);
            in_frame += 1;
            if in_frame == READINGS_PER_FRAME || frame.len() >= FRAME_CLOSED_AT {
                close_frame(&mut frames, &frame);
                frame.clear();
                in_frame = 0;
            }
        }
        if in_frame > 0 {
            close_frame(&mut frames, &frame);
        }
        if frames.is_empty() {
            return Ok(());
        }
        if self.current.is_none() {
            let number = self.next;
            let file = std::fs::OpenOptions::new().create(true).append(true).open(segment_path(&self.dir, number))?;
            self.next += 1;
            self.entry_synced = false;
            self.current = Some((number, file));
            frames.splice(0..0, BINARY_MAGIC.iter().copied());
        }
        let written = match &mut self.current {
            Some((_, file)) => file.write_all(&frames),
            None => Ok(()),
        };
        if written.is_err() {
            // What was cut short is a torn tail; later readings go to a segment of their own.
            self.current = None;
        }
        written
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> std::io::Result<()> {
        let Some((_, file)) = &self.current else { return Ok(()) };
        file.sync_data()?;
        if !self.entry_synced {
            File::open(&self.dir)?.sync_all()?;
            self.entry_synced = true;
        }
        Ok(())
    }

    /// Starts a new segment and deletes every segment whose readings a saved rule state has all
    /// judged (per sensor, at or before `judged_until`, which names every sensor of the
    /// inventory: a reading of a sensor it does not name can never be judged, nor can a torn
    /// tail); returns how many readings left.
    pub fn forget_judged(&mut self, judged_until: &HashMap<String, Millis>) -> std::io::Result<u64> {
        self.current = None;
        let mut forgotten = 0;
        for (_, path) in segments(&self.dir) {
            // Frame by frame: a minute of readings at a busy box is tens of megabytes as values.
            let mut segment = Segment::open(&path, 0)?;
            let (mut count, mut judged) = (0, true);
            while judged {
                let Some(batch) = segment.next_batch()? else { break };
                count += batch.readings.len() as u64;
                judged = batch.readings.iter().all(|r| judged_until.get(&r.sensor).is_none_or(|until| r.ts <= *until));
            }
            if judged {
                std::fs::remove_file(&path)?;
                forgotten += count;
            }
        }
        Ok(forgotten)
    }

    /// The bytes its segments take (this run's included).
    pub fn bytes(&self) -> u64 {
        segments(&self.dir).iter().filter_map(|(_, path)| std::fs::metadata(path).ok()).map(|m| m.len()).sum()
    }

    /// Whether the log holds any segment (this run's included).
    pub fn holds_any(&self) -> bool {
        !segments(&self.dir).is_empty()
    }

    /// Deletes every segment (their readings were copied elsewhere).
    pub fn clear(&mut self) -> std::io::Result<()> {
        self.current = None;
        for (_, path) in segments(&self.dir) {
            std::fs::remove_file(&path)?;
        }
        Ok(())
    }

    /// Every reading of every segment, this run's included, in order, and the bytes that could
    /// not be read.
    pub fn read_all(&self) -> std::io::Result<(Vec<LoggedReading>, u64)> {
        let (mut readings, mut unreadable) = (Vec::new(), 0);
        for (_, path) in segments(&self.dir) {
            let mut segment = Segment::open(&path, 0)?;
            while let Some(batch) = segment.next_batch()? {
                unreadable += batch.unreadable_bytes;
                readings.extend(batch.readings);
            }
        }
        Ok((readings, unreadable))
    }

    /// About `limit` readings from `cursor` on (a frame is not split), in the order they were
    /// appended, and the cursor after them; the third value is the bytes that could not be read
    /// (a torn tail, a damaged block).
    pub fn read(&self, cursor: LogCursor, limit: usize) -> std::io::Result<(Vec<LoggedReading>, LogCursor, u64)> {
        let mut unreadable = 0;
        for (number, path) in segments(&self.dir) {
            if number < cursor.segment || self.current.as_ref().is_some_and(|(current, _)| *current == number) {
                continue;
            }
            let offset = if number == cursor.segment { cursor.offset } else { 0 };
            let mut segment = Segment::open(&path, offset)?;
            let mut readings = Vec::new();
            while readings.len() < limit {
                let Some(batch) = segment.next_batch()? else { break };
                unreadable += batch.unreadable_bytes;
                readings.extend(batch.readings);
            }
            if !readings.is_empty() || segment.offset > offset {
                return Ok((readings, LogCursor { segment: number, offset: segment.offset, beside_card: cursor.beside_card }, unreadable));
            }
        }
        Ok((Vec::new(), cursor, unreadable))
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("unsaved-{number}.log"))
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let number = name.to_str()?.strip_prefix("unsaved-")?.strip_suffix(".log")?.parse().ok()?;
            Some((number, entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// A segment read from an offset, a frame (or, in an older segment, a line) at a time.
struct Segment {
    file: BufReader<File>,
    binary: bool,
    /// The byte after what was read.
    offset: u64,
}

impl Segment {
    fn open(path: &Path, offset: u64) -> std::io::Result<Segment> {
        let mut file = BufReader::with_capacity(64 * 1024, File::open(path)?);
        let mut magic = [0u8; BINARY_MAGIC.len()];
        let binary = file.read_exact(&mut magic).is_ok() && magic == BINARY_MAGIC;
        let offset = if binary { offset.max(BINARY_MAGIC.len() as u64) } else { offset };
        file.seek(SeekFrom::Start(offset))?;
        Ok(Segment { file, binary, offset })
    }

    /// The readings of the next frame or line and the bytes skipped before them, or `None` at
    /// the end.
    fn next_batch(&mut self) -> std::io::Result<Option<Batch>> {
        if !self.binary {
            let mut line = Vec::new();
            let read = self.file.read_until(b'\n', &mut line)?;
            self.offset += read as u64;
            return Ok((read > 0).then(|| match parse_line(&line) {
                Some(reading) => Batch { readings: vec![reading], unreadable_bytes: 0 },
                None => Batch { readings: Vec::new(), unreadable_bytes: read as u64 },
            }));
        }
        let start = self.offset;
        let batch = match read_frame(&mut self.file)? {
            Frame::End => return Ok(None),
            Frame::Readings(readings) => Batch { readings, unreadable_bytes: 0 },
            Frame::Damaged => {
                let (readings, next) = self.take_up_after(start)?;
                Batch { readings, unreadable_bytes: next - start }
            }
        };
        self.offset = self.file.stream_position()?;
        Ok(Some(batch))
    }

    /// Looks for the first whole frame after a damaged one at `start`: its readings and where
    /// it begins (the file is left after it), or none and the end of the file.
    fn take_up_after(&mut self, start: u64) -> std::io::Result<(Vec<LoggedReading>, u64)> {
        let mut from = start + 1;
        loop {
            self.file.seek(SeekFrom::Start(from))?;
            let mut chunk = Vec::with_capacity(RESYNC_CHUNK);
            (&mut self.file).take(RESYNC_CHUNK as u64).read_to_end(&mut chunk)?;
            if chunk.len() < FRAME_MARK.len() {
                return Ok((Vec::new(), from + chunk.len() as u64));
            }
            for at in 0..=chunk.len() - FRAME_MARK.len() {
                if chunk[at..at + FRAME_MARK.len()] != FRAME_MARK {
                    continue;
                }
                let candidate = from + at as u64;
                self.file.seek(SeekFrom::Start(candidate))?;
                if let Frame::Readings(readings) = read_frame(&mut self.file)? {
                    return Ok((readings, candidate));
                }
            }
            // The last byte may begin a mark that goes on in the next chunk.
            from += (chunk.len() - 1) as u64;
        }
    }
}

/// What one step through a segment gave.
struct Batch {
    readings: Vec<LoggedReading>,
    /// Bytes skipped before them that could not be read.
    unreadable_bytes: u64,
}

/// A frame as read from where a segment's reader stands.
enum Frame {
    Readings(Vec<LoggedReading>),
    /// Not a whole frame: cut short, damaged, or not one at all.
    Damaged,
    /// Nothing more to read.
    End,
}

fn read_frame(file: &mut BufReader<File>) -> std::io::Result<Frame> {
    let mut mark = [0u8; FRAME_MARK.len()];
    if file.read(&mut mark[..1])? == 0 {
        return Ok(Frame::End);
    }
    if file.read_exact(&mut mark[1..]).is_err() || mark != FRAME_MARK {
        return Ok(Frame::Damaged);
    }
    let len = match read_varint(file) {
        Ok(Some(len)) if len > 0 && len <= FRAME_AT_MOST => len,
        Ok(_) | Err(_) => return Ok(Frame::Damaged),
    };
    let mut frame = vec![0u8; len as usize + 4];
    if file.read_exact(&mut frame).is_err() {
        return Ok(Frame::Damaged);
    }
    let check = frame.split_off(len as usize);
    if FRAME_CHECK.checksum(&frame).to_le_bytes()[..] != check[..] {
        return Ok(Frame::Damaged);
    }
    Ok(decode_frame(&frame).map_or(Frame::Damaged, Frame::Readings))
}

/// A line of an older segment as a reading; `None` for one that is not (a torn tail).
fn parse_line(line: &[u8]) -> Option<LoggedReading> {
    let (sensor, ts, fields) = serde_json::from_slice::<(String, Millis, Vec<(String, f64)>)>(line).ok()?;
    Some(LoggedReading { sensor, ts, fields })
}

fn close_frame(out: &mut Vec<u8>, frame: &[u8]) {
    out.extend_from_slice(&FRAME_MARK);
    write_varint(out, frame.len() as u64);
    out.extend_from_slice(frame);
    out.extend_from_slice(&FRAME_CHECK.checksum(frame).to_le_bytes());
}

fn encode_reading(out: &mut Vec<u8>, sensor: &str, ts: Millis, fields: &[(String, f64)]) {
    write_text(out, sensor);
    write_varint(out, zigzag(ts));
    write_varint(out, fields.len() as u64);
    for (name, value) in fields {
        write_text(out, name);
        encode_value(out, *value);
    }
}

/// A value as its decimal digits where that gives it back bit for bit, else its eight bytes.
fn encode_value(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        for (decimals, scale) in (0u8..).zip(SCALES) {
            let digits = (value * scale).round();
            if digits.abs() < 9.0e15 && ((digits as i64) as f64 / scale).to_bits() == value.to_bits() {
                out.push(decimals);
                write_varint(out, zigzag(digits as i64));
                return;
            }
        }
    }
    out.push(RAW_VALUE);
    out.extend_from_slice(&value.to_le_bytes());
}

fn decode_frame(mut frame: &[u8]) -> Option<Vec<LoggedReading>> {
    let mut readings = Vec::new();
    while !frame.is_empty() {
        let sensor = read_text(&mut frame)?;
        let ts = unzigzag(read_varint(&mut frame).ok()??);
        let count = read_varint(&mut frame).ok()??;
        let mut fields = Vec::with_capacity(count.min(64) as usize);
        for _ in 0..count {
            let name = read_text(&mut frame)?;
            let (&marker, rest) = frame.split_first()?;
            frame = rest;
            let value = if marker == RAW_VALUE {
                let (bytes, rest) = frame.split_first_chunk::<8>()?;
                frame = rest;
                f64::from_le_bytes(*bytes)
            } else {
                unzigzag(read_varint(&mut frame).ok()??) as f64 / SCALES.get(usize::from(marker))?
            };
            fields.push((name, value));
        }
        readings.push(LoggedReading { sensor, ts, fields });
    }
    Some(readings)
}

fn write_text(out: &mut Vec<u8>, text: &str) {
    write_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn read_text(input: &mut &[u8]) -> Option<String> {
    let len = usize::try_from(read_varint(input).ok()??).ok()?;
    if len > input.len() {
        return None;
    }
    let (text, rest) = input.split_at(len);
    *input = rest;
    String::from_utf8(text.to_vec()).ok()
}

/// LEB128: seven bits a byte, low bits first.
fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A varint, `None` at the end of the input before its first byte; an error when it is cut
/// short or longer than a u64.
fn read_varint(input: &mut impl Read) -> std::io::Result<Option<u64>> {
    let (mut value, mut shift) = (0u64, 0);
    loop {
        let mut byte = [0u8; 1];
        if input.read(&mut byte)? == 0 {
            return if shift == 0 { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        if shift > 63 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        value |= u64::from(byte[0] & 0x7F) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
        shift += 7;
    }
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(log: &mut CrashLog, readings: &[(&str, Millis)]) {
        let fields = vec![("x".to_string(), 0.5)];
        log.append(readings.iter().map(|(sensor, ts)| (*sensor, *ts, fields.as_slice()))).unwrap();
    }

    fn all(log: &CrashLog) -> (Vec<(String, Millis)>, u64) {
        let (mut cursor, mut seen, mut unreadable) = (LogCursor::default(), Vec::new(), 0);
        loop {
            let (readings, next, bad) = log.read(cursor, 2).unwrap();
            unreadable += bad;
            if next == cursor {
                return (seen, unreadable);
            }
            seen.extend(readings.into_iter().map(|r| (r.sensor, r.ts)));
            cursor = next;
        }
    }

    #[test]
    fn readings_come_back_in_order_across_runs_and_a_torn_tail_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = CrashLog::open(dir.path());
        append(&mut first, &[("house-07", 1_000), ("house-08", 1_500)]);
        append(&mut first, &[("house-07", 2_000)]);
        append(&mut first, &[("house-07", 2_500)]);
        first.sync().unwrap();
        drop(first);
        // The power went while the last frame was being written: its end never reached the card.
        let torn = dir.path().join("unsaved-1.log");
        let length = std::fs::metadata(&torn).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&torn).unwrap().set_len(length - 3).unwrap();
        let mut second = CrashLog::open(dir.path());
        append(&mut second, &[("house-07", 3_000)]);
        let reader = CrashLog::open(dir.path());
        let (seen, unreadable) = all(&reader);
        let expected: Vec<(String, Millis)> =
            [("house-07", 1_000), ("house-08", 1_500), ("house-07", 2_000), ("house-07", 3_000)].iter().map(|(s, t)| (s.to_string(), *t)).collect();
        assert_eq!(seen, expected, "the second run appends to its own segment");
        assert!((1..40).contains(&unreadable), "the torn frame's bytes are skipped and counted: {unreadable}");
    }

    #[test]
    fn a_tail_of_zeros_or_a_changed_byte_is_a_torn_tail_not_a_reading() {
        for damage in ["zeros", "flipped"] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = CrashLog::open(dir.path());
            append(&mut log, &[("house-07", 1_000)]);
            append(&mut log, &[("house-08", 1_500)]);
            drop(log);
            let path = dir.path().join("unsaved-1.log");
            let mut bytes = std::fs::read(&path).unwrap();
            let length = bytes.len() as u64;
            match damage {
                "zeros" => bytes.extend_from_slice(&[0; 4096]),
                _ => *bytes.last_mut().unwrap() ^= 0x10,
            }
            std::fs::write(&path, bytes).unwrap();
            let (seen, unreadable) = all(&CrashLog::open(dir.path()));
            let whole = if damage == "zeros" { 2 } else { 1 };
            assert_eq!(seen, [("house-07".to_string(), 1_000), ("house-08".to_string(), 1_500)][..whole], "{damage}");
            // Two frames of the same size: the flipped byte costs the second.
            let skipped = if damage == "zeros" { 4096 } else { (length - BINARY_MAGIC.len() as u64) / 2 };
            assert_eq!(unreadable, skipped, "{damage}");
        }
    }

    #[test]
    fn every_value_comes_back_bit_for_bit() {
        let mut values =
            vec![0.0, -0.0, 6.997, -12.5, 0.15, 0.1 + 0.2, 1e-300, 5e-324, 1e300, -1e15, 123_456_789.123, f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
        let mut random = fastrand::Rng::with_seed(20);
        for _ in 0..20_000 {
            values.push(f64::from_bits(random.u64(..)));
            values.push(f64::from(f32::from_bits(random.u32(..))));
            values.push((random.f64() - 0.5) * 10f64.powi(random.i32(-6..12)));
            values.push(f64::from(random.i32(-100_000..100_000)) / 10f64.powi(random.i32(0..9)));
        }
        let fields: Vec<(String, f64)> = values.iter().enumerate().map(|(i, v)| (format!("f{i}"), *v)).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut log = CrashLog::open(dir.path());
        log.append(std::iter::once(("probe-1", -5, fields.as_slice()))).unwrap();
        log.append(std::iter::once(("probe-1", i64::MAX, &fields[..3]))).unwrap();
        drop(log);
        let (readings, _, unreadable) = CrashLog::open(dir.path()).read(LogCursor::default(), 10).unwrap();
        assert_eq!(unreadable, 0);
        assert_eq!(readings.iter().map(|r| r.ts).collect::<Vec<_>>(), vec![-5, i64::MAX]);
        for ((name, sent), (read_name, read)) in fields.iter().zip(&readings[0].fields) {
            assert_eq!((name, sent.to_bits()), (read_name, read.to_bits()), "{sent:e} came back as {read:e}");
        }
    }

    #[test]
    fn a_reading_costs_less_than_two_thirds_of_its_json_line() {
        let fields: Vec<(String, f64)> = [("do", 6.997), ("marker", 0.0), ("nh3n", 0.3), ("ph", 7.3)].iter().map(|(n, v)| (n.to_string(), *v)).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut log = CrashLog::open(dir.path());
        for i in 0..1_000 {
            log.append(std::iter::once(("p179", 1_796_392_212_728 + i * 335, fields.as_slice()))).unwrap();
        }
        drop(log);
        let binary = std::fs::metadata(dir.path().join("unsaved-1.log")).unwrap().len();
        let json = serde_json::to_vec(&("p179", 1_796_392_212_728i64, &fields)).unwrap().len() as u64 + 1;
        assert!(binary * 3 <= json * 2 * 1_000, "{} B per reading as frames of one, {json} B as JSON", binary / 1_000);
    }

    #[test]
    fn a_segment_of_an_older_version_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("unsaved-1.log"), b"[\"house-07\",1000,[[\"x\",0.5]]]\n[\"house-08\",1500,[[\"x\",0.25]]]\n[\"house-07\",20").unwrap();
        let mut log = CrashLog::open(dir.path());
        append(&mut log, &[("house-07", 3_000)]);
        let (seen, unreadable) = all(&CrashLog::open(dir.path()));
        let expected: Vec<(String, Millis)> =
            [("house-07", 1_000), ("house-08", 1_500), ("house-07", 3_000)].iter().map(|(s, t)| (s.to_string(), *t)).collect();
        assert_eq!(seen, expected);
        assert_eq!(unreadable, 14, "the older segment's torn line");
    }

    #[test]
    fn a_damaged_block_in_the_middle_loses_only_the_readings_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = CrashLog::open(dir.path());
        for ts in 0..1_500 {
            append(&mut log, &[("house-07", ts)]);
        }
        drop(log);
        let path = dir.path().join("unsaved-1.log");
        let mut bytes = std::fs::read(&path).unwrap();
        let frame = (bytes.len() - BINARY_MAGIC.len()) / 1_500;
        bytes[4096..8192].fill(0);
        std::fs::write(&path, bytes).unwrap();
        let (seen, unreadable) = all(&CrashLog::open(dir.path()));
        let lost = 1_500 - seen.len();
        assert!(lost <= 4096 / frame + 2, "{lost} readings lost to a 4 KB hole in frames of {frame} B");
        assert!(seen.windows(2).all(|pair| pair[0].1 < pair[1].1), "in order");
        assert_eq!(seen.last().unwrap().1, 1_499, "read on after the hole");
        assert!((4096..4096 + 2 * frame as u64).contains(&unreadable), "{unreadable} bytes skipped");
    }

    #[test]
    fn large_readings_are_framed_so_that_every_one_comes_back() {
        let fields: Vec<(String, f64)> = (0..100).map(|i| (format!("{i:0>200}"), f64::from(i) / 7.0)).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut log = CrashLog::open(dir.path());
        log.append((0..60).map(|ts| ("probe-1", ts, fields.as_slice()))).unwrap();
        drop(log);
        let reader = CrashLog::open(dir.path());
        let (first, _, _) = reader.read(LogCursor::default(), 1).unwrap();
        assert!(first.len() < 60, "a frame is closed at about a megabyte: {} readings in the first", first.len());
        let (seen, unreadable) = all(&reader);
        assert_eq!((seen.len(), unreadable), (60, 0));
    }

    #[test]
    fn a_segment_goes_only_once_every_reading_in_it_is_judged() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = CrashLog::open(dir.path());
        append(&mut log, &[("house-07", 1_000), ("house-08", 1_500)]);
        let judged: HashMap<String, Millis> = [("house-07".to_string(), 1_000), ("house-08".to_string(), Millis::MIN)].into_iter().collect();
        assert_eq!(log.forget_judged(&judged).unwrap(), 0, "house-08 is not judged yet");
        append(&mut log, &[("house-07", 2_000)]);
        let judged: HashMap<String, Millis> = [("house-07".to_string(), 1_000), ("house-08".to_string(), 1_500)].into_iter().collect();
        assert_eq!(log.forget_judged(&judged).unwrap(), 2, "the first segment is judged whole");
        assert_eq!(all(&CrashLog::open(dir.path())).0, vec![("house-07".to_string(), 2_000)]);
    }
}
