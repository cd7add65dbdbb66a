//! The SMS gateway sink (`[[alerts.sms]]`): for the severities it is configured for, one POST
//! per phone the alert names (the people on duty, and those escalated to), the body being the
//! configured JSON template with `{phone}` and `{message}` filled in. Gateways are not
//! idempotent and templates are approved in advance, so: only 2xx counts, each phone is sent at
//! most once per message even when another phone's send is retried or the box restarts, and a
//! phone whose gateway hangs gets at most [`ATTEMPTS`] in all (counted in the store,
//! `store/sms_sends.rs`). The token is never logged.
//!
//! What an SMS says: the level, every incident number it is about, a short sentence (values
//! rounded, local time) and the incident's link — a worker can act from it. Alerts that go out
//! together (a house's sensors after its group window, a digest) make one SMS per house and
//! phone, not one per box.
//!
//! Invariants: a phone gets at most `per_phone_per_hour` SMS in any hour from each of four
//! budgets — new alarms, new red (danger) alarms, and the reminders and escalations of each — so
//! that neither an hour of oranges nor an ignored incident's reminders keep a new alarm from the
//! phone; the budgets' sends are kept in the store, so restarts do not start them afresh. An
//! alert for a phone at its cap is not lost but owed, and goes out in that phone's next SMS,
//! which [`Owed`]'s timer sends as soon as the hour lets it. Owed alerts are kept in the store
//! until their summary went out: a restart meanwhile sends it from the new start, and a summary
//! the gateway refused waits for the phone's next SMS.

use super::channel::RedBehind;
use super::text::{self, Wording};
use super::{MadeWay, Sink};
use crate::alert::{Alert, Event};
use crate::config::SmsConfig;
use crate::store::{SmsProgress, Store};
use anyhow::Context;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Attempts per phone, across restarts.
const ATTEMPTS: u32 = 4;
/// Characters of the sentence an SMS carries (the number and link come on top).
const MAX_CHARS: usize = 120;
const HOUR: Duration = Duration::from_secs(3600);
/// Appended to a phone to name its budget for red alarms in the [`Ledger`].
const RED_BUDGET: &str = " red";
/// Appended (after [`RED_BUDGET`], if red) to name the budget of reminders and escalations.
const FOLLOW_UP_BUDGET: &str = " follow-up";

/// The budget an SMS about `alerts` to `phone` draws from.
fn budget_of(phone: &str, alerts: &[&Alert]) -> String {
    // Red counts against a budget of its own: an hour's oranges must not use up the phone's SMS
    // before a collapsing house (an outside tester's red reached no phone after 60 houses went
    // orange). Reminders and escalations too: one ignored incident's reminders used up the
    // phone's hour, and a new red house was not texted (another outside tester).
    let red = alerts.iter().any(|a| a.severity == gridwatch_rules::Severity::Danger && a.event != Event::Cleared);
    let follow_up = alerts.iter().all(|a| matches!(a.event, Event::Reminder | Event::Escalated));
    format!("{phone}{}{}", if red { RED_BUDGET } else { "" }, if follow_up { FOLLOW_UP_BUDGET } else { "" })
}

/// The phone a budget is of.
fn phone_of(budget: &str) -> &str {
    let budget = budget.strip_suffix(FOLLOW_UP_BUDGET).unwrap_or(budget);
    budget.strip_suffix(RED_BUDGET).unwrap_or(budget)
}

/// Per budget ([`budget_of`]): when its SMS of the last hour went, and what waits for its next
/// one.
#[derive(Debug, Default)]
struct Ledger {
    sent: HashMap<String, VecDeque<Instant>>,
    /// Budget -> what waits for its next SMS, oldest first.
    owed: BTreeMap<String, Vec<OwedAlert>>,
}

/// One owed alert's line in a summary, and its link.
type OwedLine = (String, Option<String>);

/// An alert a phone did not get for its cap: one line about it, its link, and its row in the
/// store (none: it could not be kept, and a restart loses it).
#[derive(Debug)]
struct OwedAlert {
    line: String,
    link: Option<String>,
    row: Option<i64>,
}

/// The alerts of one house (site and building, or the sensor when it has no building), its
/// clears apart.
type House<'a> = ((String, Option<String>, bool), Vec<&'a Alert>);

impl Ledger {
    /// Whether `phone` may get an SMS now (forgetting sends older than an hour).
    fn allows(&mut self, phone: &str, cap: u32) -> bool {
        let now = Instant::now();
        let sent = self.sent.entry(phone.to_string()).or_default();
        while sent.front().is_some_and(|t| now.duration_since(*t) >= HOUR) {
            sent.pop_front();
        }
        sent.len() < cap as usize
    }

    fn record(&mut self, phone: &str) {
        self.sent.entry(phone.to_string()).or_default().push_back(Instant::now());
    }

    /// When the first phone that is owed something may get an SMS again.
    fn next_free(&self, cap: u32) -> Option<Instant> {
        self.owed
            .keys()
            .filter_map(|phone| {
                let sent = self.sent.get(phone)?;
                Some(if sent.len() < cap as usize { Instant::now() } else { *sent.get(sent.len() - cap as usize)? + HOUR })
            })
            .min()
    }
}

/// Sends the owed summaries when the cap lets them go.
type Owed = tokio::task::JoinHandle<()>;

#[derive(Debug)]
pub struct SmsSink {
    config: SmsConfig,
    client: reqwest::Client,
    /// What each phone got, and the attempts each took (`sms_sends`).
    store: Store,
    /// The wait before a phone's second attempt; each later wait is four times the one before
    /// (1 s, 4 s, 16 s: a gateway back within about 20 s still gets the alarm out).
    retry_delay: Duration,
    ledger: Arc<Mutex<Ledger>>,
    timer: Option<Owed>,
    /// The roster in force, to give each phone its member's own link (none: the group link).
    roster: Option<crate::dispatch::InForce>,
}

impl Drop for SmsSink {
    fn drop(&mut self) {
        if let Some(timer) = &self.timer {
            timer.abort();
        }
    }
}

