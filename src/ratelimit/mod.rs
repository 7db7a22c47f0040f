//! Brute-force protection for the token realm: failed logins are counted
//! per client address and per account, and past a free allowance each
//! further failure doubles a back-off during which password checks from
//! there (or for that account) are refused with 429 and `Retry-After`.
//!
//! - Only failures count; a login that is not throttled is answered at full
//!   speed (no artificial delay), success or failure.
//! - Requests refused while backed off are not counted, so hammering does
//!   not prolong a lockout: it ends at most `max_backoff` after the last
//!   counted failure, and failures are forgotten `forget_after` later.
//! - An account's lockout does not apply to addresses that account logged
//!   in from successfully within `trusted_address_ttl`: an attacker
//!   elsewhere cannot lock a user out of the machines they use.
//! - IPv6 clients are counted per /64 (one host usually owns a whole /64).
//! - Counters live in this process (bounded caches) and, through
//!   [`shared::SharedThrottle`], in the store: instances sharing it count
//!   failures together.
//!
//! Nothing here sees a password.

pub mod shared;

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use moka::sync::Cache;

use crate::config::RawRateLimit;

/// The resolved `[ratelimit]` section (see `RawRateLimit` for each meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    pub enabled: bool,
    pub failures_per_address: u32,
    pub failures_per_account: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub forget_after: Duration,
    pub trusted_address_ttl: Duration,
    pub capacity: u64,
}

impl From<&RawRateLimit> for ThrottleConfig {
    fn from(r: &RawRateLimit) -> Self {
        ThrottleConfig {
            enabled: r.enabled,
            failures_per_address: r.failures_per_address,
            failures_per_account: r.failures_per_account,
            backoff: r.backoff,
            max_backoff: r.max_backoff,
            forget_after: r.forget_after,
            trusted_address_ttl: r.trusted_address_ttl,
            capacity: r.capacity,
        }
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig::from(&RawRateLimit::default())
    }
}

/// What is backed off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The client address (all accounts from there).
    Address,
    /// The account (from addresses it has not logged in from).
    Account,
}

impl Limited {
    pub fn as_str(self) -> &'static str {
        match self {
            Limited::Address => "address",
            Limited::Account => "account",
        }
    }
}

/// A login attempt refused without checking its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub limited: Limited,
    /// How long until an attempt will be checked again.
    pub retry_after: Duration,
}

/// Failures of one address or account.
#[derive(Debug, Clone, Copy)]
struct Counter {
    failures: u32,
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

impl Counter {
    fn fresh(now: Instant) -> Self {
        Counter {
            failures: 0,
            last_failure: now,
            blocked_until: None,
        }
    }

    fn remaining(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }
}

/// An address as counted: IPv4 (or IPv4-mapped) as is, IPv6 by its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct AddressKey(pub(crate) IpAddr);

impl From<IpAddr> for AddressKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => AddressKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    AddressKey(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

/// The spelling an account is counted under. A directory matches names
/// more loosely than byte for byte (LDAP's `caseIgnoreMatch` ignores case,
/// leading, trailing and repeated spaces, and compares compatibility forms:
/// full-width `ｂａｃｈ` finds `bach`), and no such variant may get a fresh
/// allowance: whitespace trimmed and collapsed, Unicode NFKC, lower case.
/// (The realm also checks the canonical account a backend vouched for:
/// see [`LoginThrottle::same_account`].)
pub fn account_key(account: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let nfkc: String = account.nfkc().collect();
    let mut key = String::with_capacity(nfkc.len());
    for word in nfkc.split_whitespace() {
        if !key.is_empty() {
            key.push(' ');
        }
        key.push_str(&word.to_lowercase());
    }
    // Lower case can leave a compatibility form behind (rarely): once more.
    key.nfkc().collect()
}

/// See the module documentation.
pub struct LoginThrottle {
    config: ThrottleConfig,
    addresses: Cache<AddressKey, Counter>,
    accounts: Cache<String, Counter>,
    pub(crate) trusted: Cache<(String, AddressKey), ()>,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("config", &self.config)
            .field("addresses", &self.addresses.entry_count())
            .field("accounts", &self.accounts.entry_count())
            .finish_non_exhaustive()
    }
}

impl LoginThrottle {
    pub fn new(config: ThrottleConfig) -> Self {
        // A counter is useless once its last back-off ended and its
        // failures are forgotten.
        let keep = config
            .max_backoff
            .saturating_add(config.forget_after)
            .max(Duration::from_secs(1));
        LoginThrottle {
            addresses: Cache::builder()
                .max_capacity(config.capacity)
                .time_to_idle(keep)
                .build(),
            accounts: Cache::builder()
                .max_capacity(config.capacity)
                .time_to_idle(keep)
                .build(),
            trusted: Cache::builder()
                .max_capacity(config.capacity)
                .time_to_live(config.trusted_address_ttl.max(Duration::from_secs(1)))
                .build(),
            config,
        }
    }

    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    /// Whether two names are counted as one account (see [`account_key`]).
    pub fn same_account(a: &str, b: &str) -> bool {
        account_key(a) == account_key(b)
    }

