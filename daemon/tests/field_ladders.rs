//! Reminders and escalations sent from memory while the SD card could not record them, across
//! restarts: the state directory is a loop-mounted ext4 image made read-only under the running
//! daemon (`common::sd_card`), the daemon is killed (systemd restarts it; the runtime directory
//! is kept) once or twice on the read-only card, and the card is repaired and the daemon started
//! again. What reaches a real webhook receiver is counted per ladder: each reminder number and
//! each escalation level once, reminder numbers never going backwards, and the ladder going on
//! after each restart. An outside tester got every step sent from memory again at each restart
//! (up to 3 times each) and "reminder 3" followed by "reminder 1".
//!
//! Loop mounts need root (CAP_SYS_ADMIN), as `.ci/run` on a fresh Debian machine has: without it
//! these tests fail and say so.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::sd_card::SdCard;
use common::{card_box_config, publish_until_evaluated, Daemon, ALARM_LADDER_ROSTER, SECOND};
use gridwatch_tests::{free_port, now_ms, wait_for, Mosquitto, WebhookReceiver};
use std::collections::BTreeSet;

/// The two sensors: `house-07` alarms while the card writes (its incident is on the card),
/// `house-08` once the card is read-only (its ladder starts in memory).
const SENSORS: [&str; 2] = ["house-07", "house-08"];

