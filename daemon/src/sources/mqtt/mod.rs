//! MQTT: the embedded broker ([`broker`]), the ingest connection that turns messages into
//! samples ([`source`]), the topic convention ([`topics`]) and the payload convention
//! ([`payload`]). The alert publisher has its own connection (`crate::sinks::mqtt`), so alerts
//! still go out while ingest is shutting down.

pub mod broker;
mod copies;
pub mod drain;
pub mod incident_acks;
pub mod payload;
pub mod rejection_log;
pub mod source;
pub mod topics;

use crate::config::{BrokerConfig, MqttConfig};
use rumqttc::MqttOptions;

/// Largest packet the daemon sends (alerts, acknowledgements): far above any alert's JSON.
const MAX_OUTGOING_PACKET: usize = 1024 * 1024;

/// Where to connect for a broker configuration.
pub fn broker_address(broker: &BrokerConfig) -> (String, u16) {
    match broker {
        BrokerConfig::Embedded { listen } if listen.ip().is_unspecified() => ("127.0.0.1".into(), listen.port()),
        BrokerConfig::Embedded { listen } => (listen.ip().to_string(), listen.port()),
        BrokerConfig::External { host, port } => (host.clone(), *port),
    }
}

/// Connection options for one of the daemon's connections; `role` is appended to the client id
/// so each connection keeps its own persistent session. (The ingest connection also turns on
/// manual acknowledgements.) Packets over `max_packet_bytes` (above `max_payload_bytes` on
/// purpose, so an oversized reading arrives and is rejected and counted) are refused by rumqttc
/// as a connection error; the ingest connection then clears them out of its session
/// ([`drain`]).
pub fn options(config: &MqttConfig, role: &str) -> MqttOptions {
    let (host, port) = broker_address(&config.broker);
    let mut options = MqttOptions::new(format!("{}-{role}", config.client_id), host, port);
    options.set_keep_alive(config.keep_alive).set_clean_session(false).set_max_packet_size(config.max_packet_bytes, MAX_OUTGOING_PACKET);
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        options.set_credentials(user.clone(), password.clone());
    }
    if let Some(tls) = &config.tls {
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.clone())));
    }
    options
}
