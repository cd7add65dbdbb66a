//! The checked configuration's types: what the daemon reads once [`crate::config::Config::parse`]
//! has checked the file (the raw form is `raw`, the checks are in `check`).

use super::{wording, ClusterConfig, SerialConfig};
use gridwatch_rules::{Diagnostic, SensorKind};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (none for a configuration built in code, as the demo's): a
    /// SIGHUP checks it for changes that only a restart applies.
    pub source: Option<PathBuf>,
    /// Where the embedded local store and other state live.
    pub state_dir: PathBuf,
    /// Disk space kept back in the state directory for alarms when the disk fills (0: none).
    pub state_reserve_bytes: u64,
    /// A directory in memory (tmpfs: it outlives the daemon, not a reboot) where what the card
    /// cannot write waits: readings to judge again after a crash, events sent from memory. None:
    /// `$RUNTIME_DIRECTORY` when systemd sets it (`RuntimeDirectory=`), else nowhere.
    pub runtime_dir: Option<PathBuf>,
    pub mqtt: MqttConfig,
    /// The sensor inventory; a reading from a sensor not listed here is rejected. Shared, not
    /// copied: at 10,000 sensors a copy is megabytes.
    pub sensors: Arc<[SensorConfig]>,
    pub rules: RulesConfig,
    /// How far readings' own times are trusted (`[ingest]`).
    pub ingest: IngestConfig,
    /// Where the system clock's synchronisation is read (`[ingest] clock_synchronized`; else the
    /// `GRIDWATCH_CLOCK_SYNCHRONIZED` environment variable; else the kernel).
    pub clock_synchronized: crate::clock::SyncSource,
    pub alerts: AlertsConfig,
    pub influxdb: Option<InfluxConfig>,
    /// Address of the `/metrics` endpoint; none when the `[http]` table is absent.
    pub http_listen: Option<SocketAddr>,
    /// Signed incident links for workers; when `[http] public_url` is set.
    pub worker_links: Option<crate::links::WorkerLinks>,
    /// The largest photo a worker's page takes (`[http] photo_max_bytes`, 2 MB by default).
    pub photo_max_bytes: usize,
    /// Serial ports and the devices on them.
    pub serial: Vec<SerialConfig>,
    /// The roster and escalation policies (defaults without `[dispatch] roster`).
    pub dispatch: crate::dispatch::Dispatch,
    /// The roster file they were read from (`[dispatch] roster`): reloaded when it changes.
    pub roster_file: Option<PathBuf>,
    /// The MQTT topic and key of workers' actions relayed by a hub (`[dispatch] ack_topic`).
    pub incident_acks: Option<crate::sources::mqtt::incident_acks::AckConfig>,
    /// Raspberry Pi pins: siren, status LED, digital inputs.
    pub gpio: Option<GpioConfig>,
    /// Where the times people read are shown (`time_zone`, default Asia/Shanghai): messages,
    /// the incident page, the CLI.
    pub time_zone: chrono_tz::Tz,
    /// Display names of sites and buildings (`[names]`).
    pub places: wording::Places,
    /// `[board] token`: the office's screen needs `?token=` with it (none: open to whoever
    /// reaches `[http] listen`).
    pub board_token: Option<String>,
    /// `[report]`: the daily supervision digest (none: not sent).
    pub report_digest: Option<DigestConfig>,
    /// This box's uplink to its district (`[cluster]`; needs a build with `--features cluster`).
    pub cluster: Option<ClusterConfig>,
}

/// `[gpio]`, checked.
#[derive(Debug, Clone)]
pub struct GpioConfig {
    pub siren_pin: Option<u8>,
    pub siren_max_on: Duration,
    pub led_pin: Option<u8>,
    pub inputs: Vec<GpioInput>,
}

