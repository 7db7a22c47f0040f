//! The HTTP edge: the only place that matches paths and builds responses.
//!
//! `handle` routes: `/auth` (the token realm), `/v2/...` (the registry),
//! `/healthz`, `/readyz`, and the web UI (`/` redirects to `/ui/`, see
//! [`crate::ui`]). Domain modules (authn, authz, token, access) never import this.

pub mod api;
pub mod body;
pub mod catalog;
pub mod challenge;
pub mod errors;
pub mod realm;
pub mod registry;
pub mod tagrules;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;

use crate::app::App;
use crate::iptext::IpText;
use body::Body;
use errors::{ApiError, ErrorCode};

/// What the server knows about a connection.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// The client: the TCP peer (or the source a PROXY protocol header
    /// names), or, when that is one of `server.trusted_proxies`, the address
    /// its `X-Forwarded-For` names ([`client_address`]). `ip` rules, the
    /// login throttle, the audit trail and the logs all use this one.
    pub peer: SocketAddr,
    pub tls: bool,
    /// The address the request came from last: the TCP peer, or the
    /// source of the PROXY protocol header. The gate appends it to the
    /// `X-Forwarded-For` it sends upstream.
    pub hop: std::net::IpAddr,
}

impl Conn {
    pub fn new(peer: SocketAddr, tls: bool) -> Conn {
        Conn {
            peer,
            tls,
            hop: peer.ip(),
        }
    }
}

/// The client's address for a request that came from `peer`: `peer`
/// itself, unless it is a trusted proxy; then the rightmost address of
/// `X-Forwarded-For` that is not a trusted proxy (everything left of it
/// could have been written by the client). An entry that does not parse
/// ends the walk at the last trusted address seen: fail closed, never to
/// a client-chosen value. Untrusted peers' headers are ignored.
pub fn client_address(
    peer: std::net::IpAddr,
    headers: &http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |ip: std::net::IpAddr| {
        trusted
            .iter()
            .any(|net| crate::authz::net_contains(net, ip))
    };
    if trusted.is_empty() || !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    let values = headers.get_all("x-forwarded-for");
    let entries: Vec<&str> = values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for entry in entries.iter().rev() {
        match entry.trim().parse::<std::net::IpAddr>() {
            Ok(ip) if is_trusted(ip) => client = ip,
            Ok(ip) => return ip,
            Err(_) => return client,
        }
    }
    client
}

/// Routes one request. Never fails: every error becomes a registry JSON error.
pub async fn handle(app: Arc<App>, req: Request<Incoming>, mut conn: Conn) -> Response<Body> {
    let started = Instant::now();
    let trusted = &app.config.server.trusted_proxies;
    if !trusted.is_empty() {
        let client = client_address(conn.peer.ip(), req.headers(), trusted);
        conn.peer = SocketAddr::new(client, conn.peer.port());
    }
    let method = req.method().clone();
    // Kept for the access line: a clone shares the request's buffer.
    let uri = req.uri().clone();
    let path = uri.path();
    let (resp, account) = match route(&app, req, conn).await {
        Ok(ok) => ok,
        Err(e) => {
            let account = e.account.clone();
            (e.into_response(), account)
        }
    };
    record(&app, &method, path, &resp);
    tracing::info!(
        target: "access",
        client = %IpText::new(conn.peer.ip()),
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        account = account.as_deref().unwrap_or("-"),
        ms = started.elapsed().as_millis() as u64,
    );
    resp
}

type Routed = (Response<Body>, Option<String>);

