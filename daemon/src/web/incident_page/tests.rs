use super::*;
use crate::alert::tests::sample_alert;
use crate::dispatch::roster::Roster;
use crate::links::WorkerLinks;
use crate::metrics::Metrics;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

const ROSTER: &str = "timezone = \"+08:00\"\n[[grid]]\nid = \"grid-3\"\n\
    [[member]]\nid = \"wang\"\nname = \"王芳\"\nrole = \"worker\"\ngrids = [\"grid-3\"]\n\
    [[member]]\nid = \"zhao\"\nname = \"赵强\"\nrole = \"worker\"\nphone = \"13800000002\"\ngrids = [\"grid-3\"]\nchannels = [\"zhao-phone\"]\n\
    [[member]]\nid = \"chen\"\nname = \"陈刚\"\nrole = \"grid_leader\"\ngrids = [\"grid-3\"]\n";

async fn serve_with(photo_max_bytes: usize) -> (String, WebState, i64, tempfile::TempDir) {
    serve_store(photo_max_bytes, |store| store).await
}

/// The page on the store `made` of a fresh one holding one incident.
async fn serve_store(photo_max_bytes: usize, made: impl FnOnce(Store) -> Store) -> (String, WebState, i64, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = made(Store::open(dir.path()).unwrap());
    let mut alert = sample_alert("fired", 0.46);
    let id = store.apply_alert(&alert, 600_000).await.unwrap().incident().unwrap();
    alert.incident_id = Some(id);
    alert.location = Some([31.2304, 121.4737]);
    store.record_alert(&alert, &[]).await.unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let links = WorkerLinks::new(base.parse().unwrap(), "a-link-secret-of-some-length", Duration::from_secs(3600));
    let roster = Roster::parse("roster.toml", ROSTER).unwrap();
    let members = Arc::new(roster.member_names());
    let page = PageSetup { dispatch: crate::dispatch::Dispatch { roster, ..Default::default() }.into(), photo_max_bytes };
    let state = WebState {
        metrics: Arc::new(Metrics::new()),
        store,
        links: Some(links),
        installer: None,
        time_zone: crate::local_time::DEFAULT,
        ledger: None,
        members,
        page,
        clock: crate::clock::Clock::System,
    };
    let app = super::super::router(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, state, id, dir)
}

async fn serve() -> (String, WebState, i64, tempfile::TempDir) {
    serve_with(2 * 1024 * 1024).await
}

/// A `multipart/form-data` body of text fields and, optionally, a photo file.
fn multipart(fields: &[(&str, &str)], photo: Option<&[u8]>) -> (String, Vec<u8>) {
    let boundary = "----gridwatch-test-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
    }
    if let Some(bytes) = photo {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"p.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post(link: &str, fields: &[(&str, &str)], photo: Option<&[u8]>) -> (u16, String) {
    let (content_type, body) = multipart(fields, photo);
    let answer = reqwest::Client::new().post(link).header("content-type", content_type).body(body).send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

fn jpeg(len: usize) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0];
    bytes.resize(len, 0x42);
    bytes
}

#[tokio::test]
async fn a_worker_accepts_goes_on_site_with_a_photo_and_resolves_through_the_link() {
    let (_, state, id, _dir) = serve().await;
    let link = state.links.as_ref().unwrap().link(id, state.clock.now().div_euclid(1000));
    let html = reqwest::get(&link).await.unwrap().text().await.unwrap();
    assert!(html.contains("红色预警 #1 · 待接单") && html.contains("north-lane B7（house-07）") && html.contains("value=\"accept\">接单"), "{html}");
    let by = ("by", "Li 13800000000");
    let (status, html) = post(&link, &[("action", "accept"), by], None).await;
    assert!(status == 200 && html.contains("已记录：接单") && html.contains("已接单"), "{status} {html}");
    assert!(!html.contains("value=\"accept\"") && !html.contains("value=\"resolve\""), "no accept after accept, no red resolve before on site: {html}");
    let (status, html) = post(&link, &[("action", "on_site"), by, ("lat", "31.2310"), ("lon", "121.4737"), ("acc", "12")], Some(&jpeg(5_000))).await;
    assert!(status == 200 && html.contains("已记录：到场"), "{status} {html}");
    assert!(html.contains("误差约 12 米，距房屋 67 米"), "the check-in and its distance to the house: {html}");
    let thumb = html.split("<img class=\"thumb\" src=\"").nth(1).and_then(|rest| rest.split('"').next()).expect("a thumbnail").replace("&amp;", "&");
    let served = reqwest::get(format!("{}{thumb}", state.links.as_ref().unwrap().public_url.as_str().trim_end_matches('/'))).await.unwrap();
    assert_eq!((served.status().as_u16(), served.headers()["content-type"].to_str().unwrap().to_string()), (200, "image/jpeg".to_string()));
    assert_eq!(served.bytes().await.unwrap().len(), 5_000);
    let (status, html) = post(&link, &[("action", "resolve"), by], None).await;
    assert!(status == 409 && html.contains("红色预警办结须写明处理情况"), "a red one needs a note: {status} {html}");
    let (status, html) = post(&link, &[("action", "resolve"), by, ("note", "crack sealed <b>ok</b>")], None).await;
    assert!(status == 200 && html.contains("已记录：办结") && html.contains("crack sealed &lt;b&gt;ok&lt;/b&gt;"), "notes are escaped: {html}");
    assert!(html.contains("<b>办结</b> · Li 13800000000<br>") && html.contains("等待网格长回访和关闭"), "{html}");
    assert_eq!(state.store.incidents(true).unwrap()[0].state, "resolved");
    assert_eq!(state.store.incident_people(id).unwrap(), vec![("Li 13800000000".to_string(), "owner".to_string())]);
}

