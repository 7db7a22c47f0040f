//! Authentication: who is asking. Turns credentials into an [`Identity`].
//!
//! Depends on `config` for its settings and on nothing of the HTTP layer.

use std::collections::BTreeMap;

pub mod cache;
pub mod ldap;
pub mod static_users;

use crate::secret::Secret;
pub use static_users::StaticUsers;

/// Labels attached to an identity (static `labels`, later LDAP attributes and
/// groups), matchable by ACL rules and usable in `${labels:KEY}` placeholders.
pub type Labels = BTreeMap<String, Vec<String>>;

/// Which backend vouched for an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Anonymous,
    Static,
    Ldap,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Anonymous => "anonymous",
            Backend::Static => "static",
            Backend::Ldap => "ldap",
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
}

impl Identity {
    pub fn anonymous() -> Self {
        Identity {
            account: String::new(),
            backend: Backend::Anonymous,
            labels: Labels::new(),
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
/// LDAP. A static account is decided by the static backend alone.
#[derive(Debug, Clone, Default)]
pub struct Authenticators {
    pub static_users: StaticUsers,
}

impl Authenticators {
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
        // Deny by default: only a backend's positive answer authenticates.
        self.static_users.authenticate(account, password).await
    }

    /// The current identity of an account named by a refresh token, if it
    /// still exists.
    pub async fn lookup(
        &self,
        account: &str,
        backend: &str,
    ) -> Result<Option<Identity>, AuthnError> {
        Ok(match backend {
            "static" => self.static_users.lookup(account),
            _ => None,
        })
    }
}
