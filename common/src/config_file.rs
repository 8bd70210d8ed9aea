//! Loading TOML configuration files with errors that name the file and key,
//! and resolving relative paths against the file's folder.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// One problem with a configuration file.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not valid TOML of the expected shape (unknown key, wrong type, ...).
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, e.g. `tunnel.pool` or `client[2].address`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => write!(f, "{}: cannot read: {source}", path.display()),
            Self::Parse { path, message } => {
                write!(f, "{}: {}", path.display(), message.trim_end())
            }
            Self::Invalid { path, key, message } => {
                write!(f, "{}: key `{key}`: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// A validation error for `key` in `path`.
    pub fn invalid(path: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Several configuration problems, reported together.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// True when the file itself may not be read by this user (as opposed to
    /// missing or holding something wrong).
    pub fn permission_denied(&self) -> bool {
        self.0.iter().any(|e| {
            matches!(e, ConfigError::Read { source, .. } if source.kind() == io::ErrorKind::PermissionDenied)
        })
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

/// Reads and parses a TOML file.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses TOML text that came from `path`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Test helper (feature `test-util`): [`parse`] `text` as the file `path`,
/// then `validate` the value (which may first fill in what loading would);
/// the value, or its problems one per line.
#[cfg(any(test, feature = "test-util"))]
pub fn parse_and_validate<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    validate: impl FnOnce(&mut T) -> Vec<ConfigError>,
) -> Result<T, String> {
    let mut value: T = parse(path, text).map_err(|e| e.to_string())?;
    let problems = validate(&mut value);
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// Resolves `p` against the folder of the config file `config`.
pub fn resolve(config: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_owned();
    }
    match config.parent() {
        Some(dir) => dir.join(p),
        None => p.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
    }

    #[test]
    fn parse_error_names_file_and_key() {
        let e = parse::<Sample>(Path::new("/etc/x.toml"), "name = \"a\"\nnmae = 1\n").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("/etc/x.toml: "), "{text}");
        assert!(text.contains("nmae"), "{text}");
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let cfg = Path::new("/etc/twoway/server.toml");
        assert_eq!(
            resolve(cfg, Path::new("ca.pem")),
            Path::new("/etc/twoway/ca.pem")
        );
        assert_eq!(resolve(cfg, Path::new("/x/ca.pem")), Path::new("/x/ca.pem"));
    }

    #[test]
    fn missing_file_is_named() {
        let e = load::<Sample>(Path::new("/nonexistent/twoway.toml")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("/nonexistent/twoway.toml: cannot read"));
    }
}
