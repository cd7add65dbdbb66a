//! Counters of everything the daemon accepts, rejects, evaluates, sends and drops — no loss is
//! silent. Rendered in Prometheus text format at `/metrics` (see [`crate::web`]).
//!
//! Invariant: every series an alert rule or dashboard asks for exists from start, at 0 — a
//! labelled family is filled with the label values known in advance (reasons, events,
//! severities here; the configured channels by [`Metrics::know_sinks`]), so `increase()` sees
//! the first failure and an absent series never hides a problem. `dashboards/` and
//! `prometheus/` are checked against this output by `daemon/tests/observe.rs`.

use crate::sources::mqtt::payload::Rejection;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// One figure of today's supervision report (`crate::report::publish`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SupervisionLabel {
    /// `all`, `grid` or `worker`.
    pub scope: String,
    pub name: String,
    /// incidents | accepted | resolved | escalations | overdue; for seconds: accept | on_site |
    /// resolve.
    pub figure: String,
    /// For seconds: `0.5` or `0.9`; else empty.
    pub quantile: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeverityLabel {
    pub severity: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// What was built: `gridwatch_build_info{version, commit, arch} 1`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    /// `GRIDWATCH_COMMIT` at build time (`packaging/build-deb` sets it), else `unknown`.
    pub commit: String,
    pub arch: String,
}

