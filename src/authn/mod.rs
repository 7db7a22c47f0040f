//! Authentication: who is asking. Turns credentials into an [`Identity`].
//!
//! Depends on `config` for its settings and on nothing of the HTTP layer.

use std::collections::BTreeMap;
use std::sync::Arc;

pub mod cache;
pub mod credentials;
pub mod ldap;
pub mod oidc;
pub mod rgt;
pub mod static_users;

use crate::secret::Secret;
pub use cache::LoginCache;
pub use credentials::{CredentialLogins, CredentialUse, ROBOT_PREFIX};
pub use ldap::LdapAuthenticator;
pub use static_users::StaticUsers;

/// Labels attached to an identity (static `labels`, later LDAP attributes and
/// groups), matchable by ACL rules and usable in `${labels:KEY}` placeholders.
pub type Labels = BTreeMap<String, Vec<String>>;

/// Longest account name any backend is asked about, in bytes.
pub const MAX_ACCOUNT_LEN: usize = 256;

/// Whether `account` may be looked up at all: not empty, at most
/// [`MAX_ACCOUNT_LEN`] bytes, no control characters. The one check of
/// account names arriving with credentials (Basic headers, forms, LDAP).
pub fn acceptable_account(account: &str) -> bool {
    !account.is_empty()
        && account.len() <= MAX_ACCOUNT_LEN
        && !account.chars().any(char::is_control)
}

/// Which backend vouched for an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Anonymous,
    Static,
    Ldap,
    /// A robot account: exists only in the store.
    Robot,
    /// A person who logged in through an OpenID provider (`[[oidc.providers]]`).
    Oidc,
    /// A machine whose password was a JWT of a trusted issuer (`[[oidc.trust]]`).
    Workload,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Anonymous => "anonymous",
            Backend::Static => "static",
            Backend::Ldap => "ldap",
            Backend::Robot => "robot",
            Backend::Oidc => oidc::PEOPLE_BACKEND,
            Backend::Workload => "workload",
        }
    }
}

/// An authenticated (or anonymous) caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The account name; empty for anonymous callers (ACL `account = ""`).
    pub account: String,
    pub backend: Backend,
    pub labels: Labels,
    /// Set when the login used a robot account's or personal access
    /// token's secret: its id and the scopes that bound what it gets.
    pub credential: Option<Arc<CredentialUse>>,
}

impl Identity {
    pub fn anonymous() -> Self {
        Identity {
            account: String::new(),
            backend: Backend::Anonymous,
            labels: Labels::new(),
            credential: None,
        }
    }
}

/// Why a backend could not decide. This is never "wrong password" (that is
/// `Ok(None)`): it means the backend itself failed (LDAP down, timeout, a
/// malformed directory answer), which the HTTP layer answers with 503, not
/// 401, so users do not think their password is wrong.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("authentication backend unavailable: {0}")]
    Unavailable(String),
    #[error("authentication backend error: {0}")]
    Backend(String),
}

/// The authenticators in order: static users first, then (when configured)
/// LDAP, each behind a login cache. A static account is decided by the
/// static backend alone, so a static user and an LDAP user of the same name
/// are never confused.
#[derive(Clone)]
pub struct Authenticators {
    pub static_users: StaticUsers,
    /// bcrypt is slow on purpose, and docker asks for a token with Basic
    /// credentials again and again: successful static logins are cached too.
    pub static_cache: Arc<LoginCache>,
    pub ldap: Option<(Arc<LdapAuthenticator>, Arc<LoginCache>)>,
    /// Robot accounts and personal access tokens (the store).
    pub credentials: Option<Arc<CredentialLogins>>,
    /// OpenID providers and trusted issuers (`[oidc]`), when configured.
    pub oidc: Option<Arc<oidc::Oidc>>,
}

impl Authenticators {
    pub fn new(
        static_users: StaticUsers,
        ldap: Option<LdapAuthenticator>,
        static_cache: LoginCache,
    ) -> Self {
        Authenticators {
            static_users,
            static_cache: Arc::new(static_cache),
            ldap: ldap.map(|l| {
                let cache = Arc::new(l.config().login_cache());
                (Arc::new(l), cache)
            }),
            credentials: None,
            oidc: None,
        }
    }

    /// Adds OpenID providers and trusted issuers.
    pub fn with_oidc(mut self, oidc: Arc<oidc::Oidc>) -> Self {
        self.oidc = Some(oidc);
        self
    }

    /// The configured provider an account name `<provider>:...` belongs to.
    fn sso_provider(&self, account: &str) -> Option<&oidc::Provider> {
        self.oidc
            .as_ref()
            .and_then(|o| oidc::provider_of(&o.config, account))
    }

