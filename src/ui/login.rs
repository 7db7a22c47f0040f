//! UI logins: the same authenticators (static users, LDAP) and login caches
//! as `docker login`, through one function.
//!
//! UI logins count against the same brute-force limits as docker logins
//! (`app.throttle`) and land in the same audit trail.

use std::net::IpAddr;
use std::time::Duration;

use crate::app::App;
use crate::audit::Event;
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
    /// Too many recent failures for this account or address: not checked.
    Throttled(Duration),
}

/// Decides one UI login.
pub async fn attempt(app: &App, account: &str, password: &Secret, client: IpAddr) -> Outcome {
    if !crate::authn::acceptable_account(account) {
        return Outcome::BadCredentials;
    }
    let throttled = |account: &str, t: crate::ratelimit::Throttled| {
        app.metrics.login_throttled(t.limited.as_str());
        app.audit.record(Event::LoginThrottled {
            account: account.to_owned(),
            client,
            limited: t.limited.as_str(),
            retry_after_ms: t.retry_after.as_millis() as u64,
        });
        Outcome::Throttled(t.retry_after)
    };
    if let Err(t) = app.throttle.check(Some(account), client).await {
        return throttled(account, t);
    }
    match app.authn.authenticate(account, password).await {
        // A robot's or personal token's secret does not open the UI: a
        // session acts with the account's full rights, which a scoped
        // credential must never turn into. Counted like a wrong password.
        Ok(Some(identity)) if identity.credential.is_some() => {
            app.throttle.record_failure(Some(account), client).await;
            app.audit.record(Event::LoginFailed {
                account: account.to_owned(),
                client,
                reason: "credential_not_for_ui",
            });
            Outcome::BadCredentials
        }
        Ok(Some(identity)) => {
            // The canonical account's back-off holds whatever spelling found it.
            if let Err(t) = app
                .throttle
                .vouched(account, &identity.account, client)
                .await
            {
                return throttled(&identity.account, t);
            }
            app.audit.record(Event::UiLogin {
                account: identity.account.clone(),
                backend: identity.backend.as_str(),
                client,
            });
            Outcome::Ok(identity)
        }
        Ok(None) => {
            app.throttle.record_failure(Some(account), client).await;
            app.audit.record(Event::LoginFailed {
                account: account.to_owned(),
                client,
                reason: "bad_credentials",
            });
            Outcome::BadCredentials
        }
        Err(e) => {
            tracing::error!(error = %e, "ui login: authentication backend could not decide");
            Outcome::Unavailable
        }
    }
}
