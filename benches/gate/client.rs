//! The load generator's HTTP/1.1 client: hyper's low-level connection API
//! (one keep-alive connection per task, no pool, no redirects), plain TCP or
//! rustls, and a request body that streams a repeated pattern (pushes of
//! 1 GiB without holding 1 GiB).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// Where requests go: an address, over TLS or not.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: Option<Arc<ClientConfig>>,
    host: HeaderValue,
}

impl Target {
    pub fn plain(addr: SocketAddr) -> Self {
        Target {
            addr,
            tls: None,
            host: HeaderValue::from_str(&addr.to_string()).expect("host header"),
        }
    }

    pub fn tls(addr: SocketAddr, config: Arc<ClientConfig>) -> Self {
        Target {
            tls: Some(config),
            ..Target::plain(addr)
        }
    }
}

/// A rustls client config trusting only `ca_pem`, offering HTTP/1.1 only
/// (as the servers compared here would all be spoken to).
pub fn tls_client_config(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A request body: nothing, some bytes, or `len` bytes of `pattern`
/// repeated, sent in slices of `chunk` bytes (no copies: `Bytes` slices).
/// A pattern body of unknown length (`sized: false`) goes out chunked, one
/// HTTP chunk per slice.
pub enum ReqBody {
    Empty,
    Full(Option<Bytes>),
    Pattern {
        pattern: Bytes,
        offset: usize,
        remaining: u64,
        chunk: usize,
        sized: bool,
    },
}

/// The chunk size docker (20.10) and podman (4) push a layer's PATCH in,
/// measured with strace: one chunk per 32 KiB `io.Copy` buffer.
pub const GO_CHUNK: usize = 32 * 1024;

impl ReqBody {
    /// A body with a `Content-Length`, sent in 256 KiB slices.
    pub fn pattern(pattern: Bytes, len: u64) -> Self {
        ReqBody::Pattern {
            pattern,
            offset: 0,
            remaining: len,
            chunk: 256 * 1024,
            sized: true,
        }
    }

    /// A body without a length, sent chunked in 32 KiB chunks, as docker and
    /// podman send a blob's PATCH.
    pub fn chunked(pattern: Bytes, len: u64) -> Self {
        ReqBody::Pattern {
            pattern,
            offset: 0,
            remaining: len,
            chunk: GO_CHUNK,
            sized: false,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Pattern {
                pattern,
                offset,
                remaining,
                chunk,
                ..
            } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = (*chunk)
                    .min(pattern.len() - *offset)
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                let data = pattern.slice(*offset..*offset + n);
                *offset = (*offset + n) % pattern.len();
                *remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Pattern { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqBody::Pattern {
                remaining,
                sized: true,
                ..
            } => SizeHint::with_exact(*remaining),
            // Unknown to hyper, which then sends it chunked.
            ReqBody::Pattern { .. } => SizeHint::default(),
        }
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    target: Target,
    sender: http1::SendRequest<ReqBody>,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Conn {
    pub async fn open(target: &Target) -> Result<Conn, BoxError> {
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target.addr))
            .await
            .map_err(|_| format!("connect {}: timed out", target.addr))??;
        tcp.set_nodelay(true)?;
        let sender = match &target.tls {
            None => handshake(tcp).await?,
            Some(config) => {
                let name = ServerName::IpAddress(target.addr.ip().into());
                let tls = TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await?;
                handshake(tls).await?
            }
        };
        Ok(Conn {
            target: target.clone(),
            sender,
        })
    }

    /// A request to this connection's target, with `Host` set.
    pub fn request(&self, method: Method, path_and_query: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::HOST, self.target.host.clone())
    }

    pub async fn send(&mut self, req: Request<ReqBody>) -> Result<Response<Incoming>, BoxError> {
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }

    /// Sends and reads the whole (small) answer.
    pub async fn fetch(
        &mut self,
        req: Request<ReqBody>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), BoxError> {
        let resp = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await?.to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }

    /// Sends and counts the answer's body bytes without keeping them.
    pub async fn drain(&mut self, req: Request<ReqBody>) -> Result<(StatusCode, u64), BoxError> {
        let resp = self.send(req).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                n += data.len() as u64;
            }
        }
        Ok((status, n))
    }
}

async fn handshake<IO>(io: IO) -> Result<http1::SendRequest<ReqBody>, BoxError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake::<_, ReqBody>(TokioIo::new(io))
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
