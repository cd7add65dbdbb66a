//! Hourly trend rows (see `crate::trend`): per sensor, field and hour, the minimum, maximum, sum
//! and count of the readings. Rows for an hour that already has one are merged into it; hours
//! older than the kept window are deleted as rows are added. Bulk writes: they never use the
//! disk reserve.

use super::Store;
use rusqlite::params;
use std::sync::Arc;

/// One hour of one field of one sensor (`hour` = hours since the epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct TrendRow {
    pub sensor: Arc<str>,
    pub field: Arc<str>,
    pub hour: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u32,
}

/// One field's hours, oldest first: (hour, min, mean, max).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldTrend {
    pub field: String,
    pub hours: Vec<(i64, f64, f64, f64)>,
}

impl Store {
    /// Merges `rows` in and drops hours before `keep_from_hour`.
    pub async fn add_trend(&self, rows: Vec<TrendRow>, keep_from_hour: i64) -> anyhow::Result<()> {
        self.with_conn_bulk(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO trend (sensor, field, hour, min, max, sum, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (sensor, field, hour) DO UPDATE SET
                       min = min(min, excluded.min), max = max(max, excluded.max), sum = sum + excluded.sum, count = count + excluded.count",
                )?;
                for r in &rows {
                    upsert.execute(params![r.sensor, r.field, r.hour, r.min, r.max, r.sum, r.count])?;
                }
            }
            tx.execute("DELETE FROM trend WHERE hour < ?1", [keep_from_hour])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// A sensor's hours from `from_hour` on, per field.
    pub fn trend(&self, sensor: &str, from_hour: i64) -> anyhow::Result<Vec<FieldTrend>> {
        let conn = self.lock()?;
        let mut statement =
            conn.prepare("SELECT field, hour, min, sum / count, max FROM trend WHERE sensor = ?1 AND hour >= ?2 AND count > 0 ORDER BY field, hour")?;
        let rows = statement.query_map(params![sensor, from_hour], |row| {
            Ok((row.get::<_, String>(0)?, (row.get::<_, i64>(1)?, row.get::<_, f64>(2)?, row.get::<_, f64>(3)?, row.get::<_, f64>(4)?)))
        })?;
        let mut fields: Vec<FieldTrend> = Vec::new();
        for row in rows {
            let (field, point) = row?;
            match fields.last_mut() {
                Some(last) if last.field == field => last.hours.push(point),
                _ => fields.push(FieldTrend { field, hours: vec![point] }),
            }
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hour: i64, min: f64, max: f64, sum: f64, count: u32) -> TrendRow {
        TrendRow { sensor: "house-07".into(), field: "x".into(), hour, min, max, sum, count }
    }

    #[tokio::test]
    async fn rows_for_one_hour_merge_and_old_hours_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.add_trend(vec![row(100, 1.0, 3.0, 4.0, 2), row(101, 5.0, 5.0, 5.0, 1)], 0).await.unwrap();
        store.add_trend(vec![row(101, 2.0, 9.0, 11.0, 2)], 0).await.unwrap();
        assert_eq!(
            store.trend("house-07", 0).unwrap(),
            vec![FieldTrend { field: "x".to_string(), hours: vec![(100, 1.0, 2.0, 3.0), (101, 2.0, 16.0 / 3.0, 9.0)] }]
        );
        store.add_trend(Vec::new(), 101).await.unwrap();
        assert_eq!(store.trend("house-07", 0).unwrap()[0].hours.len(), 1, "hour 100 dropped");
        assert!(store.trend("house-08", 0).unwrap().is_empty());
    }
}
