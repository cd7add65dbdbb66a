//! WeCom (企业微信) group robot: `POST …/cgi-bin/webhook/send?key=KEY` with a markdown message
//! (≤ 4096 bytes), or a text message (≤ 2048 bytes) when mobiles are to be @-mentioned —
//! markdown cannot mention, and a text message shows markdown as typed, so it is written plain
//! ([`Markup::Plain`]). A digest longer than the limit goes out as several messages, and so do the
//! links of an alert with many people on duty (never cut). Success is HTTP 200 with `errcode == 0`. The key is a secret: only
//! the redacted URL is ever logged.

use super::robot::{self, RateLimit};
use super::text::{self, Markup};
use super::Sink;
use crate::alert::Alert;
use crate::config::RobotConfig;
use std::time::Duration;

/// Bytes of a markdown message's content.
const MARKDOWN_MAX: usize = 4096;
/// Bytes of a text message's content.
const TEXT_MAX: usize = 2048;

#[derive(Debug)]
pub struct WeComSink {
    config: RobotConfig,
    client: reqwest::Client,
    limit: RateLimit,
}

impl WeComSink {
    /// Replaces how long the robot throttles after an over-limit answer (tests use short ones).
    pub fn with_throttle(mut self, throttle: Duration) -> Self {
        self.limit = RateLimit::new(throttle);
        self
    }

    /// Keeps the robot's rate limit in `store`, going on with what it used before a restart.
    pub fn kept_in(mut self, store: &crate::store::Store) -> Self {
        let limit = std::mem::replace(&mut self.limit, RateLimit::new(Duration::ZERO));
        self.limit = limit.kept_in(store, &self.config.name);
        self
    }

    pub fn new(config: RobotConfig) -> anyhow::Result<WeComSink> {
        let client = super::no_redirects().timeout(Duration::from_secs(10)).build()?;
        Ok(WeComSink { config, client, limit: RateLimit::new(Duration::from_secs(60)) })
    }

    /// The request body for a message written in `markup` (plain when mobiles are mentioned).
    pub fn body(&self, text: &str, mentions: &[String]) -> serde_json::Value {
        if mentions.is_empty() {
            serde_json::json!({"msgtype": "markdown", "markdown": {"content": robot::truncate(text, MARKDOWN_MAX)}})
        } else {
            serde_json::json!({"msgtype": "text", "text": {"content": robot::truncate(text, TEXT_MAX), "mentioned_mobile_list": mentions}})
        }
    }

    /// The markup and size limit of the messages for these mentions.
    fn shape(mentions: &[String]) -> (Markup, usize) {
        if mentions.is_empty() {
            (Markup::Markdown, MARKDOWN_MAX)
        } else {
            (Markup::Plain, TEXT_MAX)
        }
    }

    async fn send(&mut self, text: String, mentions: &[String], attempts: u32) -> anyhow::Result<()> {
        let body = self.body(&text, mentions);
        let url = self.config.url.clone();
        robot::send("WeCom", &self.config, &self.client, &mut self.limit, &body, || url.clone(), attempts).await
    }

    /// One alert; when everyone's link does not fit one message, the rest follow in messages of
    /// their own (without mentioning anyone again), each waiting for the rate limit.
    async fn send_alert(&mut self, alert: &Alert, attempts: u32) -> anyhow::Result<()> {
        let mentions = robot::mentions(&self.config, &[alert]);
        let (markup, max) = Self::shape(&mentions);
        for (i, page) in text::message_pages(alert, self.config.wording, markup, max).into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(self.limit.wait(alert.is_red())).await;
            }
            self.send(page, if i == 0 { &mentions } else { &[] }, attempts).await?;
        }
        Ok(())
    }
}

impl Sink for WeComSink {
    fn name(&self) -> String {
        self.config.name.clone()
    }

    fn wait(&self, red: bool) -> Duration {
        self.limit.wait(red)
    }

    fn counted_attempts(&self) -> Option<super::CountedAttempts> {
        Some(robot::counted_attempts())
    }

    async fn attempt(&mut self, alert: &Alert) -> anyhow::Result<()> {
        self.send_alert(alert, 1).await
    }

