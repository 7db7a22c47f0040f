//! The TLS listener's configuration: TLS 1.2 and 1.3 only, ALPN `h2` then
//! `http/1.1`, and a certificate that follows its files. A background task
//! checks the certificate and key files every `server.tls.reload_interval`;
//! when they change and the new pair loads (and the key matches the
//! certificate), new handshakes get it. A pair that does not load is logged
//! and the previous certificate stays in service, so a renewal written in
//! two steps (certificate, then key) never takes the listener down.

use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

use crate::config::TlsFiles;

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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its private key and checks that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
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
    CertifiedKey::from_der(certs, private, &provider())
        .map_err(|e| TlsError::Config(format!("{} and {}: {e}", cert.display(), key.display())))
}

/// Hands every handshake the certificate currently loaded.
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
    cert: PathBuf,
    key: PathBuf,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ReloadingCert {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(ReloadingCert {
            current: RwLock::new(Arc::new(load_certified_key(cert, key)?)),
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Loads the files again; on success new handshakes get the new pair.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(load_certified_key(&self.cert, &self.key)?);
        match self.current.write() {
            Ok(mut c) => *c = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// What identifies the files' current content cheaply: (mtime, length)
    /// of each; `None` when one cannot be read.
    fn fingerprint(&self) -> Option<[(SystemTime, u64); 2]> {
        let stat = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        };
        Some([stat(&self.cert)?, stat(&self.key)?])
    }
}

/// The rustls server configuration around a certificate resolver.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The acceptor for `[server.tls]`. Inside a tokio runtime it also starts the
/// task that reloads the files when they change (it ends with the acceptor).
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let resolver = Arc::new(ReloadingCert::load(&files.cert, &files.key)?);
    let config = server_config(resolver.clone())?;
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::spawn(watch(Arc::downgrade(&resolver), files.reload_interval));
    }
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Polls the files' fingerprint and reloads on a change, until the resolver is gone.
async fn watch(resolver: Weak<ReloadingCert>, every: Duration) {
    let Some(mut loaded) = resolver.upgrade().and_then(|r| r.fingerprint()) else {
        return;
    };
    let mut reported = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(r) = resolver.upgrade() else { return };
        let now = r.fingerprint();
        if now.is_none() || now == Some(loaded) {
            continue;
        }
        match r.reload() {
            Ok(()) => {
                tracing::info!(
                    cert = %r.cert.display(),
                    "TLS certificate reloaded"
                );
                loaded = now.unwrap_or(loaded);
                reported = None;
            }
            // Probably half written: keep serving the old pair, retry on
            // the next tick, say so once per state of the files.
            Err(e) if reported != now => {
                tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous certificate");
                reported = now;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k, cert.der().to_vec())
    }

    #[tokio::test]
    async fn reloads_changed_files_and_keeps_the_old_pair_on_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, first) = write_pair(dir.path(), "one.example");
        let resolver = Arc::new(ReloadingCert::load(&cert, &key).unwrap());
        tokio::spawn(watch(Arc::downgrade(&resolver), Duration::from_millis(20)));
        assert_eq!(resolver.current().cert[0].as_ref(), &first[..]);

        // A certificate whose key is not (yet) beside it: refused, old pair kept.
        let other = tempfile::tempdir().unwrap();
        let (new_cert, new_key, second) = write_pair(other.path(), "two.example");
        std::fs::copy(&new_cert, &cert).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(resolver.current().cert[0].as_ref(), &first[..]);
        assert!(matches!(resolver.reload(), Err(TlsError::Config(_))));

        // The key follows: the new pair is served.
        std::fs::copy(&new_key, &key).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while resolver.current().cert[0].as_ref() != &second[..] {
            assert!(std::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Garbage is refused too.
        std::fs::write(&key, "not a key").unwrap();
        assert!(matches!(resolver.reload(), Err(TlsError::File { .. })));
        assert_eq!(resolver.current().cert[0].as_ref(), &second[..]);
    }

    /// Handshakes in memory with a client offering `versions` and ALPN
    /// `http/1.1, h2`; the negotiated (version, ALPN protocol).
    async fn handshake(
        acceptor: TlsAcceptor,
        trusted: &[u8],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<(rustls::ProtocolVersion, Option<Vec<u8>>), String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(trusted.to_vec()))
            .unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec(), b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move { acceptor.accept(b).await.map(|_| ()) });
        let name = rustls::pki_types::ServerName::try_from("gate.example").unwrap();
        let stream = connector
            .connect(name, a)
            .await
            .map_err(|e| e.to_string())?;
        server.await.unwrap().map_err(|e| e.to_string())?;
        let conn = stream.get_ref().1;
        Ok((
            conn.protocol_version().unwrap(),
            conn.alpn_protocol().map(<[u8]>::to_vec),
        ))
    }

    #[tokio::test]
    async fn speaks_tls12_and_tls13_and_prefers_h2() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, der) = write_pair(dir.path(), "gate.example");
        let files = TlsFiles {
            cert,
            key,
            reload_interval: Duration::from_secs(10),
        };
        let acceptor = acceptor(&files).unwrap();
        let got = handshake(acceptor.clone(), &der, &[&rustls::version::TLS13])
            .await
            .unwrap();
        assert_eq!(
            got,
            (rustls::ProtocolVersion::TLSv1_3, Some(b"h2".to_vec()))
        );
        let got = handshake(acceptor, &der, &[&rustls::version::TLS12])
            .await
            .unwrap();
        assert_eq!(
            got,
            (rustls::ProtocolVersion::TLSv1_2, Some(b"h2".to_vec()))
        );
    }
}
