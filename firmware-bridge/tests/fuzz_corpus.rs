//! Replays the fuzz corpus (the seeds from the domain notes plus whatever the fuzzer kept) and
//! any saved crash inputs through the same checks the fuzz targets run, so a decoder bug once
//! found stays found without cargo-fuzz.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for dir in [root.join("corpus").join(target), root.join("regressions").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.filter_map(Result::ok) {
            let data = std::fs::read(entry.path()).unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
            check(&data);
            replayed += 1;
        }
    }
    replayed
}

/// A fuzz target's name and its check.
type Target = (&'static str, fn(&[u8]));

#[test]
fn every_corpus_input_passes_its_decoders_checks() {
    use gridwatch_bridge::fuzzing;
    let targets: [Target; 5] =
        [("witmotion", fuzzing::witmotion), ("rion", fuzzing::rion), ("line", fuzzing::line), ("modbus", fuzzing::modbus), ("profile", fuzzing::profile)];
    for (target, check) in targets {
        assert!(replay(target, check) >= 1, "no corpus for {target}: the seeds belong in firmware-bridge/fuzz/corpus/{target}/");
    }
}
