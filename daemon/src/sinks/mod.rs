//! Sinks: where alerts go out. Each configured channel — [`console`], [`webhook`], [`mqtt`],
//! the group robots ([`wecom`], [`dingtalk`], sharing [`robot`]), [`sms`], the [`siren`] — is a
//! [`Sink`] run by its own task ([`channel::spawn_sink`]) that drains that channel's pending
//! deliveries from the store; [`SinkSet`] builds them and routes failovers ([`channel`]).
//! What people read is written at send time by [`text`].

pub mod channel;
pub mod console;
pub mod dingtalk;
pub mod mqtt;
pub mod robot;
pub mod siren;
pub mod sms;
pub mod text;
pub mod webhook;
pub mod wecom;

use crate::alert::Alert;
use std::future::Future;

pub use channel::{SinkContext, SinkSet};

/// A sink's answer when it stopped retrying an alert for a red alarm behind it on its channel
/// ([`Sink::deliver_making_way`]): the delivery is still pending.
#[derive(Debug)]
pub struct MadeWay;

impl std::fmt::Display for MadeWay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped for a red alarm; the attempts go on after it")
    }
}

impl std::error::Error for MadeWay {}

/// An HTTP client for posting alerts: it follows no redirect. Following one turns a POST into a
/// GET (301, 302) that the new address may answer 200 — an alert counted delivered that nobody
/// got (an outside tester's webhook moved to https).
pub fn no_redirects() -> reqwest::ClientBuilder {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none())
}

/// Whether a receiver took what was posted: a 2xx; anything else is an error that says what
/// came back, with where a redirect pointed (the channel's URL must be changed to it).
pub fn taken(response: &reqwest::Response) -> anyhow::Result<()> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    if status.is_redirection() {
        let to = response.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok()).unwrap_or("?");
        anyhow::bail!("answered HTTP {status} to {}: alerts are not posted to a redirect; configure the new address", to.chars().take(200).collect::<String>());
    }
    anyhow::bail!("answered HTTP {status}")
}

/// The attempts a channel makes at one delivery of a sink that leaves them to it.
#[derive(Debug, Clone)]
pub struct CountedAttempts {
    /// Attempts in all, across restarts (`max_attempts`).
    pub in_all: u32,
    /// Attempts in all at a red alarm: a robot, whose attempts no operator sets, gives a red
    /// more ([`robot::counted_attempts`]); a webhook holds to its `max_attempts`.
    pub in_all_for_red: u32,
    /// The waits between them.
    pub backoff: crate::backoff::Backoff,
}

/// Something that delivers alerts somewhere.
pub trait Sink: Send + 'static {
    /// Label in logs and metrics.
    fn name(&self) -> String;
    /// Delivers one alert, retrying as the sink sees fit; an error means it gave up.
    fn deliver(&mut self, alert: &Alert) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// For a sink whose attempts the channel makes and counts in the store, so that a restart
    /// goes on with the count instead of starting again (a receiver slower than the timeout,
    /// with power cuts, was POSTed one alert dozens of times while the channel's later alerts
    /// waited): how many attempts in all, and the waits between them. Such a sink's
    /// [`Sink::attempt`] makes one attempt. `None`: the sink retries inside `deliver`.
    fn counted_attempts(&self) -> Option<CountedAttempts> {
        None
    }
    /// [`Sink::deliver`] for a sink that retries by itself, able to see whether a red alarm
    /// waits behind `alert` on its channel: it may then stop after a failed attempt and answer
    /// [`MadeWay`] — the channel sends the red and delivers `alert` again after it, and the sink
    /// goes on from the attempts it kept. By default it does not stop.
    fn deliver_making_way(&mut self, alert: &Alert, _red: channel::RedBehind) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.deliver(alert)
    }

    /// One attempt at delivering `alert`, for a sink with [`Sink::counted_attempts`].
    fn attempt(&mut self, alert: &Alert) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.deliver(alert)
    }

    /// How long until the sink may send again (a rate limit); zero when it may send now. A
    /// message about a red incident (`red`) may have sends kept for it.
    fn wait(&self, _red: bool) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Delivers alerts that queued up behind a rate limit as one message (a digest). By
    /// default, one by one.
    fn deliver_many(&mut self, alerts: &[&Alert]) -> impl Future<Output = anyhow::Result<()>> + Send {
        async move {
            for alert in alerts {
                self.deliver(alert).await?;
            }
            Ok(())
        }
    }

    /// Called once the queue is closed and drained.
    fn finish(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}
