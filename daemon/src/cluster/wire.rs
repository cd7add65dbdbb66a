//! What travels from a box to the hub: one JSON batch of rows of one kind per message, on the
//! subject `gw.up.<district>.<box>.<kind>`, with `Nats-Msg-Id` =
//! `<box>:<epoch>:<kind>:<first>-<last>` so JetStream drops a batch sent twice within its
//! duplicate window, and the hub drops any row sent twice after it (primary keys in PostgreSQL;
//! rows at or below its high-water mark for readings). Row ids count within the box's store
//! epoch (a fresh store replacing a corrupt one starts at 1 again under a new epoch), so the
//! epoch is part of every key: message ids, high-water marks, the hub's rows. A batch of readings names each of its sensors' place once (`places`), which the
//! hub tags the district's InfluxDB points with. Pure: no IO.
//!
//! Invariant: a batch's rows are of its kind, in id order, `first`..=`last` their id range.

use crate::store::{UplinkAlert, UplinkReading, UplinkTransition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The kinds of rows a box sends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `alert_events`: every fired, changed, cleared, reminder and escalation.
    Alert,
    /// `incident_events`: every transition of an incident the box owns.
    Transition,
    /// `uplink_readings`: the readings chosen for the district (at most `uplink_points_per_sec`).
    Reading,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Alert, Kind::Transition, Kind::Reading];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Alert => "alert",
            Kind::Transition => "transition",
            Kind::Reading => "reading",
        }
    }
}

/// The rows of one batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "rows", rename_all = "snake_case")]
pub enum Rows {
    Alert(Vec<UplinkAlert>),
    Transition(Vec<UplinkTransition>),
    Reading(Vec<UplinkReading>),
}

/// Where a sensor is and what it is: the measurement and tags of its points in InfluxDB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Place {
    /// The sensor kind (`tilt`, `water`): the measurement.
    pub kind: String,
    pub site: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<String>,
}

/// One uplink message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub box_id: String,
    pub district: String,
    /// The box's store epoch ([`crate::store::StoreEpoch`]); empty in a batch from a box from
    /// before epochs.
    #[serde(default)]
    pub epoch: String,
    #[serde(flatten)]
    pub rows: Rows,
    /// For readings: the place of each sensor in the batch (by id); a sensor no longer in the
    /// box's inventory is missing here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub places: BTreeMap<String, Place>,
}

impl Batch {
    pub fn kind(&self) -> Kind {
        match self.rows {
            Rows::Alert(_) => Kind::Alert,
            Rows::Transition(_) => Kind::Transition,
            Rows::Reading(_) => Kind::Reading,
        }
    }

    /// The first and last row id; none for an empty batch (never sent).
    pub fn range(&self) -> Option<(i64, i64)> {
        let ids: Vec<i64> = match &self.rows {
            Rows::Alert(rows) => rows.iter().map(|r| r.id).collect(),
            Rows::Transition(rows) => rows.iter().map(|r| r.id).collect(),
            Rows::Reading(rows) => rows.iter().map(|r| r.id).collect(),
        };
        Some((*ids.first()?, *ids.last()?))
    }

