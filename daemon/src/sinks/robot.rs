//! What the WeCom and DingTalk group robots have in common: a JSON POST whose success is HTTP
//! 2xx *and* `errcode == 0` in the answer, a limit of 20 messages a minute per robot (kept in
//! the store across restarts with the robot's own throttle, [`RateLimit::kept_in`]) of which
//! the last [`KEPT_FOR_RED`] are kept for red alarms, message length limits. The texts themselves are written by [`super::text`].

use crate::alert::Alert;
use crate::config::RobotConfig;
use crate::store::Store;
use anyhow::Context;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Messages a robot takes per minute (WeCom and DingTalk both; DingTalk throttles for 10 min
/// past it).
pub const PER_MINUTE: usize = 20;
/// The stretch of time the limit counts: a minute and a margin. A robot counts messages as they
/// arrive, and the network delays some more than others: the 21st message sent 60.001 s after
/// the first was refused "over the limit" (45009), and the robot then held everything back for
/// a minute (an outside tester's robot).
pub const WINDOW: Duration = Duration::from_secs(62);
/// Of those, the sends only an alert about a red incident may use: a burst of clears and blue
/// notices that used up the minute held a red back for up to 60 s (an outside tester). What
/// else arrives meanwhile waits and goes out as one digest.
pub const KEPT_FOR_RED: usize = 3;

/// Attempts per message (each one counts against the rate limit).
pub const ATTEMPTS: u32 = 3;
/// Wait before a retry, times the attempt number.
pub const RETRY_DELAY: Duration = Duration::from_millis(500);

/// A robot's attempts at one alert when the channel counts them in the store
/// ([`super::Sink::counted_attempts`]): [`COUNTED_ATTEMPTS`] in all, across restarts, waiting
/// 1 s doubling to 16 s between them — about half a minute of a robot that fails (three
/// attempts 0.5 s and 1 s apart lost every alarm of a 20-second outage from the group; an
/// outside tester). Each counts against the rate limit.
pub fn counted_attempts() -> super::CountedAttempts {
    super::CountedAttempts {
        in_all: COUNTED_ATTEMPTS,
        in_all_for_red: COUNTED_ATTEMPTS_FOR_RED,
        backoff: crate::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(16)),
    }
}

/// Attempts at one alert across restarts ([`counted_attempts`]).
pub const COUNTED_ATTEMPTS: u32 = 6;
/// Attempts at a red alarm: about two minutes. A robot that failed for 40 s lost a red that
/// had gone first and spent its six attempts in half a minute, while the orange sent with it
/// arrived (an outside tester); a missed red is worse than a few copies of it.
pub const COUNTED_ATTEMPTS_FOR_RED: u32 = 12;

/// The answers with which a robot says it is over its limit: DingTalk 90030 (it then
/// throttles for 10 minutes), WeCom 45009.
pub const THROTTLED: [i64; 2] = [90030, 45009];
/// How many times one message waits out a throttle before it counts as failed.
const THROTTLE_WAITS: u32 = 3;

/// A robot said it is over its limit (errcode 90030 / 45009).
#[derive(Debug, thiserror::Error)]
#[error("robot throttled: errcode {0}")]
pub struct Throttled(pub i64);

/// A sliding one-minute window of sends, and a throttle the robot imposed.
#[derive(Debug)]
pub struct RateLimit {
    sent: VecDeque<Instant>,
    /// How long the robot throttles after an over-limit answer.
    throttle: Duration,
    throttled_until: Option<Instant>,
    /// Where the limit is kept across restarts, under the robot's channel name.
    kept: Option<(Store, String)>,
}

impl RateLimit {
    /// A limit for a robot that throttles this long after an over-limit answer.
    pub fn new(throttle: Duration) -> RateLimit {
        RateLimit { sent: VecDeque::new(), throttle, throttled_until: None, kept: None }
    }

