//! One load run's figures, as a Markdown table row and a CSV line (for the sweep's plot).

use gridwatch_tests::measure::Latency;
use std::fmt::Write as _;

#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub sensors: usize,
    /// Offered readings per second (0 = unpaced).
    pub rate: u64,
    pub acked: u64,
    /// Samples the daemon evaluated (its `samples_accepted`).
    pub processed: u64,
    /// Readings the broker acknowledged that the daemon never evaluated.
    pub lost: u64,
    /// Readings per second the daemon evaluated, first publish to last evaluation.
    pub daemon_rate: f64,
    /// Readings per second `mosquitto_sub` received over the same stream.
    pub broker_rate: f64,
    pub cpu_seconds_per_100k: f64,
    pub peak_rss_mib: f64,
    pub ready_ms: f64,
    /// Alert latency, publish to webhook receipt, in ms.
    pub latency: Option<Latency>,
    pub alerts_expected: u64,
    pub alerts_received: u64,
    /// Bytes the daemon wrote to storage from the first publish until it had evaluated the last
    /// reading plus `--settle-secs` (a rule-state save every minute falls in a long run).
    pub disk_bytes: u64,
}

pub const TABLE_HEADER: &str = "| sensors | offered/s | daemon/s | mosquitto_sub/s | ratio | lost | CPU s / 100k | peak RSS | READY | alerts | latency p50 / p99 / max | disk written / reading |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

pub const CSV_HEADER: &str = "sensors,offered_per_sec,acked,processed,daemon_per_sec,broker_per_sec,lost,cpu_s_per_100k,peak_rss_mib,ready_ms,alerts_expected,alerts_received,latency_p50_ms,latency_p99_ms,latency_max_ms,disk_bytes,disk_bytes_per_reading";

impl Figures {
    pub fn disk_bytes_per_reading(&self) -> f64 {
        self.disk_bytes as f64 / self.processed.max(1) as f64
    }

    pub fn ratio(&self) -> f64 {
        if self.broker_rate > 0.0 {
            self.daemon_rate / self.broker_rate
        } else {
            f64::NAN
        }
    }

    pub fn table_row(&self) -> String {
        let offered = if self.rate == 0 { "max".to_string() } else { self.rate.to_string() };
        let mut row = format!(
            "| {} | {offered} | {:.0} | {:.0} | {:.2} | {} | {:.2} | {:.1} MiB | {:.0} ms | {}/{} |",
            self.sensors,
            self.daemon_rate,
            self.broker_rate,
            self.ratio(),
            self.lost,
            self.cpu_seconds_per_100k,
            self.peak_rss_mib,
            self.ready_ms,
            self.alerts_received,
            self.alerts_expected
        );
        match self.latency {
            Some(l) => {
                let _ = write!(row, " {:.1} / {:.1} / {:.1} ms |", l.p50, l.p99, l.max);
            }
            None => row.push_str(" - |"),
        }
        let _ = write!(row, " {:.0} B |", self.disk_bytes_per_reading());
        row
    }

    pub fn csv_line(&self) -> String {
        let l = self.latency.unwrap_or_default();
        format!(
            "{},{},{},{},{:.1},{:.1},{},{:.3},{:.2},{:.1},{},{},{:.2},{:.2},{:.2},{},{:.1}",
            self.sensors,
            self.rate,
            self.acked,
            self.processed,
            self.daemon_rate,
            self.broker_rate,
            self.lost,
            self.cpu_seconds_per_100k,
            self.peak_rss_mib,
            self.ready_ms,
            self.alerts_expected,
            self.alerts_received,
            l.p50,
            l.p99,
            l.max,
            self.disk_bytes,
            self.disk_bytes_per_reading()
        )
    }
}
