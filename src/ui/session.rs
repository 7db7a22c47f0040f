//! Sessions and CSRF for the web UI.
//!
//! The session is a signed session token (`token_use = "session"`, see
//! [`crate::token::claims::SessionClaims`]) in an `HttpOnly`,
//! `SameSite=Strict` cookie scoped to `/ui` (and `Secure` under TLS). It
//! names the account and its backend only; the identity (with labels for the
//! ACL) comes from the authenticators, cached for a few minutes, so removing
//! an account ends its sessions within that time. Logout remembers the
//! token's `jti` until it would have expired.
//!
//! CSRF: every state-changing form carries a token. Signed in, it is derived
//! from the session token (a hash only the cookie's holder can compute);
//! anonymous (the login form, deletes the ACL grants to anonymous), it is a
//! random double-submit cookie. POSTs are also refused when the browser says
//! they come from another site (`Sec-Fetch-Site`, `Origin`).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::authn::{Backend, Identity};
use crate::token::SessionClaims;

use super::UiError;

pub const SESSION_COOKIE: &str = "rg_session";
pub const CSRF_COOKIE: &str = "rg_csrf";
/// How long a UI login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// How long an account's identity (labels) is reused before asking its
/// backend again.
pub const IDENTITY_TTL: Duration = Duration::from_secs(300);

/// Who is looking at the page.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// Anonymous (account `""`) when not signed in.
    pub identity: Identity,
    /// The session token and its claims when signed in.
    pub session: Option<(String, SessionClaims)>,
    /// The token forms must carry.
    pub csrf: String,
}

impl Viewer {
    pub fn signed_in(&self) -> bool {
        self.session.is_some()
    }
}

/// What the request's cookies say, and the cookies the response must set.
pub struct Resolved {
    pub viewer: Viewer,
    pub set_cookies: Vec<HeaderValue>,
}

/// Reads the session and CSRF cookies and works out the viewer.
/// A session that is invalid, expired, ended or whose account is gone makes
/// an anonymous viewer (and clears the cookie); a backend that cannot say
/// whether the account still exists is `Unavailable`.
pub async fn resolve(app: &App, headers: &HeaderMap, tls: bool) -> Result<Resolved, UiError> {
    let mut set_cookies = Vec::new();
    if let Some(token) = cookie(headers, SESSION_COOKIE) {
        match app.verifier.verify_session(token) {
            Ok(claims) if !app.ui.revoked.contains_key(&claims.jti) => {
                let ended = ended_elsewhere(app, &claims).await
                    || logged_out_everywhere(app, &claims).await;
                if !ended && let Some(identity) = identity(app, &claims).await? {
                    let csrf = csrf_for_session(token);
                    return Ok(Resolved {
                        viewer: Viewer {
                            identity,
                            session: Some((token.to_owned(), claims)),
                            csrf,
                        },
                        set_cookies,
                    });
                }
            }
            Ok(_) => tracing::debug!("ui session was ended by logout"),
            Err(e) => tracing::debug!(reason = %e, "ui session cookie refused"),
        }
        set_cookies.push(clear_cookie(SESSION_COOKIE, tls));
    }
    let csrf = match cookie(headers, CSRF_COOKIE).filter(|v| valid_random(v)) {
        Some(v) => v.to_owned(),
        None => {
            let v = random_token();
            set_cookies.push(set_cookie(CSRF_COOKIE, &v, None, tls));
            v
        }
    };
    Ok(Resolved {
        viewer: Viewer {
            identity: Identity::anonymous(),
            session: None,
            csrf,
        },
        set_cookies,
    })
}

/// Whether the session was ended by a logout on another instance. A store
/// that cannot say is logged and the session goes on (as for "log out
/// everywhere" below).
async fn ended_elsewhere(app: &App, claims: &SessionClaims) -> bool {
    let Some(creds) = &app.authn.credentials else {
        return false;
    };
    creds.session_ended(&claims.jti).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "ui: store unavailable, logouts on other instances not checked");
        false
    })
}

/// Whether the session's account logged out everywhere after the session
/// began. A store that cannot say is logged and the session goes on, as for
/// refresh tokens (docs/tokens.md): an outage must not sign everyone out.
async fn logged_out_everywhere(app: &App, claims: &SessionClaims) -> bool {
    let Some(creds) = &app.authn.credentials else {
        return false;
    };
    match creds.logged_out_since(&claims.sub, claims.iat).await {
        Ok(ended) => ended,
        Err(e) => {
            tracing::warn!(error = %e, "ui: store unavailable, \"log out everywhere\" not checked");
            false
        }
    }
}

/// The current identity of a session's account: from the UI's cache, else
/// from its backend. `Ok(None)`: the account is gone.
async fn identity(app: &App, claims: &SessionClaims) -> Result<Option<Identity>, UiError> {
    let key = (claims.sub.clone(), claims.backend.clone());
    if let Some(identity) = app.ui.identities.get(&key).await {
        return Ok(Some(identity));
    }
    match app.authn.lookup(&claims.sub, &claims.backend).await {
        Ok(Some(identity)) => {
            app.ui.identities.insert(key, identity.clone()).await;
            Ok(Some(identity))
        }
        Ok(None) => {
            tracing::info!(target: "audit", account = %claims.sub, "ui session ended: account no longer exists");
            Ok(None)
        }
        Err(e) => {
            tracing::error!(error = %e, "ui: cannot look the session's account up");
            Err(UiError::Unavailable)
        }
    }
}

