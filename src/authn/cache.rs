//! A login cache in front of any password-checking backend.
//!
//! Keyed by the account and a salted SHA-256 of the password (a random salt
//! per process; the password itself is never stored). A success is kept for
//! `ttl`, a rejected password for `negative_ttl`; backend errors are not
//! kept. Concurrent logins with the same account and password share one
//! backend round trip. A different (wrong) password has a different key, so
//! it is never answered from a cached success.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use sha2::{Digest, Sha256};

use super::{AuthnError, Identity};
use crate::secret::Secret;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    account: String,
    /// SHA-256(salt || len(account) || account || password).
    digest: [u8; 32],
}

#[derive(Clone)]
enum Outcome {
    Success(Identity),
    Rejected,
}

struct Ttls {
    positive: Duration,
    negative: Duration,
}

impl Expiry<Key, Outcome> for Ttls {
    fn expire_after_create(&self, _: &Key, value: &Outcome, _: Instant) -> Option<Duration> {
        Some(match value {
            Outcome::Success(_) => self.positive,
            Outcome::Rejected => self.negative,
        })
    }
}

/// Counters of a [`LoginCache`], for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Logins answered without asking the backend (including logins that
    /// waited for a concurrent identical login's backend call).
    pub hits: u64,
    /// Logins that asked the backend.
    pub misses: u64,
    /// Backend calls that failed (not cached).
    pub errors: u64,
}

/// See the module documentation.
pub struct LoginCache {
    cache: Option<Cache<Key, Outcome>>,
    salt: [u8; 32],
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
}

