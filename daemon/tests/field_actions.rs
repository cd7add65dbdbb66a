//! A worker's steps taken while the SD card could not write, across restarts and a repair: the
//! state directory is a loop-mounted ext4 image made read-only under the running daemon
//! (`common::sd_card`), the daemon is killed and started again on the read-only card (its store
//! is a copy in memory), 王芳 accepts and goes on site from her signed link (the page's form, a
//! real HTTP POST) and the grid leader resolves through a signed ack relayed over MQTT; the
//! daemon is killed and started again on the read-only card, then the card is repaired. A real
//! webhook receiver counts the reminders and escalations. Before, each restart forgot the steps:
//! the incident was open again, 王芳 was reminded (and her leader told nobody had taken it), and
//! the same form and the same signed ack were taken a second time.
//!
//! The same card can fail under the running daemon, between the alarm and the worker's step
//! (`a_worker_s_steps_on_a_card_gone_read_only_under_the_running_daemon_hold_and_reach_the_card_once`):
//! the step (and a hub's signed ack) is taken in memory and kept beside the card. Before, 王芳
//! got SQLite's English "disk I/O error" for 接单, and the ladder reminded her on.
//!
//! Loop mounts need root (CAP_SYS_ADMIN), as `.ci/run` on a fresh Debian machine has: without it
//! these tests fail and say so.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::sd_card::SdCard;
use common::{card_box_config, metric, metrics, publish_until_evaluated, Daemon, ALARM_LADDER_ROSTER, SECOND};
use gridwatch::sources::mqtt::incident_acks::AckConfig;
use gridwatch_tests::{free_port, now_ms, wait_for, Mosquitto, WebhookReceiver};

const ACK_TOPIC: &str = "gridwatch/acks/north-lane";
const ACK_SECRET: &str = "hub-and-box-share-this";
const TELEMETRY: &str = "gridwatch/north-lane/house-07/telemetry";

/// The alarm ladder's roster (王芳 reminded every 1.5 s until she accepts, 陈刚 told after 4 s),
/// with the on-site deadline far off, so after 接单 nothing more is due.
fn roster() -> String {
    let roster = ALARM_LADDER_ROSTER.replace("on_site_within = \"12s\"", "on_site_within = \"1h\"");
    assert_ne!(roster, ALARM_LADDER_ROSTER, "the on-site deadline is moved");
    roster
}

/// A box with one tilt sensor (alarm above 5), the roster above, signed links, an ack topic, a
/// webhook receiver, its state directory on an SD card and a runtime directory beside it.
struct FieldBox {
    mosquitto: Mosquitto,
    dir: tempfile::TempDir,
    card: SdCard,
    receiver: WebhookReceiver,
    http_port: u16,
}

