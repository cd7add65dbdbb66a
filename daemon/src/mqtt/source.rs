//! The MQTT ingest connection: subscribes to the telemetry topics, turns each message into a
//! [`Sample`] (or a counted [`Rejection`]) and hands samples to the pipeline.
//!
//! One task owns `poll()`; it never publishes. The session is persistent (fixed client id,
//! `clean_session = false`); when the broker reports that it has no session, the task
//! subscribes again. Connection errors are retried with exponential backoff and jitter.
//! The hand-off to the pipeline blocks when the pipeline is behind (readings are never dropped
//! here).

use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::mqtt::payload::{self, Rejection};
use crate::mqtt::topics::TopicRouter;
use crate::sample::Sample;
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS, SubscribeFilter};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Turns messages into samples.
#[derive(Debug)]
pub struct Ingest {
    router: TopicRouter,
    max_payload_bytes: usize,
    clock: Clock,
    metrics: Arc<Metrics>,
}

impl Ingest {
    pub fn new(config: &Config, clock: Clock, metrics: Arc<Metrics>) -> Ingest {
        Ingest { router: TopicRouter::new(config), max_payload_bytes: config.mqtt.max_payload_bytes, clock, metrics }
    }

    /// Decodes one message; a rejection is already counted when this returns it.
    pub fn sample(&self, topic: &str, payload: &[u8]) -> Result<Sample, Rejection> {
        self.metrics.messages_received.inc();
        let result = self.router.route(topic).and_then(|route| {
            let now = self.clock.now();
            let decoded = payload::decode(payload, self.max_payload_bytes, route.renames, now)?;
            Ok(Sample { sensor: route.sensor, ts: decoded.ts.unwrap_or(now), seq: decoded.seq, fields: decoded.fields })
        });
        if let Err(rejection) = &result {
            self.metrics.reject(rejection);
            tracing::debug!(topic, reason = rejection.reason(), error = %rejection, "message rejected");
        }
        result
    }
}

/// Runs the ingest connection until `shutdown`, then disconnects and returns (dropping
/// `samples`, which lets the pipeline finish).
pub async fn run(config: &Config, ingest: Ingest, samples: mpsc::Sender<Sample>, shutdown: CancellationToken) {
    let (client, mut eventloop) = AsyncClient::new(crate::mqtt::options(&config.mqtt, "ingest"), 256);
    let filters: Vec<SubscribeFilter> =
        ingest.router.filters().into_iter().map(|path| SubscribeFilter::new(path, QoS::AtLeastOnce)).collect();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut warned_rejections = 0u64;
    let metrics = ingest.metrics.clone();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                match ingest.sample(&publish.topic, &publish.payload) {
                    Ok(sample) => {
                        if samples.send(sample).await.is_err() {
                            break;
                        }
                    }
                    Err(rejection) => {
                        // Warn for the first few, then only count: a broken device must not flood the log.
                        if warned_rejections < 20 {
                            warned_rejections += 1;
                            tracing::warn!(topic = %publish.topic, reason = rejection.reason(), error = %rejection, "message rejected");
                        }
                    }
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                metrics.mqtt_connects.inc();
                backoff.reset();
                tracing::info!(session_present = ack.session_present, "connected to MQTT broker");
                if !ack.session_present {
                    if let Err(error) = client.try_subscribe_many(filters.clone()) {
                        tracing::error!(error = %error, "could not queue the telemetry subscriptions");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack.return_codes.iter().filter(|code| matches!(code, rumqttc::SubscribeReasonCode::Failure)).count();
                if refused > 0 {
                    tracing::error!(refused, "broker refused telemetry subscriptions; readings on those topics will not arrive");
                }
            }
            Ok(_) => {}
            Err(error) => {
                metrics.mqtt_connection_errors.inc();
                let delay = backoff.next_delay();
                tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "MQTT connection failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    disconnect(client, eventloop).await;
}

/// Sends DISCONNECT and polls until it is out (at most a second).
async fn disconnect(client: AsyncClient, mut eventloop: rumqttc::EventLoop) {
    if client.try_disconnect().is_err() {
        return;
    }
    let flush = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
}
