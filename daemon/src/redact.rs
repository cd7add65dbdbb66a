//! URLs as logs and error messages may show them: without query or credentials (robot keys and
//! tokens travel in both).

/// The URL without query or credentials, safe for logs.
pub fn redacted(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.to_string()
}
