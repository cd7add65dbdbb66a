//! A failure scenario of issue 23, measured: the district started with readings going up
//! (the hub writing them to a VictoriaMetrics standing in for the district's InfluxDB, each box
//! sending every reading: `uplink_points_per_sec` well above its rate), the sensors publishing
//! with alerts firing and clearing, the faults injected ([`crate::faults`]), the sensors
//! stopped, the boxes given time to send what they hold, and then everything counted
//! ([`crate::audit`]) and set against the targets.

use crate::audit;
use crate::district::{metric_sum, District, Setup};
use crate::faults;
use crate::traffic::{self, Plan};
use crate::Args;
use anyhow::Context;
use clap::ValueEnum;
use gridwatch_tests::measure;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// The load curve (no faults; `--boxes` may list several counts).
    Load,
    /// A box's link blackholed `--cut-secs`, `--cuts` times (the boxes in turn).
    Blackhole,
    /// `kill -9` of the uplink stream's leader node, `--kills` times.
    LeaderKill,
    /// `kill -9` of all three nodes at once, `--cluster-kills` times.
    AllNodesKill,
}

/// Seconds of traffic before the first fault (the district in its steady state).
const WARM_UP: Duration = Duration::from_secs(20);
/// How long the boxes get, after the sensors stop, to send what they hold.
const DRAIN_MAX: Duration = Duration::from_secs(600);

/// One checked target: what the issue asks, what was measured, whether it was met.
struct Check {
    target: &'static str,
    measured: String,
    met: bool,
}

