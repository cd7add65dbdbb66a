//! What travels from a box to the hub: one JSON batch of rows of one kind per message, on the
//! subject `gw.up.<district>.<box>.<kind>`, with `Nats-Msg-Id` =
//! `<box>:<epoch>:<kind>:<first>-<last>` so JetStream drops a batch sent twice within its
//! duplicate window, and the hub drops any row sent twice after it (primary keys in PostgreSQL;
//! rows at or below its high-water mark for readings). Row ids count within the box's store
//! epoch (a fresh store replacing a corrupt one starts at 1 again under a new epoch), so the
//! epoch is part of every key: message ids, high-water marks, the hub's rows. A batch of
//! readings or of hourly trend rows names each of its sensors' place once (`places`), which the
//! hub tags the district's InfluxDB points with. A batch of more than a few hundred bytes goes
//! deflated (header `Content-Encoding: deflate`): 4G is paid by the byte, and JSON rows of
//! readings shrink several-fold. Pure: no IO.
//!
//! Invariant: a batch's rows are of its kind, in id order, `first`..=`last` their id range.

use crate::store::{UplinkAlert, UplinkReading, UplinkTransition, UplinkTrend};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// The NATS header that names how a batch's payload is encoded; none: plain JSON (a box from
/// before compression).
pub const ENCODING_HEADER: &str = "Content-Encoding";
/// zlib-wrapped deflate, as HTTP's `deflate`.
pub const DEFLATE: &str = "deflate";
/// Smaller batches go as plain JSON: deflate's framing and the header would cost about what
/// they save.
const DEFLATE_FROM_BYTES: usize = 384;
/// The most a deflated batch may inflate to (a batch of the largest `batch_rows` is a few
/// megabytes): more is refused as undecodable rather than filling the hub's memory.
const MAX_INFLATED_BYTES: u64 = 64 << 20;

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
    /// `uplink_trend`: every closed hour's minimum, maximum, sum and count per sensor and field.
    Trend,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Alert, Kind::Transition, Kind::Reading, Kind::Trend];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Alert => "alert",
            Kind::Transition => "transition",
            Kind::Reading => "reading",
            Kind::Trend => "trend",
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
    Trend(Vec<UplinkTrend>),
}

impl Rows {
    /// The first and last row id; none for no rows.
    pub fn range(&self) -> Option<(i64, i64)> {
        let ids: Vec<i64> = match self {
            Rows::Alert(rows) => rows.iter().map(|r| r.id).collect(),
            Rows::Transition(rows) => rows.iter().map(|r| r.id).collect(),
            Rows::Reading(rows) => rows.iter().map(|r| r.id).collect(),
            Rows::Trend(rows) => rows.iter().map(|r| r.id).collect(),
        };
        Some((*ids.first()?, *ids.last()?))
    }

    /// A digest of what makes the last row the row it is, 16 hex digits; none for no rows. Only
    /// what never changes once written goes in: not an alert's or a transition's time (re-stamped
    /// once a clock that was not set is), nor an incident's state. A store restored from an older
    /// copy gives its ids to other rows, whose digests differ (a reading's time, an alert's value,
    /// a transition's incident and note).
    pub fn last_digest(&self) -> Option<String> {
        let identity = match self {
            Rows::Alert(rows) => rows.last().map(|r| format!("alert\n{}\n{}\n{}\n{}\n{}", r.id, r.rule, r.sensor, r.event, r.value.to_bits())),
            Rows::Transition(rows) => {
                rows.last().map(|r| format!("transition\n{}\n{}\n{}\n{}\n{}", r.id, r.incident_id, r.actor, r.action, r.note.as_deref().unwrap_or("")))
            }
            Rows::Reading(rows) => rows.last().map(|r| format!("reading\n{}\n{}\n{}", r.id, r.sensor, r.ts)),
            Rows::Trend(rows) => rows.last().map(|r| format!("trend\n{}\n{}\n{}\n{}\n{}", r.id, r.sensor, r.field, r.hour, r.count)),
        }?;
        Some(crate::signing::hex(&Sha256::digest(identity.as_bytes())[..8]))
    }
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
    /// For readings and trend rows: the place of each sensor in the batch (by id); a sensor no longer in the
    /// box's inventory is missing here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub places: BTreeMap<String, Place>,
    /// [`Rows::last_digest`] of the batch's rows: the hub keeps it with the mark the batch
    /// moves, so that a box can tell whether the row it holds under the mark's id is the one
    /// the hub committed (absent from boxes before it was sent: the mark is kept without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_digest: Option<String>,
}

impl Batch {
    pub fn kind(&self) -> Kind {
        match self.rows {
            Rows::Alert(_) => Kind::Alert,
            Rows::Transition(_) => Kind::Transition,
            Rows::Reading(_) => Kind::Reading,
            Rows::Trend(_) => Kind::Trend,
        }
    }

    /// The first and last row id; none for an empty batch (never sent).
    pub fn range(&self) -> Option<(i64, i64)> {
        self.rows.range()
    }

