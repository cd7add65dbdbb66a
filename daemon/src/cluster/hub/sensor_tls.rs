//! TLS on the hub's MQTT listener (`--mqtt-tls-cert`, `--mqtt-tls-key`): sensors reach the hub
//! over the public 4G internet, and their passwords must not cross it in clear. The certificate
//! chain and key are PEM files (as certbot or an internal CA writes them), read again when
//! either changes ([`super::watched_files`]), so a renewed certificate needs no restart.

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// The listener's certificate and key, read again when either changes.
pub type TlsFiles = super::watched_files::WatchedFiles<TlsAcceptor>;

/// Opens the certificate chain `cert` and its key `key`; fails when they do not make a TLS
/// server (the hub does not start).
pub fn open(cert: &Path, key: &Path) -> anyhow::Result<TlsFiles> {
    TlsFiles::open(vec![cert.to_path_buf(), key.to_path_buf()], "the MQTT listener's TLS certificate and key", acceptor)
}

/// The TLS server of `[certificate chain, key]`.
fn acceptor(paths: &[PathBuf]) -> anyhow::Result<TlsAcceptor> {
    let [cert, key] = paths else { anyhow::bail!("a certificate and a key are needed") };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificate chain {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no PEM certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the private key {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and the key do not make a TLS server (do they belong together?)")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
