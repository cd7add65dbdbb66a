//! Files the hub reads again when they change, checked when asked (at each new connection of
//! the MQTT listener): the sensors' password file and the listener's TLS certificate and key,
//! so a sensor is added or a certificate renewed without a restart. A change is seen by the
//! files' modification times and sizes; what no longer reads is logged and the last good
//! reading kept.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// What identifies the files' state on disk: modification time and size of each.
type Stamps = Vec<(Option<SystemTime>, u64)>;

/// Files read into a `T` by `load`, read again when they change.
pub struct WatchedFiles<T> {
    paths: Vec<PathBuf>,
    /// What the files hold, for the log ("4G sensors' passwords").
    what: &'static str,
    load: fn(&[PathBuf]) -> anyhow::Result<T>,
    current: Mutex<(Stamps, Arc<T>)>,
}

impl<T> WatchedFiles<T> {
    /// Reads the files; fails when they do not read (the hub does not start).
    pub fn open(paths: Vec<PathBuf>, what: &'static str, load: fn(&[PathBuf]) -> anyhow::Result<T>) -> anyhow::Result<WatchedFiles<T>> {
        let stamps = stamps(&paths);
        let loaded = load(&paths)?;
        tracing::info!(files = ?paths, "{what} read");
        Ok(WatchedFiles { paths, what, load, current: Mutex::new((stamps, Arc::new(loaded))) })
    }

    /// What the files hold now: read again when they changed; the last good reading when the
    /// new files do not read.
    pub fn current(&self) -> Arc<T> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let now = stamps(&self.paths);
        if now != current.0 {
            current.0 = now;
            match (self.load)(&self.paths) {
                Ok(loaded) => {
                    tracing::info!(files = ?self.paths, "{} read again", self.what);
                    current.1 = Arc::new(loaded);
                }
                Err(error) => {
                    tracing::error!(files = ?self.paths, error = %format!("{error:#}"), "{} refused; the last good ones are kept", self.what)
                }
            }
        }
        current.1.clone()
    }
}

fn stamps(paths: &[PathBuf]) -> Stamps {
    paths.iter().map(|path| std::fs::metadata(path).map_or((None, 0), |meta| (meta.modified().ok(), meta.len()))).collect()
}
