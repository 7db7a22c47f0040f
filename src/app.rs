//! The composition root: builds every component from a resolved `Config`.
//! Nothing here binds a port; the server takes a listener and an `App`.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::{Audit, RecentWrites};
use crate::authn::{Authenticators, CredentialLogins, LdapAuthenticator, LoginCache, StaticUsers};
use crate::authz::Acl;
use crate::config::Config;
use crate::health::ReadinessCache;
use crate::metrics::{Metrics, Sources};
use crate::ratelimit::LoginThrottle;
use crate::ratelimit::shared::SharedThrottle;
use crate::store::{Store, StoreConfig, StoreError};
use crate::token::keys::{KeyError, verifying_key_from_pem};
use crate::token::{Issuer, SigningKey, Verifier, VerifyingKey};
use crate::ui::UiState;
use crate::upstream::Upstream;

/// How long a verified static password is remembered (it changes only with
/// the config file, and a reload starts a fresh cache).
const STATIC_CACHE_TTL: Duration = Duration::from_secs(300);
/// How long a wrong static password is remembered: short, so a typo costs
/// little, but long enough that a guessing loop does not cost a bcrypt each.
const STATIC_NEGATIVE_TTL: Duration = Duration::from_secs(10);

/// Everything a request handler needs.
pub struct App {
    pub config: Config,
    pub authn: Authenticators,
    pub acl: Acl,
    pub issuer: Issuer,
    pub verifier: Verifier,
    pub upstream: Upstream,
    /// Failed-login counters of the realm and the UI: this process's,
    /// shared with every instance through the store.
    pub throttle: SharedThrottle,
    /// The web UI's sessions and caches.
    pub ui: Arc<UiState>,
    pub metrics: Arc<Metrics>,
    /// The signing key, kept across reloads when it is an ephemeral one.
    key: Arc<SigningKey>,
    /// Where the signing key came from, for the startup line.
    pub key_source: String,
    pub key_id: String,
    pub readiness: ReadinessCache,
    pub audit: Audit,
    /// The database of credentials (kept across reloads while `[store]`
    /// names the same one).
    pub store: Arc<Store>,
    /// The upstream's repositories, shared by `_catalog` and the UI.
    pub listing: crate::listing::ListingCache,
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
    #[error("{0}")]
    Store(StoreError),
    #[error("oidc: cannot make the HTTP client: {0}")]
    Oidc(String),
}

/// State that outlives one configuration: a reload builds a new `App` and
/// hands it these from the old one, so counters keep counting, failed-login
/// back-offs and ended UI sessions stay in force, the UI's activity page keeps
/// its recent writes, and an ephemeral signing key (no `token.key`) keeps the
/// tokens it signed valid.
#[derive(Clone, Default)]
pub struct Carried {
    pub metrics: Arc<Metrics>,
    pub throttle: Option<Arc<LoginThrottle>>,
    pub ui: Arc<UiState>,
    pub ephemeral_key: Option<Arc<SigningKey>>,
    pub recent_writes: Arc<RecentWrites>,
    /// The store and the config it was opened for.
    pub store: Option<(Arc<Store>, StoreConfig)>,
}

impl App {
    pub fn build(config: Config) -> Result<App, BuildError> {
        App::build_with(config, Carried::default())
    }

    /// What a reload hands to the next app.
    pub fn carried(&self) -> Carried {
        Carried {
            metrics: self.metrics.clone(),
            throttle: Some(self.throttle.local.clone()),
            ui: self.ui.clone(),
            ephemeral_key: (self.config.token.key.is_none()).then(|| self.key.clone()),
            recent_writes: self.audit.recent(),
            store: Some((self.store.clone(), self.config.store.clone())),
        }
    }

    pub fn build_with(config: Config, carried: Carried) -> Result<App, BuildError> {
        let (key, key_source) = match (&config.token.key, carried.ephemeral_key) {
            (None, Some(key)) => (key, "ephemeral (kept across reloads)".to_owned()),
            _ => {
                let (key, source) = load_key(&config)?;
                (Arc::new(key), source)
            }
        };
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
        let store = match carried.store {
            Some((store, same)) if same == config.store => store,
            _ => Arc::new(Store::open(&config.store).map_err(BuildError::Store)?),
        };
        let authn = Authenticators::new(
            StaticUsers::new(config.users.clone()),
            config.ldap.clone().map(LdapAuthenticator::new),
            LoginCache::new(STATIC_CACHE_TTL, STATIC_NEGATIVE_TTL, 10_000),
        )
        .with_credentials(Arc::new(CredentialLogins::new(
            store.clone(),
            config.tokens.cache_ttl,
        )));
        let authn = if config.oidc.is_empty() {
            authn
        } else {
            let metrics = carried.metrics.clone();
            let on_fetch: crate::authn::oidc::keys::OnFetch =
                Arc::new(move |issuer, outcome| metrics.oidc_key_fetch(issuer, outcome));
            authn.with_oidc(Arc::new(
                crate::authn::oidc::Oidc::new(config.oidc.clone(), on_fetch)
                    .map_err(BuildError::Oidc)?,
            ))
        };
        // Back-offs carry over unless the limits themselves changed.
        let throttle = carried
            .throttle
            .filter(|t| *t.config() == config.ratelimit)
            .unwrap_or_else(|| Arc::new(LoginThrottle::new(config.ratelimit.clone())));
        carried.metrics.set_sources(Sources {
            static_cache: Some(authn.static_cache.clone()),
            ldap_cache: authn.ldap.as_ref().map(|(_, cache)| cache.clone()),
            token_cache: Some(verifier.cache_counters()),
        });
        Ok(App {
            authn,
            acl: config.acl.clone(),
            issuer,
            verifier,
            upstream,
            throttle: SharedThrottle::new(throttle, store.clone()),
            ui: carried.ui,
            metrics: carried.metrics,
            key_source,
            key_id: key.kid.clone(),
            key,
            readiness: ReadinessCache::default(),
            listing: Default::default(),
            audit: Audit::open_with(&config.raw.audit.output, carried.recent_writes)
                .map_err(|source| BuildError::Audit {
                    path: config.raw.audit.output.clone(),
                    source,
                })?
                .with_store(store.clone()),
            store,
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
                 process (docker logins too) and other instances cannot verify them. Fix: \
                 `registry-gate gen-key --out config/token-key.pem`, then `key = \
                 \"config/token-key.pem\"` in [token]"
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
