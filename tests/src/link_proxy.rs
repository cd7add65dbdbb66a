//! A TCP proxy standing in for a box's 4G link: it forwards to the first of its targets that
//! accepts, and can be blackholed — bytes are swallowed in both directions and connections stay
//! open, as on a mobile link that lost its radio; when the link comes back, the connections that
//! lived through the blackhole are closed (their streams lost bytes) and new ones pass.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug)]
pub struct LinkProxy {
    pub port: u16,
    blackholed: watch::Sender<bool>,
    /// Payload bytes forwarded (both directions; TCP/IP headers not counted).
    forwarded: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

impl LinkProxy {
    pub async fn start(targets: Vec<SocketAddr>) -> anyhow::Result<LinkProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (blackholed, watch_rx) = watch::channel(false);
        let forwarded = Arc::new(AtomicU64::new(0));
        let counter = forwarded.clone();
        let server = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let targets = targets.clone();
                let state = watch_rx.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    for target in targets {
                        if let Ok(upstream) = TcpStream::connect(target).await {
                            pump(client, upstream, state, &counter).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(LinkProxy { port, blackholed, forwarded, server })
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
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn pump(client: TcpStream, upstream: TcpStream, mut state: watch::Receiver<bool>, forwarded: &AtomicU64) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let mut lived_through_blackhole = *state.borrow();
    loop {
        let forward = !*state.borrow();
        tokio::select! {
            read = client_read.read(&mut up) => match read {
                Ok(n) if n > 0 => if forward {
                    forwarded.fetch_add(n as u64, Ordering::Relaxed);
                    if upstream_write.write_all(&up[..n]).await.is_err() { return }
                },
                _ => return,
            },
            read = upstream_read.read(&mut down) => match read {
                Ok(n) if n > 0 => if forward {
                    forwarded.fetch_add(n as u64, Ordering::Relaxed);
                    if client_write.write_all(&down[..n]).await.is_err() { return }
                },
                _ => return,
            },
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                if *state.borrow() {
                    lived_through_blackhole = true;
                } else if lived_through_blackhole {
                    return;
                }
            }
        }
    }
}
