//! Round trips and every rejection reason, with keys made inside the test.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

use super::*;
use crate::authn::{Backend, Identity};
use crate::scope::{Action, Scope};

fn verifying(key: &SigningKey) -> VerifyingKey {
    VerifyingKey {
        kid: key.kid.clone(),
        algorithm: key.algorithm,
        key: key.decoding.clone(),
    }
}

fn setup() -> (Arc<SigningKey>, Issuer, Verifier) {
    let key = Arc::new(SigningKey::ephemeral().unwrap());
    let issuer = Issuer::new(
        key.clone(),
        "gate",
        "svc",
        Duration::from_secs(300),
        Duration::from_secs(3600),
    );
    let verifier = Verifier::new(
        vec![verifying(&key)],
        "gate",
        "svc",
        Duration::from_secs(300),
    );
    (key, issuer, verifier)
}

fn alice() -> Identity {
    Identity {
        account: "alice".into(),
        backend: Backend::Static,
        labels: [("team".to_owned(), vec!["ops".to_owned()])].into(),
        credential: None,
    }
}

fn now() -> u64 {
    issuer::unix(SystemTime::now())
}

fn claims(exp: u64, nbf: u64, iss: &str, aud: &str) -> AccessClaims {
    AccessClaims {
        iss: iss.into(),
        sub: "alice".into(),
        aud: aud.into(),
        exp,
        nbf,
        iat: nbf,
        jti: "j".into(),
        access: vec![],
        labels: Default::default(),
        restrict: None,
        token_use: None,
        granted: Default::default(),
    }
}

fn sign(key: &SigningKey, c: &AccessClaims) -> String {
    let mut h = Header::new(key.algorithm);
    h.kid = Some(key.kid.clone());
    encode(&h, c, &key.encoding).unwrap()
}

#[test]
fn access_token_round_trips() {
    let (_, issuer, verifier) = setup();
    let granted = [Scope::repository("a/b", [Action::Pull, Action::Push])];
    let issued = issuer.issue(&alice(), &granted).unwrap();
    let claims = verifier.verify_access(&issued.token).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.aud, "svc");
    assert_eq!(claims.iss, "gate");
    assert_eq!(claims.access.len(), 1);
    assert_eq!(Scope::from(&claims.access[0]), granted[0]);
    // Labels travel with every grant (tag rules are decided at the request).
    assert_eq!(claims.labels, alice().labels);
    assert_eq!(issued.expires_in, 300);
    // A second verification is served from the cache and says the same.
    assert_eq!(verifier.verify_access(&issued.token).unwrap(), claims);
}

#[test]
fn catalog_tokens_carry_labels() {
    let (_, issuer, verifier) = setup();
    let issued = issuer.issue(&alice(), &[Scope::catalog()]).unwrap();
    let claims = verifier.verify_access(&issued.token).unwrap();
    assert_eq!(claims.labels, alice().labels);
    // A token granting nothing (`GET /v2/` only) carries none.
    let issued = issuer.issue(&alice(), &[]).unwrap();
    let claims = verifier.verify_access(&issued.token).unwrap();
    assert!(claims.labels.is_empty());
}

#[test]
fn refresh_token_round_trips_and_kinds_do_not_mix() {
    let (_, issuer, verifier) = setup();
    let refresh = issuer.issue_refresh(&alice()).unwrap();
    let claims = verifier.verify_refresh(&refresh).unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.backend.as_str()),
        ("alice", "static")
    );
    assert_eq!(verifier.verify_access(&refresh), Err(TokenError::Kind));
    let access = issuer.issue(&alice(), &[]).unwrap().token;
    assert_eq!(
        verifier.verify_refresh(&access).map(|_| ()),
        Err(TokenError::Kind)
    );
}

#[test]
fn session_tokens_are_their_own_kind() {
    let (_, issuer, verifier) = setup();
    let (session, issued) = issuer
        .issue_session(&alice(), Duration::from_secs(600))
        .unwrap();
    let claims = verifier.verify_session(&session).unwrap();
    assert_eq!(claims, issued);
    assert_eq!(
        (claims.sub.as_str(), claims.backend.as_str()),
        ("alice", "static")
    );
    assert_eq!(claims.exp - claims.iat, 600);
    // A session is never an access or a refresh token, and vice versa.
    assert_eq!(
        verifier.verify_access(&session).map(|_| ()),
        Err(TokenError::Kind)
    );
    assert_eq!(
        verifier.verify_refresh(&session).map(|_| ()),
        Err(TokenError::Kind)
    );
    let access = issuer.issue(&alice(), &[]).unwrap().token;
    let refresh = issuer.issue_refresh(&alice()).unwrap();
    assert_eq!(
        verifier.verify_session(&access).map(|_| ()),
        Err(TokenError::Kind)
    );
    assert_eq!(
        verifier.verify_session(&refresh).map(|_| ()),
        Err(TokenError::Kind)
    );
}

