//! gridwatch, the daemon. A reading's way through it:
//!
//! 1. [`mqtt::source::run`] polls the MQTT connection; [`mqtt::source::Ingest::sample`] maps
//!    the topic to a sensor ([`mqtt::topics`]) and decodes the JSON payload
//!    ([`mqtt::payload`]) into a [`sample::Sample`] — or counts a rejection in [`metrics`].
//!    Serial ports ([`serial::run_port`]) feed the same path, decoding with `gridwatch-bridge`.
//! 2. The same message goes to [`telemetry::spooler::run`], which appends its reading to the
//!    crash log and, in groups, writes it to InfluxDB 2 straight from memory while it keeps up
//!    (else commits it to the spool, which [`telemetry::writer::TelemetryWriter`] drains), and
//!    only then acknowledges it to the broker.
//!    [`pipeline::Pipeline::run`] feeds each sample to the rule engine (`gridwatch-rules`),
//!    ticks it every second and turns rule events into [`alert::Alert`]s.
//! 3. [`alert::run_dispatcher`] applies each alert to its incident and writes it, in the same
//!    transaction, to the [`store`] journal (SQLite) with a pending delivery per channel; each
//!    channel's task ([`alert::channel::spawn_sink`]) drains its own pending deliveries:
//!    [`alert::console`], [`alert::webhook`], [`alert::mqtt`], the robots.
//!
//! [`buses`] and [`gateways`] tell when a whole bus or gateway is silent (one device alarm for
//! the installers instead of one per box); [`web::board`] is the office's screen and
//! [`report`] the supervision figures (`gridwatch report`, metrics, the daily digest).
//!
//! [`daemon::run`] starts all of it (and the embedded broker, [`mqtt::broker`]) and drains it
//! on shutdown; [`demo`] runs it on embedded defaults with a simulator. [`config`] loads and
//! checks gridwatch.toml; [`rule_files`] reads rule files for the pure rules library;
//! [`reload`] builds the engine and swaps in new rules on SIGHUP or file change;
//! [`rules_cli`] and [`replay`] are the operators' `rules check | test | explain`; [`probe`]
//! is the installers' `gridwatch probe`; [`bridge`] runs only the serial sources and publishes to
//! MQTT. With `--features cluster`, `cluster` sends a box's alert events and incident
//! transitions up to its district and is `gridwatch hub` (docs/district.md).

pub mod alert;
pub mod backoff;
pub mod clock;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod field_names;
pub mod gpio;
pub mod invariants;
pub mod last_good;
pub mod links;
pub mod live;
pub mod local_time;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod redact;
pub mod reload;
pub mod report;
pub mod rule_files;
pub mod sample;
pub mod sensor_clocks;
pub mod signing;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod supervision;
pub mod telemetry;
pub mod timeline;
pub mod trend;
pub mod web;