#[tokio::test]
async fn photos_over_the_limit_or_not_images_are_refused_in_words() {
    let (base, state, id, _dir) = serve_with(64 * 1024).await;
    let link = state.links.as_ref().unwrap().link(id, state.clock.now().div_euclid(1000));
    let (status, html) = post(&link, &[("action", "on_site"), ("by", "Li")], Some(&jpeg(65 * 1024))).await;
    assert!(status == 413 && html.contains("照片太大：最大 64 KB"), "{status} {html}");
    let (status, html) = post(&link, &[("action", "on_site"), ("by", "Li")], Some(&jpeg(2 * 1024 * 1024))).await;
    assert!(status == 413 && html.contains("照片太大"), "far past the limit, cut off: {status}");
    let (status, html) = post(&link, &[("action", "on_site"), ("by", "Li")], Some(b"<svg onload=alert(1)></svg>")).await;
    assert!(status == 415 && html.contains("只能上传 JPEG、PNG 或 WebP 格式的照片"), "{status} {html}");
    assert_eq!(state.store.incidents(true).unwrap()[0].state, "open", "nothing recorded");
    let photo = state
        .store
        .record_work(
            id,
            crate::store::Step {
                work: &Work::Comment,
                actor: "x",
                person: "x",
                note: Some("x"),
                photo: Some(&crate::store::Photo { content_type: "image/jpeg".into(), bytes: jpeg(10) }),
                check_in: None,
            },
            1,
        )
        .unwrap();
    assert_eq!(photo, crate::dispatch::incident::State::Open);
    let photo_id = state.store.incident_timeline(id).unwrap().last().unwrap().photos[0];
    assert_eq!(reqwest::get(format!("{base}/incident/{id}/photo/{photo_id}")).await.unwrap().status(), 400, "no signature, no photo");
    let forged = format!("{base}/incident/{id}/photo/{photo_id}?exp=9999999999&sig={}", "00".repeat(32));
    assert_eq!(reqwest::get(forged).await.unwrap().status(), 403);
}

