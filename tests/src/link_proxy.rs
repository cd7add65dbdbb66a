//! A TCP proxy standing in for a box's 4G link: it forwards to the first of its targets that
//! accepts, and can be blackholed — bytes are swallowed in both directions and connections stay
//! open, as on a mobile link that lost its radio; when the link comes back, the connections that
//! lived through the blackhole are closed (their streams lost bytes) and new ones pass. It can
//! also be made slow ([`LinkProxy::set_slow`]): each direction delays every byte by a one-way
//! latency and carries at most so many bytes a second, behind a modem's buffer (the sender
//! feels the link's pace once the buffer is full, as over TCP on a real link).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Duration, Instant};

/// How a slow link carries bytes, each direction alike.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Slowness {
    /// How long every byte takes to cross (one way).
    pub latency: Duration,
    /// At most this many bytes a second (none: as fast as loopback).
    pub bytes_per_sec: Option<u64>,
}

/// Bytes a direction holds in its modem's buffer before the sender must wait (4G modems buffer
/// generously).
const MODEM_BUFFER: usize = 64 * 1024;
/// The largest chunk forwarded at once on a slow link (pacing is per chunk).
const SLOW_CHUNK: usize = 1024;
/// The receive buffer of the proxy's sockets.
const SOCKET_BUFFER: u32 = 16 * 1024;

#[derive(Debug)]
pub struct LinkProxy {
    pub port: u16,
    blackholed: watch::Sender<bool>,
    slowness: watch::Sender<Slowness>,
    /// Payload bytes forwarded (both directions; TCP/IP headers not counted).
    forwarded: Arc<AtomicU64>,
    /// Connections accepted before this many were frozen ([`LinkProxy::freeze_open_connections`]).
    frozen_before: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

impl LinkProxy {
    pub async fn start(targets: Vec<SocketAddr>) -> anyhow::Result<LinkProxy> {
        // Small socket buffers on the proxy's side: a sender feels a slow link's pace instead of
        // filling loopback's megabytes (accepted sockets inherit the listener's).
        let socket = TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(SOCKET_BUFFER)?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let listener = socket.listen(1024)?;
        let port = listener.local_addr()?.port();
        let (blackholed, watch_rx) = watch::channel(false);
        let (slowness, slowness_rx) = watch::channel(Slowness::default());
        let forwarded = Arc::new(AtomicU64::new(0));
        let counter = forwarded.clone();
        let (frozen_before, accepted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (frozen, count) = (frozen_before.clone(), accepted.clone());
        let server = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let targets = targets.clone();
                let number = count.fetch_add(1, Ordering::SeqCst);
                let link =
                    Link { blackholed: watch_rx.clone(), slowness: slowness_rx.clone(), forwarded: counter.clone(), number, frozen_before: frozen.clone() };
                tokio::spawn(async move {
                    for target in targets {
                        if let Ok(upstream) = connect(target).await {
                            pump(client, upstream, link).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(LinkProxy { port, blackholed, slowness, forwarded, frozen_before, accepted, server })
    }

    /// `nats://127.0.0.1:<port>`: the address a box is given.
    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Payload bytes carried so far, both directions (what the link's tariff counts, less
    /// TCP/IP headers).
    pub fn bytes_forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Cuts (true) or restores (false) the link.
    pub fn set_blackholed(&self, on: bool) {
        self.blackholed.send_replace(on);
    }

    /// Every connection open now carries nothing more, ever, and none of them closes (a
    /// database failover behind a virtual IP, a firewall that forgot them); new ones work.
    pub fn freeze_open_connections(&self) {
        self.frozen_before.store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Makes the link slow (for connections open now and later); `Slowness::default()` makes
    /// it fast again.
    pub fn set_slow(&self, slowness: Slowness) {
        self.slowness.send_replace(slowness);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A connection to `target` whose receive buffer is the proxy's.
async fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_recv_buffer_size(SOCKET_BUFFER)?;
    socket.connect(target).await
}

/// What every connection through the proxy shares.
#[derive(Debug, Clone)]
struct Link {
    blackholed: watch::Receiver<bool>,
    slowness: watch::Receiver<Slowness>,
    forwarded: Arc<AtomicU64>,
    /// This connection's place among those accepted, and the first not frozen.
    number: u64,
    frozen_before: Arc<AtomicU64>,
}

impl Link {
    fn is_up(&self) -> bool {
        !*self.blackholed.borrow() && self.number >= self.frozen_before.load(Ordering::SeqCst)
    }
}

async fn pump(client: TcpStream, upstream: TcpStream, link: Link) {
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    tokio::select! {
        () = direction(client_read, upstream_write, link.clone()) => {}
        () = direction(upstream_read, client_write, link.clone()) => {}
        () = ended_by_blackhole(link.blackholed) => {}
    }
}

/// Returns when the link comes back from a blackhole this connection lived through.
async fn ended_by_blackhole(mut state: watch::Receiver<bool>) {
    let mut lived_through_blackhole = *state.borrow();
    while state.changed().await.is_ok() {
        if *state.borrow() {
            lived_through_blackhole = true;
        } else if lived_through_blackhole {
            return;
        }
    }
    std::future::pending().await
}

/// Carries one direction until either side closes: bytes read while the link is blackholed are
/// swallowed; on a slow link each chunk is released after the latency, at the link's pace.
async fn direction(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, link: Link) {
    let (queue, mut queued) = mpsc::channel::<(Instant, Vec<u8>)>(MODEM_BUFFER / SLOW_CHUNK);
    let reader = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let slow = *link.slowness.borrow() != Slowness::default();
            let size = if slow { SLOW_CHUNK } else { buffer.len() };
            match from.read(&mut buffer[..size]).await {
                Ok(n) if n > 0 => {
                    if link.is_up() && queue.send((Instant::now(), buffer[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    };
    let writer = async {
        // When the link has carried everything handed to it so far.
        let mut free_at = Instant::now();
        while let Some((read_at, chunk)) = queued.recv().await {
            let slowness = *link.slowness.borrow();
            let sent = read_at.max(free_at);
            let carried = slowness.bytes_per_sec.map_or(Duration::ZERO, |rate| Duration::from_secs_f64(chunk.len() as f64 / rate.max(1) as f64));
            free_at = sent + carried;
            tokio::time::sleep_until(free_at + slowness.latency).await;
            // The radio was lost while the chunk was on its way.
            if !link.is_up() {
                continue;
            }
            link.forwarded.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
}
