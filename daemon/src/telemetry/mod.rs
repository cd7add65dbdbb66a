//! Telemetry on its way to InfluxDB, with nothing acknowledged ever lost:
//!
//! 1. [`spooler`]: every accepted reading is committed to the store's spool in groups (what
//!    queued up during the previous commit); only then is its MQTT message acknowledged to the broker
//!    (rejected messages are acknowledged in the same order, counted as rejected).
//! 2. [`writer`]: drains the spool into InfluxDB 2 in batches at a bounded rate, and removes
//!    points only once InfluxDB took them. What InfluxDB refuses for good goes to
//!    `dead_letters`; configuration errors keep the data and raise an operator alarm.

pub mod spooler;
pub mod writer;
