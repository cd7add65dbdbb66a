//! The SMS gateway sink (`[[alerts.sms]]`): for the severities it is configured for, one POST
//! per phone the alert names (the people on duty, and those escalated to), the body being the
//! configured JSON template with `{phone}` and `{message}` filled in. Gateways are not
//! idempotent and templates are approved in advance, so: only 2xx counts, each phone is sent at
//! most once per alert even when another phone's send is retried, and the message is the short
//! Chinese one (cut to 200 characters). The token is never logged.

use super::{Alert, Sink};
use crate::config::SmsConfig;
use anyhow::Context;
use std::collections::HashSet;
use std::time::Duration;

/// Attempts per phone.
const ATTEMPTS: u32 = 3;
/// Characters of the message an SMS carries.
const MAX_CHARS: usize = 200;

#[derive(Debug)]
pub struct SmsSink {
    config: SmsConfig,
    client: reqwest::Client,
    retry_delay: Duration,
}

impl SmsSink {
    pub fn new(config: SmsConfig) -> anyhow::Result<SmsSink> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(SmsSink { config, client, retry_delay: Duration::from_millis(500) })
    }

    /// The request body for one phone: the template with JSON-escaped values.
    pub fn body(&self, phone: &str, message: &str) -> String {
        let escape = |text: &str| {
            let quoted = serde_json::Value::String(text.to_string()).to_string();
            quoted[1..quoted.len() - 1].to_string()
        };
        self.config.body.replace("{phone}", &escape(phone)).replace("{message}", &escape(message))
    }

    async fn post(&self, body: String) -> anyhow::Result<()> {
        let mut request = self.client.post(self.config.url.clone()).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        if let Some(token) = &self.config.token {
            request = request.bearer_auth(token);
        }
        let status = request.send().await.context("sending")?.status();
        anyhow::ensure!(status.is_success(), "gateway answered HTTP {status}");
        Ok(())
    }
}

/// The SMS text: the Chinese message (or English), cut to [`MAX_CHARS`].
fn text(alert: &Alert) -> String {
    let message = alert.messages.get("zh").map_or_else(|| alert.message(), String::as_str);
    let mut text: String = message.chars().take(MAX_CHARS).collect();
    if message.chars().count() > MAX_CHARS {
        text.push('…');
    }
    text
}

impl Sink for SmsSink {
    fn name(&self) -> String {
        self.config.name.clone()
    }

    async fn deliver(&mut self, alert: &Alert) -> anyhow::Result<()> {
        if !self.config.severities.contains(&alert.severity) || alert.mentions.is_empty() {
            return Ok(());
        }
        let message = text(alert);
        let mut sent: HashSet<&str> = HashSet::new();
        let mut failures = Vec::new();
        for attempt in 1..=ATTEMPTS {
            failures.clear();
            for phone in &alert.mentions {
                if sent.contains(phone.as_str()) {
                    continue;
                }
                match self.post(self.body(phone, &message)).await {
                    Ok(()) => {
                        sent.insert(phone);
                    }
                    Err(error) => failures.push(format!("{phone}: {error:#}")),
                }
            }
            if failures.is_empty() {
                return Ok(());
            }
            tracing::warn!(sink = %self.config.name, attempt, failed = failures.len(), "SMS attempt failed");
            tokio::time::sleep(self.retry_delay * attempt).await;
        }
        anyhow::bail!("SMS via {} not sent to {}", crate::alert::webhook::redacted(&self.config.url), failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;
    use std::sync::{Arc, Mutex};

    /// A gateway that fails the first request for `flaky` and records every body.
    async fn gateway(flaky: &'static str) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
        let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let record = seen.clone();
        let failed_once = Arc::new(Mutex::new(false));
        let app = axum::Router::new().route(
            "/send",
            axum::routing::post(move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<serde_json::Value>| {
                let (record, failed_once) = (record.clone(), failed_once.clone());
                async move {
                    assert_eq!(headers["authorization"], "Bearer t0ken");
                    let mut failed = failed_once.lock().unwrap();
                    if body["phone"] == flaky && !*failed {
                        *failed = true;
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    record.lock().unwrap().push(body);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let url = format!("http://{}/send", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    fn sink(url: &str) -> SmsSink {
        let config = SmsConfig {
            name: "sms".into(),
            url: url.parse().unwrap(),
            body: r#"{"phone": "{phone}", "template": "SMS_001", "params": {"msg": "{message}"}}"#.into(),
            token: Some("t0ken".into()),
            severities: vec!["alarm".into(), "danger".into()],
        };
        SmsSink { retry_delay: Duration::from_millis(10), ..SmsSink::new(config).unwrap() }
    }

    #[tokio::test]
    async fn each_phone_gets_one_message_even_when_another_is_retried() {
        let (url, seen) = gateway("13800000002").await;
        let mut alert = sample_alert("fired", 7.3);
        alert.mentions = vec!["13800000001".into(), "13800000002".into()];
        alert.messages.insert("zh".into(), "north-lane B7 墙体倾斜 \"7.3‰\"，红色预警".into());
        sink(&url).deliver(&alert).await.unwrap();
        let seen = seen.lock().unwrap();
        let phones: Vec<&str> = seen.iter().map(|b| b["phone"].as_str().unwrap()).collect();
        assert_eq!(phones, vec!["13800000001", "13800000002"], "no second SMS to the first phone");
        assert_eq!(seen[0]["params"]["msg"], "north-lane B7 墙体倾斜 \"7.3‰\"，红色预警", "quotes survive the template");
    }

    #[tokio::test]
    async fn only_the_configured_severities_and_named_people_get_sms() {
        let (url, seen) = gateway("none").await;
        let mut warning = sample_alert("fired", 2.1);
        warning.severity = "warning".into();
        warning.mentions = vec!["13800000001".into()];
        sink(&url).deliver(&warning).await.unwrap();
        sink(&url).deliver(&sample_alert("fired", 7.3)).await.unwrap();
        assert!(seen.lock().unwrap().is_empty(), "a warning, and an alert naming nobody, send no SMS");
    }
}