/// A digital input read as one field of a sensor.
#[derive(Debug, Clone)]
pub struct GpioInput {
    pub pin: u8,
    /// Position in the inventory.
    pub sensor: usize,
    pub field: String,
    pub debounce: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerConfig {
    /// Run an MQTT broker inside the daemon (rumqttd) listening here.
    Embedded { listen: SocketAddr },
    /// Connect to an existing broker such as mosquitto.
    External { host: String, port: u16 },
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub broker: BrokerConfig,
    /// Fixed, so the broker can keep the daemon's session across reconnects.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Larger payloads are rejected and counted, never parsed.
    pub max_payload_bytes: usize,
    /// Larger packets are never read whole: the ingest connection drops them from its session
    /// and counts them (`crate::sources::mqtt::drain`). At least `max_payload_bytes` plus
    /// [`PACKET_OVERHEAD_BYTES`], so every payload under the limit arrives.
    pub max_packet_bytes: usize,
    pub keep_alive: Duration,
    /// Extra topics mapped onto sensors, tried before the default convention.
    pub topic_maps: Vec<TopicMapConfig>,
    /// TLS to the broker (an mqtts:// URL): never falls back to plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Where a tilt box at yellow or above is asked to report faster, with `{site}` and
    /// `{sensor}` to fill in ([`crate::report_rate`]); none: MQTT boxes are not asked.
    pub report_rate_topic: Option<String>,
}

/// Maps a topic filter onto a sensor: `sensor` is an id or `{n}`, the n-th `+` level.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMapConfig {
    pub filter: String,
    pub sensor: String,
    pub payload: PayloadMap,
}

/// How a payload becomes a reading. Flat payloads (the default convention) carry numbers (or
/// numeric strings) under their field names, `ts` and `seq`; `renames` gives a vendor's names
/// the rules' names. A vendor's nested JSON is read through `values` instead: each rule field
/// from a JSON pointer (RFC 6901), scaled and offset, and `ts` / `seq` from their pointers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PayloadMap {
    /// Payload key -> field name used by the rules (`AngleX = "x"`); matched exactly, else
    /// ignoring case.
    pub renames: BTreeMap<String, String>,
    /// When not empty, the only values read.
    pub values: Vec<ValueSource>,
    /// JSON pointer to the device time (default `/ts`).
    pub ts: Option<String>,
    /// JSON pointer to the sequence number (default `/seq`).
    pub seq: Option<String>,
}

/// One rule field read from a nested payload: `raw × scale + offset` of the number (or numeric
/// string) at `pointer`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueSource {
    pub field: String,
    pub pointer: String,
    pub scale: f64,
    pub offset: f64,
}

/// Where a sensor is installed: its site, and the building, grid, structure and storeys the
/// installer gave. The loader hands every sensor at the same place one shared `Place` (a
/// building's boxes, a site's probes), whose texts are shared too
/// ([`gridwatch_rules::TextPool`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Place {
    pub site: Arc<str>,
    pub building: Option<Arc<str>>,
    pub grid: Option<Arc<str>>,
    pub structure: Option<Arc<str>>,
    pub storeys: Option<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SensorConfig {
    pub id: Arc<str>,
    pub kind: SensorKind,
    /// Where it is installed; shared by every sensor at the same place.
    pub place: Arc<Place>,
    /// Free-form facts rules can be scoped by. Water sensors get `use = "surface"` and, for
    /// surface water, `water_class = "III"` unless they say otherwise (see [`Self::rule_tags`];
    /// the loader stores them here already).
    pub tags: gridwatch_rules::Tags,
    /// How often the sensor is expected to report; no-data rules count in these.
    pub interval: Duration,
    /// Installation baseline per field, set by the installer (or `gridwatch calibrate`).
    pub baseline: BTreeMap<String, f64>,
    /// `[latitude, longitude]` in degrees, as the installer wrote them (for map links).
    pub location: Option<[f64; 2]>,
}

impl SensorConfig {
    /// A plain tilt box at `site` reporting every minute, for tests.
    #[cfg(test)]
    pub fn test_tilt(id: &str, site: &str) -> SensorConfig {
        SensorConfig {
            id: id.into(),
            kind: SensorKind::Tilt,
            place: Arc::new(Place { site: site.into(), building: None, grid: None, structure: None, storeys: None }),
            tags: Default::default(),
            interval: Duration::from_secs(60),
            baseline: BTreeMap::new(),
            location: None,
        }
    }

