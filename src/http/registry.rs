//! Registry requests (`/v2/...`):
//! classify -> verify the Bearer token -> check -> Permit -> tag rules -> forward.
//! Anything that does not classify is refused here and never forwarded; a
//! request classified but not forwardable ([`ClassifyError::AfterPermit`])
//! is answered here, after the permit, with what the registry would say.

use http::{HeaderMap, Method, Request, Response, header};
use hyper::body::Incoming;

use super::body::Body;
use super::challenge::{Challenge, ChallengeError};
use super::errors::{ApiError, ErrorCode};
use super::tagrules::Cleared;
use super::{Conn, Kind, Routed, catalog, external_base};
use crate::access::{self, Answer, ClassifyError, Endpoint};
use crate::app::App;
use crate::audit::Event;
use crate::permit::Permit;
use crate::scope::Scope;
use crate::upstream::{Origin, UpstreamError};

pub async fn handle(app: &App, req: Request<Incoming>, conn: Conn) -> Result<Routed, ApiError> {
    let base = external_base(app, &req, conn)?;
    let (required, answer) =
        match access::classify(req.method(), req.uri().path(), req.uri().query()) {
            Ok(required) => (required, None),
            Err(ClassifyError::AfterPermit { access, answer }) => (*access, Some(answer)),
            Err(e) => return Err(refusal(e)),
        };
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
    let denied = |account: &str, repository: &Option<String>, missing: &[Scope], reason| {
        app.audit.record(Event::RequestDenied {
            account: account.to_owned(),
            client: conn.peer.ip(),
            method: req.method().to_string(),
            repository: repository.clone(),
            missing: missing.iter().map(Scope::to_string).collect(),
            reason,
        });
    };
    let claims = app.verifier.verify_access(token).map_err(|e| {
        tracing::debug!(reason = %e, "token refused");
        denied("", &required.name, &required.scopes, "invalid_token");
        challenge(&required.scopes, Some(ChallengeError::InvalidToken))
    })?;
    let account = Some(claims.sub.clone()).filter(|a| !a.is_empty());
    let permit = Permit::check(claims, required).map_err(|insufficient| {
        let who = account.as_deref().unwrap_or("");
        let required = &insufficient.required;
        denied(
            who,
            &required.name,
            &insufficient.missing,
            "insufficient_scope",
        );
        challenge(&required.scopes, Some(ChallengeError::InsufficientScope)).for_account(who)
    })?;
    if let Some(answer) = answer {
        // Never forwarded: the registry's router would answer it without
        // looking anything up, and so does the gate.
        let code = match answer {
            Answer::ManifestUnknown => ErrorCode::ManifestUnknown,
            Answer::BlobUnknown => ErrorCode::BlobUnknown,
            Answer::DigestInvalid => ErrorCode::DigestInvalid,
        };
        return Err(ApiError::detail(code, answer.to_string()).for_account(permit.account()));
    }
    let origin = Origin {
        client_ip: conn.peer.ip(),
        hop: conn.hop,
        external_base: base,
    };
    if permit.required().endpoint == Endpoint::Catalog {
        let resp = Box::pin(catalog::serve(
            app,
            &permit,
            req.uri().query(),
            &origin,
            conn,
        ))
        .await?;
        return Ok((with_kind(resp, Endpoint::Catalog), account));
    }
    let query = permit
        .required()
        .forward_query
        .as_deref()
        .or(req.uri().query());
    let write = write_action(&permit, req.method(), query);
    // Only writes are audited: no reference to copy out for reads.
    let reference = write.and_then(|_| reference(req.uri().path()));
    // Tag rules: the ACL with the tag known, and immutable tags. What they
    // hold (a lock) is kept until the upstream has answered.
    let cleared = super::tagrules::enforce(app, &permit, req, conn, &origin).await?;
    let started = std::time::Instant::now();
    let result = match cleared {
        Cleared::Stream(req, hold) => {
            let result = app.upstream.forward(&permit, req, &origin).await;
            drop(hold);
            result
        }
        Cleared::Buffered(parts, manifest, hold) => {
            let result = app
                .upstream
                .forward_buffered(&permit, parts, manifest, &origin)
                .await;
            drop(hold);
            result
        }
    };
    match &result {
        Ok(_) => app.metrics.upstream_response(started.elapsed()),
        Err(UpstreamError::Timeout) => app.metrics.upstream_error("timeout"),
        Err(UpstreamError::Unreachable(_)) => app.metrics.upstream_error("unreachable"),
        Err(UpstreamError::Busy) => app.metrics.upstream_error("busy"),
        Err(_) => {}
    }
    if let Some(action) = write {
        let status = result.as_ref().map_or(502, |r| r.status().as_u16());
        if (200..300).contains(&status) {
            // The repository list may have changed: read it afresh.
            app.listing.invalidate();
        }
        app.audit.record(Event::UpstreamWrite {
            account: permit.account().to_owned(),
            client: conn.peer.ip(),
            action,
            repository: permit.required().name.clone().unwrap_or_default(),
            reference,
            digest: result
                .as_ref()
                .ok()
                .and_then(|r| r.headers().get("docker-content-digest"))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            status,
            outcome: if (200..300).contains(&status) {
                "ok"
            } else {
                "failed"
            },
        });
    }
    let resp = result.map_err(upstream_error)?;
    Ok((with_kind(resp, permit.required().endpoint), account))
}

