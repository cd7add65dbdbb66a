//! Rule engine throughput with the default packs over 10,000 sensors (half tilt boxes, half
//! water probes), in steady state: baselines set, windows full. One "element" is one sample.
//!
//! cargo bench -p gridwatch-rules --bench engine

#![allow(unsafe_code)] // only the counting allocator below, to measure the engine's heap

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gridwatch_rules::{builtin_packs, Engine, RuleSet, SensorKind, Subject, SubjectId};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

const SENSORS: usize = 10_000;
const MINUTE: i64 = 60_000;

fn subjects() -> Vec<Subject> {
    (0..SENSORS)
        .map(|i| {
            let tilt = i % 2 == 0;
            let mut tags = BTreeMap::new();
            if !tilt {
                tags.insert("use".to_string(), "surface".to_string());
                tags.insert("water_class".to_string(), "III".to_string());
            }
            Subject {
                id: format!("s{i}").into(),
                kind: if tilt { SensorKind::Tilt } else { SensorKind::Water },
                site: format!("site{}", i / 100).into(),
                building: tilt.then(|| format!("b{}", i / 4).into()),
                grid: Some(format!("g{}", i / 500).into()),
                tags: tags.into(),
                interval_ms: MINUTE,
            }
        })
        .collect()
}

/// Healthy readings with a little movement, so no rule fires and every window stays busy.
fn fields(i: usize, round: i64) -> [(&'static str, f64); 3] {
    let wobble = ((round as f64 + i as f64) * 0.37).sin() * 0.002;
    if i % 2 == 0 {
        [("x", 0.01 + wobble), ("y", -0.01 + wobble), ("temperature", 21.0 + wobble * 500.0)]
    } else {
        [("do", 7.0 + wobble), ("ph", 7.3 + wobble), ("nh3n", 0.3 + wobble)]
    }
}

fn warmed_engine() -> (Engine, i64) {
    let rules = RuleSet::compile(&builtin_packs()).expect("packs compile");
    let mut engine = Engine::new(rules, &subjects());
    for i in (0..SENSORS).step_by(2) {
        engine.set_baseline(SubjectId(i), "x", 0.0);
        engine.set_baseline(SubjectId(i), "y", 0.0);
    }
    let mut events = Vec::new();
    // Two hours of one sample per minute fill the one-hour windows.
    for round in 0..120 {
        for i in 0..SENSORS {
            engine.observe(SubjectId(i), round * MINUTE, &fields(i, round), &mut events);
        }
    }
    assert!(events.is_empty(), "healthy data must not fire: {:?}", events.first());
    (engine, 120)
}

/// Counts live heap bytes, to report the engine's state size exactly.
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged and only counts sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn engine_throughput(c: &mut Criterion) {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    {
        let subjects = subjects();
        let rules = RuleSet::compile(&builtin_packs()).expect("packs compile");
        let b0 = LIVE_BYTES.load(Ordering::Relaxed);
        let e = Engine::new(rules, &subjects);
        eprintln!("fresh engine {} bytes per sensor", (LIVE_BYTES.load(Ordering::Relaxed) - b0) / SENSORS);
        drop(e);
    }
    let (mut engine, mut round) = warmed_engine();
    let state = LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!("engine state, {SENSORS} sensors after 2 h of samples: {:.1} MiB on the heap ({} bytes per sensor)", state as f64 / 1048576.0, state / SENSORS);
    // A day and a half more fills the 24-hour change windows too.
    let mut events = Vec::new();
    for r in round..round + 36 * 60 {
        for i in 0..SENSORS {
            engine.observe(SubjectId(i), r * MINUTE, &fields(i, r), &mut events);
        }
    }
    round += 36 * 60;
    let state = LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!("engine state, {SENSORS} sensors after 38 h of samples: {:.1} MiB on the heap ({} bytes per sensor)", state as f64 / 1048576.0, state / SENSORS);
    let saved = serde_json::to_vec(&engine.snapshot()).expect("snapshot").len();
    eprintln!("saved state (the daemon's snapshot, JSON): {:.1} MiB ({} bytes per sensor)", saved as f64 / 1048576.0, saved / SENSORS);
    let mut events = Vec::new();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(SENSORS as u64));
    group.sample_size(20);
    group.bench_function("default_packs_10k_sensors_one_round", |b| {
        b.iter(|| {
            for i in 0..SENSORS {
                engine.observe(SubjectId(i), round * MINUTE, black_box(&fields(i, round)), &mut events);
            }
            round += 1;
            events.clear();
        })
    });
    group.bench_function("tick_10k_sensors", |b| {
        b.iter(|| {
            engine.tick(black_box(round * MINUTE), &mut events);
            events.clear();
        })
    });
    group.finish();
}

criterion_group!(benches, engine_throughput);
criterion_main!(benches);
