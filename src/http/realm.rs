//! The token realm (`/auth`): distribution's token.md (GET with Basic auth,
//! as docker and skopeo ask) and oauth.md (POST form, as containerd, and so
//! every Kubernetes node, asks first).
//!
//! Credentials -> authn -> Identity -> authz -> granted scopes -> token.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use super::body::Body;
use super::errors::{ApiError, ErrorCode, json_response};
use super::{Conn, Routed, TokenBackend};
use crate::app::App;
use crate::audit::Event;
use crate::authn::{AuthnError, Identity, ROBOT_PREFIX, rgt};
use crate::authz::Subject;
use crate::scope::{self, Scope};
use crate::secret::Secret;

/// Token request forms are tiny; anything bigger is not one.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// A parsed token request, whichever way it came.
#[derive(Debug, Default)]
struct TokenRequest {
    service: Option<String>,
    scopes: Vec<Scope>,
    credentials: Credentials,
    /// `offline_token=true` (GET) or `access_type=offline` (POST).
    offline: bool,
    /// The `account` parameter docker sends beside Basic credentials.
    account: Option<String>,
}

#[derive(Debug, Default)]
enum Credentials {
    #[default]
    Anonymous,
    Password {
        account: String,
        password: Secret,
    },
    Refresh(Secret),
}

#[derive(Serialize)]
struct TokenResponse<'a> {
    token: &'a str,
    access_token: &'a str,
    expires_in: u64,
    issued_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
}

pub async fn handle(app: &App, req: Request<Incoming>, conn: Conn) -> Result<Routed, ApiError> {
    let tr = match *req.method() {
        Method::GET => parse_get(req.uri().query().unwrap_or(""), req.headers())?,
        Method::POST => parse_post(req).await?,
        _ => return Err(ApiError::detail(ErrorCode::Unsupported, "use GET or POST")),
    };
    let service = tr.service.as_deref().unwrap_or_default();
    if service != app.config.token.service {
        return Err(ApiError::detail(
            ErrorCode::BadRequest,
            format!("unknown service {service:?}"),
        ));
    }
    let (identity, refresh) = authenticate(app, &tr, conn).await?;
    let subject = Subject {
        account: &identity.account,
        labels: &identity.labels,
        ip: Some(conn.peer.ip()),
        service,
    };
    let granted = app
        .acl
        .grant_all(&subject, &scope::merge(tr.scopes.clone()));
    // A credential's scopes bound what its login gets: ACL ∩ scopes.
    let granted = match &identity.credential {
        Some(c) => c.restriction.apply(granted),
        None => granted,
    };
    let issued = app.issuer.issue(&identity, &granted).map_err(internal)?;
    let refresh_token = match refresh {
        Some(existing) => Some(existing),
        // A workload's JWT is its short-lived credential: no refresh token
        // may outlive it.
        None if tr.offline
            && !identity.account.is_empty()
            && identity.backend != crate::authn::Backend::Workload =>
        {
            Some(Secret::new(
                app.issuer.issue_refresh(&identity).map_err(internal)?,
            ))
        }
        None => None,
    };
    let list = |s: &[Scope]| s.iter().map(Scope::to_string).collect();
    app.audit.record(Event::TokenIssued {
        account: identity.account.clone(),
        backend: identity.backend.as_str(),
        client: conn.peer.ip(),
        requested: list(&tr.scopes),
        granted: list(&granted),
        credential: identity.credential.as_ref().map(|c| c.id.clone()),
    });
    if let Some(c) = &identity.credential {
        app.metrics.credential_login(c.kind.as_str(), "issued");
    }
    let body = serde_json::to_string(&TokenResponse {
        token: &issued.token,
        access_token: &issued.token,
        expires_in: issued.expires_in,
        issued_at: &issued.issued_at,
        refresh_token: refresh_token.as_ref().map(Secret::expose),
    })
    .map_err(|e| internal(e.to_string()))?;
    let mut resp: Response<Body> = json_response(StatusCode::OK, body);
    resp.extensions_mut()
        .insert(TokenBackend(identity.backend.as_str()));
    // Tokens must not be cached by anything between us and the client.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let account = Some(identity.account).filter(|a| !a.is_empty());
    Ok((resp, account))
}

