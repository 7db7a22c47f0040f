//! `GET /v2/_catalog`, filtered: the caller sees only the repositories the
//! ACL lets them pull. Token servers cannot do this (they grant
//! `registry:catalog:*` or not); a proxy in the data path can.
//!
//! The names come from the shared, briefly cached listing of the upstream
//! ([`crate::listing`]): a request costs no upstream request of its own
//! (at most one listing read every few seconds for all callers), and an
//! in-memory pass over at most 100,000 names.
//!
//! Pagination as distribution does it (`n`, `last`, `Link`), with one
//! difference that matters: the `Link` cursor is always the last name
//! *returned* on the page, a name the caller may see. It used to be the
//! last name the gate looked at, which could be a hidden one; and since
//! `last` is the client's to choose, that let a caller bisect for hidden
//! names. The answer to any `last` depends on the visible names alone.

use http::{HeaderValue, Response, StatusCode, header};

use super::Conn;
use super::body::Body;
use super::errors::{ApiError, ErrorCode, json_response};
use crate::app::App;
use crate::authz::Subject;
use crate::listing::ListingError;
use crate::permit::Permit;
use crate::scope::{Action, Scope};
use crate::upstream::Origin;

/// distribution's default page size.
const DEFAULT_PAGE: usize = 100;
/// distribution refuses `n` above this (its `catalog.maxentries`, 1000 by
/// default): larger client pages are clamped to it (a client may always
/// get fewer names than asked, and follows `Link`).
const MAX_PAGE: usize = 1000;

pub async fn serve(
    app: &App,
    permit: &Permit,
    query: Option<&str>,
    origin: &Origin,
    conn: Conn,
) -> Result<Response<Body>, ApiError> {
    let (want, last) = params(query);
    let claims = permit.claims();
    let subject = Subject {
        account: &claims.sub,
        labels: &claims.labels,
        ip: Some(conn.peer.ip()),
        service: &claims.aud,
    };
    let listing = app
        .listing
        .get(&app.upstream, origin)
        .await
        .map_err(listing_error)?;
    let (visible, more) = page(listing.after(last.as_deref()), want, |name| {
        app.acl
            .allows(&subject, &Scope::repository(name, [Action::Pull]))
    });
    let mut resp = json_response(
        StatusCode::OK,
        serde_json::json!({ "repositories": visible }).to_string(),
    );
    if more && let Some(last) = visible.last() {
        let link = format!("</v2/_catalog?last={last}&n={want}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(resp)
}

/// Up to `want` of `names` that are `visible`, and whether another
/// visible one follows them.
fn page(names: &[String], want: usize, visible: impl Fn(&str) -> bool) -> (Vec<&str>, bool) {
    let mut out = Vec::new();
    for name in names.iter().filter(|n| visible(n)) {
        if out.len() == want {
            return (out, true);
        }
        out.push(name.as_str());
    }
    (out, false)
}

fn listing_error(e: ListingError) -> ApiError {
    ApiError::new(match e {
        ListingError::Timeout => ErrorCode::UpstreamTimeout,
        ListingError::Unreachable(_) => ErrorCode::UpstreamError,
        ListingError::Refused(_) => ErrorCode::UpstreamRefused,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages hold only visible names, and "more" says only whether another
    /// visible name follows, however many hidden ones lie between.
    #[test]
    fn pages_hold_and_announce_only_visible_names() {
        let names: Vec<String> = ["a/1", "h/1", "h/2", "a/2", "h/3", "a/3"]
            .map(String::from)
            .to_vec();
        let visible = |n: &str| n.starts_with("a/");
        let cases: [(usize, &[&str], bool); 4] = [
            (1, &["a/1"], true),
            (2, &["a/1", "a/2"], true),
            (3, &["a/1", "a/2", "a/3"], false),
            (10, &["a/1", "a/2", "a/3"], false),
        ];
        for (want, names_out, more) in cases {
            assert_eq!(page(&names, want, visible), (names_out.to_vec(), more));
        }
        assert_eq!(page(&names, 5, |_| false), (vec![], false));
    }

    #[test]
    fn page_sizes_are_clamped_to_the_registry_limit() {
        for (query, n) in [
            (None, 100),
            (Some("n=0"), 1),
            (Some("n=1000"), 1000),
            (Some("n=1001"), 1000),
            (Some("n=10000"), 1000),
            (Some("n=x"), 100),
        ] {
            assert_eq!(params(query).0, n, "{query:?}");
        }
    }
}
