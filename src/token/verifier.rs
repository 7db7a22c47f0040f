//! Verifying tokens: pinned algorithms, signature, `iss`, `aud`, `exp`/`nbf`
//! with a small leeway, and the token kind. Verified access tokens are cached
//! until they expire, so a layer-heavy pull (dozens of requests with the same
//! token) pays for one signature check.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use moka::sync::Cache;

use super::claims::{AccessClaims, REFRESH_USE, RefreshClaims, SESSION_USE, SessionClaims};
use super::issuer::unix;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 10;
/// Longest token we look at; real ones are well under 4 KiB.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token was refused. The client only ever hears `invalid_token`; the
/// variant is for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("token signed with a disallowed algorithm")]
    Algorithm,
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issued by someone else")]
    Issuer,
    #[error("token for another service")]
    Audience,
    #[error("wrong kind of token (access, refresh or session)")]
    Kind,
}

/// Hits and misses of the verified-token cache.
#[derive(Debug, Default)]
pub struct CacheCounters {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheCounters {
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// (hits, misses).
    pub fn get(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// A public key tokens may be signed with.
pub struct VerifyingKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// Verifies tokens of one issuer and service.
pub struct Verifier {
    /// By key ID: the key, its pinned algorithm, and the validation rules
    /// for it (built once, not per token).
    keys: HashMap<String, (Algorithm, DecodingKey, Validation)>,
    /// Keyed by the whole token. foldhash (randomly seeded) rather than
    /// std's SipHash: a token is ~600 bytes and hashing it with SipHash was
    /// 3.4% of the gate's instructions per request; only tokens this gate
    /// verified are inserted, so crafted collisions cannot fill a bucket.
    cache: Cache<String, Arc<AccessClaims>, foldhash::fast::RandomState>,
    counters: Arc<CacheCounters>,
}

impl Verifier {
    /// `max_lifetime` bounds how long a verified token stays cached (each
    /// entry is also checked against its own `exp` on every hit).
    pub fn new(
        keys: Vec<VerifyingKey>,
        issuer: &str,
        service: &str,
        max_lifetime: Duration,
    ) -> Self {
        super::crypto::install();
        let validation = |algorithm: Algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.leeway = LEEWAY_SECS;
            validation.validate_nbf = true;
            validation.set_issuer(&[issuer]);
            validation.set_audience(&[service]);
            validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
            validation
        };
        Verifier {
            keys: keys
                .into_iter()
                .map(|k| (k.kid, (k.algorithm, k.key, validation(k.algorithm))))
                .collect(),
            counters: Arc::default(),
            cache: Cache::builder()
                .max_capacity(50_000)
                .time_to_live(max_lifetime)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    /// Verifies an access token, from the cache when it was seen before.
    pub fn verify_access(&self, token: &str) -> Result<Arc<AccessClaims>, TokenError> {
        if let Some(claims) = self.cache.get(token) {
            // The cache may outlive a token by up to its TTL: re-check `exp`.
            if claims.exp + LEEWAY_SECS >= unix(SystemTime::now()) {
                self.counters.hit();
                return Ok(claims);
            }
            self.cache.invalidate(token);
            return Err(TokenError::Expired);
        }
        self.counters.miss();
        let claims: AccessClaims = self.decode(token)?;
        if claims.token_use.is_some() {
            return Err(TokenError::Kind);
        }
        // Build the granted scopes now, once, for every cached use.
        claims.granted();
        let claims = Arc::new(claims);
        self.cache.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }

    /// Hit and miss counters of the verified-token cache (for metrics).
    pub fn cache_counters(&self) -> Arc<CacheCounters> {
        self.counters.clone()
    }

    /// Verifies a refresh token (never cached: they are used once a login).
    pub fn verify_refresh(&self, token: &str) -> Result<RefreshClaims, TokenError> {
        let claims: RefreshClaims = self.decode(token)?;
        if claims.token_use != REFRESH_USE {
            return Err(TokenError::Kind);
        }
        Ok(claims)
    }

    /// Verifies a web UI session token (not cached: the UI checks it once a page).
    pub fn verify_session(&self, token: &str) -> Result<SessionClaims, TokenError> {
        let claims: SessionClaims = self.decode(token)?;
        if claims.token_use != SESSION_USE {
            return Err(TokenError::Kind);
        }
        Ok(claims)
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, token: &str) -> Result<T, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let (algorithm, key, validation) = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        // The algorithm is pinned by the key, never taken from the token.
        if header.alg != *algorithm {
            return Err(TokenError::Algorithm);
        }
        decode::<T>(token, key, validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::Issuer,
                ErrorKind::InvalidAudience => TokenError::Audience,
                ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
                _ => TokenError::Malformed,
            })
    }
}