#[test]
fn rejects_every_bad_token() {
    let (key, _, verifier) = setup();
    let other = SigningKey::ephemeral().unwrap();
    let t = now();
    let good = sign(&key, &claims(t + 60, t, "gate", "svc"));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    payload["sub"] = "admin".into();
    parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
    let tampered = parts.join(".");
    // Signed by a key we do not know, under our key's kid.
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(key.kid.clone());
    let foreign = encode(&h, &claims(t + 60, t, "gate", "svc"), &other.encoding).unwrap();
    // HMAC with the public key as secret: the classic algorithm confusion.
    // The gate's crypto provider refuses to make one, so it is made by hand.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(key.kid.clone());
    let hmac = {
        let head = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&h).unwrap());
        let body =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(t + 60, t, "gate", "svc")).unwrap());
        let signed = format!("{head}.{body}");
        let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"whatever");
        let tag = URL_SAFE_NO_PAD.encode(ring::hmac::sign(&mac, signed.as_bytes()));
        format!("{signed}.{tag}")
    };
    let cases: Vec<(&str, String, TokenError)> = vec![
        ("garbage", "not.a.token".into(), TokenError::Malformed),
        ("empty", String::new(), TokenError::Malformed),
        ("huge", "a".repeat(20_000), TokenError::Malformed),
        (
            "unknown kid",
            sign(&other, &claims(t + 60, t, "gate", "svc")),
            TokenError::UnknownKey,
        ),
        ("tampered", tampered, TokenError::Signature),
        ("foreign signature", foreign, TokenError::Signature),
        ("alg confusion", hmac, TokenError::Algorithm),
        (
            "expired",
            sign(&key, &claims(t - 120, t - 400, "gate", "svc")),
            TokenError::Expired,
        ),
        (
            "not yet valid",
            sign(&key, &claims(t + 600, t + 300, "gate", "svc")),
            TokenError::NotYetValid,
        ),
        (
            "issuer",
            sign(&key, &claims(t + 60, t, "evil", "svc")),
            TokenError::Issuer,
        ),
        (
            "audience",
            sign(&key, &claims(t + 60, t, "gate", "other")),
            TokenError::Audience,
        ),
    ];
    for (what, token, want) in cases {
        assert_eq!(
            verifier.verify_access(&token).map(|_| ()),
            Err(want),
            "{what}"
        );
    }
}

#[test]
fn small_clock_skew_is_tolerated() {
    let (key, _, verifier) = setup();
    let t = now();
    let token = sign(&key, &claims(t - 2, t + 2, "gate", "svc"));
    assert!(verifier.verify_access(&token).is_ok());
}

#[test]
fn verifies_rs256() {
    let key = SigningKey::from_pem(include_str!("testdata/rsa-test-key.pem")).unwrap();
    let verifier = Verifier::new(
        vec![verifying(&key)],
        "gate",
        "svc",
        Duration::from_secs(60),
    );
    let t = now();
    assert!(
        verifier
            .verify_access(&sign(&key, &claims(t + 60, t, "gate", "svc")))
            .is_ok()
    );
}

