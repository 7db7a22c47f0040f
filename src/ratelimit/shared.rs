//! The login throttle across instances: the same counters and back-offs,
//! also kept in the store, so that N instances behind a load balancer allow
//! the configured number of failures in total, not N times it.
//!
//! The in-process [`LoginThrottle`] stays the first line (no database on
//! the way when it already says no). Then one indexed query says whether
//! another instance has backed the address or the account off. Its answer
//! is cached for [`SHARED_TTL`] per (account, address) only while neither
//! has failures counted: people who type their password right cost one
//! query a second, and a guess is always checked against the store, so the
//! lockout holds after the configured number of failures in total. A failure is counted in the
//! store by one atomic statement (several instances counting at once all
//! count). A store that cannot answer leaves the local throttle in force
//! alone (logged): an outage must not lock everyone out.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moka::future::Cache;

use super::{AddressKey, Limited, LoginThrottle, Throttled, account_key};
use crate::store::Store;

/// How long one instance reuses what the store said about a key pair.
pub const SHARED_TTL: Duration = Duration::from_secs(1);

/// See the module documentation.
pub struct SharedThrottle {
    pub local: Arc<LoginThrottle>,
    store: Arc<Store>,
    /// (account key, address) → [address blocked until, account blocked
    /// until, account trusted at the address until], Unix ms; only pairs
    /// without failures counted.
    seen: Cache<(String, AddressKey), [i64; 3]>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn keys(account: &str, address: AddressKey) -> [String; 3] {
    [
        format!("i:{}", address.0),
        format!("a:{account}"),
        format!("t:{account}|{}", address.0),
    ]
}

impl SharedThrottle {
    pub fn new(local: Arc<LoginThrottle>, store: Arc<Store>) -> Self {
        SharedThrottle {
            local,
            store,
            seen: Cache::builder()
                .time_to_live(SHARED_TTL)
                .max_capacity(100_000)
                .build(),
        }
    }

    /// May a login for `account` (None: a refresh token) from `ip` be
    /// checked now, here and as far as every other instance counted?
    pub async fn check(&self, account: Option<&str>, ip: IpAddr) -> Result<(), Throttled> {
        self.local.check(account, ip)?;
        let c = self.local.config();
        if !c.enabled {
            return Ok(());
        }
        let address = AddressKey::from(ip);
        let key = account.map(account_key).unwrap_or_default();
        let state = match self.state(&key, address).await {
            Some(s) => s,
            None => return Ok(()),
        };
        let now = now_ms();
        let wait = |until: i64| Duration::from_millis((until - now).max(1) as u64);
        if c.failures_per_address > 0 && state[0] > now {
            return Err(Throttled {
                limited: Limited::Address,
                retry_after: wait(state[0]),
            });
        }
        let trusted = state[2] > now || self.local.trusted.contains_key(&(key.clone(), address));
        if account.is_some() && c.failures_per_account > 0 && state[1] > now && !trusted {
            return Err(Throttled {
                limited: Limited::Account,
                retry_after: wait(state[1]),
            });
        }
        Ok(())
    }

    async fn state(&self, key: &str, address: AddressKey) -> Option<[i64; 3]> {
        let pair = (key.to_owned(), address);
        if let Some(clean) = self.seen.get(&pair).await {
            return Some(clean);
        }
        let k = keys(key, address);
        match self.store.throttle_state([&k[0], &k[1], &k[2]]).await {
            Ok(found) => {
                let state = found.map(|(until, _)| until);
                if found[0].1 == 0 && found[1].1 == 0 {
                    self.seen.insert(pair, state).await;
                }
                Some(state)
            }
            Err(e) => {
                tracing::warn!(error = %e, "login throttle: store unavailable, counting on this instance only");
                None
            }
        }
    }

    /// Counts a failed login here and in the store.
    pub async fn record_failure(&self, account: Option<&str>, ip: IpAddr) {
        self.local.record_failure(account, ip);
        let c = self.local.config().clone();
        if !c.enabled {
            return;
        }
        let address = AddressKey::from(ip);
        let key = account.map(account_key);
        let k = keys(key.as_deref().unwrap_or_default(), address);
        let now = now_ms();
        let forget_before = now - c.forget_after.as_millis() as i64;
        let mut counted = vec![];
        if c.failures_per_address > 0 {
            counted.push((&k[0], c.failures_per_address));
        }
        if key.is_some() && c.failures_per_account > 0 {
            counted.push((&k[1], c.failures_per_account));
        }
        for (k, free) in counted {
            let result = async {
                let n = self.store.throttle_fail(k, now, forget_before).await?;
                if n >= i64::from(free) {
                    let over = u32::try_from(n - i64::from(free)).unwrap_or(u32::MAX);
                    let until = now + self.local.backoff(over).as_millis() as i64;
                    self.store.throttle_block(k, until).await?;
                }
                Ok::<_, crate::store::StoreError>(())
            };
            if let Err(e) = result.await {
                tracing::warn!(error = %e, "login throttle: store unavailable, failure counted on this instance only");
                return;
            }
        }
        // What this instance cached about the pair is stale now.
        if let Some(key) = key {
            self.seen.invalidate(&(key, address)).await;
        }
    }

    /// A successful login: its address is trusted for the account, here and
    /// (once per trust period and instance) in the store.
    pub async fn record_success(&self, account: &str, ip: IpAddr) {
        let key = account_key(account);
        let address = AddressKey::from(ip);
        let known = self.local.trusted.contains_key(&(key.clone(), address));
        self.local.record_success(account, ip);
        let c = self.local.config();
        if known || !c.enabled || c.failures_per_account == 0 {
            return;
        }
        let until = now_ms() + c.trusted_address_ttl.as_millis() as i64;
        if let Err(e) = self
            .store
            .throttle_trust(&keys(&key, address)[2], until)
            .await
        {
            tracing::warn!(error = %e, "login throttle: could not share a trusted address");
        }
    }

    /// As [`LoginThrottle::vouched`], with the canonical account checked
    /// across instances too.
    pub async fn vouched(&self, typed: &str, canonical: &str, ip: IpAddr) -> Result<(), Throttled> {
        if !LoginThrottle::same_account(typed, canonical) {
            self.check(Some(canonical), ip).await?;
            self.record_success(canonical, ip).await;
        }
        self.record_success(typed, ip).await;
        Ok(())
    }
}
