//! The last configuration that started: a typo must not leave the houses unwatched.
//!
//! After every start that reached READY on a valid configuration, the daemon saves the
//! configuration's text, the directory its relative paths resolve against and the text of every
//! rule file it loaded, in one JSON file written atomically (`last-good.json` in
//! `$STATE_DIRECTORY/last-good/` under systemd, or the directory given with `--last-good`).
//!
//! At boot, when the configuration or a rule file is invalid, [`prepare`] starts on that copy
//! instead of refusing to run: the errors are printed as always, the daemon runs *degraded*
//! (`/healthz` says why, `gridwatch_config_fallback` is 1, and installers get a device alarm),
//! and `systemctl restart` after the fix brings it back to normal. Without a saved copy an
//! invalid configuration still refuses to start (exit 78).
//!
//! The copy covers the configuration file, the rule files and the roster (the file a community
//! office edits most, at every shift swap: a typo in it stopped the box until an outside tester
//! found it); other files they name (secret files, serial profiles) are read from where they are.

use crate::config::{Config, ConfigError};
use crate::rule_files;
use anyhow::Context;
use gridwatch_rules::{builtin_packs, RuleSet, RuleSource};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const FILE: &str = "last-good.json";

/// What a start needs: the configuration and compiled rules, and why it is degraded, if it is.
#[derive(Debug)]
pub struct Prepared {
    pub config: Config,
    pub rules: RuleSet,
    pub rule_files: usize,
    /// `Some(reason)`: running on the last good copy.
    pub degraded: Option<String>,
    /// What to save once the daemon is READY (none when degraded).
    pub to_save: Option<Saved>,
}

/// The saved copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub config_path: PathBuf,
    pub config_text: String,
    /// Where relative paths in the configuration resolve.
    pub base: PathBuf,
    /// The rule files' names and texts (the built-in packs come with the binary).
    pub rules: Vec<(String, String)>,
    /// The roster's text, when the configuration names one (absent from copies saved before).
    #[serde(default)]
    pub roster: Option<String>,
}

/// Where the copy lives.
#[derive(Debug, Clone)]
pub struct LastGood {
    dir: PathBuf,
}

impl LastGood {
    /// The directory given, or `$STATE_DIRECTORY/last-good` under systemd; `None`: no copy is kept.
    pub fn locate(explicit: Option<PathBuf>) -> Option<LastGood> {
        let dir = explicit.or_else(|| std::env::var_os("STATE_DIRECTORY").map(|d| PathBuf::from(d).join("last-good")))?;
        Some(LastGood { dir })
    }

    pub fn load(&self) -> anyhow::Result<Option<Saved>> {
        let path = self.dir.join(FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?))
    }

    /// Writes the copy atomically (temporary file, fsync, rename).
    pub fn save(&self, saved: &Saved) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        write_atomically(&self.dir.join(FILE), serde_json::to_string_pretty(saved)?.as_bytes()).context("replacing the last good copy")
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the new one, whole
/// (temporary file in the same directory, fsync, rename).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

impl LastGood {
    /// Keeps `roster` (its text) in the saved copy, when there is one: the roster reloaded while
    /// the daemon runs is the good one now.
    pub fn keep_roster(&self, roster: String) -> anyhow::Result<()> {
        let Some(mut saved) = self.load()? else { return Ok(()) };
        if saved.roster.as_ref() != Some(&roster) {
            saved.roster = Some(roster);
            self.save(&saved)?;
        }
        Ok(())
    }
}

