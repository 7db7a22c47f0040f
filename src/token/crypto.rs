//! The signature backend of jsonwebtoken: ring, with parsed keys kept.
//!
//! jsonwebtoken does the JWS framing and the claim checks; it asks its
//! process-wide [`CryptoProvider`] for a signer or verifier per token. Its
//! RustCrypto backend re-parsed the PKCS#8 key (and derived the public key)
//! on every signature and verified P-256 several times slower than ring,
//! which the gate already links for rustls. This provider signs and
//! verifies ES256 and RS256 with ring, keeping each parsed private key in a
//! small map from its DER bytes. Everything else (HMAC above all: the gate
//! never accepts a shared-secret token) is refused.
//!
//! [`install`] puts it in place; [`super::Issuer::new`] and
//! [`super::Verifier::new`] call it, so anything that signs or verifies
//! through them has it. It is idempotent.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, Result};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents,
    UnparsedPublicKey,
};

/// The gate's provider: ES256 and RS256 through ring.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory,
    verifier_factory,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key,
        rsa_pub_components_from_public_key,
        ec_pub_components_from_private_key,
        ed_pub_components_from_private_key,
        compute_digest,
    },
};

/// Makes [`PROVIDER`] jsonwebtoken's provider for this process. Returns
/// whether it is the one in place (false only if something installed
/// another one first, which nothing in the gate does).
pub fn install() -> bool {
    static INSTALLED: LazyLock<bool> = LazyLock::new(|| match PROVIDER.install_default() {
        Ok(()) => true,
        Err(existing) => std::ptr::eq(existing, &PROVIDER),
    });
    *INSTALLED
}

/// At most this many parsed private keys are kept (a gate has one signing
/// key; tests make many): past it the map starts over.
const MAX_CACHED_KEYS: usize = 64;

enum Parsed {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

static SIGNING_KEYS: LazyLock<RwLock<HashMap<Vec<u8>, Arc<Parsed>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

fn parsed(algorithm: Algorithm, der: &[u8]) -> Result<Arc<Parsed>> {
    if let Some(hit) = SIGNING_KEYS.read().ok().and_then(|m| m.get(der).cloned()) {
        // The same bytes cannot be both an EC and an RSA key.
        return Ok(hit);
    }
    let key = match algorithm {
        Algorithm::ES256 => Parsed::Ec(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?,
        ),
        Algorithm::RS256 => Parsed::Rsa(
            RsaKeyPair::from_der(der)
                .or_else(|_| RsaKeyPair::from_pkcs8(der))
                .map_err(|e| Error::from(ErrorKind::InvalidRsaKey(e.to_string())))?,
        ),
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    let key = Arc::new(key);
    if let Ok(mut map) = SIGNING_KEYS.write() {
        if map.len() >= MAX_CACHED_KEYS {
            map.clear();
        }
        map.insert(der.to_vec(), key.clone());
    }
    Ok(key)
}

struct RingSigner {
    algorithm: Algorithm,
    key: Arc<Parsed>,
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let rng = SystemRandom::new();
        match &*self.key {
            Parsed::Ec(pair) => pair
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            Parsed::Rsa(pair) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, msg, &mut out)
                    .map_err(|_| signature::Error::new())?;
                Ok(out)
            }
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn signer_factory(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    let family = match algorithm {
        Algorithm::ES256 => AlgorithmFamily::Ec,
        Algorithm::RS256 => AlgorithmFamily::Rsa,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    if key.family() != family {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let parsed = parsed(*algorithm, key.as_bytes())?;
    match (&*parsed, algorithm) {
        (Parsed::Ec(_), Algorithm::ES256) | (Parsed::Rsa(_), Algorithm::RS256) => {}
        _ => return Err(ErrorKind::InvalidKeyFormat.into()),
    }
    Ok(Box::new(RingSigner {
        algorithm: *algorithm,
        key: parsed,
    }))
}

enum PublicKey {
    /// An uncompressed P-256 point.
    Ec(Vec<u8>),
    /// A PKCS#1 RSAPublicKey.
    RsaDer(Vec<u8>),
    RsaComponents {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

struct RingVerifier {
    algorithm: Algorithm,
    key: PublicKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let ok = match &self.key {
            PublicKey::Ec(point) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).verify(msg, sig)
            }
            PublicKey::RsaDer(der) => {
                UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der).verify(msg, sig)
            }
            PublicKey::RsaComponents { n, e } => {
                RsaPublicKeyComponents { n, e }.verify(&RSA_PKCS1_2048_8192_SHA256, msg, sig)
            }
        };
        ok.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn verifier_factory(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let public = match (algorithm, key.family(), key.kind()) {
        (Algorithm::ES256, AlgorithmFamily::Ec, DecodingKeyKind::SecretOrDer(point)) => {
            PublicKey::Ec(point.clone())
        }
        (Algorithm::RS256, AlgorithmFamily::Rsa, DecodingKeyKind::SecretOrDer(der)) => {
            PublicKey::RsaDer(der.clone())
        }
        (Algorithm::RS256, AlgorithmFamily::Rsa, DecodingKeyKind::RsaModulusExponent { n, e }) => {
            PublicKey::RsaComponents {
                n: n.clone(),
                e: e.clone(),
            }
        }
        (Algorithm::ES256 | Algorithm::RS256, _, _) => {
            return Err(ErrorKind::InvalidKeyFormat.into());
        }
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        key: public,
    }))
}

// JWK helpers: the gate makes no JWKs; these answer without panicking.

fn rsa_pub_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let pair = RsaKeyPair::from_der(der)
        .or_else(|_| RsaKeyPair::from_pkcs8(der))
        .map_err(|e| Error::from(ErrorKind::InvalidRsaKey(e.to_string())))?;
    let components: RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
    Ok((components.n, components.e))
}

fn rsa_pub_components_from_public_key(_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    Err(ErrorKind::InvalidKeyFormat.into())
}

fn ec_pub_components_from_private_key(
    der: &[u8],
    algorithm: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    if algorithm != Algorithm::ES256 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
            .map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?;
    let point = pair.public_key().as_ref();
    if point.len() != 65 || point[0] != 4 {
        return Err(ErrorKind::InvalidEcdsaKey.into());
    }
    let (x, y) = point[1..].split_at(32);
    Ok((EllipticCurve::P256, x.to_vec(), y.to_vec()))
}

fn ed_pub_components_from_private_key(_der: &[u8], _curve: &EllipticCurve) -> Result<Vec<u8>> {
    Err(ErrorKind::InvalidAlgorithm.into())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(ring::digest::digest(algorithm, data).as_ref().to_vec())
}
