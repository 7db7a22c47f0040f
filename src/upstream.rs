//! The upstream registry: a small pool of HTTP/1.1 keep-alive connections
//! (see [`Pool`]), header hygiene on the way in and out, `Location`/`Link`
//! rewriting, and bodies streamed both ways.
//!
//! Forwarding a client request takes a [`Permit`]: only authorized requests
//! get here.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::access::Endpoint;
use crate::config::{LimitsConfig, UpstreamConfig};
use crate::http::body::{self, Body, BoxError};
use crate::iptext::IpText;
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
    /// A manifest PUT larger than `limits.max_manifest_bytes`: refused
    /// (from its `Content-Length`, or aborted once that many bytes passed).
    #[error("manifest larger than {0} bytes")]
    ManifestTooLarge(u64),
    /// Every upstream connection the gate may use
    /// (`limits.max_upstream_connections`) stayed busy for as long as a
    /// connection may take to open.
    #[error("all upstream connections busy")]
    Busy,
}

/// Where the client thinks it is talking to, for the `X-Forwarded-*`
/// headers and for rewriting upstream URLs back to the gate's address.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The client (for audit events).
    pub client_ip: IpAddr,
    /// Who sent the request to the gate (appended to `X-Forwarded-For`).
    pub hop: IpAddr,
    /// `http://gate:5000` or `https://registry.example.com`.
    pub external_base: String,
}

