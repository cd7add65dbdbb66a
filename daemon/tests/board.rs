//! The office's screen in headless Chromium at a TV's 1920×1080: 1,000 sensors in the inventory
//! (900 houses' boxes with coordinates on the map, 100 water probes as tiles), 50 open
//! incidents, a roster. A new red alarm must appear on the board — pushed by server-sent events,
//! without a reload — soon after its reading is published (the figure is printed; the issue's
//! target is 2 s, asserted generously since the test machine is shared), the page must stay
//! under 1 MB, and the board must refuse a wrong token. The screenshot goes to the test's
//! temporary directory as board.png (docs/screenshots/board.png is one of them).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{gridwatch, publish_until_evaluated, Daemon, SECOND};
use gridwatch_tests::{free_port, now_ms, wait_for, Browser, Mosquitto, Publisher};
use std::fmt::Write as _;
use std::time::Instant;

const ROSTER: &str = r#"
[[grid]]
id = "grid-1"
[[grid]]
id = "grid-2"
[[grid]]
id = "grid-3"
[[grid]]
id = "grid-4"
[[grid]]
id = "grid-5"

[[member]]
id = "wang"
name = "王芳"
role = "worker"
grids = ["grid-1", "grid-2"]

[[member]]
id = "li"
name = "李强"
role = "worker"
grids = ["grid-3", "grid-4"]

[[member]]
id = "chen"
name = "陈刚"
role = "grid_leader"
grids = ["grid-1", "grid-2", "grid-3", "grid-4", "grid-5"]

[[shift]]
member = "wang"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "00:00"
to = "00:00"

[[shift]]
member = "li"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "00:00"
to = "00:00"
"#;

const RULES: &str = r#"
[[rule]]
id = "tilt-warning"
title = "Wall tilt past 3‰"
kind = "tilt"
value = "permille(hypot(x, y))"
unit = "‰"
above = 3
clear_below = 2.5
severity = "warning"
message = { zh = "{site}{building}墙体倾斜{value}{unit}，黄色预警" }

[[rule]]
id = "tilt-danger"
title = "Wall tilt past 7‰"
kind = "tilt"
value = "permille(hypot(x, y))"
unit = "‰"
above = 7
severity = "danger"
message = { zh = "{site}{building}墙体倾斜{value}{unit}，红色预警" }
"#;