impl SmsSink {
    pub fn new(config: SmsConfig, store: Store) -> anyhow::Result<SmsSink> {
        let client = super::no_redirects().timeout(config.timeout).build()?;
        let ledger = Arc::new(Mutex::new(kept_ledger(&store, &config.name)));
        let mut sink = SmsSink { config, client, store, retry_delay: Duration::from_secs(1), ledger, timer: None, roster: None };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Summaries owed before a restart go out as soon as their hour lets them.
            sink.arm_timer();
        }
        Ok(sink)
    }

    /// Gives each phone its member's own link, from the roster in force: an action from the SMS
    /// is then that member's, and asks for no name (a group link did; an outside tester).
    pub fn naming_links_from(mut self, roster: crate::dispatch::InForce) -> SmsSink {
        self.roster = Some(roster);
        self
    }

    /// `phone`'s member's own link to the incident the SMS speaks of ([`lead`]), if the roster
    /// names them.
    fn own_link(&self, phone: &str, alerts: &[&Alert]) -> Option<String> {
        let dispatch = self.roster.as_ref()?.get();
        let member = dispatch.roster.members.iter().find(|m| m.phone == phone)?;
        lead(alerts)?.member_links.get(&member.name).cloned()
    }

    /// Records that `budget` was used now, in the ledger and in the store.
    async fn use_budget(&self, budget: &str) {
        record_use(&self.store, &self.config.name, budget).await;
    }

    /// The request body for one phone: the template with JSON-escaped values.
    pub fn body(&self, phone: &str, message: &str) -> String {
        body(&self.config, phone, message)
    }

    /// How far the SMS about `event_ids` went to `phone` before (nothing, for alerts that were
    /// never journaled); a store that cannot say counts as nothing: sent again rather than not.
    async fn progress(&self, phone: &str, event_ids: &[i64]) -> SmsProgress {
        match self.store.sms_progress(&self.config.name, phone, event_ids.to_vec()).await {
            Ok(progress) => progress,
            Err(error) => {
                self.store.report_failure("reading what a phone got by SMS", &error);
                SmsProgress::default()
            }
        }
    }

    /// Sends `message` to each phone with the attempts it had so far, retrying the failures
    /// until each phone has had [`ATTEMPTS`]; every attempt is counted in the store before it is
    /// made and every send marked once the gateway took it, so a restart goes on from there —
    /// and so does the channel after a red alarm that waited behind a failed attempt (`red`):
    /// the send stops with [`MadeWay`] (a gateway hanging on one phone held up the channel's
    /// next message for a minute; an outside tester).
    async fn send(&self, phones: Vec<(String, u32, String)>, event_ids: &[i64], red: Option<&RedBehind>) -> anyhow::Result<()> {
        let messages: HashMap<String, String> = phones.iter().map(|(phone, _, message)| (phone.clone(), message.clone())).collect();
        let mut pending: Vec<(String, u32, String)> = phones.into_iter().map(|(phone, made, _)| (phone, made, String::new())).collect();
        let mut given_up = Vec::new();
        loop {
            let (spent, left): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(_, made, _)| *made >= ATTEMPTS);
            given_up.extend(spent);
            pending = left;
            let Some(fewest) = pending.iter().map(|(_, made, _)| *made).min() else { break };
            if fewest > 0 {
                if let Some(red) = red.filter(|_| !event_ids.is_empty()) {
                    if red.waits().await {
                        tracing::info!(sink = %self.config.name, "a red alarm waits: it is texted first, this SMS's attempts go on after it");
                        return Err(MadeWay.into());
                    }
                }
                // Waits go on from the attempts so far: a restart neither repeats the short
                // first ones nor skips one.
                tokio::time::sleep(self.retry_delay * 4u32.pow(fewest - 1)).await;
            }
            for (phone, made, _) in pending.iter_mut() {
                if let Err(error) = self.store.count_sms_attempt(&self.config.name, phone, event_ids.to_vec()).await {
                    self.store.report_failure("counting an SMS attempt", &error);
                }
                *made += 1;
            }
            // Every phone at once, each marked sent as soon as the gateway took it: a gateway
            // that hangs on one phone holds up no other, and a power cut while it hangs does not
            // lose the others' sends (they were texted again after the restart; an outside tester).
            let answers = futures::future::join_all(pending.iter().map(|(phone, _, _)| async {
                let message = messages.get(phone).map_or("", String::as_str);
                let answer = post(&self.client, &self.config, body(&self.config, phone, message)).await;
                if answer.is_ok() {
                    if let Err(error) = self.store.mark_sms_sent(&self.config.name, phone, event_ids.to_vec()).await {
                        self.store.report_failure("recording an SMS sent", &error);
                    }
                }
                answer
            }))
            .await;
            let mut sent = Vec::new();
            for ((phone, made, last_error), answer) in pending.iter_mut().zip(answers) {
                match answer {
                    Ok(()) => sent.push(phone.clone()),
                    Err(error) => {
                        tracing::warn!(sink = %self.config.name, phone = %phone, attempt = *made, error = %format!("{error:#}"), "SMS attempt failed");
                        *last_error = format!("{error:#}");
                    }
                }
            }
            pending.retain(|(phone, _, _)| !sent.contains(phone));
        }
        let failures: Vec<String> = given_up.iter().map(|(phone, made, error)| format!("{phone} ({made} attempts): {error}")).collect();
        anyhow::ensure!(failures.is_empty(), "SMS via {} not sent to {}", crate::redact::redacted(&self.config.url), failures.join("; "));
        Ok(())
    }

    /// One house's alerts to their phones: one SMS each, or owed past the cap. A phone that got
    /// these alerts before a restart is not sent them again.
    async fn house(&mut self, alerts: &[&Alert], red: Option<&RedBehind>) -> anyhow::Result<()> {
        let mut phones: Vec<String> = Vec::new();
        for phone in alerts.iter().flat_map(|a| &a.mentions) {
            if !phones.contains(phone) {
                phones.push(phone.clone());
            }
        }
        let event_ids: Vec<i64> = alerts.iter().filter_map(|a| a.event_id).collect();
        let mut unsent = Vec::new();
        let mut spent = Vec::new();
        for phone in phones {
            let progress = self.progress(&phone, &event_ids).await;
            if progress.sent {
                tracing::info!(sink = %self.config.name, phone = %phone, "this phone got this SMS before the restart; not sent again");
            } else if progress.attempts >= ATTEMPTS {
                spent.push(format!("{phone} ({} attempts before a restart)", progress.attempts));
            } else {
                unsent.push((phone, progress.attempts));
            }
        }
        let mut now = Vec::new();
        let mut used = Vec::new();
        let mut owing: Vec<(String, Vec<OwedLine>)> = Vec::new();
        {
            let mut ledger = self.ledger.lock().map_err(|_| anyhow::anyhow!("SMS ledger poisoned"))?;
            for (phone, made) in unsent {
                let budget = budget_of(&phone, alerts);
                if made > 0 {
                    // Its attempts began before a restart or a red alarm: its budget is used.
                    let message = sms_text(alerts, self.config.wording, self.own_link(&phone, alerts).as_deref());
                    now.push((phone, made, message));
                } else if ledger.allows(&budget, self.config.per_phone_per_hour) {
                    ledger.record(&budget);
                    used.push(budget);
                    let message = sms_text(alerts, self.config.wording, self.own_link(&phone, alerts).as_deref());
                    now.push((phone, made, message));
                } else {
                    tracing::info!(sink = %self.config.name, phone = %phone, "SMS cap reached for this phone; the alert goes in its next SMS");
                    let lines = alerts.iter().map(|alert| (owed_line(alert, self.config.wording), alert.link.as_deref().map(crate::links::shorten))).collect();
                    owing.push((budget, lines));
                }
            }
        }
        for budget in used {
            self.use_budget(&budget).await;
        }
        for (budget, lines) in owing {
            self.owe(budget, lines).await;
        }
        self.arm_timer();
        let sent = self.send(now, &event_ids, red).await;
        anyhow::ensure!(spent.is_empty(), "SMS via {} given up for {}", crate::redact::redacted(&self.config.url), spent.join("; "));
        sent
    }

    /// Owes `lines` (line, link) to `budget`'s next SMS, kept in the store first.
    async fn owe(&self, budget: String, lines: Vec<OwedLine>) {
        let rows = self.store.owe_sms(&self.config.name, &budget, lines.clone()).await.unwrap_or_else(|error| {
            self.store.report_failure("keeping an alert owed to a phone's next SMS (a restart would lose it)", &error);
            Vec::new()
        });
        let Ok(mut ledger) = self.ledger.lock() else { return };
        let owed = ledger.owed.entry(budget).or_default();
        for (i, (line, link)) in lines.into_iter().enumerate() {
            owed.push(OwedAlert { line, link, row: rows.get(i).copied() });
        }
    }

    /// Starts the timer that sends owed summaries, unless it runs.
    fn arm_timer(&mut self) {
        if self.timer.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let has_owed = self.ledger.lock().is_ok_and(|l| !l.owed.is_empty());
        if !has_owed {
            return;
        }
        let (ledger, client, config, store) = (self.ledger.clone(), self.client.clone(), self.config.clone(), self.store.clone());
        self.timer = Some(tokio::spawn(async move { send_owed(ledger, client, config, store).await }));
    }
}

