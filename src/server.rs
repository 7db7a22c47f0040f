//! The accept loop: takes a bound listener (tests bind `127.0.0.1:0`),
//! serves HTTP/1.1 and HTTP/2 (over TLS by ALPN when configured), and on
//! shutdown stops accepting while in-flight requests finish.
//!
//! What one client may cost (`[limits]`):
//! - at most `max_connections` connections are served at once; when all are
//!   taken, connections with no request in flight are closed (the longest
//!   idle first) to make room, and only while none is idle do new ones wait
//!   in the kernel's accept queue;
//! - at most `max_connections_per_address` of them from one address (IPv6:
//!   one /64); more are closed as they arrive;
//! - a new connection must start its first request (or TLS handshake)
//!   within `first_request_timeout`;
//! - HTTP/2: at most `max_streams_per_connection` concurrent streams, so one
//!   connection holds at most that many upstream connections;
//! - a response the client takes no byte of for `body_stall_timeout` closes
//!   its connection (an HTTP/2 stream with a zero flow-control window would
//!   otherwise hold its upstream connection for ever);
//! - the TLS handshake, and each request's head once its first byte
//!   arrived, must complete within `header_read_timeout` (slowloris);
//! - a connection with no request in flight is closed after `idle_timeout`;
//! - request heads are limited to `max_header_bytes` and `max_headers`
//!   (HTTP/1.1 answers 431);
//! - bodies are not limited in time as a whole (see `upstream` for stalls).
//!
//! Shutdown: the listener is closed at once (new connections are refused),
//! every connection is asked to finish (HTTP/1.1: after its current
//! request; HTTP/2: GOAWAY), and the server waits up to `shutdown_timeout`
//! for them before returning.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::LimitsConfig;
use crate::http::body::{Body, BoxError};
use crate::http::{self, Conn};
use crate::reload::Live;
use prometheus_client::metrics::counter::Counter;

type HandlerFuture = std::pin::Pin<
    Box<dyn Future<Output = Result<hyper::Response<Body>, std::convert::Infallible>> + Send>,
>;

/// The largest read from an HTTP/1.1 client (see `http_builder`).
const READ_BUFFER: usize = 512 * 1024;

/// While every connection slot is taken, how often idle connections are
/// looked for again.
const EVICT_RECHECK: Duration = Duration::from_millis(250);

/// A connection idle for less than this is not closed to make room: a
/// client that just connected (or just got an answer) may be about to send.
const EVICT_AFTER: Duration = Duration::from_millis(500);

