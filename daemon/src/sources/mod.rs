//! Sources: where readings come in. [`mqtt`] (the ingest connection, the embedded broker, the
//! workers' actions relayed on the ack topic), [`serial`] ports (stream and polled protocols),
//! GPIO digital inputs ([`gpio_input`]); [`buses`] and [`gateways`] tell when a whole bus or
//! gateway falls silent.

pub mod buses;
pub mod gateways;
pub mod gpio_input;
pub mod mqtt;
pub mod serial;
