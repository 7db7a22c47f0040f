//! The upstream registry: a pooled hyper-util client, header hygiene on the
//! way in and out, `Location`/`Link` rewriting, and bodies streamed both ways.
//!
//! Forwarding a client request takes a [`Permit`]: only authorized requests
//! get here.

use std::net::IpAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::http::body::{self, Body};
use crate::permit::Permit;

/// Why the upstream gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream did not answer in time")]
    Timeout,
    #[error("bad upstream request: {0}")]
    Request(String),
}

/// Where the client thinks it is talking to, for the `X-Forwarded-*`
/// headers and for rewriting upstream URLs back to the gate's address.
#[derive(Debug, Clone)]
pub struct Origin {
    pub client_ip: IpAddr,
    /// `http://gate:5000` or `https://registry.example.com`.
    pub external_base: String,
}

impl Origin {
    fn scheme_and_host(&self) -> (&str, &str) {
        self.external_base
            .split_once("://")
            .unwrap_or(("http", &self.external_base))
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Body>,
    /// `http://host:port`, no trailing slash.
    base: String,
    authority: HeaderValue,
    response_timeout: Duration,
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1) and what must not cross the
/// gate: the client's credentials stay here, and `Expect` is answered by our
/// own server, not relayed.
const STRIPPED_REQUEST: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "authorization",
    "cookie",
    "expect",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

const STRIPPED_RESPONSE: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Upstream {
    pub fn new(base: &str, authority: &http::uri::Authority, connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build(connector);
        Upstream {
            client,
            base: base.to_owned(),
            authority: HeaderValue::from_str(authority.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            response_timeout: Duration::from_secs(60),
        }
    }

    /// Forwards an authorized request, streaming its body, and returns the
    /// upstream's response with its body still streaming.
    pub async fn forward(
        &self,
        _permit: &Permit,
        req: Request<Incoming>,
        origin: &Origin,
    ) -> Result<Response<Body>, UpstreamError> {
        let (parts, incoming) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let mut out = Request::new(body::stream(incoming));
        *out.method_mut() = parts.method;
        *out.headers_mut() = parts.headers;
        self.send(out, &path_and_query, origin).await
    }

    /// A gate-originated GET (the catalog filter pages through the upstream).
    pub async fn get(
        &self,
        path_and_query: &str,
        origin: &Origin,
    ) -> Result<Response<Body>, UpstreamError> {
        self.send(Request::new(body::empty()), path_and_query, origin)
            .await
    }

    /// Whether the upstream answers `GET /v2/` (200, or 401 from a registry
    /// with auth of its own) within `timeout`: the readiness check.
    pub async fn probe(&self, timeout: Duration) -> Result<(), String> {
        let origin = Origin {
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            external_base: self.base.clone(),
        };
        match tokio::time::timeout(timeout, self.get("/v2/", &origin)).await {
            Err(_) => Err("no answer in time".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(r))
                if r.status().is_success() || r.status() == http::StatusCode::UNAUTHORIZED =>
            {
                Ok(())
            }
            Ok(Ok(r)) => Err(format!("GET /v2/ answered {}", r.status())),
        }
    }

    /// A gate-originated request without a body (the web UI: GET, HEAD and
    /// DELETE of manifests and blobs), with an optional `Accept`. Callers
    /// check the ACL first; this only talks to the upstream.
    pub async fn request(
        &self,
        method: http::Method,
        path_and_query: &str,
        accept: Option<&str>,
        origin: &Origin,
    ) -> Result<Response<Body>, UpstreamError> {
        let mut req = Request::new(body::empty());
        *req.method_mut() = method;
        if let Some(accept) = accept {
            let v =
                HeaderValue::from_str(accept).map_err(|e| UpstreamError::Request(e.to_string()))?;
            req.headers_mut().insert(header::ACCEPT, v);
        }
        self.send(req, path_and_query, origin).await
    }

    async fn send(
        &self,
        mut req: Request<Body>,
        path_and_query: &str,
        origin: &Origin,
    ) -> Result<Response<Body>, UpstreamError> {
        *req.uri_mut() = format!("{}{}", self.base, path_and_query)
            .parse::<Uri>()
            .map_err(|e| UpstreamError::Request(e.to_string()))?;
        // The upstream speaks HTTP/1.1 whatever the client spoke to us.
        *req.version_mut() = Version::HTTP_11;
        self.prepare_headers(req.headers_mut(), origin);
        let resp = tokio::time::timeout(self.response_timeout, self.client.request(req))
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(|e| UpstreamError::Unreachable(error_chain(&e)))?;
        let (mut parts, incoming) = resp.into_parts();
        strip(&mut parts.headers, STRIPPED_RESPONSE);
        self.rewrite_urls(&mut parts.headers, origin);
        Ok(Response::from_parts(parts, body::stream(incoming)))
    }

    fn prepare_headers(&self, headers: &mut HeaderMap, origin: &Origin) {
        strip(headers, STRIPPED_REQUEST);
        let (scheme, host) = origin.scheme_and_host();
        // distribution builds absolute URLs (upload Locations) from these, so
        // they must name the gate, not the upstream.
        set(headers, "x-forwarded-proto", scheme);
        set(headers, "x-forwarded-host", host);
        let ip = origin.client_ip.to_string();
        let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip,
        };
        set(headers, "x-forwarded-for", &xff);
        headers.insert(header::HOST, self.authority.clone());
    }

    /// Rewrites absolute upstream URLs in `Location` and `Link` to the gate.
    fn rewrite_urls(&self, headers: &mut HeaderMap, origin: &Origin) {
        for name in [header::LOCATION, header::LINK] {
            let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
            if values.is_empty() {
                continue;
            }
            headers.remove(&name);
            for v in values {
                let rewritten = v
                    .to_str()
                    .ok()
                    .filter(|s| s.contains(&self.base))
                    .and_then(|s| {
                        HeaderValue::from_str(&s.replace(&self.base, &origin.external_base)).ok()
                    })
                    .unwrap_or(v);
                headers.append(&name, rewritten);
            }
        }
    }
}

/// Removes the given headers and every header named in `Connection`.
fn strip(headers: &mut HeaderMap, names: &[&str]) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        headers.remove(n);
    }
    for n in names {
        headers.remove(*n);
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// The error and its sources, for the log ("connection refused" is usually
/// two levels down).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Upstream {
        Upstream::new(
            "http://127.0.0.1:5001",
            &"127.0.0.1:5001".parse().unwrap(),
            Duration::from_secs(1),
        )
    }

    fn origin() -> Origin {
        Origin {
            client_ip: "10.1.2.3".parse().unwrap(),
            external_base: "https://gate.example.com".into(),
        }
    }

    #[test]
    fn request_headers_are_cleaned_and_forwarded_headers_set() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer secret"),
            ("connection", "keep-alive, x-custom"),
            ("x-custom", "1"),
            ("te", "trailers"),
            ("accept", "application/vnd.oci.image.manifest.v1+json"),
            ("x-forwarded-host", "evil"),
            ("x-forwarded-for", "192.0.2.1"),
            ("host", "gate.example.com"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        upstream().prepare_headers(&mut h, &origin());
        for gone in ["authorization", "connection", "x-custom", "te"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["accept"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(h["x-forwarded-host"], "gate.example.com");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 10.1.2.3");
        assert_eq!(h["host"], "127.0.0.1:5001");
    }

    #[test]
    fn upstream_urls_are_rewritten_to_the_gate() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("http://127.0.0.1:5001/v2/a/blobs/uploads/u?_state=x"),
        );
        h.insert(
            header::LINK,
            HeaderValue::from_static("</v2/_catalog?last=a&n=1>; rel=\"next\""),
        );
        upstream().rewrite_urls(&mut h, &origin());
        assert_eq!(
            h[header::LOCATION],
            "https://gate.example.com/v2/a/blobs/uploads/u?_state=x"
        );
        assert_eq!(h[header::LINK], "</v2/_catalog?last=a&n=1>; rel=\"next\"");
    }
}