    /// The tags rules see: the configured ones plus `storeys`, `structure` and the water
    /// defaults (a tag set explicitly wins). The loader has added them already, so for a loaded
    /// sensor this is a copy of shared texts.
    pub fn rule_tags(&self) -> gridwatch_rules::Tags {
        let mut tags = self.tags.clone();
        if let Some(storeys) = self.place.storeys {
            tags.or_insert_with("storeys", || storeys.to_string().into());
        }
        if let Some(structure) = &self.place.structure {
            tags.or_insert_with("structure", || structure.clone());
        }
        if self.kind == SensorKind::Water && tags.or_insert_with("use", || "surface".into()) == "surface" {
            tags.or_insert_with("water_class", || "III".into());
        }
        tags
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesConfig {
    /// Load the packs shipped in the binary.
    pub builtin_packs: bool,
    /// Rule files, or directories whose `*.toml` files are rule files.
    pub paths: Vec<PathBuf>,
    /// How often the engine's state is saved (when it changed).
    pub state_save: Duration,
}

/// `[ingest]`, checked: when a device's clock is off (see `sensor_clocks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestConfig {
    /// A reading stamped further ahead of this box's clock is refused (`ahead_of_clock`).
    pub max_future_skew: Duration,
    /// A sensor whose readings are older than its last judged one this many times in a row…
    pub reanchor_after_readings: u32,
    /// …and for this long is re-anchored: its clock went back.
    pub reanchor_after: Duration,
    /// A sensor whose judged readings keep coming stamped further behind this box's
    /// (synchronised) clock…
    pub clock_behind: Duration,
    /// …for this long without catching up as a backlog does is named in `/healthz`.
    pub clock_behind_for: Duration,
    /// A reading with more fields is refused (`too_many_fields`).
    pub max_fields_per_reading: usize,
    /// A sensor's reading that brings a field name past this many distinct ones is refused
    /// (`too_many_field_names`): payloads choose their names, memory must not follow them.
    pub max_field_names_per_sensor: usize,
    /// Longer field names are refused (`bad_field_name`), like empty ones and control characters.
    pub max_field_name_bytes: usize,
}

/// Room in an MQTT packet besides the payload: fixed header, topic (as long as topics of the
/// default convention get, with margin) and packet id.
pub const PACKET_OVERHEAD_BYTES: usize = 1024;
/// The largest packet MQTT can frame (a remaining length of four bytes).
pub const MQTT_MAX_PACKET_BYTES: usize = 268_435_455;

/// `[ingest]` keys: default and bounds.
pub const MAX_FUTURE_SKEW_SECS: (u64, std::ops::RangeInclusive<u64>) = (300, 1..=86_400);
pub const REANCHOR_AFTER_READINGS: (u64, std::ops::RangeInclusive<u64>) = (3, 1..=1000);
pub const REANCHOR_AFTER_SECS: (u64, std::ops::RangeInclusive<u64>) = (120, 0..=86_400);
/// As the shipped `tilt-clock-behind` rule (`clock_behind = "1h"`, `for = "30m"`).
pub const CLOCK_BEHIND_SECS: (u64, std::ops::RangeInclusive<u64>) = (3_600, 60..=604_800);
pub const CLOCK_BEHIND_FOR_SECS: (u64, std::ops::RangeInclusive<u64>) = (1_800, 0..=86_400);
pub const MAX_FIELDS_PER_READING: (u64, std::ops::RangeInclusive<u64>) = (32, 1..=1000);
pub const MAX_FIELD_NAMES_PER_SENSOR: (u64, std::ops::RangeInclusive<u64>) = (64, 1..=1000);
pub const MAX_FIELD_NAME_BYTES: (u64, std::ops::RangeInclusive<u64>) = (64, 1..=256);

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_future_skew: Duration::from_secs(MAX_FUTURE_SKEW_SECS.0),
            reanchor_after_readings: REANCHOR_AFTER_READINGS.0 as u32,
            reanchor_after: Duration::from_secs(REANCHOR_AFTER_SECS.0),
            clock_behind: Duration::from_secs(CLOCK_BEHIND_SECS.0),
            clock_behind_for: Duration::from_secs(CLOCK_BEHIND_FOR_SECS.0),
            max_fields_per_reading: MAX_FIELDS_PER_READING.0 as usize,
            max_field_names_per_sensor: MAX_FIELD_NAMES_PER_SENSOR.0 as usize,
            max_field_name_bytes: MAX_FIELD_NAME_BYTES.0 as usize,
        }
    }
}

/// `[[alerts.sms]] per_phone_per_hour`: default and bounds.
pub const SMS_PER_PHONE_PER_HOUR: (u64, std::ops::RangeInclusive<u64>) = (6, 1..=100);
/// How long an SMS gateway may take to answer (`timeout_secs`): past it the SMS is tried again,
/// and a gateway that was only slow sends it twice.
pub const SMS_TIMEOUT_SECS: (u64, std::ops::RangeInclusive<u64>) = (10, 1..=120);

