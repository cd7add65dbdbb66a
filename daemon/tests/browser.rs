//! The worker's closed loop in a real browser on a phone-sized screen: headless Chromium,
//! emulating a 390×844 phone with its location faked through DevTools, opens the signed link
//! from an alert; the worker types a name and presses 接单, takes a photo (a file chosen in the
//! camera input, scaled down by the page's script) and presses 到场 with the location, is told a
//! red incident needs a note, writes one and presses 办结; the grid leader, from his own short
//! link, follows up (回访) and closes it. At every step nothing is wider than
//! the screen (no zooming or sideways scrolling) and the buttons are big enough for a thumb. The
//! page, the served photo and the audit trail show it all.
//!
//! Screenshots go to the test's temporary directory; with `GRIDWATCH_SCREENSHOTS=docs` they
//! replace the ones in docs/screenshots/.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{gridwatch, screenshot_dir, Daemon, SECOND};
use gridwatch_tests::{free_port, now_ms, wait_for, Browser, Mosquitto, WebhookReceiver};

const PHONE: (u32, u32) = (390, 844);

/// Asserts the page fits the phone's width and its buttons are at least 44 px tall, then saves
/// a screenshot of what is on screen after scrolling `scroll_to` into view.
async fn fits_the_phone(browser: &Browser, scroll_to: &str, name: &str) {
    let fit = browser
        .execute("return [document.scrollingElement.scrollWidth, window.innerWidth, Math.min(...[...document.querySelectorAll('button')].map(b => b.getBoundingClientRect().height), 99)];")
        .await
        .unwrap();
    let (scroll_width, inner_width, lowest_button) = (fit[0].as_f64().unwrap(), fit[1].as_f64().unwrap(), fit[2].as_f64().unwrap());
    assert_eq!(inner_width, f64::from(PHONE.0), "the phone's viewport");
    assert!(scroll_width <= f64::from(PHONE.0), "{name}: the page is {scroll_width} px wide on a {} px screen", PHONE.0);
    assert!(lowest_button >= 44.0, "{name}: a button only {lowest_button} px tall");
    browser.execute(&format!("document.querySelector('{scroll_to}').scrollIntoView(); return 0;")).await.unwrap();
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000, "a real screenshot ({} bytes)", png.len());
    std::fs::write(screenshot_dir().join(name), &png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_accepts_goes_on_site_with_photo_and_location_and_resolves_on_a_phone_in_chromium() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let receiver = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let config = format!(
        "state_dir = \"state\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-browser-{http_port}\"\n\
         [[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\nbuilding = \"B7\"\ngrid = \"grid-3\"\nstoreys = 2\nstructure = \"brick-wood\"\n\
         location = [31.2304, 121.4737]\ntags = {{ resident = \"独居老人 张秀英 82岁\", contact = \"女儿 13900000000\" }}\n\
         [names]\n\"north-lane\" = \"北巷社区\"\n\"north-lane/B7\" = \"7号楼\"\n\
         [rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n[alerts]\nconsole = false\n[[alerts.webhook]]\nname = \"office\"\nurl = \"{}\"\n\
         [dispatch]\nroster = \"roster.toml\"\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\npublic_url = \"http://127.0.0.1:{http_port}\"\nlink_secret = \"a-secret-of-enough-length\"\n",
        mosquitto.url(),
        receiver.url()
    );
    std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
    std::fs::write(
        dir.path().join("roster.toml"),
        "timezone = \"+08:00\"\n[[grid]]\nid = \"grid-3\"\n[[member]]\nid = \"wang\"\nname = \"王芳\"\nrole = \"worker\"\ngrids = [\"grid-3\"]\n\
         [[member]]\nid = \"zhao\"\nname = \"赵强\"\nrole = \"worker\"\ngrids = [\"grid-3\"]\n[[member]]\nid = \"chen\"\nname = \"陈刚\"\nrole = \"grid_leader\"\ngrids = [\"grid-3\"]\n",
    )
    .unwrap();
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
    browser.phone(PHONE.0, PHONE.1).await.unwrap();
    // 44 m north of the house.
    browser.fake_location(31.2308, 121.4737, 15.0).await.unwrap();
    // The photo: what the phone's camera would give, here a cracked brick wall drawn by the
    // browser itself and taken as a 780×1688 PNG.
    let wall = "<body style='margin:0;height:100vh;background:repeating-linear-gradient(90deg,#d9d0c1 0 5px,transparent 5px 90px),repeating-linear-gradient(0deg,#d9d0c1 0 5px,#a4532f 5px 42px)'>\
                <svg width='100%' height='100%'><polyline points='170,0 190,260 160,520 215,820 185,1100' stroke='#1b1b1b' stroke-width='7' fill='none'/></svg>";
    browser.goto(&format!("data:text/html;charset=utf-8,{}", wall.replace('#', "%23"))).await.unwrap();
    let photo = dir.path().join("wall.png");
    std::fs::write(&photo, browser.screenshot().await.unwrap()).unwrap();

    browser.goto(&link).await.unwrap();
    let page = browser.wait_for_text("待接单").await.unwrap();
    assert!(page.contains("红色预警 #1 · 待接单") && page.contains("北巷社区 7号楼（house-07）"), "what and where: {page}");
    assert!(
        page.contains("2 层 · 结构：砖木") && page.contains("住户：独居老人 张秀英 82岁") && page.contains("联系人：女儿 13900000000"),
        "the house and its resident: {page}"
    );
    assert!(page.contains("请立即到场查看") && page.contains("最新读数"), "what to do, the latest reading: {page}");
    fits_the_phone(&browser, "header", "incident-page-1-open.png").await;

    browser.type_into("input[name=by]", "王芳 13800000001").await.unwrap();
    browser.click("button[value=accept]").await.unwrap();
    browser.wait_for_text("已记录：接单").await.unwrap();
    let page = browser.text().await.unwrap();
    assert!(!page.contains("办结\n") && page.contains("红色预警：须先到场"), "a red incident offers no 办结 before 到场: {page}");

    browser.wait_for_text("距房屋约 44 米").await.expect("the location and the distance to the house");
    assert_eq!(browser.execute("return document.querySelector('input[name=by]').value").await.unwrap(), "王芳 13800000001", "the name is remembered");
    browser.choose_file("input[type=file]", &photo).await.unwrap();
    browser.wait_for_text("照片已准备好").await.expect("the photo scaled down");
    fits_the_phone(&browser, "#act", "incident-page-2-on-site.png").await;
    browser.click("button[value=on_site]").await.unwrap();
    let page = browser.wait_for_text("已记录：到场").await.unwrap();
    assert!(page.contains("误差约 15 米，距房屋 44 米"), "the check-in in the history: {page}");
    let mut size = serde_json::json!([]);
    for _ in 0..50 {
        size = browser
            .execute("const i = document.querySelector('img.thumb'); return i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : [];")
            .await
            .unwrap();
        if size != serde_json::json!([]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(size, serde_json::json!([739, 1600]), "the photo, scaled to 1600 px by the page, shown from the store");

    browser.click("button[value=resolve]").await.unwrap();
    browser.wait_for_text("红色预警办结须写明处理情况").await.expect("a red incident needs a note");
    browser.type_into("textarea[name=note]", "墙体已支撑，裂缝已封堵，住户暂住女儿家").await.unwrap();
    browser.click("button[value=resolve]").await.unwrap();
    let page = browser.wait_for_text("已记录：办结").await.unwrap();
    assert!(
        page.contains("已办结")
            && page.contains("墙体已支撑，裂缝已封堵")
            && page.contains("负责：王芳 13800000001")
            && page.contains("办结 · 王芳 13800000001\n"),
        "{page}"
    );
    assert!(page.contains("刚刚 · ") && page.contains("等待网格长回访和关闭"), "relative times; the leader closes: {page}");
    fits_the_phone(&browser, ".history", "incident-page-3-resolved.png").await;

    // The grid leader, from his own link, follows up (回访) and closes it.
    let links = gridwatch::links::WorkerLinks::new(
        format!("http://127.0.0.1:{http_port}").parse().unwrap(),
        "a-secret-of-enough-length",
        std::time::Duration::from_secs(3600),
    );
    browser.goto(&gridwatch::links::shorten(&links.member_link(1, "chen", chrono::Utc::now().timestamp()))).await.unwrap();
    let page = browser.wait_for_text("处理人：陈刚").await.unwrap();
    assert!(page.contains("回访") && page.contains("关闭") && page.contains("负责：王芳 13800000001"), "the leader's steps: {page}");
    browser.type_into("textarea[name=note]", "电话回访住户女儿：老人已安置，墙体支撑稳固").await.unwrap();
    browser.click("button[value=follow_up]").await.unwrap();
    browser.wait_for_text("已记录：回访").await.unwrap();
    fits_the_phone(&browser, "#done", "incident-page-4-follow-up.png").await;
    browser.click("button[value=close]").await.unwrap();
    let page = browser.wait_for_text("已记录：关闭").await.unwrap();
    assert!(page.contains("红色预警 #1 · 已关闭") && page.contains("事件已关闭，无需操作"), "{page}");
    drop(browser);

    let shown = gridwatch().args(["incidents", "--config", "gridwatch.toml", "show", "1"]).current_dir(dir.path()).output().unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("closed") && shown.contains("王芳 13800000001 (link) accept") && shown.contains("on_site") && shown.contains("resolve: 墙体已支撑"),
        "the audit trail: {shown}"
    );
    assert!(shown.contains("陈刚 (chen, own link) follow_up: 电话回访") && shown.contains("陈刚 (chen, own link) close"), "the audit trail: {shown}");
}