/// Runs `scenario` once; prints its figures and checks; returns whether every target was met.
pub async fn run(args: &Args, scenario: Scenario) -> anyhow::Result<bool> {
    let boxes = args.boxes[0];
    let rate_per_box = args.total_rate / boxes as f64;
    // Every reading goes up: the cap well above the box's rate, kept for the uplink every second.
    let cap = (rate_per_box * 4.0).ceil().max(100.0);
    let setup = Setup {
        daemon: &args.daemon,
        boxes,
        sensors_per_box: args.sensors_per_box,
        influx: true,
        cluster_settings: format!("uplink_points_per_sec = {cap}\nreadings_batch_secs = 1\n"),
    };
    let mut district = District::start(&setup).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let alarming = ((args.sensors_per_box as f64 * args.alarming_share).ceil() as usize).clamp(1, args.sensors_per_box);
    let publishers: Vec<_> = district
        .boxes
        .iter()
        .map(|community| {
            let plan = Plan {
                port: community.mosquitto.port,
                sensors: args.sensors_per_box,
                rate: rate_per_box,
                // Until the faults are done.
                seconds: 24 * 3600,
                alarming,
                alerts_per_sec: args.alerts_per_sec / boxes as f64,
                stop: stop.clone(),
            };
            tokio::spawn(traffic::publish(community.id.clone(), plan))
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(WARM_UP).await;

    let mut checks = Vec::new();
    let mut figures = String::new();
    match scenario {
        Scenario::Load => unreachable!("the load curve is run by main"),
        Scenario::Blackhole => {
            let cuts = faults::blackholes(&district, args.cuts, Duration::from_secs(args.cut_secs), Duration::from_secs(args.link_up_secs), rate_per_box).await;
            stop_and_drain(&district, &stop, started).await;
            let db = audit::connect(&district).await?;
            let mut worst: Option<f64> = None;
            let _ = writeln!(figures, "| cut | box | alert events raised during the cut | last at the hub after reconnect | readings behind at reconnect | backlog sent after |\n|---|---|---|---|---|---|");
            for (index, cut) in cuts.iter().enumerate() {
                let id = &district.boxes[cut.box_index].id;
                let (count, after_ms) = audit::alerts_after_return(&db, id, cut.cut_ms, cut.back_ms).await?;
                if let Some(after) = after_ms {
                    worst = Some(worst.map_or(after, |w: f64| w.max(after)));
                }
                let _ = writeln!(
                    figures,
                    "| {} | {id} | {count} | {} | {:.0} | {} |",
                    index + 1,
                    after_ms.map_or("-".into(), |ms| format!("{:.1} s", ms / 1000.0)),
                    cut.readings_behind_at_return,
                    cut.drained_secs.map_or("not within the link's up time".into(), |s| format!("{s:.1} s"))
                );
            }
            let latency_met = worst.is_some_and(|w| w <= 10_000.0);
            checks.push(Check {
                target: "alerts at the hub ≤ 10 s after reconnect",
                measured: worst.map_or("no alert raised during a cut".into(), |w| format!("worst {:.1} s", w / 1000.0)),
                met: latency_met,
            });
        }
        Scenario::LeaderKill => {
            let kills = faults::leader_kills(&mut district, args.kills, Duration::from_secs(5)).await?;
            stop_and_drain(&district, &stop, started).await;
            let elected: Vec<f64> = kills.iter().filter_map(|k| k.elected_secs).map(|s| s * 1000.0).collect();
            let without = kills.len() - elected.len();
            let latency = measure::latency(elected);
            let _ = writeln!(figures, "| kill | killed | new leader | answering after | killed node current again after |\n|---|---|---|---|---|");
            for (index, kill) in kills.iter().enumerate() {
                let _ = writeln!(
                    figures,
                    "| {} | {} | {} | {} | {} |",
                    index + 1,
                    kill.killed,
                    kill.new_leader.as_deref().unwrap_or("none"),
                    kill.elected_secs.map_or("-".into(), |s| format!("{s:.2} s")),
                    kill.rejoined_secs.map_or("-".into(), |s| format!("{s:.1} s"))
                );
            }
            checks.push(Check {
                target: "new leader p99 ≤ 10 s",
                measured: match latency {
                    Some(l) => format!(
                        "p50 {:.2} s, p99 {:.2} s, max {:.2} s over {} kills; {without} without a new leader",
                        l.p50 / 1e3,
                        l.p99 / 1e3,
                        l.max / 1e3,
                        kills.len()
                    ),
                    None => "no new leader at all".into(),
                },
                met: without == 0 && latency.is_some_and(|l| l.p99 <= 10_000.0),
            });
        }
        Scenario::AllNodesKill => {
            let kills =
                faults::cluster_kills(&mut district, args.cluster_kills, Duration::from_secs(args.down_secs), Duration::from_secs(180), rate_per_box).await?;
            stop_and_drain(&district, &stop, started).await;
            let _ = writeln!(figures, "| kill | stream answering after restart | every box's backlog sent after restart |\n|---|---|---|");
            for (index, kill) in kills.iter().enumerate() {
                let secs = |s: Option<f64>| s.map_or("-".into(), |s| format!("{s:.1} s"));
                let _ = writeln!(figures, "| {} | {} | {} |", index + 1, secs(kill.answering_secs), secs(kill.drained_secs));
            }
        }
    }

    let mut sent = Vec::with_capacity(publishers.len());
    for publisher in publishers {
        sent.push(publisher.await.context("a publisher")??);
    }
    let readings = audit::readings(&district, &sent).await?;
    let rows = audit::rows(&district).await?;
    let stream = audit::stream(&district).await?;
    let (raised, cleared) = audit::box_down(&district);
    let _ = writeln!(
        figures,
        "\nreadings: {} published, {} acknowledged by the brokers, {} not kept by the boxes (thinned or dropped); at the district's InfluxDB: {} lost, {} duplicates (another time), {} the same point written again (InfluxDB keeps it once), {} unknown",
        readings.published, readings.acked, readings.not_kept, readings.lost, readings.duplicates, readings.rewritten, readings.unknown
    );
    let _ = writeln!(
        figures,
        "alert events: {} at the boxes, {} in PostgreSQL, {} id gaps; transitions: {} in PostgreSQL, {} id gaps",
        rows.alerts_at_boxes, rows.alerts_in_postgres, rows.alert_gaps, rows.transitions_in_postgres, rows.transition_gaps
    );
    let _ = writeln!(
        figures,
        "uplink stream: {} messages, {} with a message id seen before, {} rows carried by an earlier message too, {} unreadable",
        stream.messages, stream.duplicate_messages, stream.duplicate_rows, stream.unreadable
    );
    let _ = writeln!(figures, "box-down posted: {raised} raised, {cleared} cleared");
    let http = reqwest::Client::new();
    let takeovers = metric_sum(&http, &district.hub_metrics_url, "gridwatch_hub_lease_takeovers_total").await.unwrap_or(f64::NAN);
    let stood_by = district.hub.log_lines_with("standing by");
    let _ = writeln!(figures, "the hub (alone): took its lease {takeovers} times (1: never lost it), stood by {} times", stood_by.len());
    for line in &stood_by {
        let _ = writeln!(figures, "    {line}");
    }
    let lost = readings.lost + rows.alerts_lost() + rows.transition_gaps + readings.acked.abs_diff(readings.published);
    checks.insert(
        0,
        Check {
            target: "0 lost (each sensor/n once at the district's InfluxDB; every alert event and transition in PostgreSQL)",
            measured: format!(
                "{} readings, {} alert events, {} transitions lost; {} reading duplicates",
                readings.lost,
                rows.alerts_lost(),
                rows.transition_gaps,
                readings.duplicates
            ),
            met: lost == 0 && readings.duplicates == 0 && readings.unknown == 0 && readings.not_kept == 0.0,
        },
    );
    if scenario == Scenario::LeaderKill {
        checks.push(Check {
            target: "0 duplicates in the stream",
            measured: format!("{} messages stored twice, {} rows in two messages", stream.duplicate_messages, stream.duplicate_rows),
            met: stream.duplicate_messages == 0 && stream.duplicate_rows == 0,
        });
    }
    println!("{figures}");
    println!("| target | measured | met |\n|---|---|---|");
    for check in &checks {
        println!("| {} | {} | {} |", check.target, check.measured, if check.met { "yes" } else { "**no**" });
    }
    if checks.iter().any(|c| !c.met) {
        for community in &district.boxes {
            eprintln!("{}'s log ends:\n{}", community.id, community.process.log_tail());
        }
        eprintln!("the hub's log ends:\n{}", district.hub.log_tail());
    }
    Ok(checks.iter().all(|c| c.met))
}

/// Stops the sensors, then waits until every box has nothing left behind the hub's marks (or
/// [`DRAIN_MAX`]).
async fn stop_and_drain(district: &District, stop: &AtomicBool, started: Instant) {
    stop.store(true, Ordering::Relaxed);
    eprintln!("faults done after {:.0} s; sensors stopped; waiting for the boxes to send what they hold", started.elapsed().as_secs_f64());
    let http = reqwest::Client::new();
    let stopped = Instant::now();
    // The last readings are kept for the uplink a second after they arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let drained = gridwatch_tests::wait_for(DRAIN_MAX, || async {
        for community in &district.boxes {
            if metric_sum(&http, &community.metrics_url, "gridwatch_uplink_rows_behind").await != Some(0.0) {
                return false;
            }
        }
        true
    })
    .await;
    eprintln!("boxes drained: {drained}, {:.0} s after the sensors stopped", stopped.elapsed().as_secs_f64());
}
