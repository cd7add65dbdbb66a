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

/// Something that delivers alerts somewhere.
pub trait Sink: Send + 'static {
    /// Label in logs and metrics.
    fn name(&self) -> String;
    /// Delivers one alert, retrying as the sink sees fit; an error means it gave up.
    fn deliver(&mut self, alert: &Alert) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// How long until the sink may send again (a rate limit); zero when it may send now.
    fn wait(&self) -> std::time::Duration {
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
