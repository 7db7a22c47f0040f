//! Issuing access and refresh tokens.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Header, encode};

use super::claims::{AccessClaims, REFRESH_USE, RefreshClaims, SESSION_USE, SessionClaims};
use super::keys::SigningKey;
use crate::authn::Identity;
use crate::scope::{AccessEntry, Scope};

/// Why a token could not be signed (a broken key: an internal error).
#[derive(Debug, thiserror::Error)]
#[error("signing a token failed: {0}")]
pub struct IssueError(String);

/// A freshly signed access token.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub expires_in: u64,
    /// RFC 3339, as docker_auth and distribution answer.
    pub issued_at: String,
}

/// Signs tokens for one service.
#[derive(Debug)]
pub struct Issuer {
    key: Arc<SigningKey>,
    issuer: String,
    service: String,
    lifetime: Duration,
    refresh_lifetime: Duration,
}

impl Issuer {
    pub fn new(
        key: Arc<SigningKey>,
        issuer: &str,
        service: &str,
        lifetime: Duration,
        refresh_lifetime: Duration,
    ) -> Self {
        super::crypto::install();
        Issuer {
            key,
            issuer: issuer.to_owned(),
            service: service.to_owned(),
            lifetime,
            refresh_lifetime,
        }
    }

    fn header(&self) -> Header {
        let mut header = Header::new(self.key.algorithm);
        header.kid = Some(self.key.kid.clone());
        header
    }

    /// An access token for `identity` granting exactly `granted`.
    pub fn issue(&self, identity: &Identity, granted: &[Scope]) -> Result<Issued, IssueError> {
        let now = SystemTime::now();
        let iat = unix(now);
        let grants_catalog = granted
            .iter()
            .any(|s| s.resource_type == crate::scope::REGISTRY);
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: identity.account.clone(),
            aud: self.service.clone(),
            exp: iat + self.lifetime.as_secs(),
            nbf: iat,
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            access: granted.iter().map(AccessEntry::from).collect(),
            // The gate decides with the ACL again at the request: the
            // catalog filter, and manifest requests under `tag` rules
            // (`authz::tags`). Both may match on labels, so every token that
            // grants something carries them (the caller's own group
            // memberships are no secret to the caller).
            labels: if !granted.is_empty() {
                identity.labels.clone()
            } else {
                Default::default()
            },
            restrict: identity
                .credential
                .as_ref()
                .filter(|_| grants_catalog)
                .map(|c| c.restriction.clone()),
            token_use: None,
            granted: Default::default(),
        };
        let token = encode(&self.header(), &claims, &self.key.encoding)
            .map_err(|e| IssueError(e.to_string()))?;
        Ok(Issued {
            token,
            expires_in: self.lifetime.as_secs(),
            issued_at: humantime::format_rfc3339_seconds(now).to_string(),
        })
    }

    /// A long-lived refresh token bound to the account and the service. It is
    /// not rotated on use: docker stores it once at login and keeps using it.
    pub fn issue_refresh(&self, identity: &Identity) -> Result<String, IssueError> {
        let iat = unix(SystemTime::now());
        let claims = RefreshClaims {
            iss: self.issuer.clone(),
            sub: identity.account.clone(),
            aud: self.service.clone(),
            exp: iat + self.refresh_lifetime.as_secs(),
            nbf: iat,
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            backend: identity.backend.as_str().to_owned(),
            cid: identity.credential.as_ref().map(|c| c.id.clone()),
            token_use: REFRESH_USE.to_owned(),
        };
        encode(&self.header(), &claims, &self.key.encoding).map_err(|e| IssueError(e.to_string()))
    }
}

impl Issuer {
    /// A web UI session token for `identity`, valid for `lifetime`; returns
    /// the token and its claims (the UI keeps the `jti` to end it at logout).
    pub fn issue_session(
        &self,
        identity: &Identity,
        lifetime: Duration,
    ) -> Result<(String, SessionClaims), IssueError> {
        let iat = unix(SystemTime::now());
        let claims = SessionClaims {
            iss: self.issuer.clone(),
            sub: identity.account.clone(),
            aud: self.service.clone(),
            exp: iat + lifetime.as_secs(),
            nbf: iat,
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            backend: identity.backend.as_str().to_owned(),
            token_use: SESSION_USE.to_owned(),
        };
        let token = encode(&self.header(), &claims, &self.key.encoding)
            .map_err(|e| IssueError(e.to_string()))?;
        Ok((token, claims))
    }
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