/// The ledger of channel `sink` as the store kept it: each budget's sends of the last hour (on
/// the wall clock; one ahead of it, a clock stepped back, counts as now).
fn kept_ledger(store: &Store, sink: &str) -> Ledger {
    let mut ledger = Ledger::default();
    let (now_ms, now) = (store.now_ms(), Instant::now());
    match store.sms_budget_sends(sink, now_ms) {
        Ok(sends) => {
            for (budget, at_ms) in sends {
                let ago = Duration::from_millis(u64::try_from(now_ms - at_ms).unwrap_or(0));
                ledger.sent.entry(budget).or_default().push_back(now.checked_sub(ago).unwrap_or(now));
            }
        }
        Err(error) => store.report_failure("reading the SMS sent in the last hour (each phone's budgets start empty)", &error),
    }
    match store.sms_owed(sink) {
        Ok(owed) => {
            for (row, budget, line, link) in owed {
                ledger.owed.entry(budget).or_default().push(OwedAlert { line, link, row: Some(row) });
            }
        }
        Err(error) => store.report_failure("reading the alerts owed to phones' next SMS (their summaries are lost)", &error),
    }
    ledger
}

/// Keeps a use of `budget` in the store.
async fn record_use(store: &Store, sink: &str, budget: &str) {
    if let Err(error) = store.record_sms_budget_send(sink, budget, store.now_ms()).await {
        store.report_failure("keeping an SMS budget's use (a restart would start it afresh)", &error);
    }
}

/// How long a summary the gateway refused waits before the phone's budget is tried again.
const REFUSED_SUMMARY_WAIT: Duration = Duration::from_secs(30);

/// Sends each owed phone its summary as soon as its hour allows, until nothing is owed. A summary
/// the gateway refused is owed again, ahead of what came since.
async fn send_owed(ledger: Arc<Mutex<Ledger>>, client: reqwest::Client, config: SmsConfig, store: Store) {
    loop {
        let Some(at) = ledger.lock().ok().and_then(|l| l.next_free(config.per_phone_per_hour)) else { return };
        tokio::time::sleep_until(at).await;
        let due: Vec<(String, Vec<OwedAlert>)> = {
            let Ok(mut ledger) = ledger.lock() else { return };
            let budgets: Vec<String> = ledger.owed.keys().cloned().collect();
            let mut due = Vec::new();
            for budget in budgets {
                if ledger.allows(&budget, config.per_phone_per_hour) {
                    ledger.record(&budget);
                    due.push((budget.clone(), ledger.owed.remove(&budget).unwrap_or_default()));
                }
            }
            due
        };
        let mut refused = false;
        for (budget, owed) in due {
            record_use(&store, &config.name, &budget).await;
            let phone = phone_of(&budget);
            match post(&client, &config, body(&config, phone, &owed_text(&owed, config.wording))).await {
                Ok(()) => {
                    if let Err(error) = store.settle_sms_owed(owed.iter().filter_map(|o| o.row).collect()).await {
                        store.report_failure("forgetting the alerts of an SMS summary sent (a restart sends it again)", &error);
                    }
                }
                Err(error) => {
                    tracing::error!(sink = %config.name, phone = %phone, error = %format!("{error:#}"), "owed SMS summary not sent; it waits for the phone's next SMS");
                    refused = true;
                    let Ok(mut ledger) = ledger.lock() else { return };
                    let since = ledger.owed.remove(&budget).unwrap_or_default();
                    ledger.owed.insert(budget, owed.into_iter().chain(since).collect());
                }
            }
        }
        if refused {
            tokio::time::sleep(REFUSED_SUMMARY_WAIT).await;
        }
    }
}

fn body(config: &SmsConfig, phone: &str, message: &str) -> String {
    let escape = |text: &str| {
        let quoted = serde_json::Value::String(text.to_string()).to_string();
        quoted[1..quoted.len() - 1].to_string()
    };
    config.body.replace("{phone}", &escape(phone)).replace("{message}", &escape(message))
}

