//! Logins with a robot account's or personal access token's `rgt_` secret,
//! checked against the store.
//!
//! A login hashes the secret (SHA-256) and looks the hash up; the answer,
//! found or not, is cached for `[tokens] cache_ttl` (at most 10 s), so a
//! revocation on any instance sharing the store takes effect everywhere
//! within that time, and a cached login costs one hash and one map lookup.
//! Refresh tokens bound to a credential are checked the same way, by id.
//! Store errors are never cached and become [`AuthnError::Unavailable`]
//! (503), so a database outage is not mistaken for a wrong secret.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use super::{AuthnError, Backend, Identity, rgt};
use crate::authz::Restriction;
use crate::store::{Credential, CredentialKind, Store, StoreError};

/// What an account name must look like to be a robot's: `robot+` + NAME.
pub const ROBOT_PREFIX: &str = "robot+";
/// How often a credential's `last_used_at` is written, at most.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// Whether `name` is a valid robot name: `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn valid_robot_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(&c))
}

/// The credential behind an identity: which one, and what it may do at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialUse {
    pub id: String,
    pub kind: CredentialKind,
    pub restriction: Restriction,
}

/// A credential found and usable until `expires_at` (Unix seconds).
#[derive(Clone)]
struct Found {
    credential: Arc<Credential>,
    restriction: Restriction,
}

/// See the module documentation.
pub struct CredentialLogins {
    store: Arc<Store>,
    /// `sha256:<hex>` or `id:<id>` → the credential, or `None` (unknown).
    found: Cache<String, Option<Found>>,
    /// Credentials whose last use was written recently.
    touched: moka::sync::Cache<String, ()>,
    /// Account → when it last logged out everywhere.
    logouts: Cache<String, Option<i64>>,
    /// UI session `jti` → ended by a logout on some instance.
    ended_sessions: Cache<String, bool>,
}

