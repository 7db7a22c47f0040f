//! Signing keys: loading PKCS#8 PEM files, generating ES256 keys, and the
//! key ID in the form distribution expects.
//!
//! distribution (`registry/auth/token`) looks a token's `kid` up among the
//! keys of its `rootcertbundle` by their libtrust key ID: the SHA-256 of the
//! DER SubjectPublicKeyInfo, truncated to 240 bits, base32-encoded and split
//! into twelve groups of four characters joined by `:`. Using the same form
//! means a distribution registry could verify our tokens directly too.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rcgen::{KeyPair, PublicKeyData};
use sha2::{Digest, Sha256};

use super::verifier::VerifyingKey;

/// Why a key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PKCS#8 PEM private key ({0})")]
    Parse(String),
    #[error("unsupported key type: only ECDSA P-256 (ES256) and RSA (RS256) keys sign tokens")]
    Unsupported,
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// A key that signs tokens, with what verifying needs.
pub struct SigningKey {
    pub algorithm: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a PKCS#8 PEM private key (ES256 or RS256).
    pub fn from_pem(pem: &str) -> Result<SigningKey, KeyError> {
        let pair = KeyPair::from_pem(pem).map_err(|e| KeyError::Parse(e.to_string()))?;
        let algorithm = if pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            Algorithm::ES256
        } else if pair.is_compatible(&rcgen::PKCS_RSA_SHA256) {
            Algorithm::RS256
        } else {
            return Err(KeyError::Unsupported);
        };
        let pkcs8 = pair.serialize_pem();
        let public = pair.public_key_pem();
        let bad = |e: jsonwebtoken::errors::Error| KeyError::Parse(e.to_string());
        let (encoding, decoding) = match algorithm {
            Algorithm::ES256 => (
                EncodingKey::from_ec_pem(pkcs8.as_bytes()).map_err(bad)?,
                DecodingKey::from_ec_pem(public.as_bytes()).map_err(bad)?,
            ),
            _ => (
                EncodingKey::from_rsa_pem(pkcs8.as_bytes()).map_err(bad)?,
                DecodingKey::from_rsa_pem(public.as_bytes()).map_err(bad)?,
            ),
        };
        Ok(SigningKey {
            algorithm,
            kid: libtrust_key_id(&pair.subject_public_key_info()),
            encoding,
            decoding,
        })
    }

    /// The public half, for a [`super::Verifier`].
    pub fn verifying(&self) -> VerifyingKey {
        VerifyingKey {
            kid: self.kid.clone(),
            algorithm: self.algorithm,
            key: self.decoding.clone(),
        }
    }

    /// A fresh ES256 key that lives as long as the process.
    pub fn ephemeral() -> Result<SigningKey, KeyError> {
        SigningKey::from_pem(&generate_es256_pem()?)
    }
}

/// DER encodings of the object identifiers that name the key types we verify.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