    pub fn len(&self) -> usize {
        match &self.rows {
            Rows::Alert(rows) => rows.len(),
            Rows::Transition(rows) => rows.len(),
            Rows::Reading(rows) => rows.len(),
            Rows::Trend(rows) => rows.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn subject(&self) -> String {
        format!("gw.up.{}.{}.{}", self.district, self.box_id, self.kind().as_str())
    }

    /// The payload to publish, and the encoding to name in [`ENCODING_HEADER`] (none: plain
    /// JSON). The same batch always encodes alike, so a batch sent again is the same message.
    pub fn encode(&self) -> std::io::Result<(Vec<u8>, Option<&'static str>)> {
        let json = serde_json::to_vec(self)?;
        if json.len() < DEFLATE_FROM_BYTES {
            return Ok((json, None));
        }
        Ok((deflate(&json)?, Some(DEFLATE)))
    }

    /// A batch from a payload published with `encoding` (the [`ENCODING_HEADER`] value, if
    /// any); an unknown encoding, a payload that does not inflate or inflates past
    /// `MAX_INFLATED_BYTES`, or JSON that is not a batch is an error that says which.
    pub fn decode(payload: &[u8], encoding: Option<&str>) -> Result<Batch, String> {
        match encoding {
            None | Some("") => serde_json::from_slice(payload).map_err(|error| error.to_string()),
            Some(DEFLATE) => serde_json::from_slice(&inflate(payload).map_err(|error| format!("deflated batch {error}"))?).map_err(|error| error.to_string()),
            Some(other) => Err(format!("unknown batch encoding `{other}`")),
        }
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

/// A high-water mark as stored in KV: the last committed id, and the digest of that row
/// ([`Rows::last_digest`]) when the box sent one: `<id>` or `<id> <digest>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mark {
    pub id: i64,
    pub digest: Option<String>,
}

impl Mark {
    /// A missing or unreadable mark is 0 without a digest.
    pub fn parse(value: Option<&[u8]>) -> Mark {
        let text = value.and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("");
        let mut words = text.split_whitespace();
        match words.next().and_then(|id| id.parse().ok()) {
            Some(id) => Mark { id, digest: words.next().map(str::to_string) },
            None => Mark::default(),
        }
    }

    pub fn encode(&self) -> String {
        match &self.digest {
            Some(digest) => format!("{} {digest}", self.id),
            None => self.id.to_string(),
        }
    }
}

/// The id of a high-water mark as stored in KV ([`Mark::parse`]).
pub fn parse_hwm(value: Option<&[u8]>) -> i64 {
    Mark::parse(value).id
}

/// What a box writes into its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub district: String,
    /// The box's wall clock when it renewed (a label: the lease's lifetime is the server's).
    pub renewed_ms: i64,
    /// The process renewing it (its pid and start time): two boxes configured with one
    /// `box_id` take turns on the key, and the hub tells them apart by this ([`crate::cluster::hub`]).
    /// Empty from a box of an older build.
    #[serde(default)]
    pub instance: String,
    /// The renewing machine's host name, for the installers looking for the two boxes.
    #[serde(default)]
    pub host: String,
}

/// `bytes` deflated (zlib), as batches and the standby's copies travel.
pub fn deflate(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::with_capacity(bytes.len() / 4), flate2::Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// What [`deflate`] made, or why not (it does not inflate, or inflates past
/// `MAX_INFLATED_BYTES`: a bomb never fills the memory).
pub fn inflate(payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    flate2::read::ZlibDecoder::new(payload).take(MAX_INFLATED_BYTES + 1).read_to_end(&mut bytes).map_err(|error| format!("does not inflate: {error}"))?;
    if bytes.len() as u64 > MAX_INFLATED_BYTES {
        return Err(format!("inflates past {MAX_INFLATED_BYTES} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of box `b`, district `d`, epoch `e1` holding alert 1.
    fn one_alert() -> Batch {
        Batch { box_id: "b".into(), district: "d".into(), epoch: "e1".into(), rows: Rows::Alert(vec![alert(1)]), places: BTreeMap::new(), last_digest: None }
    }

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
            last_digest: None,
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
    fn a_large_batch_goes_deflated_a_small_one_plain_and_both_come_back_whole() {
        let small = one_alert();
        let (payload, encoding) = small.encode().unwrap();
        assert_eq!(encoding, None);
        assert_eq!(Batch::decode(&payload, encoding).unwrap(), small);

        let large = Batch { rows: Rows::Alert((1..=100).map(alert).collect()), ..small };
        let (payload, encoding) = large.encode().unwrap();
        assert_eq!(encoding, Some(DEFLATE));
        let plain = serde_json::to_vec(&large).unwrap();
        assert!(payload.len() * 5 < plain.len(), "{} bytes deflated of {}", payload.len(), plain.len());
        assert_eq!(Batch::decode(&payload, encoding).unwrap(), large);
        assert_eq!(large.encode().unwrap().0, payload, "a batch sent again is the same message");
        // A box from before compression sends plain JSON without the header.
        assert_eq!(Batch::decode(&plain, None).unwrap(), large);
    }

    #[test]
    fn a_payload_that_is_not_what_its_header_says_is_refused_with_the_reason() {
        assert!(Batch::decode(b"{\"box_id\":", Some(DEFLATE)).unwrap_err().contains("does not inflate"));
        assert!(Batch::decode(b"{}", Some("br")).unwrap_err().contains("unknown batch encoding `br`"));
        // A deflate bomb: 80 MiB of zeros in a few kilobytes.
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..80 {
            encoder.write_all(&[0u8; 1 << 20]).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(Batch::decode(&bomb, Some(DEFLATE)).unwrap_err().contains("inflates past"));
    }

    #[test]
    fn an_empty_batch_has_no_message_id() {
        let batch = Batch {
            box_id: "b".into(),
            district: "d".into(),
            epoch: "e1".into(),
            rows: Rows::Transition(Vec::new()),
            places: BTreeMap::new(),
            last_digest: None,
        };
        assert_eq!(batch.message_id(), None);
    }

    #[test]
    fn a_batch_survives_its_json() {
        let batch = one_alert();
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
            last_digest: None,
        };
        assert_eq!((batch.message_id().as_deref(), batch.subject().as_str()), (Some("b:reading:3-4"), "gw.up.d.b.reading"));
        let text = serde_json::to_string(&batch).unwrap();
        assert_eq!(text.matches("lane-3").count(), 1, "{text}");
        assert_eq!(serde_json::from_str::<Batch>(&text).unwrap(), batch);
    }

    #[test]
    fn a_batch_of_trend_rows_is_its_own_kind_and_survives_its_encoding() {
        let hour = |id, hour| UplinkTrend { id, sensor: "house-07".into(), field: "level".into(), hour, min: 1.0, max: 3.5, sum: 9.0, count: 4 };
        let place = Place { kind: "water".into(), site: "lane-3".into(), building: None, grid: None };
        let batch = Batch {
            box_id: "b".into(),
            district: "d".into(),
            epoch: "e1".into(),
            rows: Rows::Trend((1..=40).map(|id| hour(id, 490_000 + id)).collect()),
            places: BTreeMap::from([("house-07".to_string(), place)]),
            last_digest: None,
        };
        assert_eq!(batch.kind(), Kind::Trend);
        assert_eq!((batch.message_id().as_deref(), batch.subject().as_str()), (Some("b:e1:trend:1-40"), "gw.up.d.b.trend"));
        assert_eq!(hwm_key("b", "e1", Kind::Trend), "b.e1.trend");
        let (payload, encoding) = batch.encode().unwrap();
        assert_eq!(encoding, Some(DEFLATE));
        assert_eq!(Batch::decode(&payload, encoding).unwrap(), batch);
        let text = serde_json::to_string(&batch).unwrap();
        assert!(text.contains(r#""kind":"trend""#), "{text}");
        // A row that is not one (a count below zero) is refused with the reason, not a panic.
        let bad = text.replacen(r#""count":4"#, r#""count":-4"#, 1);
        assert!(Batch::decode(bad.as_bytes(), None).unwrap_err().contains("invalid value"));
    }

    #[test]
    fn a_missing_or_garbled_high_water_mark_is_zero() {
        assert_eq!(parse_hwm(None), 0);
        assert_eq!(parse_hwm(Some(b"x")), 0);
        assert_eq!(parse_hwm(Some(b"42")), 42);
        assert_eq!(parse_hwm(Some(b"42 0123456789abcdef")), 42);
        assert_eq!(Mark::parse(Some(b"x 0123456789abcdef")), Mark::default());
    }

    #[test]
    fn a_mark_keeps_its_rows_digest_and_one_from_an_older_hub_has_none() {
        let mark = Mark { id: 7, digest: Some("0123456789abcdef".into()) };
        assert_eq!(mark.encode(), "7 0123456789abcdef");
        assert_eq!(Mark::parse(Some(mark.encode().as_bytes())), mark);
        assert_eq!(Mark::parse(Some(b"7")), Mark { id: 7, digest: None });
        assert_eq!(Mark { id: 7, digest: None }.encode(), "7");
    }

    #[test]
    fn a_rows_digest_tells_another_row_under_its_id_and_not_a_restamped_time() {
        let digest = |row: UplinkAlert| Rows::Alert(vec![alert(1), row]).last_digest().unwrap();
        let original = digest(alert(2));
        assert_eq!(original.len(), 16);
        // The time of a row stamped while the clock was not set is re-stamped later: the same row.
        assert_eq!(digest(UplinkAlert { at_ms: 99, ..alert(2) }), original);
        // Another event under the same id (a store restored from an older copy): another digest.
        assert_ne!(digest(UplinkAlert { value: 3.5, ..alert(2) }), original);
        assert_ne!(digest(UplinkAlert { event: "cleared".into(), ..alert(2) }), original);
        assert_eq!(Rows::Alert(Vec::new()).last_digest(), None);
        let reading = |ts| Rows::Reading(vec![UplinkReading { id: 5, sensor: "s".into(), ts, fields: vec![("do".into(), 7.0)] }]);
        assert_ne!(reading(1).last_digest(), reading(2).last_digest());
    }
}
