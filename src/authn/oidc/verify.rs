//! Verifying an issuer's JWT (an ID token or a workload token) against its
//! published keys: the JWS signature with the algorithm pinned to the key's
//! type, then `iss`, `aud`, `exp`, `nbf` and `iat` with the gate's leeway.
//!
//! Signatures are checked with ring directly, not through jsonwebtoken:
//! the gate's own tokens use a process-wide provider that knows ES256 and
//! RS256 only, while issuers sign with RS256/384/512, PS256/384/512,
//! ES256/384 or EdDSA. `none` and every HMAC algorithm are refused before
//! any key is looked at: a public key is never a shared secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Clock skew tolerated on `exp`, `nbf` and `iat`: the gate's own leeway.
pub const LEEWAY_SECS: u64 = crate::token::LEEWAY_SECS;
/// Longest token looked at (Kubernetes tokens are ~1 KiB, GitHub's ~1.5).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token was refused (the client hears 401; this is for logs,
/// metrics and `oidc-check`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a JWT")]
    Malformed,
    #[error("algorithm {0:?} is not allowed")]
    Algorithm(String),
    #[error("no key of the issuer has this kid")]
    UnknownKey,
    #[error("the key does not allow algorithm {0:?}")]
    KeyAlgorithm(String),
    #[error("bad signature")]
    Signature,
    #[error("issued by {0:?}, not this issuer")]
    Issuer(String),
    #[error("audience does not include {0:?}")]
    Audience(String),
    #[error("expired")]
    Expired,
    #[error("not valid yet (nbf)")]
    NotYetValid,
    #[error("issued in the future (iat)")]
    IssuedInFuture,
    #[error("no exp claim")]
    NoExpiry,
    #[error("nonce does not match")]
    Nonce,
}

impl VerifyError {
    /// For metrics and audit events.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Malformed => "malformed",
            VerifyError::Algorithm(_) | VerifyError::KeyAlgorithm(_) => "algorithm",
            VerifyError::UnknownKey => "unknown_key",
            VerifyError::Signature => "signature",
            VerifyError::Issuer(_) => "issuer",
            VerifyError::Audience(_) => "audience",
            VerifyError::Expired => "expired",
            VerifyError::NotYetValid | VerifyError::IssuedInFuture => "not_yet_valid",
            VerifyError::NoExpiry => "no_expiry",
            VerifyError::Nonce => "nonce",
        }
    }
}

/// A JWS header, as far as we read it.
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
}

/// A token split and decoded, signature not yet checked.
pub struct Parsed<'a> {
    pub header: Header,
    pub claims: Map<String, Value>,
    signed: &'a str,
    signature: Vec<u8>,
}

/// Splits and decodes a compact JWS. Does not verify anything.
pub fn parse(token: &str) -> Result<Parsed<'_>, VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed);
    };
    let decode = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| VerifyError::Malformed)
    };
    let header: Header = serde_json::from_slice(&decode(h)?).map_err(|_| VerifyError::Malformed)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&decode(p)?).map_err(|_| VerifyError::Malformed)?;
    Ok(Parsed {
        header,
        claims,
        signed: &token[..h.len() + 1 + p.len()],
        signature: decode(s)?,
    })
}

