//! The conservation check behind the durability promise, per sink: everything a sink took on
//! is delivered, dropped (and counted), or still pending in the local store. Anything else is in
//! flight between two counters — and a difference that does not go away once the box is quiet
//! is a loss nobody counted.
//!
//! Sinks: `influxdb` (readings: taken on = handed to the spool in this run plus those waiting in
//! it at start; delivered = written; dropped = dead-lettered or dropped for any reason; pending =
//! in the spool) and each alert channel (taken on = deliveries journaled in this run plus those
//! left pending at start; delivered; dropped = failed after their retries; pending = still
//! pending in the outbox; not sent = left unsent on purpose in this run — out of date, a
//! reminder answered, folded into its house's red — `Store::not_sent_this_run`). Served at `/api/balance`; the durability tests wait for it to balance.

use crate::metrics::{Metrics, SinkLabel};
use crate::store::Store;
use serde::Serialize;

/// Which sinks this daemon has.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// Alert channels by name.
    pub channels: Vec<String>,
    /// Whether readings go to InfluxDB (through the spool).
    pub telemetry: bool,
}

/// One sink's accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkBalance {
    pub sink: String,
    pub taken_on: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub pending: u64,
    /// Left unsent on purpose (alert channels; 0 for readings).
    pub not_sent: u64,
}

impl SinkBalance {
    /// `taken_on − delivered − dropped − pending`: what is between two counters right now.
    pub fn in_flight(&self) -> i128 {
        i128::from(self.taken_on) - i128::from(self.delivered) - i128::from(self.dropped) - i128::from(self.pending) - i128::from(self.not_sent)
    }

    pub fn balanced(&self) -> bool {
        self.in_flight() == 0
    }
}

/// Every sink's accounts, from the counters and the store.
pub fn balances(ledger: &Ledger, metrics: &Metrics, store: &Store) -> anyhow::Result<Vec<SinkBalance>> {
    let mut sinks = Vec::new();
    if ledger.telemetry {
        let dropped: u64 = ["spool_full", "disk_full", "spool_write_failed"].iter().map(|reason| metrics.telemetry_dropped(reason)).sum();
        sinks.push(SinkBalance {
            sink: "influxdb".into(),
            taken_on: metrics.telemetry_points_taken_on.get(),
            delivered: metrics.telemetry_points_written.get(),
            dropped: dropped + metrics.telemetry_points_dead_lettered.get(),
            pending: store.spool_stats()?.points,
            not_sent: 0,
        });
    }
    let pending = store.pending_delivery_counts()?;
    let not_sent = store.not_sent_this_run()?;
    for channel in &ledger.channels {
        let label = SinkLabel { sink: channel.clone() };
        sinks.push(SinkBalance {
            sink: channel.clone(),
            taken_on: metrics.alert_deliveries_taken_on.get_or_create(&label).get(),
            delivered: metrics.alerts_delivered.get_or_create(&label).get(),
            dropped: metrics.alert_delivery_failures.get_or_create(&label).get(),
            pending: pending.get(channel).copied().unwrap_or(0),
            not_sent: not_sent.get(channel).copied().unwrap_or(0),
        });
    }
    Ok(sinks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accounts_balance_only_when_every_item_is_delivered_dropped_or_pending() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = Metrics::new();
        let ledger = Ledger { channels: vec!["office".into()], telemetry: true };
        let points = (0..5).map(|i| ("house-07".into(), 1_795_392_000_000 + i, vec![("x".to_string(), 1.0)])).collect();
        store.spool_append(std::sync::Arc::new(points), 100).await.unwrap();
        metrics.telemetry_points_taken_on.inc_by(6);
        metrics.drop_telemetry("disk_full", 1);
        let alert = crate::alert::tests::sample_alert("fired", 7.3);
        store.record_alert(&alert, &["office".to_string()]).await.unwrap();
        metrics.alert_deliveries_taken_on.get_or_create(&Metrics::sink("office")).inc();

        let all = balances(&ledger, &metrics, &store).unwrap();
        assert_eq!(all[0], SinkBalance { sink: "influxdb".into(), taken_on: 6, delivered: 0, dropped: 1, pending: 5, not_sent: 0 });
        assert_eq!(all[1], SinkBalance { sink: "office".into(), taken_on: 1, delivered: 0, dropped: 0, pending: 1, not_sent: 0 });
        assert!(all.iter().all(SinkBalance::balanced));

        // Left unsent on purpose (an outside tester's accounts stayed unbalanced after an orange
        // gave way to its red): counted apart, still balanced.
        let mut orange = crate::alert::tests::sample_alert("fired", 4.3);
        (orange.sensor, orange.building) = ("house-31".into(), Some("B3".into()));
        let id = store.record_alert(&orange, &["office".to_string()]).await.unwrap();
        metrics.alert_deliveries_taken_on.get_or_create(&Metrics::sink("office")).inc();
        store.mark_delivery(id, "office", false, 0, Some(format!("{}a later event goes in its place", crate::store::NOT_SENT))).await.unwrap();
        let office = &balances(&ledger, &metrics, &store).unwrap()[1];
        assert_eq!((office.not_sent, office.pending), (1, 1));
        assert!(office.balanced(), "{office:?}");

        // A reading counted as taken on that is nowhere: the accounts show it.
        metrics.telemetry_points_taken_on.inc();
        assert_eq!(balances(&ledger, &metrics, &store).unwrap()[0].in_flight(), 1);
    }
}
