//! The configuration file as written (phase one of loading): serde structs that mirror the TOML
//! exactly, with `deny_unknown_fields` so a typo is an error, and spans on every value that is
//! checked later so that error can name its line.

use gridwatch_rules::SensorKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub state_dir: Spanned<String>,
    /// A CSV file with more sensors (see `config::inventory`).
    pub inventory: Option<Spanned<String>>,
    #[serde(default = "default_state_reserve_kib")]
    pub state_reserve_kib: u64,
    /// A directory in memory (tmpfs) for what the card could not keep; default: systemd's
    /// `$RUNTIME_DIRECTORY`.
    pub runtime_dir: Option<Spanned<String>>,
    pub mqtt: RawMqtt,
    #[serde(default, rename = "sensor")]
    pub sensors: Vec<RawSensor>,
    #[serde(default)]
    pub rules: RawRules,
    #[serde(default)]
    pub ingest: RawIngest,
    #[serde(default)]
    pub alerts: RawAlerts,
    pub influxdb: Option<RawInflux>,
    pub http: Option<RawHttp>,
    /// `[board]`: the office's screen at `/board`.
    pub board: Option<RawBoard>,
    /// `[report]`: the daily supervision digest.
    pub report: Option<RawReport>,
    #[serde(default)]
    pub serial: Vec<RawSerial>,
    pub dispatch: Option<RawDispatch>,
    pub gpio: Option<RawGpio>,
    /// `zh` (default) or `en`: the language of the messages people read.
    pub language: Option<Spanned<String>>,
    /// An IANA time zone name (default `Asia/Shanghai`): where the times people read are shown.
    pub time_zone: Option<Spanned<String>>,
    /// Display names: site id, or `site/building`, = the name people read.
    #[serde(default)]
    pub names: BTreeMap<String, Spanned<String>>,
    /// This box's uplink to its district's hub (`config::cluster`).
    pub cluster: Option<super::cluster::RawCluster>,
}

fn default_state_reserve_kib() -> u64 {
    4096
}

/// `[gpio]`: Raspberry Pi pins (BCM numbers); needs a build with the `rpi` feature.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGpio {
    pub siren_pin: Option<Spanned<u8>>,
    #[serde(default = "default_siren_max_on_secs")]
    pub siren_max_on_secs: u64,
    pub led_pin: Option<Spanned<u8>>,
    #[serde(default)]
    pub input: Vec<RawGpioInput>,
}

fn default_siren_max_on_secs() -> u64 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGpioInput {
    pub pin: Spanned<u8>,
    pub sensor: Spanned<String>,
    #[serde(default = "default_input_field")]
    pub field: String,
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
}

fn default_input_field() -> String {
    "contact".into()
}

fn default_debounce_ms() -> u64 {
    50
}

/// `[dispatch]`: who is told and when (docs/incidents.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDispatch {
    /// The roster file: grids, members, duty shifts, escalation policies.
    pub roster: Option<Spanned<String>>,
    /// Workers' actions relayed by a hub as signed MQTT messages on this topic.
    pub ack_topic: Option<Spanned<String>>,
    pub ack_secret: Option<String>,
    pub ack_secret_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSerial {
    pub port: Spanned<String>,
    pub baud: Spanned<u32>,
    pub protocol: SerialProtocol,
    #[serde(default = "default_serial_timeout_ms")]
    pub timeout_ms: Spanned<u64>,
    /// Stream protocols: at most one reading per device this often.
    #[serde(default = "default_min_interval_ms")]
    pub min_interval_ms: Spanned<u64>,
    #[serde(default, rename = "device")]
    pub devices: Vec<RawSerialDevice>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialProtocol {
    Modbus,
    Witmotion,
    Rion,
    Line,
}

fn default_serial_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 500)
}

fn default_min_interval_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSerialDevice {
    pub sensor: Spanned<String>,
    /// Modbus: a shipped profile name or a profile file.
    pub profile: Option<Spanned<String>>,
    /// Modbus: overrides the profile's slave address.
    pub slave: Option<Spanned<u8>>,
    /// RION: the inclinometer's address.
    pub address: Option<u8>,
    /// Line protocol: the id the box sends, when it is not the sensor id.
    pub device_id: Option<String>,
    #[serde(default = "default_poll_secs")]
    pub interval_secs: Spanned<u64>,
}

fn default_poll_secs() -> Spanned<u64> {
    Spanned::new(0..0, 60)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    /// `"embedded"`, `"mqtt://host:port"` or `"mqtts://host:port"` (TLS).
    pub broker: Spanned<String>,
    pub embedded_listen: Option<Spanned<String>>,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<Spanned<String>>,
    /// TLS (mqtts:// only): the CA that signed the broker's certificate, PEM.
    pub ca_file: Option<Spanned<String>>,
    /// TLS client certificate and key, PEM (both or neither).
    pub client_cert_file: Option<Spanned<String>>,
    pub client_key_file: Option<Spanned<String>>,
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: Spanned<usize>,
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: Spanned<u64>,
    /// Largest packet the ingest connection reads from the broker; larger ones are dropped.
    #[serde(default = "default_max_packet_bytes")]
    pub max_packet_bytes: Spanned<usize>,
    #[serde(default, rename = "topic")]
    pub topics: Vec<RawTopicMap>,
    /// Where a tilt box is asked to report faster at yellow and above (`{site}`, `{sensor}`).
    pub report_rate_topic: Option<Spanned<String>>,
}