async fn post(client: &reqwest::Client, config: &SmsConfig, body: String) -> anyhow::Result<()> {
    let mut request = client.post(config.url.clone()).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
    if let Some(token) = &config.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.context("sending")?;
    super::taken(&response).context("the gateway")?;
    let Some(success) = &config.success else { return Ok(()) };
    let answer = response.text().await.context("reading the gateway's answer")?;
    gateway_took(success, &answer)
}

/// Whether the gateway's answer (HTTP 2xx) says it took the SMS: gateways answer 200 to an SMS
/// they refuse (a rate limit, an unapproved template, a phone number they do not serve), and
/// only the answer's `success_field` tells. A refusal is a failed attempt, like a 5xx.
fn gateway_took(success: &crate::config::SmsSuccess, answer: &str) -> anyhow::Result<()> {
    let shown: String = answer.chars().take(300).collect();
    let json: serde_json::Value = serde_json::from_str(answer)
        .with_context(|| format!("the gateway's answer is not JSON, so `{}` cannot say it took the SMS: {shown}", success.field))?;
    let held = match json.pointer(&success.field) {
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(serde_json::Value::Null) | None => anyhow::bail!("the gateway's answer has no `{}` (the SMS counts as not sent): {shown}", success.field),
        Some(other) => other.to_string(),
    };
    anyhow::ensure!(held == success.value, "the gateway refused the SMS: `{}` is `{held}`, not `{}`: {shown}", success.field, success.value);
    Ok(())
}

fn cut(sentence: &str) -> String {
    let mut text: String = sentence.chars().take(MAX_CHARS).collect();
    if sentence.chars().count() > MAX_CHARS {
        text.push('…');
    }
    text
}

/// The alert an SMS about several speaks of: the worst, the first of equals — a red among them
/// is what the SMS says, with its instruction (an orange that came first spoke for a red of the
/// same house).
fn lead<'a>(alerts: &[&'a Alert]) -> Option<&'a Alert> {
    alerts.iter().copied().min_by_key(|a| std::cmp::Reverse(a.severity))
}

/// The SMS about one house: "【红色预警】#12 … 请立即到场查看… 12月3日 23:28 处理：<link>"; for
/// several alerts of the house, every number, and the level, sentence, what to do and link of
/// the worst ([`lead`]) — the link `own_link` when the phone's member has one, else the
/// incident's.
pub fn sms_text(alerts: &[&Alert], wording: Wording, own_link: Option<&str>) -> String {
    let Some(lead) = lead(alerts) else { return String::new() };
    // Each incident once, however many of its events the message carries (a digest).
    let mut numbers: Vec<String> = Vec::new();
    for number in alerts.iter().filter_map(|a| a.incident_id).map(|id| format!("#{id}")) {
        if !numbers.contains(&number) {
            numbers.push(number);
        }
    }
    let at = super::text::shown_time(lead, wording);
    let house = lead.building.is_some();
    let level = match (lead.event, wording.chinese) {
        (Event::Cleared, true) => "已恢复".to_string(),
        (Event::Cleared, false) => "back to normal".to_string(),
        _ => text::level(lead, wording),
    };
    let (level, more, act) = match (wording.chinese, house) {
        (true, true) => (format!("【{level}】"), format!("（本楼共{}条）", alerts.len()), "处理："),
        (true, false) => (format!("【{level}】"), format!("（共{}条）", alerts.len()), "处理："),
        (false, true) => (format!("[{level}] "), format!(" ({} alerts in this house)", alerts.len()), "Act: "),
        (false, false) => (format!("[{level}] "), format!(" ({} alerts)", alerts.len()), "Act: "),
    };
    // Nothing is left to do on an incident a person resolved: the link is to look.
    let act = match (lead.incident_resolved, wording.chinese) {
        (true, true) => "查看：",
        (true, false) => "View: ",
        (false, _) => act,
    };
    let more = if alerts.len() > 1 { more } else { String::new() };
    let mut parts = vec![
        format!("{level}{}", numbers.join(" ")),
        format!("{}{more}", cut(&text::sentence(lead, wording))),
        text::what_to_do(lead, wording).to_string(),
        at,
    ];
    // The short form of the link: a Chinese SMS part holds 70 characters.
    parts.extend(own_link.or(lead.link.as_deref()).map(|l| format!("{act}{}", crate::links::shorten(l))));
    parts.join(" ")
}

/// One owed alert in a summary: "#15 north-lane B9 橙色预警 12月3日 23:40"; a red with its
/// instruction ("… 红色预警 12月3日 23:40 请立即到场查看，必要时疏散住户").
fn owed_line(alert: &Alert, wording: Wording) -> String {
    let at = super::text::shown_time(alert, wording);
    let house = text::house(alert);
    let number = alert.incident_id.map(|id| format!("#{id} ")).unwrap_or_default();
    // Without its full stop: the summary joins its lines with "；" and ends with "。".
    let act = text::red_instruction(alert, wording).map(|act| format!(" {}", act.trim_end_matches(['。', '.']))).unwrap_or_default();
    format!("{number}{house} {} {at}{act}", text::level(alert, wording))
}

/// The SMS that carries what waited for the cap, with the latest incident's link.
fn owed_text(owed: &[OwedAlert], wording: Wording) -> String {
    let lines: Vec<&str> = owed.iter().map(|o| o.line.as_str()).collect();
    let link = owed.iter().rev().find_map(|o| o.link.clone()).unwrap_or_default();
    if wording.chinese {
        format!("【汇总】此前{}条告警因短信限额未单独发送：{}。处理：{link}", owed.len(), lines.join("；"))
    } else {
        format!("[summary] {} alerts held back by the SMS limit: {}. Act: {link}", owed.len(), lines.join("; "))
    }
}

impl Sink for SmsSink {
    fn name(&self) -> String {
        self.config.name.clone()
    }

    async fn deliver(&mut self, alert: &Alert) -> anyhow::Result<()> {
        self.text(&[alert], None).await
    }

    async fn deliver_making_way(&mut self, alert: &Alert, red: RedBehind) -> anyhow::Result<()> {
        self.text(&[alert], Some(&red)).await
    }

    async fn deliver_many(&mut self, alerts: &[&Alert]) -> anyhow::Result<()> {
        self.text(alerts, None).await
    }
}

