//! A device-like MQTT publisher for tests that keeps the external record: which readings the
//! broker acknowledged (PUBACK). Publishes one message at a time with QoS 1 and waits for its
//! PUBACK, so "acknowledged" is exact.

use anyhow::{bail, Context};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug)]
pub struct Publisher {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Progress>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Sent(u16),
    Acked(u16),
}

impl Publisher {
    pub async fn connect(port: u16, client_id: &str) -> anyhow::Result<Publisher> {
        Publisher::connect_as(port, client_id, None).await
    }

    /// Connects with a user and password (`None`: anonymously).
    pub async fn connect_as(port: u16, client_id: &str, login: Option<(&str, &str)>) -> anyhow::Result<Publisher> {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        let _ = tx.send(Progress::Sent(pkid));
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        let _ = tx.send(Progress::Acked(ack.pkid));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Ok(Publisher { client, events, task })
    }

    /// Publishes and waits (up to 3 s) for the broker's PUBACK; an error means the reading
    /// must not be counted as acknowledged.
    pub async fn publish_acked(&mut self, topic: &str, payload: String) -> anyhow::Result<()> {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.context("queueing the publish")?;
        let wait = async {
            let pkid = loop {
                match self.events.recv().await {
                    Some(Progress::Sent(pkid)) => break pkid,
                    Some(_) => {}
                    None => bail!("publisher connection ended"),
                }
            };
            loop {
                match self.events.recv().await {
                    Some(Progress::Acked(acked)) if acked == pkid => return Ok(()),
                    Some(_) => {}
                    None => bail!("publisher connection ended"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(3), wait).await.context("no PUBACK within 3 s")?
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
