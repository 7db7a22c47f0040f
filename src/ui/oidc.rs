//! "Log in with <provider>": the UI side of the OpenID Connect code flow
//! (`crate::authn::oidc::flow` does the protocol).
//!
//! `GET /ui/oidc/login/NAME?next=...` keeps a pending login (state, nonce,
//! PKCE verifier, where to go next) in a short-lived cookie and sends the
//! browser to the provider; `GET /ui/oidc/callback` (the redirect URI, the
//! same for every provider) checks it, redeems the code, records what the
//! provider said about the person in the store (their later sessions and
//! personal access tokens are checked against it) and starts the UI's
//! ordinary session.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::{Ctx, Query, UiError, safe_next, session};
use crate::audit::Event;
use crate::authn::oidc::flow::{self, CALLBACK_PATH, FlowError, Pending};
use crate::http::body::{self, Body};
use crate::store::OidcAccount;

/// The pending login's cookie: sent back only to the callback.
const PENDING_COOKIE: &str = "rg_oidc";
/// How long a person may take at the provider.
const PENDING_MAX_AGE_SECS: u64 = 600;

pub async fn route(
    ctx: &mut Ctx<'_>,
    rest: &str,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response<Body>, UiError> {
    match rest.strip_prefix("login/") {
        Some(name) => start(ctx, name, query).await,
        None if rest == "callback" => callback(ctx, query, headers).await,
        None => Err(UiError::NotFound("There is no such page.".into())),
    }
}

fn redirect_uri(ctx: &Ctx<'_>) -> String {
    format!("{}{CALLBACK_PATH}", ctx.base)
}

/// The providers for the login page: (name, link).
pub fn links(ctx: &Ctx<'_>, next: &str) -> Vec<(String, String)> {
    let Some(oidc) = &ctx.app.authn.oidc else {
        return Vec::new();
    };
    let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
    oidc.config
        .providers
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                format!("/ui/oidc/login/{}?next={next}", p.name),
            )
        })
        .collect()
}

async fn start(ctx: &mut Ctx<'_>, name: &str, query: &Query) -> Result<Response<Body>, UiError> {
    let unknown = || UiError::NotFound("There is no such login provider.".into());
    let oidc = ctx.app.authn.oidc.clone().ok_or_else(unknown)?;
    let provider = oidc.config.provider(name).ok_or_else(unknown)?;
    let pending = Pending::new(&provider.name);
    let url = flow::start(&oidc, provider, &pending, &redirect_uri(ctx))
        .await
        .map_err(|e| unavailable(ctx, &provider.name, &e))?;
    let next = safe_next(query.get("next"));
    let value = format!("{}.{}", pending.encode(), URL_SAFE_NO_PAD.encode(next));
    ctx.cookies
        .push(pending_cookie(&value, PENDING_MAX_AGE_SECS, ctx.conn.tls));
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    resp.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&url).map_err(|_| UiError::Internal)?,
    );
    Ok(resp)
}

