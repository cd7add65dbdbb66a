//! Worker links: each notification carries a short link to the incident's page on this box.
//! No login — the link is the credential: it names the incident and an expiry and is signed
//! with HMAC-SHA256 under the box's link secret, so a forged, altered or expired link is
//! refused. (Binding links to one member comes with the rosters.)

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::time::Duration;

#[derive(Clone)]
pub struct WorkerLinks {
    /// How workers' phones reach this box, e.g. `http://10.8.0.5:9181`.
    pub public_url: reqwest::Url,
    secret: Vec<u8>,
    pub valid: Duration,
}

impl std::fmt::Debug for WorkerLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerLinks").field("public_url", &self.public_url.as_str()).field("valid", &self.valid).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this link has expired; ask for a new one")]
    Expired,
    #[error("this link is not valid")]
    BadSignature,
}

impl WorkerLinks {
    pub fn new(public_url: reqwest::Url, secret: &str, valid: Duration) -> WorkerLinks {
        WorkerLinks { public_url, secret: secret.as_bytes().to_vec(), valid }
    }

    fn mac(&self, incident: i64, expires: i64) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(format!("incident:{incident}:{expires}").as_bytes());
        mac
    }

    /// The signed path and query for an incident, valid from `now_secs`.
    pub fn path(&self, incident: i64, now_secs: i64) -> String {
        let expires = now_secs + self.valid.as_secs() as i64;
        let signature: String = self.mac(incident, expires).finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        format!("/incident/{incident}?exp={expires}&sig={signature}")
    }

    /// The full link.
    pub fn link(&self, incident: i64, now_secs: i64) -> String {
        format!("{}{}", self.public_url.as_str().trim_end_matches('/'), self.path(incident, now_secs))
    }

    /// Checks a link's expiry and signature (in constant time).
    pub fn verify(&self, incident: i64, expires: i64, signature: &str, now_secs: i64) -> Result<(), LinkError> {
        let bytes: Option<Vec<u8>> = (0..signature.len())
            .step_by(2)
            .map(|i| signature.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect();
        let bytes = bytes.ok_or(LinkError::BadSignature)?;
        self.mac(incident, expires).verify_slice(&bytes).map_err(|_| LinkError::BadSignature)?;
        if now_secs > expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> WorkerLinks {
        WorkerLinks::new("http://10.8.0.5:9181/".parse().unwrap(), "s3cret", Duration::from_secs(3600))
    }

    fn parts(link: &str) -> (i64, i64, String) {
        let url: reqwest::Url = link.parse().unwrap();
        let id = url.path().rsplit('/').next().unwrap().parse().unwrap();
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        (id, query["exp"].parse().unwrap(), query["sig"].clone())
    }

    #[test]
    fn a_fresh_link_is_accepted() {
        let link = links().link(42, 1_000);
        assert!(link.starts_with("http://10.8.0.5:9181/incident/42?exp=4600&sig="), "{link}");
        let (id, exp, sig) = parts(&link);
        assert_eq!(links().verify(id, exp, &sig, 1_500), Ok(()));
    }

    #[test]
    fn expired_altered_or_forged_links_are_refused() {
        let (id, exp, sig) = parts(&links().link(42, 1_000));
        assert_eq!(links().verify(id, exp, &sig, 4_601), Err(LinkError::Expired));
        assert_eq!(links().verify(43, exp, &sig, 1_500), Err(LinkError::BadSignature), "another incident");
        assert_eq!(links().verify(id, exp + 86_400, &sig, 1_500), Err(LinkError::BadSignature), "a longer life");
        assert_eq!(links().verify(id, exp, "zz", 1_500), Err(LinkError::BadSignature));
        let other = WorkerLinks::new("http://x/".parse().unwrap(), "another secret", Duration::from_secs(3600));
        assert_eq!(other.verify(id, exp, &sig, 1_500), Err(LinkError::BadSignature), "another box's secret");
    }
}
