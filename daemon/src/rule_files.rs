//! Reads rule files from disk for the pure rules library: expands directories into their
//! `*.toml` files (sorted, so ids collide the same way every time) and adds the built-in packs
//! when asked.

use gridwatch_rules::{builtin_packs, RuleErrors, RuleSet, RuleSource};
use std::path::{Path, PathBuf};

/// Why rules could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RuleLoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(#[from] RuleErrors),
}

/// The files a list of paths stands for: files as given, directories as their `*.toml` files.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RuleLoadError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| RuleLoadError::Read { path: path.clone(), source })?;
            let mut found: Vec<PathBuf> =
                entries.filter_map(Result::ok).map(|entry| entry.path()).filter(|p| p.extension().is_some_and(|ext| ext == "toml")).collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Reads and compiles rule files, with the built-in packs first when `builtin` is set.
pub fn load(paths: &[PathBuf], builtin: bool) -> Result<(RuleSet, usize), RuleLoadError> {
    let mut sources = if builtin { builtin_packs() } else { Vec::new() };
    sources.extend(read_all(paths)?);
    let count = sources.len();
    Ok((RuleSet::compile(&sources)?, count))
}

/// The rule files named by `paths` (directories expanded), read but not compiled.
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<RuleSource>, RuleLoadError> {
    expand(paths)?.iter().map(|file| read(file)).collect()
}

fn read(path: &Path) -> Result<RuleSource, RuleLoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| RuleLoadError::Read { path: path.to_path_buf(), source })?;
    Ok(RuleSource { name: path.display().to_string(), text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_expand_to_their_toml_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.toml", "a.toml", "notes.txt"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let files = expand(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap().to_str().unwrap().to_string()).collect();
        assert_eq!(names, vec!["a.toml", "b.toml"]);
    }

    #[test]
    fn errors_name_the_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mine.toml");
        std::fs::write(&file, "[[rule]]\nid = \"x\"\nvalue = \"do\"\nbelow = 5\nseverity = \"purple\"\n").unwrap();
        let err = load(std::slice::from_ref(&file), true).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}:5:12: error in `severity`: unknown severity `purple`: expected notice, warning, alarm, danger (or blue, yellow, orange, red)",
                file.display()
            )
        );
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = load(&[PathBuf::from("/nonexistent/rules.toml")], false).unwrap_err();
        assert!(matches!(err, RuleLoadError::Read { .. }));
    }
}