    async fn deliver(&mut self, alert: &Alert) -> anyhow::Result<()> {
        self.send_alert(alert, robot::ATTEMPTS).await
    }

    /// A digest in as many messages as its size takes, each waiting for the rate limit; one
    /// attempt, as for [`Sink::attempt`]: the channel counts the digest's attempts and tries it
    /// again after its backoff.
    async fn deliver_many(&mut self, alerts: &[&Alert]) -> anyhow::Result<()> {
        let mentions = robot::mentions(&self.config, alerts);
        let (markup, max) = Self::shape(&mentions);
        let red = alerts.iter().any(|a| a.is_red());
        for (i, page) in text::digest(alerts, self.config.wording, markup, max).into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(self.limit.wait(red)).await;
            }
            self.send(page, &mentions, 1).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;
    use std::sync::{Arc, Mutex};

    /// A WeCom stand-in that answers HTTP 200 with the given errcode and records bodies.
    async fn wecom(errcode: i64) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
        let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/cgi-bin/webhook/send",
            axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let record = record.clone();
                async move {
                    record.lock().unwrap().push(body);
                    axum::Json(serde_json::json!({"errcode": errcode, "errmsg": "x"}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let url = format!("http://{}/cgi-bin/webhook/send?key=SECRET-KEY", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    fn config(url: &str, mention: bool) -> RobotConfig {
        RobotConfig {
            throttle_patience: None,
            name: "grid-3".into(),
            url: url.parse().unwrap(),
            secret: None,
            mention_mobiles: if mention { vec!["13900000000".into()] } else { vec![] },
            wording: text::Wording::default(),
        }
    }

    #[tokio::test]
    async fn a_robot_that_stays_throttled_fails_the_message_after_bounded_waits() {
        let (url, seen) = wecom(45009).await;
        let config = RobotConfig {
            throttle_patience: None,
            name: "grid-3".into(),
            url: url.parse().unwrap(),
            secret: None,
            mention_mobiles: vec![],
            wording: text::Wording::default(),
        };
        let mut sink = WeComSink::new(config).unwrap().with_throttle(Duration::from_millis(50));
        let error = sink.deliver(&sample_alert("fired", 7.31)).await.unwrap_err();
        assert!(format!("{error:#}").contains("robot throttled: errcode 45009"), "{error:#}");
        assert_eq!(seen.lock().unwrap().len(), 6, "three throttle waits, then three ordinary attempts");
        assert!(!format!("{error:#}").contains("key="), "the key is never in an error: {error:#}");
    }

    #[tokio::test]
    async fn markdown_message_in_chinese() {
        let (url, seen) = wecom(0).await;
        let mut alert = sample_alert("fired", 7.31);
        alert.messages.insert("zh".into(), "墙体倾斜7.31‰，红色预警".into());
        WeComSink::new(config(&url, false)).unwrap().deliver(&alert).await.unwrap();
        let body = seen.lock().unwrap()[0].clone();
        assert_eq!(body["msgtype"], "markdown");
        assert!(body["markdown"]["content"].as_str().unwrap().contains("墙体倾斜7.31‰，红色预警"), "{body}");
    }

    #[tokio::test]
    async fn mentions_use_a_text_message() {
        let (url, seen) = wecom(0).await;
        WeComSink::new(config(&url, true)).unwrap().deliver(&sample_alert("fired", 7.31)).await.unwrap();
        let body = seen.lock().unwrap()[0].clone();
        assert_eq!((body["msgtype"].as_str(), body["text"]["mentioned_mobile_list"][0].as_str()), (Some("text"), Some("13900000000")));
    }

    #[tokio::test]
    async fn http_200_with_a_nonzero_errcode_is_a_failure_and_the_key_is_not_in_the_error() {
        let (url, seen) = wecom(93000).await;
        let err = WeComSink::new(config(&url, false)).unwrap().deliver(&sample_alert("fired", 7.31)).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("errcode 93000") && text.contains("failed 3 times"), "{text}");
        assert!(!text.contains("SECRET-KEY"), "{text}");
        assert_eq!(seen.lock().unwrap().len(), 3);
    }
}