/// Authenticates the request; for a refresh grant also returns the refresh
/// token to hand back unchanged (docker keeps using the one it stored).
///
/// Credentials are checked only when the login throttle allows it; a
/// failure is counted and logged (account and address, never the secret).
async fn authenticate(
    app: &App,
    tr: &TokenRequest,
    conn: Conn,
) -> Result<(Identity, Option<Secret>), ApiError> {
    match &tr.credentials {
        Credentials::Anonymous => Ok((Identity::anonymous(), None)),
        Credentials::Password { account, password } => {
            if tr.account.as_ref().is_some_and(|a| a != account) {
                return Err(ApiError::detail(
                    ErrorCode::BadRequest,
                    "the account parameter does not match the credentials",
                ));
            }
            Ok((login(app, account, password, conn).await?, None))
        }
        Credentials::Refresh(token) => {
            throttle(app, None, conn).await?;
            let claims = match app.verifier.verify_refresh(token.expose()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(reason = %e, "refresh token refused");
                    return Err(failed(app, conn, "", None, "bad_refresh_token").await);
                }
            };
            if logged_out(app, &claims.sub, claims.iat, claims.cid.is_some()).await? {
                return Err(failed(app, conn, &claims.sub, None, "logged_out").await);
            }
            // A token bound to a credential lives only as long as it does;
            // any other needs its account to still exist: removing a user
            // ends their logins.
            let current = match &claims.cid {
                Some(id) => app.authn.by_credential(id).await,
                None => app.authn.lookup(&claims.sub, &claims.backend).await,
            };
            match current {
                Ok(Some(identity)) if identity.account == claims.sub => {
                    Ok((identity, Some(token.clone())))
                }
                Ok(_) if claims.cid.is_some() => Err(failed(
                    app,
                    conn,
                    &claims.sub,
                    None,
                    "credential_revoked_or_expired",
                )
                .await),
                Ok(_) => Err(failed(app, conn, &claims.sub, None, "account_gone").await),
                Err(e) if claims.cid.is_some() => Err(store_unavailable(e)),
                Err(e) => Err(unavailable(e)),
            }
        }
    }
}

/// Checks a password (or a robot's or personal token's secret) for
/// `account`, throttled, counted and audited like every login: the realm's
/// password grant and the API's Basic authentication.
pub(crate) async fn login(
    app: &App,
    account: &str,
    password: &Secret,
    conn: Conn,
) -> Result<Identity, ApiError> {
    let ip = conn.peer.ip();
    throttle(app, Some(account), conn).await?;
    if let Some(oidc) = &app.authn.oidc
        && oidc.is_workload_token(password.expose())
    {
        return workload_login(app, oidc, password, conn).await;
    }
    let started = std::time::Instant::now();
    let result = app.authn.authenticate(account, password).await;
    let backend = match &result {
        Ok(Some(identity)) => identity.backend.as_str(),
        _ => app.authn.backend_for(account),
    };
    app.metrics.authentication(backend, started.elapsed());
    // Robot and personal-token logins, for their metric and a 503
    // that names the store.
    let credential_kind = if account.starts_with(ROBOT_PREFIX) {
        Some("robot")
    } else {
        rgt::is_well_formed(password.expose()).then_some("personal")
    };
    match result {
        Ok(Some(identity)) => {
            // Throttled on the canonical account too, whatever spelling
            // found it.
            let vouched = app.throttle.vouched(account, &identity.account, ip).await;
            throttled(app, Some(&identity.account), conn, vouched)?;
            Ok(identity)
        }
        Ok(None) => {
            if let Some(kind) = credential_kind {
                app.metrics.credential_login(kind, "refused");
            }
            Err(failed(app, conn, account, Some(account), "bad_credentials").await)
        }
        Err(e) => match credential_kind {
            Some(kind) => {
                app.metrics.credential_login(kind, "unavailable");
                Err(store_unavailable(e))
            }
            None => Err(unavailable(e)),
        },
    }
}