fn default_client_id() -> String {
    "gridwatch".into()
}

fn default_max_payload_bytes() -> Spanned<usize> {
    Spanned::new(0..0, 4096)
}

fn default_max_packet_bytes() -> Spanned<usize> {
    Spanned::new(0..0, 1024 * 1024)
}

fn default_keep_alive_secs() -> Spanned<u64> {
    Spanned::new(0..0, 30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopicMap {
    pub filter: Spanned<String>,
    pub sensor: Spanned<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    #[serde(default)]
    pub values: BTreeMap<String, RawValueSource>,
    pub ts: Option<String>,
    pub seq: Option<String>,
}

/// `x = "/data/angle_x"` or `x = { path = "/data/angle_x", scale = 0.01, offset = 0 }`.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a JSON pointer like \"/data/x\", or { path = \"/data/x\", scale = 0.01, offset = 0 } (keys: path, scale, offset)")]
pub enum RawValueSource {
    Pointer(String),
    Scaled(RawScaledValue),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScaledValue {
    pub path: String,
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSensor {
    pub id: Spanned<String>,
    pub kind: SensorKind,
    pub site: Spanned<String>,
    pub building: Option<String>,
    pub grid: Option<String>,
    pub storeys: Option<u8>,
    pub structure: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default = "default_interval_secs")]
    pub interval_secs: Spanned<u64>,
    /// Installation baseline per field (e.g. the tilt box's zero: `{ x = 0.31, y = -0.12 }`).
    #[serde(default)]
    pub baseline: BTreeMap<String, Spanned<f64>>,
    /// Where the sensor is, `[latitude, longitude]` in degrees, for the worker's map link.
    pub location: Option<Spanned<[f64; 2]>>,
}

fn default_interval_secs() -> Spanned<u64> {
    Spanned::new(0..0, 3600)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    #[serde(default = "yes")]
    pub builtin_packs: bool,
    #[serde(default)]
    pub paths: Vec<Spanned<String>>,
    pub state_save_secs: Option<Spanned<u64>>,
}

impl Default for RawRules {
    fn default() -> Self {
        RawRules { builtin_packs: true, paths: Vec::new(), state_save_secs: None }
    }
}

/// `[ingest]`: how readings' own times are trusted (docs/configuration.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    pub max_future_skew_secs: Option<Spanned<u64>>,
    pub reanchor_after_readings: Option<Spanned<u64>>,
    pub reanchor_after_secs: Option<Spanned<u64>>,
    pub clock_behind_secs: Option<Spanned<u64>>,
    pub clock_behind_for_secs: Option<Spanned<u64>>,
    pub max_fields_per_reading: Option<Spanned<u64>>,
    pub max_field_names_per_sensor: Option<Spanned<u64>>,
    pub max_field_name_bytes: Option<Spanned<u64>>,
    /// "kernel", "always" or a flag file's path (see `clock::SyncSource`).
    pub clock_synchronized: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    #[serde(default = "yes")]
    pub console: bool,
    #[serde(default = "default_flap_window_secs")]
    pub flap_window_secs: u64,
    pub mqtt: Option<RawMqttAlerts>,
    #[serde(default)]
    pub webhook: Vec<RawWebhook>,
    #[serde(default)]
    pub wecom: Vec<RawRobot>,
    #[serde(default)]
    pub dingtalk: Vec<RawRobot>,
    #[serde(default)]
    pub sms: Vec<RawSms>,
    #[serde(default)]
    pub silence: Vec<RawSilence>,
    /// `[alerts.failover]`: channel name = the channel that takes over when it fails or is
    /// throttled.
    #[serde(default)]
    pub failover: BTreeMap<String, Spanned<String>>,
    #[serde(default = "default_failover_after_secs")]
    pub failover_after_secs: u64,
    #[serde(default = "default_bus_down_after_secs")]
    pub bus_down_after_secs: u64,
    #[serde(default = "default_group_window_secs")]
    pub group_window_secs: u64,
    #[serde(default = "yes")]
    pub fold_into_open_alarm: bool,
}

fn default_group_window_secs() -> u64 {
    10
}

fn default_bus_down_after_secs() -> u64 {
    60
}

fn default_failover_after_secs() -> u64 {
    60
}

/// `[[alerts.silence]]`: a maintenance window written in the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSilence {
    /// sensor | building | grid | rule
    pub scope: Spanned<String>,
    pub target: String,
    pub reason: String,
    pub author: String,
    /// RFC 3339; default: now.
    pub from: Option<Spanned<String>>,
    /// RFC 3339.
    pub until: Spanned<String>,
    #[serde(default)]
    pub include_red: bool,
}

