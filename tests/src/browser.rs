//! Headless Chromium driven over the W3C WebDriver protocol (Debian packages `chromium` and
//! `chromium-driver`): open a page, type, click, read the page and take a screenshot. Just the
//! handful of WebDriver commands the browser tests use, over plain HTTP to chromedriver.

use crate::services::free_port;
use anyhow::{bail, Context};
use base64::Engine as _;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A chromedriver process with one headless Chromium session; both end when dropped.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
}

impl Browser {
    pub async fn start() -> anyhow::Result<Browser> {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver (Debian packages chromium and chromium-driver)")?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let root = format!("http://127.0.0.1:{port}");
        let mut browser = Browser { driver, base: root.clone(), http };
        for _ in 0..100 {
            if browser.http.get(format!("{root}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir()?.keep();
        let capabilities = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=420,900", format!("--user-data-dir={}", profile.display())]
        }}}});
        let session = browser.call("POST", "/session", Some(capabilities)).await?;
        let id = session["sessionId"].as_str().context("no session id from chromedriver")?.to_string();
        browser.base = format!("{root}/session/{id}");
        Ok(browser)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(&url),
            _ => self.http.post(&url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let answer: Value = request.send().await?.json().await?;
        if let Some(error) = answer["value"].get("error") {
            bail!("WebDriver {method} {path}: {error} {}", answer["value"]["message"]);
        }
        Ok(answer["value"].clone())
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call("POST", "/url", Some(json!({"url": url}))).await.map(drop)
    }

    /// The element matching a CSS selector.
    pub async fn find(&self, css: &str) -> anyhow::Result<String> {
        let found = self.call("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await?;
        found.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).map(str::to_string).with_context(|| format!("no element {css}"))
    }

    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        self.call("POST", &format!("/element/{element}/clear"), None).await?;
        self.call("POST", &format!("/element/{element}/value"), Some(json!({"text": text}))).await.map(drop)
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        self.call("POST", &format!("/element/{element}/click"), None).await.map(drop)
    }

    /// The page's visible text.
    pub async fn text(&self) -> anyhow::Result<String> {
        let body = self.find("body").await?;
        Ok(self.call("GET", &format!("/element/{body}/text"), None).await?.as_str().unwrap_or_default().to_string())
    }

    /// Waits (up to 10 s) until the page's text contains `wanted` — after a click that loads a
    /// new page — and returns the text.
    pub async fn wait_for_text(&self, wanted: &str) -> anyhow::Result<String> {
        let mut last = String::new();
        for _ in 0..100 {
            // While the next page loads, the old body may be gone: try again.
            if let Ok(text) = self.text().await {
                if text.contains(wanted) {
                    return Ok(text);
                }
                last = text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the page never showed {wanted:?}; it shows: {last}")
    }

    /// Sends a DevTools command to the page (chromedriver's `goog/cdp/execute`), e.g.
    /// `Emulation.setGeolocationOverride`.
    pub async fn cdp(&self, command: &str, params: Value) -> anyhow::Result<Value> {
        self.call("POST", "/goog/cdp/execute", Some(json!({"cmd": command, "params": params}))).await
    }

    /// Emulates a phone: a `width` × `height` CSS-pixel viewport at device scale 2, touch and
    /// the mobile viewport rules (`<meta name=viewport>` honoured).
    pub async fn phone(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.cdp("Emulation.setDeviceMetricsOverride", json!({"width": width, "height": height, "deviceScaleFactor": 2, "mobile": true})).await?;
        self.cdp("Emulation.setTouchEmulationEnabled", json!({"enabled": true})).await.map(drop)
    }

    /// Lets pages read the location and makes it (`latitude`, `longitude`, `accuracy` metres).
    pub async fn fake_location(&self, latitude: f64, longitude: f64, accuracy: f64) -> anyhow::Result<()> {
        self.cdp("Browser.grantPermissions", json!({"permissions": ["geolocation"]})).await?;
        self.cdp("Emulation.setGeolocationOverride", json!({"latitude": latitude, "longitude": longitude, "accuracy": accuracy})).await.map(drop)
    }

    /// Sets the window's outer size (a TV: 1920×1080; the session starts at a phone's 420×900).
    pub async fn resize(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.call("POST", "/window/rect", Some(json!({"width": width, "height": height}))).await.map(drop)
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub async fn execute(&self, script: &str) -> anyhow::Result<Value> {
        self.call("POST", "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// Chooses `path` in the file input matching `css`, as a person picking a photo would.
    pub async fn choose_file(&self, css: &str, path: &std::path::Path) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        self.call("POST", &format!("/element/{element}/value"), Some(json!({"text": path.display().to_string()}))).await.map(drop)
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        let encoded = self.call("GET", "/screenshot", None).await?;
        Ok(base64::engine::general_purpose::STANDARD.decode(encoded.as_str().unwrap_or_default())?)
    }
}

impl Drop for Browser {
    /// Ends the session, so Chromium exits, then chromedriver — also when a test panicked. A
    /// plain blocking HTTP request, since drop cannot await.
    fn drop(&mut self) {
        if let Some((host, path)) = self.base.strip_prefix("http://").and_then(|rest| rest.split_once('/')) {
            if let Ok(mut stream) = std::net::TcpStream::connect(host) {
                use std::io::{Read, Write};
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let request = format!("DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                if stream.write_all(request.as_bytes()).is_ok() {
                    let _ = stream.read_to_end(&mut Vec::new());
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
