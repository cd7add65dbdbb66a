//! The hourly trend for the district (`cluster::trend`, feature `cluster`): each closed hour's
//! `trend` rows are copied into `uplink_trend`, sent from there in id order like the uplink's
//! readings, and forgotten once the hub's high-water mark covers them.
//!
//! Invariants: a `trend` row is copied when its hour is closed and its count has grown since it
//! was last copied (`trend.uplinked`): once, or again whole when late readings merged into an
//! hour already copied (the district's point for that hour is then overwritten); ids of
//! `uplink_trend` never go back (AUTOINCREMENT), so the hub's mark never hides a new row.

use super::Store;
use rusqlite::params;
use serde::{Deserialize, Serialize};

/// One hour of one field of one sensor, as it goes up (`hour` = hours since the Unix epoch).
/// A figure that is not finite (a reading beyond `f32` makes an infinite minimum or maximum)
/// travels as JSON `null` and comes back as NaN, which the hub leaves out of its line, rather
/// than making the whole batch undecodable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkTrend {
    pub id: i64,
    pub sensor: String,
    pub field: String,
    pub hour: i64,
    #[serde(deserialize_with = "null_as_nan")]
    pub min: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub max: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub sum: f64,
    pub count: u32,
}

/// A figure from JSON: `null` (how serde_json writes a non-finite float) is NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// What [`Store::copy_closed_trend`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopiedTrend {
    pub copied: u64,
    /// Rows of hours too old to keep waiting, which the hub never committed.
    pub dropped: u64,
}

impl Store {
    /// In one transaction: copies the trend rows of hours before `closed_before_hour` that are
    /// new or grew since they were last copied, forgets the copies the hub has committed (ids up
    /// to `committed`) and drops those of hours before `keep_from_hour` the hub never got (a
    /// link down that long); how many rows were copied and dropped.
    pub async fn copy_closed_trend(&self, closed_before_hour: i64, committed: i64, keep_from_hour: i64) -> anyhow::Result<CopiedTrend> {
        self.with_conn_bulk(move |conn| {
            let tx = conn.transaction()?;
            let copied = tx.execute(
                "INSERT INTO uplink_trend (sensor, field, hour, min, max, sum, count)
                 SELECT sensor, field, hour, min, max, sum, count FROM trend
                 WHERE hour < ?1 AND count > uplinked ORDER BY hour, sensor, field",
                [closed_before_hour],
            )?;
            tx.execute("UPDATE trend SET uplinked = count WHERE hour < ?1 AND count > uplinked", [closed_before_hour])?;
            tx.execute("DELETE FROM uplink_trend WHERE id <= ?1", [committed])?;
            let dropped = tx.execute("DELETE FROM uplink_trend WHERE hour < ?1", [keep_from_hour])?;
            tx.commit()?;
            Ok(CopiedTrend { copied: copied as u64, dropped: dropped as u64 })
        })
        .await
    }

    /// Up to `limit` copied trend rows with ids above `after`, oldest first.
    pub async fn uplink_trend_after(&self, after: i64, limit: usize) -> anyhow::Result<Vec<UplinkTrend>> {
        self.read(move |conn| {
            let mut statement =
                conn.prepare_cached("SELECT id, sensor, field, hour, min, max, sum, count FROM uplink_trend WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows = statement.query_map(params![after, limit as i64], |row| {
                Ok(UplinkTrend {
                    id: row.get(0)?,
                    sensor: row.get(1)?,
                    field: row.get(2)?,
                    hour: row.get(3)?,
                    min: row.get(4)?,
                    max: row.get(5)?,
                    sum: row.get(6)?,
                    count: row.get(7)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TrendRow;

    fn row(sensor: &str, hour: i64, value: f64) -> TrendRow {
        TrendRow { sensor: sensor.into(), field: "level".into(), hour, min: value, max: value, sum: value, count: 1 }
    }

    fn hours(rows: &[UplinkTrend]) -> Vec<(i64, &str, i64, u32)> {
        rows.iter().map(|r| (r.id, r.sensor.as_str(), r.hour, r.count)).collect()
    }

    #[tokio::test]
    async fn closed_hours_are_copied_once_and_open_ones_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.add_trend(vec![row("a", 100, 1.0), row("b", 100, 2.0), row("a", 101, 3.0), row("a", 102, 4.0)], 0).await.unwrap();
        assert_eq!(store.copy_closed_trend(102, 0, 0).await.unwrap().copied, 3, "hour 102 is still open");
        assert_eq!(store.copy_closed_trend(102, 0, 0).await.unwrap().copied, 0, "copied once");
        let copied = store.uplink_trend_after(0, 10).await.unwrap();
        assert_eq!(hours(&copied), [(1, "a", 100, 1), (2, "b", 100, 1), (3, "a", 101, 1)]);
        assert_eq!(copied[0], UplinkTrend { id: 1, sensor: "a".into(), field: "level".into(), hour: 100, min: 1.0, max: 1.0, sum: 1.0, count: 1 });
        assert_eq!(hours(&store.uplink_trend_after(2, 10).await.unwrap()), [(3, "a", 101, 1)]);
        assert_eq!(store.copy_closed_trend(103, 0, 0).await.unwrap().copied, 1, "hour 102 once closed");
    }

    #[test]
    fn a_figure_beyond_finite_travels_as_nan_not_as_an_undecodable_row() {
        let hour = UplinkTrend { id: 1, sensor: "a".into(), field: "level".into(), hour: 1, min: 1.0, max: f64::INFINITY, sum: 2.0, count: 2 };
        let text = serde_json::to_string(&hour).unwrap();
        let back: UplinkTrend = serde_json::from_str(&text).unwrap();
        assert!(back.max.is_nan(), "{text}");
        assert_eq!((back.min, back.sum, back.count), (1.0, 2.0, 2));
    }

    #[tokio::test]
    async fn an_hour_grown_by_late_readings_goes_again_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.add_trend(vec![row("a", 100, 1.0)], 0).await.unwrap();
        store.copy_closed_trend(101, 0, 0).await.unwrap();
        store.add_trend(vec![row("a", 100, 5.0)], 0).await.unwrap();
        assert_eq!(store.copy_closed_trend(101, 0, 0).await.unwrap().copied, 1);
        let again = store.uplink_trend_after(1, 10).await.unwrap();
        assert_eq!((again[0].min, again[0].max, again[0].sum, again[0].count), (1.0, 5.0, 6.0, 2), "the merged hour, not the late reading alone");
    }

    #[tokio::test]
    async fn copies_the_hub_committed_are_forgotten_and_ids_never_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.add_trend(vec![row("a", 100, 1.0), row("b", 100, 2.0)], 0).await.unwrap();
        store.copy_closed_trend(101, 0, 0).await.unwrap();
        store.copy_closed_trend(101, 2, 0).await.unwrap();
        assert!(store.uplink_trend_after(0, 10).await.unwrap().is_empty(), "committed: forgotten");
        store.add_trend(vec![row("a", 101, 1.0)], 0).await.unwrap();
        store.copy_closed_trend(102, 2, 0).await.unwrap();
        assert_eq!(hours(&store.uplink_trend_after(0, 10).await.unwrap()), [(3, "a", 101, 1)]);
        assert_eq!(store.uplink_newest_ids().await.unwrap()[3], 3);
        assert_eq!(store.copy_closed_trend(102, 2, 102).await.unwrap(), CopiedTrend { copied: 0, dropped: 1 }, "too old to keep waiting");
        assert!(store.uplink_trend_after(0, 10).await.unwrap().is_empty());
    }
}
