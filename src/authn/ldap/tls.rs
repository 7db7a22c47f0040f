//! Trust for ldaps:// and StartTLS: the system roots plus every PEM
//! certificate in `ca_dir`, or (for tests only) no verification at all.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::config::LdapConfigError;

/// Where Debian/Ubuntu, Fedora/RHEL and others keep the system trust bundle.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn err(message: impl Into<String>) -> LdapConfigError {
    LdapConfigError {
        key: "ldap.ca_dir".to_owned(),
        message: message.into(),
    }
}

/// Adds the system trust bundle (`SSL_CERT_FILE` or the first bundle found);
/// returns how many certificates it held.
pub(crate) fn add_system_roots(store: &mut RootCertStore) -> usize {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let candidates = from_env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from));
    for path in candidates {
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(file))
            .filter_map(Result::ok)
            .collect();
        let (added, _) = store.add_parsable_certificates(certs);
        tracing::debug!(bundle = %path.display(), added, "loaded system trust roots");
        return added;
    }
    tracing::debug!("no system trust bundle found");
    0
}

/// Adds every certificate of every PEM file in `dir`; returns how many.
fn add_ca_dir(store: &mut RootCertStore, dir: &Path) -> Result<usize, LdapConfigError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| err(format!("cannot read directory {}: {e}", dir.display())))?;
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    paths.sort();
    let mut total = 0;
    for path in paths {
        let bytes = std::fs::read(&path)
            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
        let certs = rustls_pemfile::certs(&mut bytes.as_slice())
            .collect::<Result<Vec<CertificateDer<'static>>, _>>()
            .map_err(|e| err(format!("{}: bad PEM: {e}", path.display())))?;
        if certs.is_empty() {
            tracing::debug!(file = %path.display(), "no certificate in file of ldap.ca_dir, skipped");
            continue;
        }
        for cert in certs {
            store
                .add(cert)
                .map_err(|e| err(format!("{}: unusable certificate: {e}", path.display())))?;
            total += 1;
        }
    }
    if total == 0 {
        tracing::warn!(dir = %dir.display(), "ldap.ca_dir holds no PEM certificate");
    }
    Ok(total)
}

/// The rustls client configuration for LDAP connections, and how many
/// certificates `ca_dir` contributed.
pub fn client_config(
    ca_dir: Option<&Path>,
    insecure_skip_verify: bool,
) -> Result<(Arc<rustls::ClientConfig>, usize), LdapConfigError> {
    let mut roots = RootCertStore::empty();
    add_system_roots(&mut roots);
    let from_dir = match ca_dir {
        Some(dir) => add_ca_dir(&mut roots, dir)?,
        None => 0,
    };
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LdapConfigError {
            key: "ldap".to_owned(),
            message: format!("TLS setup: {e}"),
        })?;
    let config = if insecure_skip_verify {
        tracing::warn!(
            "ldap.insecure_skip_verify is set: LDAP server certificates are NOT verified; \
             anyone on the network path can read service account and user passwords"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok((Arc::new(config), from_dir))
}

/// `insecure_skip_verify`: any certificate for any name is accepted (the
/// handshake signatures are still checked, against the presented key).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