#[tokio::test]
async fn hand_over_helpers_comments_and_the_grid_leaders_follow_up_and_close() {
    let (_, state, id, _dir) = serve().await;
    let links = state.links.as_ref().unwrap();
    let now = state.clock.now().div_euclid(1000);
    let wang = links.member_link(id, "wang", now);
    let html = reqwest::get(&wang).await.unwrap().text().await.unwrap();
    assert!(html.contains("处理人：<b>王芳</b>") && !html.contains("name=\"by\"") && html.contains("<option value=\"zhao\">赵强（网格员）</option>"), "{html}");
    post(&wang, &[("action", "accept"), ("by", "somebody else")], None).await;
    let (_, html) = post(&wang, &[("action", "helper"), ("person", "zhao")], None).await;
    assert!(html.contains("加协助人 赵强") && html.contains("协助：赵强 <a href=\"tel:13800000002\">"), "{html}");
    let (status, html) = post(&wang, &[("action", "transfer"), ("person", "nobody")], None).await;
    assert!(status == 400 && html.contains("请先选择人员"), "{html}");
    let (_, html) = post(&wang, &[("action", "transfer"), ("person", "zhao"), ("note", "我去开会")], None).await;
    assert!(html.contains("转交给 赵强") && html.contains("负责：<b>赵强 <a href=\"tel:13800000002\">13800000002</a></b>"), "the new owner, to call: {html}");
    let zhao = links.member_link(id, "zhao", now);
    let (_, html) = post(&zhao, &[("action", "comment"), ("note", "十分钟后到")], None).await;
    assert!(html.contains("<b>留言</b> · 赵强<br>") && html.contains("十分钟后到"), "{html}");
    post(&zhao, &[("action", "on_site")], None).await;
    post(&zhao, &[("action", "resolve"), ("note", "已支撑")], None).await;
    let (status, html) = post(&zhao, &[("action", "close")], None).await;
    assert!(status == 409 && html.contains("回访和关闭由网格长进行"), "{html}");
    let chen = links.member_link(id, "chen", now);
    let html = reqwest::get(&chen).await.unwrap().text().await.unwrap();
    assert!(html.contains("value=\"follow_up\">回访") && html.contains("value=\"close\">关闭"), "{html}");
    let (_, html) = post(&chen, &[("action", "follow_up"), ("note", "住户已安置")], None).await;
    assert!(html.contains("<b>回访</b> · 陈刚<br>"), "{html}");
    let (_, html) = post(&chen, &[("action", "close")], None).await;
    assert!(html.contains("已关闭") && html.contains("事件已关闭，无需操作"), "{html}");
    let actions: Vec<String> = state.store.incident_history(id).unwrap().into_iter().map(|e| e.action).collect();
    assert_eq!(actions, ["fired danger", "accept", "helper zhao", "transfer to zhao", "comment", "on_site", "resolve", "follow_up", "close"]);
    // 赵强 was told on his own channel, twice, each with his own link.
    let told = state.store.due_deliveries("zhao-phone", i64::MAX / 2, 10).await.unwrap();
    let events: Vec<&str> = told.iter().map(|d| d.alert.event.as_str()).collect();
    assert_eq!(events, [handover::HELP_ASKED.as_str(), handover::HANDED_OVER.as_str()]);
    for delivery in &told {
        let alert = &delivery.alert;
        assert_eq!(
            (alert.incident_id, alert.recipients.as_slice(), alert.mentions.as_slice()),
            (Some(id), ["赵强".to_string()].as_slice(), ["13800000002".to_string()].as_slice())
        );
        assert!(alert.link.as_deref().is_some_and(|link| link.contains("m=zhao")), "{:?}", alert.link);
    }
    let wording = crate::sinks::text::Wording { chinese: true, ..Default::default() };
    assert!(
        crate::sinks::text::headline(&told[1].alert, wording).starts_with(&format!("📌 事件转交给你 #{id}")),
        "{}",
        crate::sinks::text::headline(&told[1].alert, wording)
    );
}

#[tokio::test]
async fn forged_and_expired_links_are_refused() {
    let (base, state, id, _dir) = serve().await;
    let links = state.links.as_ref().unwrap();
    let expired = links.link(id, state.clock.now().div_euclid(1000) - 7200);
    assert_eq!(reqwest::get(&expired).await.unwrap().status(), 403);
    let forged = format!("{base}/incident/{id}?exp=9999999999&sig={}", "00".repeat(32));
    assert_eq!(reqwest::get(&forged).await.unwrap().status(), 403);
    let other = links.link(id, state.clock.now().div_euclid(1000)).replace(&format!("/incident/{id}?"), &format!("/incident/{}?", id + 1));
    assert_eq!(reqwest::get(&other).await.unwrap().status(), 403);
    let (status, _) = post(&forged, &[("action", "resolve"), ("by", "x"), ("note", "x")], None).await;
    assert_eq!(status, 403);
    let forged_member = links.member_link(id, "wang", state.clock.now().div_euclid(1000)).replace("m=wang", "m=chen");
    assert_eq!(reqwest::get(&forged_member).await.unwrap().status(), 403, "another member's name breaks the signature");
    assert_eq!(state.store.incidents(true).unwrap()[0].state, "open", "nothing changed");
}

