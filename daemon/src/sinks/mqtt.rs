//! The MQTT alert sink: each alert event is published as JSON ([`crate::alert::Alert`]) with QoS 1 on
//! `<prefix>/<site>/<sensor>/<rule>`, over a connection of its own. An alert counts as delivered
//! only when the broker's PUBACK for its packet id came back.

use super::Sink;
use crate::alert::Alert;
use crate::backoff::Backoff;
use crate::config::MqttConfig;
use anyhow::Context;
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long one publish may wait for its PUBACK before it is tried again.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const ATTEMPTS: u32 = 3;

/// What the connection task reports about our publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// The publish went out with this packet id.
    Sent(u16),
    /// The broker acknowledged this packet id.
    Acked(u16),
}

#[derive(Debug)]
pub struct MqttAlertSink {
    prefix: String,
    client: AsyncClient,
    progress: mpsc::UnboundedReceiver<Progress>,
    connection: JoinHandle<()>,
}

impl MqttAlertSink {
    /// Opens the alert connection (it connects in the background and keeps reconnecting).
    pub fn connect(config: &MqttConfig, prefix: String) -> MqttAlertSink {
        let (client, mut eventloop) = AsyncClient::new(crate::sources::mqtt::options(config, "alerts"), 64);
        let (progress_tx, progress) = mpsc::unbounded_channel();
        let connection = tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        let _ = progress_tx.send(Progress::Sent(pkid));
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        let _ = progress_tx.send(Progress::Acked(ack.pkid));
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => backoff.reset(),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(error) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "alert MQTT connection failed");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        });
        MqttAlertSink { prefix, client, progress, connection }
    }

    fn topic(&self, alert: &Alert) -> String {
        format!("{}/{}/{}/{}", self.prefix, alert.site, alert.sensor, alert.rule)
    }

    async fn publish_and_confirm(&mut self, topic: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        // Forget what an earlier, timed-out attempt left behind.
        while self.progress.try_recv().is_ok() {}
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.context("queueing the publish")?;
        let wait = async {
            let pkid = loop {
                if let Progress::Sent(pkid) = self.progress.recv().await.context("alert connection ended")? {
                    break pkid;
                }
            };
            while self.progress.recv().await.context("alert connection ended")? != Progress::Acked(pkid) {}
            anyhow::Ok(())
        };
        tokio::time::timeout(ACK_TIMEOUT, wait).await.context("no PUBACK from the broker")?
    }
}

impl Sink for MqttAlertSink {
    fn name(&self) -> String {
        "mqtt".into()
    }

    async fn deliver(&mut self, alert: &Alert) -> anyhow::Result<()> {
        let topic = self.topic(alert);
        let payload = serde_json::to_vec(alert)?;
        let mut last_error = None;
        for attempt in 1..=ATTEMPTS {
            match self.publish_and_confirm(&topic, payload.clone()).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::warn!(topic = %topic, attempt, error = %format!("{error:#}"), "alert publish not confirmed");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
    }

    async fn finish(&mut self) {
        let _ = self.client.disconnect().await;
        if tokio::time::timeout(Duration::from_secs(2), &mut self.connection).await.is_err() {
            self.connection.abort();
        }
    }
}