impl SmsSink {
    /// One SMS per house and phone. A clear names nobody: it goes to the phones this channel
    /// texted about its incident, whatever its severity (the phones that got the alarm hear it is
    /// over, also when the alarm came here as a failover), and to nobody else.
    async fn text(&mut self, alerts: &[&Alert], red: Option<&RedBehind>) -> anyhow::Result<()> {
        let names_nobody = |alert: &Alert| alert.event == Event::Cleared && alert.mentions.is_empty();
        // A clear goes to whoever was texted, whatever severity the incident ended at (an alarm
        // that fell back to a warning before it cleared still owes its phones the clear).
        let texted: Vec<&Alert> = alerts
            .iter()
            .copied()
            .filter(|a| !names_nobody(a) && self.config.severities.iter().any(|s| s == a.severity.as_str()) && !a.mentions.is_empty())
            .collect();
        let mut clears: Vec<Alert> = Vec::new();
        for alert in alerts.iter().copied().filter(|a| names_nobody(a)) {
            let Some(incident) = alert.incident_id else { continue };
            let mut phones = match self.store.sms_phones_told(&self.config.name, incident).await {
                Ok(phones) => phones,
                Err(error) => {
                    self.store.report_failure("reading who was texted about an incident (its clear is not texted)", &error);
                    Vec::new()
                }
            };
            // Its alarm in this very message (both waited in a building's group window): the
            // phones texted now hear it is over too (an outside tester's lost 【已恢复】).
            for phone in texted.iter().filter(|a| a.incident_id == Some(incident)).flat_map(|a| &a.mentions) {
                if !phones.contains(phone) {
                    phones.push(phone.clone());
                }
            }
            if !phones.is_empty() {
                clears.push(Alert { mentions: phones, ..alert.clone() });
            }
        }
        let mut houses: Vec<House<'_>> = Vec::new();
        // Clears go in an SMS of their own, after the alarms: folded into an alarm's SMS, the
        // "【已恢复】" would not be read.
        for alert in texted.iter().copied().chain(clears.iter()) {
            let key = (alert.site.clone(), alert.building.clone().or_else(|| Some(alert.sensor.clone())), alert.event == Event::Cleared);
            match houses.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push(alert),
                None => houses.push((key, vec![alert])),
            }
        }
        for (_, group) in houses {
            self.house(&group, red).await?;
        }
        Ok(())
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

    /// A sink on a store of its own (kept by the caller: what the phones got lives there).
    fn sink(url: &str, state: &tempfile::TempDir) -> SmsSink {
        capped_sink(url, state, 6)
    }

    /// [`sink`] with `per_phone_per_hour` SMS a phone's budget allows.
    fn capped_sink(url: &str, state: &tempfile::TempDir, per_phone_per_hour: u32) -> SmsSink {
        let config = SmsConfig {
            name: "sms".into(),
            url: url.parse().unwrap(),
            body: r#"{"phone": "{phone}", "template": "SMS_001", "params": {"msg": "{message}"}}"#.into(),
            token: Some("t0ken".into()),
            severities: vec!["alarm".into(), "danger".into()],
            per_phone_per_hour,
            wording: text::Wording::default(),
            success: None,
            timeout: Duration::from_secs(10),
        };
        let mut sink = SmsSink::new(config, Store::open(state.path()).unwrap()).unwrap();
        sink.retry_delay = Duration::from_millis(10);
        sink
    }

    #[tokio::test]
    async fn each_phone_gets_one_message_even_when_another_is_retried() {
        let state = tempfile::tempdir().unwrap();
        let (url, seen) = gateway("13800000002").await;
        let mut alert = sample_alert("fired", 7.3);
        alert.mentions = vec!["13800000001".into(), "13800000002".into()];
        alert.messages.insert("zh".into(), "north-lane B7 墙体倾斜 \"7.3‰\"，红色预警".into());
        (alert.incident_id, alert.link) = (Some(12), Some("http://box/incident/12?exp=1&sig=ab".into()));
        sink(&url, &state).deliver(&alert).await.unwrap();
        let seen = seen.lock().unwrap();
        let phones: Vec<&str> = seen.iter().map(|b| b["phone"].as_str().unwrap()).collect();
        assert_eq!(phones, vec!["13800000001", "13800000002"], "no second SMS to the first phone");
        assert_eq!(
            seen[0]["params"]["msg"],
            "【红色预警】#12 north-lane B7 墙体倾斜 \"7.3‰\"，红色预警 请立即到场查看，必要时疏散住户。 11月23日 08:00 处理：http://box/incident/12?exp=1&sig=ab",
            "number, local time and link; quotes survive the template"
        );
    }

