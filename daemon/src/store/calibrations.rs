//! Installation baselines set by `gridwatch calibrate`, kept with who set them and when. The
//! latest per sensor and field wins over the inventory's `baseline` at every start and reload.

use super::Store;
use rusqlite::params;

/// One field's new baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pub sensor: String,
    pub field: String,
    pub value: f64,
    pub previous: Option<f64>,
    /// Readings the median was taken over.
    pub readings: usize,
    pub author: String,
    pub at_ms: i64,
}

impl Store {
    pub async fn record_calibrations(&self, calibrations: Vec<Calibration>) -> anyhow::Result<()> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            for c in &calibrations {
                tx.execute(
                    "INSERT INTO calibrations (sensor, field, value, previous, readings, author, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![c.sensor, c.field, c.value, c.previous, c.readings as i64, c.author, c.at_ms],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The latest calibration of each sensor and field.
    pub fn calibrations(&self) -> anyhow::Result<Vec<Calibration>> {
        let conn = self.lock()?;
        let mut statement = conn.prepare(
            "SELECT sensor, field, value, previous, readings, author, at_ms FROM calibrations c
             WHERE id = (SELECT MAX(id) FROM calibrations d WHERE d.sensor = c.sensor AND d.field = c.field) ORDER BY sensor, field",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(Calibration {
                sensor: row.get(0)?,
                field: row.get(1)?,
                value: row.get(2)?,
                previous: row.get(3)?,
                readings: row.get::<_, i64>(4)? as usize,
                author: row.get(5)?,
                at_ms: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}