/// `[rules] state_save_secs`: default and bounds.
pub const STATE_SAVE_SECS: (u64, std::ops::RangeInclusive<u64>) = (60, 10..=3600);

#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub console: bool,
    /// A rule firing again this soon after its incident closed re-opens that incident.
    pub flap_window: Duration,
    /// Alerts are published under `<prefix>/<site>/<sensor>/<rule>` when set.
    pub mqtt_topic_prefix: Option<String>,
    pub webhooks: Vec<WebhookConfig>,
    pub wecom: Vec<RobotConfig>,
    pub dingtalk: Vec<RobotConfig>,
    pub sms: Vec<SmsConfig>,
    /// Maintenance windows written in the configuration (the CLI adds others to the store).
    pub silences: Vec<crate::dispatch::silence::Silence>,
    /// Channel -> the channel that takes its alerts when it fails or is throttled longer than
    /// `failover_after`. Checked: both exist, no chain comes back on itself.
    pub failover: BTreeMap<String, String>,
    pub failover_after: Duration,
    /// A sensor bus (serial port, MQTT connection) down this long raises one "bus down" alarm.
    pub bus_down_after: Duration,
    /// After a building's first alarm goes out, the alarms of its other sensors in this window
    /// wait for its end and go out together as one message about the house (0: no grouping).
    pub group_window: Duration,
    /// While a house has an orange or red alarm open, its further alarms at or below that
    /// severity are folded into it, not sent (`crate::store::folding`).
    pub fold_into_open_alarm: bool,
}

/// An SMS HTTP gateway (`[[alerts.sms]]`).
#[derive(Clone)]
pub struct SmsConfig {
    pub name: String,
    pub url: reqwest::Url,
    /// JSON body template with `{phone}` and `{message}`.
    pub body: String,
    pub token: Option<String>,
    pub severities: Vec<String>,
    /// At most this many SMS per phone per hour; past it, alarms wait and go out together in the
    /// next SMS the phone may get (`per_phone_per_hour`).
    pub per_phone_per_hour: u32,
    /// The messages' language and time zone.
    pub wording: wording::Wording,
    /// How the gateway's answer says it took the SMS, beyond HTTP 2xx.
    pub success: Option<SmsSuccess>,
    /// How long the gateway may take to answer before the SMS is tried again.
    pub timeout: std::time::Duration,
}

/// `success_field` and `success_value`: the field of the gateway's JSON answer (a JSON pointer)
/// and, as text, what it holds when the gateway took the SMS (`"OK"`; `0` and `"0"` alike).
#[derive(Debug, Clone, PartialEq)]
pub struct SmsSuccess {
    pub field: String,
    pub value: String,
}

impl std::fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsConfig").field("name", &self.name).field("url", &crate::redact::redacted(&self.url)).finish_non_exhaustive()
    }
}

/// A WeCom or DingTalk group robot.
#[derive(Clone)]
pub struct RobotConfig {
    pub name: String,
    /// Carries the key or access token: a secret.
    pub url: reqwest::Url,
    /// DingTalk signing secret.
    pub secret: Option<String>,
    pub mention_mobiles: Vec<String>,
    /// The messages' language and time zone.
    pub wording: wording::Wording,
    /// With a failover channel: the longest throttle this robot waits out before giving the
    /// message up to it (none: waits out the robot's throttle).
    pub throttle_patience: Option<Duration>,
}

impl std::fmt::Debug for RobotConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key, token or secret.
        f.debug_struct("RobotConfig").field("name", &self.name).field("url", &crate::redact::redacted(&self.url)).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub name: String,
    pub url: reqwest::Url,
    /// Key of the HMAC-SHA256 signature header; none: unsigned.
    pub secret: Option<String>,
    pub timeout: Duration,
    pub max_attempts: u32,
}

#[derive(Debug, Clone)]
pub struct InfluxConfig {
    pub url: reqwest::Url,
    pub org: String,
    pub bucket: String,
    pub token: String,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Most readings the spool holds while InfluxDB is unreachable; past this the oldest are
    /// dropped and counted.
    pub spool_max_points: u64,
    /// Most points per second written while catching up on a backlog.
    pub drain_points_per_sec: u32,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

/// `[report]`: the daily digest to the grid leaders' group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestConfig {
    /// Local time it goes out, with the previous day's report.
    pub at: chrono::NaiveTime,
    /// The channels (sink names) of the grid leaders' group.
    pub channels: Vec<String>,
}
