//! The hub's counters, rendered at `GET /metrics` of its listener (`gridwatch_hub_*`, same
//! crate and habits as the box's [`crate::metrics`]): batches committed, refused and failed,
//! rows by kind, how far the hub is behind the stream, `box-down` raised and cleared, the boxes
//! it knows, actions relayed, and whether this hub is the active one.
//!
//! Invariant: every labelled series exists from start at 0 (the label values are known in
//! advance), so `increase()` sees the first failure. The gauges that describe the district
//! (boxes known / down, NATS and PostgreSQL reachable) are set when they are asked for
//! ([`super::web`]), so a standing-by hub reports them as truly as the active one.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: String,
}

/// What became of a batch taken from the stream.
pub const BATCH_RESULTS: [&str; 3] = ["committed", "undecodable", "failed"];
/// The kinds of rows a batch carries ([`crate::cluster::wire::Kind`]).
pub const ROW_KINDS: [&str; 4] = ["alert", "transition", "reading", "trend"];
/// Why readings of a committed batch were not written to the district's InfluxDB: it refused
/// them for good (400/422/413 on the line alone), or the hub has none (`--influx` not given).
pub const READINGS_NOT_WRITTEN: [&str; 2] = ["refused", "no_influx"];
/// What became of a worker's action posted for relay: queued on its box's subject, refused
/// (400: not a signed action, or names no subject), or not stored by JetStream (503).
pub const ACTION_RESULTS: [&str; 3] = ["relayed", "refused", "not_stored"];
/// Why a worker's link was refused at the hub's incident pages ([`super::pages`]).
pub const LINK_REFUSALS: [&str; 2] = ["bad_signature", "expired"];
/// What became of a 4G sensor's reading at the hub's MQTT listener: stored in the sensors'
/// stream (then acknowledged), refused for its topic (acknowledged, dropped), or not stored by
/// JetStream (not acknowledged: the sensor sends it again).
pub const SENSOR_READING_RESULTS: [&str; 4] = ["stored", "refused_topic", "not_authorized", "not_stored"];
/// `box-down` messages the webhook took.
pub const BOX_DOWN_EVENTS: [&str; 2] = ["raised", "cleared"];

