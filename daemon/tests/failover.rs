//! Failover between alert channels (`[alerts.failover]`): an alarm a channel cannot deliver —
//! it keeps failing, or its robot throttles for minutes — reaches the next channel, journaled
//! there too, and the accounts of both channels balance. Its clear follows it there, and not to
//! the first channel, which never delivered the alarm.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{publish_until_evaluated, wait_balanced, Daemon, SECOND};
use gridwatch_tests::{free_port, wait_for, Mosquitto, WebhookReceiver};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const TOPIC: &str = "gridwatch/east-canal/canal-02/telemetry";

/// A configuration with `channels`; `standby` belongs to another grid in the roster, so this
/// sensor's alerts reach it only as the failover of another channel.
fn write_config(dir: &Path, mosquitto: &Mosquitto, http_port: u16, channels: &str, standby: &str) {
    let config = format!(
        "state_dir = \"state\"\n\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-failover-{http_port}\"\n\n[[sensor]]\nid = \"canal-02\"\nkind = \"water\"\nsite = \"east-canal\"\n\n[rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n\n[alerts]\nconsole = false\n{channels}\n[dispatch]\nroster = \"roster.toml\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
        mosquitto.url()
    );
    std::fs::write(dir.join("gridwatch.toml"), config).unwrap();
    std::fs::write(dir.join("roster.toml"), format!("[[grid]]\nid = \"elsewhere\"\nchannels = [\"{standby}\"]\n")).unwrap();
    std::fs::write(dir.join("rules.toml"), "[[rule]]\nid = \"do-low\"\nvalue = \"do\"\nbelow = 5\nseverity = \"alarm\"\n").unwrap();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn sink<'a>(accounts: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    accounts["sinks"].as_array().unwrap().iter().find(|s| s["sink"] == name).unwrap()
}

fn counts(sink: &serde_json::Value) -> [u64; 4] {
    ["taken_on", "delivered", "dropped", "pending"].map(|k| sink[k].as_u64().unwrap())
}