/// The `iss` of what looks like a JWT, unverified: which trust entry to
/// check it against. `None` for anything else (a password).
pub fn peek_issuer(token: &str) -> Option<String> {
    if !token.starts_with("eyJ") {
        return None;
    }
    match parse(token).ok()?.claims.get("iss") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// One public key of an issuer's JWKS (RFC 7517), parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The key's own `alg`, when it names one: then only that.
    pub alg: Option<String>,
    pub key: PublicKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed point, P-256 or P-384.
    Ec {
        p384: bool,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
}

impl PublicKey {
    /// The algorithms this type of key may verify: the pin.
    fn algorithm(&self, alg: &str) -> Option<&'static dyn VerificationAlgorithm> {
        Some(match (self, alg) {
            (PublicKey::Rsa { .. }, "RS256") => &signature::RSA_PKCS1_2048_8192_SHA256,
            (PublicKey::Rsa { .. }, "RS384") => &signature::RSA_PKCS1_2048_8192_SHA384,
            (PublicKey::Rsa { .. }, "RS512") => &signature::RSA_PKCS1_2048_8192_SHA512,
            (PublicKey::Rsa { .. }, "PS256") => &signature::RSA_PSS_2048_8192_SHA256,
            (PublicKey::Rsa { .. }, "PS384") => &signature::RSA_PSS_2048_8192_SHA384,
            (PublicKey::Rsa { .. }, "PS512") => &signature::RSA_PSS_2048_8192_SHA512,
            (PublicKey::Ec { p384: false, .. }, "ES256") => &signature::ECDSA_P256_SHA256_FIXED,
            (PublicKey::Ec { p384: true, .. }, "ES384") => &signature::ECDSA_P384_SHA384_FIXED,
            (PublicKey::Ed25519(_), "EdDSA" | "Ed25519") => &signature::ED25519,
            _ => return None,
        })
    }
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// The signature keys of a JWKS document; keys for encryption, of unknown
/// types or malformed are skipped (an issuer may publish more than we use).
pub fn parse_jwks(body: &[u8]) -> Result<Vec<Jwk>, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let b64 = |s: &Option<String>| s.as_deref().and_then(|s| URL_SAFE_NO_PAD.decode(s).ok());
    let mut out = Vec::new();
    for raw in set.keys {
        let Ok(k) = serde_json::from_value::<RawJwk>(raw) else {
            continue;
        };
        if k.use_.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        let key = match (k.kty.as_str(), k.crv.as_deref()) {
            ("RSA", _) => match (b64(&k.n), b64(&k.e)) {
                (Some(n), Some(e)) => PublicKey::Rsa { n, e },
                _ => continue,
            },
            ("EC", Some(crv @ ("P-256" | "P-384"))) => {
                let len = if crv == "P-256" { 32 } else { 48 };
                match (b64(&k.x), b64(&k.y)) {
                    (Some(x), Some(y)) if x.len() == len && y.len() == len => {
                        let mut point = vec![4];
                        point.extend(x);
                        point.extend(y);
                        PublicKey::Ec {
                            p384: crv == "P-384",
                            point,
                        }
                    }
                    _ => continue,
                }
            }
            ("OKP", Some("Ed25519")) => match b64(&k.x) {
                Some(x) if x.len() == 32 => PublicKey::Ed25519(x),
                _ => continue,
            },
            _ => continue,
        };
        out.push(Jwk {
            kid: k.kid,
            alg: k.alg,
            key,
        });
    }
    Ok(out)
}

/// Refuses `none` and HMAC before anything else.
pub fn check_algorithm(alg: &str) -> Result<(), VerifyError> {
    if alg.eq_ignore_ascii_case("none") || alg.to_ascii_uppercase().starts_with("HS") {
        return Err(VerifyError::Algorithm(alg.to_owned()));
    }
    Ok(())
}

/// Checks the signature of `token` with `key` (already chosen by kid).
pub fn check_signature(token: &Parsed<'_>, key: &Jwk) -> Result<(), VerifyError> {
    let alg = token.header.alg.as_str();
    check_algorithm(alg)?;
    if key.alg.as_deref().is_some_and(|a| a != alg) {
        return Err(VerifyError::KeyAlgorithm(alg.to_owned()));
    }
    let algorithm = key
        .key
        .algorithm(alg)
        .ok_or_else(|| VerifyError::KeyAlgorithm(alg.to_owned()))?;
    let msg = token.signed.as_bytes();
    let ok = match &key.key {
        PublicKey::Rsa { n, e } => {
            // ring's RSA algorithms take the components, not a DER key.
            let params = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                _ => &signature::RSA_PSS_2048_8192_SHA512,
            };
            signature::RsaPublicKeyComponents { n, e }.verify(params, msg, &token.signature)
        }
        PublicKey::Ec { point, .. } => {
            UnparsedPublicKey::new(algorithm, point).verify(msg, &token.signature)
        }
        PublicKey::Ed25519(x) => UnparsedPublicKey::new(algorithm, x).verify(msg, &token.signature),
    };
    ok.map_err(|_| VerifyError::Signature)
}