/// A password that is a JWT of a `[[oidc.trust]]` issuer: verified against
/// that entry, mapped to an account and labels, `require` checked; then
/// the ACL decides like for anyone. The username sent beside it is not
/// used (docker and containerd need one; any will do).
async fn workload_login(
    app: &App,
    oidc: &crate::authn::oidc::Oidc,
    token: &Secret,
    conn: Conn,
) -> Result<Identity, ApiError> {
    let ip = conn.peer.ip();
    let started = std::time::Instant::now();
    let result = oidc.workload(token.expose()).await;
    app.metrics
        .authentication(crate::authn::Backend::Workload.as_str(), started.elapsed());
    match result {
        Some(Ok(login)) => {
            app.metrics.oidc_login("trust", &login.trust, "ok");
            app.throttle
                .record_success(&login.identity.account, ip)
                .await;
            app.audit.record(Event::OidcLogin {
                kind: "trust",
                entry: login.trust,
                account: login.identity.account.clone(),
                client: ip,
            });
            Ok(login.identity)
        }
        Some(Err(refused)) => {
            let reason = refused.refusal.reason();
            app.metrics.oidc_login("trust", &refused.trust, reason);
            app.audit.record(Event::OidcLoginFailed {
                kind: "trust",
                entry: refused.trust.clone(),
                client: ip,
                reason,
            });
            if let crate::authn::oidc::Refusal::Unavailable(e) = &refused.refusal {
                tracing::error!(trust = %refused.trust, error = %e, "the trusted issuer could not be asked for its keys");
                return Err(ApiError::detail(
                    ErrorCode::Unavailable,
                    format!(
                        "the OpenID issuer of [[oidc.trust]] {:?} is unreachable and none of its keys are cached; try again later",
                        refused.trust
                    ),
                ));
            }
            tracing::info!(trust = %refused.trust, reason = %refused.refusal, "workload token refused");
            app.throttle.record_failure(None, ip).await;
            Err(bad_credentials())
        }
        // is_workload_token said it names a trusted issuer: unreachable,
        // but deny by default.
        None => Err(bad_credentials()),
    }
}

/// Whether `account` logged out everywhere after `issued_at` (a refresh
/// token's or session's `iat`): then that token no longer works.
///
/// When the store cannot answer, a token bound to a credential is refused
/// with 503 (the credential itself cannot be checked either); a person's
/// refresh token is accepted, so that a database outage never stops static
/// and LDAP users (docker keeps only the refresh token, not the password).
/// That outage window is logged; docs/tokens.md states it.
pub(crate) async fn logged_out(
    app: &App,
    account: &str,
    issued_at: u64,
    bound_to_credential: bool,
) -> Result<bool, ApiError> {
    let Some(creds) = &app.authn.credentials else {
        return Ok(false);
    };
    match creds.logged_out_since(account, issued_at).await {
        Ok(ended) => Ok(ended),
        Err(e) if bound_to_credential => Err(store_unavailable(e)),
        Err(e) => {
            tracing::warn!(error = %e, account, "store unavailable: \"log out everywhere\" not checked for this refresh token");
            Ok(false)
        }
    }
}

/// 429 when failed logins from this address (or for this account) are
/// being backed off; the credentials are then not even looked at.
async fn throttle(app: &App, account: Option<&str>, conn: Conn) -> Result<(), ApiError> {
    let decision = app.throttle.check(account, conn.peer.ip()).await;
    throttled(app, account, conn, decision)
}

/// A failed login: counted by the login throttle (here and in the store)
/// and audited (account and address; never the secret).
async fn failed(
    app: &App,
    conn: Conn,
    account: &str,
    counted: Option<&str>,
    reason: &'static str,
) -> ApiError {
    let ip = conn.peer.ip();
    app.throttle.record_failure(counted, ip).await;
    app.audit.record(Event::LoginFailed {
        account: account.to_owned(),
        client: ip,
        reason,
    });
    bad_credentials()
}

/// A throttle decision as the realm answers it (429, metric, audit).
fn throttled(
    app: &App,
    account: Option<&str>,
    conn: Conn,
    decision: Result<(), crate::ratelimit::Throttled>,
) -> Result<(), ApiError> {
    decision.map_err(|t| {
        app.metrics.login_throttled(t.limited.as_str());
        app.audit.record(Event::LoginThrottled {
            account: account.unwrap_or("").to_owned(),
            client: conn.peer.ip(),
            limited: t.limited.as_str(),
            retry_after_ms: t.retry_after.as_millis() as u64,
        });
        ApiError::too_many_requests(t.retry_after, "too many failed logins; retry later")
    })
}

