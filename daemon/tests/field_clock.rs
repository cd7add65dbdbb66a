//! A Raspberry Pi's clock, the way the field has it: the real `gridwatch` binary runs under
//! libfaketime (Debian's `faketime` package) with its wall clock days behind, at 1970, or an hour
//! ahead, and the clock is stepped mid-run (`FAKETIME_TIMESTAMP_FILE` rewritten,
//! `FAKETIME_NO_CACHE=1`; the monotonic clock stays real, as NTP leaves it). Devices send their
//! true time. What reaches people is counted at a real HTTP webhook receiver:
//!
//! - every alarm the devices' readings call for is raised, labelled with the device's time;
//! - a sensor that really goes silent raises no-data, the others do not (no mass no-data);
//! - after the step at most one reminder and one escalation level come in the next seconds;
//! - nothing stamped 1970 (or days off) reaches a person: "time unknown" until the clock is set,
//!   then re-stamped: the incident (CLI, incidents page) and the next reminder's `since` carry the
//!   true time of an alarm the box stamped while its clock was at 1970;
//! - nor a receiving system: while the clock is not set a reminder's `at_ms` is its alarm's
//!   device time plus the ladder's age, not the box's clock;
//! - a worker's link from the first alarm, signed by the clock three days behind, still opens and
//!   acts once NTP set the clock (also after a restart), for its own hour and no longer.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{publish_until_evaluated, Daemon, SECOND};
use gridwatch_tests::{free_port, now_ms, wait_for, Mosquitto, WebhookReceiver};
use std::path::{Path, PathBuf};

const ROSTER: &str = r#"
[[grid]]
id = "grid-5"

[[member]]
id = "wang"
name = "王芳"
role = "worker"
grids = ["grid-5"]

[[member]]
id = "chen"
name = "陈刚"
role = "grid_leader"
grids = ["grid-5"]

[[shift]]
member = "wang"
days = [DAYS]
from = "00:00"
to = "00:00"

[[policy]]
severity = "alarm"
accept_within = "9s"
on_site_within = "18s"
remind_every = "3s"
escalate_to = [["grid_leader"]]
"#;

/// `gridwatch run` in `dir` under libfaketime (see [`Daemon::start_with_faked_clock`]).
fn run_with_faked_clock(dir: &Path, faked: &str) -> (Daemon, PathBuf) {
    Daemon::start_with_faked_clock(&["run", "--config", "gridwatch.toml"], dir, faked)
}

/// The boxes' link secret: the test signs links of its own with it.
const LINK_SECRET: &str = "a-link-secret-of-enough-length";

fn write_config(dir: &Path, mosquitto: &Mosquitto, http_port: u16, hook_port: u16) {
    let flag = dir.join("synchronized");
    let config = format!(
        "state_dir = \"state\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-field-clock-{http_port}\"\n\
         [[sensor]]\nid = \"canal-02\"\nkind = \"water\"\nsite = \"east-canal\"\ngrid = \"grid-5\"\ninterval_secs = 2\n\
         [[sensor]]\nid = \"canal-03\"\nkind = \"water\"\nsite = \"east-canal\"\ngrid = \"grid-5\"\n\
         [[sensor]]\nid = \"canal-04\"\nkind = \"water\"\nsite = \"east-canal\"\ngrid = \"grid-5\"\ninterval_secs = 2\n\
         [ingest]\nclock_synchronized = \"{}\"\n\
         [rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n[alerts]\nconsole = false\n[[alerts.webhook]]\nname = \"office\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\npublic_url = \"http://127.0.0.1:{http_port}\"\nlink_secret = \"{LINK_SECRET}\"\nlink_valid_hours = 1\n\
         [dispatch]\nroster = \"roster.toml\"\n",
        mosquitto.url(),
        flag.display()
    );
    std::fs::write(dir.join("gridwatch.toml"), config).unwrap();
    let rules =
        "[[rule]]\nid = \"do-low\"\nvalue = \"do\"\nbelow = 5\nseverity = \"alarm\"\nmessage = { zh = \"{sensor}溶解氧偏低，自{since}起\" }\n\n[[rule]]\nid = \"silent\"\nno_data = \"6s\"\nseverity = \"warning\"\n";
    std::fs::write(dir.join("rules.toml"), rules).unwrap();
    std::fs::write(dir.join("roster.toml"), ROSTER.replace("DAYS", &on_duty_days())).unwrap();
}

