//! Registry requests (`/v2/...`):
//! classify -> verify the Bearer token -> check -> Permit -> forward.
//! Anything that does not classify is refused here and never forwarded.

use http::{HeaderMap, Request, header};
use hyper::body::Incoming;

use super::challenge::{Challenge, ChallengeError};
use super::errors::{ApiError, ErrorCode};
use super::{Conn, Routed, catalog, external_base};
use crate::access::{self, ClassifyError, Endpoint};
use crate::app::App;
use crate::permit::Permit;
use crate::scope::Scope;
use crate::upstream::{Origin, UpstreamError};

pub async fn handle(app: &App, req: Request<Incoming>, conn: Conn) -> Result<Routed, ApiError> {
    let base = external_base(app, &req, conn)?;
    let required =
        access::classify(req.method(), req.uri().path(), req.uri().query()).map_err(refusal)?;
    // distribution reads `mount`/`from` with Go's FormValue, which also reads
    // form bodies: a form body could carry parameters `classify` never saw.
    // No registry client sends one, so refuse them.
    if req
        .headers()
        .get_all(header::CONTENT_TYPE)
        .iter()
        .any(|v| access::is_form_content_type(v.as_bytes()))
    {
        return Err(ApiError::detail(
            ErrorCode::BadRequest,
            "form bodies are not accepted on /v2/",
        ));
    }
    let challenge = |scopes: &[Scope], error| {
        ApiError::challenge(Challenge {
            realm: format!("{base}/auth"),
            service: app.config.token.service.clone(),
            scopes: scopes.to_vec(),
            error,
        })
    };
    let Some(token) = bearer(req.headers()) else {
        return Err(challenge(&required.scopes, None));
    };
    let claims = app.verifier.verify_access(token).map_err(|e| {
        tracing::debug!(reason = %e, "token refused");
        challenge(&required.scopes, Some(ChallengeError::InvalidToken))
    })?;
    let account = Some(claims.sub.clone()).filter(|a| !a.is_empty());
    let permit = Permit::check(claims, required.clone()).map_err(|insufficient| {
        tracing::info!(
            target: "audit",
            event = "request_denied",
            account = account.as_deref().unwrap_or(""),
            missing = %insufficient.missing.iter().map(Scope::to_string).collect::<Vec<_>>().join(" "),
        );
        challenge(&required.scopes, Some(ChallengeError::InsufficientScope))
    })?;
    let origin = Origin {
        client_ip: conn.peer.ip(),
        external_base: base,
    };
    let resp = if permit.required().endpoint == Endpoint::Catalog {
        catalog::serve(app, &permit, req.uri().query(), &origin, conn).await?
    } else {
        app.upstream
            .forward(&permit, req, &origin)
            .await
            .map_err(upstream_error)?
    };
    Ok((resp, account))
}

/// The token of `Authorization: Bearer <token>`, if that is what was sent.
/// Basic credentials on `/v2/` are answered with a challenge, as distribution does.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Maps a classification failure to the registry error the client sees.
fn refusal(e: ClassifyError) -> ApiError {
    let code = match e {
        ClassifyError::UnknownRoute => ErrorCode::NotFound,
        ClassifyError::MethodNotAllowed => ErrorCode::Unsupported,
        ClassifyError::NameInvalid => ErrorCode::NameInvalid,
        ClassifyError::ReferenceInvalid => ErrorCode::TagInvalid,
        ClassifyError::DigestInvalid => ErrorCode::DigestInvalid,
        _ => ErrorCode::BadRequest,
    };
    ApiError::detail(code, e.to_string())
}

pub fn upstream_error(e: UpstreamError) -> ApiError {
    tracing::error!(error = %e, "upstream request failed");
    match e {
        UpstreamError::Timeout => ApiError::new(ErrorCode::UpstreamTimeout),
        _ => ApiError::new(ErrorCode::UpstreamError),
    }
}
