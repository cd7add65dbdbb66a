//! Who may publish to the hub's MQTT listener (`--mqtt-passwords FILE`): a password file in
//! mosquitto's format, written with `mosquitto_passwd` (one `username:$7$iterations$salt$hash`
//! line per sensor, PBKDF2-HMAC-SHA512), so installers use the tool they know. A user is a
//! sensor's place in the district, `<district>/<box>/<sensor>`, and may publish only on its
//! own topic, `gw/s/<district>/<box>/<sensor>`: a sensor that leaks its password cannot speak
//! for another.
//!
//! The file is read again when it changes ([`super::watched_files`]), so a sensor is added or
//! revoked without a restart (a revoked one's open connection is closed at its next publish);
//! a file with no sensor in it is refused, and the last good one kept. Passwords are checked in constant time by `ring`; a wrong one
//! waits a second before its answer, so guessing over a 4G link is slow.

use anyhow::Context;
use base64::Engine as _;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

/// One user's stored PBKDF2 hash.
#[derive(Debug, Clone, PartialEq)]
struct Hash {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    derived: Vec<u8>,
}

/// The users of one password file.
#[derive(Debug, Default, PartialEq)]
pub struct Passwords {
    users: HashMap<String, Hash>,
}

impl Passwords {
    /// Parses a mosquitto password file; the error names the line.
    pub fn parse(text: &str) -> anyhow::Result<Passwords> {
        let mut users = HashMap::new();
        for (number, line) in text.lines().enumerate().map(|(index, line)| (index + 1, line.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line.rsplit_once(':').with_context(|| format!("line {number}: not `username:hash`"))?;
            let hash = parse_hash(hash).with_context(|| format!("line {number} (user `{user}`)"))?;
            if users.insert(user.to_string(), hash).is_some() {
                anyhow::bail!("line {number}: user `{user}` a second time");
            }
        }
        // An emptied file is a mistake (an editor's `> FILE`, a rewrite caught half-way), not
        // "refuse every sensor": the last good one stays in force.
        anyhow::ensure!(!users.is_empty(), "no sensor in it (to refuse one sensor, delete its line)");
        Ok(Passwords { users })
    }

    /// Whether `user` is (still) in the file: a sensor removed from it is cut off.
    pub fn knows(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Whether `user` exists and `password` is theirs.
    pub fn check(&self, user: &str, password: &[u8]) -> bool {
        self.users
            .get(user)
            .is_some_and(|hash| ring::pbkdf2::verify(ring::pbkdf2::PBKDF2_HMAC_SHA512, hash.iterations, &hash.salt, password, &hash.derived).is_ok())
    }
}

/// `$7$<iterations>$<salt, base64>$<hash, base64>`, as `mosquitto_passwd` writes it.
fn parse_hash(text: &str) -> anyhow::Result<Hash> {
    let parts: Vec<&str> = text.split('$').collect();
    match parts[..] {
        ["", "7", iterations, salt, derived] => {
            let iterations: u32 = iterations.parse().context("the iteration count is not a number")?;
            let iterations = NonZeroU32::new(iterations).context("an iteration count of 0")?;
            let decode = |b64: &str, what: &str| base64::engine::general_purpose::STANDARD.decode(b64).with_context(|| format!("the {what} is not base64"));
            let (salt, derived) = (decode(salt, "salt")?, decode(derived, "hash")?);
            anyhow::ensure!(derived.len() == 64, "a hash of {} bytes (PBKDF2-HMAC-SHA512 gives 64)", derived.len());
            Ok(Hash { iterations, salt, derived })
        }
        ["", "6", ..] => anyhow::bail!("a plain SHA-512 hash (`$6$`): write it again with `mosquitto_passwd` and its default, sha512-pbkdf2"),
        _ => anyhow::bail!("not a `$7$` (sha512-pbkdf2) hash as `mosquitto_passwd` writes it"),
    }
}

/// The sensors' password file, read again when it changes.
pub type PasswordFile = super::watched_files::WatchedFiles<Passwords>;

/// Reads the password file (`paths` holds it alone).
pub fn read(paths: &[PathBuf]) -> anyhow::Result<Passwords> {
    let path = paths.first().context("no password file")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Passwords::parse(&text).with_context(|| format!("{}", path.display()))
}

/// Opens the password file at `path`.
pub fn open(path: &Path) -> anyhow::Result<PasswordFile> {
    PasswordFile::open(vec![path.to_path_buf()], "4G sensors' passwords", read)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `mosquitto_passwd -c -b FILE old-town/east/east-03 'ding-dong 17'` (mosquitto 2.0).
    const WRITTEN_BY_MOSQUITTO: &str =
        "old-town/east/east-03:$7$101$zCo2QQ2yKG0uAyfy$sZcTMJb8gd5/tQwqLmvGo+EVzSO5MB4lsRY1KJ51RHQpAMwCOIhOLqgSsRmNTge4kPxrJhu0A3xgqUmTynLHiQ==\n";

    #[test]
    fn an_emptied_file_is_refused_rather_than_refusing_every_sensor() {
        let error = Passwords::parse("# all gone\n\n").unwrap_err();
        assert!(format!("{error:#}").contains("no sensor in it"), "{error:#}");
        assert!(Passwords::parse(WRITTEN_BY_MOSQUITTO).unwrap().knows("old-town/east/east-03"));
    }

    #[test]
    fn a_password_written_by_mosquitto_passwd_is_checked() {
        let passwords = Passwords::parse(WRITTEN_BY_MOSQUITTO).unwrap();
        assert!(passwords.check("old-town/east/east-03", b"ding-dong 17"));
        assert!(!passwords.check("old-town/east/east-03", b"ding-dong 18"));
        assert!(!passwords.check("old-town/east/east-03", b""));
        assert!(!passwords.check("old-town/east/east-04", b"ding-dong 17"), "an unknown user");
    }

    #[test]
    fn a_file_that_does_not_read_names_its_line() {
        let legacy = "a:$6$Jm7HAcZkYf704mMk$rq4I3cmXsSJVnnAFVfSyeG4NsFUa0jsXC6yrmLbcGhLhYDXu09ceH363rMwI7ecH+Pjp8U9nm8jnyTLyqQvvbw==";
        for (text, wanted) in [
            (format!("# sensors\n\n{legacy}\n"), "line 3 (user `a`)"),
            ("nobody\n".to_string(), "line 1: not `username:hash`"),
            (format!("{WRITTEN_BY_MOSQUITTO}{WRITTEN_BY_MOSQUITTO}"), "line 2: user `old-town/east/east-03` a second time"),
            ("a:$7$0$zCo2QQ2yKG0uAyfy$sZcT\n".to_string(), "line 1 (user `a`)"),
            ("a:$7$101$zCo2QQ2yKG0uAyfy$c2hvcnQ=\n".to_string(), "line 1 (user `a`)"),
        ] {
            let error = format!("{:#}", Passwords::parse(&text).unwrap_err());
            assert!(error.contains(wanted), "{error}");
        }
        assert!(format!("{:#}", Passwords::parse(&format!("{legacy}\n")).unwrap_err()).contains("write it again with `mosquitto_passwd`"));
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_leaves_the_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        std::fs::write(&path, WRITTEN_BY_MOSQUITTO.replace("east-03:", "east-04:")).unwrap();
        let file = open(&path).unwrap();
        assert!(!file.current().check("old-town/east/east-03", b"ding-dong 17"), "not a user yet");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::write(&path, WRITTEN_BY_MOSQUITTO).unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
        assert!(file.current().check("old-town/east/east-03", b"ding-dong 17"), "the new user is known");
        std::fs::write(&path, "broken\n").unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(later + std::time::Duration::from_secs(5)).unwrap();
        assert!(file.current().check("old-town/east/east-03", b"ding-dong 17"), "the last good file is kept");
    }
}