/// All of the hub's counters; shared as `Arc<HubMetrics>`.
#[derive(Debug)]
pub struct HubMetrics {
    registry: Registry,
    /// Uplink batches taken from the stream, by result.
    pub batches: Family<ResultLabel, Counter>,
    /// Rows new to the district (PostgreSQL; InfluxDB for readings), by kind.
    pub rows_inserted: Family<KindLabel, Counter>,
    /// Rows the district already held (a batch sent again), by kind.
    pub rows_duplicate: Family<KindLabel, Counter>,
    /// Readings not written to the district's InfluxDB, by reason ([`READINGS_NOT_WRITTEN`]).
    pub readings_not_written: Family<ReasonLabel, Counter>,
    /// Trend hours (one sensor's field) not written to the district's InfluxDB, by reason
    /// ([`READINGS_NOT_WRITTEN`]).
    pub trend_not_written: Family<ReasonLabel, Counter>,
    /// Batches in the stream not yet delivered to the hub, as of the last one delivered.
    pub pending_batches: Gauge,
    /// From JetStream storing a batch to the hub's high-water mark covering it.
    pub commit_lag_seconds: Histogram,
    /// `box-down` messages posted, by event.
    pub box_down: Family<EventLabel, Counter>,
    /// `box-id-shared` messages posted (two boxes renewing one box's lease), by event.
    pub box_id_shared: Family<EventLabel, Counter>,
    /// Boxes in PostgreSQL's `boxes`.
    pub boxes_known: Gauge,
    /// 1 while the active hub's last batch failed (PostgreSQL, InfluxDB or the mark refused it)
    /// and none has been committed since.
    pub batches_failing: Gauge,
    /// 1 while the active hub's box lease watch cannot run a round (no `box-down` decided).
    pub box_watch_failing: Gauge,
    /// 0 while PostgreSQL refuses the active hub's writes (read-only, disk full): no batch is
    /// committed, `box-down` is posted but not recorded.
    pub postgres_writable: Gauge,
    /// Boxes reported down and not yet cleared.
    pub boxes_down: Gauge,
    /// Workers' actions posted for relay, by result.
    pub actions: Family<ResultLabel, Counter>,
    /// 4G sensors' readings at the hub's MQTT listener, by result ([`SENSOR_READING_RESULTS`]).
    pub sensor_readings: Family<ResultLabel, Counter>,
    /// 4G sensors' logins refused at the hub's MQTT listener (unknown user or wrong password).
    pub sensor_logins_refused: Counter,
    /// Of those, refused unchecked: tried again before the wait after a wrong password was over.
    pub sensor_logins_unchecked: Counter,
    /// Connections the hub's MQTT listener could not accept (out of file descriptors, mostly).
    pub sensor_accept_errors: Counter,
    /// 4G sensors' publishes read late because their sensor went past its pace.
    pub sensor_readings_paced: Counter,
    /// Workers' links refused by the hub's incident pages, by reason ([`LINK_REFUSALS`]).
    pub links_refused: Family<ReasonLabel, Counter>,
    /// 1 while this hub holds the hub lease (consumes and watches leases).
    pub active: Gauge,
    /// 1 while this hub has not been able to write the hub lease for a lifetime (JetStream out
    /// of storage): no hub may be active.
    pub hub_lease_unwritable: Gauge,
    /// Times this hub took the hub lease (its first start included).
    pub lease_takeovers: Counter,
    /// Boxes seen sending from a new store epoch after another (a store replaced).
    pub store_epochs_changed: Counter,
    /// Dead boxes whose 4G sensors this hub judges now (the standby evaluator).
    pub standby_boxes: Gauge,
    /// Alerts the standby evaluator posted (the webhook took them).
    pub standby_alerts: Counter,
    /// Alerts the standby evaluator's webhook refused for good (a 4xx): passed, not retried.
    pub standby_alerts_refused: Counter,
    /// Alerts the standby evaluator judged again whose key was posted before: not posted again.
    pub standby_alerts_repeated: Counter,
    /// Readings the standby evaluator could not judge (not JSON, not one of the box's 4G sensors).
    pub standby_refused: Counter,
    /// 1 while the hub's NATS connection is up.
    pub nats_connected: Gauge,
    /// 1 when the last look at PostgreSQL (a page, `/healthz`, `/metrics`) reached it.
    pub postgres_reachable: Gauge,
}