/// What a verified token must say.
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    /// ID tokens: the nonce the login started with.
    pub nonce: Option<&'a str>,
}

/// Checks the registered claims at `now` (Unix seconds).
pub fn check_claims(
    claims: &Map<String, Value>,
    expect: &Expect<'_>,
    now: u64,
) -> Result<(), VerifyError> {
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == expect.issuer => {}
        other => {
            return Err(VerifyError::Issuer(
                other.and_then(Value::as_str).unwrap_or_default().to_owned(),
            ));
        }
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == expect.audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(expect.audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(VerifyError::Audience(expect.audience.to_owned()));
    }
    let time = |name: &str| claims.get(name).and_then(Value::as_f64);
    let exp = time("exp").ok_or(VerifyError::NoExpiry)?;
    if exp + (LEEWAY_SECS as f64) < now as f64 {
        return Err(VerifyError::Expired);
    }
    if time("nbf").is_some_and(|nbf| nbf > (now + LEEWAY_SECS) as f64) {
        return Err(VerifyError::NotYetValid);
    }
    if time("iat").is_some_and(|iat| iat > (now + LEEWAY_SECS) as f64) {
        return Err(VerifyError::IssuedInFuture);
    }
    if let Some(nonce) = expect.nonce
        && claims.get("nonce").and_then(Value::as_str) != Some(nonce)
    {
        return Err(VerifyError::Nonce);
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    fn b64(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    /// An EC P-256 key made here, its JWK, and a signer.
    fn key() -> (EcdsaKeyPair, Jwk) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
            "x": b64(&point[1..33]), "y": b64(&point[33..])}]});
        let jwk = parse_jwks(jwks.to_string().as_bytes()).unwrap().remove(0);
        (pair, jwk)
    }

    fn sign(pair: &EcdsaKeyPair, header: Value, claims: Value) -> String {
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = pair.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
        format!("{signed}.{}", b64(sig.as_ref()))
    }

    #[test]
    fn signatures_are_pinned_to_the_key_type() {
        let (pair, jwk) = key();
        let claims = json!({"iss": "https://i", "aud": "a", "exp": now() + 60});
        let good = sign(&pair, json!({"alg": "ES256", "kid": "k1"}), claims.clone());
        assert_eq!(check_signature(&parse(&good).unwrap(), &jwk), Ok(()));
        // The same signature under another algorithm name: refused by the pin.
        let (h, rest) = good.split_once('.').unwrap();
        let _ = h;
        let relabelled = format!("{}.{rest}", b64(br#"{"alg":"ES384","kid":"k1"}"#));
        assert_eq!(
            check_signature(&parse(&relabelled).unwrap(), &jwk),
            Err(VerifyError::KeyAlgorithm("ES384".into()))
        );
        // alg none, and HMAC with the public key as the secret.
        let payload = b64(claims.to_string().as_bytes());
        let none = format!("{}.{payload}.", b64(br#"{"alg":"none","kid":"k1"}"#));
        assert_eq!(
            check_signature(&parse(&none).unwrap(), &jwk),
            Err(VerifyError::Algorithm("none".into()))
        );
        let PublicKey::Ec { point, .. } = &jwk.key else {
            unreachable!()
        };
        let hs_signed = format!("{}.{payload}", b64(br#"{"alg":"HS256","kid":"k1"}"#));
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, point),
            hs_signed.as_bytes(),
        );
        let hs = format!("{hs_signed}.{}", b64(tag.as_ref()));
        assert_eq!(
            check_signature(&parse(&hs).unwrap(), &jwk),
            Err(VerifyError::Algorithm("HS256".into()))
        );
        // A tampered payload.
        let parts: Vec<&str> = good.split('.').collect();
        let evil = b64(
            json!({"iss": "https://i", "aud": "a", "exp": now() + 60, "admin": true})
                .to_string()
                .as_bytes(),
        );
        let tampered = format!("{}.{evil}.{}", parts[0], parts[2]);
        assert_eq!(
            check_signature(&parse(&tampered).unwrap(), &jwk),
            Err(VerifyError::Signature)
        );
        // A key that names its algorithm allows only that one.
        let pinned = Jwk {
            alg: Some("ES384".into()),
            ..jwk.clone()
        };
        assert!(check_signature(&parse(&good).unwrap(), &pinned).is_err());
    }

    #[test]
    fn registered_claims_are_checked_with_leeway() {
        let now = 1_000_000;
        let expect = Expect {
            issuer: "https://i",
            audience: "reg",
            nonce: None,
        };
        let cases = [
            (
                json!({"iss": "https://i", "aud": "reg", "exp": now}),
                Ok(()),
            ),
            (
                json!({"iss": "https://i", "aud": ["x", "reg"], "exp": now - 10}),
                Ok(()),
            ),
            (
                json!({"iss": "https://i", "aud": "reg", "exp": now - 11}),
                Err(VerifyError::Expired),
            ),
            (
                json!({"iss": "https://i", "aud": "reg"}),
                Err(VerifyError::NoExpiry),
            ),
            (
                json!({"iss": "https://j", "aud": "reg", "exp": now}),
                Err(VerifyError::Issuer("https://j".into())),
            ),
            (
                json!({"iss": "https://i", "aud": "other", "exp": now}),
                Err(VerifyError::Audience("reg".into())),
            ),
            (
                json!({"iss": "https://i", "exp": now}),
                Err(VerifyError::Audience("reg".into())),
            ),
            (
                json!({"iss": "https://i", "aud": "reg", "exp": now + 60, "nbf": now + 11}),
                Err(VerifyError::NotYetValid),
            ),
            (
                json!({"iss": "https://i", "aud": "reg", "exp": now + 60, "nbf": now + 10}),
                Ok(()),
            ),
            (
                json!({"iss": "https://i", "aud": "reg", "exp": now + 60, "iat": now + 11}),
                Err(VerifyError::IssuedInFuture),
            ),
        ];
        for (claims, want) in cases {
            let c = claims.as_object().unwrap();
            assert_eq!(check_claims(c, &expect, now), want, "{claims}");
        }
        let with_nonce = Expect {
            nonce: Some("n1"),
            ..expect
        };
        let c = json!({"iss": "https://i", "aud": "reg", "exp": now, "nonce": "n2"});
        assert_eq!(
            check_claims(c.as_object().unwrap(), &with_nonce, now),
            Err(VerifyError::Nonce)
        );
    }

    #[test]
    fn only_jwt_shaped_passwords_are_peeked() {
        let (pair, _) = key();
        let t = sign(&pair, json!({"alg": "ES256"}), json!({"iss": "https://i"}));
        assert_eq!(peek_issuer(&t).as_deref(), Some("https://i"));
        for not in ["hunter2", "eyJ", "rgt_abc", "a.b.c", &"eyJ.".repeat(5000)] {
            assert_eq!(peek_issuer(not), None);
        }
    }

    #[test]
    fn jwks_keep_signature_keys_only() {
        let jwks = json!({"keys": [
            {"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
            {"kty": "EC", "crv": "P-256", "kid": "short", "x": "AA", "y": "AA"},
            "junk"
        ]});
        let keys = parse_jwks(jwks.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("r"));
        assert!(parse_jwks(b"{}").is_err());
    }
}
