//! gridwatch-load: the end-to-end load harness (docs/BENCHMARKS.md).
//!
//! Starts a real mosquitto and the release daemon (default packs plus one marker rule, alerts to
//! a webhook receiver), publishes N simulated water probes at R readings/s with QoS 1, and
//! reports: readings the daemon evaluated per second, the same stream's rate through
//! `mosquitto_sub` (the broker's own delivery, measured in the same run), readings lost (broker
//! acknowledged but never evaluated), CPU seconds per 100k readings, peak RSS, start-to-READY,
//! and alert latency from publish to webhook receipt (p50 / p99 / max).
//!
//! ```sh
//! cargo build --release -p gridwatch -p gridwatch-tests
//! target/release/gridwatch-load --sensors 1000 --rate 1000 --seconds 20
//! target/release/gridwatch-load --sweep 100:1000,1000:5000,10000:20000 --csv sweep.csv
//! ```

mod process;
mod report;
mod traffic;

use anyhow::{bail, Context};
use clap::Parser;
use gridwatch_tests::{free_port, measure, Mosquitto, VictoriaMetrics, WebhookReceiver};
use report::{Figures, CSV_HEADER, TABLE_HEADER};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(about = "End-to-end load run: mosquitto -> gridwatch -> webhook, with figures")]
struct Args {
    /// The daemon binary (`cargo build --release -p gridwatch`).
    #[arg(long, default_value = "target/release/gridwatch")]
    daemon: PathBuf,
    /// Simulated sensors (water probes under the default packs).
    #[arg(long, default_value_t = 1000)]
    sensors: usize,
    /// Readings per second in total; 0 publishes as fast as the broker acknowledges.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of traffic at --rate (unpaced runs send --readings).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds to keep counting the daemon's disk writes after its last evaluation (a rule-state
    /// save is due every minute).
    #[arg(long, default_value_t = 0)]
    settle_secs: u64,
    /// Readings of an unpaced run (--rate 0).
    #[arg(long, default_value_t = 200_000)]
    readings: u64,
    /// Alert events per second to measure latency on (marker flips).
    #[arg(long, default_value_t = 10)]
    alerts_per_sec: u64,
    /// Also write every reading to VictoriaMetrics through the spool (InfluxDB write API).
    #[arg(long)]
    influx: bool,
    /// Runs one after another, as `sensors:rate` pairs; replaces --sensors and --rate.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<String>,
    /// Append one CSV line per run to this file (header when it is new).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the inventory as `[[sensor]]` tables in gridwatch.toml instead of a CSV file.
    #[arg(long)]
    toml_inventory: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.daemon.exists() {
        bail!("{} not found: build it with `cargo build --release -p gridwatch`", args.daemon.display());
    }
    let runs: Vec<(usize, u64)> =
        if args.sweep.is_empty() { vec![(args.sensors, args.rate)] } else { args.sweep.iter().map(|pair| parse_pair(pair)).collect::<anyhow::Result<_>>()? };
    let binary_mib = std::fs::metadata(&args.daemon)?.len() as f64 / 1048576.0;
    println!("daemon binary: {} ({binary_mib:.1} MiB){}\n", args.daemon.display(), if args.influx { "; telemetry to VictoriaMetrics" } else { "" });
    println!("{TABLE_HEADER}");
    for (sensors, rate) in runs {
        let figures = run(&args, sensors, rate).await.with_context(|| format!("run with {sensors} sensors at {rate}/s"))?;
        println!("{}", figures.table_row());
        if let Some(path) = &args.csv {
            append_csv(path, &figures)?;
        }
    }
    Ok(())
}

fn parse_pair(pair: &str) -> anyhow::Result<(usize, u64)> {
    let (sensors, rate) = pair.split_once(':').with_context(|| format!("`{pair}`: expected sensors:rate"))?;
    Ok((sensors.trim().parse()?, rate.trim().parse()?))
}

fn append_csv(path: &Path, figures: &Figures) -> anyhow::Result<()> {
    let mut text = if path.exists() { std::fs::read_to_string(path)? } else { format!("{CSV_HEADER}\n") };
    text.push_str(&figures.csv_line());
    text.push('\n');
    std::fs::write(path, text)?;
    Ok(())
}