    /// Adds the store's credentials as a source of identities.
    pub fn with_credentials(mut self, credentials: Arc<CredentialLogins>) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Which backend decides about `account` (for metrics and logs).
    pub fn backend_for(&self, account: &str) -> &'static str {
        if account.starts_with(ROBOT_PREFIX) {
            Backend::Robot.as_str()
        } else if self.sso_provider(account).is_some() {
            Backend::Oidc.as_str()
        } else if self.static_users.contains(account) {
            Backend::Static.as_str()
        } else if self.ldap.is_some() {
            Backend::Ldap.as_str()
        } else {
            "none"
        }
    }

    /// `Ok(None)` means the credentials are wrong (401); `Err` means no
    /// backend could decide (503).
    pub async fn authenticate(
        &self,
        account: &str,
        password: &Secret,
    ) -> Result<Option<Identity>, AuthnError> {
        // An empty password never authenticates anyone; LDAP servers treat an
        // empty simple bind as an anonymous success, so refuse it up front.
        if account.is_empty() || password.is_empty() {
            return Ok(None);
        }
        // Robot accounts live in the store alone: no static user or LDAP
        // entry named `robot+...` is ever asked, so none can shadow one.
        if account.starts_with(ROBOT_PREFIX) {
            let Some(creds) = &self.credentials else {
                return Ok(None);
            };
            return Ok(creds
                .by_secret(account, password.expose())
                .await?
                .map(|(c, r)| credentials::robot_identity(&c, r)));
        }
        // A personal access token, used with its owner's name. Only a
        // well-formed `rgt_` secret (prefix and checksum) is looked up.
        if let Some(creds) = &self.credentials
            && rgt::is_well_formed(password.expose())
        {
            return match creds.by_secret(account, password.expose()).await? {
                Some((c, r)) => self.personal(&c, r).await,
                None => Ok(None),
            };
        }
        // People of an OpenID provider have no password here (only their
        // personal access tokens, handled above): never ask LDAP about them.
        if self.sso_provider(account).is_some() {
            return Ok(None);
        }
        // Without LDAP, an unknown account takes the static path too: its
        // password is checked against a dummy hash (and the rejection is
        // cached), so it costs what a static account's wrong password does.
        if self.static_users.contains(account) || self.ldap.is_none() {
            let users = &self.static_users;
            return self
                .static_cache
                .authenticate(account, password, || users.authenticate(account, password))
                .await;
        }
        if let Some((ldap, cache)) = &self.ldap {
            // A rejection costs the bcrypt check a static account's would
            // (no enumeration of static accounts by timing); inside the
            // cache, so that cached rejections are equally cheap both ways.
            let users = &self.static_users;
            return cache
                .authenticate(account, password, || async {
                    let r = ldap.authenticate(account, password).await;
                    if matches!(r, Ok(None)) {
                        users.equal_work(password).await;
                    }
                    r
                })
                .await;
        }
        // Deny by default: no backend knows the account.
        Ok(None)
    }

    /// The current identity of an account named by a refresh token, if it
    /// still exists in the backend that vouched for it.
    pub async fn lookup(
        &self,
        account: &str,
        backend: &str,
    ) -> Result<Option<Identity>, AuthnError> {
        if account.starts_with(ROBOT_PREFIX) {
            // Robots exist only through a credential: see `by_credential`.
            return Ok(None);
        }
        if backend == oidc::PEOPLE_BACKEND {
            return self.sso_lookup(account).await;
        }
        match (backend, &self.ldap) {
            ("static", _) => Ok(self.static_users.lookup(account)),
            ("ldap", Some((ldap, _))) if !self.static_users.contains(account) => {
                ldap.lookup(account).await
            }
            _ => Ok(None),
        }
    }
}

impl Authenticators {
    /// An SSO person as their provider described them at their last login
    /// (the store): while the provider is still configured. Their labels
    /// are those of that login; a new login refreshes them.
    async fn sso_lookup(&self, account: &str) -> Result<Option<Identity>, AuthnError> {
        let (Some(provider), Some(creds)) = (self.sso_provider(account), &self.credentials) else {
            return Ok(None);
        };
        let stored = creds
            .store()
            .oidc_account(account)
            .await
            .map_err(|e| AuthnError::Unavailable(e.to_string()))?;
        Ok(stored
            .filter(|a| a.provider == provider.name)
            .map(|a| Identity {
                account: a.account,
                backend: Backend::Oidc,
                labels: a.labels,
                credential: None,
            }))
    }

    /// The identity behind credential `id` (a refresh token bound to it),
    /// if the credential is still active and its owner still exists.
    pub async fn by_credential(&self, id: &str) -> Result<Option<Identity>, AuthnError> {
        let Some(creds) = &self.credentials else {
            return Ok(None);
        };
        match creds.by_id(id).await? {
            Some((c, r)) if c.kind == crate::store::CredentialKind::Robot => {
                Ok(Some(credentials::robot_identity(&c, r)))
            }
            Some((c, r)) => self.personal(&c, r).await,
            None => Ok(None),
        }
    }

    /// A personal token's owner as its backend knows them now: a removed
    /// owner's tokens stop working, a demoted one's shrink with the ACL.
    async fn personal(
        &self,
        c: &crate::store::Credential,
        r: crate::authz::Restriction,
    ) -> Result<Option<Identity>, AuthnError> {
        Ok(self
            .lookup(&c.account, &c.owner_backend)
            .await?
            .map(|owner| credentials::personal_identity(owner, c, r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_are_checked_before_any_backend() {
        assert!(acceptable_account("mozart"));
        assert!(acceptable_account("jürgen.müller@example.com"));
        assert!(!acceptable_account(""));
        assert!(!acceptable_account("moz\nart"));
        assert!(!acceptable_account("moz\0art"));
        assert!(!acceptable_account("moz\u{7f}"));
        assert!(acceptable_account(&"a".repeat(256)));
        assert!(!acceptable_account(&"a".repeat(257)));
    }
}
