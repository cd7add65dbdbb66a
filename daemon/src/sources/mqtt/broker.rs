//! The embedded MQTT broker (rumqttd) for boxes without mosquitto: `broker = "embedded"`.
//! It runs on its own threads for the life of the process.

use anyhow::Context;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Largest payload the embedded broker accepts from any client.
const MAX_PAYLOAD: usize = 256 * 1024;

/// Starts the broker listening on `listen` (MQTT 3.1.1) and waits until it accepts connections.
pub async fn start(listen: SocketAddr) -> anyhow::Result<()> {
    let server = ServerSettings {
        name: "gridwatch-embedded".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: MAX_PAYLOAD,
            max_inflight_count: 200,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            max_segment_size: 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Config::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(error) = broker.start() {
                tracing::error!(error = %error, "embedded MQTT broker stopped");
            }
        })
        .context("starting the embedded broker thread")?;
    let target = if listen.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], listen.port())) } else { listen };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(target).await.is_ok() {
            tracing::info!(listen = %listen, "embedded MQTT broker ready");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("embedded MQTT broker did not start listening on {listen} within 5 s (is the port taken?)")
}
