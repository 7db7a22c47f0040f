//! The composition root: builds every component from a resolved `Config`.
//! Nothing here binds a port; the server takes a listener and an `App`.

use std::sync::Arc;
use std::time::Duration;

use crate::authn::{Authenticators, LdapAuthenticator, LoginCache, StaticUsers};

/// How long a verified static password is remembered (it changes only with
/// the config file).
const STATIC_CACHE_TTL: Duration = Duration::from_secs(300);
/// How long a wrong static password is remembered: short, so a typo costs
/// little, but long enough that a guessing loop does not cost a bcrypt each.
const STATIC_NEGATIVE_TTL: Duration = Duration::from_secs(10);
use crate::audit::Audit;
use crate::authz::Acl;
use crate::config::Config;
use crate::health::ReadinessCache;
use crate::ratelimit::LoginThrottle;
use crate::token::keys::{KeyError, verifying_key_from_pem};
use crate::token::{Issuer, SigningKey, Verifier, VerifyingKey};
use crate::upstream::Upstream;

/// Everything a request handler needs.
pub struct App {
    pub config: Config,
    pub authn: Authenticators,
    pub acl: Acl,
    pub issuer: Issuer,
    pub verifier: Verifier,
    pub upstream: Upstream,
    /// Failed-login counters of the realm (per process).
    pub throttle: LoginThrottle,
    /// The web UI's sessions and caches.
    pub ui: crate::ui::UiState,
    /// Where the signing key came from, for the startup line.
    pub key_source: String,
    pub key_id: String,
    pub readiness: ReadinessCache,
    pub audit: Audit,
}

/// Why the app could not be built from a valid config (files unreadable).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("token.key: cannot read {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("token.key: {path}: {source}")]
    Key { path: String, source: KeyError },
    #[error("token: cannot make an ephemeral key: {0}")]
    Ephemeral(KeyError),
    #[error("audit.output: cannot open {path}: {source}")]
    Audit {
        path: String,
        source: std::io::Error,
    },
    #[error("token.previous_keys: cannot read {path}: {source}")]
    PreviousKeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("token.previous_keys: {path}: {source}")]
    PreviousKey { path: String, source: KeyError },
}

impl App {
    pub fn build(config: Config) -> Result<App, BuildError> {
        let (key, key_source) = load_key(&config)?;
        let key = Arc::new(key);
        let t = &config.token;
        let issuer = Issuer::new(
            key.clone(),
            &t.issuer,
            &t.service,
            t.lifetime,
            t.refresh_lifetime,
        );
        let mut keys = vec![key.verifying()];
        keys.extend(load_previous_keys(&config)?);
        let verifier = Verifier::new(keys, &t.issuer, &t.service, t.lifetime);
        let upstream = Upstream::from_config(&config.upstream, &config.limits);
        Ok(App {
            authn: Authenticators::new(
                StaticUsers::new(config.users.clone()),
                config.ldap.clone().map(LdapAuthenticator::new),
                LoginCache::new(STATIC_CACHE_TTL, STATIC_NEGATIVE_TTL, 10_000),
            ),
            acl: config.acl.clone(),
            issuer,
            verifier,
            upstream,
            throttle: LoginThrottle::new(config.ratelimit.clone()),
            ui: crate::ui::UiState::default(),
            key_source,
            key_id: key.kid.clone(),
            readiness: ReadinessCache::default(),
            audit: Audit::open(&config.raw.audit.output).map_err(|source| BuildError::Audit {
                path: config.raw.audit.output.clone(),
                source,
            })?,
            config,
        })
    }
}

fn load_key(config: &Config) -> Result<(SigningKey, String), BuildError> {
    match &config.token.key {
        Some(path) => {
            let shown = path.display().to_string();
            let pem = std::fs::read_to_string(path).map_err(|source| BuildError::KeyFile {
                path: shown.clone(),
                source,
            })?;
            let key = SigningKey::from_pem(&pem).map_err(|source| BuildError::Key {
                path: shown.clone(),
                source,
            })?;
            Ok((key, shown))
        }
        None => {
            tracing::warn!(
                "token.key is not set: signing with an ephemeral key; tokens die with this \
                 process and other instances cannot verify them (make one with \
                 `registry-gate gen-key --out FILE`)"
            );
            let key = SigningKey::ephemeral().map_err(BuildError::Ephemeral)?;
            Ok((key, "ephemeral".into()))
        }
    }
}

/// The public keys of `token.previous_keys`: tokens they signed stay valid
/// (until they expire) after the signing key is rotated.
fn load_previous_keys(config: &Config) -> Result<Vec<VerifyingKey>, BuildError> {
    config
        .token
        .previous_keys
        .iter()
        .map(|path| {
            let shown = path.display().to_string();
            let pem =
                std::fs::read_to_string(path).map_err(|source| BuildError::PreviousKeyFile {
                    path: shown.clone(),
                    source,
                })?;
            verifying_key_from_pem(&pem).map_err(|source| BuildError::PreviousKey {
                path: shown,
                source,
            })
        })
        .collect()
}