impl std::fmt::Debug for LoginCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginCache")
            .field("entries", &self.cache.as_ref().map(|c| c.entry_count()))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl LoginCache {
    /// `ttl` for successes, `negative_ttl` for rejected passwords, at most
    /// `capacity` entries. Both TTLs zero (or capacity zero) = no caching.
    pub fn new(ttl: Duration, negative_ttl: Duration, capacity: u64) -> Self {
        let enabled = capacity > 0 && !(ttl.is_zero() && negative_ttl.is_zero());
        let cache = enabled.then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .expire_after(Ttls {
                    positive: ttl,
                    negative: negative_ttl,
                })
                .build()
        });
        LoginCache {
            cache,
            salt: rand::random(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    fn key(&self, account: &str, password: &Secret) -> Key {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update((account.len() as u64).to_le_bytes());
        h.update(account.as_bytes());
        h.update(password.expose().as_bytes());
        Key {
            account: account.to_owned(),
            digest: h.finalize().into(),
        }
    }

    /// The answer for `account` and `password`: from the cache, or from
    /// `backend` (called at most once per concurrent group of identical
    /// logins). `Ok(None)` = wrong credentials; `Err` = the backend could
    /// not decide (not cached).
    pub async fn authenticate<F, Fut>(
        &self,
        account: &str,
        password: &Secret,
        backend: F,
    ) -> Result<Option<Identity>, AuthnError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Identity>, AuthnError>>,
    {
        let Some(cache) = &self.cache else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            let r = backend().await;
            if r.is_err() {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            return r;
        };
        let key = self.key(account, password);
        let init = async {
            match backend().await {
                Ok(Some(id)) => Ok(Outcome::Success(id)),
                Ok(None) => Ok(Outcome::Rejected),
                Err(e) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    Err(e)
                }
            }
        };
        match cache.entry(key).or_try_insert_with(init).await {
            Ok(entry) => {
                if entry.is_fresh() {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                }
                Ok(match entry.into_value() {
                    Outcome::Success(id) => Some(id),
                    Outcome::Rejected => None,
                })
            }
            Err(e) => Err(clone_error(&e)),
        }
    }

    /// Forgets every cached answer.
    pub fn clear(&self) {
        if let Some(c) = &self.cache {
            c.invalidate_all();
        }
    }

    /// Hit, miss and error counters since creation.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

fn clone_error(e: &Arc<AuthnError>) -> AuthnError {
    match e.as_ref() {
        AuthnError::Unavailable(m) => AuthnError::Unavailable(m.clone()),
        AuthnError::Backend(m) => AuthnError::Backend(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::{Backend, Labels};
    use std::sync::atomic::AtomicUsize;

    /// A fake backend: `mozart` / `password` is right; `down` = unavailable.
    struct Fake {
        calls: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
        delay: Duration,
    }

    impl Fake {
        fn new(delay: Duration) -> Arc<Self> {
            Arc::new(Fake {
                calls: AtomicUsize::new(0),
                down: Default::default(),
                delay,
            })
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
        async fn check(
            &self,
            account: &str,
            password: &Secret,
        ) -> Result<Option<Identity>, AuthnError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if self.down.load(Ordering::SeqCst) {
                return Err(AuthnError::Unavailable("fake is down".into()));
            }
            Ok(
                (account == "mozart" && password.expose() == "password").then(|| Identity {
                    account: account.to_owned(),
                    backend: Backend::Ldap,
                    labels: Labels::from([("groups".to_owned(), vec!["pushers".to_owned()])]),
                    credential: None,
                }),
            )
        }
    }

    async fn login(
        cache: &LoginCache,
        fake: &Arc<Fake>,
        account: &str,
        password: &str,
    ) -> Result<Option<Identity>, AuthnError> {
        let pw = Secret::new(password);
        let f = fake.clone();
        let (a, p) = (account.to_owned(), pw.clone());
        cache
            .authenticate(account, &pw, || async move { f.check(&a, &p).await })
            .await
    }

    #[tokio::test]
    async fn success_is_cached() {
        let cache = LoginCache::new(Duration::from_secs(60), Duration::from_secs(60), 100);
        let fake = Fake::new(Duration::ZERO);
        let id = login(&cache, &fake, "mozart", "password")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(id.labels["groups"], vec!["pushers"]);
        let again = login(&cache, &fake, "mozart", "password")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, id);
        assert_eq!(fake.calls(), 1);
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                misses: 1,
                errors: 0
            }
        );
    }

    #[tokio::test]
    async fn wrong_password_never_served_from_cached_success() {
        let cache = LoginCache::new(Duration::from_secs(60), Duration::from_secs(60), 100);
        let fake = Fake::new(Duration::ZERO);
        assert!(
            login(&cache, &fake, "mozart", "password")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            login(&cache, &fake, "mozart", "wrong")
                .await
                .unwrap()
                .is_none()
        );
        assert!(login(&cache, &fake, "mozart", "").await.unwrap().is_none());
        // Another account with mozart's password is another key too.
        assert!(
            login(&cache, &fake, "bach", "password")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(fake.calls(), 4);
    }

    #[tokio::test]
    async fn failures_cached_for_negative_ttl() {
        let cache = LoginCache::new(Duration::from_secs(60), Duration::from_millis(200), 100);
        let fake = Fake::new(Duration::ZERO);
        assert!(
            login(&cache, &fake, "mozart", "wrong")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            login(&cache, &fake, "mozart", "wrong")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(fake.calls(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            login(&cache, &fake, "mozart", "wrong")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(fake.calls(), 2);
        // The right password is still asked about, not refused from the cache.
        assert!(
            login(&cache, &fake, "mozart", "password")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(fake.calls(), 3);
    }

    #[tokio::test]
    async fn success_expires_after_ttl() {
        let cache = LoginCache::new(Duration::from_millis(200), Duration::from_secs(60), 100);
        let fake = Fake::new(Duration::ZERO);
        login(&cache, &fake, "mozart", "password")
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        login(&cache, &fake, "mozart", "password")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test]
    async fn errors_are_not_cached_but_successes_outlive_an_outage() {
        let cache = LoginCache::new(Duration::from_secs(60), Duration::from_secs(60), 100);
        let fake = Fake::new(Duration::ZERO);
        login(&cache, &fake, "mozart", "password")
            .await
            .unwrap()
            .unwrap();
        fake.down.store(true, Ordering::SeqCst);
        // Cached success keeps working while the backend is down.
        login(&cache, &fake, "mozart", "password")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fake.calls(), 1);
        // Uncached logins fail with the backend's error, every time.
        for _ in 0..2 {
            let e = login(&cache, &fake, "bach", "password").await.unwrap_err();
            assert!(matches!(e, AuthnError::Unavailable(_)), "{e}");
        }
        assert_eq!(fake.calls(), 3);
        assert_eq!(cache.stats().errors, 2);
        fake.down.store(false, Ordering::SeqCst);
        assert!(
            login(&cache, &fake, "bach", "password")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(fake.calls(), 4);
    }

    #[tokio::test]
    async fn concurrent_identical_logins_share_one_backend_call() {
        let cache = Arc::new(LoginCache::new(
            Duration::from_secs(60),
            Duration::from_secs(60),
            100,
        ));
        let fake = Fake::new(Duration::from_millis(200));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, fake) = (cache.clone(), fake.clone());
                tokio::spawn(async move { login(&cache, &fake, "mozart", "password").await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().unwrap().is_some());
        }
        assert_eq!(fake.calls(), 1);
        assert_eq!(cache.stats().misses, 1);
        assert_eq!(cache.stats().hits, 19);
    }

    #[tokio::test]
    async fn capacity_is_bounded() {
        let cache = LoginCache::new(Duration::from_secs(60), Duration::from_secs(60), 10);
        let fake = Fake::new(Duration::ZERO);
        for i in 0..100 {
            login(&cache, &fake, &format!("user{i}"), "x")
                .await
                .unwrap();
        }
        let c = cache.cache.as_ref().unwrap();
        c.run_pending_tasks().await;
        assert!(c.entry_count() <= 10, "{}", c.entry_count());
    }

    #[tokio::test]
    async fn disabled_cache_always_asks() {
        let cache = LoginCache::new(Duration::ZERO, Duration::ZERO, 100);
        let fake = Fake::new(Duration::ZERO);
        login(&cache, &fake, "mozart", "password")
            .await
            .unwrap()
            .unwrap();
        login(&cache, &fake, "mozart", "password")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fake.calls(), 2);
    }

    #[test]
    fn key_holds_no_password() {
        let cache = LoginCache::new(Duration::from_secs(1), Duration::from_secs(1), 1);
        let other = LoginCache::new(Duration::from_secs(1), Duration::from_secs(1), 1);
        let k = cache.key("mozart", &Secret::new("password"));
        assert_eq!(k.account, "mozart");
        assert_ne!(
            k.digest,
            cache.key("mozart", &Secret::new("passwore")).digest
        );
        // Salted per cache (per process in practice).
        assert_ne!(
            k.digest,
            other.key("mozart", &Secret::new("password")).digest
        );
        let unsalted: [u8; 32] = Sha256::digest(b"password").into();
        assert_ne!(k.digest, unsalted);
    }
}
