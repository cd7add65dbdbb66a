//! gridwatch-district-load: the district's load harness (issue 23; docs/BENCHMARKS.md, "District:
//! boxes to the hub").
//!
//! For each box count N: starts 3 `nats-server` nodes, a throw-away PostgreSQL, one `gridwatch
//! hub` and N boxes (`gridwatch run` built with `--features cluster`, each with its own
//! mosquitto, its inventory of water probes under the default packs plus a marker rule, and
//! `[cluster]` at its defaults); publishes the total reading rate spread evenly over the boxes,
//! with a share of each box's sensors firing and clearing the marker rule at a set rate; and
//! reports: readings per second each box evaluated (from its `/metrics`), readings lost, alert
//! events fired / produced at the boxes / in PostgreSQL, the box → PostgreSQL latency of every
//! alert event (the reading's `ts` to the hub's inserting transaction, `alert_events.received`)
//! as p50 / p99 / max, and the CPU seconds of the boxes and of the hub.
//!
//! ```sh
//! cargo build --profile dist -p gridwatch --features cluster --bin gridwatch
//! cargo build --profile dist -p gridwatch-tests --features district-load --bin gridwatch-district-load
//! target/dist/gridwatch-district-load --boxes 1,5,10 --sensors-per-box 1000 --total-rate 10000 --seconds 60
//! ```
//!
//! `--scenario blackhole | leader-kill | all-nodes-kill` runs one of the issue's failure
//! scenarios instead, on one district of `--boxes` boxes, with every reading going up to the
//! district's InfluxDB (`scenario`): it counts each sensor's readings there, the boxes' rows in
//! PostgreSQL and the messages of the uplink stream, times what the scenario's target times,
//! prints the figures against the targets, and with `--strict` exits with 1 when one is missed
//! (docs/reliability.md, "The district under failures").

mod audit;
mod district;
mod faults;
mod report;
mod scenario;
mod traffic;

use anyhow::{bail, Context};
use clap::Parser;
use district::{metric_sum, District, Setup};
use gridwatch_tests::measure::{self, MachineCpu};
use report::{Figures, CSV_HEADER, TABLE_HEADER};
use scenario::Scenario;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(about = "District load run: N boxes -> NATS JetStream -> hub -> PostgreSQL, with figures")]
struct Args {
    /// The daemon binary, built with the district (`--features cluster`).
    #[arg(long, default_value = "target/dist/gridwatch")]
    daemon: PathBuf,
    /// Box counts, one run each with fresh services.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10")]
    boxes: Vec<usize>,
    /// Simulated water probes in each box's inventory.
    #[arg(long, default_value_t = 1000)]
    sensors_per_box: usize,
    /// Readings per second offered to the whole district, spread evenly over the boxes.
    #[arg(long, default_value_t = 10_000.0)]
    total_rate: f64,
    /// Seconds of traffic per run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Alert events per second in the whole district (marker flips, spread over the boxes).
    #[arg(long, default_value_t = 20.0)]
    alerts_per_sec: f64,
    /// The share of each box's sensors that flip their marker (fire and clear).
    #[arg(long, default_value_t = 0.05)]
    alarming_share: f64,
    /// Append one CSV line per run to this file (header when it is new).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// What to run: the load curve, or one failure scenario (one `--boxes` count).
    #[arg(long, value_enum, default_value_t = Scenario::Load)]
    scenario: Scenario,
    /// Exit with 1 when a failure scenario misses one of its targets.
    #[arg(long)]
    strict: bool,
    /// blackhole: links cut (the boxes in turn).
    #[arg(long, default_value_t = 5)]
    cuts: usize,
    /// blackhole: seconds each cut lasts.
    #[arg(long, default_value_t = 120)]
    cut_secs: u64,
    /// blackhole: seconds the link stays up between cuts.
    #[arg(long, default_value_t = 60)]
    link_up_secs: u64,
    /// leader-kill: `kill -9` of the stream's leader, this many times.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// all-nodes-kill: `kill -9` of all three nodes, this many times.
    #[arg(long, default_value_t = 3)]
    cluster_kills: usize,
    /// all-nodes-kill: seconds the whole cluster stays down each time.
    #[arg(long, default_value_t = 10)]
    down_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    // Absolute: the hub and the boxes run in directories of their own.
    args.daemon = std::fs::canonicalize(&args.daemon)
        .with_context(|| format!("{} not found: build it with `cargo build --profile dist -p gridwatch --features cluster`", args.daemon.display()))?;
    if args.boxes.contains(&0) || args.sensors_per_box == 0 || args.total_rate <= 0.0 || args.seconds == 0 {
        bail!("--boxes, --sensors-per-box, --total-rate and --seconds must be above 0");
    }
    if !(0.0..=1.0).contains(&args.alarming_share) || args.alerts_per_sec < 0.0 {
        bail!("--alarming-share is a share (0 to 1) and --alerts-per-sec not negative");
    }
    if args.scenario != Scenario::Load {
        anyhow::ensure!(args.boxes.len() == 1, "a failure scenario runs one district: give one --boxes count");
        println!(
            "daemon: {}; scenario {:?}: {} boxes × {} sensors, {:.0} readings/s in total, {} alert events/s\n",
            args.daemon.display(),
            args.scenario,
            args.boxes[0],
            args.sensors_per_box,
            args.total_rate,
            args.alerts_per_sec
        );
        let met = scenario::run(&args, args.scenario).await?;
        if args.strict && !met {
            std::process::exit(1);
        }
        return Ok(());
    }
    println!(
        "daemon: {}; {} sensors per box, {:.0} readings/s in total for {} s, {} alert events/s\n",
        args.daemon.display(),
        args.sensors_per_box,
        args.total_rate,
        args.seconds,
        args.alerts_per_sec
    );
    println!("{TABLE_HEADER}");
    for &boxes in &args.boxes {
        let figures = run(&args, boxes).await.with_context(|| format!("run with {boxes} boxes"))?;
        println!("{}", figures.table_row());
        if let Some(path) = &args.csv {
            append_csv(path, &figures)?;
        }
    }
    Ok(())
}