fn with_kind(mut resp: Response<Body>, endpoint: Endpoint) -> Response<Body> {
    resp.extensions_mut().insert(Kind(endpoint.as_str()));
    resp
}

/// The audited kind of a request that changes the upstream, if it is one.
/// Chunk uploads (PATCH) and upload starts are steps, not outcomes: the
/// closing PUT is what the trail records.
fn write_action(permit: &Permit, method: &Method, query: Option<&str>) -> Option<&'static str> {
    let has =
        |key: &str| form_urlencoded::parse(query.unwrap_or("").as_bytes()).any(|(k, _)| k == key);
    match (permit.required().endpoint, method.as_str()) {
        (Endpoint::Manifest, "PUT") => Some("push_manifest"),
        (Endpoint::Manifest, "DELETE") => Some("delete_manifest"),
        (Endpoint::Blob, "DELETE") => Some("delete_blob"),
        (Endpoint::Upload, "PUT") => Some("push_blob"),
        (Endpoint::UploadStart, "POST") if has("mount") => Some("mount_blob"),
        (Endpoint::UploadStart, "POST") if has("digest") => Some("push_blob"),
        _ => None,
    }
}

/// The tag or digest after `/manifests/` or `/blobs/` (already validated).
fn reference(path: &str) -> Option<String> {
    let mut segments = path.rsplit('/');
    let last = segments.next()?;
    matches!(segments.next()?, "manifests" | "blobs").then(|| last.to_owned())
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

/// Maps a classification failure to the registry error the client sees:
/// the status distribution gives for the same request (a path its router
/// does not match is 404, an invalid repository name included).
fn refusal(e: ClassifyError) -> ApiError {
    let code = match e {
        ClassifyError::UnknownRoute => ErrorCode::NotFound,
        ClassifyError::MethodNotAllowed => ErrorCode::Unsupported,
        ClassifyError::NameInvalid => ErrorCode::NameUnknown,
        ClassifyError::DigestInvalid => ErrorCode::DigestInvalid,
        ClassifyError::QueryInvalid(_) => ErrorCode::BadRequest,
        // Answered after the permit by `handle`, never here; were it to
        // arrive, a refusal is still the safe answer.
        ClassifyError::AfterPermit { .. } => ErrorCode::BadRequest,
    };
    ApiError::detail(code, e.to_string())
}

pub fn upstream_error(e: UpstreamError) -> ApiError {
    if let UpstreamError::ManifestTooLarge(max) = e {
        tracing::warn!(max, "manifest PUT refused: too large");
        return ApiError::detail(
            ErrorCode::ManifestTooLarge,
            format!("manifests are limited to {max} bytes"),
        );
    }
    tracing::error!(error = %e, "upstream request failed");
    match e {
        UpstreamError::Timeout => ApiError::new(ErrorCode::UpstreamTimeout),
        UpstreamError::Busy => ApiError::detail(
            ErrorCode::Unavailable,
            "all upstream connections are busy, try again later",
        ),
        _ => ApiError::new(ErrorCode::UpstreamError),
    }
}
