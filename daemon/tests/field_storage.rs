//! An SD card that goes read-only, the way the field has it: the state directory is a
//! loop-mounted ext4 image (`errors=remount-ro`), and mid-run ext4 is told it found an error
//! (`/sys/fs/ext4/<dev>/trigger_fs_error`), so the kernel remounts it read-only under the running
//! daemon. `/healthz` must say so within 5 s (503, with the reason) and the metrics at once, the
//! failing writes must not become one error line per reading, and the alarms still reach people:
//! the channels get them in memory when the store can journal nothing.
//!
//! Loop mounts need root (CAP_SYS_ADMIN), as `.ci/run` on a fresh Debian machine has: without it
//! this test fails and says so — it is never skipped silently (`common::sd_card`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::sd_card::SdCard;
use common::{card_box_config, metric, metrics, publish_until_evaluated, Daemon, ALARM_LADDER_ROSTER, SECOND};
use gridwatch_tests::{free_port, now_ms, wait_for, Mosquitto, WebhookReceiver};

/// `/healthz`'s status and body; status 0 when it does not answer within 3 s.
async fn health(http_port: u16) -> (u16, serde_json::Value) {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(3)).build().unwrap();
    let Ok(response) = client.get(format!("http://127.0.0.1:{http_port}/healthz")).send().await else { return (0, serde_json::Value::Null) };
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_directory_gone_read_only_is_an_alarm_within_five_seconds_not_a_log_line_per_reading() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let card = SdCard::mount(dir.path());
    let receiver = WebhookReceiver::start(Vec::new()).await;
    let http_port = free_port();
    let config = format!(
        "state_dir = \"state\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-field-storage-{http_port}\"\n\
         [[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\n\
         [rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n[alerts]\nconsole = false\n\
         [[alerts.webhook]]\nname = \"office\"\nurl = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
        mosquitto.url(),
        receiver.url()
    );
    std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
    std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nid = \"tilt\"\nvalue = \"x\"\nabove = 5\nseverity = \"alarm\"\n").unwrap();
    let mut daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let topic = "gridwatch/north-lane/house-07/telemetry";
    let up = publish_until_evaluated(&mosquitto, topic, || format!(r#"{{"x": 0.1, "ts": {}}}"#, now_ms()), http_port).await;
    assert!(up, "{:?}", daemon.stderr());
    let ready = wait_for(10 * SECOND, || async { health(http_port).await.0 == 200 }).await;
    assert!(ready, "not ready before the card failed: {:?}", health(http_port).await);
    assert_eq!(metric(&metrics(http_port).await, "gridwatch_store_write_failing"), Some(0.0));

    card.fail();
    let failed_at = std::time::Instant::now();
    let degraded = wait_for(5 * SECOND, || async { health(http_port).await.0 == 503 }).await;
    assert!(degraded, "/healthz still ready 5 s after the state directory went read-only: {:?}", health(http_port).await);
    let (_, body) = health(http_port).await;
    assert!(body["reasons"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains("read-only")), "{body}");
    assert_eq!(metric(&metrics(http_port).await, "gridwatch_store_write_failing"), Some(1.0));
    assert!(failed_at.elapsed() < 5 * SECOND);

    // Alarms keep coming: their failing writes are counted, not logged one line each.
    for n in 0..20 {
        let x = if n % 2 == 0 { 7.0 } else { 0.1 };
        mosquitto.publish(topic, &format!(r#"{{"x": {x}, "ts": {}}}"#, now_ms())).unwrap();
    }
    let counted = wait_for(10 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_store_failed_writes").unwrap_or(0.0) >= 1.0 }).await;
    assert!(counted, "{:?}", daemon.stderr());
    let error_lines = daemon.stderr().iter().filter(|l| l.contains("ERROR")).count();
    assert!(error_lines <= 3, "{error_lines} error lines for 20 alarm events: {:?}", daemon.stderr());
    // ...and reach the office's webhook although no incident and no outbox row could be written.
    let fired = || receiver.bodies().iter().filter(|b| b["rule"] == "tilt" && b["event"] == "fired").count();
    let reached = wait_for(20 * SECOND, || {
        let n = fired();
        async move { n >= 1 }
    })
    .await;
    assert!(reached, "no alarm reached the webhook with the store read-only: {:?} {:?}", receiver.bodies(), daemon.stderr());
    daemon.kill_hard();
    drop(card);
}

/// An alarm nobody accepts, and the card fails under it: the reminders and the escalation still
/// reach people, from memory, one at a time (no burst, no step repeated every second).
/// A box with one tilt sensor (alarm above 5, danger above 10), the alarm ladder's roster (reminders every 1.5 s, escalated to the
/// grid leader 4 s after the alarm), a webhook receiver and its state directory on an SD card;
/// its sensor reported once and was judged.
struct LadderBox {
    mosquitto: Mosquitto,
    dir: tempfile::TempDir,
    card: SdCard,
    receiver: WebhookReceiver,
    daemon: Daemon,
    topic: &'static str,
    http_port: u16,
}

impl LadderBox {
    async fn start() -> LadderBox {
        let mosquitto = Mosquitto::start().await.expect("mosquitto");
        let dir = tempfile::tempdir().unwrap();
        let card = SdCard::mount(dir.path());
        let receiver = WebhookReceiver::start(Vec::new()).await;
        let http_port = free_port();
        let config = card_box_config("gw-field-ladder", &mosquitto.url(), &receiver.url(), http_port, &["house-07"], "", "");
        std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
        std::fs::write(dir.path().join("roster.toml"), ALARM_LADDER_ROSTER).unwrap();
        let rules = "[[rule]]\nid = \"tilt\"\nvalue = \"x\"\nabove = 5\nseverity = \"alarm\"\n\
                     [[rule]]\nid = \"tilt-far\"\nvalue = \"x\"\nabove = 10\nseverity = \"danger\"\n";
        std::fs::write(dir.path().join("rules.toml"), rules).unwrap();
        let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
        let topic = "gridwatch/north-lane/house-07/telemetry";
        let up = publish_until_evaluated(&mosquitto, topic, || format!(r#"{{"x": 0.1, "ts": {}}}"#, now_ms()), http_port).await;
        assert!(up, "{:?}", daemon.stderr());
        LadderBox { mosquitto, dir, card, receiver, daemon, topic, http_port }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_and_escalations_go_on_after_the_card_went_read_only() {
    let LadderBox { mosquitto, dir: _state_dir, card, receiver, mut daemon, topic, .. } = LadderBox::start().await;
    mosquitto.publish(topic, &format!(r#"{{"x": 7.0, "ts": {}}}"#, now_ms())).unwrap();
    let event = |name: &'static str| move |body: &serde_json::Value| body["rule"] == "tilt" && body["event"] == name;
    let fired = wait_for(10 * SECOND, || {
        let n = receiver.bodies().iter().filter(|b| event("fired")(b)).count();
        async move { n >= 1 }
    })
    .await;
    assert!(fired, "the alarm was not sent before the card failed: {:?} {:?}", receiver.bodies(), daemon.stderr());

    card.fail();
    let failed_at = now_ms();
    // The ladder: reminders every 1.5 s, escalated to the grid leader 4 s after the alarm.
    let escalated = wait_for(15 * SECOND, || {
        let n = receiver.bodies().iter().filter(|b| event("escalated")(b)).count();
        async move { n >= 1 }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after: Vec<serde_json::Value> = receiver.bodies().into_iter().filter(|b| b["at_ms"].as_i64().unwrap_or(0) >= failed_at).collect();
    let reminders = after.iter().filter(|b| event("reminder")(b)).count();
    let escalations = after.iter().filter(|b| event("escalated")(b)).count();
    let seconds = (now_ms() - failed_at) as f64 / 1000.0;
    println!("after the card failed ({seconds:.1} s): {reminders} reminders, {escalations} escalations");
    assert!(escalated && escalations >= 1, "no escalation with the card read-only: {after:?} {:?}", daemon.stderr());
    assert!(reminders >= 1, "no reminder with the card read-only: {after:?}");
    // Sent from memory, they carry no journal id (the alarm's would make receivers drop them).
    let steps_with_id: Vec<&serde_json::Value> = after.iter().filter(|b| (event("reminder")(b) || event("escalated")(b)) && !b["event_id"].is_null()).collect();
    assert!(steps_with_id.is_empty(), "steps sent from memory with a journal id: {steps_with_id:?}");
    assert!(
        escalations <= 2 && reminders as f64 <= seconds / 1.5 + 2.0,
        "steps repeated: {reminders} reminders and {escalations} escalations in {seconds:.1} s: {after:?}"
    );

    // The wall comes back: the clear, sent from memory, names the incident the store holds
    // (it can read it, though not write) — the one the alarm opened.
    let incident = receiver.bodies().into_iter().find(|b| event("fired")(b)).unwrap()["incident_id"].clone();
    assert!(incident.as_i64().is_some_and(|id| id > 0), "the alarm was stored before the card failed: {incident}");
    mosquitto.publish(topic, &format!(r#"{{"x": 0.1, "ts": {}}}"#, now_ms())).unwrap();
    let cleared = wait_for(10 * SECOND, || {
        let n = receiver.bodies().iter().filter(|b| event("cleared")(b)).count();
        async move { n >= 1 }
    })
    .await;
    assert!(cleared, "no clear with the card read-only: {:?}", daemon.stderr());
    let clear = receiver.bodies().into_iter().find(|b| event("cleared")(b)).unwrap();
    assert_eq!(clear["incident_id"], incident, "the clear of a stored incident names it: {clear}");
    daemon.kill_hard();
    drop(card);
}

/// An alarm sent from memory while the card was read-only, then the daemon killed and the card
/// repaired (systemd restarts the daemon; the runtime directory is kept): its incident is recorded
/// from what waited beside the card, and its ladder runs on — an outside tester found such an
/// incident recorded without one (no reminder, no escalation, ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_sent_from_memory_before_a_crash_is_escalated_once_the_card_is_repaired() {
    let LadderBox { mosquitto, dir, mut card, receiver, mut daemon, topic, .. } = LadderBox::start().await;
    let count = |event: &'static str| receiver.bodies().iter().filter(|b| b["rule"] == "tilt" && b["event"] == event).count();
    card.fail();
    mosquitto.publish(topic, &format!(r#"{{"x": 7.0, "ts": {}}}"#, now_ms())).unwrap();
    let fired = wait_for(10 * SECOND, || {
        let n = count("fired");
        async move { n >= 1 }
    })
    .await;
    assert!(fired, "no alarm from memory: {:?}", daemon.stderr());
    daemon.kill_hard();
    card.repair();
    let mut daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let restarted = now_ms();
    let after = |event: &'static str| {
        receiver.bodies().iter().filter(|b| b["rule"] == "tilt" && b["event"] == event && b["at_ms"].as_i64().unwrap_or(0) >= restarted).count()
    };
    // The ladder: reminders every 1.5 s, escalated to the grid leader 4 s after the alarm.
    let escalated = wait_for(15 * SECOND, || {
        let n = after("escalated");
        async move { n >= 1 }
    })
    .await;
    assert!(escalated && after("reminder") >= 1, "no ladder after the restart: {:?} {:?}", receiver.bodies(), daemon.stderr());
    let stored = receiver.bodies().into_iter().rfind(|b| b["rule"] == "tilt" && b["event"] == "escalated").unwrap();
    assert!(stored["incident_id"].as_i64().is_some_and(|id| id > 0), "the steps are the stored incident's: {stored}");
    assert_eq!(count("fired"), 1, "the alarm is not sent again: {:?}", receiver.bodies());
    daemon.kill_hard();
    drop(card);
}

/// An alarm that first fires while the card is read-only has no incident the store could keep:
/// its ladder runs in memory, and its clear stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_first_raised_on_a_read_only_card_is_still_reminded_and_escalated_until_it_clears() {
    let LadderBox { mosquitto, dir: _state_dir, card, receiver, mut daemon, topic, .. } = LadderBox::start().await;

    card.fail();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    mosquitto.publish(topic, &format!(r#"{{"x": 7.0, "ts": {}}}"#, now_ms())).unwrap();
    let event = |name: &'static str| move |body: &serde_json::Value| body["rule"] == "tilt" && body["event"] == name;
    let count = |name: &'static str| receiver.bodies().iter().filter(|b| event(name)(b)).count();
    // The ladder: reminders every 1.5 s, escalated to the grid leader 4 s after the alarm.
    let escalated = wait_for(15 * SECOND, || {
        let n = count("escalated");
        async move { n >= 1 }
    })
    .await;
    assert_eq!(count("fired"), 1, "the alarm itself: {:?} {:?}", receiver.bodies(), daemon.stderr());
    assert!(
        escalated && count("reminder") >= 1,
        "no reminder or escalation for an alarm the store could not record: {:?} {:?}",
        receiver.bodies(),
        daemon.stderr()
    );
    let reminder = receiver.bodies().into_iter().find(|b| event("reminder")(b)).unwrap();
    assert!(reminder["messages"]["zh"].as_str().unwrap_or("").contains("未编号"), "no incident number to look up: {reminder}");

    // The wall comes back: the clear goes out and the ladder stops.
    mosquitto.publish(topic, &format!(r#"{{"x": 0.1, "ts": {}}}"#, now_ms())).unwrap();
    let cleared = wait_for(10 * SECOND, || {
        let n = count("cleared");
        async move { n >= 1 }
    })
    .await;
    assert!(cleared, "{:?}", daemon.stderr());
    let steps = count("reminder") + count("escalated");
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(count("reminder") + count("escalated"), steps, "the ladder went on after the clear: {:?}", receiver.bodies());
    daemon.kill_hard();
    drop(card);
}

/// A card that stalls instead of failing (writes block, no error): the alarm path must not wait
/// for it. A new alarm reaches people within seconds, the open alarm's ladder goes on, its clear
/// goes out, `/healthz` says so — and once the card writes again nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_that_stalls_holds_back_no_alarm_and_no_reminder() {
    let LadderBox { mosquitto, dir: _state_dir, card, receiver, mut daemon, topic, http_port } = LadderBox::start().await;
    let publish = |x: f64| mosquitto.publish(topic, &format!(r#"{{"x": {x}, "ts": {}}}"#, now_ms())).unwrap();
    let count = |rule: &'static str, event: &'static str| receiver.bodies().iter().filter(|b| b["rule"] == rule && b["event"] == event).count();
    let until = |rule: &'static str, event: &'static str, n: usize, within: std::time::Duration| {
        let started = std::time::Instant::now();
        async move {
            let reached = wait_for(within, || {
                let seen = count(rule, event);
                async move { seen >= n }
            })
            .await;
            reached.then(|| started.elapsed())
        }
    };
    publish(7.0);
    assert!(
        until("tilt", "fired", 1, 10 * SECOND).await.is_some(),
        "the alarm was not sent before the card stalled: {:?} {:?}",
        receiver.bodies(),
        daemon.stderr()
    );

    let stalled = card.stall();
    let stalled_at = now_ms();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    // A worse reading one second into the stall: its danger alarm goes out without the store.
    publish(12.0);
    let danger = until("tilt-far", "fired", 1, 15 * SECOND).await;
    // The open alarm's ladder (reminders every 1.5 s, the grid leader 4 s after the alarm) goes on.
    let escalated = until("tilt", "escalated", 1, 20 * SECOND).await;
    let health_during = health(http_port).await;
    // The wall comes back while the card still stalls: both clears reach people.
    publish(0.1);
    let cleared = until("tilt", "cleared", 1, 10 * SECOND).await;
    let danger_cleared = until("tilt-far", "cleared", 1, 10 * SECOND).await;
    let during: Vec<serde_json::Value> = receiver.bodies().into_iter().filter(|b| b["at_ms"].as_i64().unwrap_or(0) >= stalled_at).collect();
    let sent: Vec<String> = during.iter().map(|b| format!("{} {}", b["rule"], b["event"])).collect();
    println!("card stalled: danger alarm after {danger:?}, its clear after {danger_cleared:?}, clear after {cleared:?}; health {health_during:?}; sent meanwhile: {sent:?}");
    assert!(danger.is_some(), "the danger alarm never reached people while the card stalled: {sent:?} {:?}", daemon.stderr());
    assert!(escalated.is_some(), "the ladder stopped while the card stalled: {sent:?} {:?}", daemon.stderr());
    assert!(cleared.is_some() && danger_cleared.is_some(), "a clear never reached people while the card stalled: {sent:?} {:?}", daemon.stderr());
    let clear = during.iter().find(|b| b["rule"] == "tilt" && b["event"] == "cleared").unwrap();
    assert_eq!(clear["incident_id"], 1, "the clear does not name the incident it closes: {clear}");
    assert_eq!(health_during.0, 503, "/healthz while the card stalled: {health_during:?}");
    assert!(health_during.1.to_string().contains("stalled"), "{health_during:?}");

    // The card writes again: nothing goes out twice, health comes back. The incident the store
    // held keeps its ladder (sensor normal again, nobody accepted it) at its own pace; the danger
    // alarm the store never held stopped its ladder at its clear.
    drop(stalled);
    let ready = wait_for(30 * SECOND, || async { health(http_port).await.0 == 200 }).await;
    let far_steps = || count("tilt-far", "reminder") + count("tilt-far", "escalated");
    let (far_before, reminders_before) = (far_steps(), count("tilt", "reminder"));
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let reminders = count("tilt", "reminder") - reminders_before;
    for (rule, event) in [("tilt", "fired"), ("tilt", "cleared"), ("tilt-far", "fired"), ("tilt-far", "cleared")] {
        assert_eq!(count(rule, event), 1, "{rule} {event} sent again once the card wrote: {:?}", receiver.bodies());
    }
    assert_eq!(far_steps(), far_before, "the danger alarm's ladder went on after its clear: {:?}", receiver.bodies());
    assert!((1..=6).contains(&reminders), "{reminders} reminders in 6 s once the card wrote (every 1.5 s): {:?}", receiver.bodies());
    // What went out from memory is in the store now, in order: both incidents, sensor normal.
    let db = rusqlite::Connection::open(_state_dir.path().join("state/gridwatch.db")).unwrap();
    let incidents: Vec<(String, i64)> = db
        .prepare("SELECT rule, sensor_normal FROM incidents ORDER BY id")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(db);
    assert_eq!(incidents, [("tilt".to_string(), 1), ("tilt-far".to_string(), 1)], "{:?}", daemon.stderr());
    assert!(ready, "/healthz not ready 30 s after the card wrote again: {:?} {:?}", health(http_port).await, daemon.stderr());
    // And the next alarm is an ordinary one again, with its incident.
    publish(7.0);
    assert!(until("tilt", "fired", 2, 10 * SECOND).await.is_some(), "{:?}", daemon.stderr());
    let fired = receiver.bodies().into_iter().rfind(|b| b["rule"] == "tilt" && b["event"] == "fired").unwrap();
    assert!(fired["incident_id"].as_i64().is_some_and(|id| id > 0), "no incident once the card writes again: {fired}");
    daemon.kill_hard();
    drop(card);
}

/// A box rebooted with its card still read-only (systemd restarts the daemon): it must start and
/// carry on from what the card holds — the incident opened before the card failed keeps its
/// number, its clear names it, and a new alarm reaches people.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_restarted_on_a_read_only_card_starts_and_still_alarms() {
    restarted_on_a_read_only_card(false).await;
}

/// The same after a clean stop, which leaves no WAL files: SQLite cannot open such a store on a
/// read-only card the usual way, and the box started from an empty one (an outside tester: open
/// incidents forgotten, event ids and incident numbers given again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_stopped_cleanly_and_restarted_on_a_read_only_card_keeps_its_incidents() {
    restarted_on_a_read_only_card(true).await;
}

/// An outside tester: a card that filled while the daemon was down (its reserve included) made
/// every start fail (`database or disk is full`, or a disk I/O error), and systemd restarted it
/// for ever while nothing reached anyone. Now it starts with its store in memory, as on a
/// read-only card: `/healthz` says so, the clear names the incident, a new alarm goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_restarted_on_a_full_card_starts_and_still_alarms() {
    let LadderBox { mosquitto, dir, card: _card, receiver, mut daemon, topic, http_port } = LadderBox::start().await;
    let publish = |x: f64| mosquitto.publish(topic, &format!(r#"{{"x": {x}, "ts": {}}}"#, now_ms())).unwrap();
    let count = |rule: &'static str, event: &'static str| receiver.bodies().iter().filter(|b| b["rule"] == rule && b["event"] == event).count();
    publish(7.0);
    assert!(arrives(&count, "tilt", "fired", 10 * SECOND).await, "{:?}", daemon.stderr());
    // Stopped (a clean stop removes the WAL files, which the next start must create again).
    assert!(daemon.stop().success(), "{:?}", daemon.stderr());
    // Everything the card has left, to the last block (the daemon's reserve stays where it is).
    let filler = dir.path().join("state/filler");
    let _ = std::process::Command::new("dd").args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=64k"]).output();
    let _ = std::process::Command::new("sync").output();

    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let up = wait_for(15 * SECOND, || async { health(http_port).await.0 != 0 }).await;
    assert!(up, "the daemon did not start on the full card: {:?}", daemon.stderr());
    let (status, body) = health(http_port).await;
    assert_eq!(status, 503, "{body}");
    publish(0.1);
    assert!(arrives(&count, "tilt", "cleared", 15 * SECOND).await, "no clear after the restart: {:?} {:?}", receiver.bodies(), daemon.stderr());
    let clear = receiver.bodies().into_iter().find(|b| b["rule"] == "tilt" && b["event"] == "cleared").unwrap();
    assert_eq!(clear["incident_id"], 1, "{clear}");
    publish(12.0);
    let danger = arrives(&count, "tilt-far", "fired", 15 * SECOND).await;
    assert!(danger, "no alarm after the restart on the full card: {:?} {:?}", receiver.bodies(), daemon.stderr());
}

/// Whether an event of `rule` reaches the webhook within `within` (`count` counts them).
async fn arrives(count: &impl Fn(&'static str, &'static str) -> usize, rule: &'static str, event: &'static str, within: std::time::Duration) -> bool {
    wait_for(within, || {
        let n = count(rule, event);
        async move { n >= 1 }
    })
    .await
}

async fn restarted_on_a_read_only_card(clean_stop: bool) {
    let LadderBox { mosquitto, dir, mut card, receiver, mut daemon, topic, http_port } = LadderBox::start().await;
    let publish = |x: f64| mosquitto.publish(topic, &format!(r#"{{"x": {x}, "ts": {}}}"#, now_ms())).unwrap();
    let count = |rule: &'static str, event: &'static str| receiver.bodies().iter().filter(|b| b["rule"] == rule && b["event"] == event).count();
    publish(7.0);
    assert!(arrives(&count, "tilt", "fired", 10 * SECOND).await, "{:?}", daemon.stderr());
    if clean_stop {
        assert!(daemon.stop().success(), "{:?}", daemon.stderr());
        card.fail();
    } else {
        card.fail();
        daemon.kill_hard();
    }

    let mut daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let up = wait_for(15 * SECOND, || async { health(http_port).await.0 != 0 }).await;
    assert!(up, "the daemon did not start on the read-only card: {:?}", daemon.stderr());
    let (status, body) = health(http_port).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("read-only"), "{body}");
    assert!(!body.to_string().contains("full"), "a read-only card is not a full one: {body}");
    // The wall comes back: the clear names the incident opened before the card failed.
    publish(0.1);
    let cleared = wait_for(15 * SECOND, || {
        let n = count("tilt", "cleared");
        async move { n >= 1 }
    })
    .await;
    assert!(cleared, "no clear after the restart: {:?} {:?}", receiver.bodies(), daemon.stderr());
    let clear = receiver.bodies().into_iter().find(|b| b["rule"] == "tilt" && b["event"] == "cleared").unwrap();
    assert_eq!(clear["incident_id"], 1, "{clear}");
    assert!(!daemon.stderr().iter().any(|l| l.contains("starting from an empty one")), "{:?}", daemon.stderr());
    // A step from the command line could not be kept: it is refused and says why, not "accepted".
    let act =
        common::gridwatch().args(["incidents", "--config", "gridwatch.toml", "act", "1", "accept", "--by", "wang"]).current_dir(dir.path()).output().unwrap();
    let said = String::from_utf8_lossy(&act.stderr);
    assert!(!act.status.success() && said.contains("read-only"), "{act:?}");
    // And a new alarm reaches people.
    publish(12.0);
    let danger = wait_for(15 * SECOND, || {
        let n = count("tilt-far", "fired");
        async move { n >= 1 }
    })
    .await;
    assert!(danger, "no alarm after the restart on the read-only card: {:?} {:?}", receiver.bodies(), daemon.stderr());
    // Its ids are the copy's own, never ones the card gives once it writes again (a receiver
    // drops an event id it has seen).
    let raised = receiver.bodies().into_iter().find(|b| b["rule"] == "tilt-far" && b["event"] == "fired").unwrap();
    assert!(raised["event_id"].as_i64().is_some_and(|id| id >= 1_000_000_000), "{raised}");
    assert!(raised["incident_id"].as_i64().is_some_and(|id| id >= 1_000_000_000), "{raised}");

    // The card repaired while the runtime directory stays (systemd restarts the daemon): what
    // the copy in memory journaled is recorded on the card, and the alarm is not sent again.
    daemon.kill_hard();
    card.repair();
    let mut daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let writable = wait_for(15 * SECOND, || async { health(http_port).await.0 == 200 }).await;
    assert!(writable, "{:?} {:?}", health(http_port).await, daemon.stderr());
    publish(12.5);
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(count("tilt-far", "fired"), 1, "sent again after the repair: {:?} {:?}", receiver.bodies(), daemon.stderr());
    let store = gridwatch::store::Store::open(&dir.path().join("state")).unwrap();
    let open = store.recent_alerts(50).unwrap();
    assert!(open.iter().any(|a| a.rule == "tilt-far" && a.event == "fired"), "the alarm raised in memory is on the card: {open:?}");
    daemon.kill_hard();
    drop(store);
    drop(card);
}

/// An alarm first raised while the card stalls has its ladder run in memory; once the card
/// writes again its incident takes the ladder over where it got to — numbered and with links from
/// then on, not started again (no second first escalation, the second on time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_raised_while_the_card_stalls_keeps_its_ladder_once_the_card_writes_again() {
    let LadderBox { mosquitto, dir: _state_dir, card, receiver, mut daemon, topic, .. } = LadderBox::start().await;
    let publish = |x: f64| mosquitto.publish(topic, &format!(r#"{{"x": {x}, "ts": {}}}"#, now_ms())).unwrap();
    let bodies = |event: &'static str| receiver.bodies().into_iter().filter(move |b| b["rule"] == "tilt" && b["event"] == event).collect::<Vec<_>>();
    let stalled = card.stall();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let raised_at = std::time::Instant::now();
    publish(7.0);
    // The ladder: the grid leader 4 s after the alarm, again 12 s after it (not on site).
    let first_escalation = wait_for(20 * SECOND, || {
        let n = bodies("escalated").len();
        async move { n >= 1 }
    })
    .await;
    assert!(first_escalation, "no escalation from memory: {:?} {:?}", receiver.bodies(), daemon.stderr());
    drop(stalled);
    let thawed = raised_at.elapsed();
    let second_escalation = wait_for(25 * SECOND, || {
        let n = bodies("escalated").len();
        async move { n >= 2 }
    })
    .await;
    let second_after = raised_at.elapsed();
    let escalated = bodies("escalated");
    println!(
        "raised {thawed:?} before the thaw, second escalation after {second_after:?}; escalations at {:?}",
        escalated.iter().map(|b| (b["at"].clone(), b["incident_id"].clone())).collect::<Vec<_>>()
    );
    assert!(second_escalation, "the ladder stopped after the card wrote again: {:?} {:?}", receiver.bodies(), daemon.stderr());
    assert!(escalated[1]["messages"]["zh"].as_str().unwrap_or("").contains("第2级"), "the ladder started over: {escalated:?}");
    assert!(escalated[1]["incident_id"].as_i64().is_some(), "the incident's ladder has no number: {:?}", escalated[1]);
    assert!((10..=16).contains(&second_after.as_secs()), "the second escalation is due 12 s after the alarm, it came after {second_after:?}: {escalated:?}");
    publish(0.1);
    let cleared = wait_for(10 * SECOND, || {
        let n = bodies("cleared").len();
        async move { n >= 1 }
    })
    .await;
    assert!(cleared, "{:?}", daemon.stderr());
    assert_eq!(bodies("cleared")[0]["incident_id"], escalated[1]["incident_id"], "{:?}", receiver.bodies());
    assert_eq!(bodies("fired").len(), 1, "{:?}", receiver.bodies());
    daemon.kill_hard();
    drop(card);
}
