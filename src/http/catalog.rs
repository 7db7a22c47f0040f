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
/// distribution's largest page (`catalog.maxentries`, default 1000): a
/// larger `n` is 400 `PAGINATION_NUMBER_INVALID` there and here, and the
/// gate never asks the upstream for more.
pub const MAX_PAGE: usize = 1000;
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
    let (want, mut cursor) = params(query)?;
    if want == 0 {
        // distribution answers `n=0` with an empty page.
        let body = serde_json::json!({ "repositories": [] }).to_string();
        return Ok(json_response(StatusCode::OK, body));
    }
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
        let (names, upstream_more) = fetch(
            app,
            want.clamp(DEFAULT_PAGE, MAX_PAGE),
            cursor.as_deref(),
            origin,
        )
        .await?;
        let mut consumed_all = true;
        for name in &names {
            if visible.len() == want {
                consumed_all = false;
                break;
            }
            cursor = Some(name.clone());
            let scope = Scope::repository(name, [Action::Pull]);
            // A robot's or personal token's scopes bound the listing too.
            if app.acl.allows(&subject, &scope)
                && claims.restrict.as_ref().is_none_or(|r| r.allows(&scope))
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

/// `n` and `last` from the client's query, read as distribution reads them
/// (Go's `Query().Get`: the first value counts): an `n` that is not a
/// non-negative integer means the default page; above [`MAX_PAGE`] it is
/// refused.
fn params(query: Option<&str>) -> Result<(usize, Option<String>), ApiError> {
    let mut n = None;
    let mut last = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "n" if n.is_none() => n = Some(v.into_owned()),
            "last" if last.is_none() => last = Some(v.into_owned()),
            _ => {}
        }
    }
    let want = match n.as_deref().map(str::parse::<i64>) {
        Some(Ok(n)) if n > MAX_PAGE as i64 => {
            return Err(ApiError::detail(
                ErrorCode::PaginationNumberInvalid,
                format!("n may be at most {MAX_PAGE}"),
            ));
        }
        Some(Ok(n)) if n >= 0 => n as usize,
        _ => DEFAULT_PAGE,
    };
    Ok((want, last.filter(|l| !l.is_empty())))
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
        tracing::error!(status = %resp.status(), "upstream catalog failed");
        return Err(ApiError::new(ErrorCode::UpstreamError));
    }
    let more = resp.headers().contains_key(header::LINK);
    let bytes = body::collect_limited(resp.into_body(), MAX_UPSTREAM_BODY)
        .await
        .map_err(|_| ApiError::new(ErrorCode::UpstreamError))?;
    let page: Page = serde_json::from_slice(&bytes).map_err(|e| {
        tracing::error!(error = %e, "upstream catalog is not JSON");
        ApiError::new(ErrorCode::UpstreamError)
    })?;
    Ok((page.repositories, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` and `last` as distribution reads them.
    #[test]
    fn page_parameters() {
        // (query, Some((n, last)) or None: refused)
        type Case<'a> = (&'a str, Option<(usize, Option<&'a str>)>);
        let cases: &[Case] = &[
            ("", Some((100, None))),
            ("n=5", Some((5, None))),
            ("n=0", Some((0, None))),
            ("n=1000", Some((1000, None))),
            ("n=1001", None),
            ("n=99999999999999999999", Some((100, None))),
            ("n=-1", Some((100, None))),
            ("n=abc", Some((100, None))),
            ("n=", Some((100, None))),
            ("n=2&n=5000", Some((2, None))),
            ("last=a/b&last=c", Some((100, Some("a/b")))),
            ("last=", Some((100, None))),
            ("last=A&n=3", Some((3, Some("A")))),
        ];
        for (query, want) in cases {
            let got = params(Some(query));
            match want {
                Some((n, last)) => {
                    let (gn, glast) = got.unwrap_or_else(|e| panic!("{query}: {e:?}"));
                    assert_eq!((gn, glast.as_deref()), (*n, *last), "{query}");
                }
                None => assert_eq!(
                    got.map_err(|e| e.code),
                    Err(ErrorCode::PaginationNumberInvalid),
                    "{query}"
                ),
            }
        }
    }
}