async fn callback(
    ctx: &mut Ctx<'_>,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response<Body>, UiError> {
    // Whatever happens next, the pending login is used up.
    ctx.cookies.push(pending_cookie("", 0, ctx.conn.tls));
    let stale = || {
        UiError::BadRequest(
            "This login was not started here, took too long or was already used. Start again from the login page.".into(),
        )
    };
    let cookie = session::cookie(headers, PENDING_COOKIE).ok_or_else(stale)?;
    let (pending, next) = cookie.rsplit_once('.').ok_or_else(stale)?;
    let pending = Pending::decode(pending).ok_or_else(stale)?;
    let next = URL_SAFE_NO_PAD
        .decode(next)
        .ok()
        .and_then(|n| String::from_utf8(n).ok())
        .ok_or_else(stale)?;
    let next = safe_next(&next).to_owned();
    // `state` is the double-submit check: only the browser that started
    // the login has the cookie that matches it.
    if query.opt("state") != Some(pending.state.as_str()) {
        return Err(stale());
    }
    let oidc = ctx.app.authn.oidc.clone().ok_or_else(stale)?;
    let provider = oidc.config.provider(&pending.provider).ok_or_else(stale)?;
    let client = ctx.conn.peer.ip();
    let refused = |ctx: &Ctx<'_>, reason: &'static str, detail: String| {
        ctx.app
            .metrics
            .oidc_login("provider", &provider.name, reason);
        ctx.app.audit.record(Event::OidcLoginFailed {
            kind: "provider",
            entry: provider.name.clone(),
            client,
            reason,
        });
        tracing::info!(provider = %provider.name, %detail, "sso login refused");
        UiError::Forbidden(format!(
            "Logging in with {} did not work: {detail}",
            provider.name
        ))
    };
    // RFC 9207: when the provider names itself, it must be this one.
    if query.opt("iss").is_some_and(|iss| iss != provider.issuer) {
        return Err(refused(
            ctx,
            "issuer",
            "the answer came from another issuer".into(),
        ));
    }
    if let Some(error) = query.opt("error") {
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        return Err(refused(
            ctx,
            "provider_error",
            format!("the provider said {error}"),
        ));
    }
    let code = query.opt("code").ok_or_else(stale)?;
    let login = match flow::finish(&oidc, provider, &pending, code, &redirect_uri(ctx)).await {
        Ok(l) => l,
        Err(FlowError::Refused(why)) => return Err(refused(ctx, "refused", why)),
        Err(e @ FlowError::Unavailable(_)) => return Err(unavailable(ctx, &provider.name, &e)),
    };
    let Some(creds) = &ctx.app.authn.credentials else {
        return Err(UiError::Internal);
    };
    let record = OidcAccount {
        account: login.identity.account.clone(),
        provider: provider.name.clone(),
        subject: login.subject.clone(),
        labels: login.identity.labels.clone(),
        last_login_at: crate::store::now(),
    };
    // Without the record, the session could not be checked again: refuse.
    if let Err(e) = creds.store().save_oidc_account(&record).await {
        tracing::error!(error = %e, "sso login: cannot record the account in the store");
        return Err(UiError::Unavailable);
    }
    ctx.app.metrics.oidc_login("provider", &provider.name, "ok");
    ctx.app.audit.record(Event::OidcLogin {
        kind: "provider",
        entry: provider.name.clone(),
        account: login.identity.account.clone(),
        client,
    });
    ctx.app.audit.record(Event::UiLogin {
        account: login.identity.account.clone(),
        backend: login.identity.backend.as_str(),
        client,
    });
    if ctx.viewer.signed_in() {
        session::end(ctx.app, &ctx.viewer, ctx.conn.tls);
    }
    let cookie = session::start(ctx.app, &login.identity, ctx.conn.tls).await?;
    ctx.cookies.push(cookie);
    ctx.viewer.identity = login.identity;
    Ok(continue_page(&next))
}

/// The callback arrives as a navigation from the provider's site, and the
/// session cookie is `SameSite=Strict`: a redirect from here would be part
/// of that cross-site navigation and go without it. A page of ours that
/// moves on by itself makes the next request a same-site one.
fn continue_page(next: &str) -> Response<Body> {
    let next = next
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"0;url={next}\"><title>Logged in</title></head>\
         <body><p>Logged in. <a id=\"continue\" href=\"{next}\">Continue</a></p></body></html>"
    );
    let mut resp = Response::new(body::full(html));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

fn unavailable(ctx: &Ctx<'_>, provider: &str, e: &FlowError) -> UiError {
    ctx.app
        .metrics
        .oidc_login("provider", provider, "issuer_unavailable");
    tracing::error!(provider, error = %e, "sso login: the provider could not be reached");
    UiError::Unavailable
}

/// `SameSite=Lax`: the callback is a top-level navigation from the
/// provider's site, which Lax cookies (not Strict ones) go along with.
fn pending_cookie(value: &str, max_age: u64, tls: bool) -> HeaderValue {
    let mut c = format!(
        "{PENDING_COOKIE}={value}; Path=/ui/oidc/; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    );
    if tls {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("rg_oidc=; Max-Age=0"))
}