    /// May a login for `account` (None: a refresh token) from `ip` have its
    /// credentials checked now?
    pub fn check(&self, account: Option<&str>, ip: IpAddr) -> Result<(), Throttled> {
        self.check_at(account, ip, Instant::now())
    }

    /// Counts a failed login (wrong password, unknown account, bad refresh token).
    pub fn record_failure(&self, account: Option<&str>, ip: IpAddr) {
        self.record_failure_at(account, ip, Instant::now());
    }

    /// Remembers that `account` logged in from `ip`: that address is
    /// exempt from the account's lockout from now on (for a while).
    pub fn record_success(&self, account: &str, ip: IpAddr) {
        if self.config.enabled && self.config.failures_per_account > 0 {
            self.trusted
                .insert((account_key(account), AddressKey::from(ip)), ());
        }
    }

    /// A backend vouched that a login typed as `typed` is `canonical` (its
    /// canonical name, e.g. LDAP's `account_attribute`). When the two are
    /// not counted as one account, the canonical one's back-off holds too:
    /// `Err` then, and no token may be issued. On `Ok`, the address is
    /// trusted for both names (as [`Self::record_success`]).
    pub fn vouched(&self, typed: &str, canonical: &str, ip: IpAddr) -> Result<(), Throttled> {
        let same = Self::same_account(typed, canonical);
        if !same {
            self.check(Some(canonical), ip)?;
            self.record_success(canonical, ip);
        }
        self.record_success(typed, ip);
        Ok(())
    }

    fn check_at(&self, account: Option<&str>, ip: IpAddr, now: Instant) -> Result<(), Throttled> {
        if !self.config.enabled {
            return Ok(());
        }
        let address = AddressKey::from(ip);
        if self.config.failures_per_address > 0
            && let Some(retry_after) = self.addresses.get(&address).and_then(|c| c.remaining(now))
        {
            return Err(Throttled {
                limited: Limited::Address,
                retry_after,
            });
        }
        if let Some(account) = account
            && self.config.failures_per_account > 0
        {
            let key = account_key(account);
            if let Some(retry_after) = self.accounts.get(&key).and_then(|c| c.remaining(now))
                && !self.trusted.contains_key(&(key, address))
            {
                return Err(Throttled {
                    limited: Limited::Account,
                    retry_after,
                });
            }
        }
        Ok(())
    }

    fn record_failure_at(&self, account: Option<&str>, ip: IpAddr, now: Instant) {
        if !self.config.enabled {
            return;
        }
        let free = self.config.failures_per_address;
        if free > 0 {
            self.addresses
                .entry(AddressKey::from(ip))
                .and_compute_with(|e| Op::Put(self.fail(e.map(|e| e.into_value()), free, now)));
        }
        let free = self.config.failures_per_account;
        if let Some(account) = account
            && free > 0
        {
            self.accounts
                .entry(account_key(account))
                .and_compute_with(|e| Op::Put(self.fail(e.map(|e| e.into_value()), free, now)));
        }
    }

    /// The counter after one more failure.
    fn fail(&self, counter: Option<Counter>, free: u32, now: Instant) -> Counter {
        let mut c = match counter {
            Some(c) if !self.forgotten(&c, now) => c,
            _ => Counter::fresh(now),
        };
        if c.remaining(now).is_some() {
            // A failure while backed off (only possible from a trusted
            // address): counted against the address, not the account, and
            // it does not prolong the back-off.
            return c;
        }
        c.failures = c.failures.saturating_add(1);
        c.last_failure = now;
        if c.failures >= free {
            c.blocked_until = Some(now + self.backoff(c.failures - free));
        }
        c
    }

    fn forgotten(&self, c: &Counter, now: Instant) -> bool {
        let quiet_from = c
            .blocked_until
            .unwrap_or(c.last_failure)
            .max(c.last_failure);
        now.saturating_duration_since(quiet_from) >= self.config.forget_after
    }