fn append_csv(path: &Path, figures: &Figures) -> anyhow::Result<()> {
    let mut text = if path.exists() { std::fs::read_to_string(path)? } else { format!("{CSV_HEADER}\n") };
    text.push_str(&figures.csv_line());
    text.push('\n');
    std::fs::write(path, text)?;
    Ok(())
}

/// One run with fresh services and `boxes` boxes.
async fn run(args: &Args, boxes: usize) -> anyhow::Result<Figures> {
    let setup = Setup { daemon: &args.daemon, boxes, sensors_per_box: args.sensors_per_box, influx: false, cluster_settings: String::new() };
    let district = District::start(&setup).await?;
    // The boxes' uplinks connect to NATS and renew their first lease.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let http = reqwest::Client::new();
    let box_pids: Vec<u32> = district.boxes.iter().map(|b| b.process.pid()).collect();
    let hub_pid = district.hub.pid();
    let boxes_cpu_before = total_cpu(&box_pids)?;
    let hub_cpu_before = measure::cpu_seconds(hub_pid)?;
    let machine_before = MachineCpu::now()?;
    let link_bytes = |district: &District| district.boxes.iter().map(|b| b.proxy.bytes_forwarded()).sum::<u64>();
    let link_bytes_before = link_bytes(&district);

    let started = Instant::now();
    let started_ms = gridwatch_tests::now_ms();
    let alarming = ((args.sensors_per_box as f64 * args.alarming_share).ceil() as usize).clamp(1, args.sensors_per_box);
    let publishers: Vec<_> = district
        .boxes
        .iter()
        .map(|community| {
            let plan = traffic::Plan {
                port: community.mosquitto.port,
                sensors: args.sensors_per_box,
                rate: args.total_rate / boxes as f64,
                seconds: args.seconds,
                alarming,
                alerts_per_sec: args.alerts_per_sec / boxes as f64,
                stop: Default::default(),
            };
            tokio::spawn(traffic::publish(community.id.clone(), plan))
        })
        .collect();
    let mut sent = Vec::with_capacity(boxes);
    for publisher in publishers {
        sent.push(publisher.await??);
    }

    // The boxes are done when each has evaluated every reading its broker acknowledged, or none
    // has made progress for 15 s.
    let mut evaluated = vec![0.0; boxes];
    let mut last_progress = Instant::now();
    let evaluated_at = loop {
        for (index, community) in district.boxes.iter().enumerate() {
            let now = metric_sum(&http, &community.metrics_url, "gridwatch_samples_accepted_total").await.unwrap_or(0.0);
            if now > evaluated[index] {
                evaluated[index] = now;
                last_progress = Instant::now();
            }
        }
        if evaluated.iter().zip(&sent).all(|(done, sent)| *done >= sent.acked as f64) {
            break Instant::now();
        }
        if last_progress.elapsed() > Duration::from_secs(15) {
            break last_progress;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // PostgreSQL is caught up when it holds as many alert events as the boxes produced, or has
    // taken none for 30 s.
    let (db, connection) = tokio_postgres::connect(&district.postgres.conninfo(), tokio_postgres::NoTls).await.context("connecting to PostgreSQL")?;
    tokio::spawn(connection);
    let mut alerts_at_boxes = 0.0;
    for community in &district.boxes {
        alerts_at_boxes += metric_sum(&http, &community.metrics_url, "gridwatch_rule_events_total").await.unwrap_or(0.0);
    }
    let mut in_postgres = 0;
    let mut last_progress = Instant::now();
    let caught_up_at = loop {
        let count: i64 = match db.query_one("SELECT count(*) FROM alert_events", &[]).await {
            Ok(row) => row.get(0),
            // The hub creates its tables when it starts; an error here is a missing table.
            Err(_) => 0,
        };
        if count > in_postgres {
            in_postgres = count;
            last_progress = Instant::now();
        }
        if in_postgres as f64 >= alerts_at_boxes {
            break Instant::now();
        }
        if last_progress.elapsed() > Duration::from_secs(30) {
            break last_progress;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let boxes_cpu_secs = total_cpu(&box_pids)? - boxes_cpu_before;
    let link_bytes_per_box = (link_bytes(&district) - link_bytes_before) as f64 / boxes as f64;
    let hub_cpu_secs = measure::cpu_seconds(hub_pid)? - hub_cpu_before;
    let machine_busy = MachineCpu::now()?.busy_share_since(&machine_before);

    let latencies: Vec<f64> = db
        .query("SELECT (EXTRACT(EPOCH FROM received) * 1000 - at_ms)::float8 FROM alert_events", &[])
        .await
        .context("reading the alert events' times")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let acked: u64 = sent.iter().map(|s| s.acked).sum();
    let readings_lost = acked.saturating_sub(evaluated.iter().sum::<f64>() as u64);
    let box_down: Vec<String> = district
        .webhook
        .bodies()
        .iter()
        .filter(|body| body["kind"] == "box-down")
        .map(|body| format!("{} {} at {}", body["box"], body["event"], body["at_ms"]))
        .collect();
    if !box_down.is_empty() {
        eprintln!("box-down during the run (started at {}): {box_down:?}", started_ms);
    }
    if readings_lost > 0 || (in_postgres as f64) < alerts_at_boxes || !box_down.is_empty() {
        for community in &district.boxes {
            eprintln!("{}'s log ends:\n{}", community.id, community.process.log_tail());
        }
        eprintln!("the hub's log ends:\n{}", district.hub.log_tail());
    }
    let evaluation_secs = evaluated_at.duration_since(started).as_secs_f64();
    let rates: Vec<f64> = evaluated.iter().map(|done| done / evaluation_secs).collect();
    let mut box_peak_rss = 0;
    for pid in &box_pids {
        box_peak_rss = box_peak_rss.max(measure::peak_rss_bytes(*pid)?);
    }
    Ok(Figures {
        boxes,
        sensors_per_box: args.sensors_per_box,
        offered_total: args.total_rate,
        evaluated_per_box_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
        evaluated_per_box_mean: rates.iter().sum::<f64>() / boxes as f64,
        readings_lost,
        alerts_fired: sent.iter().map(|s| s.flips).sum(),
        alerts_at_boxes: alerts_at_boxes as u64,
        alerts_in_postgres: in_postgres as u64,
        latency: measure::latency(latencies),
        window_secs: caught_up_at.duration_since(started).as_secs_f64(),
        boxes_cpu_secs,
        hub_cpu_secs,
        machine_busy,
        box_peak_rss_mib: box_peak_rss as f64 / 1048576.0,
        link_bytes_per_box,
        hub_peak_rss_mib: measure::peak_rss_bytes(hub_pid)? as f64 / 1048576.0,
        box_down: box_down.len(),
    })
}

/// CPU seconds of all the processes together.
fn total_cpu(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|pid| measure::cpu_seconds(*pid)).sum()
}
