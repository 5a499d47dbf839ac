//! The contract between the Helm chart and the binaries: the chart's
//! ConfigMap is mounted as a directory (`--config-dir`), one file per key,
//! and every key is a flag name. [`args_with_config_dir`] turns the
//! directory into `--key=value` arguments placed before the real command
//! line, so one clap parser reads both (a key it does not know is an error,
//! and the command line overrides the ConfigMap).
//!
//! What it is for: the node-agent and the mesh-apiserver start-up. What it is
//! not for: validating values (each binary's config type does that).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Why a config directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory cannot be listed.
    #[error("--config-dir {}: cannot read the directory: {source}; is the ConfigMap mounted there?", dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key (file) that cannot be read.
    #[error("--config-dir {}: cannot read key {key:?}: {source}", dir.display())]
    ReadKey {
        /// The directory.
        dir: PathBuf,
        /// The key (file name).
        key: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The directory sets `config-dir` itself.
    #[error("--config-dir {}: the key config-dir cannot be set from the config directory itself", dir.display())]
    Recursive {
        /// The directory.
        dir: PathBuf,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads a ConfigMap directory: one file per key, its content the value
/// (trailing whitespace trimmed). Kubernetes' `..data` bookkeeping entries
/// and other dot-files are skipped; keys are symlinks, which are followed.
pub fn read_config_dir(dir: &Path) -> Result<BTreeMap<String, String>> {
    let dir_err = |source| Error::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let err = |key: &str| {
        let key = key.to_string();
        move |source| Error::ReadKey {
            dir: dir.to_path_buf(),
            key,
            source,
        }
    };
    let mut map = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(dir_err)? {
        let entry = entry.map_err(dir_err)?;
        let key = entry.file_name().to_string_lossy().into_owned();
        if key.starts_with('.') {
            continue;
        }
        if std::fs::metadata(entry.path()).map_err(err(&key))?.is_dir() {
            continue;
        }
        let value = std::fs::read_to_string(entry.path()).map_err(err(&key))?;
        map.insert(key, value.trim_end().to_string());
    }
    Ok(map)
}

/// The value of `--config-dir` in a command line (program name first).
pub fn config_dir_arg(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    let mut found = None;
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if let Some(v) = s.strip_prefix("--config-dir=") {
            found = Some(PathBuf::from(v));
        } else if s == "--config-dir" {
            found = it.next().map(PathBuf::from);
        }
    }
    found
}

/// The full command line for the parser: the program name, then
/// `--key=value` for every key of `map`, then the rest of `args`.
pub fn merge(map: &BTreeMap<String, String>, args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let mut args = args.into_iter();
    let mut full = vec![args.next().unwrap_or_default()];
    for (key, value) in map {
        if key == "config-dir" {
            return Err("config-dir".into());
        }
        full.push(format!("--{key}={}", value.trim()).into());
    }
    full.extend(args);
    Ok(full)
}

/// The command line with the keys of `--config-dir` (when given) placed
/// before the real arguments.
pub fn args_with_config_dir(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(dir) = config_dir_arg(&args) else {
        return Ok(args);
    };
    let map = read_config_dir(&dir)?;
    merge(&map, args).map_err(|_| Error::Recursive { dir })
}

#[cfg(test)]
mod tests;
