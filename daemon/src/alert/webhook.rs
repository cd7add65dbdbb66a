//! The generic webhook sink: each alert event is POSTed as JSON ([`super::Alert`]). Any answer
//! other than 2xx, a timeout or a connection error is a failed attempt; attempts are retried
//! with exponential backoff up to `max_attempts`. The URL may carry a token, so it is logged
//! without its query string.

use super::{Alert, Sink};
use crate::backoff::Backoff;
use crate::config::WebhookConfig;
use crate::metrics::{Metrics, SinkLabel};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct WebhookSink {
    name: String,
    url: reqwest::Url,
    client: reqwest::Client,
    max_attempts: u32,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    label: SinkLabel,
}

impl WebhookSink {
    pub fn new(config: &WebhookConfig, metrics: Arc<Metrics>) -> anyhow::Result<WebhookSink> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("gridwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the webhook HTTP client")?;
        Ok(WebhookSink {
            name: config.name.clone(),
            url: config.url.clone(),
            client,
            max_attempts: config.max_attempts,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            label: Metrics::sink(&config.name),
            metrics,
        })
    }

    /// Replaces the retry delays (tests use short ones).
    pub fn with_backoff(mut self, backoff: Backoff) -> WebhookSink {
        self.backoff = backoff;
        self
    }

    async fn attempt(&self, alert: &Alert) -> anyhow::Result<()> {
        let response = self.client.post(self.url.clone()).json(alert).send().await?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            anyhow::bail!("answered HTTP {status}")
        }
    }
}

/// The URL without query or credentials, safe for logs.
pub fn redacted(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.to_string()
}

impl Sink for WebhookSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn deliver(&mut self, alert: &Alert) -> anyhow::Result<()> {
        self.backoff.reset();
        let mut attempt = 1;
        loop {
            match self.attempt(alert).await {
                Ok(()) => return Ok(()),
                Err(error) if attempt >= self.max_attempts => {
                    return Err(error.context(format!("POST {} failed {attempt} times", redacted(&self.url))));
                }
                Err(error) => {
                    self.metrics.alert_delivery_retries.get_or_create(&self.label).inc();
                    let delay = self.backoff.next_delay();
                    tracing::warn!(sink = %self.name, url = %redacted(&self.url), attempt, retry_in_ms = delay.as_millis() as u64, error = %format!("{error:#}"), "webhook attempt failed");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;
    use gridwatch_tests::WebhookReceiver;

    fn sink(url: reqwest::Url, max_attempts: u32, metrics: Arc<Metrics>) -> WebhookSink {
        let config = WebhookConfig { name: "office".into(), url, timeout: Duration::from_secs(2), max_attempts };
        WebhookSink::new(&config, metrics).unwrap().with_backoff(Backoff::new(Duration::from_millis(5), Duration::from_millis(20)))
    }

    #[tokio::test]
    async fn retries_until_the_receiver_answers_2xx() {
        let receiver = WebhookReceiver::start(vec![500, 503]).await;
        let metrics = Arc::new(Metrics::new());
        let mut sink = sink(receiver.url().parse().unwrap(), 5, metrics.clone());
        sink.deliver(&sample_alert("fired", 0.5)).await.unwrap();
        assert_eq!(receiver.requests(), 3, "two failures, then the delivery");
        assert_eq!(receiver.bodies().len(), 1, "only the accepted POST is recorded as received");
        assert_eq!(receiver.bodies()[0]["rule"], "tilt-danger");
        assert_eq!(metrics.alert_delivery_retries.get_or_create(&Metrics::sink("office")).get(), 2);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_and_says_so() {
        let receiver = WebhookReceiver::start(vec![500; 10]).await;
        let mut sink = sink(receiver.url().parse().unwrap(), 3, Arc::new(Metrics::new()));
        let err = sink.deliver(&sample_alert("fired", 0.5)).await.unwrap_err();
        assert_eq!(receiver.requests(), 3);
        assert!(format!("{err:#}").contains("failed 3 times: answered HTTP 500"), "{err:#}");
    }

    #[test]
    fn redaction_hides_tokens() {
        let url: reqwest::Url = "https://user:pw@hooks.example/send?key=SECRET".parse().unwrap();
        assert_eq!(redacted(&url), "https://hooks.example/send");
    }
}
