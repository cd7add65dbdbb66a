//! A NATS JetStream cluster on loopback (Debian package `nats-server`): three nodes with their
//! own client and route ports and stores in a temporary directory, killed when the handle drops.
//! A node can be killed with SIGKILL and started again on the same ports and store. Each node
//! also serves its monitoring endpoint (`/jsz`), from which [`NatsCluster::stream_leader`]
//! reads which node leads a stream's RAFT group, without a NATS client. Started with
//! [`NatsCluster::start_with_mqtt`], each node also has nats-server's MQTT listener (on its own
//! free port), where the district's 4G sensors publish.

use crate::free_port;
use crate::services::{find_program, wait_for_port};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

#[derive(Debug)]
struct Node {
    name: String,
    client_port: u16,
    /// The monitoring endpoint (`http:`), for `/jsz`.
    monitor_port: u16,
    /// nats-server's MQTT listener, when the cluster has one.
    mqtt_port: Option<u16>,
    config: PathBuf,
    child: Option<Child>,
}

/// A running cluster; `urls()` gives each node's client URL.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: TempDir,
}

impl NatsCluster {
    /// Starts `size` nodes (`n1`, `n2`, …) routed to each other, JetStream on. A port chosen
    /// free can be taken by another process before its node listens (a node then exits, seen
    /// once in a full district run): the cluster is started again on new ports, three times at
    /// most.
    pub async fn start(size: usize) -> anyhow::Result<NatsCluster> {
        NatsCluster::start_listening(size, false).await
    }

    /// [`NatsCluster::start`], each node with an MQTT listener too ([`NatsCluster::mqtt_ports`]).
    pub async fn start_with_mqtt(size: usize) -> anyhow::Result<NatsCluster> {
        NatsCluster::start_listening(size, true).await
    }

    async fn start_listening(size: usize, mqtt: bool) -> anyhow::Result<NatsCluster> {
        let mut attempt = 1;
        loop {
            match NatsCluster::start_on_free_ports(size, mqtt).await {
                Err(error) if attempt < 3 => {
                    eprintln!("nats-server cluster did not start ({error:#}); again on other ports");
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    async fn start_on_free_ports(size: usize, mqtt: bool) -> anyhow::Result<NatsCluster> {
        let dir = tempfile::tempdir()?;
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes: Vec<String> = route_ports.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect();
        let mut nodes = Vec::new();
        for (index, route_port) in route_ports.iter().enumerate() {
            let name = format!("n{}", index + 1);
            let client_port = free_port();
            let monitor_port = free_port();
            let mqtt_port = mqtt.then(free_port);
            // MQTT needs the node's server_name (set) and JetStream (on): its sessions live there.
            let mqtt_block = mqtt_port.map(|port| format!("mqtt {{\n  listen: \"127.0.0.1:{port}\"\n}}\n")).unwrap_or_default();
            let store = dir.path().join(&name);
            let config = dir.path().join(format!("{name}.conf"));
            // no_advertise: clients (a box behind its proxy) only use the addresses they were given.
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: \"127.0.0.1:{client_port}\"\nhttp: \"127.0.0.1:{monitor_port}\"\nlog_file: \"{log}\"\njetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 64MB\n  max_file_store: 512MB\n}}\ncluster {{\n  name: gridwatch-test\n  listen: \"127.0.0.1:{route_port}\"\n  routes: [{routes}]\n  no_advertise: true\n}}\n{mqtt_block}",
                    log = dir.path().join(format!("{name}.log")).display(),
                    store = store.display(),
                    routes = routes.join(", ")
                ),
            )?;
            nodes.push(Node { name, client_port, monitor_port, mqtt_port, config, child: None });
        }
        let mut cluster = NatsCluster { nodes, dir };
        for index in 0..size {
            cluster.spawn(index).await?;
        }
        Ok(cluster)
    }

    async fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let program = find_program("nats-server", "nats-server")?;
        let node = &mut self.nodes[index];
        let mut child =
            Command::new(program).arg("-c").arg(&node.config).stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("starting nats-server")?;
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], node.client_port)), &mut child, "nats-server").await?;
        node.child = Some(child);
        Ok(())
    }

    /// The client URL of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.client_port)).collect()
    }

    /// Every node's client address (for a proxy in front of the cluster).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| SocketAddr::from(([127, 0, 0, 1], n.client_port))).collect()
    }

    /// Every node's MQTT port (empty unless started [`NatsCluster::start_with_mqtt`]).
    pub fn mqtt_ports(&self) -> Vec<u16> {
        self.nodes.iter().filter_map(|n| n.mqtt_port).collect()
    }

    /// The nodes' names (`n1`, `n2`, …).
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The node leading `stream`'s RAFT group, as that node itself says (`/jsz`): a node that
    /// only remembers a leader (one just killed, say) is not believed. `None` while no running
    /// node leads it (an election under way, the stream not created yet).
    pub async fn stream_leader(&self, stream: &str) -> Option<String> {
        let http = reqwest::Client::new();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let url = format!("http://127.0.0.1:{}/jsz?accounts=true&streams=true", node.monitor_port);
            let Ok(response) = http.get(url).timeout(Duration::from_secs(2)).send().await else { continue };
            let Ok(jsz) = response.json::<serde_json::Value>().await else { continue };
            let leads = jsz["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
                .any(|detail| detail["name"] == stream && detail["cluster"]["leader"] == node.name.as_str());
            if leads {
                return Some(node.name.clone());
            }
        }
        None
    }

    /// [`NatsCluster::stream_leader`], asked every 100 ms until there is one or `timeout` passes.
    pub async fn wait_for_stream_leader(&self, stream: &str, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = self.stream_leader(stream).await {
                return Some(leader);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL of the node named `name` (`n1`…): a power cut of that server.
    pub fn kill(&mut self, name: &str) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.name == name) {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts a killed node again on its ports and store.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let index = self.nodes.iter().position(|n| n.name == name).with_context(|| format!("no node {name}"))?;
        self.spawn(index).await
    }

    /// The nodes' log files (for a failed test's message).
    pub fn logs(&self) -> String {
        self.nodes.iter().map(|n| std::fs::read_to_string(self.dir.path().join(format!("{}.log", n.name))).unwrap_or_default()).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
