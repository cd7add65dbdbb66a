//! The hub's MQTT listener for sensors with their own 4G link (`--mqtt-listen`): a
//! publish-only MQTT 3.1.1 server (rumqttc's codec, sans IO) that puts each reading published
//! on `gw/s/<district>/<box>/<sensor>` into the stream [`crate::cluster::SENSORS_STREAM`] as
//! subject `gw.s.<district>.<box>.<sensor>`, where the sensor's home box takes it
//! ([`crate::cluster::sensors`]).
//!
//! Why not nats-server's own MQTT listener: its PUBACK goes out once the server has passed
//! the message on, not once the stream capturing the subject has stored it — readings
//! published while the stream elects a leader are acknowledged to the sensor and lost (the
//! ignored district test `nats_servers_mqtt_puback_does_not_wait_for_the_sensors_stream`:
//! 60 acknowledged, none stored). Here a QoS 1 PUBLISH is acknowledged only after JetStream's
//! own ack (the reading is on a quorum); when JetStream does not take it, the connection is
//! closed without a PUBACK, and the sensor's client sends it again when it reconnects.
//!
//! Who may publish: with `--mqtt-passwords`, a sensor logs in as `<district>/<box>/<sensor>`
//! with its password ([`super::sensor_passwords`]; a wrong one gets CONNACK 4 after a second, and
//! that login is not checked again for a while that doubles with each failure,
//! [`super::sensor_logins`])
//! and may publish only on its own topic; a publish on another is acknowledged, counted
//! (`not_authorized`) and dropped. `--mqtt-anonymous` takes anyone who reaches the port (a
//! private APN or VPN that only the district's sensors can reach). With `--mqtt-tls-cert` and
//! `--mqtt-tls-key` the listener speaks MQTT over TLS ([`super::sensor_tls`]), so passwords do
//! not cross the 4G internet in clear.
//!
//! Each sensor keeps a pace ([`super::sensor_pace`]): past it, its next publish is read later.
//!
//! Invariants: a PUBACK is never sent for a reading not stored; one connection's publishes are
//! stored one at a time, in order (each sensor's readings reach its box in the order sent); a
//! topic outside the convention, or a PUBLISH over 64 KiB (read past, not kept), is
//! acknowledged, counted and dropped (a device cannot stall its own connection with it); no sessions and no subscriptions (SUBACK says failure): a
//! sensor only publishes. MQTT 5 clients get CONNACK 1 (protocol refused); QoS 2 closes the
//! connection.

use super::metrics::{HubMetrics, ResultLabel};
use super::sensor_logins::FailedLogins;
use super::sensor_pace::Pace;
use super::sensor_passwords::PasswordFile;
use super::sensor_tls::TlsFiles;
use anyhow::Context;
use async_nats::jetstream;
use bytes::BytesMut;
use rumqttc::{ConnAck, ConnectReturnCode, Packet, PubAck, QoS, SubAck, SubscribeReasonCode, UnsubAck};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Largest packet taken: a reading's JSON is far smaller (the box refuses more than its
/// `max_payload_bytes` anyway).
const MAX_PACKET_BYTES: usize = 64 * 1024;
/// Connections at once at most; more are closed at once (a sensor retries).
const MAX_CONNECTIONS: usize = 10_000;
/// How long a new connection has to send CONNECT.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);
/// How long the listener waits after a failed accept (out of file descriptors) before the next.
const ACCEPT_AGAIN_AFTER: Duration = Duration::from_millis(100);
/// How long JetStream has to store a reading before the connection is closed unacknowledged.
const STORE_WITHIN: Duration = Duration::from_secs(10);

/// The subject of a sensor's topic (`gw/s/<district>/<box>/<sensor>`); none for a topic
/// outside the convention or with a level that cannot be a subject token.
pub fn subject_of(topic: &str) -> Option<String> {
    let levels: Vec<&str> = topic.strip_prefix("gw/s/")?.split('/').collect();
    let [district, box_id, sensor] = levels[..] else { return None };
    let sensor_ok = !sensor.is_empty() && sensor.len() <= 128 && sensor.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>'));
    (crate::config::is_token(district) && crate::config::is_token(box_id) && sensor_ok).then(|| format!("gw.s.{district}.{box_id}.{sensor}"))
}