    /// The limit kept in `store` for channel `sink`: it goes on with the sends of the last minute
    /// and a throttle still in force before a restart, and keeps what it uses from now on. Kept
    /// times are on the wall clock: one ahead of it (a clock stepped back) counts as now, and a
    /// throttle at most its full length from now — a limit is never read as longer than it can be.
    pub fn kept_in(mut self, store: &Store, sink: &str) -> RateLimit {
        match store.robot_limit(sink) {
            Ok(kept) => {
                let (now_ms, now) = (store.now_ms(), Instant::now());
                let at = |ms: i64| now.checked_sub(Duration::from_millis(u64::try_from(now_ms - ms).unwrap_or(0))).unwrap_or(now);
                self.sent = kept.sent_ms.iter().filter(|&&ms| now_ms - ms < WINDOW.as_millis() as i64).map(|&ms| at(ms)).collect();
                self.throttled_until = kept
                    .throttled_until_ms
                    .filter(|&until| until > now_ms)
                    .map(|until| now + Duration::from_millis(u64::try_from(until - now_ms).unwrap_or(0)).min(self.throttle));
            }
            Err(error) => store.report_failure("reading a robot's rate limit (it starts empty)", &error),
        }
        self.kept = Some((store.clone(), sink.to_string()));
        self
    }

    /// How long until the next message may go (zero: now); a message about a red incident
    /// (`red`) may use the sends [kept for it](KEPT_FOR_RED). A throttle holds back every message.
    pub fn wait(&self, red: bool) -> Duration {
        let throttled = self.throttled_until.map_or(Duration::ZERO, |until| until.saturating_duration_since(Instant::now()));
        let allowed = if red { PER_MINUTE } else { PER_MINUTE - KEPT_FOR_RED };
        // The sends are in order; once `allowed` of them are within the minute, the next message
        // waits until the oldest of those leaves it (a send older than a minute waits for nothing).
        let window = match self.sent.len().checked_sub(allowed) {
            Some(oldest_counted) => (self.sent[oldest_counted] + WINDOW).saturating_duration_since(Instant::now()),
            None => Duration::ZERO,
        };
        window.max(throttled)
    }

    /// The robot answered "over the limit": hold back for its throttle time.
    pub async fn throttled(&mut self) {
        self.throttled_until = Some(Instant::now() + self.throttle);
        if let Some((store, sink)) = &self.kept {
            let until = store.now_ms().saturating_add(self.throttle.as_millis() as i64);
            if let Err(error) = store.record_robot_throttle(sink, until).await {
                store.report_failure("keeping a robot's throttle", &error);
            }
        }
    }

    /// A message goes to the robot now.
    pub async fn record(&mut self) {
        let now = Instant::now();
        while self.sent.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            self.sent.pop_front();
        }
        self.sent.push_back(now);
        if let Some((store, sink)) = &self.kept {
            if let Err(error) = store.record_robot_send(sink, store.now_ms()).await {
                store.report_failure("keeping a robot's rate limit", &error);
            }
        }
    }
}

/// Sends `body` with up to `attempts` attempts, each counted against the rate limit (waiting
/// out a throttle is no attempt: the robot took nothing); `url` is built for each attempt
/// (DingTalk signs every one at its own send time). Errors name the robot by its redacted URL
/// only.
pub async fn send(
    kind: &str,
    config: &RobotConfig,
    client: &reqwest::Client,
    limit: &mut RateLimit,
    body: &serde_json::Value,
    url: impl Fn() -> reqwest::Url,
    attempts: u32,
) -> anyhow::Result<()> {
    let mut attempt = 1;
    let mut throttle_waits = 0;
    loop {
        limit.record().await;
        match post(client, url(), body).await {
            Ok(()) => return Ok(()),
            // Over the limit, with a failover channel that can take it sooner: give it up.
            Err(error) if error.downcast_ref::<Throttled>().is_some() && config.throttle_patience.is_some_and(|patience| patience < limit.throttle) => {
                limit.throttled().await;
                return Err(error.context(format!("{kind} robot {} throttles us for {} s", crate::redact::redacted(&config.url), limit.throttle.as_secs())));
            }
            // Over the limit: not a failure of the message. Wait the throttle out (alerts
            // queueing meanwhile go out together as one digest) and send it again.
            Err(error) if error.downcast_ref::<Throttled>().is_some() && throttle_waits < THROTTLE_WAITS => {
                throttle_waits += 1;
                limit.throttled().await;
                // The robot's throttle: as long as the minute's window, or longer.
                tracing::warn!(sink = %config.name, wait_secs = limit.wait(true).as_secs(), "{kind} robot throttles us; the message waits");
                tokio::time::sleep(limit.wait(true)).await;
            }
            Err(error) if attempt >= attempts => {
                return Err(error.context(format!("{kind} robot {} failed {attempt} times", crate::redact::redacted(&config.url))))
            }
            Err(error) => {
                tracing::warn!(sink = %config.name, attempt, error = %format!("{error:#}"), "{kind} attempt failed");
                tokio::time::sleep(RETRY_DELAY * attempt).await;
                attempt += 1;
            }
        }
    }
}

