//! Serial decoders: bytes in, readings out, per protocol. One element = one reading (frame).
//!
//! cargo bench -p gridwatch-bridge --bench decoders

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gridwatch_bridge::modbus::{parse_read_response, read_response, ReadFunction, Response};
use gridwatch_bridge::profile::Profile;
use gridwatch_bridge::{line, rion, witmotion};
use std::collections::BTreeMap;
use std::hint::black_box;

const FRAMES: usize = 1000;

fn decoders(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(FRAMES as u64));

    // Modbus RTU: a SenseCAP pH reply (CRC check, registers) through its profile.
    let profile = Profile::parse("sensecap-ph", include_str!("../profiles/sensecap-ph.toml")).expect("shipped profile");
    let reply = read_response(1, ReadFunction::Holding, &[0x0992, 0x02D1]);
    group.bench_function("modbus_sensecap_ph", |b| {
        b.iter(|| {
            for _ in 0..FRAMES {
                let Ok(Some(Response::Registers(words))) = parse_read_response(black_box(&reply), 1, ReadFunction::Holding, 2) else { panic!("reply") };
                let registers: BTreeMap<u16, u16> = (0u16..).zip(words).collect();
                black_box(profile.decode(&registers));
            }
        })
    });

    // WitMotion: a stream of 11-byte angle frames split at awkward places.
    let stream: Vec<u8> =
        (0..FRAMES).flat_map(|i| witmotion::encode(0x53, [witmotion::angle_word(0.12 + i as f64 * 1e-4), witmotion::angle_word(-0.03), 0, 0])).collect();
    group.bench_function("witmotion_stream", |b| {
        b.iter(|| {
            let mut parser = witmotion::StreamParser::new();
            let mut frames = 0;
            for chunk in stream.chunks(64) {
                frames += parser.push(black_box(chunk)).len();
            }
            assert_eq!(frames, FRAMES);
        })
    });

    // RION 0x68: X/Y replies in BCD.
    let replies: Vec<u8> = (0..FRAMES).flat_map(|i| rion::xy_reply(1, 0.12 + i as f64 * 1e-3, -0.05, 21.5)).collect();
    group.bench_function("rion_replies", |b| {
        b.iter(|| {
            let mut parser = rion::ReplyParser::new();
            let mut n = 0;
            for chunk in replies.chunks(64) {
                n += parser.push(black_box(chunk)).len();
            }
            assert_eq!(n, FRAMES);
        })
    });

    // The gridwatch line protocol: `$GW,dev,seq,k=v*CRC16` lines.
    let lines: Vec<u8> = (0..FRAMES)
        .flat_map(|i| {
            let mut text = line::encode("canal-02", i as u32, &[("do", 6.8), ("ph", 7.31), ("temperature", 18.5)]);
            text.push('\n');
            text.into_bytes()
        })
        .collect();
    group.bench_function("line_protocol", |b| {
        b.iter(|| {
            let mut parser = line::LineParser::new();
            let mut n = 0;
            for chunk in lines.chunks(64) {
                n += parser.push(black_box(chunk)).into_iter().filter(Result::is_ok).count();
            }
            assert_eq!(n, FRAMES);
        })
    });
    group.finish();
}

criterion_group!(benches, decoders);
criterion_main!(benches);