/// Starts a session for a freshly authenticated identity: the cookie to set.
pub async fn start(app: &App, identity: &Identity, tls: bool) -> Result<HeaderValue, UiError> {
    let (token, claims) = app
        .issuer
        .issue_session(identity, SESSION_LIFETIME)
        .map_err(|e| {
            tracing::error!(error = %e, "ui: issuing a session failed");
            UiError::Internal
        })?;
    // The authenticators just vouched for it: no lookup needed for a while.
    if identity.backend != Backend::Anonymous {
        app.ui
            .identities
            .insert(
                (claims.sub.clone(), claims.backend.clone()),
                identity.clone(),
            )
            .await;
    }
    Ok(set_cookie(
        SESSION_COOKIE,
        &token,
        Some(SESSION_LIFETIME),
        tls,
    ))
}

/// Ends the viewer's session (its token stops working at once) and returns
/// the cookie that clears it.
pub fn end(app: &App, viewer: &Viewer, tls: bool) -> HeaderValue {
    if let Some((_, claims)) = &viewer.session {
        app.ui.revoked.insert(claims.jti.clone(), ());
        // Every instance sharing the store refuses it too (off this
        // answer's path; this instance already does).
        let (store, jti, exp) = (app.store.clone(), claims.jti.clone(), claims.exp as i64);
        app.store.spawn_write(
            "a UI logout",
            async move { store.end_session(&jti, exp).await },
        );
    }
    clear_cookie(SESSION_COOKIE, tls)
}

/// Checks a POST's CSRF token and where the browser says it comes from.
pub fn check_csrf(
    viewer: &Viewer,
    submitted: Option<&str>,
    headers: &HeaderMap,
    base: &str,
) -> Result<(), UiError> {
    let forged = || {
        UiError::Forbidden(
            "The form was stale or not sent from this site; reload the page and try again.".into(),
        )
    };
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Err(forged());
    }
    if let Some(origin) = headers.get(header::ORIGIN)
        && origin.as_bytes() != base.as_bytes()
    {
        return Err(forged());
    }
    match submitted {
        Some(s) if constant_time_eq(s.as_bytes(), viewer.csrf.as_bytes()) => Ok(()),
        _ => Err(forged()),
    }
}

/// The CSRF token of a session: a hash of the session token, so only its
/// holder can compute it, and it changes with every login.
pub fn csrf_for_session(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"registry-gate ui csrf\0");
    h.update(token.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// 32 random bytes, base64url: what `random_token` makes.
fn valid_random(v: &str) -> bool {
    v.len() == 43
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` (the first one, if sent several times).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

fn set_cookie(name: &str, value: &str, max_age: Option<Duration>, tls: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    if tls {
        c.push_str("; Secure");
    }
    // Tokens are base64url and dots: always a valid header value.
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
}

fn clear_cookie(name: &str, tls: bool) -> HeaderValue {
    let mut c = format!("{name}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    if tls {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(csrf: &str) -> Viewer {
        Viewer {
            identity: Identity::anonymous(),
            session: None,
            csrf: csrf.into(),
        }
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; rg_session=tok.en.x"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("rg_csrf=zz"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("tok.en.x"));
        assert_eq!(cookie(&h, CSRF_COOKIE), Some("zz"));
        assert_eq!(cookie(&h, "rg"), None);
        h.insert(header::COOKIE, HeaderValue::from_static("rg_session="));
        assert_eq!(cookie(&h, SESSION_COOKIE), None);
    }

    #[test]
    fn session_cookies_are_strict() {
        let c = set_cookie(SESSION_COOKIE, "abc", Some(SESSION_LIFETIME), false);
        let c = c.to_str().unwrap();
        assert!(
            c.starts_with("rg_session=abc; Path=/ui; HttpOnly; SameSite=Strict"),
            "{c}"
        );
        assert!(c.contains("Max-Age=28800"), "{c}");
        assert!(!c.contains("Secure"), "{c}");
        let c = set_cookie(SESSION_COOKIE, "abc", None, true);
        assert!(c.to_str().unwrap().ends_with("; Secure"));
        let c = clear_cookie(SESSION_COOKIE, false);
        assert!(c.to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn csrf_tokens_must_match_and_come_from_this_site() {
        let base = "http://gate:5000";
        let v = viewer(&random_token());
        assert!(valid_random(&v.csrf));
        let h = HeaderMap::new();
        assert!(check_csrf(&v, Some(&v.csrf), &h, base).is_ok());
        assert!(check_csrf(&v, None, &h, base).is_err());
        assert!(check_csrf(&v, Some(""), &h, base).is_err());
        assert!(check_csrf(&v, Some(&random_token()), &h, base).is_err());
        let mut same = HeaderMap::new();
        same.insert(header::ORIGIN, HeaderValue::from_static("http://gate:5000"));
        same.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(check_csrf(&v, Some(&v.csrf), &same, base).is_ok());
        let mut other = HeaderMap::new();
        other.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(check_csrf(&v, Some(&v.csrf), &other, base).is_err());
        let mut cross = HeaderMap::new();
        cross.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check_csrf(&v, Some(&v.csrf), &cross, base).is_err());
    }

    #[test]
    fn session_csrf_depends_on_the_token() {
        let a = csrf_for_session("token-a");
        assert_eq!(a, csrf_for_session("token-a"));
        assert_ne!(a, csrf_for_session("token-b"));
        assert!(!a.contains("token"));
    }

    #[test]
    fn random_tokens_are_unique_and_checked() {
        assert_ne!(random_token(), random_token());
        assert!(!valid_random("short"));
        assert!(!valid_random(&"a;".repeat(22)[..43]));
    }
}