    /// `backoff * 2^n`, at most `max_backoff`.
    pub(crate) fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.config
            .backoff
            .checked_mul(factor)
            .unwrap_or(self.config.max_backoff)
            .min(self.config.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            enabled: true,
            failures_per_address: 10,
            failures_per_account: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            forget_after: Duration::from_secs(600),
            trusted_address_ttl: Duration::from_secs(3600),
            capacity: 1000,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const SECOND: Duration = Duration::from_secs(1);

    /// Issue 17, finding 6: with `bach` locked, `" bach"` (which LDAP finds
    /// as `bach`) got a token. Every spelling a directory would match is
    /// counted as one account.
    #[test]
    fn every_spelling_of_an_account_shares_one_counter() {
        for same in [
            "bach",
            " bach",
            "bach ",
            "  bach\t",
            "BACH",
            "Bach",
            "ｂａｃｈ",
            "ＢＡＣＨ",
            " ｂａｃｈ ",
        ] {
            assert_eq!(account_key(same), "bach", "{same:?}");
            assert!(LoginThrottle::same_account(same, "bach"), "{same:?}");
        }
        assert_eq!(account_key("J. S.   Bach"), "j. s. bach");
        for other in ["bach2", "b ach", "bac", "bäch"] {
            assert!(!LoginThrottle::same_account(other, "bach"), "{other:?}");
        }
        let t = LoginThrottle::new(config());
        let now = Instant::now();
        let attacker = ip("192.0.2.1");
        for spelling in [" bach", "ｂａｃｈ", "BACH "] {
            t.check_at(Some(spelling), attacker, now).unwrap();
            t.record_failure_at(Some(spelling), attacker, now);
        }
        for spelling in ["bach", " bach", "ＢＡＣＨ", "bach  "] {
            let err = t.check_at(Some(spelling), attacker, now).unwrap_err();
            assert_eq!(err.limited, Limited::Account, "{spelling:?}");
        }
    }

    /// Finding 6, the other half: a name the throttle cannot tell is the
    /// same account (an alias the directory's filter also matches) is
    /// held by the canonical account's back-off once a backend vouches.
    #[test]
    fn the_canonical_account_is_throttled_whatever_spelling_found_it() {
        let t = LoginThrottle::new(config());
        let attacker = ip("192.0.2.1");
        for _ in 0..3 {
            t.record_failure(Some("bach"), attacker);
        }
        assert!(t.check(Some("js.bach@example.com"), attacker).is_ok());
        let err = t
            .vouched("js.bach@example.com", "bach", attacker)
            .unwrap_err();
        assert_eq!(err.limited, Limited::Account);
        // Not locked: vouched, and the address is trusted for both names.
        let home = ip("192.0.2.9");
        assert!(t.vouched("mozart@example.com", "mozart", home).is_ok());
        for _ in 0..3 {
            t.record_failure(Some("mozart"), attacker);
        }
        assert!(t.check(Some("mozart"), home).is_ok());
        assert!(t.check(Some("mozart@example.com"), home).is_ok());
        assert!(t.check(Some("mozart"), attacker).is_err());
    }

    #[test]
    fn account_backs_off_after_the_allowance_and_doubles() {
        let t = LoginThrottle::new(config());
        let now = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..2 {
            assert_eq!(t.check_at(Some("bob"), a, now), Ok(()));
            t.record_failure_at(Some("bob"), a, now);
        }
        assert_eq!(t.check_at(Some("bob"), a, now), Ok(()));
        t.record_failure_at(Some("bob"), a, now);
        // Third failure: one second.
        let refused = t.check_at(Some("bob"), a, now).unwrap_err();
        assert_eq!(refused.limited, Limited::Account);
        assert_eq!(refused.retry_after, SECOND);
        // Other accounts from the same address are not affected.
        assert_eq!(t.check_at(Some("alice"), a, now), Ok(()));
        // Case variants share the counter.
        assert!(t.check_at(Some("BOB"), a, now).is_err());
        // After it, the next failure doubles the back-off.
        let later = now + SECOND;
        assert_eq!(t.check_at(Some("bob"), a, later), Ok(()));
        t.record_failure_at(Some("bob"), a, later);
        assert_eq!(
            t.check_at(Some("bob"), a, later).unwrap_err().retry_after,
            2 * SECOND
        );
    }

    #[test]
    fn lockout_is_bounded_and_refusals_do_not_prolong_it() {
        let t = LoginThrottle::new(config());
        let attacker = ip("198.51.100.7");
        let mut now = Instant::now();
        // Fail whenever allowed, for a long time.
        for _ in 0..200 {
            if t.check_at(Some("bob"), attacker, now).is_ok() {
                t.record_failure_at(Some("bob"), attacker, now);
            }
            now += Duration::from_millis(500);
        }
        let refused = t.check_at(Some("bob"), ip("203.0.113.9"), now);
        let wait = refused.err().map_or(Duration::ZERO, |r| r.retry_after);
        assert!(wait <= Duration::from_secs(60), "{wait:?}");
        // Hammering while locked changes nothing.
        for _ in 0..100 {
            let _ = t.check_at(Some("bob"), attacker, now);
        }
        assert_eq!(
            t.check_at(Some("bob"), ip("203.0.113.9"), now + wait),
            Ok(())
        );
    }

    #[test]
    fn trusted_addresses_are_exempt_from_the_account_lockout() {
        let t = LoginThrottle::new(config());
        let now = Instant::now();
        let home = ip("192.0.2.1");
        let attacker = ip("198.51.100.7");
        t.record_success("bob", home);
        for _ in 0..3 {
            t.record_failure_at(Some("bob"), attacker, now);
        }
        assert_eq!(
            t.check_at(Some("bob"), attacker, now).unwrap_err().limited,
            Limited::Account
        );
        assert!(t.check_at(Some("bob"), ip("203.0.113.9"), now).is_err());
        assert_eq!(t.check_at(Some("bob"), home, now), Ok(()));
        // Trusted for bob only.
        for _ in 0..3 {
            t.record_failure_at(Some("carol"), attacker, now);
        }
        assert!(t.check_at(Some("carol"), home, now).is_err());
    }

    #[test]
    fn addresses_back_off_across_accounts() {
        let t = LoginThrottle::new(config());
        let now = Instant::now();
        let a = ip("2001:db8:1:2:aaaa::1");
        for i in 0..10 {
            t.record_failure_at(Some(&format!("user{i}")), a, now);
        }
        let refused = t.check_at(Some("someone"), a, now).unwrap_err();
        assert_eq!(refused.limited, Limited::Address);
        // Refresh-token attempts (no account) too.
        assert!(t.check_at(None, a, now).is_err());
        // The same /64 is the same client, another /64 is not.
        assert!(t.check_at(None, ip("2001:db8:1:2:bbbb::9"), now).is_err());
        assert_eq!(t.check_at(None, ip("2001:db8:1:3::1"), now), Ok(()));
        // IPv4-mapped addresses count as the IPv4 address.
        for _ in 0..10 {
            t.record_failure_at(None, ip("192.0.2.5"), now);
        }
        assert!(t.check_at(None, ip("::ffff:192.0.2.5"), now).is_err());
    }

    #[test]
    fn failures_are_forgotten() {
        let t = LoginThrottle::new(config());
        let now = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..2 {
            t.record_failure_at(Some("bob"), a, now);
        }
        let later = now + Duration::from_secs(601);
        t.record_failure_at(Some("bob"), a, later);
        // The two old failures were forgotten: this is the first again.
        assert_eq!(t.check_at(Some("bob"), a, later), Ok(()));
    }

    #[test]
    fn disabled_or_zero_means_no_limit() {
        let t = LoginThrottle::new(ThrottleConfig {
            enabled: false,
            ..config()
        });
        let now = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..100 {
            t.record_failure_at(Some("bob"), a, now);
        }
        assert_eq!(t.check_at(Some("bob"), a, now), Ok(()));
        let t = LoginThrottle::new(ThrottleConfig {
            failures_per_account: 0,
            failures_per_address: 0,
            ..config()
        });
        for _ in 0..100 {
            t.record_failure_at(Some("bob"), a, now);
        }
        assert_eq!(t.check_at(Some("bob"), a, now), Ok(()));
    }

    proptest! {
        /// Whatever the sequence of attempts, no refusal asks to wait
        /// longer than `max_backoff`, and waiting as told always helps.
        #[test]
        fn waits_are_bounded(steps in prop::collection::vec((0u8..4, 0u64..3000, any::<bool>()), 1..200)) {
            let t = LoginThrottle::new(config());
            let mut now = Instant::now();
            let addrs = [ip("192.0.2.1"), ip("192.0.2.2"), ip("2001:db8::1"), ip("2001:db8:0:1::1")];
            for (who, ms, fail) in steps {
                now += Duration::from_millis(ms);
                let a = addrs[who as usize];
                match t.check_at(Some("bob"), a, now) {
                    Ok(()) if fail => t.record_failure_at(Some("bob"), a, now),
                    Ok(()) => t.record_success("bob", a),
                    Err(r) => {
                        prop_assert!(r.retry_after <= Duration::from_secs(60));
                        prop_assert!(r.retry_after > Duration::ZERO);
                        // After the wait, whatever refused is satisfied.
                        let after = t.check_at(Some("bob"), a, now + r.retry_after);
                        prop_assert_ne!(after.err().map(|e| e.limited), Some(r.limited));
                    }
                }
            }
        }
    }
}
