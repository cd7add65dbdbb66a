//! One district load run's figures, as a Markdown table row and a CSV line.

use gridwatch_tests::measure::Latency;
use std::fmt::Write as _;

#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub boxes: usize,
    pub sensors_per_box: usize,
    /// Readings per second offered to the whole district.
    pub offered_total: f64,
    /// Readings per second each box evaluated (its `gridwatch_samples_accepted_total`), from
    /// the first publish to the last evaluation: the slowest box and the mean.
    pub evaluated_per_box_min: f64,
    pub evaluated_per_box_mean: f64,
    /// Readings the brokers acknowledged that no box evaluated.
    pub readings_lost: u64,
    /// Marker flips published: the alert events the boxes should journal.
    pub alerts_fired: u64,
    /// Alert events the boxes' rule engines produced (`gridwatch_rule_events_total`).
    pub alerts_at_boxes: u64,
    /// Alert events in the hub's PostgreSQL (`alert_events`).
    pub alerts_in_postgres: u64,
    /// Box → PostgreSQL: from the alert's time at the box (its reading's `ts`) to the hub's
    /// transaction that inserted it (`alert_events.received`), in ms.
    pub latency: Option<Latency>,
    /// Seconds from the first publish until PostgreSQL held every alert event (the window the
    /// CPU figures cover).
    pub window_secs: f64,
    /// CPU seconds of all boxes together and of the hub over the window.
    pub boxes_cpu_secs: f64,
    pub hub_cpu_secs: f64,
    /// The whole machine's busy share over the window (every process: brokers, NATS,
    /// PostgreSQL, the publishers too).
    pub machine_busy: f64,
    pub box_peak_rss_mib: f64,
    pub hub_peak_rss_mib: f64,
    /// Payload bytes over each box's link (its proxy, both ways) in the window, on average:
    /// what its 4G tariff counts, less TCP/IP headers.
    pub link_bytes_per_box: f64,
    /// `box-down` messages the hub sent (none expected: every box stays up).
    pub box_down: usize,
}

pub const TABLE_HEADER: &str = "| boxes | offered/s (total) | offered/s per box | evaluated/s per box (slowest / mean) | readings lost | alert events fired / at boxes / in PostgreSQL | box → PostgreSQL p50 / p99 / max | boxes CPU | hub CPU | machine busy | peak RSS box / hub | link per box: bytes per reading / MB a day | box-down |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|";

pub const CSV_HEADER: &str = "boxes,sensors_per_box,offered_total,evaluated_per_box_min,evaluated_per_box_mean,readings_lost,alerts_fired,alerts_at_boxes,alerts_in_postgres,latency_p50_ms,latency_p99_ms,latency_max_ms,window_secs,boxes_cpu_secs,hub_cpu_secs,machine_busy,box_peak_rss_mib,hub_peak_rss_mib,box_down,link_bytes_per_box_day";

impl Figures {
    fn offered_per_box(&self) -> f64 {
        self.offered_total / self.boxes.max(1) as f64
    }

    /// A box's link bytes per second of the window, times a day.
    fn link_bytes_per_box_day(&self) -> f64 {
        if self.window_secs > 0.0 {
            self.link_bytes_per_box / self.window_secs * 86_400.0
        } else {
            0.0
        }
    }

    /// CPU seconds per second of the window: cores kept busy.
    fn cores(&self, cpu_secs: f64) -> f64 {
        if self.window_secs > 0.0 {
            cpu_secs / self.window_secs
        } else {
            0.0
        }
    }

    pub fn table_row(&self) -> String {
        let mut row = format!(
            "| {} | {:.0} | {:.0} | {:.0} / {:.0} | {} | {} / {} / {} |",
            self.boxes,
            self.offered_total,
            self.offered_per_box(),
            self.evaluated_per_box_min,
            self.evaluated_per_box_mean,
            self.readings_lost,
            self.alerts_fired,
            self.alerts_at_boxes,
            self.alerts_in_postgres
        );
        match self.latency {
            Some(l) => {
                let _ = write!(row, " {:.0} / {:.0} / {:.0} ms |", l.p50, l.p99, l.max);
            }
            None => row.push_str(" - |"),
        }
        let _ = write!(
            row,
            " {:.1} s ({:.2} cores) | {:.1} s ({:.2} cores) | {:.0}% | {:.1} / {:.1} MiB | {:.0} / {:.1} | {} |",
            self.boxes_cpu_secs,
            self.cores(self.boxes_cpu_secs),
            self.hub_cpu_secs,
            self.cores(self.hub_cpu_secs),
            self.machine_busy * 100.0,
            self.box_peak_rss_mib,
            self.hub_peak_rss_mib,
            self.link_bytes_per_box / (self.offered_per_box() * self.window_secs).max(1.0),
            self.link_bytes_per_box_day() / 1e6,
            self.box_down
        );
        row
    }

    pub fn csv_line(&self) -> String {
        let l = self.latency.unwrap_or_default();
        format!(
            "{},{},{:.0},{:.1},{:.1},{},{},{},{},{:.1},{:.1},{:.1},{:.1},{:.2},{:.2},{:.3},{:.1},{:.1},{},{:.0}",
            self.boxes,
            self.sensors_per_box,
            self.offered_total,
            self.evaluated_per_box_min,
            self.evaluated_per_box_mean,
            self.readings_lost,
            self.alerts_fired,
            self.alerts_at_boxes,
            self.alerts_in_postgres,
            l.p50,
            l.p99,
            l.max,
            self.window_secs,
            self.boxes_cpu_secs,
            self.hub_cpu_secs,
            self.machine_busy,
            self.box_peak_rss_mib,
            self.hub_peak_rss_mib,
            self.box_down,
            self.link_bytes_per_box_day()
        )
    }
}
