//! UI logins: the same authenticators (static users, LDAP) and login caches
//! as `docker login`, through one function.
//!
//! NOTE (brute-force limits): the realm is getting a shared brute-force
//! limiter. [`attempt`] is the only place a UI login is decided: when the
//! limiter lands, check it here before `authenticate` (a new outcome, shown
//! as "too many attempts") and record failures here after it, so UI logins
//! and docker logins count against the same limits.

use std::net::IpAddr;

use crate::app::App;
use crate::authn::Identity;
use crate::secret::Secret;

/// How a login attempt ended.
#[derive(Debug)]
pub enum Outcome {
    Ok(Identity),
    /// Wrong account or password (also: malformed account names).
    BadCredentials,
    /// No backend could decide (the directory is down).
    Unavailable,
}

/// Decides one UI login.
pub async fn attempt(app: &App, account: &str, password: &Secret, client: IpAddr) -> Outcome {
    if account.is_empty() || account.len() > 256 || account.chars().any(char::is_control) {
        return Outcome::BadCredentials;
    }
    match app.authn.authenticate(account, password).await {
        Ok(Some(identity)) => {
            tracing::info!(
                target: "audit",
                event = "ui_login",
                account = %identity.account,
                backend = identity.backend.as_str(),
                client = %client,
            );
            Outcome::Ok(identity)
        }
        Ok(None) => {
            tracing::warn!(target: "audit", account = %account, client = %client, "ui login failed: bad credentials");
            Outcome::BadCredentials
        }
        Err(e) => {
            tracing::error!(error = %e, "ui login: authentication backend could not decide");
            Outcome::Unavailable
        }
    }
}