/// A member taken off the roster (left the job, lost the phone): the links sent to them while on
/// duty no longer open nor act; the others' still do.
#[tokio::test]
async fn a_member_s_own_link_stops_working_once_the_member_is_off_the_roster() {
    let (_base, state, id, _dir) = serve().await;
    let links = state.links.as_ref().unwrap();
    let now = state.clock.now().div_euclid(1000);
    let (zhao, wang) = (links.member_link(id, "zhao", now), links.member_link(id, "wang", now));
    assert_eq!(reqwest::get(&zhao).await.unwrap().status(), 200);
    let without_zhao = ROSTER.replace("[[member]]\nid = \"zhao\"", "[[member]]\nid = \"zhou\"").replace("channels = [\"zhao-phone\"]\n", "");
    state.page.dispatch.replace(crate::dispatch::Dispatch { roster: Roster::parse("roster.toml", &without_zhao).unwrap(), ..Default::default() });
    let page = reqwest::get(&zhao).await.unwrap();
    assert_eq!(page.status(), 403);
    assert!(page.text().await.unwrap().contains("已不在值班名册中的人员（zhao）"));
    let (status, _) = post(&zhao, &[("action", "accept")], None).await;
    assert_eq!(status, 403);
    assert_eq!(state.store.incidents(true).unwrap()[0].state, "open", "nothing changed");
    let (status, html) = post(&wang, &[("action", "accept")], None).await;
    assert!(status == 200 && html.contains("已记录：接单"), "a member still on the roster acts: {status} {html}");
}

#[tokio::test]
async fn the_page_shows_where_on_a_map_and_the_trend_of_the_last_days() {
    let (_, state, id, _dir) = serve().await;
    let hour = state.clock.now().div_euclid(3_600_000);
    let rows = (0..5)
        .map(|i| crate::store::TrendRow {
            sensor: "house-07".into(),
            field: "x".into(),
            hour: hour - 4 + i,
            min: 0.1 * i as f64,
            max: 0.1 * i as f64 + 0.05,
            sum: 0.1 * i as f64,
            count: 1,
        })
        .collect();
    state.store.add_trend(rows, 0).await.unwrap();
    let link = state.links.as_ref().unwrap().link(id, state.clock.now().div_euclid(1000));
    let html = reqwest::get(&link).await.unwrap().text().await.unwrap();
    assert!(
        html.contains("href=\"geo:31.2304,121.4737\"") && html.contains("position=121.4737,31.2304") && html.contains("data-house=\"31.2304,121.4737\""),
        "{html}"
    );
    assert!(html.contains("<p class=\"trend\">x <small>0.000 … 0.450</small></p><svg"), "{html}");
    assert_eq!(html.matches("<polyline").count(), 1, "one field, one line");
    println!("page: {} bytes", html.len());
    assert!(html.len() < 16 * 1024, "a light page: {} bytes", html.len());
}

#[tokio::test]
async fn a_url_encoded_form_without_a_photo_works_too() {
    let (_, state, id, _dir) = serve().await;
    let link = state.links.as_ref().unwrap().member_link(id, "wang", state.clock.now().div_euclid(1000));
    let html = reqwest::Client::new().post(&link).form(&[("action", "accept"), ("by", "somebody else")]).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("已记录：接单") && html.contains("<b>接单</b> · 王芳<br>"), "{html}");
    assert_eq!(state.store.incident_history(id).unwrap().last().unwrap().actor, "王芳 (wang, own link)", "the link's member acts, whatever the form says");
}

/// A read-only card whose copy in memory has nowhere to keep a step beside it (no runtime
/// directory): the step is not taken, and the page says so instead of "已记录".
#[tokio::test]
async fn a_step_the_copy_in_memory_cannot_keep_beside_the_card_is_refused_in_words() {
    let (_base, state, id, _dir) = serve_store(2 * 1024 * 1024, Store::into_memory_copy).await;
    let link = state.links.as_ref().unwrap().member_link(id, "wang", state.clock.now().div_euclid(1000));
    let (status, page) = post(&link, &[("action", "accept"), ("note", "马上到")], None).await;
    assert_eq!(status, 503, "{page}");
    assert!(page.contains("没有记录") && !page.contains("已记录"), "{page}");
    assert_eq!(state.store.incidents(true).unwrap()[0].state, "open", "not taken in memory either");
}

