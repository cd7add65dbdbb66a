//! The worker's closed loop in a real browser: headless Chromium opens the signed link from an
//! alert, the worker types a name, presses 接单 Accept, then writes a note and presses 办结
//! Resolved; the page and the incident's audit trail show both. A screenshot of the page is
//! written to the test's temporary directory (docs/incident-page.png is one of them).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{gridwatch, Daemon, SECOND};
use gridwatch_tests::{free_port, now_ms, wait_for, Browser, Mosquitto, WebhookReceiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_accepts_and_resolves_an_incident_from_the_link_in_chromium() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let receiver = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let config = format!(
        "state_dir = \"state\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-browser-{http_port}\"\n[[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\nbuilding = \"B7\"\ngrid = \"grid-3\"\n\
         [rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n[alerts]\nconsole = false\n[[alerts.webhook]]\nname = \"office\"\nurl = \"{}\"\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\npublic_url = \"http://127.0.0.1:{http_port}\"\nlink_secret = \"a-secret-of-enough-length\"\n",
        mosquitto.url(),
        receiver.url()
    );
    std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[[rule]]\nid = \"tilt-danger\"\ntitle = \"Wall tilt past 7‰\"\nkind = \"tilt\"\nvalue = \"permille(hypot(x, y))\"\nunit = \"‰\"\nabove = 7\nseverity = \"danger\"\nmessage = { zh = \"{site}{building}墙体倾斜{value}{unit}，红色预警\" }\n",
    )
    .unwrap();
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let alerted = wait_for(20 * SECOND, || {
        mosquitto.publish("gridwatch/north-lane/house-07/telemetry", &format!(r#"{{"x": 0.45, "y": 0.02, "ts": {}}}"#, now_ms())).unwrap();
        async { !receiver.bodies().is_empty() }
    })
    .await;
    assert!(alerted, "{:?}", daemon.stderr());
    let link = receiver.bodies()[0]["link"].as_str().expect("the alert carries a link").to_string();

    let browser = Browser::start().await.expect("headless Chromium");
    browser.goto(&link).await.unwrap();
    let page = browser.text().await.unwrap();
    assert!(page.contains("tilt-danger") && page.contains("house-07"), "what and where: {page}");
    assert!(page.contains("位置 where: north-lane · B7 · grid-3"), "the place: {page}");
    assert!(page.contains("north-laneB7墙体倾斜") && page.contains("above 7"), "the message and condition: {page}");
    browser.type_into("input[name=by]", "王芳 13800000001").await.unwrap();
    browser.click("button[value=accept]").await.unwrap();
    browser.wait_for_text("已记录 recorded: accepted").await.unwrap();
    browser.type_into("input[name=by]", "王芳 13800000001").await.unwrap();
    browser.type_into("textarea[name=note]", "墙体已支撑，裂缝已封堵 wall propped").await.unwrap();
    browser.click("button[value=resolve]").await.unwrap();
    let page = browser.wait_for_text("已记录 recorded: resolved").await.unwrap();
    assert!(page.contains("王芳 13800000001 (link) · accept") && page.contains("resolve: 墙体已支撑，裂缝已封堵 wall propped"), "the history on the page: {page}");
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000, "a real screenshot ({} bytes)", png.len());
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("incident-page.png"), &png).unwrap();
    drop(browser);

    let shown = gridwatch().args(["incidents", "--config", "gridwatch.toml", "show", "1"]).current_dir(dir.path()).output().unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("resolved") && shown.contains("王芳 13800000001 (link) accept") && shown.contains("resolve: 墙体已支撑"), "the audit trail: {shown}");
}