/// After a connection was asked to close (idle, too slow, shutting down),
/// how long it may take to say goodbye once nothing is in flight.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves until `shutdown` completes, then drains for up to
/// `limits.shutdown_timeout`.
pub async fn serve(
    listener: TcpListener,
    live: Arc<Live>,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    // Limits shape the listener and every connection: read once, at start
    // (a reload that changes them says they need a restart).
    let limits = live.current().config.limits.clone();
    // The metrics outlive reloads (they are carried over): fetch them once.
    let metrics = live.current().metrics.clone();
    let builder = Arc::new(http_builder(&limits));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let open_conns = Arc::new(Connections::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut warned_full: Option<Instant> = None;
    tokio::pin!(shutdown);
    'accept: loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // A trusted balancer (or a PROXY protocol sender) carries every
        // client behind it: it is not one client, and holding it to the
        // per-address limit would cap the whole fleet's clients. Its own
        // limits apply instead (docs/security.md).
        let (proxy_protocol, balancer) = {
            let server = &live.current().config.server;
            let trusted = server
                .trusted_proxies
                .iter()
                .any(|net| crate::authz::net_contains(net, peer.ip()));
            (server.proxy_protocol, server.proxy_protocol || trusted)
        };
        let per_address = if balancer {
            0
        } else {
            limits.max_connections_per_address
        };
        let Some(address_slot) = open_conns.admit(peer.ip(), per_address) else {
            tracing::debug!(
                client = %peer,
                max = limits.max_connections_per_address,
                "too many connections from this address (limits.max_connections_per_address): closed"
            );
            continue;
        };
        // The connection is accepted first and then waits for a slot: so
        // idle connections are closed only for one that is really waiting.
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if warned_full.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(
                        max = limits.max_connections,
                        "connection limit reached (limits.max_connections): idle connections \
                         are closed to make room, new clients wait for a free slot"
                    );
                    warned_full = Some(Instant::now());
                }
                // Under pressure, idle connections make room: silent sockets
                // must not lock out clients with requests to make. Looked
                // for again while waiting (a keep-alive request may end).
                loop {
                    open_conns.evict_idle(evict_batch(limits.max_connections));
                    tokio::select! {
                        p = permits.clone().acquire_owned() => match p {
                            Ok(p) => break p,
                            Err(_) => break 'accept,
                        },
                        () = &mut shutdown => break 'accept,
                        () = tokio::time::sleep(EVICT_RECHECK) => {}
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new(false));
        let registered = open_conns.register(activity.clone());
        let live = live.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let stop = stop_rx.clone();
        let limits = limits.clone();
        let open = metrics.connection();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = open;
            let _slot = address_slot;
            let _registered = registered;
            let mut stream = stream;
            // Behind a layer-4 balancer speaking the PROXY protocol, the
            // client is who its header names (required on every connection).
            let conn = if proxy_protocol {
                let header = crate::proxyproto::read_header(&mut stream);
                match tokio::time::timeout(limits.first_request_timeout, header).await {
                    Ok(Ok(Some(client))) => Conn {
                        peer: client,
                        tls: tls.is_some(),
                        hop: client.ip(),
                    },
                    Ok(Ok(None)) => Conn::new(peer, tls.is_some()),
                    Ok(Err(e)) => {
                        tracing::debug!(client = %peer, error = %e, "connection without a valid PROXY header: closed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(client = %peer, "no PROXY header in time: closed");
                        return;
                    }
                }
            } else {
                Conn::new(peer, tls.is_some())
            };
            match tls {
                Some(acceptor) => {
                    let mut stream = stream;
                    // The TLS phase ends early when the connection is
                    // evicted to make room (it has no request in flight).
                    let tls_phase = async {
                        match first_bytes(&mut stream, limits.first_request_timeout).await {
                            FirstBytes::Tls => {}
                            FirstBytes::PlainHttp => {
                                refuse_plain_http(&mut stream, limits.header_read_timeout).await;
                                return None;
                            }
                            FirstBytes::Nothing => {
                                tracing::debug!(client = %peer, "no first request in time");
                                return None;
                            }
                        }
                        let handshake = tokio::time::timeout(
                            limits.header_read_timeout,
                            acceptor.accept(stream),
                        );
                        match handshake.await {
                            Ok(Ok(s)) => Some(s),
                            Ok(Err(e)) => {
                                tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                                None
                            }
                            Err(_) => {
                                tracing::debug!(client = %peer, "TLS handshake timed out");
                                None
                            }
                        }
                    };
                    let tls_stream = tokio::select! {
                        s = tls_phase => s,
                        () = activity.evicted() => None,
                    };
                    if let Some(s) = tls_stream {
                        let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
                        activity.h2.store(h2, Ordering::SeqCst);
                        serve_connection(s, &builder, live, conn, &limits, stop, activity).await
                    }
                }
                None => {
                    serve_connection(stream, &builder, live, conn, &limits, stop, activity).await
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = limits.max_connections - permits.available_permits();
    tracing::info!(
        connections = open,
        "shutting down: listener closed, draining in-flight requests"
    );
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(limits.shutdown_timeout, permits.acquire_many(all)).await {
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(
            connections = limits.max_connections - permits.available_permits(),
            "shutdown_timeout passed; closing the remaining connections"
        ),
    }
}

/// Serves `GET /metrics` (and `GET /readyz` with its detail) alone on its
/// own listener (`[metrics] listen`), e.g. on an address only the
/// monitoring network reaches. Plain HTTP/1.1;
/// runs until the process ends.
pub async fn serve_metrics(listener: TcpListener, live: Arc<Live>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let live = live.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let app = live.current();
                async move {
                    let resp = if req.uri().path() == "/metrics" {
                        http::metrics_response(&app)
                    } else if req.uri().path() == "/readyz" {
                        // With its detail: this listener is for operators.
                        let r = app.readiness.get(&app.upstream, &app.authn).await;
                        let mut resp = hyper::Response::new(crate::http::body::full(
                            http::readiness_body(&r, true),
                        ));
                        if !r.ready {
                            *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        resp.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        resp
                    } else {
                        let mut r = hyper::Response::new(crate::http::body::full("not found\n"));
                        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                        r
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
        });
    }
}

/// What a new connection on the TLS port sent first.
enum FirstBytes {
    Tls,
    /// A method name: plain HTTP on the TLS port.
    PlainHttp,
    /// Nothing within the time allowed (or the peer went away).
    Nothing,
}

/// A TLS record starts with 0x16 (handshake); a plain HTTP request with a
/// method name. Waits for the first byte for at most `wait`.
async fn first_bytes(stream: &mut tokio::net::TcpStream, wait: Duration) -> FirstBytes {
    let mut first = [0u8; 1];
    match tokio::time::timeout(wait, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != 0x16 && first[0].is_ascii_uppercase() => FirstBytes::PlainHttp,
        Ok(Ok(1)) => FirstBytes::Tls,
        _ => FirstBytes::Nothing,
    }
}

/// A client that sends plain HTTP to the TLS port gets a short plain-text
/// 400 saying so (rather than a TLS alert that clients report as
/// "malformed HTTP response"), and the connection closes.
async fn refuse_plain_http(stream: &mut tokio::net::TcpStream, wait: Duration) {
    use tokio::io::AsyncWriteExt;
    let body = "This port speaks HTTPS: use an https:// URL.\n";
    let msg = format!(
        "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(wait, stream.write_all(msg.as_bytes())).await;
    let _ = stream.shutdown().await;
}

fn http_builder(limits: &LimitsConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // No hyper header timer: it would be re-armed (and a read retried)
        // for every keep-alive request. The limits on idle connections and
        // slow heads are kept per connection instead (see `Activity`).
        .header_read_timeout(None)
        .max_headers(limits.max_headers)
        // The read buffer. Uploads are read in pieces of up to this size
        // (64 KiB reads cost ~20% more CPU per pushed GiB; 1 MiB saved ~7%
        // more than 512 KiB but held ~2 MiB more per upload). It also
        // bounds a request head (hyper answers 431); the configured, smaller
        // head limit is checked by the router (`http::head_too_large`).
        .max_buf_size(READ_BUFFER.max(limits.max_header_bytes));
    builder
        .http2()
        .timer(TokioTimer::new())
        // Each stream may hold an upstream connection: this bounds what one
        // client connection can take (hyper's default is 200).
        .max_concurrent_streams(limits.max_streams_per_connection)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Why a connection was asked to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Idle,
    /// Nothing arrived within `first_request_timeout` of connecting.
    NoFirstRequest,
    SlowHeader,
    Shutdown,
    /// Closed to make room for others (it had no request in flight).
    Evicted,
    /// A response the client took no byte of for `body_stall_timeout`.
    Stuck,
}

async fn serve_connection<IO>(
    io: IO,
    builder: &auto::Builder<TokioExecutor>,
    live: Arc<Live>,
    conn: Conn,
    limits: &LimitsConfig,
    mut stop: watch::Receiver<bool>,
    activity: Arc<Activity>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    activity.serving();
    let (bytes_in, bytes_out) = live.current().metrics.client_byte_counters();
    let io = TokioIo::new(Tracked {
        inner: io,
        activity: activity.clone(),
        bytes_in,
        bytes_out,
    });
    let service = {
        let activity = activity.clone();
        service_fn(move |req| -> HandlerFuture {
            let guard = activity.begin();
            // The app in force when the request starts serves all of it,
            // whatever a reload does meanwhile.
            let app = live.current();
            // Boxed so the future's type is named: without it rustc cannot
            // prove the higher-ranked Send bound hyper's executor needs.
            Box::pin(async move {
                let resp = http::handle(app, req, conn).await;
                Ok(resp.map(|body| InFlightBody::new(body, guard).boxed()))
            })
        })
    };
    let connection = builder.serve_connection(io, service).into_owned();
    tokio::pin!(connection);
    let closing = tokio::select! {
        result = connection.as_mut() => {
            log_end(conn, result);
            return;
        }
        reason = activity.expired(limits) => reason,
        () = activity.evicted() => Closing::Evicted,
        _ = stop.wait_for(|stopping| *stopping) => Closing::Shutdown,
    };
    tracing::debug!(client = %conn.peer, reason = ?closing, "closing connection");
    // A stuck response is not waited for; nor is an evicted connection that
    // is still idle (it has nothing to finish, and its slot is wanted now).
    // Dropping the connection drops its streams and their upstream
    // connections.
    if closing == Closing::Stuck
        || (closing == Closing::Evicted && activity.in_flight.load(Ordering::SeqCst) == 0)
    {
        return;
    }
    connection.as_mut().graceful_shutdown();
    // In-flight requests finish (on shutdown the server's own deadline
    // bounds this); once nothing is in flight, a moment to say goodbye.
    tokio::select! {
        result = connection => log_end(conn, result),
        () = activity.quiet_for(CLOSE_GRACE) => {}
    }
}

fn log_end(conn: Conn, result: Result<(), BoxError>) {
    if let Err(e) = result {
        // Clients hang up mid-request all the time; not an error of ours.
        tracing::debug!(client = %conn.peer, error = %e, "connection ended with an error");
    }
}

/// What a connection is doing, as far as its limits care: requests in
/// flight, since when it has had none, and whether the head of a next
/// request has started to arrive.
///
/// The request path only stores atomics: nothing is notified and no timer
/// is armed per request. One timer per connection (in [`Activity::expired`])
/// wakes at the earliest moment a limit could be reached, re-reads the
/// recorded times and either closes or sleeps on, so a keep-alive request
/// cycle costs no wake-up of the connection task.
struct Activity {
    started: Instant,
    /// HTTP/2: bytes between requests are pings and settings, not a head.
    /// (Known once TLS negotiated it.)
    h2: AtomicBool,
    /// Whether any byte of a request (or a request) has arrived yet.
    used: AtomicBool,
    /// Milliseconds since `started` from which `first_request_timeout`
    /// counts (the end of the TLS handshake, if any).
    first_from: AtomicU64,
    /// Set when the accept loop closes this (idle) connection to make room.
    evicted: AtomicBool,
    evict: Notify,
    /// When each response in flight last handed a byte to the client
    /// (milliseconds since `started`), to find one that no longer moves.
    responses: std::sync::Mutex<Vec<Arc<AtomicU64>>>,
    in_flight: AtomicUsize,
    /// Milliseconds since `started` at which `in_flight` last became 0.
    idle_since: AtomicU64,
    /// Milliseconds since `started` of the first byte read while idle, or
    /// `NONE`.
    head_started: AtomicU64,
    head_pending: AtomicBool,
    /// Set once the connection was asked to close: from then on the end of
    /// a request wakes [`Activity::quiet_for`] through `changed`.
    closing: AtomicBool,
    changed: Notify,
}

const NONE: u64 = u64::MAX;

/// The shortest sleep of the expiry timer, so that zero timeouts cannot
/// make it spin while a request is in flight.
const MIN_RECHECK: Duration = Duration::from_millis(1);

impl Activity {
    fn new(h2: bool) -> Self {
        Activity {
            started: Instant::now(),
            h2: AtomicBool::new(h2),
            used: AtomicBool::new(false),
            first_from: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
            responses: std::sync::Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
            head_pending: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    /// A request has begun; the guard ends it when dropped (with the
    /// response body, or with the handler if the client went away).
    fn begin(self: &Arc<Self>) -> InFlight {
        self.used.store(true, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head_pending.store(false, Ordering::SeqCst);
        self.head_started.store(NONE, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Called on every read that delivered bytes.
    fn on_read(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::SeqCst);
        }
        if self.h2.load(Ordering::Relaxed)
            || self.in_flight.load(Ordering::SeqCst) > 0
            || self.head_pending.load(Ordering::Relaxed)
        {
            return;
        }
        self.head_started.store(self.now_ms(), Ordering::SeqCst);
        self.head_pending.store(true, Ordering::SeqCst);
    }

    /// At `now`: the limit that has been reached, or the moment to look
    /// again. That moment is never later than the earliest deadline any
    /// future event could set: a request in flight ends at the earliest
    /// now (then the idle and header limits count from its end), and a head
    /// not yet started starts at the earliest now.
    fn check(&self, limits: &LimitsConfig, now: Instant) -> Result<Closing, Instant> {
        let soonest = limits
            .idle_timeout
            .min(limits.header_read_timeout)
            .max(MIN_RECHECK);
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            let mut next = now + soonest;
            if let Some(oldest) = self.oldest_progress() {
                let deadline = self.at(oldest) + limits.body_stall_timeout;
                if now >= deadline {
                    return Ok(Closing::Stuck);
                }
                next = next.min(deadline);
            }
            return Err(next);
        }
        if !self.used.load(Ordering::SeqCst) {
            // Nothing yet: the first request must start soon (or the idle
            // limit, if that is shorter).
            let first = self.at(self.first_from.load(Ordering::SeqCst))
                + limits.first_request_timeout.min(limits.idle_timeout);
            if now >= first {
                return Ok(Closing::NoFirstRequest);
            }
            return Err(first.min(now + soonest));
        }
        let idle_since = self.idle_since.load(Ordering::SeqCst);
        let head = self.head_started.load(Ordering::SeqCst);
        let (deadline, reason) = if head == NONE {
            (self.at(idle_since) + limits.idle_timeout, Closing::Idle)
        } else {
            (
                self.at(head.max(idle_since)) + limits.header_read_timeout,
                Closing::SlowHeader,
            )
        };
        if now >= deadline {
            // A request that began meanwhile keeps the connection.
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                return Err(now + soonest);
            }
            return Ok(reason);
        }
        if head == NONE {
            let head_soonest = now + limits.header_read_timeout.max(MIN_RECHECK);
            Err(deadline.min(head_soonest))
        } else {
            Err(deadline)
        }
    }

    /// The connection is about to be served (after any TLS handshake): the
    /// first request's time starts now.
    fn serving(&self) {
        self.first_from.store(self.now_ms(), Ordering::SeqCst);
    }

    /// The earliest last progress among the responses in flight.
    fn oldest_progress(&self) -> Option<u64> {
        let responses = self
            .responses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        responses.iter().map(|p| p.load(Ordering::SeqCst)).min()
    }

    /// Whether the connection may be closed to make room: nothing in
    /// flight, not closing already, idle for at least [`EVICT_AFTER`]
    /// (a client that just connected gets a moment to send its request).
    /// With the moment it became idle.
    fn idle_from(&self, now: Instant) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0
            || self.evicted.load(Ordering::SeqCst)
            || self.closing.load(Ordering::SeqCst)
        {
            return None;
        }
        let ms = if self.used.load(Ordering::SeqCst) {
            self.idle_since.load(Ordering::SeqCst)
        } else {
            self.first_from.load(Ordering::SeqCst)
        };
        let since = self.at(ms);
        (now.saturating_duration_since(since) >= EVICT_AFTER).then_some(since)
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        // One waiter (the connection's task); the permit is kept if it is
        // not waiting yet.
        self.evict.notify_one();
    }

    /// Resolves once the accept loop asked this connection to make room.
    async fn evicted(&self) {
        while !self.evicted.load(Ordering::SeqCst) {
            self.evict.notified().await;
        }
    }

    /// Resolves when the connection has been idle, or has been sending a
    /// head, for too long.
    async fn expired(&self, limits: &LimitsConfig) -> Closing {
        let first = match self.check(limits, Instant::now()) {
            Ok(reason) => return reason,
            Err(next) => next,
        };
        let timer = tokio::time::sleep_until(first.into());
        tokio::pin!(timer);
        loop {
            timer.as_mut().await;
            match self.check(limits, Instant::now()) {
                Ok(reason) => return reason,
                Err(next) => timer.as_mut().reset(next.into()),
            }
        }
    }

    /// Resolves once no request has been in flight for `grace`.
    async fn quiet_for(&self, grace: Duration) {
        self.closing.store(true, Ordering::SeqCst);
        loop {
            let notified = self.changed.notified();
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                notified.await;
                continue;
            }
            tokio::time::sleep(grace).await;
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
        }
    }
}

/// How many connections each address has open, and every open connection's
/// [`Activity`] (to find idle ones when all slots are taken).
#[derive(Default)]
struct Connections {
    per_address: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
    open: std::sync::Mutex<std::collections::HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
}

/// Connections are counted per address; IPv6 ones per /64 (one host's
/// usual share), IPv4-mapped ones as IPv4.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// Idle connections closed at once when every slot is taken.
fn evict_batch(max_connections: usize) -> usize {
    (max_connections / 16).max(1)
}

impl Connections {
    fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for one more connection from `ip`, unless it has `max`
    /// already (0: no limit).
    fn admit(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut counts = Self::lock(&self.per_address);
        let n = counts.entry(key).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            conns: self.clone(),
            key,
        })
    }

    fn register(self: &Arc<Self>, activity: Arc<Activity>) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Self::lock(&self.open).insert(id, activity);
        Registered {
            conns: self.clone(),
            id,
        }
    }

    /// Asks up to `n` connections with no request in flight to close, the
    /// longest idle first; returns how many.
    fn evict_idle(&self, n: usize) -> usize {
        let now = Instant::now();
        let mut idle: Vec<(Instant, Arc<Activity>)> = Self::lock(&self.open)
            .values()
            .filter_map(|a| a.idle_from(now).map(|at| (at, a.clone())))
            .collect();
        idle.sort_by_key(|(at, _)| *at);
        idle.truncate(n);
        for (_, a) in &idle {
            a.evict();
        }
        idle.len()
    }
}

/// One connection counted against its address while it lives.
struct AddressSlot {
    conns: Arc<Connections>,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = Connections::lock(&self.conns.per_address);
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// One connection listed among the open ones while it lives.
struct Registered {
    conns: Arc<Connections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        Connections::lock(&self.conns.open).remove(&self.id);
    }
}

/// One request in flight on a connection.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        if a.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            a.idle_since.store(a.now_ms(), Ordering::SeqCst);
        }
        if a.closing.load(Ordering::SeqCst) {
            a.changed.notify_one();
        }
    }
}

