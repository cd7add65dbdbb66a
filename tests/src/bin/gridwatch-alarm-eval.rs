//! gridwatch-alarm-eval: replays the alarm-quality corpus through the shipped rule packs and
//! prints the scores (docs/ALARM-QUALITY.md).
//!
//! ```sh
//! cargo run --release -p gridwatch-tests --bin gridwatch-alarm-eval -- --scale 1
//! cargo run --release -p gridwatch-tests --bin gridwatch-alarm-eval -- --box-years 20 --format json
//! cargo run --release -p gridwatch-tests --bin gridwatch-alarm-eval -- --only water
//! # one case of the corpus, its events and its readings between two days (to start debugging)
//! cargo run --release -p gridwatch-tests --bin gridwatch-alarm-eval -- --case healthy3-45 --days 83.8-83.9
//! ```
//!
//! Exit code 0 whatever the scores (1 with `--strict` when a target is missed).

use anyhow::Context;
use clap::{Parser, ValueEnum};
use gridwatch_rules::{builtin_packs, RuleSet};
use gridwatch_tests::alarm_quality::{corpus::Size, one_case, report, score};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(about = "Alarm-quality corpus replayed through the shipped rule packs: false alarms, misses, delays")]
struct Args {
    /// Corpus size: 1.0 = 100 box-years per healthy sub-family and matching numbers of the rest.
    #[arg(long, default_value_t = 1.0, conflicts_with = "box_years")]
    scale: f64,
    /// Corpus size as box-years per healthy sub-family (scales the other families alike).
    #[arg(long)]
    box_years: Option<f64>,
    #[arg(long, default_value_t = 17)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Worker threads (default: the available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Tilt boxes' report intervals, drawn from this range of whole minutes ("15-60": boxes that
    /// report every quarter of an hour to every hour).
    #[arg(long, default_value = "1-10", value_parser = minutes_range)]
    interval_minutes: (i64, i64),
    /// Exit with 1 when a target is missed.
    #[arg(long)]
    strict: bool,
    /// Replay only these families (the water pack's figures in seconds, not minutes); the
    /// GB 3838 boundary cases always run.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Only>,
    /// Failing cases described per kind (healthy wall alarm, creep late, …).
    #[arg(long, default_value_t = score::EXAMPLES_PER_KIND)]
    examples: usize,
    /// Replay one case of the corpus by its name in the examples (e.g. "healthy3-45") and print
    /// its events, then its readings within `--days`.
    #[arg(long)]
    case: Option<String>,
    /// With `--case`: the readings printed, as days since the case's start ("83.8-83.9").
    #[arg(long, default_value = "0-0", value_parser = days_range, requires = "case")]
    days: (f64, f64),
}

/// The corpus's families, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Only {
    Healthy,
    Creep,
    Jump,
    Fault,
    Water,
}

/// `size` with the families not asked for left out.
fn only(mut size: Size, families: &[Only]) -> Size {
    if families.is_empty() {
        return size;
    }
    let keep = |family: Only| families.contains(&family);
    if !keep(Only::Healthy) {
        size.healthy_box_years = 0.0;
    }
    if !keep(Only::Creep) {
        size.creeps_per_band = 0;
    }
    if !keep(Only::Jump) {
        (size.jumps, size.lean_jumps, size.building_jumps) = (0, 0, 0);
    }
    if !keep(Only::Fault) {
        size.faults_per_kind = 0;
    }
    if !keep(Only::Water) {
        size.water_years = 0.0;
    }
    size
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let scale = args.box_years.map_or(args.scale, |years| years / 100.0);
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rules = RuleSet::compile(&builtin_packs()).map_err(|e| anyhow::anyhow!("{e}")).context("compiling the shipped packs")?;
    let size = only(Size { interval_minutes: args.interval_minutes, ..Size::scaled(scale) }, &args.only);
    if let Some(name) = &args.case {
        let text = one_case::describe(&rules, &size, args.seed, name, args.days).with_context(|| format!("case `{name}`"))?;
        print!("{text}");
        return Ok(());
    }
    let (results, wall) = score::run(&rules, &size, args.seed, threads);
    let scores = score::score(&rules, &results, args.seed, wall, threads, args.examples);
    match args.format {
        Format::Text => print!("{}", report::text(&scores)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report::json(&scores))?),
    }
    if args.strict && !scores.violations().is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// `"A-B"` (or `"A"`) whole minutes, 1 ≤ A ≤ B.
fn minutes_range(text: &str) -> Result<(i64, i64), String> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let parse = |part: &str| part.trim().parse::<i64>().map_err(|_| format!("`{part}` is not a whole number of minutes"));
    let (low, high) = (parse(low)?, parse(high)?);
    if low < 1 || high < low {
        return Err(format!("`{text}`: give minutes A-B with 1 <= A <= B"));
    }
    Ok((low, high))
}

/// `"A-B"` days since a case's start, A ≤ B.
fn days_range(text: &str) -> Result<(f64, f64), String> {
    let (low, high) = text.split_once('-').ok_or_else(|| format!("`{text}`: give days A-B, e.g. 83.8-83.9"))?;
    let parse = |part: &str| part.trim().parse::<f64>().map_err(|_| format!("`{part}` is not a number of days"));
    let (low, high) = (parse(low)?, parse(high)?);
    if high < low {
        return Err(format!("`{text}`: give days A-B with A <= B"));
    }
    Ok((low, high))
}