impl Origin {
    fn scheme_and_host(&self) -> (&str, &str) {
        let base = self.external_base.as_str();
        // The two schemes the gate serves, checked first: a substring search
        // per request cost more than the rest of this function.
        if let Some(host) = base.strip_prefix("https://") {
            return ("https", host);
        }
        if let Some(host) = base.strip_prefix("http://") {
            return ("http", host);
        }
        base.split_once("://").unwrap_or(("http", base))
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
    /// `http://host:port`, no trailing slash.
    base: String,
    authority: HeaderValue,
    /// Counted from the end of the request body, not its start.
    response_header_timeout: Duration,
    body_stall_timeout: Duration,
    max_manifest_bytes: u64,
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1) and what must not cross the
/// gate: the client's credentials stay here, and `Expect` is answered by our
/// own server, not relayed. (`http` names are lowercase.)
fn stripped_request(name: &str) -> bool {
    stripped_response(name)
        || matches!(
            name,
            "proxy-authorization"
                | "authorization"
                | "cookie"
                | "expect"
                | "x-forwarded-proto"
                | "x-forwarded-host"
                | "forwarded"
        )
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1).
fn stripped_response(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

// Names `http` has no constant for, parsed once at compile time rather than
// on every request.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

impl Upstream {
    /// The upstream of `[upstream]`, with the body limits of `[limits]`.
    pub fn from_config(upstream: &UpstreamConfig, limits: &LimitsConfig) -> Self {
        let mut u = Upstream::new(&upstream.url, &upstream.authority, upstream.connect_timeout);
        u.pool = Arc::new(Pool::new(
            &upstream.authority,
            upstream.connect_timeout,
            limits.max_upstream_connections,
        ));
        u.response_header_timeout = upstream.response_header_timeout;
        u.body_stall_timeout = limits.body_stall_timeout;
        u.max_manifest_bytes = limits.max_manifest_bytes;
        u
    }

    /// An upstream with the default timeouts and limits.
    pub fn new(base: &str, authority: &http::uri::Authority, connect_timeout: Duration) -> Self {
        Upstream {
            pool: Arc::new(Pool::new(authority, connect_timeout, DEFAULT_MAX_BUSY)),
            base: base.to_owned(),
            authority: HeaderValue::from_str(authority.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            response_header_timeout: Duration::from_secs(60),
            body_stall_timeout: Duration::from_secs(120),
            max_manifest_bytes: 4 * 1024 * 1024,
        }
    }

    /// Forwards an authorized request, streaming its body, and returns the
    /// upstream's response with its body still streaming. A body that stalls
    /// (no byte for `body_stall_timeout`) is aborted, in either direction; a
    /// manifest PUT is cut off past `max_manifest_bytes`, without buffering.
    pub async fn forward(
        &self,
        permit: &Permit,
        req: Request<Incoming>,
        origin: &Origin,
    ) -> Result<Response<Body>, UpstreamError> {
        let (parts, incoming) = req.into_parts();
        let path_and_query = authorized_target(permit, &parts.uri)?;
        let incoming = Stall::new(incoming, self.body_stall_timeout);
        let manifest_put =
            permit.required().endpoint == Endpoint::Manifest && parts.method == Method::PUT;
        let over = Arc::new(AtomicBool::new(false));
        let body = if manifest_put {
            let max = self.max_manifest_bytes;
            if let Some(declared) = declared_length(&parts.headers).filter(|n| *n > max) {
                // A moderately oversized body is read and dropped first, so
                // that a client still sending it reads our answer rather
                // than a connection reset.
                if declared <= max.saturating_mul(2) {
                    drain(incoming, declared).await;
                }
                return Err(UpstreamError::ManifestTooLarge(max));
            }
            body::stream(Capped::new(incoming, max, over.clone()))
        } else {
            body::stream(incoming)
        };
        let mut out = Request::new(body);
        *out.method_mut() = parts.method;
        *out.headers_mut() = parts.headers;
        let result = self.send(out, path_and_query, origin).await;
        if over.load(Ordering::SeqCst) {
            return Err(UpstreamError::ManifestTooLarge(self.max_manifest_bytes));
        }
        result
    }

    /// Reads a manifest PUT's body whole, for a decision that needs its
    /// digest (an immutable tag, `crate::immutable`). Bounded by
    /// `max_manifest_bytes` (from `Content-Length` before reading, or as the
    /// bytes arrive) and by `body_stall_timeout`, as a streamed one is.
    pub async fn read_manifest(
        &self,
        headers: &HeaderMap,
        incoming: Incoming,
    ) -> Result<Bytes, UpstreamError> {
        let max = self.max_manifest_bytes;
        let incoming = Stall::new(incoming, self.body_stall_timeout);
        if let Some(declared) = declared_length(headers).filter(|n| *n > max) {
            if declared <= max.saturating_mul(2) {
                drain(incoming, declared).await;
            }
            return Err(UpstreamError::ManifestTooLarge(max));
        }
        let over = Arc::new(AtomicBool::new(false));
        let capped = body::stream(Capped::new(incoming, max, over.clone()));
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        match body::collect_limited(capped, limit).await {
            Ok(bytes) => Ok(bytes),
            Err(_) if over.load(Ordering::SeqCst) => Err(UpstreamError::ManifestTooLarge(max)),
            Err(e) => Err(UpstreamError::Request(format!("manifest body: {e}"))),
        }
    }

    /// Forwards an authorized manifest PUT whose body was read by
    /// [`Upstream::read_manifest`].
    pub async fn forward_buffered(
        &self,
        permit: &Permit,
        parts: http::request::Parts,
        manifest: Bytes,
        origin: &Origin,
    ) -> Result<Response<Body>, UpstreamError> {
        debug_assert_eq!(permit.required().endpoint, Endpoint::Manifest);
        let path_and_query = authorized_target(permit, &parts.uri)?;
        let mut out = Request::new(body::full(manifest));
        *out.method_mut() = parts.method;
        *out.headers_mut() = parts.headers;
        self.send(out, path_and_query, origin).await
    }

    /// A gate-originated GET (the catalog filter pages through the upstream).
    pub async fn get(
        &self,
        path_and_query: &str,
        origin: &Origin,
    ) -> Result<Response<Body>, UpstreamError> {
        self.send(
            Request::new(body::empty()),
            parse_target(path_and_query)?,
            origin,
        )
        .await
    }

    /// Whether the upstream answers `GET /v2/` (200, or 401 from a registry
    /// with auth of its own) within `timeout`: the readiness check.
    pub async fn probe(&self, timeout: Duration) -> Result<(), String> {
        let origin = Origin {
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            hop: std::net::Ipv4Addr::LOCALHOST.into(),
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
        self.send(req, parse_target(path_and_query)?, origin).await
    }

    async fn send(
        &self,
        req: Request<Body>,
        path_and_query: PathAndQuery,
        origin: &Origin,
    ) -> Result<Response<Body>, UpstreamError> {
        let (mut parts, body) = req.into_parts();
        // Origin-form (`/v2/...`): the pool's connections all go to the
        // upstream, which is named by the `Host` header.
        parts.uri = Uri::from(path_and_query);
        // The upstream speaks HTTP/1.1 whatever the client spoke to us.
        parts.version = Version::HTTP_11;
        self.prepare_headers(&mut parts.headers, origin);
        // The response-header timeout starts once the whole request body is
        // sent: an upload may take as long as it takes. A request without a
        // body has been sent once its head is (no signal needed).
        let (body, sent) = if body.is_end_stream() {
            (body, None)
        } else {
            let (body, sent) = EndSignal::new(body);
            (body::stream(body), Some(sent))
        };
        let response = self.pool.send(Request::from_parts(parts, body));
        let deadline = async {
            if let Some(sent) = sent {
                let _ = sent.await;
            }
            tokio::time::sleep(self.response_header_timeout).await;
        };
        let (resp, sender, permit) = tokio::select! {
            r = response => r?,
            () = deadline => return Err(UpstreamError::Timeout),
        };
        let (mut parts, incoming) = resp.into_parts();
        strip(&mut parts.headers, stripped_response);
        self.rewrite_urls(&mut parts.headers, origin);
        let body = Stall::new(
            Returning::new(incoming, sender, permit, &self.pool),
            self.body_stall_timeout,
        );
        Ok(Response::from_parts(parts, body::stream(body)))
    }

    fn prepare_headers(&self, headers: &mut HeaderMap, origin: &Origin) {
        strip(headers, stripped_request);
        let (scheme, host) = origin.scheme_and_host();
        // distribution builds absolute URLs (upload Locations) from these, so
        // they must name the gate, not the upstream.
        let proto = match scheme {
            "https" => HeaderValue::from_static("https"),
            _ => HeaderValue::from_static("http"),
        };
        headers.insert(X_FORWARDED_PROTO, proto);
        set(headers, X_FORWARDED_HOST, host);
        let ip = IpText::new(origin.hop);
        match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) => {
                let xff = [prev, ", ", ip.as_str()].concat();
                set(headers, X_FORWARDED_FOR, &xff);
            }
            None => set(headers, X_FORWARDED_FOR, ip.as_str()),
        }
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

/// The target the registry gets: the request's, or, when the classifier
/// dropped parameters (an upload start's unusable `mount`/`from`), the path
/// with the query it authorized.
fn authorized_target(permit: &Permit, uri: &http::Uri) -> Result<PathAndQuery, UpstreamError> {
    match &permit.required().forward_query {
        Some(query) => {
            let path = uri.path();
            let target = if query.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{query}")
            };
            parse_target(&target)
        }
        None => Ok(uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))),
    }
}

/// The request target of a gate-originated request.
fn parse_target(path_and_query: &str) -> Result<PathAndQuery, UpstreamError> {
    PathAndQuery::try_from(path_and_query).map_err(|e| UpstreamError::Request(e.to_string()))
}

/// Idle connections kept at most (the most recently used ones).
const POOL_MAX_IDLE: usize = 64;
/// Upstream connections busy at once, unless configured
/// (`limits.max_upstream_connections`).
const DEFAULT_MAX_BUSY: usize = 1024;
/// An idle connection older than this is closed rather than reused.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keep-alive probes on upstream connections start after this long.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The upstream's idle HTTP/1.1 connections, most recently used last (LIFO:
/// a warm connection is reused first, the oldest ones age out).
///
/// Each connection is a hyper `SendRequest` with one spawned task driving
/// its socket. A request takes a connection out of the pool (or opens one)
/// and the response body puts it back when it has been read to its end; a
/// response dropped half-read closes its connection. Idle connections past
/// [`POOL_IDLE_TIMEOUT`] are dropped when next looked at (checkout or
/// check-in), so no timer runs for the pool.
struct Pool {
    /// Where to connect: the upstream URL's host (no IPv6 brackets) and port.
    host: String,
    port: u16,
    connect_timeout: Duration,
    idle: Mutex<Vec<IdleConn>>,
    /// One permit per connection busy with a request (HTTP/2 clients can
    /// have many requests each): held from before the request is sent
    /// until its response body is read or dropped.
    busy: Arc<Semaphore>,
}

struct IdleConn {
    sender: SendRequest<Body>,
    since: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool of connections to `authority` (the upstream URL's, as the
    /// config resolved it).
    fn new(authority: &http::uri::Authority, connect_timeout: Duration, max_busy: usize) -> Self {
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let port = authority.port_u16().unwrap_or(80);
        Pool {
            host,
            port,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
            busy: Arc::new(Semaphore::new(max_busy.max(1))),
        }
    }

    /// Sends `req` on an idle connection, or on a new one; returns the
    /// response and the connection (to hand back once the body is read).
    async fn send(
        &self,
        mut req: Request<Body>,
    ) -> Result<(Response<Incoming>, SendRequest<Body>, OwnedSemaphorePermit), UpstreamError> {
        // Waiting for a busy connection to be free is bounded like opening
        // one: the client hears 503 rather than waiting on.
        let permit = tokio::time::timeout(self.connect_timeout, self.busy.clone().acquire_owned())
            .await
            .map_err(|_| UpstreamError::Busy)?
            .map_err(|_| UpstreamError::Busy)?;
        while let Some(mut sender) = self.checkout() {
            // Just read to its end: ready at once, or within a poll of its
            // connection task; an error means the upstream closed it.
            if !sender.is_ready() && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, sender, permit)),
                // Closed by the upstream before the request went out: the
                // request comes back unsent and goes to another connection.
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(UpstreamError::Unreachable(error_chain(e.error()))),
                },
            }
        }
        let mut sender = self.connect().await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| UpstreamError::Unreachable(error_chain(&e)))?;
        Ok((resp, sender, permit))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<IdleConn>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.lock();
        while let Some(c) = idle.pop() {
            if !c.sender.is_closed() && c.since.elapsed() < POOL_IDLE_TIMEOUT {
                return Some(c.sender);
            }
        }
        None
    }

    /// A connection whose response has been read completely.
    fn checkin(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        // The oldest are first: drop those past their time (and, when full,
        // the oldest one).
        let stale = idle
            .iter()
            .take_while(|c| now.duration_since(c.since) >= POOL_IDLE_TIMEOUT)
            .count();
        let full = (idle.len() - stale + 1).saturating_sub(POOL_MAX_IDLE);
        idle.drain(..stale + full);
        idle.push(IdleConn { sender, since: now });
    }

    async fn connect(&self) -> Result<SendRequest<Body>, UpstreamError> {
        let target = (self.host.as_str(), self.port);
        let stream =
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(target))
                .await
                .map_err(|_| {
                    UpstreamError::Unreachable(format!(
                        "connecting to {}:{}: timed out after {:?}",
                        self.host, self.port, self.connect_timeout
                    ))
                })?
                .map_err(|e| {
                    UpstreamError::Unreachable(format!(
                        "connecting to {}:{}: {e}",
                        self.host, self.port
                    ))
                })?;
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Unreachable(error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %error_chain(&e), "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// An upstream response body that hands its connection back to the pool
/// once read to its end (not when dropped early: that connection closes).
struct Returning {
    inner: Incoming,
    /// The connection, its pool, and its busy permit (released with it).
    sender: Option<(SendRequest<Body>, Arc<Pool>, OwnedSemaphorePermit)>,
}

impl Returning {
    fn new(
        inner: Incoming,
        sender: SendRequest<Body>,
        permit: OwnedSemaphorePermit,
        pool: &Arc<Pool>,
    ) -> Self {
        let mut body = Returning {
            inner,
            sender: Some((sender, pool.clone(), permit)),
        };
        if body.inner.is_end_stream() {
            body.done();
        }
        body
    }

    fn done(&mut self) {
        if let Some((sender, pool, _permit)) = self.sender.take() {
            pool.checkin(sender);
        }
    }
}

impl HttpBody for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.done(),
            Some(Ok(_)) if self.inner.is_end_stream() => self.done(),
            Some(Err(_)) => self.sender = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Removes the headers `stripped` names and every header named in
/// `Connection`.
///
/// One pass over the few headers a message has, matching names as strings,
/// rather than a hashed `remove` for each name that might be there: most
/// are absent, and those removes were 4.4% of the gate's instructions per
/// small request.
fn strip(headers: &mut HeaderMap, stripped: fn(&str) -> bool) {
    let mut present: Vec<HeaderName> = headers
        .keys()
        .filter(|k| stripped(k.as_str()))
        .cloned()
        .collect();
    if present.contains(&header::CONNECTION) {
        present.extend(
            headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
        );
    }
    for n in present {
        headers.remove(n);
    }
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// The `Content-Length` a request declares, if it declares one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A body that fails when its source delivers nothing for `limit` while
/// it is being waited on. Time spent while the consumer is not asking (a
/// slow reader's backpressure) does not count: only a silent producer.
pub struct Stall<B> {
    inner: B,
    limit: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Stall<B> {
    pub fn new(inner: B, limit: Duration) -> Self {
        Stall {
            inner,
            limit,
            timer: None,
        }
    }
}

impl<B> HttpBody for Stall<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let limit = this.limit;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                ready!(timer.as_mut().poll(cx));
                this.timer = None;
                Poll::Ready(Some(Err(format!(
                    "body stalled: no data for {}s",
                    limit.as_secs_f32()
                )
                .into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How long a refused body is read on at most, to answer cleanly.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Reads and drops up to `budget` bytes of `body`, for at most `DRAIN_TIME`.
async fn drain<B>(mut body: B, budget: u64)
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > budget {
                break;
            }
        }
    })
    .await;
}

/// A body cut off with an error once more than `max` bytes passed; `over`
/// records that it happened (the error itself reaches the upstream, not us).
/// Past the limit it reads and drops up to `max` more bytes (a client still
/// sending then reads the refusal instead of a reset) before failing.
struct Capped<B> {
    inner: B,
    max: u64,
    seen: u64,
    over: Arc<AtomicBool>,
}

impl<B> Capped<B> {
    fn new(inner: B, max: u64, over: Arc<AtomicBool>) -> Self {
        Capped {
            inner,
            max,
            seen: 0,
            over,
        }
    }
}

impl<B> HttpBody for Capped<B>
where
    B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
            if let Some(Ok(f)) = &frame
                && let Some(data) = f.data_ref()
            {
                this.seen = this.seen.saturating_add(data.len() as u64);
            }
            if this.seen <= this.max {
                return Poll::Ready(frame);
            }
            this.over.store(true, Ordering::SeqCst);
            let drained = matches!(frame, None | Some(Err(_)));
            if drained || this.seen > this.max.saturating_mul(2) {
                return Poll::Ready(Some(Err(format!(
                    "manifest larger than {} bytes",
                    this.max
                )
                .into())));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Passes a body through and says when it has been sent completely (or
/// dropped, which is as final).
struct EndSignal {
    inner: Body,
    done: Option<oneshot::Sender<()>>,
}

impl EndSignal {
    fn new(inner: Body) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut body = EndSignal {
            inner,
            done: Some(tx),
        };
        if body.inner.is_end_stream() {
            body.finish();
        }
        (body, rx)
    }

    fn finish(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

impl HttpBody for EndSignal {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() || self.inner.is_end_stream() {
            self.finish();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
            hop: "10.1.2.3".parse().unwrap(),
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
    fn scheme_and_host_split_every_base_as_before() {
        for (base, want) in [
            ("https://gate.example.com", ("https", "gate.example.com")),
            ("http://127.0.0.1:5000", ("http", "127.0.0.1:5000")),
            (
                "https://r.example.com/prefix",
                ("https", "r.example.com/prefix"),
            ),
            ("HTTPS://Gate", ("HTTPS", "Gate")),
            ("gate.example.com", ("http", "gate.example.com")),
        ] {
            let origin = Origin {
                client_ip: "10.1.2.3".parse().unwrap(),
                hop: "10.1.2.3".parse().unwrap(),
                external_base: base.into(),
            };
            assert_eq!(origin.scheme_and_host(), want, "{base}");
        }
    }

    #[test]
    fn every_hop_by_hop_and_credential_header_is_stripped() {
        let hop = [
            "Connection",
            "Keep-Alive",
            "Proxy-Connection",
            "Proxy-Authenticate",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
        ];
        let request_only = [
            "Proxy-Authorization",
            "Authorization",
            "Cookie",
            "Expect",
            "X-Forwarded-Proto",
            "X-Forwarded-Host",
            "Forwarded",
        ];
        let kept = [
            "Accept",
            "Content-Type",
            "X-Forwarded-For",
            "Docker-Content-Digest",
        ];
        let build = || {
            let mut h = HeaderMap::new();
            for name in hop.iter().chain(&request_only).chain(&kept) {
                // Mixed case on the wire; `http` lowercases names.
                let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
                h.append(name, HeaderValue::from_static("v"));
            }
            h
        };
        let mut req = build();
        strip(&mut req, stripped_request);
        let mut left: Vec<&str> = req.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        let kept_names = [
            "accept",
            "content-type",
            "docker-content-digest",
            "x-forwarded-for",
        ];
        assert_eq!(left, kept_names);
        let mut resp = build();
        strip(&mut resp, stripped_response);
        for name in hop {
            assert!(!resp.contains_key(name), "{name}");
        }
        for name in request_only.iter().chain(&kept) {
            assert!(resp.contains_key(*name), "{name}");
        }
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

    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn chunks(parts: Vec<&'static [u8]>) -> Body {
        let stream = futures_util::stream::iter(parts)
            .map(|p| Ok::<_, BoxError>(Frame::data(Bytes::from_static(p))));
        body::stream(StreamBody::new(stream))
    }

    /// A body fed through a channel, for bodies that take their time.
    fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
        });
        (tx, body::stream(StreamBody::new(stream)))
    }

    #[tokio::test]
    async fn a_silent_body_stalls_but_a_slow_one_does_not() {
        let (tx, slow) = channel_body();
        let feeder = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(60)).await;
                tx.send(Bytes::from_static(b"x")).await.unwrap();
            }
        });
        let got = Stall::new(slow, Duration::from_millis(200))
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&got[..], b"xxxxx");
        feeder.await.unwrap();

        let (_tx, silent) = channel_body();
        let started = std::time::Instant::now();
        let err = Stall::new(silent, Duration::from_millis(200))
            .collect()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("stalled"), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(190));
    }

    #[tokio::test]
    async fn capped_bodies_stop_past_the_limit() {
        let over = Arc::new(AtomicBool::new(false));
        let ok = Capped::new(chunks(vec![b"12345", b"67890"]), 10, over.clone());
        assert_eq!(&ok.collect().await.unwrap().to_bytes()[..], b"1234567890");
        assert!(!over.load(Ordering::SeqCst));
        let big = Capped::new(chunks(vec![b"12345", b"67890", b"x"]), 10, over.clone());
        assert!(big.collect().await.is_err());
        assert!(over.load(Ordering::SeqCst));
    }

    /// An upstream that reads one request (head and `Content-Length` body)
    /// after `delay`, then answers 201; or never answers when `delay` is None.
    async fn fake_upstream(delay: Option<Duration>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let Some(delay) = delay else {
                // Read everything, answer nothing.
                while s.read(&mut chunk).await.unwrap_or(0) > 0 {}
                return;
            };
            loop {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    return;
                }
            }
            tokio::time::sleep(delay).await;
            let _ = s
                .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                .await;
        });
        addr
    }

    fn short_timeouts(addr: std::net::SocketAddr) -> Upstream {
        let mut u = Upstream::new(
            &format!("http://{addr}"),
            &addr.to_string().parse().unwrap(),
            Duration::from_secs(1),
        );
        u.response_header_timeout = Duration::from_millis(300);
        u
    }

    #[tokio::test]
    async fn the_response_timeout_starts_after_the_request_body() {
        let u = short_timeouts(fake_upstream(Some(Duration::from_millis(100))).await);
        // A body that takes three times the response timeout to send.
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            for _ in 0..9 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tx.send(Bytes::from_static(b"0123456789")).await.unwrap();
            }
        });
        let mut req = Request::new(body);
        *req.method_mut() = Method::PATCH;
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("90"));
        let resp = u
            .send(
                req,
                parse_target("/v2/a/blobs/uploads/u").unwrap(),
                &origin(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }

    #[tokio::test]
    async fn a_silent_upstream_times_out() {
        let u = short_timeouts(fake_upstream(None).await);
        let started = std::time::Instant::now();
        let err = u.get("/v2/", &origin()).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Timeout), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_refusing_upstream_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = short_timeouts(addr)
            .get("/v2/", &origin())
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Unreachable(_)), "{err}");
    }

    #[test]
    fn declared_lengths() {
        let mut h = HeaderMap::new();
        assert_eq!(declared_length(&h), None);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
        assert_eq!(declared_length(&h), Some(42));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("x"));
        assert_eq!(declared_length(&h), None);
    }
}