/// Channels: the office's webhook (two attempts) failing over to a backup webhook.
fn office_failing_over_to(office: &WebhookReceiver, backup: &WebhookReceiver) -> String {
    format!(
        "\n[[alerts.webhook]]\nname = \"office\"\nurl = \"{}\"\nmax_attempts = 2\ntimeout_secs = 2\n\n[[alerts.webhook]]\nname = \"backup\"\nurl = \"{}\"\n\n[alerts.failover]\noffice = \"backup\"\n",
        office.url(),
        backup.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_the_first_channel_cannot_deliver_goes_to_the_next() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    // The office's receiver is broken (HTTP 500 to everything); the backup works.
    let office = WebhookReceiver::start(vec![500; 100]).await;
    let backup = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let channels = office_failing_over_to(&office, &backup);
    // Only the office gets the alert at first; the backup only as its failover.
    write_config(dir.path(), &mosquitto, http_port, &channels, "backup");

    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let up = publish_until_evaluated(&mosquitto, TOPIC, || format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms()), http_port).await;
    assert!(up, "{:?}", daemon.stderr());
    mosquitto.publish(TOPIC, &format!(r#"{{"do": 3.0, "ts": {}}}"#, now_ms())).unwrap();

    let arrived = wait_for(20 * SECOND, || async { !backup.bodies().is_empty() }).await;
    assert!(arrived, "{:?}", daemon.stderr());
    assert_eq!(office.requests(), 2, "the office was tried as often as it is configured to be");
    let alert = backup.bodies().remove(0);
    assert_eq!((alert["rule"].as_str(), alert["event"].as_str()), (Some("do-low"), Some("fired")));
    let accounts = wait_balanced(http_port).await.unwrap_or_else(|a| panic!("accounts do not balance: {a}"));
    assert_eq!(counts(sink(&accounts, "office")), [1, 0, 1, 0], "{accounts}");
    assert_eq!(counts(sink(&accounts, "backup")), [1, 1, 0, 0], "{accounts}");
    assert!(
        daemon.stderr().iter().any(|l| l.contains("alert handed to the failover channel") && l.contains("from=office") && l.contains("to=backup")),
        "{:?}",
        daemon.stderr()
    );
}

/// A DingTalk robot stand-in that is over its limit: every message is answered errcode 90030
/// (DingTalk then throttles for 10 minutes).
async fn throttled_robot() -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/robot/send",
        axum::routing::post(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                axum::Json(serde_json::json!({"errcode": 90030, "errmsg": "send too fast, exceed 20 times per minute"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let url = format!("http://{}/robot/send?access_token=t0ken", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_robot_hands_the_alarm_over_instead_of_waiting_ten_minutes() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let (robot_url, robot_calls) = throttled_robot().await;
    let sms_office = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let channels = format!(
        "\n[[alerts.dingtalk]]\nname = \"grid-3\"\nurl = \"{robot_url}\"\n\n[[alerts.webhook]]\nname = \"duty-phone\"\nurl = \"{}\"\n\n[alerts.failover]\ngrid-3 = \"duty-phone\"\n",
        sms_office.url()
    );
    write_config(dir.path(), &mosquitto, http_port, &channels, "duty-phone");

    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let up = publish_until_evaluated(&mosquitto, TOPIC, || format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms()), http_port).await;
    assert!(up, "{:?}", daemon.stderr());
    let published = now_ms();
    mosquitto.publish(TOPIC, &format!(r#"{{"do": 3.0, "ts": {published}}}"#)).unwrap();

    let arrived = wait_for(20 * SECOND, || async { !sms_office.bodies().is_empty() }).await;
    assert!(arrived, "{:?}", daemon.stderr());
    assert!(now_ms() - published < 10_000, "handed over at once, not after the robot's throttle");
    assert_eq!(robot_calls.load(Ordering::SeqCst), 1, "one try; a throttled robot is not hammered");
    let accounts = wait_balanced(http_port).await.unwrap_or_else(|a| panic!("accounts do not balance: {a}"));
    assert_eq!(counts(sink(&accounts, "grid-3")), [1, 0, 1, 0], "{accounts}");
    assert_eq!(counts(sink(&accounts, "duty-phone")), [1, 1, 0, 0], "{accounts}");

    // The next alarm does not even try the throttled robot.
    mosquitto.publish(TOPIC, &format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms())).unwrap();
    let cleared = wait_for(20 * SECOND, || async { sms_office.bodies().len() >= 2 }).await;
    assert!(cleared, "{:?}", daemon.stderr());
    assert_eq!(sms_office.bodies()[1]["event"].as_str(), Some("cleared"));
    assert_eq!(robot_calls.load(Ordering::SeqCst), 1, "the robot is still throttled: no second try");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clear_of_an_alarm_handed_over_goes_where_the_alarm_went() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    // The office's receiver fails the alarm's two attempts, then works again.
    let office = WebhookReceiver::start(vec![500, 500]).await;
    let backup = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let channels = office_failing_over_to(&office, &backup);
    write_config(dir.path(), &mosquitto, http_port, &channels, "backup");
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let up = publish_until_evaluated(&mosquitto, TOPIC, || format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms()), http_port).await;
    assert!(up, "{:?}", daemon.stderr());
    mosquitto.publish(TOPIC, &format!(r#"{{"do": 3.0, "ts": {}}}"#, now_ms())).unwrap();
    let handed_over = wait_for(20 * SECOND, || async { !backup.bodies().is_empty() }).await;
    assert!(handed_over, "{:?}", daemon.stderr());
    // The office is back when the water recovers.
    mosquitto.publish(TOPIC, &format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms())).unwrap();
    let cleared = wait_for(20 * SECOND, || async { backup.bodies().len() >= 2 }).await;
    assert!(cleared, "the backup, which got the alarm, never heard it was over: {:?}", daemon.stderr());
    let events: Vec<String> = backup.bodies().iter().map(|b| b["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(events, ["fired", "cleared"], "the backup got the alarm and its clear, in order");
    let accounts = wait_balanced(http_port).await.unwrap_or_else(|a| panic!("accounts do not balance: {a}"));
    assert!(office.bodies().is_empty(), "the office was told of a clear of an alarm it never got: {:?}", office.bodies());
    assert_eq!(counts(sink(&accounts, "office")), [2, 0, 2, 0], "{accounts}");
    assert_eq!(counts(sink(&accounts, "backup")), [2, 2, 0, 0], "{accounts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_robot_s_alarm_and_its_clear_both_reach_the_phone_by_sms() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let (robot_url, _robot_calls) = throttled_robot().await;
    let gateway = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let config = format!(
        "state_dir = \"state\"\n\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-failover-sms-{http_port}\"\n\n\
         [[sensor]]\nid = \"canal-02\"\nkind = \"water\"\nsite = \"east-canal\"\ngrid = \"grid-3\"\n\n\
         [rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n\n[alerts]\nconsole = false\n\n\
         [[alerts.dingtalk]]\nname = \"grid-3-robot\"\nurl = \"{robot_url}\"\n\n\
         [[alerts.sms]]\nname = \"sms\"\nurl = \"{}\"\nbody = '{{\"phone\": \"{{phone}}\", \"msg\": \"{{message}}\"}}'\n\n\
         [alerts.failover]\ngrid-3-robot = \"sms\"\n\n[dispatch]\nroster = \"roster.toml\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
        mosquitto.url(),
        gateway.url()
    );
    std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
    // The grid's channel is the robot; the SMS gateway takes only what the robot hands over.
    std::fs::write(
        dir.path().join("roster.toml"),
        "[[grid]]\nid = \"grid-3\"\nchannels = [\"grid-3-robot\"]\n\n[[member]]\nid = \"wang\"\nname = \"王芳\"\nrole = \"worker\"\nphone = \"13800000001\"\ngrids = [\"grid-3\"]\n\n\
         [[shift]]\nmember = \"wang\"\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\nfrom = \"00:00\"\nto = \"00:00\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nid = \"do-low\"\nvalue = \"do\"\nbelow = 5\nseverity = \"alarm\"\n").unwrap();
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let up = publish_until_evaluated(&mosquitto, TOPIC, || format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms()), http_port).await;
    assert!(up, "{:?}", daemon.stderr());
    mosquitto.publish(TOPIC, &format!(r#"{{"do": 3.0, "ts": {}}}"#, now_ms())).unwrap();
    assert!(wait_for(20 * SECOND, || async { !gateway.bodies().is_empty() }).await, "the alarm was not texted: {:?}", daemon.stderr());
    mosquitto.publish(TOPIC, &format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms())).unwrap();
    let cleared = wait_for(20 * SECOND, || async { gateway.bodies().len() >= 2 }).await;
    let texts: Vec<String> = gateway.bodies().iter().map(|b| format!("{} {}", b["phone"].as_str().unwrap(), b["msg"].as_str().unwrap())).collect();
    assert!(cleared, "the phone that got the alarm never heard it was over: {texts:?} {:?}", daemon.stderr());
    assert!(texts[0].starts_with("13800000001 【") && texts[0].contains("#1"), "{texts:?}");
    assert!(texts[1].starts_with("13800000001 【已恢复】#1 "), "{texts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_that_comes_while_its_alarm_is_still_being_retried_follows_it_to_the_failover() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    // The office fails the alarm's two attempts (half a second apart), then works again; the
    // water recovers at once, so the clear waits behind the alarm in the office's queue.
    let office = WebhookReceiver::start(vec![500, 500]).await;
    let backup = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let channels = office_failing_over_to(&office, &backup);
    write_config(dir.path(), &mosquitto, http_port, &channels, "backup");
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let up = publish_until_evaluated(&mosquitto, TOPIC, || format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms()), http_port).await;
    assert!(up, "{:?}", daemon.stderr());
    let at = now_ms();
    mosquitto.publish(TOPIC, &format!(r#"{{"do": 3.0, "ts": {at}}}"#)).unwrap();
    mosquitto.publish(TOPIC, &format!(r#"{{"do": 7.0, "ts": {}}}"#, at + 100)).unwrap();
    let both = wait_for(20 * SECOND, || async { backup.bodies().len() >= 2 }).await;
    let events: Vec<String> = backup.bodies().iter().map(|b| b["event"].as_str().unwrap().to_string()).collect();
    assert!(both, "the backup got {events:?}: {:?}", daemon.stderr());
    assert_eq!(events, ["fired", "cleared"]);
    wait_balanced(http_port).await.unwrap_or_else(|a| panic!("accounts do not balance: {a}"));
    assert!(office.bodies().is_empty(), "the office was told of a clear of an alarm it never got: {:?}", office.bodies());
}
