//! Real services for end-to-end tests, started on free loopback ports in temporary
//! directories and killed when their handle drops.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// Ports handed out by [`free_port`]: below Linux's ephemeral range (32768–60999), so no
/// outgoing connection takes one as its source port.
const PORTS: std::ops::Range<u16> = 10_000..32_000;

/// A loopback port that was free a moment ago and that no other call in this process returned.
/// The kernel's own choice (binding port 0) can hand one port to two tests running at once
/// before either service listens on it: a test then talked MQTT to another test's web server.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(PORTS.end - PORTS.start);
    // Each test process starts at its own place, so two at once rarely meet.
    let _ = NEXT.compare_exchange(u32::MAX, std::process::id().wrapping_mul(7_919) % span, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = PORTS.start + u16::try_from(offset).expect("offset below the span");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {PORTS:?}")
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes; says whether it did.
pub async fn wait_for<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn find_program(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/usr/bin".into(), "/usr/local/sbin".into()]);
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("`{name}` not found: install the Debian package `{package}` (.ci/run does)")
}

/// SIGTERM, then up to 5 s for the process to exit, then SIGKILL.
fn terminate(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    for _ in 0..200 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) async fn wait_for_port(addr: SocketAddr, child: &mut Child, what: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} before listening on {addr}");
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("{what} did not listen on {addr} within 5 s")
}

/// A mosquitto broker on 127.0.0.1.
#[derive(Debug)]
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    config: PathBuf,
    _dir: TempDir,
}

impl Mosquitto {
    pub async fn start() -> anyhow::Result<Mosquitto> {
        Mosquitto::start_with("").await
    }

    /// Starts with extra lines of mosquitto.conf (e.g. `max_queued_messages 0`).
    pub async fn start_with(extra_config: &str) -> anyhow::Result<Mosquitto> {
        Mosquitto::launch(extra_config, false).await
    }

    /// Starts with persistence on (sessions and queued messages survive [`Mosquitto::restart`]).
    pub async fn start_persistent(extra_config: &str) -> anyhow::Result<Mosquitto> {
        Mosquitto::launch(extra_config, true).await
    }

    async fn launch(extra_config: &str, persistent: bool) -> anyhow::Result<Mosquitto> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let config = dir.path().join("mosquitto.conf");
        let persistence = if persistent {
            // Run as root, mosquitto would drop to the `mosquitto` user and fail to write its
            // database into our private temporary directory (silently losing sessions on
            // restart). `user root` keeps the caller's user; as non-root it has no effect.
            format!("persistence true\npersistence_location {}/\nautosave_interval 1\nuser root\n", dir.path().display())
        } else {
            "persistence false\n".to_string()
        };
        std::fs::write(&config, format!("listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}{extra_config}\n"))?;
        let child = Mosquitto::spawn(&config, port).await?;
        Ok(Mosquitto { port, child, config, _dir: dir })
    }

    async fn spawn(config: &Path, port: u16) -> anyhow::Result<Child> {
        let program = find_program("mosquitto", "mosquitto")?;
        let mut child = Command::new(program).arg("-c").arg(config).stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("starting mosquitto")?;
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), &mut child, "mosquitto").await?;
        Ok(child)
    }

    /// Stops the broker the way systemd would (SIGTERM, so it saves its state) and starts it
    /// again on the same port and configuration.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.restart_after(Duration::ZERO).await
    }

    /// [`Mosquitto::restart`] after an outage of `outage`.
    pub async fn restart_after(&mut self, outage: Duration) -> anyhow::Result<()> {
        terminate(&mut self.child);
        tokio::time::sleep(outage).await;
        self.child = Mosquitto::spawn(&self.config, self.port).await?;
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Publishes one message with `mosquitto_pub` (QoS 1), as a device or a script would.
    pub fn publish(&self, topic: &str, payload: &str) -> anyhow::Result<()> {
        let program = find_program("mosquitto_pub", "mosquitto-clients")?;
        let status = Command::new(program)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q", "1", "-t", topic, "-m", payload])
            .status()
            .context("running mosquitto_pub")?;
        if !status.success() {
            bail!("mosquitto_pub exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VictoriaMetrics on 127.0.0.1, with its InfluxDB-compatible write API.
#[derive(Debug)]
pub struct VictoriaMetrics {
    pub port: u16,
    child: Option<Child>,
    http: reqwest::Client,
    dir: TempDir,
}

impl VictoriaMetrics {
    pub async fn start() -> anyhow::Result<VictoriaMetrics> {
        let mut vm = VictoriaMetrics { port: free_port(), child: None, http: reqwest::Client::new(), dir: tempfile::tempdir()? };
        vm.resume().await?;
        Ok(vm)
    }

    /// Stops the server the way an operator would (SIGTERM, so it flushes what it accepted);
    /// its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it again on the same port and data.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let program = find_program("victoria-metrics", "victoria-metrics")?;
        let mut child = Command::new(program)
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.dir.path().display()))
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting victoria-metrics")?;
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], self.port)), &mut child, "victoria-metrics").await?;
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Makes everything written so far visible to queries.
    pub async fn flush(&self) -> anyhow::Result<()> {
        let response = self.http.get(format!("{}/internal/force_flush", self.url())).send().await?;
        if !response.status().is_success() {
            bail!("force_flush answered {}", response.status());
        }
        Ok(())
    }

    /// Raw series matching a selector such as `{__name__=~"tilt_.*"}`, one JSON object per
    /// series: `{"metric": {...labels}, "values": [...], "timestamps": [...]}`.
    pub async fn export(&self, selector: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        self.flush().await?;
        let response = self.http.get(format!("{}/api/v1/export", self.url())).query(&[("match[]", selector)]).send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("export answered {status}: {text}");
        }
        text.lines().filter(|line| !line.trim().is_empty()).map(|line| Ok(serde_json::from_str(line)?)).collect()
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A pseudo-terminal pair made by socat: `device` is what the daemon opens as its serial port,
/// `simulator` is the far end a test writes device bytes into. Killing it is unplugging the
/// adapter; [`PtyPair::replug`] makes the same paths appear again.
#[derive(Debug)]
pub struct PtyPair {
    pub device: PathBuf,
    pub simulator: PathBuf,
    child: Option<Child>,
}

impl PtyPair {
    pub async fn start(dir: &Path, name: &str) -> anyhow::Result<PtyPair> {
        let mut pair = PtyPair { device: dir.join(format!("{name}-dev")), simulator: dir.join(format!("{name}-sim")), child: None };
        pair.replug().await?;
        Ok(pair)
    }

    pub fn unplug(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn replug(&mut self) -> anyhow::Result<()> {
        self.unplug();
        let program = find_program("socat", "socat")?;
        let mut child = Command::new(program)
            .arg(format!("pty,raw,echo=0,link={}", self.device.display()))
            .arg(format!("pty,raw,echo=0,link={}", self.simulator.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting socat")?;
        for _ in 0..200 {
            if let Some(status) = child.try_wait()? {
                bail!("socat exited with {status}");
            }
            if self.device.exists() && self.simulator.exists() {
                self.child = Some(child);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("socat did not create {} within 2 s", self.device.display())
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        self.unplug();
    }
}
