//! Replays one case through the pure engine, as the daemon would: one engine per case (a
//! building's boxes, or one probe), readings in arrival order with the device's timestamp, and a
//! tick at every whole minute of simulated time so holds complete and silences are noticed.
//!
//! Invariant: ticks and readings reach the engine in non-decreasing arrival time; a tick at a
//! minute is given before a reading arriving at or after it.

use super::{Case, MINUTE};
use gridwatch_rules::{Engine, EventKind, Millis, Observed, RuleEvent, RuleSet, Severity, SubjectId};
use std::time::Instant;

/// One engine event, kept small.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// Index in the rule set.
    pub rule: usize,
    /// Index of the stream in the case (for a building's event: its first box).
    pub subject: usize,
    pub kind: EventKind,
    pub severity: Severity,
    pub at: Millis,
    /// An `agree` rule's event: the building's, not the box's.
    pub building: bool,
}

/// What one replay gave.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    pub events: Vec<Event>,
    pub readings: u64,
    /// Readings the engine refused as older than the sensor's previous one.
    pub out_of_order: u64,
    /// Seconds spent in the engine (generation excluded).
    pub seconds: f64,
}

/// Replays `case` through a fresh engine over `rules`.
pub fn replay(rules: &RuleSet, case: &Case) -> Replayed {
    let subjects: Vec<_> = case.streams.iter().map(|s| s.subject.clone()).collect();
    let started = Instant::now();
    let mut engine = Engine::new(rules.clone(), &subjects);
    let mut raw: Vec<RuleEvent> = Vec::new();
    let mut out = Replayed::default();
    let mut next = vec![0usize; case.streams.len()];
    let mut tick = case.start - case.start.rem_euclid(MINUTE) + MINUTE;
    let mut fields: Vec<(&str, f64)> = Vec::with_capacity(16);
    loop {
        let pick = case.streams.iter().enumerate().filter(|(s, stream)| next[*s] < stream.len()).min_by_key(|(s, stream)| stream.arrive[next[*s]]);
        let Some((s, stream)) = pick else { break };
        let i = next[s];
        next[s] += 1;
        let arrive = stream.arrive[i];
        while tick <= arrive {
            engine.tick(tick, &mut raw);
            tick += MINUTE;
        }
        fields.clear();
        fields.extend(stream.fields.iter().copied().zip(stream.reading(i).iter().copied()));
        if engine.observe(SubjectId(s), stream.at[i], &fields, &mut raw) == Observed::OutOfOrder {
            out.out_of_order += 1;
        }
        out.readings += 1;
        drain(&mut raw, &mut out.events);
    }
    while tick <= case.end {
        engine.tick(tick, &mut raw);
        tick += MINUTE;
    }
    drain(&mut raw, &mut out.events);
    out.seconds = started.elapsed().as_secs_f64();
    out
}

fn drain(raw: &mut Vec<RuleEvent>, events: &mut Vec<Event>) {
    events.extend(raw.drain(..).map(|e| Event {
        rule: e.rule.0,
        subject: e.subject.0,
        kind: e.kind,
        severity: e.severity,
        at: e.at,
        building: e.agreement.is_some(),
    }));
}
