//! Clears messages too large for the ingest connection out of its session (MQTT 3.1.1).
//!
//! rumqttc refuses an incoming packet over its limit (`[mqtt] max_packet_bytes`) by dropping
//! the connection, and a persistent session gives the same QoS 1 message back on every
//! reconnect: one such message would blind ingestion for good. So when the connection fails
//! that way, [`drain`] connects once under the same client id and session, reads what the broker
//! resends without ever holding a whole packet (payloads are skipped in a stream), acknowledges
//! only the packets over the limit — so the broker forgets them — and leaves every other message
//! unacknowledged for the ingest connection, which the broker sends again on its reconnect.
//! The caller counts each dropped message as a `too_large` rejection.
//!
//! Invariants: nothing up to the limit is ever acknowledged here; memory stays bounded by the
//! largest topic (64 KiB) whatever the packet size; a drain ends within its time budget.

use crate::config::MqttConfig;
use anyhow::Context;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Quiet time after which the broker has resent everything it had in flight.
const IDLE: Duration = Duration::from_millis(500);

/// A message acknowledged and thrown away: its topic and packet size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub topic: String,
    pub size: usize,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Connects as the ingest connection (`<client_id>-ingest`, persistent session) and drops the
/// resent packets over `limit` bytes; gives up after `budget`.
pub async fn drain(config: &MqttConfig, limit: usize, budget: Duration) -> anyhow::Result<Vec<Dropped>> {
    tokio::time::timeout(budget, drain_session(config, limit)).await.context("draining oversized messages took too long")?
}

async fn drain_session(config: &MqttConfig, limit: usize) -> anyhow::Result<Vec<Dropped>> {
    let (host, port) = super::broker_address(&config.broker);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.context("connecting to the broker")?;
    let mut stream: Box<dyn Stream> = match &config.tls {
        Some(tls) => {
            let name = rumqttc::tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone()).context("broker host name for TLS")?;
            Box::new(rumqttc::tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await.context("TLS to the broker")?)
        }
        None => Box::new(tcp),
    };
    stream.write_all(&connect_packet(config)).await?;
    let (first, len) = read_header(&mut stream).await?;
    anyhow::ensure!(first >> 4 == 2 && len == 2, "expected CONNACK from the broker");
    let mut connack = [0u8; 2];
    stream.read_exact(&mut connack).await?;
    anyhow::ensure!(connack[1] == 0, "broker refused the connection (return code {})", connack[1]);
    let mut dropped = Vec::new();
    while let Ok(header) = tokio::time::timeout(IDLE, read_header(&mut stream)).await {
        let (first, len) = header?;
        if first >> 4 != 3 {
            skip(&mut stream, len).await?;
            continue;
        }
        let qos = (first >> 1) & 3;
        let mut topic_len = [0u8; 2];
        stream.read_exact(&mut topic_len).await?;
        let mut topic = vec![0u8; usize::from(u16::from_be_bytes(topic_len))];
        stream.read_exact(&mut topic).await?;
        let mut pkid = [0u8; 2];
        if qos > 0 {
            stream.read_exact(&mut pkid).await?;
        }
        let header_len = 2 + topic.len() + if qos > 0 { 2 } else { 0 };
        skip(&mut stream, len.checked_sub(header_len).context("PUBLISH shorter than its topic")?).await?;
        if len > limit {
            if qos == 1 {
                stream.write_all(&[0x40, 2, pkid[0], pkid[1]]).await?;
            }
            dropped.push(Dropped { topic: String::from_utf8_lossy(&topic).into_owned(), size: len });
        }
    }
    // DISCONNECT: the session stays, with every message not acknowledged above.
    stream.write_all(&[0xE0, 0]).await?;
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(dropped)
}

/// CONNECT, MQTT 3.1.1, persistent session, the ingest connection's id and credentials.
fn connect_packet(config: &MqttConfig) -> Vec<u8> {
    let string = |out: &mut Vec<u8>, text: &[u8]| {
        out.extend_from_slice(&u16::try_from(text.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&text[..text.len().min(usize::from(u16::MAX))]);
    };
    let mut flags = 0u8; // clean session off
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4];
    let credentials = config.username.as_ref().zip(config.password.as_ref());
    if credentials.is_some() {
        flags |= 0x80 | 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&u16::try_from(config.keep_alive.as_secs()).unwrap_or(u16::MAX).to_be_bytes());
    string(&mut body, format!("{}-ingest", config.client_id).as_bytes());
    if let Some((user, password)) = credentials {
        string(&mut body, user.as_bytes());
        string(&mut body, password.as_bytes());
    }
    let mut packet = vec![0x10];
    remaining_length(&mut packet, body.len());
    packet.extend_from_slice(&body);
    packet
}

fn remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        if len == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The first byte of a fixed header and its remaining length.
async fn read_header(stream: &mut (impl AsyncRead + Unpin)) -> anyhow::Result<(u8, usize)> {
    let first = stream.read_u8().await?;
    let mut len = 0usize;
    for shift in [0, 7, 14, 21] {
        let byte = stream.read_u8().await?;
        len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((first, len));
        }
    }
    anyhow::bail!("malformed remaining length")
}

/// Reads and forgets `len` bytes.
async fn skip(stream: &mut (impl AsyncRead + Unpin), len: usize) -> anyhow::Result<()> {
    let copied = tokio::io::copy(&mut stream.take(len as u64), &mut tokio::io::sink()).await?;
    anyhow::ensure!(copied == len as u64, "connection closed inside a packet");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_lengths_use_the_variable_byte_encoding() {
        for (len, bytes) in [(0usize, vec![0u8]), (127, vec![0x7f]), (128, vec![0x80, 0x01]), (2_097_152, vec![0x80, 0x80, 0x80, 0x01])] {
            let mut out = Vec::new();
            remaining_length(&mut out, len);
            assert_eq!(out, bytes, "{len}");
        }
    }

    #[tokio::test]
    async fn a_header_reads_back_and_a_huge_length_is_skipped_in_a_stream() {
        let mut packet = vec![0x32];
        remaining_length(&mut packet, 3_000_000);
        let (first, len) = read_header(&mut packet.as_slice()).await.unwrap();
        assert_eq!((first, len), (0x32, 3_000_000));
        let mut source = tokio::io::repeat(7).take(3_000_000);
        skip(&mut source, len).await.unwrap();
        assert!(skip(&mut [1u8, 2].as_slice(), 3).await.is_err(), "a short packet is an error, not a hang");
        assert!(read_header(&mut [0x30u8, 0xff, 0xff, 0xff, 0xff].as_slice()).await.is_err());
    }
}
