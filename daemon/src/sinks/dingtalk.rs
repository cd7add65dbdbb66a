//! DingTalk (钉钉) custom robot: `POST …/robot/send?access_token=T&timestamp=MS&sign=S` with a
//! markdown message and `at.atMobiles`. With a signing secret, every attempt is signed at send
//! time: `S = urlencode(base64(HMAC-SHA256(key = secret, msg = MS + "\n" + secret)))` — a
//! retried message gets a fresh timestamp and signature. Success is `errcode == 0` (310000 is a
//! bad signature, 460101 a body too large, 90030 over the limit). Token and secret are never
//! logged.

use super::robot::{self, RateLimit};
use super::text::{self, Markup};
use super::Sink;
use crate::alert::Alert;
use crate::config::RobotConfig;
use base64::Engine as _;
use std::time::Duration;

/// DingTalk refuses bodies over 20 kB.
const MAX_BODY: usize = 18_000;

#[derive(Debug)]
pub struct DingTalkSink {
    config: RobotConfig,
    client: reqwest::Client,
    limit: RateLimit,
}

/// The `sign` parameter for a timestamp (before URL encoding).
pub fn sign(timestamp_ms: i64, secret: &str) -> String {
    let mac = crate::signing::hmac_sha256(secret.as_bytes(), format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac)
}

/// The URL for one attempt, signed at `now_ms` when a secret is configured.
fn signed_url(config: &RobotConfig, now_ms: i64) -> reqwest::Url {
    let mut url = config.url.clone();
    if let Some(secret) = &config.secret {
        url.query_pairs_mut().append_pair("timestamp", &now_ms.to_string()).append_pair("sign", &sign(now_ms, secret));
    }
    url
}

impl DingTalkSink {
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

    pub fn new(config: RobotConfig) -> anyhow::Result<DingTalkSink> {
        let client = super::no_redirects().timeout(Duration::from_secs(10)).build()?;
        Ok(DingTalkSink { config, client, limit: RateLimit::new(Duration::from_secs(600)) })
    }

    pub fn body(&self, title: &str, text: &str, mobiles: &[String]) -> serde_json::Value {
        let mentions: Vec<String> = mobiles.iter().map(|m| format!("@{m}")).collect();
        let text = robot::truncate(&format!("{text}\n\n{}", mentions.join(" ")), MAX_BODY);
        serde_json::json!({
            "msgtype": "markdown",
            "markdown": {"title": title, "text": text},
            "at": {"atMobiles": mobiles, "isAtAll": false}
        })
    }

    async fn send(&mut self, title: String, text: String, mobiles: Vec<String>, attempts: u32) -> anyhow::Result<()> {
        let body = self.body(&title, &text, &mobiles);
        let config = &self.config;
        // DingTalk checks the signature's time against its own clock: signed on the system clock,
        // also in the demo.
        robot::send("DingTalk", config, &self.client, &mut self.limit, &body, || signed_url(config, crate::clock::Clock::System.now()), attempts).await
    }

    async fn send_alert(&mut self, alert: &Alert, attempts: u32) -> anyhow::Result<()> {
        let wording = self.config.wording;
        let mobiles = robot::mentions(&self.config, &[alert]);
        self.send(text::title(alert, wording), text::message(alert, wording, Markup::Markdown), mobiles, attempts).await
    }
}

impl Sink for DingTalkSink {
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
        let wording = self.config.wording;
        let mobiles = robot::mentions(&self.config, alerts);
        let title = text::digest_title(alerts, wording);
        // Room for the @-mentions appended to the text.
        let max = MAX_BODY - 16 * mobiles.len() - 1024;
        let red = alerts.iter().any(|a| a.is_red());
        for (i, page) in text::digest(alerts, wording, Markup::Markdown, max).into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(self.limit.wait(red)).await;
            }
            self.send(title.clone(), page, mobiles.clone(), 1).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;
    use axum::extract::{Query, State};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<(HashMap<String, String>, serde_json::Value)>>>;

    /// A DingTalk stand-in: answers the first request with errcode `first` (310000 for a stale
    /// signature, 90030 for over the limit), accepts the rest; records query and body.
    async fn dingtalk(first: i64) -> (String, Seen) {
        let seen: Seen = Arc::default();
        let app = axum::Router::new()
            .route(
                "/robot/send",
                axum::routing::post(
                    move |State(seen): State<Seen>, Query(query): Query<HashMap<String, String>>, axum::Json(body): axum::Json<serde_json::Value>| async move {
                        let mut seen = seen.lock().unwrap();
                        seen.push((query, body));
                        let code = if seen.len() == 1 { first } else { 0 };
                        axum::Json(serde_json::json!({"errcode": code, "errmsg": if code == 0 { "ok" } else { "refused" }}))
                    },
                ),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let url = format!("http://{}/robot/send?access_token=TOKEN", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    #[tokio::test]
    async fn over_the_limit_the_message_waits_out_the_throttle_instead_of_failing() {
        let (url, seen) = dingtalk(90030).await;
        let config = RobotConfig {
            throttle_patience: None,
            name: "grid-5".into(),
            url: url.parse().unwrap(),
            secret: Some("SECabc".into()),
            mention_mobiles: vec![],
            wording: text::Wording::default(),
        };
        let mut sink = DingTalkSink::new(config).unwrap().with_throttle(Duration::from_millis(300));
        let started = std::time::Instant::now();
        sink.deliver(&sample_alert("fired", 7.31)).await.expect("delivered after the throttle");
        assert!(started.elapsed() >= Duration::from_millis(300), "it waited the throttle out");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_ne!(seen[0].0["timestamp"], seen[1].0["timestamp"], "re-signed for the new attempt");
    }

    #[tokio::test]
    async fn a_refused_attempt_is_retried_with_a_fresh_signature_and_mentions() {
        let (url, seen) = dingtalk(310000).await;
        let config = RobotConfig {
            throttle_patience: None,
            name: "grid-5".into(),
            url: url.parse().unwrap(),
            secret: Some("SECabc".into()),
            mention_mobiles: vec!["13800000000".into()],
            wording: text::Wording::default(),
        };
        let mut sink = DingTalkSink::new(config).unwrap();
        sink.deliver(&sample_alert("fired", 7.31)).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "errcode 310000 is a failure, and it was retried");
        for (query, _) in seen.iter() {
            let ts: i64 = query["timestamp"].parse().unwrap();
            assert!((crate::clock::Clock::System.now() - ts).abs() < 60_000);
            assert_eq!(query["sign"], sign(ts, "SECabc"), "signed at send time");
            assert_eq!(query["access_token"], "TOKEN");
        }
        assert_ne!(seen[0].0["timestamp"], seen[1].0["timestamp"], "each attempt has its own timestamp");
        let body = &seen[1].1;
        assert_eq!(body["msgtype"], "markdown");
        assert_eq!(body["at"]["atMobiles"][0], "13800000000");
        assert!(body["markdown"]["text"].as_str().unwrap().contains("@13800000000"));
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_and_secret_in_base64() {
        // Independently computed: printf '1700000000000\nSECabc' | openssl dgst -sha256 -hmac SECabc -binary | base64
        assert_eq!(sign(1_700_000_000_000, "SECabc"), "jcUpW0QmtKduN03n4JqQ0PBosVjqnM8gU7fIIvsDmCM=");
    }
}
