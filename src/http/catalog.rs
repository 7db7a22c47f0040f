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
/// distribution's largest page (`catalog.maxentries`, default 1000): a
/// larger `n` is 400 `PAGINATION_NUMBER_INVALID` there and here (never a
/// 502), and the gate never asks the upstream for more.
pub const MAX_PAGE: usize = 1000;

pub async fn serve(
    app: &App,
    permit: &Permit,
    query: Option<&str>,
    origin: &Origin,
    conn: Conn,
) -> Result<Response<Body>, ApiError> {
    let (want, last) = params(query)?;
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
    let listing = app
        .listing
        .get(&app.upstream, origin)
        .await
        .map_err(listing_error)?;
    let (visible, more) = page(listing.after(last.as_deref()), want, |name| {
        let scope = Scope::repository(name, [Action::Pull]);
        // A robot's or personal token's scopes bound the listing too.
        app.acl.allows(&subject, &scope)
            && claims.restrict.as_ref().is_none_or(|r| r.allows(&scope))
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
