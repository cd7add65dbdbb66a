//! The daemon's configuration: loaded from TOML in two phases — [`raw`] mirrors the file, then
//! [`Config::parse`] checks it into typed values. Every problem is reported with the file, line,
//! column and key (all semantic problems at once; a TOML syntax or type error stops at the
//! first). Relative paths are resolved against the config file's directory.
//!
//! The annotated example is `gridwatch.example.toml` at the top of the repository; the reference
//! is docs/configuration.md.

mod cluster;
mod inventory;
mod raw;
pub use raw::DEFAULT_PHOTO_MAX_BYTES;
mod sensor_index;
mod serial;
pub mod wording;

pub use cluster::ClusterConfig;
pub use raw::SerialProtocol;
pub use sensor_index::SensorIndex;
pub use serial::{SerialConfig, SerialDevice};

use gridwatch_rules::diagnostic::line_column;
use gridwatch_rules::TextPool;
use gridwatch_rules::{Diagnostic, SensorKind};
use raw::RawConfig;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

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
pub const REANCHOR_AFTER_SECS: (u64, std::ops::RangeInclusive<u64>) = (600, 0..=86_400);
pub const MAX_FIELDS_PER_READING: (u64, std::ops::RangeInclusive<u64>) = (32, 1..=1000);
pub const MAX_FIELD_NAMES_PER_SENSOR: (u64, std::ops::RangeInclusive<u64>) = (64, 1..=1000);
pub const MAX_FIELD_NAME_BYTES: (u64, std::ops::RangeInclusive<u64>) = (64, 1..=256);

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_future_skew: Duration::from_secs(MAX_FUTURE_SKEW_SECS.0),
            reanchor_after_readings: REANCHOR_AFTER_READINGS.0 as u32,
            reanchor_after: Duration::from_secs(REANCHOR_AFTER_SECS.0),
            max_fields_per_reading: MAX_FIELDS_PER_READING.0 as usize,
            max_field_names_per_sensor: MAX_FIELD_NAMES_PER_SENSOR.0 as usize,
            max_field_name_bytes: MAX_FIELD_NAME_BYTES.0 as usize,
        }
    }
}

/// `[[alerts.sms]] per_phone_per_hour`: default and bounds.
pub const SMS_PER_PHONE_PER_HOUR: (u64, std::ops::RangeInclusive<u64>) = (6, 1..=100);

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

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Config::parse(&path.display().to_string(), &text, base)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Checks configuration text; `name` labels diagnostics, `base` resolves relative paths.
    pub fn parse(name: &str, text: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut check = Checker { name, text, diagnostics: Vec::new(), failover_spans: Vec::new() };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(err) => {
                check.error(err.span().unwrap_or(0..0), None, err.message().trim_end().to_string());
                return Err(ConfigError::Invalid(check.diagnostics));
            }
        };
        let config = check.config(raw, base);
        if check.diagnostics.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(check.diagnostics))
        }
    }

    /// Position of a sensor in the inventory, by id.
    pub fn sensor_index(&self, id: &str) -> Option<usize> {
        self.sensors.iter().position(|s| &*s.id == id)
    }
}

/// What the loader shares between sensors: texts and tag sets, and places.
#[derive(Default)]
struct SharedParts {
    texts: TextPool,
    places: HashSet<Arc<Place>>,
}

impl SharedParts {
    fn place(&mut self, place: Place) -> Arc<Place> {
        if let Some(shared) = self.places.get(&place) {
            return shared.clone();
        }
        let shared = Arc::new(place);
        self.places.insert(shared.clone());
        shared
    }
}

/// Collects diagnostics while turning the raw file into a [`Config`].
struct Checker<'a> {
    name: &'a str,
    text: &'a str,
    diagnostics: Vec<Diagnostic>,
    /// `[alerts.failover]` entries and where they are written, checked once the channels are known.
    failover_spans: Vec<(String, Range<usize>)>,
}