fn parse_get(query: &str, headers: &HeaderMap) -> Result<TokenRequest, ApiError> {
    let mut tr = TokenRequest::default();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "service" => tr.service = Some(v.into_owned()),
            // Repeatable, and each may itself hold a space-separated list.
            "scope" => tr.scopes.extend(parse_scopes(&v)?),
            "offline_token" => tr.offline = v == "true",
            "account" => tr.account = Some(v.into_owned()),
            _ => {}
        }
    }
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let (account, password) = parse_basic(auth)?;
        tr.credentials = Credentials::Password { account, password };
    }
    Ok(tr)
}

async fn parse_post(req: Request<Incoming>) -> Result<TokenRequest, ApiError> {
    if !super::is_form(req.headers()) {
        return Err(ApiError::detail(
            ErrorCode::BadRequest,
            "token POSTs must be application/x-www-form-urlencoded",
        ));
    }
    let form: Bytes = Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|_| {
            ApiError::detail(
                ErrorCode::BadRequest,
                "token request form too large or broken",
            )
        })?
        .to_bytes();
    parse_form(&form)
}

/// The fields of a token POST form (oauth.md).
fn parse_form(form: &[u8]) -> Result<TokenRequest, ApiError> {
    let mut tr = TokenRequest::default();
    let (mut grant, mut username, mut password, mut refresh) = (None, None, None, None);
    for (k, v) in form_urlencoded::parse(form) {
        match &*k {
            "grant_type" => grant = Some(v.into_owned()),
            "service" => tr.service = Some(v.into_owned()),
            "scope" => tr.scopes.extend(parse_scopes(&v)?),
            "access_type" => tr.offline = v == "offline",
            "username" => username = Some(v.into_owned()),
            "password" => password = Some(Secret::new(v.into_owned())),
            "refresh_token" => refresh = Some(Secret::new(v.into_owned())),
            _ => {}
        }
    }
    tr.credentials = match (grant.as_deref(), username, password, refresh) {
        // The same check as a Basic header's account (`parse_basic`): a
        // name no backend could hold is never counted, cached or logged.
        (Some("password"), Some(account), Some(_), _)
            if !crate::authn::acceptable_account(&account) =>
        {
            return Err(ApiError::detail(
                ErrorCode::BadRequest,
                "malformed username",
            ));
        }
        (Some("password"), Some(account), Some(password), _) => {
            Credentials::Password { account, password }
        }
        (Some("refresh_token"), _, _, Some(token)) => Credentials::Refresh(token),
        (Some("password" | "refresh_token"), ..) => {
            return Err(ApiError::detail(
                ErrorCode::BadRequest,
                "grant_type password needs username and password; refresh_token needs refresh_token",
            ));
        }
        _ => {
            return Err(ApiError::detail(
                ErrorCode::BadRequest,
                "grant_type must be password or refresh_token",
            ));
        }
    };
    Ok(tr)
}

fn parse_scopes(v: &str) -> Result<Vec<Scope>, ApiError> {
    Scope::parse_list(v).map_err(|e| ApiError::detail(ErrorCode::BadRequest, e.to_string()))
}

