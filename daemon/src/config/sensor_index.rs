//! Finding a sensor of the inventory by id without a map of copied ids: the inventory's
//! positions sorted by id (four bytes per sensor), searched by bisection. The topic router, the
//! InfluxDB writer and the bus watcher share one inventory through it instead of each keeping
//! ten thousand id strings of their own.

use super::SensorConfig;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct SensorIndex {
    sensors: Arc<[SensorConfig]>,
    by_id: Arc<[u32]>,
}

impl SensorIndex {
    pub fn new(sensors: Arc<[SensorConfig]>) -> SensorIndex {
        let mut by_id: Vec<u32> = (0..sensors.len()).filter_map(|i| u32::try_from(i).ok()).collect();
        by_id.sort_unstable_by(|&a, &b| sensors[a as usize].id.cmp(&sensors[b as usize].id));
        SensorIndex { sensors, by_id: by_id.into() }
    }

    /// The sensor's position in the inventory.
    pub fn position(&self, id: &str) -> Option<usize> {
        let found = self.by_id.binary_search_by(|&i| (*self.sensors[i as usize].id).cmp(id)).ok()?;
        Some(self.by_id[found] as usize)
    }

    pub fn get(&self, id: &str) -> Option<&SensorConfig> {
        self.position(id).map(|i| &self.sensors[i])
    }

    /// The inventory, in its own order.
    pub fn sensors(&self) -> &Arc<[SensorConfig]> {
        &self.sensors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_sensor_and_nothing_else() {
        let sensors: Arc<[SensorConfig]> = ["house-10", "house-02", "pond-1", "house-1"].iter().map(|id| SensorConfig::test_tilt(id, "north-lane")).collect();
        let index = SensorIndex::new(sensors.clone());
        for (position, sensor) in sensors.iter().enumerate() {
            assert_eq!(index.position(&sensor.id), Some(position), "{}", sensor.id);
        }
        assert_eq!(index.get("pond-1").map(|s| &*s.id), Some("pond-1"));
        assert_eq!(index.position("house-3"), None);
        assert_eq!(index.position(""), None);
    }
}