/// How long a connection that gave a wrong user or password waits for its CONNACK.
const REFUSED_AFTER: Duration = Duration::from_secs(1);

/// Who may connect and publish.
pub enum Access {
    /// Sensors in this password file, each on its own topic only.
    Passwords(Arc<PasswordFile>),
    /// Anyone who reaches the port, on any sensor's topic.
    Anonymous,
}

/// Takes sensors' connections on `listen` until `shutdown`.
pub async fn serve(
    js: jetstream::Context,
    listen: SocketAddr,
    access: Access,
    tls: Option<Arc<TlsFiles>>,
    metrics: Arc<HubMetrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let access = Arc::new(access);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding the hub's MQTT listener to {listen}"))?;
    tracing::info!(%listen, "the hub takes 4G sensors' readings over MQTT");
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let pace = Arc::new(Pace::default());
    let logins = Arc::new(FailedLogins::default());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return Ok(()),
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, mostly: the error comes back at once, so the loop
                // would spin a core; wait for connections to close instead.
                metrics.sensor_accept_errors.inc();
                tracing::debug!(error = %error, "the hub's MQTT listener cannot accept a connection");
                tokio::time::sleep(ACCEPT_AGAIN_AFTER).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else { continue };
        let (js, access, tls, metrics, shutdown, pace, logins) =
            (js.clone(), access.clone(), tls.clone(), metrics.clone(), shutdown.clone(), pace.clone(), logins.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let session = async {
                let Some(tls) = tls else { return connection(stream, peer.ip(), &js, &access, (&pace, &logins), &metrics).await };
                let handshake = tokio::time::timeout(CONNECT_WITHIN, tls.current().accept(stream));
                let stream = handshake.await.map_err(|_| anyhow::anyhow!("no TLS handshake within {CONNECT_WITHIN:?}"))?.context("TLS handshake")?;
                connection(stream, peer.ip(), &js, &access, (&pace, &logins), &metrics).await
            };
            tokio::select! {
                ended = session => if let Err(error) = ended {
                    tracing::debug!(%peer, error = %format!("{error:#}"), "a 4G sensor's MQTT connection closed");
                },
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// One sensor's connection: CONNECT, then publishes (each stored before its PUBACK) and pings.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: IpAddr,
    js: &jetstream::Context,
    access: &Access,
    (pace, logins): (&Pace, &FailedLogins),
    metrics: &HubMetrics,
) -> anyhow::Result<()> {
    let mut buffer = BytesMut::with_capacity(1024);
    // Within CONNECT_WITHIN in all: a CONNECT trickled a byte at a time held a connection for
    // ever, each byte resetting a per-read timeout.
    let first = tokio::time::timeout(CONNECT_WITHIN, next_packet(&mut stream, &mut buffer, None));
    let first = first.await.map_err(|_| anyhow::anyhow!("no CONNECT within {CONNECT_WITHIN:?}"))?;
    let Some(Packet::Connect(connect)) = first? else {
        anyhow::bail!("the first packet is not CONNECT");
    };
    if connect.protocol != rumqttc::Protocol::V4 {
        // An MQTT 5 client is told so (CONNACK 1) rather than cut off without a word.
        send(&mut stream, Packet::ConnAck(ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false))).await?;
        anyhow::bail!("an MQTT 5 client (only 3.1.1 is taken)");
    }
    if connect.client_id.is_empty() && !connect.clean_session {
        // MQTT 3.1.1 §3.1.3.1: a session with no client id cannot be kept.
        send(&mut stream, Packet::ConnAck(ConnAck::new(ConnectReturnCode::BadClientId, false))).await?;
        anyhow::bail!("an empty client id asking for a kept session");
    }
    // The topic this connection may publish on; any for an anonymous listener.
    let own_topic = match access {
        Access::Anonymous => None,
        Access::Passwords(file) => {
            let passwords = file.current();
            let user = connect.login.as_ref().map(|login| login.username.clone()).unwrap_or_default();
            let now = std::time::Instant::now();
            let checked = logins.may_try(&user, peer, now);
            let right = checked && connect.login.as_ref().is_some_and(|login| passwords.check(&login.username, login.password.as_bytes()));
            let Some(login) = connect.login.filter(|_| right) else {
                metrics.sensor_logins_refused.inc();
                if checked {
                    logins.failed(&user, peer, now);
                } else {
                    metrics.sensor_logins_unchecked.inc();
                }
                tokio::time::sleep(REFUSED_AFTER).await;
                send(&mut stream, Packet::ConnAck(ConnAck::new(ConnectReturnCode::BadUserNamePassword, false))).await?;
                anyhow::bail!("a wrong user or password (client id {:?})", connect.client_id);
            };
            logins.succeeded(&login.username, peer);
            Some((format!("gw/s/{}", login.username), login.username))
        }
    };
    // MQTT 3.1.1: a client silent for one and a half keep-alives is gone.
    let silent_for = (connect.keep_alive > 0).then(|| Duration::from_secs(u64::from(connect.keep_alive)) * 3 / 2);
    send(&mut stream, Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))).await?;
    while let Some(incoming) = next_incoming(&mut stream, &mut buffer, silent_for).await? {
        let packet = match incoming {
            Incoming::Packet(packet) => packet,
            Incoming::TooLarge { qos, pkid, bytes } => {
                metrics.sensor_readings.get_or_create(&ResultLabel { result: "too_large".into() }).inc();
                tracing::warn!(bytes, max = MAX_PACKET_BYTES, "a 4G sensor's PUBLISH over the largest taken; acknowledged and dropped");
                if qos == QoS::AtLeastOnce {
                    send(&mut stream, Packet::PubAck(PubAck::new(pkid))).await?;
                }
                continue;
            }
        };
        match packet {
            Packet::Publish(publish) => {
                if publish.qos == QoS::ExactlyOnce {
                    anyhow::bail!("QoS 2 is not taken (publish with QoS 1)");
                }
                let sensor = own_topic.as_ref().map_or(publish.topic.as_str(), |(_, user)| user.as_str());
                let wait = pace.delay(sensor, std::time::Instant::now());
                if !wait.is_zero() {
                    metrics.sensor_readings_paced.inc();
                    tokio::time::sleep(wait).await;
                }
                if let (Access::Passwords(file), Some((_, user))) = (access, &own_topic) {
                    if !file.current().knows(user) {
                        anyhow::bail!("{user} was removed from the password file; its connection is closed");
                    }
                }
                if own_topic.as_ref().is_some_and(|(own, _)| *own != publish.topic) {
                    metrics.sensor_readings.get_or_create(&ResultLabel { result: "not_authorized".into() }).inc();
                    // Quoted and cut: a topic is the sender's text, and may hold line breaks.
                    tracing::warn!(topic = ?publish.topic.chars().take(200).collect::<String>(), own = ?own_topic.as_ref().map(|(own, _)| own), "a 4G sensor published on another sensor's topic; dropped");
                } else {
                    store(js, &publish.topic, publish.payload, metrics).await?;
                }
                if publish.qos == QoS::AtLeastOnce {
                    send(&mut stream, Packet::PubAck(PubAck::new(publish.pkid))).await?;
                }
            }
            Packet::PingReq => send(&mut stream, Packet::PingResp).await?,
            Packet::Subscribe(subscribe) => {
                let refused = vec![SubscribeReasonCode::Failure; subscribe.filters.len()];
                send(&mut stream, Packet::SubAck(SubAck::new(subscribe.pkid, refused))).await?;
            }
            Packet::Unsubscribe(unsubscribe) => send(&mut stream, Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid))).await?,
            Packet::Disconnect => return Ok(()),
            Packet::Connect(_) => anyhow::bail!("a second CONNECT"),
            // Acknowledgements of nothing this server sent.
            _ => {}
        }
    }
    Ok(())
}

