//! Harness for gridwatch's end-to-end tests and load runs: real services on loopback ports the
//! test chooses, each stopped when its handle drops. The load harnesses in `src/bin/` —
//! `gridwatch-load` (one box) and `gridwatch-district-load` (boxes, NATS, hub, PostgreSQL;
//! feature `district-load`) — are built on the same services; see docs/BENCHMARKS.md.
//!
//! - [`Mosquitto`]: a mosquitto broker (Debian package `mosquitto`).
//! - [`VictoriaMetrics`]: VictoriaMetrics (Debian package `victoria-metrics`), which accepts
//!   InfluxDB's `/api/v2/write`; read back through `/api/v1/export`.
//! - [`WebhookReceiver`]: an HTTP server that records JSON POSTs and answers with scripted
//!   status codes.
//! - [`PtyPair`]: a pseudo-terminal pair (socat) standing in for an RS-485 adapter.
//! - [`Browser`]: headless Chromium over WebDriver (Debian packages `chromium`,
//!   `chromium-driver`), for the workers' pages.
//! - [`NatsCluster`]: a NATS JetStream cluster of three `nats-server` nodes (Debian package
//!   `nats-server`), for the district tests.
//! - [`Postgres`]: a throw-away PostgreSQL cluster (Debian package `postgresql`; run as the
//!   `postgres` user when the tests run as root).
//! - [`LinkProxy`]: a TCP proxy that can blackhole a box's link to the district.
//! - [`Publisher`]: a device-like MQTT publisher that knows exactly which readings the broker
//!   acknowledged (the external oracle of the durability tests).
//!
//! - [`measure`]: a process's CPU time and peak memory, the machine's busy share, latency
//!   percentiles (what the load harnesses report).
//!
//! - [`alarm_quality`]: the alarm-quality corpus and scorer (no services: the pure rule engine
//!   over generated sensor histories; `gridwatch-alarm-eval`, docs/ALARM-QUALITY.md).
//!
//! A service that cannot be started fails the test with the reason (and the package to
//! install); nothing is skipped.

pub mod alarm_quality;
mod browser;
mod link_proxy;
pub mod measure;
mod nats;
mod postgres;
mod publisher;
mod services;
mod webhook;

pub use browser::Browser;
pub use link_proxy::{LinkProxy, Slowness};
pub use nats::NatsCluster;
pub use postgres::Postgres;
pub use publisher::Publisher;
pub use services::{free_port, wait_for, Mosquitto, PtyPair, VictoriaMetrics};
pub use webhook::{now_ms, WebhookReceiver};