    pub fn len(&self) -> usize {
        match &self.rows {
            Rows::Alert(rows) => rows.len(),
            Rows::Transition(rows) => rows.len(),
            Rows::Reading(rows) => rows.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn subject(&self) -> String {
        format!("gw.up.{}.{}.{}", self.district, self.box_id, self.kind().as_str())
    }

    /// `<box>:<epoch>:<kind>:<first>-<last>`: the same rows sent again carry the same id; the
    /// same ids of a store that replaced a corrupt one do not.
    pub fn message_id(&self) -> Option<String> {
        let (first, last) = self.range()?;
        let epoch = if self.epoch.is_empty() { String::new() } else { format!("{}:", self.epoch) };
        Some(format!("{}:{epoch}{}:{first}-{last}", self.box_id, self.kind().as_str()))
    }
}

/// The KV key of a box's high-water mark for one kind in one store epoch:
/// `<box>.<epoch>.<kind>` (`<box>.<kind>` for a box from before epochs).
pub fn hwm_key(box_id: &str, epoch: &str, kind: Kind) -> String {
    if epoch.is_empty() {
        format!("{box_id}.{}", kind.as_str())
    } else {
        format!("{box_id}.{epoch}.{}", kind.as_str())
    }
}

/// Whether `epoch` can be one in a batch: empty (a box from before epochs) or 1 to 32 lowercase
/// hex digits (it names KV keys).
pub fn is_epoch(epoch: &str) -> bool {
    epoch.len() <= 32 && epoch.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A high-water mark as stored in KV (the decimal id); a missing or unreadable one is 0.
pub fn parse_hwm(value: Option<&[u8]>) -> i64 {
    value.and_then(|v| std::str::from_utf8(v).ok()).and_then(|text| text.trim().parse().ok()).unwrap_or(0)
}

/// What a box writes into its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub district: String,
    /// The box's wall clock when it renewed (a label: the lease's lifetime is the server's).
    pub renewed_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: i64) -> UplinkAlert {
        UplinkAlert { id, at_ms: 1_000 + id, rule: "do-low".into(), sensor: "canal-01".into(), event: "fired".into(), severity: "alarm".into(), value: 3.0 }
    }

    #[test]
    fn a_batch_is_named_by_its_box_kind_and_id_range() {
        let mut batch = Batch {
            box_id: "east-01".into(),
            district: "d1".into(),
            epoch: "5eed".into(),
            rows: Rows::Alert(vec![alert(7), alert(8), alert(12)]),
            places: BTreeMap::new(),
        };
        assert_eq!(batch.message_id().as_deref(), Some("east-01:5eed:alert:7-12"));
        assert_eq!(batch.subject(), "gw.up.d1.east-01.alert");
        assert_eq!(hwm_key("east-01", "5eed", Kind::Transition), "east-01.5eed.transition");
        batch.epoch.clear();
        assert_eq!(batch.message_id().as_deref(), Some("east-01:alert:7-12"), "a box from before epochs");
        assert_eq!(hwm_key("east-01", "", Kind::Transition), "east-01.transition");
    }

    #[test]
    fn an_epoch_is_hex_or_nothing_and_a_batch_without_one_is_from_before_epochs() {
        assert!(is_epoch("0123456789abcdef") && is_epoch(""));
        assert!(!is_epoch("x") && !is_epoch("a.b") && !is_epoch("ABC") && !is_epoch(&"a".repeat(33)));
        let text = r#"{"box_id":"b","district":"d","kind":"alert","rows":[]}"#;
        assert_eq!(serde_json::from_str::<Batch>(text).unwrap().epoch, "");
    }

    #[test]
    fn an_empty_batch_has_no_message_id() {
        let batch = Batch { box_id: "b".into(), district: "d".into(), epoch: "e1".into(), rows: Rows::Transition(Vec::new()), places: BTreeMap::new() };
        assert_eq!(batch.message_id(), None);
    }

    #[test]
    fn a_batch_survives_its_json() {
        let batch = Batch { box_id: "b".into(), district: "d".into(), epoch: "e1".into(), rows: Rows::Alert(vec![alert(1)]), places: BTreeMap::new() };
        let text = serde_json::to_string(&batch).unwrap();
        assert!(text.contains(r#""kind":"alert""#) && !text.contains("places"), "{text}");
        assert_eq!(serde_json::from_str::<Batch>(&text).unwrap(), batch);
    }

    #[test]
    fn a_batch_of_readings_names_its_sensors_places_once() {
        let reading = |id, ts| UplinkReading { id, sensor: "house-07".into(), ts, fields: vec![("x".into(), 0.25)] };
        let place = Place { kind: "tilt".into(), site: "lane-3".into(), building: None, grid: Some("g1".into()) };
        let batch = Batch {
            box_id: "b".into(),
            district: "d".into(),
            epoch: String::new(),
            rows: Rows::Reading(vec![reading(3, 1_000), reading(4, 61_000)]),
            places: BTreeMap::from([("house-07".to_string(), place)]),
        };
        assert_eq!((batch.message_id().as_deref(), batch.subject().as_str()), (Some("b:reading:3-4"), "gw.up.d.b.reading"));
        let text = serde_json::to_string(&batch).unwrap();
        assert_eq!(text.matches("lane-3").count(), 1, "{text}");
        assert_eq!(serde_json::from_str::<Batch>(&text).unwrap(), batch);
    }

    #[test]
    fn a_missing_or_garbled_high_water_mark_is_zero() {
        assert_eq!(parse_hwm(None), 0);
        assert_eq!(parse_hwm(Some(b"x")), 0);
        assert_eq!(parse_hwm(Some(b"42")), 42);
    }
}