/// Stores one reading on its subject and waits for JetStream's ack; a topic outside the
/// convention is counted and dropped (Ok: acknowledged, never sent again forever).
async fn store(js: &jetstream::Context, topic: &str, payload: bytes::Bytes, metrics: &HubMetrics) -> anyhow::Result<()> {
    let count = |result: &str| metrics.sensor_readings.get_or_create(&ResultLabel { result: result.into() }).inc();
    let Some(subject) = subject_of(topic) else {
        count("refused_topic");
        tracing::warn!(topic = ?topic.chars().take(200).collect::<String>(), "a 4G sensor's reading on a topic outside gw/s/<district>/<box>/<sensor> dropped");
        return Ok(());
    };
    let stored = async { js.publish(subject, payload).await?.await.map_err(anyhow::Error::from) };
    match tokio::time::timeout(STORE_WITHIN, stored).await {
        Ok(Ok(_)) => {
            count("stored");
            Ok(())
        }
        Ok(Err(error)) => {
            count("not_stored");
            Err(error.context("JetStream did not store a 4G sensor's reading; closing without PUBACK"))
        }
        Err(_) => {
            count("not_stored");
            anyhow::bail!("JetStream did not store a 4G sensor's reading within {STORE_WITHIN:?}; closing without PUBACK")
        }
    }
}