/// A box with two tilt sensors (alarm above 5) in one grid, the alarm ladder's roster (reminders
/// every 1.5 s, escalated 4 s and 12 s after the alarm), a webhook receiver, its state directory
/// on an SD card and a runtime directory beside it.
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
        let config = card_box_config("gw-field-ladders", &mosquitto.url(), &receiver.url(), http_port, &SENSORS, "", "");
        std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
        std::fs::write(dir.path().join("roster.toml"), ALARM_LADDER_ROSTER).unwrap();
        std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nid = \"tilt\"\nvalue = \"x\"\nabove = 5\nseverity = \"alarm\"\n").unwrap();
        FieldBox { mosquitto, dir, card, receiver, http_port }
    }

    fn start(&self) -> Daemon {
        Daemon::start(&["run", "--config", "gridwatch.toml"], self.dir.path())
    }

    fn publish(&self, sensor: &str, x: f64) {
        self.mosquitto.publish(&format!("gridwatch/north-lane/{sensor}/telemetry"), &format!(r#"{{"x": {x}, "ts": {}}}"#, now_ms())).unwrap();
    }

    /// The ladder steps of `sensor` that reached the receiver, in order: ("reminder", its number)
    /// or ("escalated", its level). A copy of a journaled step (the same `event_id`, a re-send
    /// after a kill) is one step: receivers drop an id they have seen.
    fn steps(&self, sensor: &str) -> Vec<(String, u32)> {
        let mut seen = BTreeSet::new();
        self.receiver
            .bodies()
            .into_iter()
            .filter(|b| b["sensor"] == sensor && (b["event"] == "reminder" || b["event"] == "escalated"))
            .filter(|b| b["event_id"].as_i64().is_none_or(|id| seen.insert(id)))
            .map(|b| {
                let words = b["messages"]["en"].as_str().unwrap_or_default().to_string();
                let number = |prefix: &str| words.strip_prefix(prefix).and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
                let number = number("Reminder ").or_else(|| number("Escalated (level ")).unwrap_or_else(|| panic!("a step without its number: {b}"));
                (b["event"].as_str().unwrap().to_string(), number)
            })
            .collect()
    }

    /// Waits until each sensor's ladder has sent `more` steps past `before` (counted per sensor).
    async fn ladders_go_on(&self, before: &[usize], more: usize, daemon: &Daemon) {
        let went_on = wait_for(20 * SECOND, || {
            let done = SENSORS.iter().zip(before).all(|(sensor, n)| self.steps(sensor).len() >= n + more);
            async move { done }
        })
        .await;
        assert!(went_on, "a ladder stopped: {:?} {:?}", SENSORS.map(|s| self.steps(s)), daemon.stderr());
    }

    fn step_counts(&self) -> Vec<usize> {
        SENSORS.iter().map(|s| self.steps(s).len()).collect()
    }

    /// Each sensor's ladder: every reminder number and escalation level once, in order.
    fn assert_each_step_once(&self, daemon: &Daemon) {
        for sensor in SENSORS {
            let steps = self.steps(sensor);
            for event in ["reminder", "escalated"] {
                let numbers: Vec<u32> = steps.iter().filter(|(e, _)| e == event).map(|(_, n)| *n).collect();
                assert!(
                    numbers.windows(2).all(|pair| pair[0] < pair[1]),
                    "{sensor}: {event} numbers sent again or going backwards: {numbers:?} (all steps {steps:?}) {:?}",
                    daemon.stderr()
                );
            }
        }
        let fired = self.receiver.bodies().iter().filter(|b| b["event"] == "fired").count();
        assert_eq!(fired, 2, "each alarm once: {:?}", self.receiver.bodies());
    }
}

/// The alarms and the card's failure: `house-07` alarms and is reminded from the card, the card
/// goes read-only, `house-08` alarms, and both ladders send steps from memory.
async fn alarms_then_card_fails(b: &FieldBox) -> Daemon {
    let daemon = b.start();
    let up =
        publish_until_evaluated(&b.mosquitto, "gridwatch/north-lane/house-07/telemetry", || format!(r#"{{"x": 0.1, "ts": {}}}"#, now_ms()), b.http_port).await;
    assert!(up, "{:?}", daemon.stderr());
    b.publish("house-07", 7.0);
    let reminded = wait_for(10 * SECOND, || {
        let n = b.steps("house-07").len();
        async move { n >= 1 }
    })
    .await;
    assert!(reminded, "no reminder while the card wrote: {:?} {:?}", b.receiver.bodies(), daemon.stderr());
    b.card.fail();
    b.publish("house-08", 7.0);
    // From memory: house-07's escalation at 4 s and reminders, house-08's first steps.
    b.ladders_go_on(&[1, 0], 3, &daemon).await;
    daemon
}

/// Killed `read_only_restarts` times on the read-only card (each run sends steps of its own),
/// then, when `repair`, killed, the card repaired and started again.
async fn ladders_across_restarts(read_only_restarts: usize, repair: bool) {
    let mut b = FieldBox::new().await;
    let mut daemon = alarms_then_card_fails(&b).await;
    for _ in 0..read_only_restarts {
        daemon.kill_hard();
        let before = b.step_counts();
        daemon = b.start();
        b.ladders_go_on(&before, 3, &daemon).await;
        b.assert_each_step_once(&daemon);
    }
    if repair {
        daemon.kill_hard();
        b.card.repair();
        let before = b.step_counts();
        daemon = b.start();
        b.ladders_go_on(&before, 3, &daemon).await;
        // Recorded on the card, then forgotten beside it.
        let forgotten = wait_for(10 * SECOND, || async { !b.dir.path().join("run/sent-from-memory.jsonl").exists() }).await;
        assert!(forgotten, "what was sent from memory is still kept beside the repaired card: {:?}", daemon.stderr());
    }
    b.assert_each_step_once(&daemon);
    println!("steps: {:?}", SENSORS.map(|s| b.steps(s)));
    daemon.kill_hard();
    if repair {
        // The card's incident says what people got while it was read-only.
        let store = gridwatch::store::Store::open(&b.dir.path().join("state")).unwrap();
        let trail = store.incident_history(1).unwrap();
        assert!(trail.iter().any(|e| e.action.starts_with("escalated") && e.action.ends_with("(sent from memory: the card could not record it)")), "{trail:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ladder_steps_sent_from_memory_are_not_sent_again_after_a_restart_on_the_read_only_card() {
    ladders_across_restarts(1, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ladder_steps_sent_from_memory_are_not_sent_again_after_two_restarts_and_a_repair() {
    ladders_across_restarts(2, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ladder_steps_sent_from_memory_are_not_sent_again_once_the_card_is_repaired() {
    ladders_across_restarts(0, true).await;
}
