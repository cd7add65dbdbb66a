//! MQTT over TLS against a mosquitto TLS listener with certificates made in the test (rcgen):
//! the right CA and host name connect and readings flow through the daemon; a wrong CA, a
//! certificate for another host and an expired certificate are refused — and TLS settings are
//! never used over plain TCP.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{gridwatch, metric, metrics, Daemon, SECOND};
use gridwatch_tests::{free_port, now_ms, wait_for, Mosquitto};
use rcgen::{date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rumqttc::{AsyncClient, Event, Packet};
use std::path::Path;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    Ca { cert: params.self_signed(&key).unwrap(), key }
}

/// A broker certificate and key (PEM) for `host`, signed by `ca`; `expired` ends it in 2021.
fn server_cert(ca: &Ca, host: &str, expired: bool) -> (String, String) {
    let mut params = CertificateParams::new(vec![host.to_string()]).unwrap();
    if expired {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    (params.signed_by(&key, &ca.cert, &ca.key).unwrap().pem(), key.serialize_pem())
}

/// A mosquitto whose only listener speaks TLS with this certificate.
async fn tls_broker(dir: &Path, name: &str, (cert, key): (String, String)) -> Mosquitto {
    let (cert_path, key_path) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    Mosquitto::start_with(&format!("certfile {}\nkeyfile {}", cert_path.display(), key_path.display())).await.expect("mosquitto with a TLS listener")
}

fn config_text(port: u16, ca_file: &str) -> String {
    format!("state_dir = \"state\"\n[mqtt]\nbroker = \"mqtts://localhost:{port}\"\nca_file = \"{ca_file}\"\nclient_id = \"gw-tls-{port}\"\n[[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\n")
}

/// Connects with the daemon's own MQTT options; the broker's CONNACK or the error.
async fn connect(dir: &Path, port: u16, ca_pem: &str) -> Result<(), String> {
    std::fs::write(dir.join("trusted-ca.pem"), ca_pem).unwrap();
    let config = gridwatch::config::Config::parse("t.toml", &config_text(port, "trusted-ca.pem"), dir).map_err(|e| e.to_string())?;
    let (_client, mut eventloop) = AsyncClient::new(gridwatch::sources::mqtt::options(&config.mqtt, "tls-check"), 10);
    let handshake = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(format!("{error:?}")),
            }
        }
    };
    tokio::time::timeout(5 * SECOND, handshake).await.unwrap_or_else(|_| Err("no answer".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_certificate_connects_and_wrong_ca_host_or_expiry_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (ca("gridwatch test CA"), ca("some other CA"));
    let good = tls_broker(dir.path(), "good", server_cert(&ours, "localhost", false)).await;
    let other_host = tls_broker(dir.path(), "other-host", server_cert(&ours, "broker.elsewhere.example", false)).await;
    let expired = tls_broker(dir.path(), "expired", server_cert(&ours, "localhost", true)).await;

    assert_eq!(connect(dir.path(), good.port, &ours.cert.pem()).await, Ok(()), "the right CA and host name");
    let wrong_ca = connect(dir.path(), good.port, &theirs.cert.pem()).await.unwrap_err();
    assert!(wrong_ca.contains("UnknownIssuer"), "{wrong_ca}");
    let wrong_host = connect(dir.path(), other_host.port, &ours.cert.pem()).await.unwrap_err();
    assert!(wrong_host.contains("NotValidForName"), "{wrong_host}");
    let too_old = connect(dir.path(), expired.port, &ours.cert.pem()).await.unwrap_err();
    assert!(too_old.contains("Expired"), "{too_old}");

    // The daemon itself, over TLS: a reading arrives and is evaluated.
    std::fs::write(dir.path().join("ca.pem"), ours.cert.pem()).unwrap();
    let http_port = free_port();
    std::fs::write(dir.path().join("gridwatch.toml"), format!("{}[http]\nlisten = \"127.0.0.1:{http_port}\"\n", config_text(good.port, "ca.pem"))).unwrap();
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let cafile = dir.path().join("ca.pem");
    let evaluated = wait_for(20 * SECOND, || {
        let status = std::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                "localhost",
                "-p",
                &good.port.to_string(),
                "--cafile",
                cafile.to_str().unwrap(),
                "-q",
                "1",
                "-t",
                "gridwatch/north-lane/house-07/telemetry",
            ])
            .args(["-m", &format!(r#"{{"x": 0.1, "y": 0.0, "ts": {}}}"#, now_ms())])
            .status()
            .unwrap();
        assert!(status.success(), "mosquitto_pub over TLS");
        async { metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0) >= 1.0 }
    })
    .await;
    assert!(evaluated, "{:?}", daemon.stderr());
}

#[test]
fn tls_settings_are_never_sent_over_plain_tcp_and_mqtts_needs_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca("x").cert.pem()).unwrap();
    let plain = "state_dir = \"s\"\n[mqtt]\nbroker = \"mqtt://127.0.0.1:1883\"\nca_file = \"ca.pem\"\n";
    std::fs::write(dir.path().join("gridwatch.toml"), plain).unwrap();
    let output = gridwatch().args(["validate", "--config", "gridwatch.toml"]).current_dir(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("gridwatch.toml:4:11: error in `mqtt.ca_file`: TLS settings need an mqtts:// broker"), "{stderr}");
    std::fs::write(dir.path().join("gridwatch.toml"), "state_dir = \"s\"\n[mqtt]\nbroker = \"mqtts://broker.example\"\n").unwrap();
    let output = gridwatch().args(["validate", "--config", "gridwatch.toml"]).current_dir(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("an mqtts:// broker needs `ca_file`"), "{stderr}");
}