/// Loads the configuration and rules for `run`, falling back to the last good copy when either
/// is invalid. `Err` carries the errors to print when there is nothing to fall back to.
pub fn prepare(config_path: &Path, last_good: Option<&LastGood>) -> Result<Prepared, String> {
    let saved = last_good.and_then(|l| match l.load() {
        Ok(saved) => saved,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "the last good configuration cannot be read");
            None
        }
    });
    let current = Config::load(config_path);
    let config = match (current, &saved) {
        (Ok(config), _) => config,
        (Err(error), None) => return Err(describe(&error)),
        (Err(error), Some(saved)) => {
            eprintln!("{}", describe(&error));
            let mut config = Config::parse_with_roster(&saved.config_path.display().to_string(), &saved.config_text, &saved.base, saved.roster.as_deref())
                .map_err(|e| format!("{}\nthe last good configuration is no longer usable either:\n{}", describe(&error), describe(&e)))?;
            // The files are watched where they are: a roster fixed while degraded is reloaded.
            config.source = Some(config_path.to_path_buf());
            let rules = match load_rules(&config) {
                Ok((rules, files, _)) => (rules, files),
                Err(_) => saved_rules(saved, &config).map_err(|e| e.to_string())?,
            };
            return Ok(Prepared {
                config,
                rules: rules.0,
                rule_files: rules.1,
                degraded: Some(format!(
                    "configuration {} is invalid ({}); running on the last good copy",
                    config_path.display(),
                    first_line(&describe(&error))
                )),
                to_save: None,
            });
        }
    };
    match (load_rules(&config), &saved) {
        (Ok((rules, files, sources)), _) => {
            let to_save = Some(Saved {
                config_path: config_path.to_path_buf(),
                config_text: std::fs::read_to_string(config_path).unwrap_or_default(),
                base: config_path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                rules: sources.into_iter().map(|s| (s.name, s.text)).collect(),
                roster: config.roster_file.as_ref().and_then(|file| std::fs::read_to_string(file).ok()),
            });
            Ok(Prepared { config, rules, rule_files: files, degraded: None, to_save })
        }
        (Err(error), None) => Err(error.to_string()),
        (Err(error), Some(saved)) => {
            eprintln!("{error}");
            let (rules, files) = saved_rules(saved, &config).map_err(|e| format!("{error}\nthe last good rules are no longer usable either:\n{e}"))?;
            Ok(Prepared {
                config,
                rules,
                rule_files: files,
                degraded: Some(format!("rule files are invalid ({}); running on the last good rules", first_line(&error.to_string()))),
                to_save: None,
            })
        }
    }
}

/// The rule files named by the configuration: the compiled set, how many files, and the texts
/// of those that are not built in.
fn load_rules(config: &Config) -> Result<(RuleSet, usize, Vec<RuleSource>), rule_files::RuleLoadError> {
    let sources = rule_files::read_all(&config.rules.paths)?;
    let mut all = if config.rules.builtin_packs { builtin_packs() } else { Vec::new() };
    all.extend(sources.iter().cloned());
    let count = all.len();
    Ok((RuleSet::compile(&all)?, count, sources))
}

fn saved_rules(saved: &Saved, config: &Config) -> Result<(RuleSet, usize), gridwatch_rules::RuleErrors> {
    let mut all = if config.rules.builtin_packs { builtin_packs() } else { Vec::new() };
    all.extend(saved.rules.iter().map(|(name, text)| RuleSource { name: format!("{name} (last good copy)"), text: text.clone() }));
    let count = all.len();
    Ok((RuleSet::compile(&all)?, count))
}

fn describe(error: &ConfigError) -> String {
    match error {
        ConfigError::Invalid(_) => error.to_string(),
        ConfigError::Read { .. } => format!("error: {error}"),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// The device alarm that tells installers the box runs on its last good configuration.
pub fn fallback_alert(reason: &str, now_ms: i64) -> crate::alert::Alert {
    let mut alert = crate::alert::Alert::device(
        "gridwatch-config-invalid",
        "gridwatch",
        "gridwatch",
        crate::alert::Event::Fired,
        gridwatch_rules::Severity::Warning,
        "gridwatch runs on its last good configuration",
        reason.to_string(),
        now_ms,
    );
    alert.messages = [
        ("en".to_string(), format!("gridwatch is running on its last good configuration: {reason}. Fix the files and restart it.")),
        ("zh".to_string(), format!("gridwatch 配置有误，正以上次可用的配置运行：{reason}。请修正后重启。")),
    ]
    .into_iter()
    .collect();
    alert
}