/// Wang's shift: today and tomorrow in China, not the days a box clock days behind (or at 1970)
/// reads, unless by chance.
fn on_duty_days() -> String {
    let china = chrono::Utc::now() + chrono::Duration::hours(8);
    [china, china + chrono::Duration::days(1)].iter().map(|day| format!("\"{}\"", day.format("%a").to_string().to_lowercase())).collect::<Vec<_>>().join(", ")
}

fn bodies(receiver: &WebhookReceiver, event: &str) -> Vec<serde_json::Value> {
    receiver.bodies().into_iter().filter(|b| b["event"] == event).collect()
}

fn no_data_of(receiver: &WebhookReceiver, sensor: &str) -> usize {
    bodies(receiver, "fired").iter().filter(|b| b["rule"] == "silent" && b["sensor"] == sensor).count()
}

/// A label a person reads: "time unknown", or a time within five minutes of the true one (the
/// test runs about half a minute; the clocks it steps are an hour or days off). A sensor whose
/// first reading was buffered 50 s has its no-data labelled up to 50 s early for its first
/// minute on a box whose clock is not set (its readings land ahead of their arrival until then,
/// `timeline.rs`), so a minute's tolerance failed now and then.
fn believable(label: &str) -> bool {
    label == "time unknown" || chrono::DateTime::parse_from_rfc3339(label).is_ok_and(|t| (t.timestamp_millis() - now_ms()).abs() < 300_000)
}