impl Checker<'_> {
    fn error(&mut self, span: Range<usize>, key: Option<&str>, message: String) {
        let (line, column) = line_column(self.text, span.start);
        self.diagnostics.push(Diagnostic { file: self.name.to_string(), line, column, key: key.map(str::to_string), message });
    }

    fn state_save(&mut self, secs: Option<Spanned<u64>>) -> Duration {
        let (default, bounds) = STATE_SAVE_SECS;
        let Some(secs) = secs else { return Duration::from_secs(default) };
        if !bounds.contains(secs.get_ref()) {
            self.error(secs.span(), Some("rules.state_save_secs"), format!("must be {} to {} seconds", bounds.start(), bounds.end()));
            return Duration::from_secs(default);
        }
        Duration::from_secs(*secs.get_ref())
    }

    /// A whole number of `key` within `bounds`, or the default (with an error when out of
    /// bounds).
    fn bounded(&mut self, value: Option<Spanned<u64>>, key: &str, (default, bounds): (u64, std::ops::RangeInclusive<u64>)) -> u64 {
        let Some(value) = value else { return default };
        if !bounds.contains(value.get_ref()) {
            self.error(value.span(), Some(key), format!("must be {} to {}", bounds.start(), bounds.end()));
            return default;
        }
        value.into_inner()
    }

    fn clock_synchronized(&mut self, raw: Option<Spanned<String>>) -> crate::clock::SyncSource {
        let Some(raw) = raw else {
            return std::env::var("GRIDWATCH_CLOCK_SYNCHRONIZED").ok().and_then(|text| text.parse().ok()).unwrap_or_default();
        };
        raw.get_ref().parse().unwrap_or_else(|message| {
            self.error(raw.span(), Some("ingest.clock_synchronized"), message);
            crate::clock::SyncSource::default()
        })
    }

    fn ingest(&mut self, raw: raw::RawIngest) -> IngestConfig {
        IngestConfig {
            max_future_skew: Duration::from_secs(self.bounded(raw.max_future_skew_secs, "ingest.max_future_skew_secs", MAX_FUTURE_SKEW_SECS)),
            reanchor_after_readings: self.bounded(raw.reanchor_after_readings, "ingest.reanchor_after_readings", REANCHOR_AFTER_READINGS) as u32,
            reanchor_after: Duration::from_secs(self.bounded(raw.reanchor_after_secs, "ingest.reanchor_after_secs", REANCHOR_AFTER_SECS)),
            max_fields_per_reading: self.bounded(raw.max_fields_per_reading, "ingest.max_fields_per_reading", MAX_FIELDS_PER_READING) as usize,
            max_field_names_per_sensor: self.bounded(raw.max_field_names_per_sensor, "ingest.max_field_names_per_sensor", MAX_FIELD_NAMES_PER_SENSOR) as usize,
            max_field_name_bytes: self.bounded(raw.max_field_name_bytes, "ingest.max_field_name_bytes", MAX_FIELD_NAME_BYTES) as usize,
        }
    }

    fn config(&mut self, mut raw: RawConfig, base: &Path) -> Config {
        let state_dir = base.join(raw.state_dir.get_ref());
        let state_reserve_bytes = raw.state_reserve_kib.saturating_mul(1024);
        let mut shared = SharedParts::default();
        let mut sensors = self.sensors(raw.sensors, &mut shared);
        if let Some(inventory) = raw.inventory.and_then(|file| self.existing_path(base, file, "inventory")) {
            self.add_inventory(&inventory, &mut sensors, &mut shared);
        }
        let mqtt = self.mqtt(raw.mqtt, &sensors, base);
        let state_save = self.state_save(raw.rules.state_save_secs);
        let rules = RulesConfig {
            builtin_packs: raw.rules.builtin_packs,
            paths: raw.rules.paths.into_iter().filter_map(|p| self.existing_path(base, p, "rules.paths")).collect(),
            state_save,
        };
        let clock_synchronized = self.clock_synchronized(raw.ingest.clock_synchronized.take());
        let ingest = self.ingest(raw.ingest);
        let wording = self.wording(raw.language.as_ref(), raw.time_zone.as_ref());
        let alerts = self.alerts(raw.alerts, base, wording);
        let influxdb = raw.influxdb.and_then(|raw| self.influx(raw, base));
        let photo_max_bytes = raw.http.as_ref().map_or(raw::DEFAULT_PHOTO_MAX_BYTES, |http| http.photo_max_bytes);
        let (http_listen, worker_links) = match raw.http {
            Some(http) => (self.socket_addr(&http.listen, "http.listen"), self.worker_links(&http, base)),
            None => (None, None),
        };
        let serial = raw.serial.into_iter().filter_map(|port| self.serial(port, &sensors, base)).collect();
        let incident_acks = raw.dispatch.as_ref().and_then(|d| self.incident_acks(d, base));
        let dispatch = self.dispatch(raw.dispatch, base);
        let gpio = raw.gpio.and_then(|g| self.gpio(g, &sensors));
        let channels = sink_names(&alerts, gpio.as_ref());
        self.diagnostics.extend(dispatch.roster.unknown_channels(&channels));
        self.check_failover(&alerts.failover, &channels);
        let places = self.places(raw.names, &sensors);
        let board_token = raw.board.and_then(|board| board.token).filter(|token| !token.is_empty());
        let report_digest = raw.report.and_then(|report| self.report_digest(report, &channels));
        let cluster = raw.cluster.and_then(|c| self.cluster(c));
        let sensors: Arc<[SensorConfig]> = sensors.into();
        Config {
            source: None,
            cluster,
            places,
            state_dir,
            state_reserve_bytes,
            mqtt,
            sensors,
            rules,
            ingest,
            clock_synchronized,
            alerts,
            influxdb,
            http_listen,
            worker_links,
            photo_max_bytes,
            serial,
            dispatch,
            incident_acks,
            gpio,
            time_zone: wording.time_zone,
            board_token,
            report_digest,
        }
    }

    /// `[report]`: a local time and configured channels.
    fn report_digest(&mut self, raw: raw::RawReport, channels: &[String]) -> Option<DigestConfig> {
        let at = chrono::NaiveTime::parse_from_str(raw.daily_digest_at.get_ref(), "%H:%M");
        if at.is_err() {
            self.error(
                raw.daily_digest_at.span(),
                Some("report.daily_digest_at"),
                format!("`{}`: expected a local time like \"08:00\"", raw.daily_digest_at.get_ref()),
            );
        }
        let span = raw.daily_digest_channels.span();
        let wanted = raw.daily_digest_channels.into_inner();
        if wanted.is_empty() {
            self.error(span.clone(), Some("report.daily_digest_channels"), "name the grid leaders' group's channel(s)".into());
        }
        for unknown in wanted.iter().filter(|c| !channels.contains(c)) {
            self.error(
                span.clone(),
                Some("report.daily_digest_channels"),
                format!("channel `{unknown}` is not configured in [alerts] (have: {})", channels.join(", ")),
            );
        }
        Some(DigestConfig { at: at.ok()?, channels: wanted })
    }

    /// `[names]`: every key names a site or a `site/building` of the inventory.
    fn places(&mut self, names: BTreeMap<String, Spanned<String>>, sensors: &[SensorConfig]) -> wording::Places {
        let mut known: HashSet<String> = HashSet::new();
        for sensor in sensors {
            known.insert(sensor.place.site.to_string());
            if let Some(building) = &sensor.place.building {
                known.insert(format!("{}/{building}", sensor.place.site));
            }
        }
        let mut places = BTreeMap::new();
        for (key, name) in names {
            if !known.contains(&key) {
                self.error(name.span(), Some(&format!("names.{key}")), format!("`{key}` is no site or `site/building` of the inventory"));
            }
            places.insert(key, name.into_inner());
        }
        wording::Places(Arc::new(places))
    }

    /// `language` ("zh" or "en") and `time_zone` (an IANA name) of the texts people read.
    fn wording(&mut self, language: Option<&Spanned<String>>, time_zone: Option<&Spanned<String>>) -> wording::Wording {
        let mut wording = wording::Wording::default();
        if let Some(language) = language {
            wording.chinese = self.language(language, "language");
        }
        if let Some(zone) = time_zone {
            match crate::local_time::parse(zone.get_ref()) {
                Ok(zone) => wording.time_zone = zone,
                Err(message) => self.error(zone.span(), Some("time_zone"), message),
            }
        }
        wording
    }

    /// Whether `language` is Chinese ("zh") rather than English ("en").
    fn language(&mut self, language: &Spanned<String>, key: &str) -> bool {
        match language.get_ref().as_str() {
            "zh" => true,
            "en" => false,
            other => {
                self.error(language.span(), Some(key), format!("`{other}`: use \"zh\" or \"en\""));
                true
            }
        }
    }

    fn gpio(&mut self, raw: raw::RawGpio, sensors: &[SensorConfig]) -> Option<GpioConfig> {
        let before = self.diagnostics.len();
        let mut pins: Vec<&Spanned<u8>> = raw.siren_pin.iter().chain(raw.led_pin.iter()).collect();
        pins.extend(raw.input.iter().map(|i| &i.pin));
        let mut used = HashSet::new();
        for pin in pins {
            if *pin.get_ref() > 27 {
                self.error(pin.span(), Some("gpio"), format!("GPIO {} does not exist on the Pi's header (BCM 0–27)", pin.get_ref()));
            } else if !used.insert(*pin.get_ref()) {
                self.error(pin.span(), Some("gpio"), format!("GPIO {} is used twice", pin.get_ref()));
            }
            if !cfg!(feature = "rpi") {
                self.error(pin.span(), Some("gpio"), "this gridwatch was built without GPIO support (build with --features rpi)".into());
            }
        }
        let mut inputs = Vec::new();
        for input in &raw.input {
            match sensors.iter().position(|s| *s.id == **input.sensor.get_ref()) {
                Some(sensor) => {
                    inputs.push(GpioInput { pin: *input.pin.get_ref(), sensor, field: input.field.clone(), debounce: Duration::from_millis(input.debounce_ms) })
                }
                None => self.error(input.sensor.span(), Some("gpio.input.sensor"), format!("no sensor `{}` in the inventory", input.sensor.get_ref())),
            }
        }
        (self.diagnostics.len() == before).then(|| GpioConfig {
            siren_pin: raw.siren_pin.map(Spanned::into_inner),
            siren_max_on: Duration::from_secs(raw.siren_max_on_secs.max(1)),
            led_pin: raw.led_pin.map(Spanned::into_inner),
            inputs,
        })
    }

    fn incident_acks(&mut self, raw: &raw::RawDispatch, base: &Path) -> Option<crate::sources::mqtt::incident_acks::AckConfig> {
        let topic = raw.ack_topic.as_ref()?;
        if topic.get_ref().is_empty() || topic.get_ref().contains(['+', '#']) {
            self.error(topic.span(), Some("dispatch.ack_topic"), "must be one topic, without wildcards".into());
            return None;
        }
        let secret = match (&raw.ack_secret, &raw.ack_secret_file) {
            (Some(secret), None) => Some(secret.clone()),
            (None, Some(file)) => self.read_secret(file, base, "dispatch.ack_secret_file"),
            _ => {
                self.error(topic.span(), Some("dispatch.ack_secret"), "an ack topic needs exactly one of `ack_secret` or `ack_secret_file`".into());
                None
            }
        }?;
        if secret.len() < 16 {
            self.error(topic.span(), Some("dispatch.ack_secret"), "use a secret of at least 16 characters".into());
            return None;
        }
        Some(crate::sources::mqtt::incident_acks::AckConfig::new(topic.get_ref().clone(), &secret))
    }

    /// The roster file, checked like the configuration itself (its errors are this file's).
    fn dispatch(&mut self, raw: Option<raw::RawDispatch>, base: &Path) -> crate::dispatch::Dispatch {
        let Some(path) = raw.and_then(|d| d.roster).and_then(|p| self.existing_path(base, p, "dispatch.roster")) else {
            return crate::dispatch::Dispatch::default();
        };
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| vec![Diagnostic { file: path.display().to_string(), line: 1, column: 1, key: None, message: format!("cannot read: {e}") }])
            .and_then(|text| crate::dispatch::Dispatch::parse(&path.display().to_string(), &text).map_err(|e| e.0));
        parsed.unwrap_or_else(|errors| {
            self.diagnostics.extend(errors);
            crate::dispatch::Dispatch::default()
        })
    }

    /// Adds the sensors of a CSV inventory, checked like `[[sensor]]` tables (errors name the
    /// CSV file and line); an id in both is an error.
    fn add_inventory(&mut self, path: &Path, sensors: &mut Vec<SensorConfig>, shared: &mut SharedParts) {
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) => {
                self.error(0..0, Some("inventory"), format!("cannot read {name}: {error}"));
                return;
            }
        };
        let mut csv = Checker { name: &name, text: &text, diagnostics: Vec::new(), failover_spans: Vec::new() };
        let listed: HashSet<Arc<str>> = sensors.iter().map(|s| s.id.clone()).collect();
        let mut seen = HashSet::new();
        // Each row becomes a sensor as it is read: the rows are never all in memory as raw
        // sensors (for 10,000 rows that was 10 MB of short-lived strings and maps, whose holes
        // the heap kept).
        sensors.reserve(text.bytes().filter(|&b| b == b'\n').count());
        csv.inventory_rows(|csv, row| {
            if listed.contains(row.id.get_ref().as_str()) {
                csv.error(row.id.span(), Some("inventory"), format!("sensor `{}` is also a [[sensor]] in {}", row.id.get_ref(), self.name));
            }
            sensors.push(csv.sensor(row, &mut seen, shared));
        });
        sensors.shrink_to_fit();
        self.diagnostics.append(&mut csv.diagnostics);
    }

    fn sensors(&mut self, raw: Vec<raw::RawSensor>, shared: &mut SharedParts) -> Vec<SensorConfig> {
        let mut seen = HashSet::new();
        raw.into_iter().map(|sensor| self.sensor(sensor, &mut seen, shared)).collect()
    }

    /// The tags the shipped packs read take only the values the packs know: a misspelt value
    /// (`use = "drink"`) or key (`water_clas`) would silently switch their rules off.
    fn known_tags(&mut self, sensor: &raw::RawSensor) {
        for (key, value) in &sensor.tags {
            let allowed: &[&str] = match key.as_str() {
                "use" => &["surface", "drinking"],
                "water_class" => &["I", "II", "III", "IV", "V"],
                "water_body" => &["river", "lake"],
                "building_boxes" => {
                    self.error(sensor.id.span(), Some("sensor.tags.building_boxes"), "is set by gridwatch from the sensors of each building; remove it".into());
                    continue;
                }
                other => {
                    let known = ["water_class", "water_body", "structure", "storeys"];
                    if let Some(meant) = gridwatch_rules::load::closest(other, &known).filter(|_| other.len() >= 5) {
                        self.error(
                            sensor.id.span(),
                            Some("sensor.tags"),
                            format!("tag `{other}` is not one the packs read; did you mean `{meant}`? (a tag of your own rules must not be this close to it)"),
                        );
                    }
                    continue;
                }
            };
            if !allowed.contains(&value.as_str()) {
                let hint = gridwatch_rules::load::closest(value, allowed).map(|meant| format!("; did you mean `{meant}`?")).unwrap_or_default();
                self.error(
                    sensor.id.span(),
                    Some(&format!("sensor.tags.{key}")),
                    format!("`{value}` is not a value of tag `{key}`: {}{hint}", allowed.join(", ")),
                );
            }
        }
    }

    /// Checks one sensor; `seen` holds the ids of the sensors checked before it in the same list.
    fn sensor(&mut self, sensor: raw::RawSensor, seen: &mut HashSet<Arc<str>>, shared: &mut SharedParts) -> SensorConfig {
        let id: Arc<str> = sensor.id.get_ref().as_str().into();
        if !is_token(&id) {
            self.error(sensor.id.span(), Some("sensor.id"), format!("`{id}` is not a sensor id: use letters, digits, `-`, `_` and `.`"));
        } else if !seen.insert(id.clone()) {
            self.error(sensor.id.span(), Some("sensor.id"), format!("sensor `{id}` is listed twice"));
        }
        if *sensor.interval_secs.get_ref() == 0 {
            self.error(sensor.interval_secs.span(), Some("sensor.interval_secs"), "must be at least 1".into());
        }
        self.known_tags(&sensor);
        let mut baseline = BTreeMap::new();
        for (field, value) in &sensor.baseline {
            if value.get_ref().is_finite() {
                baseline.insert(field.clone(), *value.get_ref());
            } else {
                self.error(value.span(), Some("sensor.baseline"), "must be a finite number".into());
            }
        }
        if !is_token(sensor.site.get_ref()) {
            self.error(
                sensor.site.span(),
                Some("sensor.site"),
                format!("`{}` is not a site name: use letters, digits, `-`, `_` and `.`", sensor.site.get_ref()),
            );
        }
        let location = sensor.location.and_then(|location| {
            let [latitude, longitude] = *location.get_ref();
            if (-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude) {
                Some([latitude, longitude])
            } else {
                self.error(location.span(), Some("sensor.location"), "must be [latitude, longitude] in degrees, e.g. [31.2304, 121.4737]".into());
                None
            }
        });
        let texts = &mut shared.texts;
        let place = Place {
            site: texts.share(sensor.site.get_ref()),
            building: sensor.building.map(|text| texts.share(&text)),
            grid: sensor.grid.map(|text| texts.share(&text)),
            structure: sensor.structure.map(|text| texts.share(&text)),
            storeys: sensor.storeys,
        };
        let mut sensor = SensorConfig {
            location,
            id,
            kind: sensor.kind,
            place: shared.place(place),
            tags: sensor.tags.into(),
            interval: Duration::from_secs(sensor.interval_secs.into_inner()),
            baseline,
        };
        sensor.tags = sensor.rule_tags();
        sensor.tags.share_in(&mut shared.texts);
        sensor
    }

    fn mqtt(&mut self, raw: raw::RawMqtt, sensors: &[SensorConfig], base: &Path) -> MqttConfig {
        let broker = match raw.broker.get_ref().as_str() {
            "embedded" => {
                let listen = match &raw.embedded_listen {
                    Some(listen) => self.socket_addr(listen, "mqtt.embedded_listen"),
                    None => Some(SocketAddr::from(([127, 0, 0, 1], 1883))),
                };
                BrokerConfig::Embedded { listen: listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 1883))) }
            }
            url => {
                if let Some(listen) = &raw.embedded_listen {
                    self.error(listen.span(), Some("mqtt.embedded_listen"), "only used with broker = \"embedded\"".into());
                }
                match parse_mqtt_url(url) {
                    Ok((host, port, _)) => BrokerConfig::External { host, port },
                    Err(message) => {
                        self.error(raw.broker.span(), Some("mqtt.broker"), message);
                        BrokerConfig::External { host: String::new(), port: 0 }
                    }
                }
            }
        };
        let tls = self.mqtt_tls(&raw, base);
        let password = match (raw.password.clone(), &raw.password_file) {
            (password, None) => password,
            (None, Some(file)) => self.read_secret(file, base, "mqtt.password_file"),
            (Some(_), Some(file)) => {
                self.error(file.span(), Some("mqtt.password_file"), "give either `password` or `password_file`, not both".into());
                None
            }
        };
        if *raw.max_payload_bytes.get_ref() == 0 {
            self.error(raw.max_payload_bytes.span(), Some("mqtt.max_payload_bytes"), "must be at least 1".into());
        }
        let packet_floor = raw.max_payload_bytes.get_ref().saturating_add(PACKET_OVERHEAD_BYTES);
        if *raw.max_packet_bytes.get_ref() < packet_floor || *raw.max_packet_bytes.get_ref() > MQTT_MAX_PACKET_BYTES {
            let message = format!(
                "must be at least max_payload_bytes ({}) + {PACKET_OVERHEAD_BYTES} for the topic and header, i.e. {packet_floor}, and at most {MQTT_MAX_PACKET_BYTES} (MQTT's largest)",
                raw.max_payload_bytes.get_ref()
            );
            self.error(raw.max_packet_bytes.span(), Some("mqtt.max_packet_bytes"), message);
        }
        if *raw.keep_alive_secs.get_ref() < 5 {
            self.error(raw.keep_alive_secs.span(), Some("mqtt.keep_alive_secs"), "must be at least 5 seconds".into());
        }
        let topic_maps = raw.topics.into_iter().filter_map(|map| self.topic_map(map, sensors)).collect();
        MqttConfig {
            broker,
            client_id: raw.client_id,
            username: raw.username,
            password,
            max_payload_bytes: raw.max_payload_bytes.into_inner(),
            max_packet_bytes: raw.max_packet_bytes.into_inner(),
            keep_alive: Duration::from_secs(raw.keep_alive_secs.into_inner()),
            topic_maps,
            tls,
        }
    }

    /// TLS settings: required with mqtts://, refused without it (no silent plaintext).
    fn mqtt_tls(&mut self, raw: &raw::RawMqtt, base: &Path) -> Option<Arc<rustls::ClientConfig>> {
        let wants_tls = raw.broker.get_ref().starts_with("mqtts://");
        let given = [&raw.ca_file, &raw.client_cert_file, &raw.client_key_file].into_iter().flatten().next();
        if !wants_tls {
            if let Some(key) = given {
                self.error(key.span(), Some("mqtt.ca_file"), "TLS settings need an mqtts:// broker; gridwatch never sends them over plain TCP".into());
            }
            return None;
        }
        let Some(ca_file) = &raw.ca_file else {
            self.error(raw.broker.span(), Some("mqtt.ca_file"), "an mqtts:// broker needs `ca_file`: the CA that signed the broker's certificate".into());
            return None;
        };
        let read = |checker: &mut Self, file: &Spanned<String>, key: &str| -> Option<Vec<u8>> {
            let path = base.join(file.get_ref());
            std::fs::read(&path).map_err(|e| checker.error(file.span(), Some(key), format!("cannot read {}: {e}", path.display()))).ok()
        };
        let ca = read(self, ca_file, "mqtt.ca_file")?;
        let client = match (&raw.client_cert_file, &raw.client_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((read(self, cert, "mqtt.client_cert_file")?, read(self, key, "mqtt.client_key_file")?)),
            (Some(file), None) | (None, Some(file)) => {
                self.error(file.span(), Some("mqtt.client_cert_file"), "give both `client_cert_file` and `client_key_file`, or neither".into());
                return None;
            }
        };
        match tls_client_config(&ca, client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice()))) {
            Ok(config) => Some(Arc::new(config)),
            Err(message) => {
                self.error(ca_file.span(), Some("mqtt.ca_file"), message);
                None
            }
        }
    }

    fn topic_map(&mut self, raw: raw::RawTopicMap, sensors: &[SensorConfig]) -> Option<TopicMapConfig> {
        let filter = raw.filter.get_ref();
        if let Err(message) = check_topic_filter(filter) {
            self.error(raw.filter.span(), Some("mqtt.topic.filter"), message);
            return None;
        }
        let wildcards = filter.split('/').filter(|level| *level == "+").count();
        let sensor = raw.sensor.get_ref();
        match placeholder_index(sensor) {
            Some(n) if n == 0 || n > wildcards => {
                self.error(raw.sensor.span(), Some("mqtt.topic.sensor"), format!("`{sensor}` refers to `+` level {n}, but the filter has {wildcards}"));
                return None;
            }
            Some(_) => {}
            None if !sensors.iter().any(|s| *s.id == **sensor) => {
                self.error(
                    raw.sensor.span(),
                    Some("mqtt.topic.sensor"),
                    format!("no sensor `{sensor}` in the inventory (use `{{1}}` to take the id from the first `+` level)"),
                );
                return None;
            }
            None => {}
        }
        let payload = self.payload_map(&raw)?;
        Some(TopicMapConfig { filter: filter.clone(), sensor: sensor.clone(), payload })
    }

    /// Checks a topic map's payload description: pointers, scales, field names.
    fn payload_map(&mut self, raw: &raw::RawTopicMap) -> Option<PayloadMap> {
        let span = raw.filter.span();
        let before = self.diagnostics.len();
        if !raw.fields.is_empty() && !raw.values.is_empty() {
            self.error(
                span.clone(),
                Some("mqtt.topic.values"),
                "use `fields` (renames of a flat payload) or `values` (JSON pointers into a nested one), not both".into(),
            );
        }
        let pointer_ok = |pointer: &str| pointer.is_empty() || pointer.starts_with('/');
        let mut values = Vec::new();
        for (field, source) in &raw.values {
            let (pointer, scale, offset) = match source {
                raw::RawValueSource::Pointer(pointer) => (pointer.clone(), 1.0, 0.0),
                raw::RawValueSource::Scaled(scaled) => (scaled.path.clone(), scaled.scale, scaled.offset),
            };
            if !pointer_ok(&pointer) {
                self.error(span.clone(), Some("mqtt.topic.values"), format!("`{field}`: `{pointer}` is not a JSON pointer; write it like \"/data/angle_x\""));
            }
            if !(scale.is_finite() && scale != 0.0 && offset.is_finite()) {
                self.error(span.clone(), Some("mqtt.topic.values"), format!("`{field}`: scale must be a finite, non-zero number and offset a finite one"));
            }
            if field.is_empty() || field.chars().any(char::is_control) || matches!(field.as_str(), "ts" | "seq") {
                self.error(span.clone(), Some("mqtt.topic.values"), format!("`{}` cannot be a field name", field.escape_debug()));
            }
            values.push(ValueSource { field: field.clone(), pointer, scale, offset });
        }
        for (key, pointer) in [("mqtt.topic.ts", &raw.ts), ("mqtt.topic.seq", &raw.seq)] {
            if pointer.as_deref().is_some_and(|p| !pointer_ok(p)) {
                self.error(span.clone(), Some(key), "must be a JSON pointer, like \"/meta/time\"".into());
            }
        }
        (self.diagnostics.len() == before).then(|| PayloadMap { renames: raw.fields.clone(), values, ts: raw.ts.clone(), seq: raw.seq.clone() })
    }

    fn alerts(&mut self, raw: raw::RawAlerts, base: &Path, wording: wording::Wording) -> AlertsConfig {
        let mqtt_topic_prefix = raw.mqtt.and_then(|mqtt| {
            let prefix = mqtt.topic_prefix.get_ref().trim_end_matches('/');
            if prefix.is_empty() || prefix.contains(['+', '#']) {
                self.error(mqtt.topic_prefix.span(), Some("alerts.mqtt.topic_prefix"), "must be a topic without wildcards".into());
                None
            } else {
                Some(prefix.to_string())
            }
        });
        let mut webhooks = Vec::new();
        for (index, hook) in raw.webhook.into_iter().enumerate() {
            let url = self.http_url(&hook.url, "alerts.webhook.url");
            if *hook.max_attempts.get_ref() == 0 {
                self.error(hook.max_attempts.span(), Some("alerts.webhook.max_attempts"), "must be at least 1".into());
            }
            if *hook.timeout_secs.get_ref() == 0 {
                self.error(hook.timeout_secs.span(), Some("alerts.webhook.timeout_secs"), "must be at least 1".into());
            }
            let secret = match (hook.secret, &hook.secret_file) {
                (secret, None) => secret,
                (None, Some(file)) => self.read_secret(file, base, "alerts.webhook.secret_file"),
                (Some(_), Some(file)) => {
                    self.error(file.span(), Some("alerts.webhook.secret_file"), "give either `secret` or `secret_file`, not both".into());
                    None
                }
            };
            if let Some(url) = url {
                webhooks.push(WebhookConfig {
                    name: hook.name.unwrap_or_else(|| format!("webhook-{}", index + 1)),
                    url,
                    secret,
                    timeout: Duration::from_secs(hook.timeout_secs.into_inner()),
                    max_attempts: hook.max_attempts.into_inner(),
                });
            }
        }
        let wecom = raw.wecom.into_iter().enumerate().filter_map(|(i, r)| self.robot(r, "wecom", i, base, wording)).collect();
        let dingtalk = raw.dingtalk.into_iter().enumerate().filter_map(|(i, r)| self.robot(r, "dingtalk", i, base, wording)).collect();
        let sms = raw.sms.into_iter().enumerate().filter_map(|(i, r)| self.sms(r, i, base, wording)).collect();
        let silences = raw.silence.into_iter().filter_map(|s| self.silence(s)).collect();
        let failover: Vec<_> = raw.failover.into_iter().collect();
        self.failover_spans = failover.iter().map(|(from, to)| (from.clone(), to.span())).collect();
        let failover_after = Duration::from_secs(raw.failover_after_secs);
        let failover: BTreeMap<String, String> = failover.into_iter().map(|(from, to)| (from, to.into_inner())).collect();
        let mut alerts = AlertsConfig {
            console: raw.console,
            flap_window: Duration::from_secs(raw.flap_window_secs),
            mqtt_topic_prefix,
            webhooks,
            wecom,
            dingtalk,
            sms,
            silences,
            failover,
            failover_after,
            bus_down_after: Duration::from_secs(raw.bus_down_after_secs),
            group_window: Duration::from_secs(raw.group_window_secs),
        };
        for robot in alerts.wecom.iter_mut().chain(alerts.dingtalk.iter_mut()) {
            if alerts.failover.contains_key(&robot.name) {
                robot.throttle_patience = Some(failover_after);
            }
        }
        alerts
    }

    /// Every failover names channels that exist, and no chain of them comes back on itself.
    fn check_failover(&mut self, failover: &BTreeMap<String, String>, channels: &[String]) {
        let spans = std::mem::take(&mut self.failover_spans);
        for (from, span) in spans {
            let Some(to) = failover.get(&from) else { continue };
            if !channels.contains(&from) {
                self.error(span.clone(), Some("alerts.failover"), format!("`{from}` is not an alert channel (have: {})", channels.join(", ")));
            } else if !channels.contains(to) {
                self.error(span.clone(), Some("alerts.failover"), format!("`{to}` is not an alert channel (have: {})", channels.join(", ")));
            } else {
                let mut seen = vec![from.as_str()];
                let mut next = to.as_str();
                while let Some(after) = (!seen.contains(&next)).then(|| failover.get(next)).flatten() {
                    seen.push(next);
                    next = after;
                }
                if seen.contains(&next) {
                    seen.push(next);
                    self.error(span, Some("alerts.failover"), format!("failover goes round in a circle: {}", seen.join(" -> ")));
                }
            }
        }
    }

    fn silence(&mut self, raw: raw::RawSilence) -> Option<crate::dispatch::silence::Silence> {
        let scope =
            raw.scope.get_ref().parse::<crate::dispatch::silence::Scope>().map_err(|e| self.error(raw.scope.span(), Some("alerts.silence.scope"), e)).ok();
        let mut time = |text: &Spanned<String>, key: &str| {
            chrono::DateTime::parse_from_rfc3339(text.get_ref())
                .map(|t| t.timestamp_millis())
                .map_err(|e| {
                    self.error(text.span(), Some(key), format!("`{}` is not an RFC 3339 time ({e}), e.g. \"2026-12-01T18:00:00+08:00\"", text.get_ref()))
                })
                .ok()
        };
        let from = match &raw.from {
            Some(from) => Some(time(from, "alerts.silence.from")?),
            None => None,
        };
        let until = time(&raw.until, "alerts.silence.until")?;
        // Config silences have no store id; they show as #0.
        Some(crate::dispatch::silence::Silence {
            id: 0,
            scope: scope?,
            target: raw.target,
            include_red: raw.include_red,
            reason: raw.reason,
            author: raw.author,
            created_ms: from.unwrap_or(i64::MIN),
            expires_ms: until,
            ended_ms: None,
        })
    }

    fn sms(&mut self, raw: raw::RawSms, index: usize, base: &Path, wording: wording::Wording) -> Option<SmsConfig> {
        let url = self.http_url(&raw.url, "alerts.sms.url");
        let probe = raw.body.get_ref().replace("{phone}", "13800000000").replace("{message}", "x");
        if let Err(error) = serde_json::from_str::<serde_json::Value>(&probe) {
            self.error(raw.body.span(), Some("alerts.sms.body"), format!("not a JSON template once {{phone}} and {{message}} are filled in: {error}"));
        }
        if !raw.body.get_ref().contains("{phone}") || !raw.body.get_ref().contains("{message}") {
            self.error(raw.body.span(), Some("alerts.sms.body"), "the template needs both {phone} and {message}".into());
        }
        let token = match (raw.token, &raw.token_file) {
            (token, None) => token,
            (None, Some(file)) => self.read_secret(file, base, "alerts.sms.token_file"),
            (Some(_), Some(file)) => {
                self.error(file.span(), Some("alerts.sms.token_file"), "give either `token` or `token_file`, not both".into());
                None
            }
        };
        let severities = raw.severities.unwrap_or_else(|| vec!["alarm".into(), "danger".into()]);
        let per_phone_per_hour = self.bounded(raw.per_phone_per_hour, &format!("alerts.sms[{index}].per_phone_per_hour"), SMS_PER_PHONE_PER_HOUR) as u32;
        Some(SmsConfig {
            name: raw.name.unwrap_or_else(|| format!("sms-{}", index + 1)),
            url: url?,
            body: raw.body.into_inner(),
            token,
            severities,
            per_phone_per_hour,
            wording,
        })
    }

    fn robot(&mut self, raw: raw::RawRobot, kind: &str, index: usize, base: &Path, mut wording: wording::Wording) -> Option<RobotConfig> {
        let key = format!("alerts.{kind}");
        let url_text = match (&raw.url, &raw.url_file) {
            (Some(url), None) => Some(url.clone()),
            (None, Some(file)) => self.read_secret(file, base, &format!("{key}.url_file")).map(|text| Spanned::new(file.span(), text)),
            (Some(_), Some(file)) => {
                self.error(file.span(), Some(&format!("{key}.url_file")), "give either `url` or `url_file`, not both".into());
                None
            }
            (None, None) => {
                self.error(0..0, Some(&format!("{key}.url")), "a robot needs `url` (or `url_file`)".into());
                None
            }
        };
        let url = url_text.and_then(|u| self.http_url(&u, &format!("{key}.url")));
        let secret = match (raw.secret, &raw.secret_file) {
            (Some(secret), None) => Some(secret),
            (None, Some(file)) => self.read_secret(file, base, &format!("{key}.secret_file")),
            (Some(_), Some(file)) => {
                self.error(file.span(), Some(&format!("{key}.secret_file")), "give either `secret` or `secret_file`, not both".into());
                None
            }
            (None, None) => None,
        };
        if let Some(language) = &raw.language {
            wording.chinese = self.language(language, &format!("{key}.language"));
        }
        Some(RobotConfig {
            throttle_patience: None,
            name: raw.name.unwrap_or_else(|| format!("{kind}-{}", index + 1)),
            url: url?,
            secret,
            mention_mobiles: raw.mention_mobiles,
            wording,
        })
    }

    fn worker_links(&mut self, http: &raw::RawHttp, base: &Path) -> Option<crate::links::WorkerLinks> {
        let public = http.public_url.as_ref()?;
        let url = self.http_url(public, "http.public_url")?;
        let secret = match (&http.link_secret, &http.link_secret_file) {
            (Some(secret), None) => Some(secret.clone()),
            (None, Some(file)) => self.read_secret(file, base, "http.link_secret_file"),
            _ => {
                self.error(public.span(), Some("http.link_secret"), "incident links need exactly one of `link_secret` or `link_secret_file`".into());
                None
            }
        }?;
        if secret.len() < 16 {
            self.error(public.span(), Some("http.link_secret"), "use a link secret of at least 16 characters".into());
            return None;
        }
        Some(crate::links::WorkerLinks::new(url, &secret, Duration::from_secs(http.link_valid_hours.max(1) * 3600)))
    }

    fn read_secret(&mut self, file: &Spanned<String>, base: &Path, key: &str) -> Option<String> {
        let path = base.join(file.get_ref());
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim().to_string()),
            Err(error) => {
                self.error(file.span(), Some(key), format!("cannot read {}: {error}", path.display()));
                None
            }
        }
    }

    fn influx(&mut self, raw: raw::RawInflux, base: &Path) -> Option<InfluxConfig> {
        let url = self.http_url(&raw.url, "influxdb.url");
        let token = match (raw.token, &raw.token_file) {
            (Some(_), Some(file)) => {
                self.error(file.span(), Some("influxdb.token_file"), "give either `token` or `token_file`, not both".into());
                None
            }
            (Some(token), None) => Some(token),
            (None, Some(file)) => {
                let path = base.join(file.get_ref());
                match std::fs::read_to_string(&path) {
                    Ok(token) => Some(token.trim().to_string()),
                    Err(err) => {
                        self.error(file.span(), Some("influxdb.token_file"), format!("cannot read {}: {err}", path.display()));
                        None
                    }
                }
            }
            (None, None) => Some(String::new()),
        };
        if *raw.batch_size.get_ref() == 0 {
            self.error(raw.batch_size.span(), Some("influxdb.batch_size"), "must be at least 1".into());
        }
        if *raw.spool_max_points.get_ref() < *raw.batch_size.get_ref() as u64 {
            self.error(raw.spool_max_points.span(), Some("influxdb.spool_max_points"), "must be at least batch_size".into());
        }
        if *raw.drain_points_per_sec.get_ref() == 0 {
            self.error(raw.drain_points_per_sec.span(), Some("influxdb.drain_points_per_sec"), "must be at least 1".into());
        }
        if *raw.flush_interval_ms.get_ref() == 0 {
            self.error(raw.flush_interval_ms.span(), Some("influxdb.flush_interval_ms"), "must be at least 1".into());
        }
        Some(InfluxConfig {
            url: url?,
            org: raw.org,
            bucket: raw.bucket,
            token: token?,
            batch_size: raw.batch_size.into_inner(),
            flush_interval: Duration::from_millis(raw.flush_interval_ms.into_inner()),
            spool_max_points: raw.spool_max_points.into_inner(),
            drain_points_per_sec: raw.drain_points_per_sec.into_inner(),
        })
    }

    fn socket_addr(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match value.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(value.span(), Some(key), format!("`{}` is not an address such as \"127.0.0.1:9181\"", value.get_ref()));
                None
            }
        }
    }

    fn http_url(&mut self, value: &Spanned<String>, key: &str) -> Option<reqwest::Url> {
        match reqwest::Url::parse(value.get_ref()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
            Ok(_) => {
                self.error(value.span(), Some(key), "must be an http:// or https:// URL".into());
                None
            }
            Err(err) => {
                self.error(value.span(), Some(key), format!("not a URL: {err}"));
                None
            }
        }
    }

    fn existing_path(&mut self, base: &Path, value: Spanned<String>, key: &str) -> Option<PathBuf> {
        let path = base.join(value.get_ref());
        if path.exists() {
            Some(path)
        } else {
            self.error(value.span(), Some(key), format!("{} does not exist", path.display()));
            None
        }
    }
}

