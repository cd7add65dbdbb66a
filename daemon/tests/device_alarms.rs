//! Device alarms go to the installers, not the grid workers' group: a roster installer with a
//! channel of their own (a webhook) gets the silent box's alarm; the grid's group gets only the
//! house's alarm. Five boxes behind one gateway (`tag.gateway = gw-3`) that all go silent (the
//! broker stays up) make ONE "gateway down" alarm, not five no-data alarms — and one clear when
//! they are back. Real mosquitto, two real webhook receivers.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{publish_until_evaluated, Daemon, SECOND};
use gridwatch_tests::{free_port, now_ms, wait_for, Mosquitto, Publisher, WebhookReceiver};
use std::time::Duration;

const ROSTER: &str = r#"
[[grid]]
id = "grid-1"
channels = ["grid-group"]

[[member]]
id = "wang"
name = "王芳"
role = "worker"
grids = ["grid-1"]

[[member]]
id = "zhao"
name = "赵工"
role = "installer"
phone = "13900000009"
channels = ["installers"]

[[shift]]
member = "wang"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "00:00"
to = "00:00"
"#;

const RULES: &str = r#"
[[rule]]
id = "tilt-danger"
title = "Wall tilt past 7‰"
kind = "tilt"
value = "permille(hypot(x, y))"
unit = "‰"
above = 7
severity = "danger"

[[rule]]
id = "tilt-no-data"
title = "Tilt box silent"
kind = "tilt"
no_data = "2x"
device = true
severity = "warning"
"#;

/// Boxes report every 2 s; five behind gateway gw-3, one on its own.
const BOXES: [&str; 6] = ["gw-box-1", "gw-box-2", "gw-box-3", "gw-box-4", "gw-box-5", "lone-box"];

fn inventory() -> String {
    let mut csv = String::from("id,kind,site,building,grid,interval_secs,tag.gateway\n");
    for id in BOXES {
        let gateway = if id.starts_with("gw-") { "gw-3" } else { "" };
        csv.push_str(&format!("{id},tilt,north-lane,B7,grid-1,2,{gateway}\n"));
    }
    csv
}

fn rules_of(receiver: &WebhookReceiver) -> Vec<String> {
    receiver
        .bodies()
        .iter()
        .map(|b| format!("{} {} {}", b["rule"].as_str().unwrap_or(""), b["sensor"].as_str().unwrap_or(""), b["event"].as_str().unwrap_or("")))
        .collect()
}

async fn report(publisher: &mut Publisher, boxes: &[&str], x: f64) {
    for id in boxes {
        publisher.publish_acked(&format!("gridwatch/north-lane/{id}/telemetry"), format!(r#"{{"x": {x}, "y": 0.01, "ts": {}}}"#, now_ms())).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_alarms_reach_installers_and_a_dead_gateway_is_one_alarm() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let grid_group = WebhookReceiver::start(Vec::new()).await;
    let installers = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let config = format!(
        "state_dir = \"state\"\ninventory = \"sensors.csv\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-devices-{http_port}\"\n\
         [rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n[alerts]\nconsole = false\nbus_down_after_secs = 1\n\
         [[alerts.webhook]]\nname = \"grid-group\"\nurl = \"{}\"\n[[alerts.webhook]]\nname = \"installers\"\nurl = \"{}\"\n\
         [dispatch]\nroster = \"roster.toml\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
        mosquitto.url(),
        grid_group.url(),
        installers.url()
    );
    std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
    std::fs::write(dir.path().join("sensors.csv"), inventory()).unwrap();
    std::fs::write(dir.path().join("rules.toml"), RULES).unwrap();
    std::fs::write(dir.path().join("roster.toml"), ROSTER).unwrap();
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let reading = || format!(r#"{{"x": 0.02, "y": 0.01, "ts": {}}}"#, now_ms());
    assert!(publish_until_evaluated(&mosquitto, "gridwatch/north-lane/lone-box/telemetry", reading, http_port).await, "{:?}", daemon.stderr());

    // Every box reports for a while; one house's box leans past 7‰: the grid's alarm.
    let mut publisher = Publisher::connect(mosquitto.port, "devices-test").await.unwrap();
    for round in 0..6 {
        report(&mut publisher, &BOXES, 0.02).await;
        if round == 2 {
            report(&mut publisher, &["gw-box-1"], 0.45).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(wait_for(10 * SECOND, || async { !grid_group.bodies().is_empty() }).await, "the house's alarm reaches the grid: {:?}", daemon.stderr());

    // Then all of them go silent (the broker stays up).
    let gateway_down = wait_for(20 * SECOND, || async {
        let seen = rules_of(&installers);
        seen.iter().any(|r| r == "gateway-down gateway:gw-3 fired") && seen.iter().any(|r| r == "tilt-no-data lone-box fired")
    })
    .await;
    assert!(gateway_down, "installers got: {:?}; grid got: {:?}", rules_of(&installers), rules_of(&grid_group));
    // Time for any per-box no-data alarm to slip through.
    tokio::time::sleep(3 * SECOND).await;
    let to_installers = rules_of(&installers);
    assert_eq!(to_installers.len(), 2, "one gateway alarm instead of five no-data alarms, and the lone box's: {to_installers:?}");
    let body = installers.bodies().into_iter().find(|b| b["rule"] == "gateway-down").unwrap();
    assert_eq!((body["audience"].as_str(), body["recipients"][0].as_str()), (Some("installer"), Some("赵工")), "{body}");
    assert!(body["messages"]["zh"].as_str().unwrap().contains("5 个传感器"), "{body}");
    let to_grid = rules_of(&grid_group);
    assert!(
        to_grid.first().is_some_and(|r| r == "tilt-danger gw-box-1 fired") && to_grid.iter().all(|r| r.starts_with("tilt-danger gw-box-1")),
        "the grid's group gets its house's alarm and no device alarm: {to_grid:?}"
    );

    // The gateway is back: one clear to the installers.
    let mut cleared = false;
    for _ in 0..40 {
        report(&mut publisher, &BOXES[..5], 0.02).await;
        cleared = rules_of(&installers).iter().any(|r| r == "gateway-down gateway:gw-3 cleared");
        if cleared {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(cleared, "{:?}", rules_of(&installers));
    assert!(
        !rules_of(&installers).iter().any(|r| r.starts_with("tilt-no-data gw-box")),
        "the held-back no-data alarms stay held back: {:?}",
        rules_of(&installers)
    );
}
