//! What the harness reads about the daemon process besides [`gridwatch_tests::measure`]: bytes
//! written to storage from `/proc`, and the time from spawn to `READY=1` on a notify socket the
//! harness owns (the daemon speaks systemd's notify protocol).

use anyhow::Context;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::net::UnixDatagram;

/// Bytes the process has caused to be written to storage so far: `write_bytes` of
/// `/proc/<pid>/io` (pages it dirtied, flushed by the kernel later, not `write()` calls) less
/// `cancelled_write_bytes` (dirty pages of files it deleted or truncated before they were
/// flushed: they never reach the card).
pub fn disk_write_bytes(pid: u32) -> anyhow::Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).context("reading /proc/<pid>/io")?;
    let value = |name: &str| -> anyhow::Result<u64> {
        let line = io.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in /proc/<pid>/io"))?;
        Ok(line.split_whitespace().nth(1).with_context(|| format!("{name} value"))?.parse()?)
    };
    Ok(value("write_bytes:")?.saturating_sub(value("cancelled_write_bytes:")?))
}

/// A datagram socket standing in for systemd's notify socket.
pub struct NotifySocket {
    socket: UnixDatagram,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> anyhow::Result<NotifySocket> {
        Ok(NotifySocket { socket: UnixDatagram::bind(path).context("binding the notify socket")? })
    }

    /// Waits for a datagram containing `READY=1`; returns how long after `since` it came.
    pub async fn ready_after(&self, since: Instant, timeout: Duration) -> anyhow::Result<Duration> {
        let mut buffer = vec![0u8; 4096];
        tokio::time::timeout(timeout, async {
            loop {
                let n = self.socket.recv(&mut buffer).await?;
                if String::from_utf8_lossy(&buffer[..n]).lines().any(|l| l == "READY=1") {
                    return Ok::<_, anyhow::Error>(since.elapsed());
                }
            }
        })
        .await
        .context("the daemon did not send READY=1 in time")?
    }
}