/// One run with fresh services.
async fn run(args: &Args, sensors: usize, rate: u64) -> anyhow::Result<Figures> {
    // Unlimited queue: a daemon falling behind shows as lower throughput, not as broker drops.
    let mosquitto = Mosquitto::start_with("max_queued_messages 0").await?;
    let webhook = WebhookReceiver::start(Vec::new()).await;
    let victoria = if args.influx { Some(VictoriaMetrics::start().await?) } else { None };
    let dir = tempfile::tempdir()?;
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, &webhook, victoria.as_ref(), http_port, sensors, args.toml_inventory)?;
    let readings = if rate == 0 { args.readings } else { rate * args.seconds };

    let notify = process::NotifySocket::bind(&dir.path().join("notify.sock"))?;
    let spawned = Instant::now();
    let daemon = Command::new(&args.daemon)
        .args(["run", "--config"])
        .arg(dir.path().join("gridwatch.toml"))
        .env("NOTIFY_SOCKET", dir.path().join("notify.sock"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log"))?)
        .spawn()
        .context("starting the daemon")?;
    let daemon = Running(daemon);
    let ready = notify.ready_after(spawned, Duration::from_secs(30)).await?;
    let pid = daemon.0.id();
    let metrics_url = format!("http://127.0.0.1:{http_port}/metrics");
    let http = reqwest::Client::new();
    wait_until(Duration::from_secs(10), || async { metric(&http, &metrics_url, "gridwatch_mqtt_connected").await == Some(1.0) }).await?;

    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &mosquitto.port.to_string(), "-q", "1", "-t", "gridwatch/load/+/telemetry"])
        .args(["-C", &readings.to_string(), "-W", &(args.seconds + 600).to_string()])
        .stdout(Stdio::null())
        .spawn()
        .context("starting mosquitto_sub (Debian package mosquitto-clients)")?;
    let sub_done = tokio::task::spawn_blocking(move || {
        let mut sub = sub;
        let status = sub.wait();
        (Instant::now(), status.map(|s| s.success()).unwrap_or(false))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cpu_before = measure::cpu_seconds(pid)?;
    let disk_before = process::disk_write_bytes(pid)?;
    let started = Instant::now();
    let plan = traffic::Plan { port: mosquitto.port, sensors, rate, readings, alerts_per_sec: args.alerts_per_sec };
    let sent = traffic::publish(&plan).await?;

    // The daemon is done when it has evaluated every acknowledged reading, or has stopped
    // making progress for 15 s.
    let mut processed = 0.0;
    let mut last_progress = Instant::now();
    let done_at = loop {
        let now = metric(&http, &metrics_url, "gridwatch_samples_accepted_total").await.unwrap_or(0.0);
        if now > processed {
            processed = now;
            last_progress = Instant::now();
        }
        if processed >= sent.acked as f64 {
            break Instant::now();
        }
        if last_progress.elapsed() > Duration::from_secs(15) {
            break last_progress;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu_after = measure::cpu_seconds(pid)?;
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let disk_bytes = process::disk_write_bytes(pid)?.saturating_sub(disk_before);
    let peak_rss = measure::peak_rss_bytes(pid)?;
    let (sub_at, sub_complete) = tokio::time::timeout(Duration::from_secs(60), sub_done).await.context("mosquitto_sub did not finish")??;
    if !sub_complete {
        bail!("mosquitto_sub did not receive all {readings} readings");
    }
    wait_until(Duration::from_secs(20), || async { webhook.bodies().len() as u64 >= sent.flips }).await.ok();
    let latencies: Vec<f64> =
        webhook.bodies_with_arrival().iter().filter_map(|(body, arrived)| Some((arrived - body.get("at_ms")?.as_i64()?) as f64)).collect();

    let processed = processed as u64;
    if processed < sent.acked {
        let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!("{} readings acknowledged by the broker were not evaluated; the daemon's log ends:", sent.acked - processed);
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
    }
    Ok(Figures {
        sensors,
        rate,
        acked: sent.acked,
        processed,
        lost: sent.acked.saturating_sub(processed),
        daemon_rate: processed as f64 / done_at.duration_since(started).as_secs_f64(),
        broker_rate: readings as f64 / sub_at.duration_since(started).as_secs_f64(),
        cpu_seconds_per_100k: (cpu_after - cpu_before) / processed.max(1) as f64 * 100_000.0,
        peak_rss_mib: peak_rss as f64 / 1048576.0,
        ready_ms: ready.as_secs_f64() * 1000.0,
        alerts_expected: sent.flips,
        alerts_received: latencies.len() as u64,
        latency: measure::latency(latencies),
        disk_bytes,
    })
}

/// The daemon, stopped with SIGTERM when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn write_config(
    dir: &Path,
    mosquitto: &Mosquitto,
    webhook: &WebhookReceiver,
    victoria: Option<&VictoriaMetrics>,
    http_port: u16,
    sensors: usize,
    toml_inventory: bool,
) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("load.toml"),
        "[[rule]]\nid = \"load-marker\"\ntitle = \"Load harness marker\"\nkind = \"water\"\nvalue = \"marker\"\nabove = 0.5\nseverity = \"warning\"\n",
    )?;
    let inventory = if toml_inventory { "" } else { "inventory = \"sensors.csv\"\n" };
    let mut config = format!(
        "{inventory}state_dir = \"state\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gridwatch-load\"\n[rules]\nbuiltin_packs = true\npaths = [\"load.toml\"]\n\
         [alerts]\nconsole = false\n[[alerts.webhook]]\nname = \"load\"\nurl = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
        mosquitto.url(),
        webhook.url()
    );
    if let Some(victoria) = victoria {
        let _ = write!(config, "[influxdb]\nurl = \"{}\"\norg = \"load\"\nbucket = \"load\"\ntoken = \"load\"\n", victoria.url());
    }
    if toml_inventory {
        for i in 0..sensors {
            let _ = write!(config, "[[sensor]]\nid = \"p{i}\"\nkind = \"water\"\nsite = \"load\"\ntags = {{ use = \"surface\" }}\ninterval_secs = 60\n");
        }
    } else {
        let mut csv = String::from("id,kind,site,interval_secs,tag.use\n");
        for i in 0..sensors {
            let _ = writeln!(csv, "p{i},water,load,60,surface");
        }
        std::fs::write(dir.join("sensors.csv"), csv)?;
    }
    std::fs::write(dir.join("gridwatch.toml"), config)?;
    Ok(())
}

/// The value of an unlabelled metric on the daemon's `/metrics`.
async fn metric(http: &reqwest::Client, url: &str, name: &str) -> Option<f64> {
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("condition not met within {timeout:?}")
}
