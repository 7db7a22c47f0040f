//! `GET /v2/_catalog`, filtered: the caller sees only the repositories the
//! ACL lets them pull. Token servers cannot do this (they grant
//! `registry:catalog:*` or not); a proxy in the data path can.
//!
//! Pagination keeps working: we page through the upstream until we have `n`
//! visible names (or it runs out), and hand back a `Link` whose `last` is the
//! last name we returned, which the upstream's lexical paging accepts.

use http::{HeaderValue, Response, StatusCode, header};
use serde::Deserialize;

use super::body::{self, Body};
use super::errors::{ApiError, ErrorCode, json_response};
use super::{Conn, registry::upstream_error};
use crate::app::App;
use crate::authz::Subject;
use crate::permit::Permit;
use crate::scope::{Action, Scope};
use crate::upstream::Origin;

/// distribution's default page size.
const DEFAULT_PAGE: usize = 100;
/// distribution refuses `n` above this (its `catalog.maxentries`, 1000 by
/// default): larger client pages are clamped to it (a client may always
/// get fewer names than asked, and follows `Link`).
const MAX_PAGE: usize = 1000;
/// Upstream pages fetched for one client page at most: a user who may see
/// few of many repositories gets short pages rather than a slow answer.
const MAX_UPSTREAM_PAGES: usize = 50;
/// Upstream catalog pages larger than this are refused.
const MAX_UPSTREAM_BODY: usize = 8 * 1024 * 1024;

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    repositories: Vec<String>,
}

pub async fn serve(
    app: &App,
    permit: &Permit,
    query: Option<&str>,
    origin: &Origin,
    conn: Conn,
) -> Result<Response<Body>, ApiError> {
    let (want, mut cursor) = params(query);
    let claims = permit.claims();
    let subject = Subject {
        account: &claims.sub,
        labels: &claims.labels,
        ip: Some(conn.peer.ip()),
        service: &claims.aud,
    };
    let mut visible = Vec::new();
    let mut more = false;
    for _ in 0..MAX_UPSTREAM_PAGES {
        let (names, upstream_more) =
            fetch(app, want.max(DEFAULT_PAGE), cursor.as_deref(), origin).await?;
        let mut consumed_all = true;
        for name in &names {
            if visible.len() == want {
                consumed_all = false;
                break;
            }
            cursor = Some(name.clone());
            if app
                .acl
                .allows(&subject, &Scope::repository(name, [Action::Pull]))
            {
                visible.push(name.clone());
            }
        }
        more = upstream_more || !consumed_all;
        if visible.len() == want || !upstream_more || names.is_empty() {
            break;
        }
    }
    let body = serde_json::json!({ "repositories": visible }).to_string();
    let mut resp = json_response(StatusCode::OK, body);
    if more && let Some(last) = &cursor {
        let link = format!("</v2/_catalog?last={last}&n={want}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(resp)
}

/// `n` and `last` from the client's query (already validated by `access`).
fn params(query: Option<&str>) -> (usize, Option<String>) {
    let mut n = DEFAULT_PAGE;
    let mut last = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "n" => n = v.parse().unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE),
            "last" => last = Some(v.into_owned()),
            _ => {}
        }
    }
    (n, last)
}

/// One upstream page and whether the upstream says there is more.
async fn fetch(
    app: &App,
    n: usize,
    last: Option<&str>,
    origin: &Origin,
) -> Result<(Vec<String>, bool), ApiError> {
    let mut pq = format!("/v2/_catalog?n={n}");
    if let Some(last) = last {
        pq.push_str("&last=");
        pq.extend(form_urlencoded::byte_serialize(last.as_bytes()));
    }
    let resp = app
        .upstream
        .get(&pq, origin)
        .await
        .map_err(upstream_error)?;
    if !resp.status().is_success() {
        tracing::error!(status = %resp.status(), "upstream catalog refused");
        return Err(ApiError::new(ErrorCode::UpstreamRefused));
    }
    let more = resp.headers().contains_key(header::LINK);
    let bytes = body::collect_limited(resp.into_body(), MAX_UPSTREAM_BODY)
        .await
        .map_err(|_| ApiError::new(ErrorCode::UpstreamError))?;
    let page: Page = serde_json::from_slice(&bytes).map_err(|e| {
        tracing::error!(error = %e, "upstream catalog is not JSON");
        ApiError::new(ErrorCode::UpstreamRefused)
    })?;
    Ok((page.repositories, more))
}