/// Sensor ids and site names appear in MQTT topics and storage tags: keep them plain.
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn placeholder_index(template: &str) -> Option<usize> {
    template.strip_prefix('{')?.strip_suffix('}')?.parse().ok()
}

/// The names of the alert sinks a configuration sets up (what a roster's `channels` name).
pub fn sink_names(alerts: &AlertsConfig, gpio: Option<&GpioConfig>) -> Vec<String> {
    let mut names = Vec::new();
    if alerts.console {
        names.push("console".to_string());
    }
    if alerts.mqtt_topic_prefix.is_some() {
        names.push("mqtt".to_string());
    }
    names.extend(alerts.webhooks.iter().map(|w| w.name.clone()));
    names.extend(alerts.wecom.iter().chain(&alerts.dingtalk).map(|r| r.name.clone()));
    names.extend(alerts.sms.iter().map(|s| s.name.clone()));
    if gpio.is_some_and(|g| g.siren_pin.is_some()) {
        names.push("siren".to_string());
    }
    names
}

/// host, port and whether it is TLS (mqtts://, default port 8883).
fn parse_mqtt_url(url: &str) -> Result<(String, u16, bool), String> {
    let (rest, tls) = match url.strip_prefix("mqtts://") {
        Some(rest) => (rest, true),
        None => (
            url.strip_prefix("mqtt://")
                .or_else(|| url.strip_prefix("tcp://"))
                .ok_or_else(|| format!("`{url}` is neither \"embedded\" nor an mqtt://host:port or mqtts://host:port URL"))?,
            false,
        ),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| format!("`{port}` is not a port number"))?),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("`{url}` has no host"));
    }
    Ok((host.to_string(), port, tls))
}

/// The rustls client configuration for a broker: trusts only `ca_pem`, offers the client
/// certificate when one is given.
pub fn tls_client_config(ca_pem: &[u8], client: Option<(&[u8], &[u8])>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.map_err(|e| format!("CA file: {e}"))?).map_err(|e| format!("CA file: {e}"))?;
    }
    if roots.is_empty() {
        return Err("CA file holds no PEM certificate".into());
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().map_err(|e| format!("client certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("client key: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate and key: {e}"))
        }
    }
}

/// Checks an MQTT subscription filter: `+` fills a whole level, `#` only the last.
pub fn check_topic_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("a topic filter cannot be empty".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!("`{filter}`: `#` must be a whole level at the end"));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("`{filter}`: `+` must be a whole level"));
        }
    }
    Ok(())
}

/// `[report]`: the daily digest to the grid leaders' group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestConfig {
    /// Local time it goes out, with the previous day's report.
    pub at: chrono::NaiveTime,
    /// The channels (sink names) of the grid leaders' group.
    pub channels: Vec<String>,
}

#[cfg(test)]
mod tests;
