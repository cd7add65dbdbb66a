//! gridwatch, the daemon. Its folders follow a reading: [`sources`] → [`pipeline`] (the rule
//! engine) → [`dispatch`] → [`sinks`], with the [`store`] under them, [`telemetry`] beside the
//! pipeline, and [`web`], [`config`], [`commands`] and (with `--features cluster`) `cluster`
//! around them. docs/ARCHITECTURE.md draws the same map with more detail.
//!
//! 1. [`sources::mqtt::source::run`] polls the MQTT connection;
//!    [`sources::mqtt::source::Ingest::sample`] maps the topic to a sensor
//!    ([`sources::mqtt::topics`]) and decodes the JSON payload ([`sources::mqtt::payload`]) into
//!    a [`sample::Sample`] — or counts a rejection in [`metrics`]. Serial ports
//!    ([`sources::serial::run_port`]) and GPIO inputs ([`sources::gpio_input`]) feed the same
//!    path.
//! 2. The ingest connection also hands each message to [`telemetry::spooler::run`], which appends
//!    its reading to the crash log and, in groups, writes it to InfluxDB straight from memory
//!    while it keeps up (else commits it to the spool, which
//!    [`telemetry::writer::TelemetryWriter`] drains), and only then acknowledges it to the
//!    broker. The pipeline never touches InfluxDB.
//! 3. [`pipeline::Pipeline::run`] feeds each sample to the rule engine (`gridwatch-rules`),
//!    ticks it every second, and [`pipeline::alerts::alert_of`] turns each rule event into an
//!    [`alert::Alert`] (data only, typed).
//! 4. [`dispatch::run_dispatcher`] applies each alert to its incident and writes it,
//!    in the same transaction, to the [`store`] journal (SQLite) with a pending delivery per
//!    channel; it also names who is on duty ([`dispatch::roster`]) and escalates
//!    ([`dispatch::escalator`]).
//! 5. Each channel's task ([`sinks::channel::spawn_sink`]) drains its own pending deliveries:
//!    [`sinks::console`], [`sinks::webhook`], [`sinks::mqtt`], the robots, SMS, the siren; what
//!    people read is written by [`sinks::text`].
//!
//! [`sources::buses`] and [`sources::gateways`] tell when a whole bus or gateway is silent (one
//! device alarm for the installers instead of one per box); [`web::board`] is the office's
//! screen and [`report`] the supervision figures (`gridwatch report`, metrics, the daily digest).
//! Every runtime part reads time through the injected [`clock::Clock`].
//!
//! [`daemon::run_with`] is the daemon's life: build → spawn → wait → drain (with the embedded
//! broker, [`sources::mqtt::broker`]). [`config`] loads and checks gridwatch.toml (types in
//! `config/types.rs`, checks by section in `config/check/`); [`rule_files`] reads rule files for
//! the pure rules library; [`reload`] builds the engine and swaps in new rules on SIGHUP or file
//! change. [`commands`] holds every subcommand's body: `run`, `validate`, `rules` (check, test
//! with [`commands::replay`], explain), `incidents`, `probe`, `bridge` (only the serial sources,
//! published to MQTT), `demo` (embedded defaults with a simulator) and the rest; `main` only
//! parses and dispatches. With `--features cluster`, `cluster` sends a box's alert events and
//! incident transitions up to its district, judges its sensors with their own 4G link from the
//! district's stream, and is `gridwatch hub` (docs/district.md).

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
pub mod link_clock;
pub mod links;
pub mod live;
pub mod local_time;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod redact;
pub mod reload;
pub mod report;
pub mod report_rate;
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