/// A signed link to a number the store does not hold (one a store in memory gave while the card
/// could not write, gone after a restart): a page in Chinese that says what may have happened and
/// what to do, not a bare "no such incident".
#[tokio::test]
async fn a_link_to_an_incident_the_store_never_recorded_says_what_happened_in_chinese() {
    let (_base, state, id, _dir) = serve().await;
    let unrecorded = id + 1_000_000_000;
    let link = state.links.as_ref().unwrap().member_link(unrecorded, "wang", state.clock.now().div_euclid(1000));
    let response = reqwest::get(&link).await.unwrap();
    let status = response.status().as_u16();
    let page = response.text().await.unwrap();
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("找不到这个事件") && page.contains(&format!("第 {unrecorded} 号")) && page.contains("存储卡无法写入"), "{page}");
    assert!(page.contains("电话联系网格长"), "what to do: {page}");
}

/// A device fault's page reads as one — grey, "设备故障" — not as a house's yellow warning.
#[tokio::test]
async fn a_device_fault_s_page_reads_as_a_device_fault() {
    let (_, state, _, _dir) = serve().await;
    let mut fault = sample_alert("fired", 7_200.0);
    (fault.rule, fault.severity, fault.colour, fault.audience) =
        ("tilt-no-data".into(), gridwatch_rules::Severity::Warning, "yellow".into(), crate::alert::Audience::Installer);
    let id = state.store.apply_alert(&fault, 600_000).await.unwrap().incident().unwrap();
    fault.incident_id = Some(id);
    state.store.record_alert(&fault, &[]).await.unwrap();
    let link = state.links.as_ref().unwrap().link(id, state.clock.now().div_euclid(1000));
    let html = reqwest::get(&link).await.unwrap().text().await.unwrap();
    assert!(html.contains(&format!("<header class=\"device\"><h1>设备故障 #{id} · ")), "{html}");
    assert!(html.contains("触发设备故障") && !html.contains("黄色预警"), "{html}");
}

/// What a worker reads of folding: the red's page lists what was folded into it, worst first;
/// a folded alarm's page says which incident it went into, in Chinese.
#[tokio::test]
async fn a_red_s_page_lists_what_was_folded_into_it_and_a_folded_alarm_s_page_says_where_it_went() {
    let (_, state, _, _dir) = serve().await;
    let journal = |rule: &str, sensor: &str, severity: &str, at_ms: i64| {
        let mut alert = sample_alert("fired", 0.3);
        (alert.rule, alert.sensor, alert.severity, alert.at_ms) = (rule.into(), sensor.into(), severity.parse().unwrap(), at_ms);
        let store = state.store.clone();
        async move {
            let route: crate::store::Route = Box::new(|alert, incident| {
                alert.incident_id = Some(incident);
                vec![("office".to_string(), None)]
            });
            let journaling = crate::store::Journaling { route, not_before_ms: None, escalate: None };
            store.apply_and_journal(&alert, 600_000, journaling).await.unwrap().0.incident().unwrap()
        }
    };
    let red = journal("tilt-sudden", "house-07", "danger", 1_000).await;
    let orange = journal("tilt-lean-fast", "house-07", "alarm", 2_000).await;
    let other_red = journal("tilt-sudden", "house-08", "danger", 3_000).await;
    let now = state.clock.now().div_euclid(1000);
    let page = |id: i64| reqwest::get(state.links.as_ref().unwrap().link(id, now));
    let html = page(red).await.unwrap().text().await.unwrap();
    assert!(html.contains("同一房屋的其他告警（已并入本事件处理）"), "{html}");
    let (at_red, at_orange) = (html.find(&format!("<li>#{other_red} 红色预警")), html.find(&format!("<li>#{orange} 橙色预警")));
    assert!(at_red.is_some() && at_orange.is_some() && at_red < at_orange, "worst first: {html}");
    // On a phone, what there is to do comes before them (接单 was on the second screen); the
    // other red in view, the rest counted and listed on demand.
    let (at_actions, at_list) = (html.find("value=\"accept\">接单"), html.find("同一房屋的其他告警"));
    assert!(at_actions.is_some() && at_actions < at_list, "the actions first: {html}");
    assert!(html.contains("<summary>另有橙色预警 1 条（点开查看）</summary>") && at_red < html.find("<details>"), "{html}");
    assert!(html.contains("届时仍在报警的红色预警会单独通知"), "{html}");
    let html = page(orange).await.unwrap().text().await.unwrap();
    assert!(html.contains(&format!("同一房屋已有未结的 #{red}，本告警并入该事件处理，未另行通知")), "{html}");
    assert!(html.contains(&format!("同一房屋已有未结的#{red}，本告警并入该事件处理，未另行通知")), "its history, in Chinese: {html}");
}