/// Why telemetry points were not written (the `reason` of `telemetry_points_dropped`).
pub const TELEMETRY_DROP_REASONS: [&str; 4] = ["spool_full", "spool_write_failed", "disk_full", "clock_not_set"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabel {
    pub port: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortResultLabel {
    pub port: String,
    pub result: String,
}

/// All of the daemon's counters. Shared as `Arc<Metrics>`; counters are atomics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// MQTT messages that arrived on a subscribed topic.
    pub messages_received: Counter,
    /// Messages that did not become a sample, by reason.
    pub payloads_rejected: Family<ReasonLabel, Counter>,
    /// Workers' actions received on the ack topic, by result (applied, or why refused).
    pub incident_acks: Family<ReasonLabel, Counter>,
    /// Samples handed to the rule engine.
    pub samples_accepted: Counter,
    /// Samples older than the sensor's previous one: stored, but not evaluated.
    pub samples_out_of_order: Counter,
    /// Times a sensor's clock was found to have gone back and the sensor was re-anchored
    /// (`sensor_clocks`): its readings are judged again.
    pub sensor_clock_reanchors: Counter,
    /// Rule transitions, by `fired` / `cleared`.
    pub rule_events: Family<EventLabel, Counter>,
    /// Times the rule engine's state was written to `engine-state.json`.
    pub rule_state_saves: Counter,
    /// Acknowledged readings judged again at start because the saved rule state had not seen them.
    pub readings_rejudged: Counter,
    /// 1 while those readings are being judged again: new readings wait behind them.
    pub rejudging: Gauge,
    /// Bytes of the crash log skipped at start because they could not be read (torn, damaged).
    pub crash_log_unreadable_bytes: Counter,
    /// Rule events their incident already reflected (judged again after a crash): not sent.
    pub alert_repeats: Counter,
    /// Grid alert events folded into their house's open orange or red (`store::folding`): sent
    /// to nobody but the console.
    pub alerts_folded: Counter,
    /// Alert events a sink confirmed.
    pub alerts_delivered: Family<SinkLabel, Counter>,
    /// Delivery attempts that failed and were retried.
    pub alert_delivery_retries: Family<SinkLabel, Counter>,
    /// Alert events a sink gave up on after its last attempt.
    pub alert_delivery_failures: Family<SinkLabel, Counter>,
    /// Points InfluxDB accepted.
    pub telemetry_points_written: Counter,
    /// Points not written, by reason (`spool_full`, `spool_write_failed`, `unknown_sensor`).
    pub telemetry_points_dropped: Family<ReasonLabel, Counter>,
    /// Samples committed to the spool (before their MQTT acknowledgement).
    pub telemetry_points_spooled: Counter,
    /// Readings the InfluxDB sink took on: handed to the spool in this run, plus those already
    /// waiting in it at start (see `invariants`).
    pub telemetry_points_taken_on: Counter,
    /// Alert deliveries a channel took on: journaled in this run, plus those left pending at start.
    pub alert_deliveries_taken_on: Family<SinkLabel, Counter>,
    /// MQTT messages acknowledged to the broker (after they were spooled or rejected).
    pub mqtt_messages_acknowledged: Counter,
    /// Points InfluxDB refused for good (400/422/413 on the point alone), kept in `dead_letters`.
    pub telemetry_points_dead_lettered: Counter,
    /// Points waiting in the spool.
    pub spool_points: Gauge,
    /// Age of the oldest point waiting in the spool, in seconds (0 when empty).
    pub spool_oldest_age_seconds: Gauge,
    /// 1 while InfluxDB refuses our credentials or bucket (401/403/404): data is kept, an operator must act.
    pub influxdb_config_error: Gauge,
    /// 1 while running on the last good configuration because the current one is invalid.
    pub config_fallback: Gauge,
    /// 1 while the last write to InfluxDB failed (unreachable, 5xx, timeout).
    pub influxdb_unreachable: Gauge,
    /// Time the rule engine takes per sample, in seconds.
    pub rule_evaluation_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Incidents not closed, by severity (updated every second by the dispatcher).
    pub open_incidents: Family<SeverityLabel, Gauge>,
    /// Today's supervision counts (since local midnight), per grid and worker.
    pub supervision_today: Family<SupervisionLabel, Gauge>,
    /// Today's times to accept, on site and resolve, median and p90.
    pub supervision_seconds_today: Family<SupervisionLabel, Gauge>,
    /// 1 while the system clock can be believed (after 2026-01-01; see `clock::TRUSTED_AFTER_MS`).
    pub clock_trusted: Gauge,
    /// 1 while the state directory's disk is full: the reserve is given up and readings are not stored.
    pub store_disk_full: Gauge,
    /// 1 while the store cannot write (read-only state directory, or writes failing).
    pub store_write_failing: Gauge,
    /// Store writes that failed since start (a full disk aside).
    pub store_failed_writes: Gauge,
    /// Bytes of a torn `-wal` tail found at start (dropped by SQLite's recovery).
    pub store_torn_wal_bytes: Gauge,
    /// Readings the devices numbered but that never arrived (gaps in `seq`).
    pub sequence_gaps: Counter,
    /// Devices' `seq` jumping back or too far forward to be gaps: a restart or a renumbering.
    pub sequence_restarts: Counter,
    /// Frames per serial port, by result (`good`, `bad`, `no_answer`).
    pub serial_frames: Family<PortResultLabel, Counter>,
    /// Times a serial port failed or could not be opened (each followed by a reopen).
    pub serial_port_errors: Family<PortLabel, Counter>,
    /// 1 while the ingest connection to the MQTT broker is up.
    pub mqtt_connected: Gauge,
    /// Successful connections to the MQTT broker.
    pub mqtt_connects: Counter,
    /// Errors on the MQTT connection (each followed by a reconnect with backoff).
    pub mqtt_connection_errors: Counter,
    /// 1, labelled with the version, commit and architecture of this binary.
    pub build_info: Family<BuildLabels, Gauge>,
    /// When this process started (Unix seconds): a value that keeps changing is a restart loop.
    pub start_time_seconds: Gauge,
    /// 1 while the last rule reload succeeded (or none was tried since start); 0 after a
    /// refused one: the old rules still run, an operator must fix the files.
    pub reload_success: Gauge,
    /// When the running rules were loaded (Unix seconds): at start, then at each good reload.
    pub reload_last_success_timestamp_seconds: Gauge,
    /// Rule reloads (SIGHUP or changed files), by result (`ok`, `invalid`).
    pub reloads: Family<ResultLabel, Counter>,
    /// With `[cluster]`, by kind (`alert`, `transition`, `reading`): rows the box has that the
    /// hub's high-water mark does not cover yet.
    pub uplink_rows_behind: Family<KindLabel, Gauge>,
    /// With `[cluster]`: batches sent again because the hub had not committed them in time.
    pub uplink_batches_resent: Family<KindLabel, Counter>,
    /// With `[cluster]`: times the store took a new epoch because the hub held more of it than
    /// it had (a store restored from an older copy).
    pub uplink_epochs_renewed: Counter,
    /// With `[cluster]`: seconds since the hub last committed this kind's batch or the box had
    /// nothing of it waiting (grows while the link or the hub is down).
    pub uplink_last_commit_age_seconds: Family<KindLabel, Gauge>,
    /// With `[cluster]`: readings offered to the uplink, by result: `kept` (will go up),
    /// `thinned` (over `uplink_points_per_sec`), `backlog_full`, `queue_full`, `not_stored`.
    pub uplink_readings: Family<ResultLabel, Counter>,
}

/// The results of `gridwatch_uplink_readings_total`.
pub const UPLINK_READING_RESULTS: [&str; 5] = ["kept", "thinned", "backlog_full", "queue_full", "not_stored"];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gridwatch");
        let metrics = Metrics {
            messages_received: Counter::default(),
            payloads_rejected: Family::default(),
            incident_acks: Family::default(),
            samples_accepted: Counter::default(),
            samples_out_of_order: Counter::default(),
            sensor_clock_reanchors: Counter::default(),
            rule_events: Family::default(),
            rule_state_saves: Counter::default(),
            readings_rejudged: Counter::default(),
            rejudging: Gauge::default(),
            crash_log_unreadable_bytes: Counter::default(),
            alert_repeats: Counter::default(),
            alerts_folded: Counter::default(),
            alerts_delivered: Family::default(),
            alert_delivery_retries: Family::default(),
            alert_delivery_failures: Family::default(),
            telemetry_points_written: Counter::default(),
            telemetry_points_dropped: Family::default(),
            telemetry_points_spooled: Counter::default(),
            telemetry_points_taken_on: Counter::default(),
            alert_deliveries_taken_on: Family::default(),
            mqtt_messages_acknowledged: Counter::default(),
            telemetry_points_dead_lettered: Counter::default(),
            spool_points: Gauge::default(),
            spool_oldest_age_seconds: Gauge::default(),
            influxdb_config_error: Gauge::default(),
            config_fallback: Gauge::default(),
            clock_trusted: Gauge::default(),
            store_disk_full: Gauge::default(),
            store_write_failing: Gauge::default(),
            store_failed_writes: Gauge::default(),
            store_torn_wal_bytes: Gauge::default(),
            open_incidents: Family::default(),
            uplink_rows_behind: Family::default(),
            uplink_batches_resent: Family::default(),
            uplink_epochs_renewed: Counter::default(),
            uplink_last_commit_age_seconds: Family::default(),
            uplink_readings: Family::default(),
            supervision_today: Family::default(),
            supervision_seconds_today: Family::default(),
            influxdb_unreachable: Gauge::default(),
            // 1 µs … ~1 ms in powers of two.
            rule_evaluation_seconds: prometheus_client::metrics::histogram::Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                1e-6, 2.0, 11,
            )),
            sequence_gaps: Counter::default(),
            sequence_restarts: Counter::default(),
            serial_frames: Family::default(),
            serial_port_errors: Family::default(),
            mqtt_connected: Gauge::default(),
            mqtt_connects: Counter::default(),
            mqtt_connection_errors: Counter::default(),
            build_info: Family::default(),
            start_time_seconds: Gauge::default(),
            reload_success: Gauge::default(),
            reload_last_success_timestamp_seconds: Gauge::default(),
            reloads: Family::default(),
            registry: Registry::default(),
        };
        registry.register("mqtt_messages_received", "MQTT messages received on subscribed topics", metrics.messages_received.clone());
        registry.register("payloads_rejected", "Messages rejected, by reason", metrics.payloads_rejected.clone());
        registry.register(
            "incident_acks",
            "Workers' actions received on the MQTT ack topic or from the district hub, by result",
            metrics.incident_acks.clone(),
        );
        registry.register("samples_accepted", "Samples handed to the rule engine", metrics.samples_accepted.clone());
        registry.register("samples_out_of_order", "Samples older than the sensor's previous one (not evaluated)", metrics.samples_out_of_order.clone());
        registry.register(
            "sensor_clock_reanchors",
            "Sensors re-anchored because their clock went back (their readings kept coming older than the last judged one)",
            metrics.sensor_clock_reanchors.clone(),
        );
        registry.register(
            "supervision_today",
            "Today's supervision figures (incidents opened since local midnight), per grid and worker: incidents, accepted, resolved, escalations, overdue",
            metrics.supervision_today.clone(),
        );
        registry.register(
            "supervision_seconds_today",
            "Today's times to accept, to be on site and to resolve, per grid and worker, at the median and 90th percentile",
            metrics.supervision_seconds_today.clone(),
        );
        registry.register("rule_events", "Rule transitions, by event", metrics.rule_events.clone());
        registry.register("rule_state_saves", "Times the rule engine's state was saved (only when it changed)", metrics.rule_state_saves.clone());
        registry.register(
            "readings_rejudged",
            "Acknowledged readings judged again at start because the saved rule state had not seen them",
            metrics.readings_rejudged.clone(),
        );
        registry.register(
            "rejudging",
            "1 while the daemon judges again at start the readings its saved rule state had not seen; new readings wait behind them",
            metrics.rejudging.clone(),
        );
        registry.register(
            "crash_log_unreadable_bytes",
            "Bytes of the crash log skipped at start because they could not be read (a write cut by a power loss, a damaged card); the readings in them were not judged again",
            metrics.crash_log_unreadable_bytes.clone(),
        );
        registry.register(
            "alert_repeats",
            "Rule events their incident already reflected (judged again after a crash); not sent",
            metrics.alert_repeats.clone(),
        );
        registry.register(
            "alerts_folded",
            "Grid alert events folded into their house's open orange or red alarm: recorded, sent to nobody but the console",
            metrics.alerts_folded.clone(),
        );
        registry.register("alerts_delivered", "Alert events confirmed by a sink", metrics.alerts_delivered.clone());
        registry.register("alert_delivery_retries", "Failed alert delivery attempts that were retried", metrics.alert_delivery_retries.clone());
        registry.register("alert_delivery_failures", "Alert events a sink gave up on", metrics.alert_delivery_failures.clone());
        registry.register("telemetry_points_written", "Points accepted by InfluxDB", metrics.telemetry_points_written.clone());
        registry.register("telemetry_points_dropped", "Points not written, by reason", metrics.telemetry_points_dropped.clone());
        registry.register(
            "telemetry_points_spooled",
            "Samples committed to the spool before their MQTT acknowledgement",
            metrics.telemetry_points_spooled.clone(),
        );
        registry.register(
            "telemetry_points_taken_on",
            "Readings handed to the spool in this run plus those waiting in it at start",
            metrics.telemetry_points_taken_on.clone(),
        );
        registry.register(
            "alert_deliveries_taken_on",
            "Alert deliveries journaled per channel in this run plus those left pending at start",
            metrics.alert_deliveries_taken_on.clone(),
        );
        registry.register("mqtt_messages_acknowledged", "MQTT messages acknowledged to the broker", metrics.mqtt_messages_acknowledged.clone());
        registry.register(
            "telemetry_points_dead_lettered",
            "Points InfluxDB refused for good, kept in dead_letters",
            metrics.telemetry_points_dead_lettered.clone(),
        );
        registry.register("spool_points", "Points waiting in the spool", metrics.spool_points.clone());
        registry.register("spool_oldest_age_seconds", "Age of the oldest spooled point", metrics.spool_oldest_age_seconds.clone());
        registry.register("influxdb_config_error", "1 while InfluxDB refuses credentials or bucket", metrics.influxdb_config_error.clone());
        registry.register("influxdb_unreachable", "1 while the last write to InfluxDB failed", metrics.influxdb_unreachable.clone());
        registry.register("rule_evaluation_seconds", "Time the rule engine takes per sample", metrics.rule_evaluation_seconds.clone());
        registry.register("open_incidents", "Incidents not closed, by severity", metrics.open_incidents.clone());
        registry.register(
            "store_write_failing",
            "1 while the store cannot write (read-only state directory or failing writes): incidents and reminders are at risk",
            metrics.store_write_failing.clone(),
        );
        registry.register("store_failed_writes", "Store writes that failed since start (a full disk aside)", metrics.store_failed_writes.clone());
        registry.register(
            "store_torn_wal_bytes",
            "Bytes of a write-ahead log torn by a power cut, found at start (dropped by recovery, never acknowledged)",
            metrics.store_torn_wal_bytes.clone(),
        );
        registry.register(
            "store_disk_full",
            "1 while the state directory is full: readings are not stored, alarms use the space kept in reserve",
            metrics.store_disk_full.clone(),
        );
        registry.register(
            "clock_trusted",
            "1 while the system clock is set (readings stamped by an unset clock are not stored)",
            metrics.clock_trusted.clone(),
        );
        registry.register("config_fallback", "1 while running on the last good configuration (the current one is invalid)", metrics.config_fallback.clone());
        registry.register("sequence_gaps", "Readings missing from device sequence numbers", metrics.sequence_gaps.clone());
        registry.register(
            "sequence_restarts",
            "Device sequence numbers jumping back or too far forward to be gaps (a restart or renumbering)",
            metrics.sequence_restarts.clone(),
        );
        registry.register("serial_frames", "Serial frames per port, by result", metrics.serial_frames.clone());
        registry.register("serial_port_errors", "Serial port failures (each followed by a reopen)", metrics.serial_port_errors.clone());
        registry.register("mqtt_connected", "1 while the ingest connection to the broker is up", metrics.mqtt_connected.clone());
        registry.register("mqtt_connects", "Successful connections to the MQTT broker", metrics.mqtt_connects.clone());
        registry.register("mqtt_connection_errors", "Errors on the MQTT connection", metrics.mqtt_connection_errors.clone());
        registry.register("build_info", "1, labelled with the version, commit and architecture of this binary", metrics.build_info.clone());
        registry.register("start_time_seconds", "When this process started (Unix seconds)", metrics.start_time_seconds.clone());
        registry.register("reload_success", "1 while the last rule reload succeeded (0: refused, the old rules keep running)", metrics.reload_success.clone());
        registry.register(
            "reload_last_success_timestamp_seconds",
            "When the running rules were loaded (Unix seconds)",
            metrics.reload_last_success_timestamp_seconds.clone(),
        );
        registry.register("reloads", "Rule reloads, by result", metrics.reloads.clone());
        registry.register("uplink_rows_behind", "Rows the district hub has not committed yet, by kind", metrics.uplink_rows_behind.clone());
        registry.register("uplink_batches_resent", "Uplink batches sent again (not committed in time), by kind", metrics.uplink_batches_resent.clone());
        registry.register(
            "uplink_epochs_renewed",
            "Times the store took a new epoch: the district held more of it than it had (restored from an older copy)",
            metrics.uplink_epochs_renewed.clone(),
        );
        registry.register(
            "uplink_last_commit_age_seconds",
            "Seconds since the hub last committed this kind or nothing of it waited",
            metrics.uplink_last_commit_age_seconds.clone(),
        );
        registry.register("uplink_readings", "Readings offered to the district uplink, by result", metrics.uplink_readings.clone());
        let build = BuildLabels {
            version: env!("CARGO_PKG_VERSION").into(),
            commit: option_env!("GRIDWATCH_COMMIT").unwrap_or("unknown").into(),
            arch: std::env::consts::ARCH.into(),
        };
        metrics.build_info.get_or_create(&build).set(1);
        // The families whose label values are known in advance start at 0.
        for reason in Rejection::REASONS {
            let _ = metrics.payloads_rejected.get_or_create(&ReasonLabel { reason: reason.into() });
        }
        for event in ["fired", "changed", "cleared"] {
            let _ = metrics.rule_events.get_or_create(&EventLabel { event: event.into() });
        }
        for reason in TELEMETRY_DROP_REASONS {
            let _ = metrics.telemetry_points_dropped.get_or_create(&ReasonLabel { reason: reason.into() });
        }
        let acks = ["applied", "not_applicable"]
            .into_iter()
            .chain(crate::sources::mqtt::incident_acks::Refusal::ALL.map(crate::sources::mqtt::incident_acks::Refusal::as_str));
        for reason in acks {
            let _ = metrics.incident_acks.get_or_create(&ReasonLabel { reason: reason.into() });
        }
        for severity in gridwatch_rules::Severity::ALL {
            let _ = metrics.open_incidents.get_or_create(&SeverityLabel { severity: severity.as_str().into() });
        }
        for result in ["ok", "invalid"] {
            let _ = metrics.reloads.get_or_create(&ResultLabel { result: result.into() });
        }
        Metrics { registry, ..metrics }
    }

    /// Shows every per-channel counter of `sinks` at 0 until it moves (called with the
    /// configured channels when `/metrics` is served).
    pub fn know_sinks(&self, sinks: &[String]) {
        for sink in sinks {
            let label = Metrics::sink(sink);
            let _ = self.alerts_delivered.get_or_create(&label);
            let _ = self.alert_delivery_retries.get_or_create(&label);
            let _ = self.alert_delivery_failures.get_or_create(&label);
            let _ = self.alert_deliveries_taken_on.get_or_create(&label);
        }
    }

    /// Shows the district uplink's series at 0 (called when `[cluster]` is configured).
    pub fn know_uplink(&self, kinds: &[&str]) {
        for kind in kinds {
            let label = KindLabel { kind: (*kind).into() };
            let _ = self.uplink_rows_behind.get_or_create(&label);
            let _ = self.uplink_batches_resent.get_or_create(&label);
            let _ = self.uplink_last_commit_age_seconds.get_or_create(&label);
        }
        for result in UPLINK_READING_RESULTS {
            let _ = self.uplink_readings.get_or_create(&ResultLabel { result: result.into() });
        }
    }

    pub fn count_uplink_readings(&self, result: &str, count: u64) {
        self.uplink_readings.get_or_create(&ResultLabel { result: result.into() }).inc_by(count);
    }

    /// When the daemon started, on its clock (ms since the epoch).
    pub fn started(&self, now_ms: i64) {
        self.start_time_seconds.set(now_ms.div_euclid(1000));
    }

    /// Records a rule reload at `now_ms`: `ok` when the new rules were checked and handed over,
    /// else the old ones keep running.
    pub fn record_reload(&self, ok: bool, now_ms: i64) {
        self.reload_success.set(i64::from(ok));
        self.reloads.get_or_create(&ResultLabel { result: if ok { "ok" } else { "invalid" }.into() }).inc();
        if ok {
            self.reload_last_success_timestamp_seconds.set(now_ms.div_euclid(1000));
        }
    }

    /// The rules loaded at start (at `now_ms`) count as the last good load.
    pub fn rules_loaded_at_start(&self, now_ms: i64) {
        self.reload_success.set(1);
        self.reload_last_success_timestamp_seconds.set(now_ms.div_euclid(1000));
    }

    pub fn reject(&self, rejection: &Rejection) {
        self.payloads_rejected.get_or_create(&ReasonLabel { reason: rejection.reason().into() }).inc();
    }

    pub fn rejected(&self, reason: &str) -> u64 {
        self.payloads_rejected.get_or_create(&ReasonLabel { reason: reason.into() }).get()
    }

    pub fn rejected_total(&self) -> u64 {
        Rejection::REASONS.iter().map(|reason| self.rejected(reason)).sum()
    }

    pub fn count_rule_event(&self, event: &str) {
        self.rule_events.get_or_create(&EventLabel { event: event.into() }).inc();
    }

    pub fn rule_events_total(&self, event: &str) -> u64 {
        self.rule_events.get_or_create(&EventLabel { event: event.into() }).get()
    }

    pub fn port(name: &str) -> PortLabel {
        PortLabel { port: name.into() }
    }

    pub fn sink(name: &str) -> SinkLabel {
        SinkLabel { sink: name.into() }
    }

    pub fn drop_telemetry(&self, reason: &str, points: u64) {
        self.telemetry_points_dropped.get_or_create(&ReasonLabel { reason: reason.into() }).inc_by(points);
    }

    pub fn telemetry_dropped(&self, reason: &str) -> u64 {
        self.telemetry_points_dropped.get_or_create(&ReasonLabel { reason: reason.into() }).get()
    }

    /// Counts deliveries journaled for `channels` (or found pending at start).
    pub fn take_on_deliveries<'a>(&self, channels: impl IntoIterator<Item = &'a String>, each: u64) {
        for channel in channels {
            self.alert_deliveries_taken_on.get_or_create(&Metrics::sink(channel)).inc_by(each);
        }
    }

    /// The Prometheus text exposition of every counter.
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
    fn rule_time_and_open_incidents_are_exposed() {
        let metrics = Metrics::new();
        metrics.rule_evaluation_seconds.observe(3e-6);
        metrics.open_incidents.get_or_create(&SeverityLabel { severity: "danger".into() }).set(2);
        let text = metrics.render();
        assert!(text.contains("gridwatch_rule_evaluation_seconds_count 1"), "{text}");
        assert!(
            text.contains("gridwatch_rule_evaluation_seconds_bucket{le=\"4e-6\"} 1")
                || text.contains("gridwatch_rule_evaluation_seconds_bucket{le=\"0.000004\"} 1"),
            "{text}"
        );
        assert!(text.contains("gridwatch_open_incidents{severity=\"danger\"} 2"), "{text}");
    }

    #[test]
    fn counters_with_known_labels_are_rendered_at_zero_from_start() {
        let metrics = Metrics::new();
        metrics.know_sinks(&["office".to_string()]);
        let text = metrics.render();
        for series in [
            "gridwatch_alert_delivery_failures_total{sink=\"office\"} 0",
            "gridwatch_alert_delivery_retries_total{sink=\"office\"} 0",
            "gridwatch_alerts_delivered_total{sink=\"office\"} 0",
            "gridwatch_telemetry_points_dropped_total{reason=\"spool_write_failed\"} 0",
            "gridwatch_incident_acks_total{reason=\"bad_signature\"} 0",
            "gridwatch_reloads_total{result=\"invalid\"} 0",
            "gridwatch_open_incidents{severity=\"danger\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
        let build = format!("gridwatch_build_info{{version=\"{}\",", env!("CARGO_PKG_VERSION"));
        assert!(text.lines().any(|l| l.starts_with(&build) && l.ends_with("} 1")), "{text}");
    }

    #[test]
    fn a_refused_reload_clears_reload_success_until_a_good_one() {
        let metrics = Metrics::new();
        assert_eq!(metrics.reload_success.get(), 0, "nothing loaded yet");
        metrics.rules_loaded_at_start(1_795_392_000_123);
        let loaded = metrics.reload_last_success_timestamp_seconds.get();
        assert_eq!(loaded, 1_795_392_000);
        metrics.record_reload(false, 1_795_392_060_000);
        assert_eq!((metrics.reload_success.get(), metrics.reload_last_success_timestamp_seconds.get()), (0, loaded));
        metrics.record_reload(true, 1_795_392_120_000);
        assert_eq!((metrics.reload_success.get(), metrics.reload_last_success_timestamp_seconds.get()), (1, 1_795_392_120));
        let text = metrics.render();
        assert!(text.contains("gridwatch_reloads_total{result=\"ok\"} 1") && text.contains("gridwatch_reloads_total{result=\"invalid\"} 1"), "{text}");
    }

    #[test]
    fn rejections_are_rendered_by_reason() {
        let metrics = Metrics::new();
        metrics.reject(&Rejection::NotObject);
        metrics.reject(&Rejection::NotObject);
        let text = metrics.render();
        assert!(text.contains("gridwatch_payloads_rejected_total{reason=\"not_object\"} 2"), "{text}");
        assert!(text.contains("gridwatch_payloads_rejected_total{reason=\"not_json\"} 0"), "{text}");
        assert_eq!(metrics.rejected_total(), 2);
    }
}