/// A response body that keeps its request counted as in flight until it
/// has been sent (or dropped), and records when it last moved.
struct InFlightBody {
    body: Body,
    progress: Arc<AtomicU64>,
    guard: InFlight,
}

impl InFlightBody {
    fn new(body: Body, guard: InFlight) -> Self {
        let activity = &guard.0;
        let progress = Arc::new(AtomicU64::new(activity.now_ms()));
        activity
            .responses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(progress.clone());
        InFlightBody {
            body,
            progress,
            guard,
        }
    }
}

impl Drop for InFlightBody {
    fn drop(&mut self) {
        let mut responses = self
            .guard
            .0
            .responses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        responses.retain(|p| !Arc::ptr_eq(p, &self.progress));
    }
}

impl HttpBody for InFlightBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            let now = self.guard.0.now_ms();
            self.progress.store(now, Ordering::SeqCst);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's byte stream, telling [`Activity`] when bytes arrive.
struct Tracked<IO> {
    inner: IO,
    activity: Arc<Activity>,
    /// Bytes read from and written to the client (`client_bytes` metric).
    bytes_in: Counter,
    bytes_out: Counter,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if matches!(polled, Poll::Ready(Ok(()))) && read > 0 {
            self.activity.on_read();
            self.bytes_in.inc_by(read as u64);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.bytes_out.inc_by(n as u64);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.bytes_out.inc_by(n as u64);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use crate::app::App;

    use std::sync::atomic::AtomicUsize;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::authn::Identity;
    use crate::config::{Config, RawConfig};
    use crate::scope::{Action, Scope};

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    struct Running {
        addr: SocketAddr,
        app: Arc<App>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        done: tokio::task::JoinHandle<()>,
        /// The test's own store (never the default `data/` of the checkout).
        _store: tempfile::TempDir,
    }

    async fn start(upstream: &str, edit: impl FnOnce(&mut RawConfig)) -> Running {
        let mut raw = RawConfig::default();
        raw.upstream.url = upstream.to_owned();
        let store = tempfile::tempdir().unwrap();
        raw.store.url = crate::store::StoreUrl(format!("sqlite://{}/s.db", store.path().display()));
        raw.limits.header_read_timeout = Duration::from_millis(300);
        raw.limits.idle_timeout = Duration::from_secs(5);
        // Audit lines written straight to stdout would bypass test capture.
        raw.audit.output = "off".into();
        edit(&mut raw);
        let app = Arc::new(App::build(Config::resolve(raw).unwrap()).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let live = Arc::new(Live::fixed(app.clone()));
        let done = tokio::spawn(serve(listener, live, None, async {
            let _ = rx.await;
        }));
        Running {
            addr,
            app,
            stop: Some(tx),
            done,
            _store: store,
        }
    }

    /// Sends `raw` and reads until the peer closes; (bytes, how long it took).
    async fn exchange(addr: SocketAddr, raw: &[u8]) -> (Vec<u8>, Duration) {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the server never closed the connection");
        (out, started.elapsed())
    }

    fn status(response: &[u8]) -> String {
        String::from_utf8_lossy(response)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    async fn healthz(addr: SocketAddr) -> String {
        let (out, _) = exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n\r\n",
        )
        .await;
        status(&out)
    }

    #[tokio::test]
    async fn slow_headers_are_cut_off_while_others_are_served() {
        let gate = start("http://127.0.0.1:9", |_| {}).await;
        let slow = tokio::spawn(exchange(
            gate.addr,
            b"GET /healthz HTTP/1.1\r\nHost: gate\r\n",
        ));
        for _ in 0..5 {
            assert_eq!(healthz(gate.addr).await, "HTTP/1.1 200 OK");
        }
        let (out, took) = slow.await.unwrap();
        assert!(!status(&out).contains("200"), "{out:?}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let gate = start("http://127.0.0.1:9", |raw| {
            raw.limits.idle_timeout = Duration::from_millis(400);
            raw.limits.header_read_timeout = Duration::from_secs(5);
        })
        .await;
        // Silent from the start.
        let (out, took) = exchange(gate.addr, b"").await;
        assert!(out.is_empty());
        assert!(took >= Duration::from_millis(350), "{took:?}");
        // Idle after a keep-alive request.
        let (out, took) = exchange(gate.addr, b"GET /healthz HTTP/1.1\r\nHost: gate\r\n\r\n").await;
        assert_eq!(status(&out), "HTTP/1.1 200 OK");
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn oversized_heads_are_refused() {
        let gate = start("http://127.0.0.1:9", |raw| {
            raw.limits.max_header_bytes = 16 * 1024;
            raw.limits.max_headers = 20;
        })
        .await;
        let big = format!(
            "GET /healthz HTTP/1.1\r\nHost: gate\r\nX-Big: {}\r\n\r\n",
            "a".repeat(20 * 1024)
        );
        let (out, _) = exchange(gate.addr, big.as_bytes()).await;
        assert!(status(&out).contains("431"), "{}", status(&out));
        let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
        let req = format!("GET /healthz HTTP/1.1\r\nHost: gate\r\n{many}\r\n");
        let (out, _) = exchange(gate.addr, req.as_bytes()).await;
        assert!(status(&out).contains("431"), "{}", status(&out));
        assert_eq!(healthz(gate.addr).await, "HTTP/1.1 200 OK");
    }

    /// Issue 17, finding 3: silent connections filled `max_connections`
    /// and every other client (`/healthz` included) waited. With all slots
    /// taken, idle connections are closed (the longest idle first) to make
    /// room.
    #[tokio::test]
    async fn idle_connections_make_room_for_new_ones() {
        let gate = start("http://127.0.0.1:9", |raw| {
            raw.limits.max_connections = 2;
            raw.limits.header_read_timeout = Duration::from_secs(30);
            raw.limits.idle_timeout = Duration::from_secs(30);
            raw.limits.first_request_timeout = Duration::from_secs(30);
        })
        .await;
        let mut first = TcpStream::connect(gate.addr).await.unwrap();
        let _second = TcpStream::connect(gate.addr).await.unwrap();
        let served = tokio::time::timeout(Duration::from_secs(10), healthz(gate.addr))
            .await
            .expect("served while two idle connections held every slot");
        assert_eq!(served, "HTTP/1.1 200 OK");
        // The longest idle one made room: closed without a word.
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(10), first.read(&mut buf))
            .await
            .expect("the oldest idle connection was closed");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }

    /// Behind a trusted balancer every client arrives from its address: the
    /// per-address connection limit must not cap the whole fleet's clients
    /// at `max_connections_per_address` (the balancer limits its clients).
    #[tokio::test]
    async fn trusted_balancers_are_not_held_to_the_per_address_limit() {
        let gate = start("http://127.0.0.1:9", |raw| {
            raw.limits.max_connections_per_address = 1;
            raw.server.trusted_proxies = vec!["127.0.0.1/32".into()];
        })
        .await;
        let _held = TcpStream::connect(gate.addr).await.unwrap();
        let served = tokio::time::timeout(Duration::from_secs(10), healthz(gate.addr))
            .await
            .expect("answered");
        assert_eq!(
            served, "HTTP/1.1 200 OK",
            "a second connection from the balancer"
        );
    }

    /// Only while no connection is idle do new ones wait.
    #[tokio::test]
    async fn connections_beyond_the_limit_wait_while_none_is_idle() {
        let upstream = slow_upstream(20_000, 10, Duration::from_millis(150)).await;
        let gate = start(&format!("http://{upstream}"), |raw| {
            raw.limits.max_connections = 2;
        })
        .await;
        let token = pull_token(&gate.app);
        let req = format!(
            "GET /v2/a/blobs/{DIGEST} HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        let mut busy = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(gate.addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut first = [0u8; 12];
            s.read_exact(&mut first).await.unwrap();
            assert_eq!(&first, b"HTTP/1.1 200");
            busy.push(s);
        }
        let third = tokio::spawn(healthz(gate.addr));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!third.is_finished(), "a third connection was served");
        for mut s in busy {
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
        }
        let got = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("served once a slot was free")
            .unwrap();
        assert_eq!(got, "HTTP/1.1 200 OK");
    }