    /// A gateway that answers HTTP 200 to everything, as Aliyun's does: with `{"Code":
    /// "isv.BUSINESS_LIMIT_CONTROL"}` to the first `refusals` requests, `{"Code": "OK"}` after.
    async fn refusing_gateway(refusals: usize) -> (String, Arc<Mutex<usize>>) {
        let requests: Arc<Mutex<usize>> = Arc::default();
        let counted = requests.clone();
        let app = axum::Router::new().route(
            "/send",
            axum::routing::post(move || {
                let counted = counted.clone();
                async move {
                    let mut requests = counted.lock().unwrap();
                    *requests += 1;
                    let code = if *requests <= refusals { "isv.BUSINESS_LIMIT_CONTROL" } else { "OK" };
                    axum::Json(serde_json::json!({"Code": code, "Message": "触发小时级流控Permits:5", "RequestId": "F655A8D5"}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let url = format!("http://{}/send", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, requests)
    }

    fn taken_when_code_is_ok(mut sink: SmsSink) -> SmsSink {
        sink.config.success = Some(crate::config::SmsSuccess { field: "/Code".into(), value: "OK".into() });
        sink
    }

    #[tokio::test]
    async fn a_gateway_s_refusal_inside_http_200_is_retried_and_not_counted_as_sent() {
        let state = tempfile::tempdir().unwrap();
        let (url, requests) = refusing_gateway(2).await;
        let alert = house_alarm("house-07", 12);
        taken_when_code_is_ok(sink(&url, &state)).deliver(&alert).await.unwrap();
        assert_eq!(*requests.lock().unwrap(), 3, "two refusals, then the SMS the gateway took");

        let state = tempfile::tempdir().unwrap();
        let (url, requests) = refusing_gateway(usize::MAX).await;
        let error = taken_when_code_is_ok(sink(&url, &state)).deliver(&alert).await.unwrap_err();
        assert_eq!(*requests.lock().unwrap(), ATTEMPTS as usize);
        let error = format!("{error:#}");
        assert!(error.contains("not sent to 13800000001") && error.contains("`/Code` is `isv.BUSINESS_LIMIT_CONTROL`, not `OK`"), "{error}");
    }

    #[test]
    fn a_gateway_s_answer_is_read_where_the_configuration_points() {
        let tencent = crate::config::SmsSuccess { field: "/Response/SendStatusSet/0/Code".into(), value: "Ok".into() };
        assert!(gateway_took(&tencent, r#"{"Response":{"SendStatusSet":[{"Code":"Ok","Message":"send success"}]}}"#).is_ok());
        let refused = gateway_took(&tencent, r#"{"Response":{"SendStatusSet":[{"Code":"LimitExceeded.PhoneNumberDailyLimit"}]}}"#);
        assert!(format!("{:#}", refused.unwrap_err()).contains("LimitExceeded.PhoneNumberDailyLimit"));
        let numeric = crate::config::SmsSuccess { field: "/code".into(), value: "0".into() };
        assert!(gateway_took(&numeric, r#"{"code": 0, "msg": "success"}"#).is_ok());
        assert!(gateway_took(&numeric, r#"{"code": 1007, "msg": "余额不足"}"#).is_err());
        assert!(gateway_took(&numeric, r#"{"msg": "success"}"#).is_err(), "an answer without the field is no proof");
        assert!(gateway_took(&numeric, "OK").is_err(), "nor is an answer that is not JSON");
    }

    /// Each phone's SMS carries its member's own short link (an action from it is theirs, and
    /// asks for no name); a phone the roster does not name gets the incident's group link.
    #[tokio::test]
    async fn each_phone_gets_its_member_s_own_link() {
        let state = tempfile::tempdir().unwrap();
        let (url, seen) = gateway("none").await;
        let roster =
            "[[grid]]\nid = \"grid-3\"\n[[member]]\nid = \"wang\"\nname = \"王芳\"\nrole = \"worker\"\nphone = \"13800000001\"\ngrids = [\"grid-3\"]\n";
        let dispatch = crate::dispatch::Dispatch::parse("roster.toml", roster).unwrap();
        let mut alert = house_alarm("house-07", 12);
        alert.mentions = vec!["13800000001".into(), "13800000009".into()];
        alert.link = Some("http://box/incident/12?exp=1796000000&sig=00112233445566778899aabbccddeeff".into());
        alert.member_links.insert("王芳".into(), "http://box/incident/12?m=wang&exp=1796000000&sig=ffeeddccbbaa99887766554433221100".into());
        sink(&url, &state).naming_links_from(dispatch.into()).deliver(&alert).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        let text_to = |phone: &str| seen.iter().find(|b| b["phone"] == phone).unwrap()["params"]["msg"].as_str().unwrap().to_string();
        assert!(text_to("13800000001").ends_with(&format!("处理：{}", crate::links::shorten(&alert.member_links["王芳"]))), "{}", text_to("13800000001"));
        assert!(text_to("13800000001").ends_with(".wang"));
        assert!(text_to("13800000009").ends_with(&format!("处理：{}", crate::links::shorten(alert.link.as_deref().unwrap()))), "{}", text_to("13800000009"));
    }

    fn house_alarm(sensor: &str, incident: i64) -> Alert {
        let mut alert = sample_alert("fired", 7.3);
        alert.sensor = sensor.into();
        alert.mentions = vec!["13800000001".into()];
        (alert.incident_id, alert.link) = (Some(incident), Some(format!("http://box/incident/{incident}")));
        alert
    }

    #[tokio::test]
    async fn a_house_s_alarms_make_one_sms_with_every_number() {
        let state = tempfile::tempdir().unwrap();
        let (url, seen) = gateway("none").await;
        let (a, b, c) = (house_alarm("house-07", 12), house_alarm("house-08", 13), house_alarm("house-09", 14));
        sink(&url, &state).deliver_many(&[&a, &b, &c]).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one SMS for one house");
        let text = seen[0]["params"]["msg"].as_str().unwrap();
        assert!(text.starts_with("【红色预警】#12 #13 #14 "), "{text}");
        assert!(text.contains("（本楼共3条）") && text.ends_with("处理：http://box/incident/12"), "{text}");
    }

    #[test]
    fn a_digest_of_one_probe_s_events_names_its_incident_once_and_no_house() {
        let mut probe = house_alarm("canal-01", 14);
        probe.building = None;
        let text = sms_text(&[&probe, &probe, &probe], Wording { chinese: true, time_zone: chrono_tz::Asia::Shanghai }, None);
        assert!(text.starts_with("【红色预警】#14 "), "{text}");
        assert!(text.contains("（共3条）") && !text.contains("#14 #14") && !text.contains("本楼"), "{text}");
    }

    /// A house's orange came first and a red of the same house second: the SMS spoke of the
    /// orange ("请尽快到场查看"). It speaks of the red, with its instruction and link; and a red
    /// owed to a summary keeps its instruction there, an orange stays short.
    #[test]
    fn a_red_speaks_for_its_house_s_sms_and_keeps_its_instruction_in_a_summary() {
        let mut orange = house_alarm("house-08", 13);
        (orange.severity, orange.colour) = (gridwatch_rules::Severity::Alarm, "orange".into());
        let red = house_alarm("house-07", 12);
        let wording = Wording::default();
        let text = sms_text(&[&orange, &red], wording, None);
        assert!(
            text.starts_with("【红色预警】#13 #12 north-lane B7（house-07）墙体倾斜7.30°，红色预警（本楼共2条） 请立即到场查看，必要时疏散住户。 "),
            "{text}"
        );
        assert!(text.ends_with("处理：http://box/incident/12"), "{text}");
        assert_eq!(owed_line(&red, wording), "#12 north-lane B7 红色预警 11月23日 08:00 请立即到场查看，必要时疏散住户");
        assert_eq!(owed_line(&orange, wording), "#13 north-lane B7 橙色预警 11月23日 08:00");
        let english = Wording { chinese: false, ..wording };
        assert_eq!(owed_line(&red, english), "#12 north-lane B7 danger 23 Nov 08:00 Go and look now; evacuate if needed");
    }

    /// A device fault's SMS says so, not "【黄色预警】" like a house's warning.
    #[test]
    fn a_device_fault_s_sms_says_device_fault() {
        let mut fault = house_alarm("house-07", 5);
        (fault.severity, fault.colour, fault.audience) = (gridwatch_rules::Severity::Warning, "yellow".into(), crate::alert::Audience::Installer);
        let text = sms_text(&[&fault], Wording::default(), None);
        assert!(text.starts_with("【设备故障】#5 ") && text.contains(" 请安装人员检查设备和线路。 "), "{text}");
        assert_eq!(owed_line(&fault, Wording::default()), "#5 north-lane B7 设备故障 11月23日 08:00");
    }

    /// Moves a paused clock an hour on, then lets real sockets carry the owed summary: until the
    /// gateway has seen `requests`, or a second of polls has passed.
    async fn an_hour_on_until(seen: &Mutex<Vec<serde_json::Value>>, requests: usize) {
        tokio::time::advance(Duration::from_secs(3601)).await;
        for _ in 0..200 {
            if seen.lock().unwrap().len() == requests {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_hourly_cap_alarms_wait_for_the_phone_s_next_sms() {
        let state = tempfile::tempdir().unwrap();
        let (url, seen) = gateway("none").await;
        let mut sink = capped_sink(&url, &state, 2);
        for (i, building) in ["B1", "B2", "B3", "B4"].into_iter().enumerate() {
            let mut alert = house_alarm("house-01", 20 + i as i64);
            alert.building = Some(building.into());
            sink.deliver(&alert).await.unwrap();
        }
        assert_eq!(seen.lock().unwrap().len(), 2, "the cap holds");
        an_hour_on_until(&seen, 3).await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "the two held back went out together, not lost");
        assert_eq!(
            seen[2]["params"]["msg"],
            "【汇总】此前2条告警因短信限额未单独发送：#22 north-lane B3 红色预警 11月23日 08:00 请立即到场查看，必要时疏散住户；#23 north-lane B4 红色预警 11月23日 08:00 请立即到场查看，必要时疏散住户。处理：http://box/incident/23"
        );
    }

    /// The box restarts while a phone is owed a summary: the new start sends it when the hour
    /// lets it (it was held in memory and lost: the alerts reached that phone by no SMS), and a
    /// summary sent is not sent again by the start after.
    #[tokio::test(start_paused = true)]
    async fn a_summary_owed_before_a_restart_goes_out_after_it() {
        let state = tempfile::tempdir().unwrap();
        let (url, seen) = gateway("none").await;
        let capped = |url: &str| capped_sink(url, &state, 2);
        let mut first = capped(&url);
        for (i, building) in ["B1", "B2", "B3", "B4"].into_iter().enumerate() {
            let mut alert = house_alarm("house-01", 20 + i as i64);
            alert.building = Some(building.into());
            first.deliver(&alert).await.unwrap();
        }
        assert_eq!(seen.lock().unwrap().len(), 2, "the cap holds");
        drop(first);

        let _restarted = capped(&url);
        an_hour_on_until(&seen, 3).await;
        let count = || seen.lock().unwrap().len();
        let texted = seen.lock().unwrap().clone();
        assert_eq!(texted.len(), 3, "the summary owed before the restart: {texted:?}");
        let summary = texted[2]["params"]["msg"].as_str().unwrap();
        assert!(summary.starts_with("【汇总】此前2条告警") && summary.contains("#22") && summary.contains("#23"), "{summary}");
        drop(_restarted);

        let _again = capped(&url);
        tokio::time::advance(Duration::from_secs(7200)).await;
        for _ in 0..50 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(count(), 3, "a summary sent is owed no more");
    }

    /// An hour's oranges used the phone's budget: a red still goes out, on a budget of its own.
    #[tokio::test]
    async fn a_red_alarm_is_texted_after_oranges_used_the_phone_s_hour() {
        let state = tempfile::tempdir().unwrap();
        let (url, seen) = gateway("none").await;
        let mut sink = capped_sink(&url, &state, 2);
        for (i, building) in ["B1", "B2", "B3"].into_iter().enumerate() {
            let mut orange = house_alarm("house-01", 30 + i as i64);
            (orange.building, orange.severity) = (Some(building.into()), gridwatch_rules::Severity::Alarm);
            sink.deliver(&orange).await.unwrap();
        }
        assert_eq!(seen.lock().unwrap().len(), 2, "the cap holds for oranges");
        let mut red = house_alarm("house-09", 40);
        red.building = Some("B9".into());
        sink.deliver(&red).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[2]["params"]["msg"].as_str().unwrap().starts_with("【红色预警】#40"), "{seen:?}");
    }

    /// One ignored red incident's reminders used the phone's hour: a new red house is texted all
    /// the same (an outside tester's was not), and a restart does not start the hour afresh (the
    /// same tester counted 49 SMS to one phone in 16 minutes over 6 restarts).
    #[tokio::test]
    async fn reminders_leave_new_alarms_their_budget_and_a_restart_keeps_the_hour() {
        let state = tempfile::tempdir().unwrap();
        let (url, seen) = gateway("none").await;
        let capped = |url: &str| capped_sink(url, &state, 2);
        let mut first = capped(&url);
        for _ in 0..3 {
            let mut reminder = house_alarm("house-01", 30);
            (reminder.event, reminder.building) = (Event::Reminder, Some("B1".into()));
            first.deliver(&reminder).await.unwrap();
        }
        assert_eq!(seen.lock().unwrap().len(), 2, "the cap holds for reminders");
        let mut red = house_alarm("house-09", 40);
        red.building = Some("B9".into());
        first.deliver(&red).await.unwrap();
        let texted = seen.lock().unwrap().clone();
        assert_eq!(texted.len(), 3);
        assert!(texted[2]["params"]["msg"].as_str().unwrap().starts_with("【红色预警】#40"), "{texted:?}");
        drop(first);

        let mut restarted = capped(&url);
        for (house, incident) in [("B10", 41), ("B11", 42)] {
            let mut red = house_alarm("house-10", incident);
            red.building = Some(house.into());
            restarted.deliver(&red).await.unwrap();
        }
        let texted = seen.lock().unwrap().clone();
        assert_eq!(texted.len(), 4, "one red left in the hour the first run began: {texted:?}");
    }

    #[tokio::test]
    async fn only_the_configured_severities_and_named_people_get_sms() {
        let state = tempfile::tempdir().unwrap();
        let (url, seen) = gateway("none").await;
        let mut warning = sample_alert("fired", 2.1);
        warning.severity = gridwatch_rules::Severity::Warning;
        warning.mentions = vec!["13800000001".into()];
        let mut sink = sink(&url, &state);
        sink.deliver(&warning).await.unwrap();
        sink.deliver(&sample_alert("fired", 7.3)).await.unwrap();
        assert!(seen.lock().unwrap().is_empty(), "a warning, and an alert naming nobody, send no SMS");
    }

    /// A gateway that answers 503 to `down` and 200 to every other phone, recording the phone
    /// of every request it gets.
    async fn gateway_down_for(down: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
        let asked: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = asked.clone();
        let app = axum::Router::new().route(
            "/send",
            axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let record = record.clone();
                async move {
                    let phone = body["phone"].as_str().unwrap().to_string();
                    let down = phone == down;
                    record.lock().unwrap().push(phone);
                    if down {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let url = format!("http://{}/send", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, asked)
    }

    #[tokio::test]
    async fn a_restart_sends_no_phone_what_it_got_and_begins_no_phone_s_attempts_again() {
        let state = tempfile::tempdir().unwrap();
        let (url, asked) = gateway_down_for("13800000002").await;
        let mut alert = house_alarm("house-07", 12);
        alert.event_id = Some(41);
        alert.mentions = vec!["13800000001".into(), "13800000002".into(), "13800000003".into()];
        // Before the power cut: phone 3 had two attempts that never got an answer.
        let before = Store::open(state.path()).unwrap();
        before.count_sms_attempt("sms", "13800000003", vec![41]).await.unwrap();
        before.count_sms_attempt("sms", "13800000003", vec![41]).await.unwrap();
        drop(before);
        let first = sink(&url, &state).deliver(&alert).await;
        let phones_asked = |phone: &str| asked.lock().unwrap().iter().filter(|p| *p == phone).count();
        assert!(format!("{:#}", first.unwrap_err()).contains("13800000002 (4 attempts)"), "the phone whose gateway fails is given up");
        assert_eq!(
            (phones_asked("13800000001"), phones_asked("13800000002"), phones_asked("13800000003")),
            (1, ATTEMPTS as usize, 1),
            "phone 3 went on from its two attempts"
        );
        // A restart (a new sink on the same store) and the same delivery again.
        let again = sink(&url, &state).deliver(&alert).await;
        assert!(format!("{:#}", again.unwrap_err()).contains("13800000002 (4 attempts before a restart)"));
        assert_eq!(
            (phones_asked("13800000001"), phones_asked("13800000002"), phones_asked("13800000003")),
            (1, ATTEMPTS as usize, 1),
            "no phone got a second copy and the failing one no fifth attempt"
        );
    }

    #[tokio::test]
    async fn a_phone_the_gateway_took_is_recorded_at_once_while_another_phone_hangs() {
        let state = tempfile::tempdir().unwrap();
        // 200 at once to phone 1; phone 2's request is never answered.
        let app = axum::Router::new().route(
            "/send",
            axum::routing::post(|axum::Json(body): axum::Json<serde_json::Value>| async move {
                if body["phone"] == "13800000002" {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                axum::http::StatusCode::OK
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let url = format!("http://{}/send", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let mut alert = house_alarm("house-07", 12);
        alert.event_id = Some(41);
        alert.mentions = vec!["13800000001".into(), "13800000002".into()];
        let mut sending = sink(&url, &state);
        let hanging = tokio::spawn(async move { sending.deliver(&alert).await });
        let store = Store::open(state.path()).unwrap();
        let recorded = async {
            for _ in 0..100 {
                if store.sms_progress("sms", "13800000001", vec![41]).await.unwrap().sent {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        };
        assert!(recorded.await, "phone 1's SMS is recorded while phone 2's request still hangs");
        // A power cut now loses nothing of phone 1's.
        hanging.abort();
        assert!(!store.sms_progress("sms", "13800000002", vec![41]).await.unwrap().sent);
    }

    #[tokio::test]
    async fn a_clear_goes_to_the_phones_texted_about_its_incident_whatever_its_last_severity() {
        let state = tempfile::tempdir().unwrap();
        let (url, seen) = gateway("none").await;
        let mut sink = sink(&url, &state);
        let store = Store::open(state.path()).unwrap();
        let journaled = |alert: Alert| {
            let store = store.clone();
            async move {
                let id = store.record_alert_to(&alert, Vec::new(), None).await.unwrap();
                Alert { event_id: Some(id), ..alert }
            }
        };
        // The alarm of incident #12 is texted to phone 1; phone 2 is texted about #13 only.
        let alarm = journaled(house_alarm("house-07", 12)).await;
        sink.deliver(&alarm).await.unwrap();
        let mut other = house_alarm("house-08", 13);
        (other.mentions, other.building) = (vec!["13800000002".into()], Some("B9".into()));
        sink.deliver(&journaled(other).await).await.unwrap();
        // #12 fell back to a warning (not texted) before it cleared; the clear names nobody.
        let mut clear = house_alarm("house-07", 12);
        (clear.event, clear.severity, clear.mentions) = (Event::Cleared, gridwatch_rules::Severity::Warning, Vec::new());
        sink.deliver(&journaled(clear).await).await.unwrap();
        let seen = seen.lock().unwrap();
        let texts: Vec<String> = seen.iter().map(|b| format!("{} {}", b["phone"].as_str().unwrap(), b["params"]["msg"].as_str().unwrap())).collect();
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert!(texts[2].starts_with("13800000001 【已恢复】#12 "), "only the phone texted about #12 hears it is over: {texts:?}");
    }

    /// An alarm and its clear that waited together in a building's group window: the phone gets
    /// the alarm and then the clear (the clear was lost: nobody had been texted about it yet).
    #[tokio::test]
    async fn an_alarm_and_its_clear_in_one_message_are_both_texted() {
        let state = tempfile::tempdir().unwrap();
        let (url, seen) = gateway("none").await;
        let mut sink = sink(&url, &state);
        let store = Store::open(state.path()).unwrap();
        let alarm = house_alarm("house-07", 2);
        let mut clear = house_alarm("house-07", 2);
        (clear.event, clear.mentions) = (Event::Cleared, Vec::new());
        let (mut alarm_id, mut clear_id) = (alarm.clone(), clear.clone());
        alarm_id.event_id = Some(store.record_alert_to(&alarm, Vec::new(), None).await.unwrap());
        clear_id.event_id = Some(store.record_alert_to(&clear, Vec::new(), None).await.unwrap());
        sink.deliver_many(&[&alarm_id, &clear_id]).await.unwrap();
        let seen = seen.lock().unwrap();
        let texts: Vec<String> = seen.iter().map(|b| format!("{} {}", b["phone"].as_str().unwrap(), b["params"]["msg"].as_str().unwrap())).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(texts[0].starts_with("13800000001 【") && !texts[0].contains("已恢复"), "the alarm first: {texts:?}");
        assert!(texts[1].starts_with("13800000001 【已恢复】#2 "), "then its clear: {texts:?}");
    }
}