/// What came next on a connection.
#[derive(Debug, PartialEq)]
enum Incoming {
    Packet(Packet),
    /// A PUBLISH over [`MAX_PACKET_BYTES`], read past and dropped: acknowledged (QoS 1) and
    /// counted, or a firmware that sends it again at each reconnect would stall itself behind it.
    TooLarge {
        qos: QoS,
        pkid: u16,
        bytes: usize,
    },
}

/// The next packet; none when the client closed the connection. Fails on a malformed or
/// oversized packet, or when nothing came within `within`.
async fn next_packet<S: AsyncRead + Unpin>(stream: &mut S, buffer: &mut BytesMut, within: Option<Duration>) -> anyhow::Result<Option<Packet>> {
    match next_incoming(stream, buffer, within).await? {
        Some(Incoming::Packet(packet)) => Ok(Some(packet)),
        Some(Incoming::TooLarge { bytes, .. }) => anyhow::bail!("a PUBLISH of {bytes} bytes, over {MAX_PACKET_BYTES}"),
        None => Ok(None),
    }
}

/// The next packet, or a PUBLISH too large to take read past; none when the client closed the
/// connection. Fails on a malformed packet, another packet over [`MAX_PACKET_BYTES`], or when
/// nothing came within `within`.
async fn next_incoming<S: AsyncRead + Unpin>(stream: &mut S, buffer: &mut BytesMut, within: Option<Duration>) -> anyhow::Result<Option<Incoming>> {
    loop {
        match Packet::read(buffer, MAX_PACKET_BYTES) {
            Ok(packet) => return Ok(Some(Incoming::Packet(packet))),
            Err(rumqttc::Error::InsufficientBytes(_)) => {}
            Err(rumqttc::Error::PayloadSizeLimitExceeded(_)) if buffer.first().is_some_and(|byte1| byte1 >> 4 == 3) => {
                return skip_publish(stream, buffer, within).await;
            }
            Err(error) => anyhow::bail!("malformed MQTT packet: {error:?}"),
        }
        if !read_more(stream, buffer, within).await? {
            return Ok(None);
        }
    }
}

/// Appends what the client sends next to `buffer`; `false` when it closed the connection.
async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buffer: &mut BytesMut, within: Option<Duration>) -> anyhow::Result<bool> {
    let read = stream.read_buf(buffer);
    let read = match within {
        Some(within) => tokio::time::timeout(within, read).await.map_err(|_| anyhow::anyhow!("silent past its keep-alive"))?,
        None => read.await,
    };
    Ok(read? > 0)
}