    /// An upstream that answers every request with `len` bytes, slowly.
    async fn slow_upstream(len: usize, chunks: usize, pause: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if s.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n\r\n"
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    for _ in 0..chunks {
                        tokio::time::sleep(pause).await;
                        if s.write_all(&vec![b'x'; len / chunks]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// An upstream that answers every request with 1 MiB and counts its
    /// connections: open now and the most ever open at once. A connection
    /// counts until the gate closes it.
    async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (o, p) = (open.clone(), peak.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let now = o.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                let o = o.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut head = Vec::new();
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                        if head.windows(4).any(|w| w == b"\r\n\r\n") {
                            head.clear();
                            let len = 1 << 20;
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n\r\n"
                            );
                            if s.write_all(resp.as_bytes()).await.is_err()
                                || s.write_all(&vec![b'x'; len]).await.is_err()
                            {
                                break;
                            }
                        }
                    }
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (addr, open, peak)
    }

    /// Issue 17, finding 2: on the plain port (h2c with prior knowledge), one
    /// connection opened 200 blob GETs with a zero flow-control window, and
    /// each held an upstream connection past the stall timeout (still at
    /// 150 s); six such connections exhausted a 1024-fd gate. Now a
    /// connection has at most `max_streams_per_connection` streams, all
    /// connections together at most `max_upstream_connections` upstream
    /// connections (the rest: 503), and a response the client takes no byte
    /// of for `body_stall_timeout` closes its connection, upstream ones
    /// included. Scaled down: 2 connections x 12 requests, 8 streams each,
    /// 12 upstream connections, a 2 s stall limit.
    #[tokio::test]
    async fn stuck_http2_streams_release_their_upstream_connections() {
        let (upstream, open, peak) = counting_upstream().await;
        let gate = start(&format!("http://{upstream}"), |raw| {
            raw.limits.body_stall_timeout = Duration::from_secs(2);
            raw.limits.max_streams_per_connection = 8;
            raw.limits.max_upstream_connections = 12;
            raw.upstream.connect_timeout = Duration::from_millis(200);
        })
        .await;
        let token = pull_token(&gate.app);
        let (status_tx, mut status_rx) = tokio::sync::mpsc::unbounded_channel::<u16>();
        let mut statuses = Vec::new();
        let mut conns = Vec::new();
        for _ in 0..2 {
            let tcp = TcpStream::connect(gate.addr).await.unwrap();
            let (client, conn) = h2::client::Builder::new()
                .initial_window_size(0)
                .handshake::<_, Bytes>(tcp)
                .await
                .unwrap();
            conns.push(tokio::spawn(conn));
            for _ in 0..12 {
                let (client, token, status_tx) = (client.clone(), token.clone(), status_tx.clone());
                statuses.push(tokio::spawn(async move {
                    let mut client = client.ready().await.ok()?;
                    let req = hyper::Request::get(format!("http://gate/v2/a/blobs/{DIGEST}"))
                        .header("authorization", format!("Bearer {token}"))
                        .body(())
                        .unwrap();
                    let (resp, _) = client.send_request(req, true).ok()?;
                    // The head arrives; the body never can (zero window).
                    let resp = resp.await.ok()?;
                    let _ = status_tx.send(resp.status().as_u16());
                    // Keep the stream open, as the attacker did.
                    let _body = resp.into_body();
                    std::future::pending::<()>().await;
                    Some(())
                }));
            }
        }
        // The upstream connections in use reach the total bound, never more.
        let deadline = Instant::now() + Duration::from_secs(20);
        while open.load(Ordering::SeqCst) < 12 {
            assert!(
                Instant::now() < deadline,
                "open: {}",
                open.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Streams beyond the total bound are told 503 (after
        // upstream.connect_timeout), not queued for ever.
        let (mut ok, mut busy) = (0, 0);
        while busy == 0 {
            let status = tokio::time::timeout(Duration::from_secs(10), status_rx.recv())
                .await
                .expect("a stream beyond the upstream bound was answered")
                .expect("status");
            match status {
                200 => ok += 1,
                503 => busy += 1,
                other => panic!("status {other}"),
            }
        }
        assert!(ok <= 12, "{ok} streams got an upstream connection");
        // Then every stuck response closes its connection, and the upstream
        // connections go with it.
        while open.load(Ordering::SeqCst) > 0 {
            assert!(
                Instant::now() < deadline,
                "still open upstream: {}",
                open.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            peak.load(Ordering::SeqCst) <= 12,
            "peak {}",
            peak.load(Ordering::SeqCst)
        );
        for c in conns {
            let ended = tokio::time::timeout(Duration::from_secs(10), c).await;
            assert!(ended.is_ok(), "the gate kept a stuck connection open");
        }
        for s in statuses {
            s.abort();
        }
        // The gate serves on.
        assert_eq!(healthz(gate.addr).await, "HTTP/1.1 200 OK");
    }

    fn pull_token(app: &App) -> String {
        let identity = Identity {
            account: "alice".into(),
            backend: crate::authn::Backend::Static,
            labels: Default::default(),
            credential: None,
        };
        app.issuer
            .issue(&identity, &[Scope::repository("a", [Action::Pull])])
            .unwrap()
            .token
    }

    #[tokio::test]
    async fn shutdown_refuses_new_connections_and_finishes_transfers() {
        let upstream = slow_upstream(40_000, 8, Duration::from_millis(100)).await;
        let mut gate = start(&format!("http://{upstream}"), |raw| {
            raw.limits.shutdown_timeout = Duration::from_secs(10);
        })
        .await;
        let token = pull_token(&gate.app);
        let mut s = TcpStream::connect(gate.addr).await.unwrap();
        let req = format!(
            "GET /v2/a/blobs/{DIGEST} HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut first = [0u8; 64];
        let n = s.read(&mut first).await.unwrap();
        assert!(first[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &first[..n]);

        let _ = gate.stop.take().unwrap().send(());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            TcpStream::connect(gate.addr).await.is_err(),
            "new connections are refused while draining"
        );
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        let mut whole = first[..n].to_vec();
        whole.extend(rest);
        let body_at = whole.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(whole.len() - body_at, 40_000);
        tokio::time::timeout(Duration::from_secs(5), &mut gate.done)
            .await
            .expect("serve returns once drained")
            .unwrap();
    }

    #[tokio::test]
    async fn shutdown_gives_up_after_its_deadline() {
        let upstream = slow_upstream(1000, 10, Duration::from_secs(1)).await;
        let mut gate = start(&format!("http://{upstream}"), |raw| {
            raw.limits.shutdown_timeout = Duration::from_millis(300);
        })
        .await;
        let token = pull_token(&gate.app);
        let mut s = TcpStream::connect(gate.addr).await.unwrap();
        let req = format!(
            "GET /v2/a/blobs/{DIGEST} HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut first = [0u8; 16];
        let _ = s.read(&mut first).await.unwrap();
        let started = Instant::now();
        let _ = gate.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), &mut gate.done)
            .await
            .expect("serve returns at the deadline")
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
