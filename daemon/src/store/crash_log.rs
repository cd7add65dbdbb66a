//! The crash log: every reading since the rule state was last saved, appended as one JSON line
//! to segment files `unsaved-<n>.log` beside the database, judged again after a crash (see
//! [`super::unsaved`]). An append touches only the end of one file — a page of a card written
//! once per writeback for many readings, not a SQLite page per commit.
//!
//! A reading InfluxDB has committed is appended without a sync: the page cache survives the
//! daemon's death, and a power cut costs at most the judging of the last seconds again (the
//! readings themselves are in InfluxDB). A reading InfluxDB has not taken (no InfluxDB, or it
//! lags) is synced before its acknowledgement, like the spool.
//!
//! Invariants: each run appends to a new segment (a torn tail stays at the end of its own file,
//! where it is skipped and counted); a segment is deleted only when a saved rule state has
//! judged every reading in it; segments are read back in the order they were written.

use gridwatch_rules::Millis;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One reading as a line of the log.
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
        let mut lines = Vec::with_capacity(4096);
        for (sensor, ts, fields) in readings {
            serde_json::to_writer(&mut lines, &(sensor, ts, fields)).map_err(std::io::Error::other)?;
            lines.push(b'\n');
        }
        if self.current.is_none() {
            let number = self.next;
            let file = std::fs::OpenOptions::new().create(true).append(true).open(segment_path(&self.dir, number))?;
            self.next += 1;
            self.entry_synced = false;
            self.current = Some((number, file));
        }
        match &mut self.current {
            Some((_, file)) => file.write_all(&lines),
            None => Ok(()),
        }
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
    /// inventory: a reading of a sensor it does not name can never be judged, nor can a line
    /// that is not a reading); returns how many readings left.
    pub fn forget_judged(&mut self, judged_until: &HashMap<String, Millis>) -> std::io::Result<u64> {
        self.current = None;
        let mut forgotten = 0;
        for (_, path) in segments(&self.dir) {
            // Line by line: a minute of readings at a busy box is tens of megabytes as values.
            let mut file = BufReader::with_capacity(64 * 1024, File::open(&path)?);
            let (mut line, mut count, mut judged) = (Vec::new(), 0, true);
            while judged {
                line.clear();
                if file.read_until(b'\n', &mut line)? == 0 {
                    break;
                }
                count += 1;
                judged = parse(&line).is_none_or(|r| judged_until.get(&r.sensor).is_none_or(|until| r.ts <= *until));
            }
            if judged {
                std::fs::remove_file(&path)?;
                forgotten += count;
            }
        }
        Ok(forgotten)
    }

    /// Up to `limit` readings from `cursor` on, in the order they were appended, and the cursor
    /// after them; lines that cannot be read (a torn tail) are counted in the third value.
    pub fn read(&self, cursor: LogCursor, limit: usize) -> std::io::Result<(Vec<LoggedReading>, LogCursor, u64)> {
        let mut unreadable = 0;
        for (number, path) in segments(&self.dir) {
            if number < cursor.segment || self.current.as_ref().is_some_and(|(current, _)| *current == number) {
                continue;
            }
            let offset = if number == cursor.segment { cursor.offset } else { 0 };
            let (readings, end) = read_from(&path, offset, limit)?;
            unreadable += readings.iter().filter(|r| r.is_none()).count() as u64;
            let readings: Vec<_> = readings.into_iter().flatten().collect();
            if !readings.is_empty() || end > offset {
                return Ok((readings, LogCursor { segment: number, offset: end }, unreadable));
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

/// Up to `limit` lines of `path` from byte `offset` (`None` for a line that is not a reading),
/// and the offset after them.
fn read_from(path: &Path, offset: u64, limit: usize) -> std::io::Result<(Vec<Option<LoggedReading>>, u64)> {
    let mut file = BufReader::with_capacity(64 * 1024, File::open(path)?);
    file.seek(SeekFrom::Start(offset))?;
    let (mut readings, mut end, mut line) = (Vec::new(), offset, Vec::new());
    while readings.len() < limit {
        line.clear();
        let read = file.read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        end += read as u64;
        readings.push(parse(&line));
    }
    Ok((readings, end))
}

/// A line of the log as a reading; `None` for one that is not (a torn tail).
fn parse(line: &[u8]) -> Option<LoggedReading> {
    let (sensor, ts, fields) = serde_json::from_slice::<(String, Millis, Vec<(String, f64)>)>(line).ok()?;
    Some(LoggedReading { sensor, ts, fields })
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
        append(&mut first, &[("house-07", 1_000), ("house-08", 1_500), ("house-07", 2_000)]);
        first.sync().unwrap();
        drop(first);
        let torn = dir.path().join("unsaved-1.log");
        let mut file = std::fs::OpenOptions::new().append(true).open(&torn).unwrap();
        file.write_all(b"[\"house-07\",30").unwrap();
        let mut second = CrashLog::open(dir.path());
        append(&mut second, &[("house-07", 3_000)]);
        let reader = CrashLog::open(dir.path());
        let (seen, unreadable) = all(&reader);
        let expected: Vec<(String, Millis)> =
            [("house-07", 1_000), ("house-08", 1_500), ("house-07", 2_000), ("house-07", 3_000)].iter().map(|(s, t)| (s.to_string(), *t)).collect();
        assert_eq!(seen, expected, "the second run appends to its own segment");
        assert_eq!(unreadable, 1, "the torn line is skipped and counted");
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
