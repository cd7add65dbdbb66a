//! `[http]` checks: the worker links' base address and signing secret.

use super::Checker;
use crate::config::raw;
use std::path::Path;
use std::time::Duration;

impl Checker<'_> {
    pub(super) fn worker_links(&mut self, http: &raw::RawHttp, base: &Path) -> Option<crate::links::WorkerLinks> {
        let public = http.public_url.as_ref()?;
        let url = self.http_url(public, "http.public_url")?;
        let secret = match (&http.link_secret, &http.link_secret_file) {
            (Some(secret), None) => Some(secret.clone()),
            (None, Some(file)) => self.read_secret(file, base, "http.link_secret_file"),
            _ => {
                self.error(public.span(), Some("http.link_secret"), "incident links need exactly one of `link_secret` or `link_secret_file`".into());
                None
            }
        }?;
        if secret.len() < 16 {
            self.error(public.span(), Some("http.link_secret"), "use a link secret of at least 16 characters".into());
            return None;
        }
        Some(crate::links::WorkerLinks::new(url, &secret, Duration::from_secs(http.link_valid_hours.max(1) * 3600)))
    }
}