/// Posts `body` and checks both the HTTP status and the robot's `errcode`.
pub async fn post(client: &reqwest::Client, url: reqwest::Url, body: &serde_json::Value) -> anyhow::Result<()> {
    let response = client.post(url).json(body).send().await.context("sending")?;
    super::taken(&response)?;
    let text = response.text().await.unwrap_or_default();
    let answer: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("answer is not JSON: {text:.200}"))?;
    match answer.get("errcode").and_then(serde_json::Value::as_i64) {
        Some(0) => Ok(()),
        Some(code) if THROTTLED.contains(&code) => Err(Throttled(code).into()),
        Some(code) => anyhow::bail!("robot refused: errcode {code} ({})", answer.get("errmsg").and_then(|m| m.as_str()).unwrap_or("")),
        None => anyhow::bail!("answer has no errcode: {text:.200}"),
    }
}

/// Cuts `text` to at most `max_bytes` on a character boundary, marking the cut.
pub fn truncate(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The mobiles to @-mention: the robot's own list, then the people the alerts name.
pub fn mentions(config: &RobotConfig, alerts: &[&Alert]) -> Vec<String> {
    let mut mobiles = config.mention_mobiles.clone();
    for mobile in alerts.iter().flat_map(|a| &a.mentions) {
        if !mobiles.contains(mobile) {
            mobiles.push(mobile.clone());
        }
    }
    mobiles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_characters_whole() {
        let text = "墙体倾斜".repeat(1000);
        let cut = truncate(&text, 4096);
        assert!(cut.len() <= 4096 && cut.ends_with('…'));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_sends_of_a_minute_are_kept_for_red_alarms() {
        let mut limit = RateLimit::new(Duration::from_secs(60));
        for _ in 0..PER_MINUTE - KEPT_FOR_RED {
            assert_eq!(limit.wait(false), Duration::ZERO);
            limit.record().await;
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let seventeen = Duration::from_secs(17);
        assert_eq!(limit.wait(false), WINDOW - seventeen, "until the first send leaves the window");
        for _ in 0..KEPT_FOR_RED {
            assert_eq!(limit.wait(true), Duration::ZERO, "a red alarm goes now");
            limit.record().await;
        }
        assert_eq!(limit.wait(true), WINDOW - seventeen, "the twenty-first message of a window waits, red or not");
        tokio::time::advance(WINDOW - seventeen).await;
        assert_eq!(limit.wait(true), Duration::ZERO, "the first send left the window");
        assert!(limit.wait(false) > Duration::ZERO, "nineteen sends in the window, of which the newest three were kept for reds");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(limit.wait(false), Duration::ZERO, "sixteen sends in the window");
    }

    #[tokio::test]
    async fn a_restart_goes_on_with_the_last_minute_s_sends_and_the_robot_s_throttle() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ten_minutes = Duration::from_secs(600);
        let mut limit = RateLimit::new(ten_minutes).kept_in(&store, "dingtalk");
        for _ in 0..PER_MINUTE {
            limit.record().await;
        }
        // A restart: the twenty sends of this minute still count; another robot's do not.
        assert!(RateLimit::new(ten_minutes).kept_in(&store, "dingtalk").wait(true) > Duration::from_secs(58));
        assert_eq!(RateLimit::new(ten_minutes).kept_in(&store, "wecom").wait(true), Duration::ZERO);
        limit.throttled().await;
        let wait = RateLimit::new(ten_minutes).kept_in(&store, "dingtalk").wait(true);
        assert!(wait > Duration::from_secs(590) && wait <= ten_minutes, "the throttle goes on: {wait:?}");
        // A throttle kept a day ahead (the clock stepped back since): at most its length.
        store.record_robot_throttle("wecom", store.now_ms() + 86_400_000).await.unwrap();
        assert!(RateLimit::new(Duration::from_secs(60)).kept_in(&store, "wecom").wait(false) <= Duration::from_secs(60));
    }
}
