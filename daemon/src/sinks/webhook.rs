//! The generic webhook sink: each alert event is POSTed as JSON ([`crate::alert::Alert`]). Any answer
//! other than 2xx, a timeout or a connection error is a failed attempt; attempts are retried
//! with exponential backoff up to `max_attempts` — by the channel, which counts them in the store
//! so that a restart goes on with the count ([`Sink::counted_attempts`]). The URL may carry a token, so it is logged
//! without its query string.
//!
//! With a `secret`, every attempt carries `X-Gridwatch-Timestamp: <ms>` and
//! `X-Gridwatch-Signature: sha256=<hex HMAC-SHA256(secret, "<ms>." + body)>`, so the receiver can
//! check the body came from this box and reject replays older than it likes.

use super::{CountedAttempts, Sink};
use crate::alert::Alert;
use crate::backoff::Backoff;
use crate::config::WebhookConfig;
use crate::metrics::{Metrics, SinkLabel};
use crate::redact::redacted;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct WebhookSink {
    name: String,
    url: reqwest::Url,
    client: reqwest::Client,
    max_attempts: u32,
    secret: Option<String>,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    label: SinkLabel,
}

impl WebhookSink {
    pub fn new(config: &WebhookConfig, metrics: Arc<Metrics>) -> anyhow::Result<WebhookSink> {
        let client = super::no_redirects()
            .timeout(config.timeout)
            .user_agent(concat!("gridwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the webhook HTTP client")?;
        Ok(WebhookSink {
            name: config.name.clone(),
            url: config.url.clone(),
            client,
            max_attempts: config.max_attempts,
            secret: config.secret.clone(),
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

    async fn post(&self, alert: &Alert) -> anyhow::Result<()> {
        let body = serde_json::to_vec(alert)?;
        let mut request = self.client.post(self.url.clone()).header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.secret {
            // The receiver checks the time against its own clock: signed on the system clock,
            // also in the demo.
            let timestamp = crate::clock::Clock::System.now();
            request = request.header("X-Gridwatch-Timestamp", timestamp.to_string()).header("X-Gridwatch-Signature", signature(secret, timestamp, &body));
        }
        let response = request.body(body).send().await?;
        super::taken(&response)
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>." + body).
pub fn signature(secret: &str, timestamp_ms: i64, body: &[u8]) -> String {
    let mut message = format!("{timestamp_ms}.").into_bytes();
    message.extend_from_slice(body);
    format!("sha256={}", crate::signing::hex(&crate::signing::hmac_sha256(secret.as_bytes(), &message)))
}

impl Sink for WebhookSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn counted_attempts(&self) -> Option<CountedAttempts> {
        Some(CountedAttempts { in_all: self.max_attempts, in_all_for_red: self.max_attempts, backoff: self.backoff.clone() })
    }

    async fn attempt(&mut self, alert: &Alert) -> anyhow::Result<()> {
        self.post(alert).await.with_context(|| format!("POST {}", redacted(&self.url)))
    }

    /// All `max_attempts` at once, not counted in the store (`gridwatch selftest`, digests).
    async fn deliver(&mut self, alert: &Alert) -> anyhow::Result<()> {
        self.backoff.reset();
        let mut attempt = 1;
        loop {
            match self.post(alert).await {
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
        let config = WebhookConfig { name: "office".into(), url, secret: None, timeout: Duration::from_secs(2), max_attempts };
        WebhookSink::new(&config, metrics).unwrap().with_backoff(Backoff::new(Duration::from_millis(5), Duration::from_millis(20)))
    }

    #[tokio::test]
    async fn a_signed_webhook_carries_a_signature_the_receiver_can_verify() {
        type Seen = Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, axum::body::Bytes)>>>;
        let seen: Seen = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let record = record.clone();
                async move { record.lock().unwrap().push((headers, body)) }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let config = WebhookConfig {
            name: "hub".into(),
            url: url.parse().unwrap(),
            secret: Some("s3cret-shared".into()),
            timeout: Duration::from_secs(2),
            max_attempts: 1,
        };
        WebhookSink::new(&config, Arc::new(Metrics::new())).unwrap().deliver(&sample_alert("fired", 0.5)).await.unwrap();
        let (headers, body) = seen.lock().unwrap().remove(0);
        let timestamp: i64 = headers["x-gridwatch-timestamp"].to_str().unwrap().parse().unwrap();
        // The receiver's check, written out: HMAC-SHA256(secret, "<ts>." + body), hex.
        let mut message = format!("{timestamp}.").into_bytes();
        message.extend_from_slice(&body);
        let expected = format!("sha256={}", crate::signing::hex(&crate::signing::hmac_sha256(b"s3cret-shared", &message)));
        assert_eq!(headers["x-gridwatch-signature"].to_str().unwrap(), expected);
        assert_ne!(signature("another-secret", timestamp, &body), expected, "another key gives another signature");
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["rule"], "tilt-danger");
        assert_eq!(headers["content-type"], "application/json");
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

    /// A receiver moved (`301` to its new address): the alert is not delivered — following the
    /// redirect turned the POST into a GET that the new address answered 200, and the office
    /// got nothing while the channel counted it delivered (an outside tester).
    #[tokio::test]
    async fn a_redirect_is_no_delivery() {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(|| async { axum::response::Redirect::permanent("/new-hook") }))
            .route("/new-hook", axum::routing::any(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let mut sink = sink(url.parse().unwrap(), 1, Arc::new(Metrics::new()));
        let err = sink.deliver(&sample_alert("fired", 0.5)).await.unwrap_err();
        assert!(format!("{err:#}").contains("answered HTTP 308 Permanent Redirect to /new-hook"), "{err:#}");
    }

    #[test]
    fn redaction_hides_tokens() {
        let url: reqwest::Url = "https://user:pw@hooks.example/send?key=SECRET".parse().unwrap();
        assert_eq!(redacted(&url), "https://hooks.example/send");
    }
}