#[test]
fn previous_keys_verify_tokens_of_a_rotated_key() {
    let old = Arc::new(SigningKey::ephemeral().unwrap());
    let new = Arc::new(SigningKey::ephemeral().unwrap());
    let old_issuer = Issuer::new(
        old.clone(),
        "gate",
        "svc",
        Duration::from_secs(300),
        Duration::from_secs(3600),
    );
    let old_token = old_issuer.issue(&alice(), &[]).unwrap().token;
    let old_refresh = old_issuer.issue_refresh(&alice()).unwrap();
    // The new instance: signs with `new`, still accepts `old`.
    let rotated = Verifier::new(
        vec![new.verifying(), old.verifying()],
        "gate",
        "svc",
        Duration::from_secs(300),
    );
    assert!(rotated.verify_access(&old_token).is_ok());
    assert!(rotated.verify_refresh(&old_refresh).is_ok());
    // Without the previous key: refused.
    let strict = Verifier::new(
        vec![new.verifying()],
        "gate",
        "svc",
        Duration::from_secs(300),
    );
    assert_eq!(
        strict.verify_access(&old_token),
        Err(TokenError::UnknownKey)
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn fixture() -> &'static (Issuer, Verifier, String, String) {
        static FIXTURE: std::sync::OnceLock<(Issuer, Verifier, String, String)> =
            std::sync::OnceLock::new();
        FIXTURE.get_or_init(|| {
            let (_, issuer, verifier) = setup();
            let granted = [Scope::repository("a", [Action::Pull])];
            let access = issuer.issue(&alice(), &granted).unwrap().token;
            let refresh = issuer.issue_refresh(&alice()).unwrap();
            (issuer, verifier, access, refresh)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Arbitrary text is never a token, and never panics the verifier.
        #[test]
        fn garbage_never_verifies(s in prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}",
            "eyJ[A-Za-z0-9_-]{0,60}\\.eyJ[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_=-]{0,90}",
        ]) {
            let (_, verifier, _, _) = fixture();
            prop_assert!(verifier.verify_access(&s).is_err());
            prop_assert!(verifier.verify_refresh(&s).is_err());
        }

    }

    proptest! {
        // ES256 verification is slow in debug builds: fewer cases.
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// A valid token with any one character changed, inserted or
        /// removed is refused, or (a no-op edit) verifies to the very same
        /// claims: no edit widens what a token grants.
        #[test]
        fn edited_tokens_grant_nothing_new(
            pos in any::<prop::sample::Index>(),
            c in prop::sample::select(b"AQgw_-.=+/ aZ09".to_vec()),
            edit in 0u8..3,
            which in any::<bool>(),
        ) {
            let (_, verifier, access, refresh) = fixture();
            let original = if which { access } else { refresh };
            let mut bytes = original.as_bytes().to_vec();
            let i = pos.index(bytes.len());
            match edit {
                0 => bytes[i] = c,
                1 => bytes.insert(i, c),
                _ => { bytes.remove(i); }
            }
            let edited = String::from_utf8(bytes).unwrap();
            if which {
                let want = verifier.verify_access(original).unwrap();
                if let Ok(got) = verifier.verify_access(&edited) {
                    prop_assert_eq!(got, want);
                }
                prop_assert!(verifier.verify_refresh(&edited).is_err());
            } else {
                let want = verifier.verify_refresh(original).unwrap();
                if let Ok(got) = verifier.verify_refresh(&edited) {
                    prop_assert_eq!(got, want);
                }
                prop_assert!(verifier.verify_access(&edited).is_err());
            }
        }
    }
}

#[test]
fn the_crypto_provider_is_ring_and_refuses_hmac() {
    assert!(crypto::install());
    assert!(crypto::install(), "installing twice is fine");
    let secret = EncodingKey::from_secret(b"whatever").unwrap();
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let err = encode(
            &Header::new(alg),
            &claims(now() + 60, now(), "gate", "svc"),
            &secret,
        )
        .unwrap_err();
        assert_eq!(
            err.kind(),
            &jsonwebtoken::errors::ErrorKind::InvalidAlgorithm,
            "{alg:?}"
        );
        let decoding = jsonwebtoken::DecodingKey::from_secret(b"whatever").unwrap();
        assert!((crypto::PROVIDER.verifier_factory)(&alg, &decoding).is_err());
    }
    // Other asymmetric algorithms are not the gate's either.
    let key = SigningKey::ephemeral().unwrap();
    assert!((crypto::PROVIDER.signer_factory)(&Algorithm::ES384, &key.encoding).is_err());
    // A key of the wrong family for the algorithm is refused, not misused.
    assert!((crypto::PROVIDER.signer_factory)(&Algorithm::RS256, &key.encoding).is_err());
    assert!((crypto::PROVIDER.verifier_factory)(&Algorithm::RS256, &key.decoding).is_err());
    // Signing twice with the same (cached) key gives two valid signatures.
    let (key, issuer, verifier) = setup();
    for _ in 0..2 {
        let issued = issuer.issue(&alice(), &[]).unwrap();
        assert!(verifier.verify_access(&issued.token).is_ok());
    }
    assert!(crypto::install());
    drop(key);
}