/// Parses `Authorization: Basic base64(account:password)`.
pub(crate) fn parse_basic(value: &HeaderValue) -> Result<(String, Secret), ApiError> {
    let bad = || {
        ApiError::detail(
            ErrorCode::BadRequest,
            "malformed Basic authorization header",
        )
    };
    let value = value.to_str().map_err(|_| bad())?;
    let (scheme, encoded) = value.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 4096 {
        return Err(bad());
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (account, password) = decoded.split_once(':').ok_or_else(bad)?;
    if !crate::authn::acceptable_account(account) {
        return Err(bad());
    }
    Ok((account.to_owned(), Secret::new(password)))
}

fn bad_credentials() -> ApiError {
    ApiError::detail(
        ErrorCode::Unauthorized,
        "invalid username, password or refresh token",
    )
}

fn unavailable(e: AuthnError) -> ApiError {
    tracing::error!(error = %e, "authentication backend could not decide");
    ApiError::detail(
        ErrorCode::Unavailable,
        "authentication backend unavailable, try again later",
    )
}

fn store_unavailable(e: AuthnError) -> ApiError {
    tracing::error!(error = %e, "the credential store could not answer");
    ApiError::detail(
        ErrorCode::Unavailable,
        "the credential store is unavailable, try again later (passwords still work)",
    )
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "token issuing failed");
    ApiError::new(ErrorCode::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(raw: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(raw))).unwrap()
    }

    #[test]
    fn parses_basic_headers() {
        let (a, p) = parse_basic(&basic("admin:bad:min")).unwrap();
        assert_eq!((a.as_str(), p.expose()), ("admin", "bad:min"));
        let (_, p) = parse_basic(&basic("admin:")).unwrap();
        assert!(p.is_empty());
        let bad = [
            HeaderValue::from_static("Bearer abc"),
            HeaderValue::from_static("Basic"),
            HeaderValue::from_static("Basic !!!"),
            basic("nocolon"),
            basic(":password"),
            basic("a\u{1}b:p"),
        ];
        for v in bad {
            assert!(parse_basic(&v).is_err(), "{v:?}");
        }
        let lower = HeaderValue::from_str(&format!("basic {}", STANDARD.encode("u:p"))).unwrap();
        assert!(parse_basic(&lower).is_ok());
    }

    /// Issue 17, finding 8: a form's `username` gets the Basic path's
    /// checks (length, control characters), so it is never counted by the
    /// throttle, cached or written to the audit log.
    #[test]
    fn form_usernames_get_the_basic_checks() {
        let form = |user: &str| {
            let mut f = form_urlencoded::Serializer::new(String::new());
            f.append_pair("grant_type", "password")
                .append_pair("service", "s")
                .append_pair("username", user)
                .append_pair("password", "p");
            f.finish()
        };
        let long = "a".repeat(63 * 1024);
        for bad in [
            "",
            "a\nb",
            "a\0b",
            "a\u{7f}",
            long.as_str(),
            &"a".repeat(257),
        ] {
            assert!(parse_form(form(bad).as_bytes()).is_err(), "{bad:?}");
            // The Basic path refuses the same names.
            assert!(parse_basic(&basic(&format!("{bad}:p"))).is_err(), "{bad:?}");
        }
        for good in ["mozart", "jürgen.müller@example.com", &"a".repeat(256)] {
            let tr = parse_form(form(good).as_bytes()).unwrap();
            assert!(
                matches!(&tr.credentials, Credentials::Password { account, .. } if account == good),
                "{good:?}"
            );
        }
    }

    #[test]
    fn parses_get_requests() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, basic("u:p"));
        let q = "service=Docker%20registry&scope=repository:a:pull&scope=repository:b:push%20registry:catalog:*&offline_token=true&account=u";
        let tr = parse_get(q, &h).unwrap();
        assert_eq!(tr.service.as_deref(), Some("Docker registry"));
        assert_eq!(tr.scopes.len(), 3);
        assert!(tr.offline);
        assert!(matches!(tr.credentials, Credentials::Password { .. }));
        assert!(parse_get("scope=nonsense", &HeaderMap::new()).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            /// Any header value: no panic; what is accepted names a plain
            /// account (no `:`, no control character, at most 256 bytes).
            #[test]
            fn any_header_is_safe(raw in prop::collection::vec(any::<u8>(), 0..300), prefix in prop::sample::select(vec!["Basic ", "basic ", "BASIC  ", "Bearer ", ""])) {
                let mut bytes = prefix.as_bytes().to_vec();
                bytes.extend(raw);
                let Ok(value) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
                if let Ok((account, _)) = parse_basic(&value) {
                    prop_assert!(!account.is_empty() && account.len() <= 256);
                    prop_assert!(!account.contains(':') && !account.chars().any(char::is_control));
                }
            }

            /// Encoded credentials come back exactly: the account ends at the
            /// first colon, the password keeps every later one.
            #[test]
            fn credentials_round_trip(account in "[^:\\p{Cc}]{1,64}", password in "\\PC{0,64}") {
                let (a, p) = parse_basic(&basic(&format!("{account}:{password}"))).unwrap();
                prop_assert_eq!(a, account);
                prop_assert_eq!(p.expose(), password.as_str());
            }

            /// Base64 of anything: accepted only when it holds `account:...`
            /// with a plain account, and then split at the first colon.
            #[test]
            fn decoded_payloads_split_at_the_first_colon(payload in prop::collection::vec(any::<u8>(), 0..100)) {
                let value = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(&payload))).unwrap();
                match (parse_basic(&value), String::from_utf8(payload)) {
                    (Ok((a, p)), Ok(text)) => {
                        prop_assert_eq!(format!("{}:{}", a, p.expose()), text);
                    }
                    (Ok(_), Err(_)) => prop_assert!(false, "invalid UTF-8 accepted"),
                    (Err(_), _) => {}
                }
            }
        }
    }
}
