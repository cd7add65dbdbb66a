//! HMAC-SHA256 for the signatures gridwatch computes and checks: DingTalk's `sign`, the generic
//! webhook's `X-Gridwatch-Signature`, and the one verifier ([`Signer`]) behind everything a
//! worker presents as a credential — incident links (`crate::links`) and actions relayed on the
//! MQTT ack topic (`crate::sources::mqtt::incident_acks`).
//!
//! [`Signer`] signs a list of fields in a length-prefixed encoding: each field is its length in
//! bytes (4 bytes, big-endian) followed by its bytes, and the first field names the purpose
//! (`gridwatch-link-v2`, `gridwatch-ack-v2`). Because every field carries its length, no two
//! lists encode alike (text moved from one field to the next changes the signature), and a
//! signature made for one purpose is never valid for another, even under the same secret.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = new_mac(key);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
fn new_mac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex (either case); `None` for anything else.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok())).collect()
}

/// The length-prefixed encoding of `fields` (what [`Signer`] signs).
pub fn encode(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 4).sum());
    for field in fields {
        // A field over 4 GiB cannot come from a payload or a URL; saturate rather than wrap.
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// A secret and the one way gridwatch signs and checks a list of fields with it.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<secret>)")
    }
}

impl Signer {
    pub fn new(secret: &str) -> Signer {
        Signer { key: secret.as_bytes().to_vec() }
    }

    /// The signature of `fields` (the first one the purpose), as lower-case hex.
    pub fn sign(&self, fields: &[&[u8]]) -> String {
        hex(&hmac_sha256(&self.key, &encode(fields)))
    }

    /// Whether `signature` (hex, either case) is the signature of `fields`; compared in
    /// constant time.
    pub fn verify(&self, fields: &[&[u8]], signature: &str) -> bool {
        let Some(bytes) = from_hex(signature) else { return false };
        let mut mac = new_mac(&self.key);
        mac.update(&encode(fields));
        mac.verify_slice(&bytes).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc_4231_test_vector() {
        // RFC 4231, test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn the_encoding_prefixes_each_field_with_its_length() {
        assert_eq!(encode(&[b"ab", b"", b"c"]), b"\0\0\0\x02ab\0\0\0\0\0\0\0\x01c");
        // The hub-side example in docs/incidents.md computes this signature.
        let signer = Signer::new("shared-secret-123");
        let fields: [&[u8]; 6] = [b"gridwatch-ack-v2", b"12", b"accept", "王芳".as_bytes(), b"on my way", b"1795392000000"];
        assert_eq!(signer.sign(&fields), "86323684cf3a8b85601ca39a50927a2e79333128507ceeeef7d708c701ae7808");
    }

    #[test]
    fn text_moved_between_fields_does_not_verify() {
        let signer = Signer::new("k");
        let signature = signer.sign(&[b"p", b"ab", b"c"]);
        assert!(signer.verify(&[b"p", b"ab", b"c"], &signature));
        assert!(signer.verify(&[b"p", b"ab", b"c"], &signature.to_uppercase()), "hex in either case");
        assert!(!signer.verify(&[b"p", b"a", b"bc"], &signature));
        assert!(!signer.verify(&[b"p", b"abc"], &signature));
        assert!(!signer.verify(&[b"q", b"ab", b"c"], &signature), "another purpose");
        assert!(!signer.verify(&[b"p", b"ab", b"c"], "zz"));
        assert!(!signer.verify(&[b"p", b"ab", b"c"], &signature[..63]));
        assert!(!Signer::new("other").verify(&[b"p", b"ab", b"c"], &signature));
    }
}