/// What a response was for, for metrics: the registry handler names the
/// endpoint it classified; everything else is named from its path.
#[derive(Debug, Clone, Copy)]
pub struct Kind(pub &'static str);

/// The backend that vouched for a token request's caller (set by the realm).
#[derive(Debug, Clone, Copy)]
pub struct TokenBackend(pub &'static str);

fn record(app: &App, method: &Method, path: &str, resp: &Response<Body>) {
    let status = resp.status().as_u16();
    let kind = resp.extensions().get::<Kind>().map_or_else(
        || match path {
            "/auth" => "token",
            p if p.starts_with("/api/") => "api",
            "/healthz" | "/readyz" => "health",
            "/metrics" => "metrics",
            p if p == "/v2" || p.starts_with("/v2/") => "registry_refused",
            p if p == "/" || p.starts_with("/ui") => "ui",
            _ => "other",
        },
        |k| k.0,
    );
    app.metrics.request(kind, method, status);
    if path == "/auth" {
        let outcome = match status {
            200 => "issued",
            401 => "bad_credentials",
            429 => "throttled",
            503 => "unavailable",
            400..=499 => "bad_request",
            _ => "error",
        };
        let backend = resp
            .extensions()
            .get::<TokenBackend>()
            .map_or("none", |b| b.0);
        app.metrics.token_request(outcome, backend);
    }
}

/// Whether a request body is an HTML/OAuth2 form (the token POST, UI forms).
pub fn is_form(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// `GET /metrics`: the Prometheus text exposition.
pub fn metrics_response(app: &App) -> Response<Body> {
    let mut resp = Response::new(body::full(app.metrics.encode()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

async fn route(app: &App, req: Request<Incoming>, conn: Conn) -> Result<Routed, ApiError> {
    if head_too_large(&req, app.config.limits.max_header_bytes) {
        return Err(ApiError::new(ErrorCode::HeadTooLarge));
    }
    // An absolute-form target (`GET http://other/v2/...`) is a proxy request,
    // not one for us; HTTP/2 always carries the authority, so only HTTP/1.
    if req.version() < Version::HTTP_2 && req.uri().scheme().is_some() {
        return Err(ApiError::detail(
            ErrorCode::BadRequest,
            "absolute-form request targets are not served",
        ));
    }
    // RFC 9112 section 3.2: an HTTP/1.1 request has exactly one Host.
    if req.version() == Version::HTTP_11 && req.headers().get_all(header::HOST).iter().count() != 1
    {
        return Err(ApiError::detail(
            ErrorCode::BadRequest,
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    let path = req.uri().path();
    // The rare and large branches are boxed, so that the future of a
    // `/v2/` request (moved a few times per request) stays small.
    if path == "/auth" {
        return Box::pin(realm::handle(app, req, conn)).await;
    }
    if path == "/v2" || path.starts_with("/v2/") {
        return registry::handle(app, req, conn).await;
    }
    if path.starts_with("/api/v1/") {
        return Box::pin(api::handle(app, req, conn)).await;
    }
    let is_get = req.method() == Method::GET || req.method() == Method::HEAD;
    if path == "/healthz" && is_get {
        // Alive: the process answers. Dependencies are /readyz's business.
        let body = "{\"status\":\"ok\"}".to_owned();
        return Ok((errors::json_response(StatusCode::OK, body), None));
    }
    let metrics = &app.config.raw.metrics;
    // On the main listener, counters are for this host's callers unless
    // `[metrics] public` says otherwise; others get the 404 of any unknown path.
    if path == "/metrics"
        && is_get
        && metrics.enabled
        && metrics.listen.is_none()
        && (metrics.public || is_local(conn.peer.ip()))
    {
        return Ok((metrics_response(app), None));
    }
    if path == "/readyz" && is_get {
        let r = Box::pin(app.readiness.get(&app.upstream, &app.authn)).await;
        app.metrics.dependencies(&r);
        let status = if r.ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = readiness_body(&r, is_local(conn.peer.ip()));
        return Ok((errors::json_response(status, body), None));
    }
    // The web UI: a browser opening `/` is sent to `/ui/`.
    if (path == "/" && is_get) || path == "/ui" || path.starts_with("/ui/") {
        return Ok(Box::pin(crate::ui::handle(app, req, conn)).await);
    }
    Err(ApiError::new(ErrorCode::NotFound))
}

/// Whether a caller connects from this host (loopback, also as an
/// IPv4-mapped IPv6 address).
pub fn is_local(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The `/readyz` body. A failing check's detail (an upstream address, an
/// LDAP URL and its error) is told only to callers on this host and on the
/// metrics listener (`detailed`); others learn which check fails, not why.
/// The detail is always in the log (`health`).
pub fn readiness_body(r: &crate::health::Readiness, detailed: bool) -> String {
    if detailed {
        return serde_json::to_string(r).unwrap_or_default();
    }
    let plain = |s: &str| if s == "ok" { "ok" } else { "unavailable" };
    let mut v = serde_json::json!({
        "ready": r.ready,
        "upstream": plain(&r.upstream),
        "signing_key": plain(&r.signing_key),
    });
    if let Some(ldap) = &r.ldap {
        v["ldap"] = plain(ldap).into();
    }
    if let Some(store) = &r.store {
        v["store"] = plain(store).into();
    }
    v.to_string()
}

/// Whether a request's head (request line and header fields, as sent)
/// passes `limits.max_header_bytes`. The server reads HTTP/1.1 in larger
/// pieces than that (for uploads), so the limit is kept here; HTTP/2
/// enforces it itself (`max_header_list_size`).
fn head_too_large<B>(req: &Request<B>, max: usize) -> bool {
    // "METHOD target HTTP/1.1\r\n" and "name: value\r\n" per field.
    let line = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + 12;
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    line + fields + 2 > max
}

/// The gate's own base URL as the client sees it: `server.public_url` when
/// set, otherwise the scheme of this connection and the client's `Host`
/// (HTTP/2: the `:authority`). A `Host` that is not a plain host[:port] is
/// refused rather than echoed into challenges and `Location` headers.
pub fn external_base(app: &App, req: &Request<Incoming>, conn: Conn) -> Result<String, ApiError> {
    if let Some(url) = &app.config.server.public_url {
        return Ok(url.clone());
    }
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .ok_or_else(|| ApiError::detail(ErrorCode::BadRequest, "missing Host header"))?;
    if !valid_host(host) {
        return Err(ApiError::detail(
            ErrorCode::BadRequest,
            "invalid Host header",
        ));
    }
    let scheme = if conn.tls { "https://" } else { "http://" };
    Ok([scheme, host].concat())
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn heads_are_measured_as_sent() {
        let head = "GET /v2/ HTTP/1.1\r\nHost: gate\r\nX-Pad: aaaa\r\n\r\n";
        let req = http::Request::get("/v2/")
            .header("host", "gate")
            .header("x-pad", "aaaa")
            .body(())
            .unwrap();
        assert!(!super::head_too_large(&req, head.len()));
        assert!(super::head_too_large(&req, head.len() - 1));
    }

    /// `X-Forwarded-For` counts only from trusted proxies, and then the
    /// rightmost untrusted address wins: what a client writes to the left
    /// of it cannot choose its address.
    #[test]
    fn client_addresses_behind_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = ["10.0.0.0/8", "127.0.0.1/32"]
            .iter()
            .map(|n| crate::authz::parse_net(n).unwrap())
            .collect();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // (peer, X-Forwarded-For values, client)
        let cases: &[(&str, &[&str], &str)] = &[
            ("192.0.2.7", &["203.0.113.9"], "192.0.2.7"),
            ("10.1.1.1", &[], "10.1.1.1"),
            ("10.1.1.1", &["203.0.113.9"], "203.0.113.9"),
            ("10.1.1.1", &["1.2.3.4, 203.0.113.9"], "203.0.113.9"),
            (
                "10.1.1.1",
                &["1.2.3.4, 203.0.113.9, 10.2.2.2"],
                "203.0.113.9",
            ),
            ("10.1.1.1", &["1.2.3.4", "203.0.113.9"], "203.0.113.9"),
            ("10.1.1.1", &["10.3.3.3, 10.2.2.2"], "10.3.3.3"),
            ("10.1.1.1", &["203.0.113.9, garbage, 10.2.2.2"], "10.2.2.2"),
            ("10.1.1.1", &["garbage"], "10.1.1.1"),
            ("127.0.0.1", &[" 2001:db8::1 "], "2001:db8::1"),
            ("::ffff:10.1.1.1", &["203.0.113.9"], "203.0.113.9"),
        ];
        for (peer, values, want) in cases {
            let mut h = http::HeaderMap::new();
            for v in *values {
                h.append("x-forwarded-for", v.parse().unwrap());
            }
            assert_eq!(
                super::client_address(ip(peer), &h, &trusted),
                ip(want),
                "{peer} {values:?}"
            );
            assert_eq!(
                super::client_address(ip(peer), &h, &[]),
                ip(peer),
                "no trusted proxies"
            );
        }
    }

    /// Issue 17, finding 9: `/readyz` told anyone the upstream's address
    /// and the LDAP URL. Remote callers get "unavailable"; callers on this
    /// host (and the metrics listener) the detail.
    #[test]
    fn readiness_details_only_for_local_callers() {
        use crate::health::Readiness;
        let down = Readiness {
            ready: false,
            upstream: "connecting to 10.1.2.3:5001: Connection refused".into(),
            ldap: Some("no LDAP server reachable (ldaps://ldap.internal)".into()),
            signing_key: "ok".into(),
            store: Some("store unavailable: postgres://gate:***@db.internal/rg".into()),
            degraded: vec![],
        };
        let remote = super::readiness_body(&down, false);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&remote).unwrap(),
            serde_json::json!({"ready": false, "upstream": "unavailable",
                "ldap": "unavailable", "signing_key": "ok", "store": "unavailable"})
        );
        let local = super::readiness_body(&down, true);
        assert!(local.contains("10.1.2.3:5001") && local.contains("ldap.internal"));
        for (ip, local) in [
            ("127.0.0.1", true),
            ("127.9.9.9", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("192.0.2.7", false),
            ("10.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("2001:db8::1", false),
        ] {
            assert_eq!(super::is_local(ip.parse().unwrap()), local, "{ip}");
        }
    }

    #[test]
    fn hosts_are_plain() {
        for ok in [
            "gate",
            "gate:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "my-gate.example.com",
        ] {
            assert!(super::valid_host(ok), "{ok}");
        }
        for bad in ["", "a b", "evil\"/x", "a@b", "a/b", "a\r\nb"] {
            assert!(!super::valid_host(bad), "{bad}");
        }
    }
}
