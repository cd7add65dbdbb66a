//! One roster for the district: `gridwatch hub roster put` checks a roster file with the box's
//! own parser ([`crate::dispatch::Dispatch::parse`]: members, shifts, policies, quiet hours) and
//! writes it into the KV bucket [`super::ROSTER_BUCKET`] under the district's name; every box
//! watches that key, checks what arrives with the same parser and against its own channels, puts
//! it in force without a restart ([`InForce::replace`]) and keeps it in its state directory as the
//! last good copy, on which a box restarted without its link starts.
//!
//! Invariant: what is in force is a roster that passed the checks; a refused one changes nothing
//! (the old one stays in force and on disk), and says why with file:line:column.

use crate::config::ClusterConfig;
use crate::dispatch::roster::RosterErrors;
use crate::dispatch::{Dispatch, InForce};
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The last good district roster, in the box's state directory.
pub const LAST_COPY: &str = "district-roster.toml";

/// Checks a roster's text: the parser's located errors, then (on a box) channels it names that
/// the box does not have. `name` labels the errors.
pub fn check(name: &str, text: &str, channels: Option<&[String]>) -> Result<Dispatch, RosterErrors> {
    let dispatch = Dispatch::parse(name, text)?;
    let unknown = channels.map(|channels| dispatch.roster.unknown_channels(channels)).unwrap_or_default();
    if unknown.is_empty() {
        Ok(dispatch)
    } else {
        Err(RosterErrors(unknown))
    }
}

/// The roster a box with `[cluster]` starts on: the last district roster it kept, if it has one
/// and it still passes the checks; otherwise none (the configuration's own roster).
pub fn last_copy(state_dir: &Path, channels: &[String]) -> Option<Dispatch> {
    let path = state_dir.join(LAST_COPY);
    let text = std::fs::read_to_string(&path).ok()?;
    match check(&path.display().to_string(), &text, Some(channels)) {
        Ok(dispatch) => {
            tracing::info!(file = %path.display(), "starting on the district roster kept from the last time it arrived");
            Some(dispatch)
        }
        Err(errors) => {
            tracing::error!(file = %path.display(), errors = %errors, "the kept district roster no longer passes the checks; starting on the configuration's roster");
            None
        }
    }
}

/// What a box needs to follow the district's roster.
#[derive(Debug)]
pub struct Follower {
    pub config: ClusterConfig,
    pub state_dir: PathBuf,
    /// The box's channel names (a roster naming another is refused, as at start).
    pub channels: Vec<String>,
    pub in_force: InForce,
}

/// Watches the district's roster until `shutdown`, watching again after any loss of the link.
pub async fn follow(js: jetstream::Context, follower: Follower, shutdown: CancellationToken) {
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let mut applied = std::fs::read_to_string(follower.state_dir.join(LAST_COPY)).ok();
    loop {
        let watched = async {
            let bucket = js.get_key_value(super::ROSTER_BUCKET).await?;
            // The current value first, then every change.
            let mut entries = bucket.watch_with_history(&follower.config.district).await?;
            while let Some(entry) = entries.next().await {
                backoff.reset();
                follower.take(entry?, &mut applied);
            }
            anyhow::Ok(())
        };
        let outcome = tokio::select! {
            outcome = watched => outcome,
            () = shutdown.cancelled() => return,
        };
        if let Err(error) = outcome {
            tracing::debug!(error = %format!("{error:#}"), "cannot watch the district roster; trying again");
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

impl Follower {
    /// One entry of the roster's key: checked, put in force and kept, or refused.
    fn take(&self, entry: kv::Entry, applied: &mut Option<String>) {
        if entry.operation != kv::Operation::Put {
            tracing::warn!(district = %self.config.district, "the district roster was deleted; the one in force stays");
            return;
        }
        let Ok(text) = String::from_utf8(entry.value.to_vec()) else {
            tracing::error!(revision = entry.revision, "district roster refused: not UTF-8; the one in force stays");
            return;
        };
        if applied.as_deref() == Some(text.as_str()) {
            return;
        }
        let name = format!("district roster {} (revision {})", self.config.district, entry.revision);
        match check(&name, &text, Some(&self.channels)) {
            Ok(dispatch) => {
                let members = dispatch.roster.members.len();
                self.in_force.replace(dispatch);
                if let Err(error) = crate::last_good::write_atomically(&self.state_dir.join(LAST_COPY), text.as_bytes()) {
                    tracing::error!(error = %format!("{error:#}"), "cannot keep the district roster on disk; a restart without the link starts on an older one");
                }
                tracing::info!(revision = entry.revision, members, "district roster in force");
                *applied = Some(text);
            }
            Err(errors) => tracing::error!(revision = entry.revision, errors = %errors, "district roster refused; the one in force stays"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROSTER: &str =
        "[[grid]]\nid = \"g1\"\nchannels = [\"office\"]\n\n[[member]]\nid = \"wang\"\nname = \"王芳\"\nrole = \"grid_leader\"\ngrids = [\"g1\"]\n";

    #[test]
    fn a_roster_is_checked_by_the_parser_and_on_a_box_against_its_channels() {
        assert!(check("r.toml", ROSTER, None).is_ok(), "the hub knows no channels");
        assert!(check("r.toml", ROSTER, Some(&["office".to_string()])).is_ok());
        let unknown = check("r.toml", ROSTER, Some(&["console".to_string()])).unwrap_err().to_string();
        assert!(unknown.contains("r.toml:") && unknown.contains("office"), "{unknown}");
        let bad = check("r.toml", &ROSTER.replace("grid_leader", "boss"), None).unwrap_err().to_string();
        assert!(bad.starts_with("r.toml:8:"), "{bad}");
    }

    #[test]
    fn a_kept_copy_that_no_longer_passes_is_not_started_on() {
        let dir = tempfile::tempdir().unwrap();
        assert!(last_copy(dir.path(), &[]).is_none(), "none kept");
        crate::last_good::write_atomically(&dir.path().join(LAST_COPY), ROSTER.as_bytes()).unwrap();
        assert_eq!(last_copy(dir.path(), &["office".to_string()]).unwrap().roster.members.len(), 1);
        assert!(last_copy(dir.path(), &["console".to_string()]).is_none(), "its channel is gone from this box");
    }
}