/// `[[alerts.sms]]`: an SMS HTTP gateway, one POST per phone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSms {
    pub name: Option<String>,
    pub url: Spanned<String>,
    /// The JSON body; `{phone}` and `{message}` are replaced (JSON-escaped).
    pub body: Spanned<String>,
    /// Sent as `Authorization: Bearer …`; or `token_file`.
    pub token: Option<String>,
    pub token_file: Option<Spanned<String>>,
    /// Severities that go out by SMS (default: alarm and danger).
    pub severities: Option<Vec<String>>,
    /// At most this many SMS per phone per hour (default 6); past it, alarms coalesce.
    pub per_phone_per_hour: Option<Spanned<u64>>,
    /// Where the gateway's JSON answer says whether it took the SMS (a JSON pointer, `/Code`);
    /// with `success_value`. Gateways answer HTTP 200 to a refused SMS.
    pub success_field: Option<Spanned<String>>,
    /// What that field holds when the SMS was taken (`"OK"`, `0`).
    pub success_value: Option<Spanned<toml::Value>>,
    /// How long the gateway may take to answer (default 10 s).
    pub timeout_secs: Option<Spanned<u64>>,
}

impl Default for RawAlerts {
    fn default() -> Self {
        RawAlerts {
            failover: BTreeMap::new(),
            failover_after_secs: default_failover_after_secs(),
            bus_down_after_secs: default_bus_down_after_secs(),
            group_window_secs: default_group_window_secs(),
            fold_into_open_alarm: true,
            console: true,
            flap_window_secs: default_flap_window_secs(),
            mqtt: None,
            webhook: Vec::new(),
            wecom: Vec::new(),
            dingtalk: Vec::new(),
            sms: Vec::new(),
            silence: Vec::new(),
        }
    }
}

fn default_flap_window_secs() -> u64 {
    600
}

/// A WeCom or DingTalk group robot.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRobot {
    pub name: Option<String>,
    /// The robot's URL with its key / access token; or `url_file` (a systemd credential).
    pub url: Option<Spanned<String>>,
    pub url_file: Option<Spanned<String>>,
    /// DingTalk signing secret; or `secret_file`.
    pub secret: Option<String>,
    pub secret_file: Option<Spanned<String>>,
    #[serde(default)]
    pub mention_mobiles: Vec<String>,
    /// `zh` or `en`; default: the top-level `language`.
    pub language: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqttAlerts {
    pub topic_prefix: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub name: Option<String>,
    pub url: Spanned<String>,
    /// Signs each POST (`X-Gridwatch-Signature`) so the receiver can check it came from us.
    pub secret: Option<String>,
    pub secret_file: Option<Spanned<String>>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: Spanned<u64>,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: Spanned<u32>,
}

fn default_timeout_secs() -> Spanned<u64> {
    Spanned::new(0..0, 5)
}

fn default_max_attempts() -> Spanned<u32> {
    Spanned::new(0..0, 8)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInflux {
    pub url: Spanned<String>,
    pub org: String,
    pub bucket: String,
    pub token: Option<String>,
    pub token_file: Option<Spanned<String>>,
    #[serde(default = "default_batch_size")]
    pub batch_size: Spanned<usize>,
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: Spanned<u64>,
    #[serde(default = "default_spool_max_points")]
    pub spool_max_points: Spanned<u64>,
    #[serde(default = "default_drain_points_per_sec")]
    pub drain_points_per_sec: Spanned<u32>,
}

fn default_batch_size() -> Spanned<usize> {
    Spanned::new(0..0, 1000)
}

fn default_flush_interval_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}

fn default_spool_max_points() -> Spanned<u64> {
    Spanned::new(0..0, 2_000_000)
}

fn default_drain_points_per_sec() -> Spanned<u32> {
    Spanned::new(0..0, 5000)
}

/// `[report]`: the daily digest to the grid leaders' group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReport {
    /// Local time ("08:00") the previous day's report goes out.
    pub daily_digest_at: Spanned<String>,
    /// Alert channels (sink names) of the grid leaders' group.
    pub daily_digest_channels: Spanned<Vec<String>>,
}

/// `[board]`: the office's screen (`/board` on `[http] listen`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBoard {
    /// When set, the board is shown only with `?token=` equal to it.
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Spanned<String>,
    /// How workers' phones reach this box; turns on incident links and pages.
    pub public_url: Option<Spanned<String>>,
    pub link_secret: Option<String>,
    pub link_secret_file: Option<Spanned<String>>,
    #[serde(default = "default_link_valid_hours")]
    pub link_valid_hours: u64,
    /// The largest photo the worker's page takes, after the phone has scaled it down.
    #[serde(default = "default_photo_max_bytes")]
    pub photo_max_bytes: usize,
}

/// 2 MB: a phone photo scaled to 1600 pixels is 200–500 kB; a photo sent unscaled (no script)
/// of a modern camera is larger and is refused with a message saying so.
pub const DEFAULT_PHOTO_MAX_BYTES: usize = 2 * 1024 * 1024;

fn default_photo_max_bytes() -> usize {
    DEFAULT_PHOTO_MAX_BYTES
}

fn default_link_valid_hours() -> u64 {
    72
}
