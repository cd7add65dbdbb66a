//! A member's own channel and own link: the worker on duty gets the alarm on the group channel
//! (with a link per person named) and on their own channel (with only their link); what they do
//! through their link is recorded as theirs, whatever name the form carries.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{publish_until_evaluated, wait_balanced, Daemon, SECOND};
use gridwatch_tests::{free_port, wait_for, Mosquitto, WebhookReceiver};
use std::path::Path;

const TOPIC: &str = "gridwatch/east-canal/canal-02/telemetry";

const ROSTER: &str = r#"
timezone = "+08:00"

[[grid]]
id = "grid-3"

[[member]]
id = "wang"
name = "王芳"
role = "worker"
phone = "13800000001"
grids = ["grid-3"]
channels = ["wang-phone"]

[[member]]
id = "li"
name = "李明"
role = "worker"
phone = "13800000002"
grids = ["grid-3"]
channels = ["li-phone"]

[[shift]]
member = "wang"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "00:00"
to = "00:00"
"#;

fn write_config(dir: &Path, mosquitto: &Mosquitto, http_port: u16, hooks: [&WebhookReceiver; 3]) {
    let [office, wang, li] = hooks;
    let config = format!(
        "state_dir = \"state\"\n\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-members-{http_port}\"\n\n[[sensor]]\nid = \"canal-02\"\nkind = \"water\"\nsite = \"east-canal\"\ngrid = \"grid-3\"\nlocation = [31.2304, 121.4737]\n\n[rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n\n[alerts]\nconsole = false\n\n[[alerts.webhook]]\nname = \"office\"\nurl = \"{}\"\n\n[[alerts.webhook]]\nname = \"wang-phone\"\nurl = \"{}\"\n\n[[alerts.webhook]]\nname = \"li-phone\"\nurl = \"{}\"\n\n[dispatch]\nroster = \"roster.toml\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\npublic_url = \"http://127.0.0.1:{http_port}\"\nlink_secret = \"a-secret-of-enough-length\"\n",
        mosquitto.url(),
        office.url(),
        wang.url(),
        li.url()
    );
    std::fs::write(dir.join("gridwatch.toml"), config).unwrap();
    std::fs::write(dir.join("roster.toml"), ROSTER).unwrap();
    std::fs::write(dir.join("rules.toml"), "[[rule]]\nid = \"do-low\"\nvalue = \"do\"\nbelow = 5\nseverity = \"alarm\"\n").unwrap();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_on_duty_gets_the_alarm_on_their_own_channel_with_their_own_link() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let (office, wang, li) = (WebhookReceiver::start(Vec::new()).await, WebhookReceiver::start(Vec::new()).await, WebhookReceiver::start(Vec::new()).await);
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, http_port, [&office, &wang, &li]);
    let mut daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let up = publish_until_evaluated(&mosquitto, TOPIC, || format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms()), http_port).await;
    assert!(up, "{:?}", daemon.stderr());
    mosquitto.publish(TOPIC, &format!(r#"{{"do": 3.0, "ts": {}}}"#, now_ms())).unwrap();
    let arrived = wait_for(20 * SECOND, || async { !office.bodies().is_empty() && !wang.bodies().is_empty() }).await;
    assert!(arrived, "{:?}", daemon.stderr());

    // The group channel: a link for each person named.
    let group = office.bodies().remove(0);
    assert_eq!(group["recipients"], serde_json::json!(["王芳"]));
    let wang_link = group["member_links"]["王芳"].as_str().unwrap().to_string();
    assert!(wang_link.contains("m=wang&"), "{wang_link}");
    // Her own channel: the same alarm, only her link.
    let own = wang.bodies().remove(0);
    assert_eq!((own["rule"].as_str(), own["link"].as_str()), (Some("do-low"), Some(wang_link.as_str())));
    assert_eq!(own["member_links"].as_object().unwrap().len(), 1);
    // 李明 is not on duty: his channel stays quiet.
    let accounts = wait_balanced(http_port).await.unwrap_or_else(|a| panic!("accounts do not balance: {a}"));
    assert!(li.bodies().is_empty(), "{:?}", li.bodies());
    let li_account = accounts["sinks"].as_array().unwrap().iter().find(|s| s["sink"] == "li-phone").unwrap().clone();
    assert_eq!(li_account["taken_on"].as_u64(), Some(0), "{accounts}");

    // Accepting through her link is recorded as hers.
    let answer = reqwest::Client::new().post(&wang_link).form(&[("action", "accept"), ("by", "not wang")]).send().await.unwrap().text().await.unwrap();
    assert!(answer.contains("已记录：接单") && answer.contains("<b>接单</b> · 王芳<br>"), "{answer}");
    assert!(answer.contains("href=\"geo:31.2304,121.4737\""), "the page says where on a map: {answer}");

    // The readings' hourly trend is kept across a restart and drawn on the page.
    assert!(daemon.stop().success());
    let _daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let drawn = wait_for(20 * SECOND, || async {
        let page = match reqwest::get(&wang_link).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        page.contains("<p class=\"trend\">do <small>")
    })
    .await;
    assert!(drawn);
}