/// Reads past the oversized PUBLISH at the start of `buffer`, keeping none of its payload: its
/// fixed header, topic and packet id are read, the rest is dropped as it comes.
async fn skip_publish<S: AsyncRead + Unpin>(stream: &mut S, buffer: &mut BytesMut, within: Option<Duration>) -> anyhow::Result<Option<Incoming>> {
    use bytes::Buf;
    // The fixed header: type and flags, then the remaining length (1–4 bytes, 7 bits each).
    let (mut remaining, mut header) = (0usize, 1usize);
    loop {
        let Some(&byte) = buffer.get(header) else { anyhow::bail!("malformed MQTT packet: a cut fixed header") };
        remaining += usize::from(byte & 0x7f) << (7 * (header - 1));
        header += 1;
        if byte & 0x80 == 0 {
            break;
        }
        anyhow::ensure!(header <= 4, "malformed MQTT packet: a remaining length over 4 bytes");
    }
    let qos = match (buffer[0] >> 1) & 0b11 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => anyhow::bail!("QoS 2 is not taken (publish with QoS 1)"),
    };
    // The topic's length, the topic, and the packet id (QoS 1) come before the payload.
    while buffer.len() < header + 2 {
        anyhow::ensure!(read_more(stream, buffer, within).await?, "closed within a PUBLISH");
    }
    let topic_len = usize::from(u16::from_be_bytes([buffer[header], buffer[header + 1]]));
    let id_at = header + 2 + topic_len;
    let pkid = if qos == QoS::AtLeastOnce {
        while buffer.len() < id_at + 2 {
            anyhow::ensure!(read_more(stream, buffer, within).await?, "closed within a PUBLISH");
        }
        u16::from_be_bytes([buffer[id_at], buffer[id_at + 1]])
    } else {
        0
    };
    let bytes = header + remaining;
    anyhow::ensure!(id_at + 2 <= bytes, "malformed MQTT packet: a topic longer than its PUBLISH");
    let mut left = bytes;
    loop {
        if buffer.len() >= left {
            // What follows belongs to the next packets.
            buffer.advance(left);
            return Ok(Some(Incoming::TooLarge { qos, pkid, bytes }));
        }
        left -= buffer.len();
        buffer.clear();
        anyhow::ensure!(read_more(stream, buffer, within).await?, "closed within a PUBLISH");
    }
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, packet: Packet) -> anyhow::Result<()> {
    let mut out = BytesMut::new();
    packet.write(&mut out, MAX_PACKET_BYTES).map_err(|error| anyhow::anyhow!("encoding an MQTT packet: {error:?}"))?;
    stream.write_all(&out).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    /// A client's side of one connection to [`connection`] (no NATS reachable: only what needs
    /// no stream is asked).
    struct Client {
        stream: TcpStream,
        buffer: BytesMut,
    }

    impl Client {
        async fn start(metrics: Arc<HubMetrics>) -> Client {
            Client::start_with(metrics, Access::Anonymous).await
        }

        async fn start_with(metrics: Arc<HubMetrics>, access: Access) -> Client {
            let nats = async_nats::ConnectOptions::new().retry_on_initial_connect().connect("127.0.0.1:1").await.unwrap();
            let js = jetstream::new(nats);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                let _ = connection(stream, [127, 0, 0, 1].into(), &js, &access, (&Pace::default(), &FailedLogins::default()), &metrics).await;
            });
            Client { stream: TcpStream::connect(address).await.unwrap(), buffer: BytesMut::new() }
        }

        async fn ask(&mut self, packet: Packet) -> Option<Packet> {
            send(&mut self.stream, packet).await.unwrap();
            next_packet(&mut self.stream, &mut self.buffer, Some(Duration::from_secs(5))).await.unwrap()
        }
    }

    #[tokio::test]
    async fn a_sensor_connects_pings_cannot_subscribe_and_a_stray_topic_is_acknowledged_and_counted() {
        let metrics = Arc::new(HubMetrics::new());
        let mut client = Client::start(metrics.clone()).await;
        assert_eq!(
            client.ask(Packet::Connect(rumqttc::Connect::new("house-17"))).await,
            Some(Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)))
        );
        assert_eq!(client.ask(Packet::PingReq).await, Some(Packet::PingResp));
        let mut subscribe = rumqttc::Subscribe::new("gw/s/#", QoS::AtLeastOnce);
        subscribe.pkid = 3;
        assert_eq!(client.ask(Packet::Subscribe(subscribe)).await, Some(Packet::SubAck(SubAck::new(3, vec![SubscribeReasonCode::Failure]))));
        let mut stray = rumqttc::Publish::new("gw/s/old-town/east", QoS::AtLeastOnce, "{}");
        stray.pkid = 7;
        assert_eq!(client.ask(Packet::Publish(stray)).await, Some(Packet::PubAck(PubAck::new(7))));
        assert_eq!(metrics.sensor_readings.get_or_create(&ResultLabel { result: "refused_topic".into() }).get(), 1);
    }

    /// Passwords whose one sensor, east-03, logs in with "ding-dong 17" (`mosquitto_passwd`'s
    /// own line); the file stays in the returned directory.
    fn east_03_only() -> (Access, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        let line = "old-town/east/east-03:$7$101$zCo2QQ2yKG0uAyfy$sZcTMJb8gd5/tQwqLmvGo+EVzSO5MB4lsRY1KJ51RHQpAMwCOIhOLqgSsRmNTge4kPxrJhu0A3xgqUmTynLHiQ==\n";
        std::fs::write(&path, line).unwrap();
        (Access::Passwords(Arc::new(super::super::sensor_passwords::open(&path).unwrap())), dir)
    }

    async fn with_passwords(metrics: Arc<HubMetrics>) -> (Client, tempfile::TempDir) {
        let (access, dir) = east_03_only();
        (Client::start_with(metrics, access).await, dir)
    }

    fn login(user: &str, password: &str) -> Packet {
        let mut connect = rumqttc::Connect::new("east-03");
        connect.set_login(user, password);
        Packet::Connect(connect)
    }

    #[tokio::test]
    async fn a_wrong_password_or_no_login_is_refused_when_passwords_are_kept() {
        for connect in
            [login("old-town/east/east-03", "ding-dong 18"), login("old-town/east/east-04", "ding-dong 17"), Packet::Connect(rumqttc::Connect::new("x"))]
        {
            let metrics = Arc::new(HubMetrics::new());
            let (mut client, _dir) = with_passwords(metrics.clone()).await;
            let asked = std::time::Instant::now();
            assert_eq!(client.ask(connect).await, Some(Packet::ConnAck(ConnAck::new(ConnectReturnCode::BadUserNamePassword, false))));
            assert!(asked.elapsed() >= REFUSED_AFTER, "a refusal waits before it is told");
            assert_eq!(metrics.sensor_logins_refused.get(), 1);
        }
    }

    #[tokio::test]
    async fn a_sensor_removed_from_the_password_file_is_cut_off_at_its_next_publish() {
        let (access, dir) = east_03_only();
        let path = dir.path().join("passwords");
        let kept = std::fs::read_to_string(&path).unwrap().replace("east-03:", "east-04:");
        let mut client = Client::start_with(Arc::new(HubMetrics::new()), access).await;
        assert_eq!(client.ask(login("old-town/east/east-03", "ding-dong 17")).await, Some(Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))));
        assert_eq!(client.ask(Packet::PingReq).await, Some(Packet::PingResp));
        std::fs::write(&path, kept).unwrap();
        let mut reading = rumqttc::Publish::new("gw/s/old-town/east/east-03", QoS::AtLeastOnce, r#"{"x": 0.5}"#);
        reading.pkid = 5;
        assert_eq!(client.ask(Packet::Publish(reading)).await, None, "closed without a PUBACK");
    }

    #[tokio::test]
    async fn a_sensor_logged_in_may_not_publish_for_another() {
        let metrics = Arc::new(HubMetrics::new());
        let (mut client, _dir) = with_passwords(metrics.clone()).await;
        assert_eq!(client.ask(login("old-town/east/east-03", "ding-dong 17")).await, Some(Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))));
        let mut other = rumqttc::Publish::new("gw/s/old-town/east/east-04", QoS::AtLeastOnce, r#"{"x": 0.5}"#);
        other.pkid = 4;
        assert_eq!(client.ask(Packet::Publish(other)).await, Some(Packet::PubAck(PubAck::new(4))), "acknowledged and dropped");
        assert_eq!(metrics.sensor_readings.get_or_create(&ResultLabel { result: "not_authorized".into() }).get(), 1);
        assert_eq!(metrics.sensor_readings.get_or_create(&ResultLabel { result: "not_stored".into() }).get(), 0, "not offered to the stream");
        assert_eq!(metrics.sensor_logins_refused.get(), 0);
    }

    /// `mosquitto_pub` (package mosquitto-clients) as a 4G sensor: one QoS 1 message; whether
    /// it was acknowledged (exit 0), and what it printed.
    async fn mosquitto_pub(args: Vec<String>) -> (bool, String) {
        let out = tokio::process::Command::new("mosquitto_pub").args(["-q", "1", "-m", r#"{"x": 0.5}"#]).args(args).output().await;
        let out = out.expect("mosquitto_pub (package mosquitto-clients)");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// The listener as a hub runs it, on a free port (no NATS reachable: only what needs no
    /// stream is asked), once it takes connections: its port, and the token that stops it.
    async fn listening(access: Access, tls: Option<Arc<TlsFiles>>, metrics: Arc<HubMetrics>) -> (u16, CancellationToken) {
        let nats = async_nats::ConnectOptions::new().retry_on_initial_connect().connect("127.0.0.1:1").await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let shutdown = CancellationToken::new();
        let listen: SocketAddr = ([127, 0, 0, 1], port).into();
        tokio::spawn(serve(jetstream::new(nats), listen, access, tls, metrics, shutdown.clone()));
        for _ in 0..100 {
            if TcpStream::connect(listen).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (port, shutdown)
    }

    /// The listener with passwords and TLS, as a hub runs it, and a real MQTT client over TLS:
    /// the right password publishes (on another sensor's topic here: acknowledged and dropped,
    /// so no stream is needed), a wrong one and plain MQTT do not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sensor_logs_in_over_tls_and_plain_mqtt_or_a_wrong_password_gets_nothing_through() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
        let (cert_path, key_path) = (dir.path().join("hub.crt"), dir.path().join("hub.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let tls = Arc::new(super::super::sensor_tls::open(&cert_path, &key_path).unwrap());
        let metrics = Arc::new(HubMetrics::new());
        let (access, _passwords) = east_03_only();
        let (port, shutdown) = listening(access, Some(tls), metrics.clone()).await;
        let sensor = |password: &str, tls: bool| {
            let mut args: Vec<String> = ["-h", "localhost", "-p", &port.to_string(), "-u", "old-town/east/east-03", "-P", password].map(String::from).to_vec();
            args.extend(["-t".into(), "gw/s/old-town/east/east-04".into(), "-i".into(), "east-03".into()]);
            if tls {
                args.extend(["--cafile".into(), cert_path.display().to_string()]);
            }
            args
        };
        let not_authorized = || metrics.sensor_readings.get_or_create(&ResultLabel { result: "not_authorized".into() }).get();

        let (acked, said) = mosquitto_pub(sensor("ding-dong 17", true)).await;
        assert!(acked, "over TLS with the right password: {said}");
        assert_eq!(not_authorized(), 1, "the publish reached the listener");
        let (acked, said) = mosquitto_pub(sensor("ding-dong 18", true)).await;
        assert!(!acked && metrics.sensor_logins_refused.get() == 1, "a wrong password: {said}");
        let (acked, _) = mosquitto_pub(sensor("ding-dong 17", false)).await;
        assert!(!acked, "plain MQTT on the TLS port");
        assert_eq!((not_authorized(), metrics.sensor_logins_refused.get()), (1, 1), "nothing of either reached the MQTT session");
        shutdown.cancel();
    }

    /// After a wrong password, the same login from the same address is not checked for 2 s —
    /// the right password too is refused meanwhile — and gets in once the wait is over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_login_that_just_failed_is_not_checked_again_until_its_wait_is_over() {
        let metrics = Arc::new(HubMetrics::new());
        let (access, _passwords) = east_03_only();
        let (port, shutdown) = listening(access, None, metrics.clone()).await;
        let sensor = |password: &str| {
            ["-h", "127.0.0.1", "-p", &port.to_string(), "-u", "old-town/east/east-03", "-P", password, "-t", "gw/s/old-town/east/east-04", "-i", "east-03"]
                .map(String::from)
                .to_vec()
        };
        let (acked, _) = mosquitto_pub(sensor("guess")).await;
        assert!(!acked && metrics.sensor_logins_refused.get() == 1, "a wrong password");
        let (acked, _) = mosquitto_pub(sensor("ding-dong 17")).await;
        assert!(!acked, "the right password within the wait is refused unchecked");
        assert_eq!((metrics.sensor_logins_refused.get(), metrics.sensor_logins_unchecked.get()), (2, 1));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (acked, said) = mosquitto_pub(sensor("ding-dong 17")).await;
        assert!(acked, "the right password once the wait is over: {said}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_empty_client_id_asking_for_a_kept_session_is_refused() {
        let mut client = Client::start(Arc::new(HubMetrics::new())).await;
        let mut connect = rumqttc::Connect::new("");
        connect.clean_session = false;
        assert_eq!(client.ask(Packet::Connect(connect)).await, Some(Packet::ConnAck(ConnAck::new(ConnectReturnCode::BadClientId, false))));
    }

    #[tokio::test]
    async fn an_mqtt_5_client_is_told_its_protocol_is_refused() {
        let mut client = Client::start(Arc::new(HubMetrics::new())).await;
        // CONNECT, protocol level 5, clean start, keep-alive 60, no properties, client id "ab".
        let connect = [0x10, 0x0f, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x02, b'a', b'b'];
        client.stream.write_all(&connect).await.unwrap();
        let answer = next_packet(&mut client.stream, &mut client.buffer, Some(Duration::from_secs(5))).await.unwrap();
        assert_eq!(answer, Some(Packet::ConnAck(ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false))));
    }

    #[tokio::test]
    async fn a_qos_2_publish_closes_the_connection_unacknowledged() {
        let mut client = Client::start(Arc::new(HubMetrics::new())).await;
        assert!(matches!(client.ask(Packet::Connect(rumqttc::Connect::new("house-17"))).await, Some(Packet::ConnAck(_))));
        let mut publish = rumqttc::Publish::new("gw/s/old-town/east/house-17", QoS::ExactlyOnce, r#"{"x": 0.1}"#);
        publish.pkid = 9;
        assert_eq!(client.ask(Packet::Publish(publish)).await, None, "closed, no PUBREC");
    }

    /// A PUBLISH of 200 KB (QoS 1, then QoS 0) is read past, acknowledged and counted; the
    /// connection goes on: a ping after it is answered.
    #[tokio::test]
    async fn an_oversized_publish_is_acknowledged_counted_and_the_connection_goes_on() {
        let metrics = Arc::new(HubMetrics::new());
        let mut client = Client::start(metrics.clone()).await;
        assert!(matches!(client.ask(Packet::Connect(rumqttc::Connect::new("house-17"))).await, Some(Packet::ConnAck(_))));
        let payload = format!(r#"{{"x": 0.1, "pad": "{}"}}"#, "p".repeat(200_000));
        let mut big = rumqttc::Publish::new("gw/s/old-town/east/house-17", QoS::AtLeastOnce, payload.clone());
        big.pkid = 11;
        let small = rumqttc::Publish::new("gw/s/old-town/east/house-17", QoS::AtMostOnce, payload);
        let mut bytes = BytesMut::new();
        Packet::Publish(big).write(&mut bytes, 1 << 20).unwrap();
        Packet::Publish(small).write(&mut bytes, 1 << 20).unwrap();
        Packet::PingReq.write(&mut bytes, 16).unwrap();
        // Sent in pieces, as a 4G link delivers it.
        for piece in bytes.chunks(7_001) {
            client.stream.write_all(piece).await.unwrap();
        }
        let within = Some(Duration::from_secs(5));
        let ack = next_packet(&mut client.stream, &mut client.buffer, within).await.unwrap();
        assert_eq!(ack, Some(Packet::PubAck(PubAck::new(11))));
        let pong = next_packet(&mut client.stream, &mut client.buffer, within).await.unwrap();
        assert_eq!(pong, Some(Packet::PingResp), "the QoS 0 one gets no answer; the ping does");
        assert_eq!(metrics.sensor_readings.get_or_create(&ResultLabel { result: "too_large".into() }).get(), 2);
    }

    #[test]
    fn a_sensors_topic_names_its_subject_and_nothing_else_does() {
        assert_eq!(subject_of("gw/s/old-town/east/east-03").as_deref(), Some("gw.s.old-town.east.east-03"));
        for topic in
            ["gw/s/old-town/east", "gw/s/old-town/east/a/b", "gw/s/old.town/east/x", "gw/s/d/b/a.b", "gw/s/d/b/*", "gw/s/d/b/", "gridwatch/east/x/telemetry"]
        {
            assert_eq!(subject_of(topic), None, "{topic}");
        }
    }
}
