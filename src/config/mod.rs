//! Configuration: built-in defaults, then the TOML file, then the optional
//! `<name>.local.toml` beside it, then `REGISTRY_GATE_<SECTION>__<KEY>`
//! environment variables (figment). Parsed in two steps: `raw` mirrors the
//! file; `resolve` checks every value and builds the `Config` the rest of the
//! program uses. Every error names the key path it is about.
//!
//! Loading binds no port and opens no connection, so tests and
//! `check-config` can load a config freely.

mod raw;
mod resolve;

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};

pub use raw::{
    RawAudit, RawConfig, RawLimits, RawLog, RawMetrics, RawRateLimit, RawServer, RawTls, RawToken,
    RawTokens, RawUpstream, RawUser,
};
pub use resolve::{
    Config, LimitsConfig, ServerConfig, StaticUser, TlsFiles, TokenConfig, TokensConfig,
    UpstreamConfig,
};

/// The config file used when none is named.
pub const DEFAULT_PATH: &str = "config/registry-gate.toml";
/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "REGISTRY_GATE_";

/// A configuration error, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted key path, e.g. `upstream.url`; `config` for file-level errors.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Several configuration errors, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// `config/registry-gate.toml` -> `config/registry-gate.local.toml`.
pub fn local_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!("{stem}.local.toml"))
}

/// Reads the layered raw configuration. `explicit` says whether the user
/// named the file: a named file must exist; the default one may be absent.
pub fn load_raw(path: &Path, explicit: bool) -> Result<RawConfig, ConfigErrors> {
    if explicit && !path.is_file() {
        return Err(ConfigError::new(
            "config",
            format!("cannot read config file {}", path.display()),
        )
        .into());
    }
    // Not keys: REGISTRY_GATE_CONFIG names the file itself, REGISTRY_GATE_LOG
    // is the log filter, REGISTRY_GATE_STATE the state directory of
    // integration/up.sh and down.sh.
    let env = Env::prefixed(ENV_PREFIX)
        .ignore(&["config", "log", "state"])
        .split("__");
    let verbatim = |key: &str| {
        VERBATIM_ENV_KEYS
            .iter()
            .any(|k| k.eq_ignore_ascii_case(key))
    };
    let mut figment = Figment::from(Serialized::defaults(RawConfig::default()))
        .merge(Toml::file(path))
        .merge(Toml::file(local_path(path)))
        .merge(env.clone().filter(move |key| !verbatim(key.as_str())));
    for (key, value) in env.iter().filter(|(key, _)| verbatim(key.as_str())) {
        figment = figment.merge(Serialized::default(key.as_str(), value));
    }
    // A secret given one way in a later layer replaces the other way in an
    // earlier one (the file's `bind_password_file` gives way to
    // REGISTRY_GATE_LDAP__BIND_PASSWORD); both in the same layer stays an error.
    let layers = [
        Figment::from(Toml::file(path)),
        Figment::from(Toml::file(local_path(path))),
        Figment::from(env),
    ];
    for (a, b) in SECRET_ALTERNATIVES {
        let mut last = (false, false);
        for layer in &layers {
            let set = (layer.contains(a), layer.contains(b));
            if set != (false, false) {
                last = set;
            }
        }
        match last {
            (true, false) => figment = figment.merge(Serialized::default(b, None::<String>)),
            (false, true) => figment = figment.merge(Serialized::default(a, None::<String>)),
            _ => {}
        }
    }
    figment.extract::<RawConfig>().map_err(figment_errors)
}

/// Keys that give the same secret two ways (inline, or a file holding it).
const SECRET_ALTERNATIVES: &[(&str, &str)] = &[("ldap.bind_password", "ldap.bind_password_file")];

/// Environment overrides taken exactly as written. figment reads other
/// values TOML-like (`0123` becomes the number 123, `"x"` becomes x), which
/// would silently change a password.
const VERBATIM_ENV_KEYS: &[&str] = &["ldap.bind_password"];

/// Loads and resolves the configuration.
pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigErrors> {
    Config::resolve(load_raw(path, explicit)?)
}

fn figment_errors(err: figment::Error) -> ConfigErrors {
    ConfigErrors(
        err.into_iter()
            .map(|e| {
                let key = if e.path.is_empty() {
                    "config".to_owned()
                } else {
                    e.path.join(".")
                };
                let origin = e
                    .metadata
                    .as_ref()
                    .and_then(|m| m.source.as_ref())
                    .map(|s| format!(" (from {s})"))
                    .unwrap_or_default();
                ConfigError::new(key, format!("{}{origin}", e.kind))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests;