impl std::fmt::Debug for CredentialLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialLogins")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl CredentialLogins {
    pub fn new(store: Arc<Store>, cache_ttl: Duration) -> Self {
        CredentialLogins {
            store,
            found: Cache::builder()
                .time_to_live(cache_ttl)
                .max_capacity(100_000)
                .support_invalidation_closures()
                .build(),
            touched: moka::sync::Cache::builder()
                .time_to_live(TOUCH_INTERVAL)
                .max_capacity(100_000)
                .build(),
            logouts: Cache::builder()
                .time_to_live(cache_ttl)
                .max_capacity(100_000)
                .build(),
            ended_sessions: Cache::builder()
                .time_to_live(cache_ttl)
                .max_capacity(100_000)
                .build(),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The active credential whose secret is `secret`, for `account`;
    /// `Ok(None)` for a wrong, unknown, revoked or expired one.
    pub async fn by_secret(
        &self,
        account: &str,
        secret: &str,
    ) -> Result<Option<(Arc<Credential>, Restriction)>, AuthnError> {
        if !rgt::is_well_formed(secret) {
            return Ok(None);
        }
        let hash = rgt::hash(secret);
        let store = self.store.clone();
        let found = self
            .lookup(format!("sha256:{hash}"), async move {
                store.credential_by_hash(&hash).await
            })
            .await?;
        Ok(self.usable(found, Some(account)))
    }

    /// The active credential `id` (a refresh token's binding).
    pub async fn by_id(
        &self,
        id: &str,
    ) -> Result<Option<(Arc<Credential>, Restriction)>, AuthnError> {
        let store = self.store.clone();
        let owned = id.to_owned();
        let found = self
            .lookup(format!("id:{id}"), async move {
                store.credential_by_id(&owned).await
            })
            .await?;
        Ok(self.usable(found, None))
    }

    async fn lookup(
        &self,
        key: String,
        query: impl Future<Output = Result<Option<Credential>, StoreError>>,
    ) -> Result<Option<Found>, AuthnError> {
        self.found
            .try_get_with(key, async move {
                let Some(c) = query.await? else {
                    return Ok(None);
                };
                // A row we cannot parse grants nothing (fail closed), loudly.
                let restriction = Restriction::parse(&c.scopes)
                    .map_err(|e| StoreError::Query(format!("credential {}: stored {e}", c.id)))?;
                Ok(Some(Found {
                    credential: Arc::new(c),
                    restriction,
                }))
            })
            .await
            .map_err(|e: Arc<StoreError>| store_error(&e))
    }

    fn usable(
        &self,
        found: Option<Found>,
        account: Option<&str>,
    ) -> Option<(Arc<Credential>, Restriction)> {
        let f = found?;
        let c = &f.credential;
        if !c.is_active(crate::store::now()) || account.is_some_and(|a| a != c.account) {
            return None;
        }
        self.touch(&c.id);
        Some((f.credential.clone(), f.restriction.clone()))
    }

    /// Writes `last_used_at`, at most once a minute per credential, off the
    /// login's path (a login never waits for it).
    fn touch(&self, id: &str) {
        if self.touched.contains_key(id) {
            return;
        }
        self.touched.insert(id.to_owned(), ());
        let (store, id) = (self.store.clone(), id.to_owned());
        self.store
            .spawn_write("a credential's last use", async move {
                store.touch_credential(&id, crate::store::now()).await
            });
    }

    /// Whether something of `account` issued at `issued_at` (a refresh
    /// token's or a UI session's `iat`, whole seconds) was ended by "log out
    /// everywhere": issued in or before the second of the logout.
    pub async fn logged_out_since(
        &self,
        account: &str,
        issued_at: u64,
    ) -> Result<bool, AuthnError> {
        let at = self.logged_out_at(account).await?;
        Ok(at.is_some_and(|at| (issued_at as i64) <= at))
    }

    /// When `account` last logged out everywhere (cached like credentials).
    pub async fn logged_out_at(&self, account: &str) -> Result<Option<i64>, AuthnError> {
        let store = self.store.clone();
        let owned = account.to_owned();
        self.logouts
            .try_get_with(account.to_owned(), async move {
                store.logged_out_at(&owned).await
            })
            .await
            .map_err(|e: Arc<StoreError>| store_error(&e))
    }

    /// Whether UI session `jti` was ended by a logout on any instance
    /// (cached like credentials).
    pub async fn session_ended(&self, jti: &str) -> Result<bool, AuthnError> {
        let store = self.store.clone();
        let owned = jti.to_owned();
        self.ended_sessions
            .try_get_with(
                jti.to_owned(),
                async move { store.session_ended(&owned).await },
            )
            .await
            .map_err(|e: Arc<StoreError>| store_error(&e))
    }

    /// Forgets what this instance cached about `account`'s logouts (after a
    /// logout here, so it holds on this instance at once).
    pub async fn forget_logout(&self, account: &str) {
        self.logouts.invalidate(account).await;
    }

    /// Forgets a credential this instance revoked, so it fails here at once.
    pub async fn forget(&self, credential: &Credential) {
        self.found
            .invalidate(&format!("id:{}", credential.id))
            .await;
        // The secret's hash is not known here: drop every cached secret.
        self.found
            .invalidate_entries_if(|k, _| k.starts_with("sha256:"))
            .ok();
    }
}

/// The identity a robot credential logs in as.
pub fn robot_identity(c: &Credential, restriction: Restriction) -> Identity {
    Identity {
        account: c.account.clone(),
        backend: Backend::Robot,
        labels: c.labels.clone(),
        credential: Some(Arc::new(CredentialUse {
            id: c.id.clone(),
            kind: c.kind,
            restriction,
        })),
    }
}

/// `owner` (as its backend knows it now) acting through a personal token.
pub fn personal_identity(owner: Identity, c: &Credential, restriction: Restriction) -> Identity {
    Identity {
        credential: Some(Arc::new(CredentialUse {
            id: c.id.clone(),
            kind: c.kind,
            restriction,
        })),
        ..owner
    }
}

fn store_error(e: &StoreError) -> AuthnError {
    AuthnError::Unavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robot_names_follow_the_documented_pattern() {
        for ok in ["ci", "0", "ci-release.v2_x", &"a".repeat(64)] {
            assert!(valid_robot_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-ci",
            ".ci",
            "CI",
            "ci+x",
            "ci/x",
            "ci x",
            &"a".repeat(65),
            "é",
        ] {
            assert!(!valid_robot_name(bad), "{bad}");
        }
    }
}