impl Default for HubMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HubMetrics {
    pub fn new() -> HubMetrics {
        let mut registry = Registry::with_prefix("gridwatch_hub");
        let metrics = HubMetrics {
            registry: Registry::default(),
            batches: Family::default(),
            rows_inserted: Family::default(),
            rows_duplicate: Family::default(),
            readings_not_written: Family::default(),
            trend_not_written: Family::default(),
            pending_batches: Gauge::default(),
            // 5 ms … ~80 s in powers of two.
            commit_lag_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
            box_down: Family::default(),
            box_id_shared: Family::default(),
            boxes_known: Gauge::default(),
            batches_failing: Gauge::default(),
            box_watch_failing: Gauge::default(),
            postgres_writable: Gauge::default(),
            boxes_down: Gauge::default(),
            actions: Family::default(),
            sensor_readings: Family::default(),
            sensor_logins_refused: Counter::default(),
            sensor_logins_unchecked: Counter::default(),
            sensor_accept_errors: Counter::default(),
            sensor_readings_paced: Counter::default(),
            links_refused: Family::default(),
            active: Gauge::default(),
            hub_lease_unwritable: Gauge::default(),
            lease_takeovers: Counter::default(),
            store_epochs_changed: Counter::default(),
            standby_boxes: Gauge::default(),
            standby_alerts: Counter::default(),
            standby_refused: Counter::default(),
            standby_alerts_refused: Counter::default(),
            standby_alerts_repeated: Counter::default(),
            nats_connected: Gauge::default(),
            postgres_reachable: Gauge::default(),
        };
        registry.register("batches", "Uplink batches taken from the stream, by result", metrics.batches.clone());
        registry.register("rows_inserted", "Rows new to the district (PostgreSQL; InfluxDB for readings), by kind", metrics.rows_inserted.clone());
        registry.register("rows_duplicate", "Rows the district already held (a batch sent again), by kind", metrics.rows_duplicate.clone());
        registry.register("readings_not_written", "Readings not written to the district's InfluxDB, by reason", metrics.readings_not_written.clone());
        registry.register(
            "trend_not_written",
            "Hourly trend rows (a sensor's field) not written to the district's InfluxDB, by reason",
            metrics.trend_not_written.clone(),
        );
        registry.register(
            "pending_batches",
            "Batches in the stream not yet delivered to the hub, as of the last one delivered",
            metrics.pending_batches.clone(),
        );
        registry.register("commit_lag_seconds", "From JetStream storing a batch to the hub's high-water mark covering it", metrics.commit_lag_seconds.clone());
        registry.register("box_down", "box-down messages the webhook took, by event", metrics.box_down.clone());
        registry.register("box_id_shared", "box-id-shared messages the webhook took (two boxes under one box_id), by event", metrics.box_id_shared.clone());
        registry.register("standby_boxes", "Dead boxes whose 4G sensors this hub judges now", metrics.standby_boxes.clone());
        registry.register("standby_alerts", "Alerts about dead boxes' 4G sensors this hub posted", metrics.standby_alerts.clone());
        registry.register("standby_refused", "Dead boxes' 4G readings this hub could not judge", metrics.standby_refused.clone());
        registry.register("standby_alerts_refused", "Alerts about dead boxes' 4G sensors the webhook refused for good", metrics.standby_alerts_refused.clone());
        registry.register(
            "standby_alerts_repeated",
            "Alerts about dead boxes' 4G sensors judged again whose key was posted before: not posted again",
            metrics.standby_alerts_repeated.clone(),
        );
        registry.register("boxes_known", "Boxes the district knows", metrics.boxes_known.clone());
        registry.register("batches_failing", "1 while the active hub's last batch failed and none was committed since", metrics.batches_failing.clone());
        registry.register("box_watch_failing", "1 while the active hub's box lease watch cannot run a round", metrics.box_watch_failing.clone());
        registry.register("postgres_writable", "0 while PostgreSQL refuses the active hub's writes", metrics.postgres_writable.clone());
        registry.register("boxes_down", "Boxes reported down and not cleared", metrics.boxes_down.clone());
        registry.register("actions", "Workers' actions posted for relay, by result", metrics.actions.clone());
        registry.register(
            "links_refused",
            "Workers' links refused by the hub's incident pages (forged, altered, expired), by reason",
            metrics.links_refused.clone(),
        );
        registry.register("sensor_readings", "4G sensors' readings at the hub's MQTT listener, by result", metrics.sensor_readings.clone());
        registry.register(
            "sensor_logins_refused",
            "4G sensors' logins refused at the hub's MQTT listener (unknown user or wrong password)",
            metrics.sensor_logins_refused.clone(),
        );
        registry.register(
            "sensor_logins_unchecked",
            "Of the refused logins, those refused unchecked: tried again before the wait after a wrong password was over",
            metrics.sensor_logins_unchecked.clone(),
        );
        registry.register(
            "sensor_accept_errors",
            "Connections the hub's MQTT listener could not accept (out of file descriptors, mostly)",
            metrics.sensor_accept_errors.clone(),
        );
        registry.register(
            "sensor_readings_paced",
            "4G sensors' publishes read late because their sensor went past its pace (20 a second, 600 at once)",
            metrics.sensor_readings_paced.clone(),
        );
        registry.register("active", "1 while this hub is the district's active hub", metrics.active.clone());
        registry.register(
            "lease_unwritable",
            "1 while this hub has not been able to write the hub lease for a lifetime (no hub may be active)",
            metrics.hub_lease_unwritable.clone(),
        );
        registry.register("lease_takeovers", "Times this hub took the hub lease", metrics.lease_takeovers.clone());
        registry.register(
            "store_epochs_changed",
            "Boxes seen sending from a new store (epoch) after another: their store was replaced, ids count from 1 again",
            metrics.store_epochs_changed.clone(),
        );
        registry.register("nats_connected", "1 while the hub's NATS connection is up", metrics.nats_connected.clone());
        registry.register("postgres_reachable", "1 when the last look at PostgreSQL reached it", metrics.postgres_reachable.clone());
        for result in BATCH_RESULTS {
            let _ = metrics.batches.get_or_create(&ResultLabel { result: result.into() });
        }
        for kind in ROW_KINDS {
            let _ = metrics.rows_inserted.get_or_create(&KindLabel { kind: kind.into() });
            let _ = metrics.rows_duplicate.get_or_create(&KindLabel { kind: kind.into() });
        }
        for reason in READINGS_NOT_WRITTEN {
            let _ = metrics.readings_not_written.get_or_create(&ReasonLabel { reason: reason.into() });
            let _ = metrics.trend_not_written.get_or_create(&ReasonLabel { reason: reason.into() });
        }
        for result in ACTION_RESULTS {
            let _ = metrics.actions.get_or_create(&ResultLabel { result: result.into() });
        }
        for reason in LINK_REFUSALS {
            let _ = metrics.links_refused.get_or_create(&ReasonLabel { reason: reason.into() });
        }
        for result in SENSOR_READING_RESULTS {
            let _ = metrics.sensor_readings.get_or_create(&ResultLabel { result: result.into() });
        }
        for event in BOX_DOWN_EVENTS {
            let _ = metrics.box_down.get_or_create(&EventLabel { event: event.into() });
            let _ = metrics.box_id_shared.get_or_create(&EventLabel { event: event.into() });
        }
        metrics.postgres_writable.set(1);
        HubMetrics { registry, ..metrics }
    }

