//! Tag rules at the request, after the token check and before forwarding:
//! the ACL decided again with the tag the request names (`tag` conditions),
//! and immutable release tags. The rules are `authz::tags`; the upstream
//! lookups and locks are `crate::immutable`. A config with neither `tag`
//! rules nor `[[immutable]]` passes every request straight through.

use bytes::Bytes;
use http::{Method, Request};
use hyper::body::Incoming;

use super::Conn;
use super::errors::{ApiError, ErrorCode};
use crate::access::Endpoint;
use crate::app::App;
use crate::audit::Event;
use crate::authz::Subject;
use crate::authz::tags::{Reference, needs_tag_decision};
use crate::immutable::{self, Hold, Refusal, Unverified};
use crate::permit::Permit;
use crate::scope::{REPOSITORY, Scope};
use crate::upstream::Origin;

/// A request the tag rules let through, as it is to be forwarded.
#[derive(Debug)]
pub enum Cleared {
    /// Streamed as it came; the hold (if any) is kept until the upstream answered.
    Stream(Request<Incoming>, Option<Hold>),
    /// A manifest PUT to an immutable tag: its body, read to learn its digest.
    Buffered(http::request::Parts, Bytes, Hold),
}

/// Applies the tag rules to an authorized request. See the module doc.
pub async fn enforce(
    app: &App,
    permit: &Permit,
    req: Request<Incoming>,
    conn: Conn,
    origin: &Origin,
) -> Result<Cleared, ApiError> {
    // The common case, checked first: nothing here to decide.
    if !app.acl.has_tag_rules() && app.config.immutable.is_empty() {
        return Ok(Cleared::Stream(req, None));
    }
    let required = permit.required();
    let uri = req.uri().clone();
    let (Some(name), Some(raw)) = (
        required.name.as_deref(),
        reference(required.endpoint, uri.path()),
    ) else {
        return Ok(Cleared::Stream(req, None));
    };
    let reference = Reference::parse(raw);
    let account = permit.account();
    let method = req.method().clone();
    // The ACL again, now that the tag is known (only when it has tag rules:
    // configs without them decide exactly as before, from the token alone).
    if app.acl.has_tag_rules()
        && let Some(tag) = needs_tag_decision(required.endpoint, &method, Some(reference))
    {
        let claims = permit.claims();
        let subject = Subject {
            account,
            labels: &claims.labels,
            ip: Some(conn.peer.ip()),
            service: &claims.aud,
        };
        for need in required
            .scopes
            .iter()
            .filter(|s| s.resource_type == REPOSITORY && s.name == name)
        {
            let granted = app.acl.grant_at(&subject, need, tag);
            let missing: Vec<_> = need.actions.difference(&granted).copied().collect();
            if missing.is_empty() {
                continue;
            }
            let missing = Scope::repository(name, missing);
            app.audit.record(Event::RequestDenied {
                account: account.to_owned(),
                client: conn.peer.ip(),
                method: method.to_string(),
                repository: Some(name.to_owned()),
                missing: vec![missing.to_string()],
                reason: "tag_rule",
            });
            app.metrics.tag_refused("acl");
            let what = match tag {
                Some(t) => format!("tag {t}"),
                None => "a manifest or blob by digest".to_owned(),
            };
            let actions: Vec<&str> = missing.actions.iter().map(|a| a.as_str()).collect();
            return Err(ApiError::explained(
                ErrorCode::Denied,
                format!(
                    "the ACL does not allow {} of {what} in {name}",
                    actions.join(",")
                ),
            )
            .for_account(account));
        }
    }

    let rules = &app.config.immutable;
    if rules.is_empty() || required.endpoint != Endpoint::Manifest {
        return Ok(Cleared::Stream(req, None));
    }
    let refused = |refusal: Refusal, digest: Option<String>| {
        let existing = match &refusal {
            Refusal::Overwrite { existing, .. } => Some(existing.clone()),
            Refusal::Delete { .. } => None,
        };
        app.audit.record(Event::TagImmutableRefused {
            account: account.to_owned(),
            client: conn.peer.ip(),
            action: refusal.kind(),
            repository: name.to_owned(),
            tag: refusal.tag().to_owned(),
            digest,
            existing,
            rule: refusal.rule().to_string(),
            via: "registry",
        });
        app.metrics.tag_refused(refusal.kind());
        tracing::info!(account, repository = name, tag = refusal.tag(), rule = %refusal.rule(), kind = refusal.kind(), "immutable tag: refused");
        ApiError::explained(ErrorCode::Denied, refusal.message(name)).for_account(account)
    };
    match (&method, reference) {
        (&Method::PUT, Reference::Tag(tag)) => {
            let Some(rule) = rules.protecting(account, name, tag) else {
                return Ok(Cleared::Stream(req, None));
            };
            let (parts, incoming) = req.into_parts();
            let body = app
                .upstream
                .read_manifest(&parts.headers, incoming)
                .await
                .map_err(super::registry::upstream_error)?;
            let pushed = immutable::sha256_digest(&body);
            match immutable::check_push(&app.upstream, origin, rule, name, tag, &pushed).await {
                Ok(Ok(hold)) => Ok(Cleared::Buffered(parts, body, hold)),
                Ok(Err(refusal)) => Err(refused(refusal, Some(pushed))),
                Err(e) => Err(unverified(e)),
            }
        }
        (&Method::DELETE, Reference::Tag(tag)) => match rules.protecting(account, name, tag) {
            Some(rule) => Err(refused(
                Refusal::Delete {
                    rule,
                    tag: tag.to_owned(),
                    digest: None,
                },
                None,
            )),
            None => Ok(Cleared::Stream(req, None)),
        },
        (&Method::DELETE, Reference::Digest(digest)) if rules.covers_repository(account, name) => {
            match immutable::check_delete_digest(
                &app.upstream,
                origin,
                rules,
                account,
                name,
                digest,
            )
            .await
            {
                Ok(Ok(hold)) => Ok(Cleared::Stream(req, Some(hold))),
                Ok(Err(refusal)) => Err(refused(refusal, Some(digest.to_owned()))),
                Err(e) => Err(unverified(e)),
            }
        }
        _ => Ok(Cleared::Stream(req, None)),
    }
}

/// The upstream could not say what a tag points to: the write is refused.
fn unverified(e: Unverified) -> ApiError {
    tracing::error!(error = %e, "immutable tag check failed; write refused");
    match e {
        Unverified::Upstream(e) => super::registry::upstream_error(e),
        _ => ApiError::detail(
            ErrorCode::UpstreamError,
            "could not check the immutable tags of this repository",
        ),
    }
}

/// The tag or digest of a manifest request, or the digest of a blob request
/// (already validated by the classifier).
fn reference(endpoint: Endpoint, path: &str) -> Option<&str> {
    match endpoint {
        Endpoint::Manifest | Endpoint::Blob => path.rsplit_once('/').map(|(_, last)| last),
        _ => None,
    }
}
