//! JWT claims of access and refresh tokens (distribution `docs/spec/auth/jwt.md`).
//! A leaf module: serde shapes only.

use serde::{Deserialize, Serialize};

use crate::authn::Labels;
use crate::authz::Restriction;
use std::sync::OnceLock;

use crate::scope::{self, AccessEntry, Scope};

/// Marks a refresh token. Access tokens never carry it, and the verifier of
/// each kind refuses the other, so one can never stand in for the other.
pub const REFRESH_USE: &str = "refresh";

/// Marks a web UI session token (the `/ui/` cookie). Neither the access nor
/// the refresh verifier accepts it, and the session verifier accepts nothing else.
pub const SESSION_USE: &str = "session";

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The account; empty for anonymous tokens.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    /// Absent means no access (and lets a refresh token fail as `Kind`).
    #[serde(default)]
    pub access: Vec<AccessEntry>,
    /// The identity's labels, when the token grants anything: the gate
    /// decides with the ACL again (the catalog filter; manifest requests
    /// under `tag` rules), which may match on labels, and the caller's own
    /// group memberships are no secret to the caller.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// The scopes of the credential a login used, only when the token
    /// grants `registry:catalog:*` and the login used a robot account or
    /// personal access token: the catalog filter applies them beside the ACL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restrict: Option<Restriction>,
    /// Present (and then `REFRESH_USE`) only on refresh tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_use: Option<String>,
    /// `access` as merged [`Scope`]s, made on first use and then kept with
    /// the claims (the verifier caches claims, so a token's scopes are built
    /// once, not on every request). Not part of the token.
    #[serde(skip)]
    pub granted: Granted,
}

impl AccessClaims {
    /// The scopes `access` grants, merged (see [`scope::merge`]).
    pub fn granted(&self) -> &[Scope] {
        self.granted
            .0
            .get_or_init(|| scope::merge(self.access.iter().map(Scope::from)))
    }
}

/// The cache behind [`AccessClaims::granted`]. It is derived from `access`,
/// so it never makes two claims differ: it compares equal always.
#[derive(Debug, Clone, Default)]
pub struct Granted(OnceLock<Vec<Scope>>);

impl PartialEq for Granted {
    fn eq(&self, _: &Granted) -> bool {
        true
    }
}

/// The claims of a refresh token: bound to an account and a service, no access.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    /// Which backend vouched for the account when the token was issued.
    #[serde(default)]
    pub backend: String,
    /// The credential (robot account or personal access token) the login
    /// used: the refresh token works only while it is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    /// `REFRESH_USE`; defaulted so that an access token fails as `Kind`.
    #[serde(default)]
    pub token_use: String,
}

/// The claims of a web UI session token: an account and the backend that
/// vouched for it, no access. The UI asks the ACL on every request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub backend: String,
    /// `SESSION_USE`; defaulted so that other kinds fail as `Kind`.
    #[serde(default)]
    pub token_use: String,
}