    pub fn count_batch(&self, result: &str) {
        self.batches.get_or_create(&ResultLabel { result: result.into() }).inc();
    }

    /// A committed batch of `rows` rows of `kind`, `inserted` of them new.
    pub fn count_rows(&self, kind: &str, rows: u64, inserted: u64) {
        self.rows_inserted.get_or_create(&KindLabel { kind: kind.into() }).inc_by(inserted);
        self.rows_duplicate.get_or_create(&KindLabel { kind: kind.into() }).inc_by(rows.saturating_sub(inserted));
    }

    /// Readings (`Kind::Reading`) or trend hours (`Kind::Trend`) not written, by reason.
    pub fn count_not_written(&self, kind: crate::cluster::wire::Kind, reason: &str, count: u64) {
        let family = if kind == crate::cluster::wire::Kind::Trend { &self.trend_not_written } else { &self.readings_not_written };
        family.get_or_create(&ReasonLabel { reason: reason.into() }).inc_by(count);
    }

    pub fn count_action(&self, result: &str) {
        self.actions.get_or_create(&ResultLabel { result: result.into() }).inc();
    }

    pub fn count_link_refused(&self, reason: &str) {
        self.links_refused.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
    }

    pub fn count_box_down(&self, event: &str) {
        self.box_down.get_or_create(&EventLabel { event: event.into() }).inc();
    }

    pub fn count_box_id_shared(&self, event: &str) {
        self.box_id_shared.get_or_create(&EventLabel { event: event.into() }).inc();
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_labelled_series_is_there_from_start() {
        let text = HubMetrics::new().render();
        for line in [
            "gridwatch_hub_batches_total{result=\"undecodable\"} 0",
            "gridwatch_hub_rows_inserted_total{kind=\"transition\"} 0",
            "gridwatch_hub_box_down_total{event=\"cleared\"} 0",
            "gridwatch_hub_box_id_shared_total{event=\"raised\"} 0",
            "gridwatch_hub_actions_total{result=\"refused\"} 0",
            "gridwatch_hub_links_refused_total{reason=\"expired\"} 0",
            "gridwatch_hub_active 0",
            "gridwatch_hub_lease_takeovers_total 0",
            "gridwatch_hub_store_epochs_changed_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn a_batch_sent_again_counts_as_duplicate_rows() {
        let metrics = HubMetrics::new();
        metrics.count_rows("alert", 4, 1);
        let text = metrics.render();
        assert!(text.contains("gridwatch_hub_rows_inserted_total{kind=\"alert\"} 1"), "{text}");
        assert!(text.contains("gridwatch_hub_rows_duplicate_total{kind=\"alert\"} 3"), "{text}");
    }
}