/// Runs the daemon with its wall clock at `faked` (libfaketime's syntax) and not synchronised;
/// once the alarm's ladder runs, NTP "steps" it to the true time and timesyncd's flag appears.
async fn clock_stepped_mid_run(faked: &str) {
    let mosquitto = std::sync::Arc::new(Mosquitto::start().await.expect("mosquitto"));
    let receiver = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, http_port, receiver.port());
    let (mut daemon, faketime_file) = run_with_faked_clock(dir.path(), faked);

    let topic = |sensor: &str| format!("gridwatch/east-canal/{sensor}/telemetry");
    let up = publish_until_evaluated(&mosquitto, &topic("canal-02"), || format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms()), http_port).await;
    assert!(up, "{:?}", daemon.stderr());
    // canal-03 sends a reading it buffered 50 s ago, then a live one, and goes silent (a box
    // whose clock is not set learned its offset from the buffered one and placed the live one
    // 50 s ahead: its no-data came 50 s late); canal-02 and canal-04 keep reporting their true
    // time.
    mosquitto.publish(&topic("canal-03"), &format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms() - 50_000)).unwrap();
    mosquitto.publish(&topic("canal-03"), &format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms())).unwrap();
    let alarm_ts = now_ms();
    mosquitto.publish(&topic("canal-02"), &format!(r#"{{"do": 3.0, "ts": {alarm_ts}}}"#)).unwrap();
    let keep_reporting = {
        let mosquitto = mosquitto.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(700)).await;
                let mosquitto = mosquitto.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = mosquitto.publish("gridwatch/east-canal/canal-02/telemetry", &format!(r#"{{"do": 3.0, "ts": {}}}"#, now_ms()));
                    let _ = mosquitto.publish("gridwatch/east-canal/canal-04/telemetry", &format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms()));
                })
                .await;
            }
        })
    };

    // The alarm the device's reading calls for is raised, in the device's time.
    let fired = wait_for(10 * SECOND, || async { bodies(&receiver, "fired").iter().any(|b| b["rule"] == "do-low") }).await;
    assert!(fired, "the alarm was not raised: {:?} {:?}", receiver.bodies(), daemon.stderr());
    let alarm = bodies(&receiver, "fired").into_iter().find(|b| b["rule"] == "do-low").unwrap();
    let device_time = chrono::DateTime::from_timestamp_millis(alarm_ts).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // Within a second: a CI run on a loaded machine labelled it 38 ms earlier (its place on the
    // engine's timeline); people read minutes, and the box's clock is hours or days off.
    assert!(stamped_near(&alarm["at"], alarm_ts, 1_000), "labelled with the device's own time {device_time}: {}", alarm["at"]);
    assert_eq!(alarm["recipients"], serde_json::json!(["王芳"]), "whose shift it is by the device's time, not the box's wrong clock");
    // Its words too: `{since}` in the device's time, not the box's wrong clock.
    let local_day =
        chrono::DateTime::from_timestamp_millis(alarm_ts).unwrap().with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap()).format("自%-m月%-d日");
    let words = alarm["messages"]["zh"].as_str().unwrap_or_default();
    assert!(words.contains(&local_day.to_string()), "a person reads {words:?} for an alarm of {device_time}");

    // The silent sensor raises no-data; its reporting neighbours do not.
    let silent = wait_for(15 * SECOND, || async { no_data_of(&receiver, "canal-03") == 1 }).await;
    assert!(silent, "a sensor that went silent raised nothing: {:?}", receiver.bodies());
    // Nor does /healthz call them silent (every 2 s is their interval), whatever the box clock
    // says against their own times.
    let health = reqwest::get(format!("http://127.0.0.1:{http_port}/healthz")).await.unwrap().text().await.unwrap();
    assert!(!health.contains("canal-02") && !health.contains("canal-04"), "sensors reporting on time named silent: {health}");

    // The ladder runs; then the clock steps to the true time.
    assert!(wait_for(10 * SECOND, || async { !bodies(&receiver, "reminder").is_empty() }).await, "no reminder: {:?}", daemon.stderr());
    assert_eq!(bodies(&receiver, "reminder")[0]["at"], "time unknown", "the clock is not set yet");
    let (reminders, escalations) = (bodies(&receiver, "reminder").len(), bodies(&receiver, "escalated").len());
    std::fs::write(&faketime_file, "+0").unwrap();
    std::fs::write(dir.path().join("synchronized"), b"").unwrap();
    tokio::time::sleep(5 * SECOND / 2).await;
    let (after_reminders, after_escalations) = (bodies(&receiver, "reminder").len() - reminders, bodies(&receiver, "escalated").len() - escalations);
    assert!(
        after_reminders <= 1 && after_escalations <= 1,
        "a burst after the step: {after_reminders} reminder(s), {after_escalations} escalation(s) in 2.5 s"
    );

    // The ladder goes on after the step, labelled in true time.
    let escalated = wait_for(15 * SECOND, || async {
        bodies(&receiver, "escalated").len() > escalations || bodies(&receiver, "reminder").len() > reminders + after_reminders
    })
    .await;
    assert!(escalated, "the ladder stopped after the step: {:?}", receiver.bodies());
    keep_reporting.abort();
    let last = receiver.bodies().into_iter().rev().find(|b| b["event"] == "reminder" || b["event"] == "escalated").unwrap();
    assert_ne!(last["at"], "time unknown", "the clock is set now: {last}");

    for body in receiver.bodies() {
        for key in ["at", "since"] {
            let label = body[key].as_str().unwrap_or_default();
            assert!(believable(label), "a person read {key} = {label:?} at {}: {body}", now_ms());
        }
        // Nor the box's wrong clock in what a receiving system reads: a reminder "time unknown"
        // carried it in `at_ms` (1970, days behind, an hour ahead); now its alarm's (device)
        // time plus the ladder's age.
        let at_ms = body["at_ms"].as_i64().unwrap_or_default();
        assert!((at_ms - now_ms()).abs() < 300_000, "a receiver read at_ms = {at_ms} at {}: {body}", now_ms());
    }
    assert_eq!(
        (no_data_of(&receiver, "canal-02"), no_data_of(&receiver, "canal-04")),
        (0, 0),
        "no-data for sensors that kept reporting: {:?}",
        receiver.bodies()
    );
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_three_days_behind_raises_every_alarm_and_its_ntp_step_bursts_nothing() {
    clock_stepped_mid_run("-3d").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_that_booted_at_1970_stamps_nothing_1970_for_people() {
    clock_stepped_mid_run("@1970-01-02 00:00:00").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepped_back_an_hour_keeps_the_ladder_and_no_data_running() {
    clock_stepped_mid_run("+1h").await;
}

/// A box whose clock is synchronised is stepped back an hour (set by hand, a wrong time source;
/// the flag stays up): the devices' correct times are not refused as ahead of it, and the alarm
/// their readings call for is raised at once (an outside tester's tilting house raised nothing
/// for the hour, and every sensor got a "device clock" warning and a false no-data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronised_clock_stepped_back_an_hour_refuses_no_device_s_time() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let receiver = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, http_port, receiver.port());
    std::fs::write(dir.path().join("synchronized"), b"").unwrap();
    let (daemon, faketime_file) = run_with_faked_clock(dir.path(), "+0");
    let topic = "gridwatch/east-canal/canal-02/telemetry";
    let up = publish_until_evaluated(&mosquitto, topic, || format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms()), http_port).await;
    assert!(up, "{:?}", daemon.stderr());

    std::fs::write(&faketime_file, "-1h").unwrap();
    tokio::time::sleep(SECOND).await;
    mosquitto.publish(topic, &format!(r#"{{"do": 3.0, "ts": {}}}"#, now_ms())).unwrap();
    let fired = wait_for(10 * SECOND, || async { bodies(&receiver, "fired").iter().any(|b| b["rule"] == "do-low") }).await;
    assert!(fired, "the alarm was not raised: {:?} {:?}", receiver.bodies(), daemon.stderr());
    let text = common::metrics(http_port).await;
    assert_eq!(common::metric(&text, r#"gridwatch_payloads_rejected_total{reason="ahead_of_clock"}"#), Some(0.0), "{text}");
}

/// The stamps of a time people read: RFC 3339 within `tolerance_ms` of `expected_ms`.
fn stamped_near(label: &serde_json::Value, expected_ms: i64, tolerance_ms: i64) -> bool {
    label.as_str().and_then(|l| chrono::DateTime::parse_from_rfc3339(l).ok()).is_some_and(|t| (t.timestamp_millis() - expected_ms).abs() <= tolerance_ms)
}

/// `gridwatch incidents show <id> -o json` on the daemon's store (the CLI runs on the true clock).
fn incident_json(dir: &Path, id: i64) -> serde_json::Value {
    let shown = common::gridwatch().args(["incidents", "--config", "gridwatch.toml", "-o", "json", "show", &id.to_string()]).current_dir(dir).output().unwrap();
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    serde_json::from_slice(&shown.stdout).unwrap()
}

/// A box booted at 1970 whose readings carry no time of their own: its alarm reaches people as
/// "time unknown"; once NTP sets the clock (step + timesyncd's flag) the incident, its audit
/// trail and the alarm its later reminders quote are re-stamped to the true time — the CLI, the
/// incidents page and the next reminder's `since` show it, nothing says 1970.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_1970_box_stamped_is_re_stamped_once_ntp_sets_its_clock() {
    let mosquitto = std::sync::Arc::new(Mosquitto::start().await.expect("mosquitto"));
    let receiver = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, http_port, receiver.port());
    let (mut daemon, faketime_file) = run_with_faked_clock(dir.path(), "@1970-01-02 00:00:00");

    // Readings without a `ts`: only the box's clock could stamp them.
    let topic = "gridwatch/east-canal/canal-02/telemetry";
    assert!(publish_until_evaluated(&mosquitto, topic, || r#"{"do": 7.0}"#.into(), http_port).await, "{:?}", daemon.stderr());
    let alarm_at = now_ms();
    mosquitto.publish(topic, r#"{"do": 3.0}"#).unwrap();
    let keep_reporting = {
        let mosquitto = mosquitto.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(700)).await;
                let mosquitto = mosquitto.clone();
                let _ = tokio::task::spawn_blocking(move || mosquitto.publish("gridwatch/east-canal/canal-02/telemetry", r#"{"do": 3.0}"#)).await;
            }
        })
    };
    let do_low = || bodies(&receiver, "fired").into_iter().filter(|b| b["rule"] == "do-low").collect::<Vec<_>>();
    assert!(wait_for(10 * SECOND, || async { !do_low().is_empty() }).await, "the alarm was not raised: {:?}", daemon.stderr());
    let alarm = do_low().remove(0);
    assert_eq!((alarm["at"].as_str(), alarm["since"].as_str()), (Some("time unknown"), Some("time unknown")), "{alarm}");
    let id = alarm["incident_id"].as_i64().unwrap();

    // Before the clock is set, the incident is "time unknown" too, not 1970.
    let before = incident_json(dir.path(), id);
    assert_eq!(before["opened"], "time unknown", "{before:#}");
    assert!(before["history"].as_array().unwrap().iter().all(|e| e["at"] == "time unknown"), "{before:#}");
    assert!(wait_for(10 * SECOND, || async { !bodies(&receiver, "reminder").is_empty() }).await, "no reminder: {:?}", daemon.stderr());
    let reminders_before = bodies(&receiver, "reminder").len();

    // NTP steps the clock and timesyncd's flag appears.
    std::fs::write(&faketime_file, "+0").unwrap();
    std::fs::write(dir.path().join("synchronized"), b"").unwrap();
    let set_at = now_ms();
    let stamped = || {
        let mut later = bodies(&receiver, "reminder");
        later.extend(bodies(&receiver, "escalated"));
        later.into_iter().filter(|b| b["at"] != "time unknown").collect::<Vec<_>>()
    };
    assert!(wait_for(15 * SECOND, || async { !stamped().is_empty() }).await, "no reminder after the clock was set: {:?}", receiver.bodies());
    keep_reporting.abort();

    // The next reminder quotes the alarm's true start, not 1970 and not "time unknown".
    let next = stamped().remove(0);
    assert!(stamped_near(&next["since"], alarm_at, 3_000), "the reminder after the clock was set says since {}: {next}", next["since"]);
    assert!(stamped_near(&next["at"], now_ms(), 20_000), "{next}");

    // The incident and its audit trail are re-stamped: opened when the alarm came.
    let after = incident_json(dir.path(), id);
    assert!(stamped_near(&after["opened"], alarm_at, 3_000), "opened {} for an alarm at {alarm_at}: {after:#}", after["opened"]);
    let history = after["history"].as_array().unwrap();
    assert!(history.iter().all(|e| stamped_near(&e["at"], (alarm_at + set_at) / 2, (set_at - alarm_at) / 2 + 20_000)), "{after:#}");
    assert!(history.iter().any(|e| e["actor"] == "dispatch"), "the reminders before the clock was set are in the trail: {after:#}");

    // The incidents page shows it in this year, and says nothing about 1970 or unknown times.
    let page = reqwest::get(format!("http://127.0.0.1:{http_port}/incidents")).await.unwrap().text().await.unwrap();
    let year = chrono::DateTime::from_timestamp_millis(alarm_at).unwrap().format("%Y-").to_string();
    assert!(page.contains(&year) && !page.contains("1970") && !page.contains("time unknown"), "{page}");

    // What reached the webhook: one alarm, reminders "time unknown" before and dated after,
    // and no time a person read in 1970.
    assert_eq!(do_low().len(), 1, "{:?}", receiver.bodies());
    for body in receiver.bodies() {
        for key in ["at", "since"] {
            let label = body[key].as_str().unwrap_or_default();
            assert!(label == "time unknown" || stamped_near(&body[key], now_ms(), 60_000), "a person read {key} = {label:?}: {body}");
        }
    }
    println!(
        "webhook: {} fired, {} reminders before the clock was set, {} reminders/escalations after (first since {})",
        do_low().len(),
        reminders_before,
        stamped().len(),
        next["since"]
    );
    daemon.stop();
}

/// The incident page behind `link`: its status and text.
async fn open(link: &str) -> (u16, String) {
    let response = reqwest::get(link).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A box three days behind signs the first alarm's links on its wrong clock (expiry: its time
/// plus an hour, three days ago in true time). Once NTP sets the clock the worker's link — full
/// and short — still opens and takes an action, also after the daemon restarts; a link whose
/// true hour is over is still refused, as is one the unset clock could not have signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_signed_three_days_behind_still_opens_and_acts_once_ntp_sets_the_clock() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let receiver = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, http_port, receiver.port());
    let (mut daemon, faketime_file) = run_with_faked_clock(dir.path(), "-3d");

    let topic = "gridwatch/east-canal/canal-02/telemetry";
    let up = publish_until_evaluated(&mosquitto, topic, || format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms()), http_port).await;
    assert!(up, "{:?}", daemon.stderr());
    mosquitto.publish(topic, &format!(r#"{{"do": 3.0, "ts": {}}}"#, now_ms())).unwrap();
    let fired = || bodies(&receiver, "fired").into_iter().find(|b| b["rule"] == "do-low");
    assert!(wait_for(10 * SECOND, || async { fired().is_some() }).await, "the alarm was not raised: {:?}", daemon.stderr());
    let alarm = fired().unwrap();
    let link = alarm["member_links"]["王芳"].as_str().unwrap_or_else(|| panic!("no link for the worker on duty: {alarm}")).to_string();
    let id = alarm["incident_id"].as_i64().unwrap();
    let expires: i64 = link.split("exp=").nth(1).and_then(|rest| rest.split('&').next()).and_then(|exp| exp.parse().ok()).unwrap();
    assert!(expires < now_ms() / 1000 - 86_400, "signed on the clock three days behind: expires {expires} {:?}", daemon.stderr());
    let short = gridwatch::links::shorten(&link);
    assert_eq!(open(&link).await.0, 200, "opens while the clock is wrong");

    // NTP steps the clock and timesyncd's flag appears.
    std::fs::write(&faketime_file, "+0").unwrap();
    std::fs::write(dir.path().join("synchronized"), b"").unwrap();
    let (status, page) = open(&link).await;
    assert_eq!(status, 200, "the first alarm's link expired when the clock was set: {page}");
    assert_eq!(open(&short).await.0, 200, "the short link too");
    let accepted = reqwest::Client::new().post(&link).form(&[("action", "accept"), ("note", "on my way")]).send().await.unwrap();
    let (status, page) = (accepted.status().as_u16(), accepted.text().await.unwrap());
    assert!(status == 200 && page.contains("已记录"), "the action through the link was refused: {status} {page}");
    assert_eq!(incident_json(dir.path(), id)["state"], "accepted");

    // What no true hour covers is refused: a link signed by the set clock that expired a second
    // ago, and one the unset clock would have signed an hour before it signed any.
    let signer =
        gridwatch::links::WorkerLinks::new(format!("http://127.0.0.1:{http_port}").parse().unwrap(), LINK_SECRET, std::time::Duration::from_secs(3600));
    let true_now = now_ms() / 1000;
    for (why, forged) in [
        ("expired on the true clock", signer.member_link(id, "wang", true_now - 3601)),
        ("before the unset clock signed", signer.member_link(id, "wang", expires - 7200)),
    ] {
        let (status, page) = open(&forged).await;
        assert!(status == 403 && page.contains("expired"), "{why}: {status} {page}");
    }

    // A restart after the clock was set still reads the link on the true time (the step is in
    // the store: the dispatcher keeps it within a second).
    tokio::time::sleep(3 * SECOND).await;
    daemon.stop();
    let (mut daemon, _) = run_with_faked_clock(dir.path(), "+0");
    let reopened = wait_for(10 * SECOND, || async { reqwest::get(&link).await.is_ok_and(|r| r.status().as_u16() != 502) }).await;
    assert!(reopened, "{:?}", daemon.stderr());
    let (status, page) = open(&link).await;
    assert_eq!(status, 200, "the link expired after a restart: {page} {:?}", daemon.stderr());
    daemon.stop();
}

/// NTP raises the "synchronised" flag a few seconds before it steps the clock (3 days behind):
/// the box believes the flag only once the clock has stepped, so the worker's link signed on the
/// unset clock still opens after the step and the incident's history is re-stamped to the true
/// time. (Believed at once, the flag measured a step of nothing: the link was refused and the
/// history re-stamped three days off; an outside tester.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_raised_before_the_ntp_step_is_believed_only_once_the_clock_steps() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let receiver = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, http_port, receiver.port());
    let (daemon, faketime_file) = run_with_faked_clock(dir.path(), "-3d");
    let topic = "gridwatch/east-canal/canal-02/telemetry";
    let up = publish_until_evaluated(&mosquitto, topic, || format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms()), http_port).await;
    assert!(up, "{:?}", daemon.stderr());
    mosquitto.publish(topic, &format!(r#"{{"do": 3.0, "ts": {}}}"#, now_ms())).unwrap();
    let fired = || bodies(&receiver, "fired").into_iter().find(|b| b["rule"] == "do-low");
    assert!(wait_for(10 * SECOND, || async { fired().is_some() }).await, "the alarm was not raised: {:?}", daemon.stderr());
    let alarm = fired().unwrap();
    let link = alarm["member_links"]["王芳"].as_str().unwrap_or_else(|| panic!("no link for the worker on duty: {alarm}")).to_string();
    let id = alarm["incident_id"].as_i64().unwrap();

    // The flag first; the clock is still three days behind for three seconds, then steps.
    std::fs::write(dir.path().join("synchronized"), b"").unwrap();
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(open(&link).await.0, 200, "opens while the flag is up and the clock still wrong");
    std::fs::write(&faketime_file, "+0").unwrap();
    tokio::time::sleep(3 * SECOND / 2).await;
    let (status, page) = open(&link).await;
    assert_eq!(status, 200, "the link signed on the unset clock was refused after the step: {page} {:?}", daemon.stderr());

    // The incident's history is in true time once the box has looked again.
    let restamped = wait_for(10 * SECOND, || async {
        let history = incident_json(dir.path(), id)["history"].as_array().cloned().unwrap_or_default();
        !history.is_empty() && history.iter().all(|e| stamped_near(&e["at"], now_ms(), 60_000))
    })
    .await;
    assert!(restamped, "history not in true time after the step: {:#}", incident_json(dir.path(), id));
}

/// A one-box house whose box was offline: it sends the readings it kept (two hours of them,
/// stamped by its own clock), then its live ones, to a box whose clock is not set (NTP has not
/// come yet). The box places the kept readings at their arrival, within a second or two; a jump
/// of 0.3° a few live readings later must be red at once. It was never red: the sudden-change
/// rule's one-hour level held too few readings for seven and a half minutes, and then took the
/// jump in (an outside tester; `signal.rs`, the recent level's first readings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_house_that_jumps_after_its_box_sent_a_backlog_to_an_unset_clock_is_red_at_once() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let receiver = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let config = format!(
        "state_dir = \"state\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-field-clock-{http_port}\"\n\
         [[sensor]]\nid = \"house-31\"\nkind = \"tilt\"\nsite = \"old-lane\"\nbuilding = \"B3\"\ngrid = \"grid-5\"\ninterval_secs = 120\n\
         [ingest]\nclock_synchronized = \"{}\"\n[alerts]\nconsole = false\n[[alerts.webhook]]\nname = \"office\"\nurl = \"http://127.0.0.1:{}/hook\"\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n",
        mosquitto.url(),
        dir.path().join("synchronized").display(),
        receiver.port()
    );
    std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let topic = "gridwatch/old-lane/house-31/telemetry";
    let reading =
        |ts: i64, x: f64, i: i64| format!(r#"{{"x": {:.3}, "y": -0.31, "temperature": 15.0, "ts": {ts}}}"#, x + ((i * 7919) % 5) as f64 * 0.001 - 0.002);
    let kept = 60;
    let up = publish_until_evaluated(&mosquitto, topic, || reading(now_ms() - (kept + 1) * 120_000, 0.42, 0), http_port).await;
    assert!(up, "{:?}", daemon.stderr());
    for i in 1..=kept {
        mosquitto.publish(topic, &reading(now_ms() - (kept + 1 - i) * 120_000, 0.42, i)).unwrap();
    }
    let mut jump_at = None;
    for i in 0..30 {
        let x = if i >= 6 { 0.72 } else { 0.42 };
        let ts = now_ms();
        if i == 6 {
            jump_at = Some(ts);
        }
        mosquitto.publish(topic, &reading(ts, x, i)).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if bodies(&receiver, "fired").iter().any(|b| b["rule"] == "tilt-sudden") {
            break;
        }
    }
    let red = bodies(&receiver, "fired").into_iter().find(|b| b["rule"] == "tilt-sudden");
    let red = red.unwrap_or_else(|| panic!("no red for the jump: {:?} {:?}", receiver.bodies(), daemon.stderr()));
    assert_eq!(red["severity"], "danger", "{red}");
    assert!(jump_at.is_some_and(|at| now_ms() - at < 10_000), "red within seconds of the jump: {red}");
}
