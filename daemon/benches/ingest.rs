//! The daemon's per-reading and per-alert work outside the rule engine: decoding a JSON payload
//! (every reading) and applying a rule event to its incident in the store (every alert; SQLite,
//! `synchronous=FULL`, so one fsync per event).
//!
//! cargo bench -p gridwatch --bench ingest

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gridwatch::alert::Alert;
use gridwatch::sources::mqtt::payload::decode;
use gridwatch::store::Store;
use std::collections::BTreeMap;
use std::hint::black_box;

fn payload_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("payload");
    group.throughput(Throughput::Elements(1));
    let limits = gridwatch::sources::mqtt::payload::Limits { max_bytes: 4096, max_fields: 32, max_field_name_bytes: 64 };
    let tilt = br#"{"x": 0.1234, "y": -0.0312, "t": 21.5, "ts": 1795391999000, "seq": 4711}"#;
    let water = br#"{"do": 6.82, "ph": 7.31, "nh3n": 0.42, "turbidity": 12.5, "conductivity": 512.0, "ts": "2026-11-23T08:00:00+08:00"}"#;
    let none = gridwatch::config::PayloadMap::default();
    let renames = gridwatch::config::PayloadMap {
        renames: BTreeMap::from([("AngleX".to_string(), "x".to_string()), ("AngleY".to_string(), "y".to_string())]),
        ..none.clone()
    };
    let renamed = br#"{"AngleX": 0.1234, "AngleY": -0.0312, "Temp": 21.5}"#;
    group.bench_function("tilt_json", |b| b.iter(|| decode(black_box(tilt), &limits, &none).expect("valid")));
    group.bench_function("water_json_rfc3339", |b| b.iter(|| decode(black_box(water), &limits, &none).expect("valid")));
    group.bench_function("renamed_fields", |b| b.iter(|| decode(black_box(renamed), &limits, &renames).expect("valid")));
    group.bench_function("rejected_not_json", |b| b.iter(|| decode(black_box(b"{\"x\": 0.12,"), &limits, &none).is_err()));
    group.finish();
}

fn alert(event: &str, sensor: usize, at_ms: i64) -> Alert {
    serde_json::from_value(serde_json::json!({
        "event": event, "rule": "tilt-change", "title": "Wall tilt has changed", "severity": "warning",
        "colour": "yellow", "previous_severity": null, "audience": "grid", "sensor": format!("house-{sensor}"),
        "kind": "tilt", "site": "north-lane", "building": "B7", "grid": "grid-3", "value": 2.3, "unit": "‰",
        "condition": "above 2", "at": "2026-11-23T08:00:00Z", "at_ms": at_ms, "since": "2026-11-23T07:50:00Z",
        "messages": { "en": "north-lane B7: wall tilt changed 2.3‰" }
    }))
    .expect("alert")
}

fn incident_updates(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let mut group = c.benchmark_group("incidents");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    let mut step = 0usize;
    group.bench_function("apply_alert_fired_or_cleared", |b| {
        b.iter(|| {
            // 100 sensors, each alternating fired / cleared: opens, marks normal, re-opens.
            let event = if (step / 100) % 2 == 0 { "fired" } else { "cleared" };
            let alert = alert(event, step % 100, 1_795_392_000_000 + step as i64 * 1000);
            step += 1;
            runtime.block_on(store.apply_alert(&alert, 600_000)).expect("applied")
        })
    });
    group.finish();
}

criterion_group!(benches, payload_decode, incident_updates);
criterion_main!(benches);
