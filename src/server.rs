//! The accept loop: takes a bound listener (tests bind `127.0.0.1:0`),
//! serves HTTP/1.1 and HTTP/2 (over TLS by ALPN when configured), and stops
//! accepting on shutdown while in-flight requests finish.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

use futures_util::FutureExt;

use crate::app::App;
use crate::http::body::Body;
use crate::http::{self, Conn};

type HandlerFuture = std::pin::Pin<
    Box<dyn Future<Output = Result<hyper::Response<Body>, std::convert::Infallible>> + Send>,
>;

/// How long in-flight requests may run on after a shutdown signal.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// How long a client may take to send its request headers (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls.{key}: cannot read {path}: {message}")]
    File {
        key: &'static str,
        path: String,
        message: String,
    },
    #[error("server.tls: {0}")]
    Config(String),
}

/// Builds the TLS acceptor: TLS 1.2 and 1.3 only, ALPN h2 then http/1.1.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let file_err = |key: &'static str, path: &Path, message: String| TlsError::File {
        key,
        path: path.display().to_string(),
        message,
    };
    let certs = std::fs::File::open(cert)
        .map_err(|e| file_err("cert", cert, e.to_string()))
        .and_then(|f| {
            rustls_pemfile::certs(&mut BufReader::new(f))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file_err("cert", cert, e.to_string()))
        })?;
    if certs.is_empty() {
        return Err(file_err("cert", cert, "no PEM certificate in it".into()));
    }
    let private = std::fs::File::open(key)
        .map_err(|e| file_err("key", key, e.to_string()))
        .and_then(|f| {
            rustls_pemfile::private_key(&mut BufReader::new(f))
                .map_err(|e| file_err("key", key, e.to_string()))
        })?
        .ok_or_else(|| file_err("key", key, "no PEM private key in it".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves until `shutdown` completes, then drains for up to `DRAIN_DEADLINE`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024);
    builder.http2().timer(hyper_util::rt::TokioTimer::new());
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
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
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let conn = Conn {
                peer,
                tls: tls.is_some(),
            };
            let service = service_fn(move |req| -> HandlerFuture {
                // Boxed so the future's type is named: without it rustc cannot
                // prove the higher-ranked Send bound hyper's executor needs.
                Box::pin(http::handle(app.clone(), req, conn).map(Ok))
            });
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => {
                        let c = builder.serve_connection(TokioIo::new(s), service);
                        watcher.watch(c.into_owned()).await
                    }
                    Err(e) => {
                        tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    let c = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(c.into_owned()).await
                }
            };
            if let Err(e) = result {
                // Clients hang up mid-request all the time; not an error of ours.
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(DRAIN_DEADLINE) => tracing::warn!("drain deadline passed; closing"),
    }
}
