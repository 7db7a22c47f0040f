//! Signing keys: loading PKCS#8 PEM files, generating ES256 keys, and the
//! key ID in the form distribution expects.
//!
//! distribution (`registry/auth/token`) looks a token's `kid` up among the
//! keys of its `rootcertbundle` by their libtrust key ID: the SHA-256 of the
//! DER SubjectPublicKeyInfo, truncated to 240 bits, base32-encoded and split
//! into twelve groups of four characters joined by `:`. Using the same form
//! means a distribution registry could verify our tokens directly too.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rcgen::{KeyPair, PublicKeyData};
use sha2::{Digest, Sha256};

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

    /// A fresh ES256 key that lives as long as the process.
    pub fn ephemeral() -> Result<SigningKey, KeyError> {
        SigningKey::from_pem(&generate_es256_pem()?)
    }
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
    fn refuses_garbage() {
        assert!(matches!(
            SigningKey::from_pem("not a key"),
            Err(KeyError::Parse(_))
        ));
    }
}