impl FieldBox {
    async fn new() -> FieldBox {
        let mosquitto = Mosquitto::start().await.expect("mosquitto");
        let dir = tempfile::tempdir().unwrap();
        let card = SdCard::mount(dir.path());
        let receiver = WebhookReceiver::start(Vec::new()).await;
        let http_port = free_port();
        let http = format!("public_url = \"http://127.0.0.1:{http_port}\"\nlink_secret = \"a-secret-of-enough-length\"\n");
        let dispatch = format!("ack_topic = \"{ACK_TOPIC}\"\nack_secret = \"{ACK_SECRET}\"\n");
        let config = card_box_config("gw-field-actions", &mosquitto.url(), &receiver.url(), http_port, &["house-07"], &http, &dispatch);
        std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
        std::fs::write(dir.path().join("roster.toml"), roster()).unwrap();
        std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nid = \"tilt\"\nvalue = \"x\"\nabove = 5\nseverity = \"alarm\"\n").unwrap();
        FieldBox { mosquitto, dir, card, receiver, http_port }
    }

    /// Starts the daemon and waits until it judges readings (so it hears its ack topic too) and,
    /// with a `link`, its page answers it; `x`: the sensor's reading meanwhile.
    async fn start(&self, x: f64, link: Option<&str>) -> Daemon {
        let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], self.dir.path());
        let up = publish_until_evaluated(&self.mosquitto, TELEMETRY, || format!(r#"{{"x": {x}, "ts": {}}}"#, now_ms()), self.http_port).await;
        assert!(up, "{:?}", daemon.stderr());
        if let Some(link) = link {
            let up = wait_for(20 * SECOND, || async { open(link).await.0 == 200 }).await;
            assert!(up, "the page does not open after the start: {:?}", daemon.stderr());
        }
        daemon
    }

    /// The reminders and escalations that reached the receiver (a journaled step re-sent after
    /// a kill, with its `event_id`, counts once).
    fn steps(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        self.receiver
            .bodies()
            .into_iter()
            .filter(|b| b["event"] == "reminder" || b["event"] == "escalated")
            .filter(|b| b["event_id"].as_i64().is_none_or(|id| seen.insert(id)))
            .map(|b| b["messages"]["en"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Waits `secs` seconds and asserts no reminder or escalation came past the first `before`.
    async fn assert_no_more_steps(&self, before: usize, secs: u32, daemon: &Daemon, when: &str) {
        tokio::time::sleep(secs * SECOND).await;
        let steps = self.steps();
        assert_eq!(steps.len(), before, "{when}: reminded or escalated after 王芳 accepted: {:?} {:?}", &steps[before.min(steps.len())..], daemon.stderr());
    }

    /// Raises the alarm (incident 1) and waits for its first reminder; 王芳's signed link.
    async fn alarm_until_reminded(&self, daemon: &Daemon) -> String {
        self.mosquitto.publish(TELEMETRY, &format!(r#"{{"x": 7.0, "ts": {}}}"#, now_ms())).unwrap();
        let reminded = wait_for(10 * SECOND, || {
            let n = self.steps().len();
            async move { n >= 1 }
        })
        .await;
        assert!(reminded, "no reminder while the card wrote: {:?} {:?}", self.receiver.bodies(), daemon.stderr());
        let alarm = self.receiver.bodies().into_iter().find(|b| b["event"] == "fired").unwrap();
        assert_eq!(alarm["incident_id"], 1, "{alarm}");
        alarm["member_links"]["王芳"].as_str().unwrap_or_else(|| panic!("no link for the worker on duty: {alarm}")).to_string()
    }

    /// With the daemon stopped: the card holds incident 1 resolved, 王芳 its owner, and 接单 (with
    /// its note, at a time within `accepted`), 到场 and the hub's 办结 once each.
    fn assert_card_holds_each_step_once(&self, accepted: std::ops::RangeInclusive<i64>) {
        let store = gridwatch::store::Store::open(&self.dir.path().join("state")).unwrap();
        let incident = store.incidents(true).unwrap().into_iter().find(|i| i.id == 1).unwrap();
        assert_eq!(incident.state, "resolved", "{incident:?}");
        let trail = store.incident_history(1).unwrap();
        let people: Vec<_> = trail.iter().filter(|e| ["accept", "on_site", "resolve"].contains(&e.action.as_str())).collect();
        assert_eq!(people.len(), 3, "each step once on the card: {trail:?}");
        let (accept, on_site, resolved) = (people[0], people[1], people[2]);
        assert_eq!((accept.action.as_str(), accept.actor.as_str(), accept.note.as_deref()), ("accept", "王芳 (wang, own link)", Some("马上到")), "{trail:?}");
        assert!(accept.at_known && accepted.contains(&accept.at_ms), "接单 at the time it was taken: {accept:?} {accepted:?}");
        assert_eq!((on_site.action.as_str(), on_site.actor.as_str()), ("on_site", "王芳 (wang, own link)"), "{trail:?}");
        assert_eq!((resolved.action.as_str(), resolved.actor.as_str(), resolved.note.as_deref()), ("resolve", "陈刚 (hub)", Some("墙体已加固")), "{trail:?}");
        assert_eq!(store.incident_people(1).unwrap(), vec![("wang".to_string(), "owner".to_string())], "whoever accepts becomes the owner");
    }

    async fn acks(&self, reason: &str) -> f64 {
        metric(&metrics(self.http_port).await, &format!("gridwatch_incident_acks_total{{reason=\"{reason}\"}}")).unwrap_or(0.0)
    }
}

/// The grid leader's 办结 of incident 1 as the hub relays it: a signed ack.
fn hub_resolves() -> String {
    let hub = AckConfig::new(ACK_TOPIC.into(), ACK_SECRET);
    let ts = now_ms();
    serde_json::json!({"incident": 1, "action": "resolve", "by": "陈刚", "note": "墙体已加固", "ts": ts, "sig": hub.sign(1, "resolve", "陈刚", Some("墙体已加固"), ts)}).to_string()
}

/// GET: the status and the page.
async fn open(link: &str) -> (u16, String) {
    match reqwest::get(link).await {
        Ok(response) => (response.status().as_u16(), response.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// What the page's form posts for a step (the redirect after it is followed): status and page.
async fn press(link: &str, action: &str, note: &str) -> (u16, String) {
    let response = reqwest::Client::new().post(link).form(&[("action", action), ("note", note)]).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_s_steps_on_a_read_only_card_survive_restarts_and_reach_the_card_once_repaired() {
    let mut b = FieldBox::new().await;
    let mut daemon = b.start(0.1, None).await;
    let link = b.alarm_until_reminded(&daemon).await;

    // The card fails; systemd restarts the daemon on it: its store is a copy in memory.
    b.card.fail();
    daemon.kill_hard();
    daemon = b.start(7.0, Some(&link)).await;

    // 接单 from the page, then 到场.
    let accepted_from = now_ms();
    let (status, page) = press(&link, "accept", "马上到").await;
    let accepted_until = now_ms();
    assert!(status == 200 && page.contains("已记录"), "接单 refused on the read-only card: {status} {page} {:?}", daemon.stderr());
    tokio::time::sleep(SECOND).await;
    let after_accept = b.steps().len();
    b.assert_no_more_steps(after_accept, 3, &daemon, "the run that took 接单").await;
    let (status, page) = press(&link, "on_site", "").await;
    assert!(status == 200 && page.contains("已记录"), "到场 refused on the read-only card: {status} {page} {:?}", daemon.stderr());

    // Killed and started again on the read-only card: the incident is still on site.
    daemon.kill_hard();
    daemon = b.start(7.0, Some(&link)).await;
    b.assert_no_more_steps(after_accept, 5, &daemon, "after a restart on the read-only card").await;
    let (status, page) = open(&link).await;
    assert!(status == 200 && page.contains("已到场") && page.contains("马上到"), "the page after the restart forgot the steps: {page}");
    let (status, page) = press(&link, "accept", "again").await;
    assert!(status == 409 && !page.contains("已记录"), "the same 接单 was taken again after the restart: {status} {page}");

    // The grid leader resolves through the hub: a signed ack on the read-only card.
    let resolve = hub_resolves();
    b.mosquitto.publish(ACK_TOPIC, &resolve).unwrap();
    assert!(wait_for(10 * SECOND, || async { b.acks("applied").await == 1.0 }).await, "{} {:?}", metrics(b.http_port).await, daemon.stderr());

    // Again on the read-only card: the ack's signature is still used.
    daemon.kill_hard();
    daemon = b.start(7.0, Some(&link)).await;
    b.mosquitto.publish(ACK_TOPIC, &resolve).unwrap();
    let refused = wait_for(10 * SECOND, || async { b.acks("replayed").await >= 1.0 }).await;
    assert!(refused, "the replayed ack was not refused after a restart on the read-only card: {} {:?}", metrics(b.http_port).await, daemon.stderr());
    assert_eq!(b.acks("applied").await, 0.0, "the replayed ack was taken again");
    let (_, page) = open(&link).await;
    assert!(page.contains("已办结") && page.contains("墙体已加固"), "the page forgot the hub's 办结: {page}");
    b.assert_no_more_steps(after_accept, 2, &daemon, "after a second restart on the read-only card").await;

    // The card repaired at the next boot: everything recorded on it, then forgotten beside it.
    daemon.kill_hard();
    b.card.repair();
    daemon = b.start(7.0, Some(&link)).await;
    let forgotten = wait_for(10 * SECOND, || async { !b.dir.path().join("run/sent-from-memory.jsonl").exists() }).await;
    assert!(forgotten, "what was taken on the copy in memory is still kept beside the repaired card: {:?}", daemon.stderr());
    b.mosquitto.publish(ACK_TOPIC, &resolve).unwrap();
    let refused = wait_for(10 * SECOND, || async { b.acks("replayed").await >= 1.0 }).await;
    assert!(refused, "the replayed ack was not refused after the repair: {} {:?}", metrics(b.http_port).await, daemon.stderr());
    b.assert_no_more_steps(after_accept, 3, &daemon, "after the repair").await;
    let fired = b.receiver.bodies().iter().filter(|b| b["event"] == "fired").count();
    assert_eq!(fired, 1, "the alarm once: {:?}", b.receiver.bodies());
    daemon.stop();

    b.assert_card_holds_each_step_once(accepted_from..=accepted_until);
}

/// Words of SQLite's (or the store's own English) a worker must never read on the page.
const STORE_ERRORS: [&str; 4] = ["readonly", "read-only", "database", "disk I/O"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_s_steps_on_a_card_gone_read_only_under_the_running_daemon_hold_and_reach_the_card_once() {
    let mut b = FieldBox::new().await;
    let mut daemon = b.start(0.1, None).await;
    let link = b.alarm_until_reminded(&daemon).await;

    // The card fails under the running daemon, before anybody accepted (陈刚 is told 4 s after
    // the alarm unless somebody did).
    b.card.fail();
    let accepted_from = now_ms();
    let (status, page) = press(&link, "accept", "马上到").await;
    let accepted_until = now_ms();
    assert!(!STORE_ERRORS.iter().any(|words| page.contains(words)), "the page shows the store's error to the worker: {status} {page} {:?}", daemon.stderr());
    assert!(status == 200 && page.contains("已记录"), "接单 refused on the card gone read-only: {status} {page} {:?}", daemon.stderr());
    assert!(page.contains("已接单") && page.contains("马上到"), "the page does not show the step taken: {page}");
    tokio::time::sleep(SECOND).await;
    let after_accept = b.steps().len();
    b.assert_no_more_steps(after_accept, 5, &daemon, "the run the card failed under").await;
    let (status, page) = press(&link, "on_site", "").await;
    assert!(status == 200 && page.contains("已到场"), "到场 refused on the card gone read-only: {status} {page} {:?}", daemon.stderr());
    let (status, page) = press(&link, "accept", "again").await;
    assert!(status == 409 && !page.contains("已记录"), "接单 taken twice: {status} {page}");

    // The grid leader resolves through the hub, still under the same run: a signed ack, taken
    // once; its replay is refused.
    let resolve = hub_resolves();
    b.mosquitto.publish(ACK_TOPIC, &resolve).unwrap();
    assert!(wait_for(10 * SECOND, || async { b.acks("applied").await == 1.0 }).await, "{} {:?}", metrics(b.http_port).await, daemon.stderr());
    b.mosquitto.publish(ACK_TOPIC, &resolve).unwrap();
    let refused = wait_for(10 * SECOND, || async { b.acks("replayed").await >= 1.0 }).await;
    assert!(refused && b.acks("applied").await == 1.0, "the replayed ack under the same run: {} {:?}", metrics(b.http_port).await, daemon.stderr());

    // Killed and started again on the read-only card: the steps are taken again from beside it,
    // the ack's signature is still used.
    daemon.kill_hard();
    daemon = b.start(7.0, Some(&link)).await;
    b.assert_no_more_steps(after_accept, 4, &daemon, "after a restart on the read-only card").await;
    let (status, page) = open(&link).await;
    assert!(
        status == 200 && page.contains("已办结") && page.contains("马上到") && page.contains("墙体已加固"),
        "the page after the restart forgot the steps: {page}"
    );
    b.mosquitto.publish(ACK_TOPIC, &resolve).unwrap();
    let refused = wait_for(10 * SECOND, || async { b.acks("replayed").await >= 1.0 }).await;
    assert!(refused && b.acks("applied").await == 0.0, "the replayed ack after a restart: {} {:?}", metrics(b.http_port).await, daemon.stderr());

    // The card repaired at the next boot: the steps recorded on it once, then forgotten beside it.
    daemon.kill_hard();
    b.card.repair();
    daemon = b.start(7.0, Some(&link)).await;
    let forgotten = wait_for(10 * SECOND, || async { !b.dir.path().join("run/sent-from-memory.jsonl").exists() }).await;
    assert!(forgotten, "the steps are still kept beside the repaired card: {:?}", daemon.stderr());
    b.assert_no_more_steps(after_accept, 3, &daemon, "after the repair").await;
    let (_, page) = open(&link).await;
    assert!(page.contains("已办结") && page.contains("马上到"), "the page on the repaired card: {page}");
    daemon.stop();

    b.assert_card_holds_each_step_once(accepted_from..=accepted_until);
}