/// A key whose tokens are accepted (`token.previous_keys`): a PEM public key
/// (`BEGIN PUBLIC KEY`, as `openssl pkey -pubout` writes) or a PEM private
/// key, of which only the public half is kept.
pub fn verifying_key_from_pem(pem: &str) -> Result<VerifyingKey, KeyError> {
    let mut rest = pem.as_bytes();
    let mut spki = None;
    let mut private = false;
    loop {
        match rustls_pemfile::read_one_from_slice(rest) {
            Ok(Some((rustls_pemfile::Item::SubjectPublicKeyInfo(der), _))) => {
                spki = Some(der);
                break;
            }
            Ok(Some((
                rustls_pemfile::Item::Pkcs8Key(_)
                | rustls_pemfile::Item::Sec1Key(_)
                | rustls_pemfile::Item::Pkcs1Key(_),
                tail,
            ))) => {
                private = true;
                rest = tail;
            }
            Ok(Some((_, tail))) => rest = tail,
            Ok(None) => break,
            Err(e) => return Err(KeyError::Parse(format!("{e:?}"))),
        }
    }
    let Some(spki) = spki else {
        if private {
            return SigningKey::from_pem(pem).map(|k| k.verifying());
        }
        return Err(KeyError::Parse("no PEM public or private key".into()));
    };
    let der = spki.as_ref();
    // The AlgorithmIdentifier comes first in the SubjectPublicKeyInfo.
    let head = &der[..der.len().min(32)];
    let has = |oid: &[u8]| head.windows(oid.len()).any(|w| w == oid);
    let algorithm = if has(OID_EC_PUBLIC_KEY) && has(OID_P256) {
        Algorithm::ES256
    } else if has(OID_RSA) {
        Algorithm::RS256
    } else {
        return Err(KeyError::Unsupported);
    };
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    let public_pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    );
    let bad = |e: jsonwebtoken::errors::Error| KeyError::Parse(e.to_string());
    let key = match algorithm {
        Algorithm::ES256 => DecodingKey::from_ec_pem(public_pem.as_bytes()).map_err(bad)?,
        _ => DecodingKey::from_rsa_pem(public_pem.as_bytes()).map_err(bad)?,
    };
    Ok(VerifyingKey {
        kid: libtrust_key_id(der),
        algorithm,
        key,
    })
}

/// A new ECDSA P-256 private key as PKCS#8 PEM (`gen-key`).
pub fn generate_es256_pem() -> Result<String, KeyError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map(|k| k.serialize_pem())
        .map_err(|e| KeyError::Generate(e.to_string()))
}

/// The libtrust key ID of a DER SubjectPublicKeyInfo.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let hash = Sha256::digest(spki_der);
    let b32 = data_encoding::BASE32_NOPAD.encode(&hash[..30]);
    let groups: Vec<&str> = (0..b32.len()).step_by(4).map(|i| &b32[i..i + 4]).collect();
    groups.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_has_distribution_form() {
        let key = SigningKey::ephemeral().unwrap();
        let groups: Vec<&str> = key.kid.split(':').collect();
        assert_eq!(groups.len(), 12);
        assert!(groups.iter().all(|g| {
            g.len() == 4
                && g.bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        }));
        assert_eq!(key.algorithm, Algorithm::ES256);
    }

    #[test]
    fn loads_rsa_keys() {
        // ring cannot generate RSA keys: a fixed key made by `openssl genpkey`.
        let key = SigningKey::from_pem(include_str!("testdata/rsa-test-key.pem")).unwrap();
        assert_eq!(key.algorithm, Algorithm::RS256);
    }

    #[test]
    fn previous_keys_load_from_public_or_private_pem() {
        let pem = generate_es256_pem().unwrap();
        let signing = SigningKey::from_pem(&pem).unwrap();
        let public = KeyPair::from_pem(&pem).unwrap().public_key_pem();
        for text in [&public, &pem] {
            let v = verifying_key_from_pem(text).unwrap();
            assert_eq!(v.kid, signing.kid);
            assert_eq!(v.algorithm, Algorithm::ES256);
        }
        let rsa = include_str!("testdata/rsa-test-key.pem");
        let rsa_signing = SigningKey::from_pem(rsa).unwrap();
        let rsa_public = KeyPair::from_pem(rsa).unwrap().public_key_pem();
        let v = verifying_key_from_pem(&rsa_public).unwrap();
        assert_eq!((v.kid, v.algorithm), (rsa_signing.kid, Algorithm::RS256));
        // P-384 public keys are EC keys but not ES256 ones.
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(matches!(
            verifying_key_from_pem(&p384.public_key_pem()),
            Err(KeyError::Unsupported)
        ));
        assert!(verifying_key_from_pem("nothing").is_err());
        assert!(
            verifying_key_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .is_err()
        );
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(
            SigningKey::from_pem("not a key"),
            Err(KeyError::Parse(_))
        ));
    }
}