/// 900 tilt boxes, three per house, on a 30 × 10 block of houses around 30.27 N 120.15 E;
/// 100 water probes without coordinates.
fn inventory() -> String {
    let mut csv = String::from("id,kind,site,building,grid,interval_secs,latitude,longitude\n");
    for i in 0..900 {
        let house = i / 3;
        let (row, column) = (house / 30, house % 30);
        let grid = 1 + column / 8;
        let _ = writeln!(
            csv,
            "house-{i:04},tilt,lane-{row},B{house},grid-{grid},3600,{:.5},{:.5}",
            30.27 + f64::from(row) * 0.0009,
            120.15 + f64::from(column) * 0.0011
        );
    }
    for i in 0..100 {
        let _ = writeln!(csv, "water-{i:03},water,canal-{},,grid-5,3600,,", i / 25);
    }
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_alarm_reaches_the_office_screen_without_a_reload() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let config = format!(
        "state_dir = \"state\"\ninventory = \"sensors.csv\"\n[names]\n\"lane-4\" = \"北巷四弄\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-board-{http_port}\"\n\
         [rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n[alerts]\nconsole = false\n[dispatch]\nroster = \"roster.toml\"\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n[board]\ntoken = \"tv-in-the-office\"\n",
        mosquitto.url()
    );
    std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
    std::fs::write(dir.path().join("sensors.csv"), inventory()).unwrap();
    std::fs::write(dir.path().join("rules.toml"), RULES).unwrap();
    std::fs::write(dir.path().join("roster.toml"), ROSTER).unwrap();
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let reading = |x: f64| format!(r#"{{"x": {x}, "y": 0.01, "ts": {}}}"#, now_ms());
    assert!(publish_until_evaluated(&mosquitto, "gridwatch/lane-0/house-0000/telemetry", || reading(0.25), http_port).await, "{:?}", daemon.stderr());

    // Readings from every box, 50 of them leaning past 3‰: 50 yellow incidents.
    let mut publisher = Publisher::connect(mosquitto.port, "board-test").await.unwrap();
    for i in 0..900 {
        let site = i / 3 / 30;
        let x = if i % 18 == 0 { 0.25 } else { 0.02 };
        publisher.publish_acked(&format!("gridwatch/lane-{site}/house-{i:04}/telemetry"), reading(x)).await.unwrap();
    }
    let base = format!("http://127.0.0.1:{http_port}");
    let fifty = wait_for(30 * SECOND, || async {
        let page = reqwest::get(format!("{base}/incidents")).await.unwrap().text().await.unwrap();
        page.contains("Open incidents (50)")
    })
    .await;
    assert!(fifty, "50 open incidents: {:?}", daemon.stderr().iter().rev().take(20).collect::<Vec<_>>());
    gridwatch().args(["incidents", "--config", "gridwatch.toml", "act", "1", "accept", "--by", "王芳"]).current_dir(dir.path()).status().unwrap();

    assert_eq!(reqwest::get(format!("{base}/board")).await.unwrap().status(), 403, "no token, no board");
    assert_eq!(reqwest::get(format!("{base}/board?token=guess")).await.unwrap().status(), 403);
    let url = format!("{base}/board?token=tv-in-the-office");
    let page = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    println!("board page: {} bytes for 1,000 sensors", page.len());
    assert!(page.len() < 1_000_000, "under 1 MB: {} bytes", page.len());
    let html = String::from_utf8_lossy(&page);
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing fetched from outside");
    assert_eq!(html.matches("<circle data-i=").count(), 300, "one dot per house on the map");

    let browser = Browser::start().await.expect("headless Chromium");
    browser.resize(1920, 1080).await.unwrap();
    browser.goto(&url).await.unwrap();
    // The window's frame takes some of it: make the page itself 1920×1080.
    let frame = browser.execute("return window.outerHeight - window.innerHeight").await.unwrap().as_u64().unwrap_or(0);
    browser.resize(1920, 1080 + u32::try_from(frame).unwrap()).await.unwrap();
    let text = browser.wait_for_text("未结事件 50 起").await.unwrap();
    assert!(text.contains("王芳") && text.contains("李强"), "who is on duty: {text}");
    assert!(text.contains("已接单") && text.contains("今日新增"), "states and today's figures: {text}");
    let loads = browser.execute("return performance.getEntriesByType('navigation').length").await.unwrap();

    // A red alarm on a house nobody has touched (its yellow rule fires too: two incidents, the
    // red one newest): the board shows it without a reload.
    let published = Instant::now();
    publisher.publish_acked("gridwatch/lane-9/house-0899/telemetry", reading(0.45)).await.unwrap();
    let (mut shown, mut last) = (None, String::new());
    while published.elapsed().as_secs() < 30 {
        last = browser.text().await.unwrap_or_default();
        let text = &last;
        if text.contains("未结事件 52 起") && text.contains("最新 #52 ") {
            shown = Some(published.elapsed());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let shown = shown.unwrap_or_else(|| panic!("the red alarm never reached the board: {last}"));
    println!("new alarm on the board {} ms after its reading was published (target: 2000 ms)", shown.as_millis());
    assert!(shown.as_secs() < 10, "on the board in {shown:?}");
    assert_eq!(browser.execute("return performance.getEntriesByType('navigation').length").await.unwrap(), loads, "no reload");
    let red = browser.execute("return document.querySelectorAll('circle.r').length").await.unwrap();
    assert_eq!(red, 1, "the house's dot turned red");
    let yellow = browser.execute("return document.querySelectorAll('circle.y').length").await.unwrap();
    assert_eq!(yellow, 50, "fifty houses yellow");

    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000, "a real screenshot ({} bytes)", png.len());
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("board.png"), &png).unwrap();
}
