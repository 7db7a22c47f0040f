//! The web UI's login through an OpenID provider: the authorization code
//! flow with PKCE (S256), `state` and `nonce` (OpenID Connect Core §3.1).
//!
//! [`start`] makes the provider URL and a [`Pending`] login that the UI keeps
//! in a short-lived cookie; the provider sends the browser back to
//! `<public_url>/ui/oidc/callback` with `code` and `state`; [`finish`]
//! checks `state` against the cookie, redeems the code (with the PKCE
//! verifier and the client secret), verifies the ID token (signature,
//! issuer, audience = client_id, nonce, times), reads userinfo when the
//! account claim is not in the ID token, and maps the claims to an account
//! `<provider>:<claim>` and labels.
//!
//! The pending login lives in the browser, not in this process, so the
//! callback may reach any instance of the gate. Its integrity does not need
//! a signature: `state` is a double-submit value (only a page that can set
//! this site's cookies could forge it), the nonce binds the ID token to this
//! browser's login, and the verifier is useless without the code.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::keys::FetchError;
use super::verify::Expect;
use super::{Oidc, Provider, Refusal, mapping, person_account};
use crate::authn::{Backend, Identity};

/// The redirect URI every provider must have registered.
pub const CALLBACK_PATH: &str = "/ui/oidc/callback";

/// A login in progress (kept in the browser's cookie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub provider: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

fn random() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

impl Pending {
    pub fn new(provider: &str) -> Pending {
        Pending {
            provider: provider.to_owned(),
            state: random(),
            nonce: random(),
            verifier: random(),
        }
    }

    /// `provider.state.nonce.verifier`: cookie-safe characters only.
    pub fn encode(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.provider, self.state, self.nonce, self.verifier
        )
    }

    pub fn decode(s: &str) -> Option<Pending> {
        let mut parts = s.split('.');
        let (Some(p), Some(st), Some(n), Some(v), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let random_like = |x: &str| {
            x.len() == 43
                && x.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (super::config::valid_name(p) && random_like(st) && random_like(n) && random_like(v)).then(
            || Pending {
                provider: p.to_owned(),
                state: st.to_owned(),
                nonce: n.to_owned(),
                verifier: v.to_owned(),
            },
        )
    }

    fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }
}

/// Why an SSO login failed: the provider said no or sent something we do
/// not accept (`Refused`), or could not be reached (`Unavailable`).
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<Refusal> for FlowError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unavailable(e) => FlowError::Unavailable(e.0),
            other => FlowError::Refused(other.to_string()),
        }
    }
}

impl From<FetchError> for FlowError {
    fn from(e: FetchError) -> Self {
        FlowError::Unavailable(e.0)
    }
}

/// The provider's authorization URL for `pending`.
pub async fn start(
    oidc: &Oidc,
    provider: &Provider,
    pending: &Pending,
    redirect_uri: &str,
) -> Result<String, FlowError> {
    let keys = oidc
        .issuer(&provider.issuer)
        .ok_or_else(|| FlowError::Refused("unknown issuer".into()))?;
    let fetched = keys.get().await?;
    let endpoint = fetched
        .discovery
        .authorization_endpoint
        .as_deref()
        .ok_or_else(|| {
            FlowError::Unavailable("the provider names no authorization_endpoint".into())
        })?;
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &provider.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &provider.scopes.join(" "))
        .append_pair("state", &pending.state)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &pending.challenge())
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    Ok(format!("{endpoint}{sep}{query}"))
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// A person's login: who they are, and what to remember about them.
#[derive(Debug, Clone)]
pub struct PersonLogin {
    pub identity: Identity,
    pub subject: String,
    pub claims: Map<String, Value>,
}

/// Redeems `code` and turns the provider's answer into an identity.
pub async fn finish(
    oidc: &Oidc,
    provider: &Provider,
    pending: &Pending,
    code: &str,
    redirect_uri: &str,
) -> Result<PersonLogin, FlowError> {
    let keys = oidc
        .issuer(&provider.issuer)
        .ok_or_else(|| FlowError::Refused("unknown issuer".into()))?;
    let discovery = keys.get().await?.discovery.clone();
    let token_endpoint = discovery
        .token_endpoint
        .as_deref()
        .ok_or_else(|| FlowError::Unavailable("the provider names no token_endpoint".into()))?;
    let (status, body) = oidc
        .http
        .post_form(
            token_endpoint,
            &provider.client_id,
            provider.client_secret.expose(),
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &pending.verifier),
            ],
        )
        .await?;
    let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
        FlowError::Unavailable(format!(
            "the token endpoint answered HTTP {status}, not JSON"
        ))
    })?;
    if !status.is_success() || answer.error.is_some() {
        return Err(FlowError::Refused(format!(
            "the token endpoint refused the code: {}",
            answer.error.as_deref().unwrap_or("no error given")
        )));
    }
    let id_token = answer
        .id_token
        .ok_or_else(|| FlowError::Refused("no id_token in the token answer".into()))?;
    let mut claims = oidc
        .verify(
            &id_token,
            &Expect {
                issuer: &provider.issuer,
                audience: &provider.client_id,
                nonce: Some(&pending.nonce),
            },
        )
        .await?;
    // Core §3.1.3.7: with several audiences, azp must be us.
    if claims.get("aud").is_some_and(Value::is_array)
        && claims
            .get("azp")
            .is_some_and(|azp| azp.as_str() != Some(&provider.client_id))
    {
        return Err(FlowError::Refused("azp is another client".into()));
    }
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| FlowError::Refused("the ID token has no sub".into()))?
        .to_owned();
    let wanted: Vec<&String> = std::iter::once(&provider.account_claim)
        .chain(provider.labels.values())
        .collect();
    if wanted.iter().any(|c| !claims.contains_key(c.as_str()))
        && let (Some(userinfo), Some(access)) = (&discovery.userinfo_endpoint, &answer.access_token)
    {
        let body = oidc.http.get(userinfo, Some(access)).await?;
        let info: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|_| FlowError::Unavailable("userinfo answered no JSON object".into()))?;
        // Core §5.3.2: the userinfo sub must be the ID token's.
        if info.get("sub").and_then(Value::as_str) != Some(subject.as_str()) {
            return Err(FlowError::Refused(
                "userinfo is about another subject".into(),
            ));
        }
        for (k, v) in info {
            claims.entry(k).or_insert(v);
        }
    }
    let account_value = match claims.get(&provider.account_claim) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(FlowError::Refused(format!(
                "the provider sent no {:?} claim (account_claim)",
                provider.account_claim
            )));
        }
    };
    let account = person_account(&provider.name, &account_value);
    if !crate::authn::acceptable_account(&account) {
        return Err(FlowError::Refused("unusable account name".into()));
    }
    Ok(PersonLogin {
        identity: Identity {
            account,
            backend: Backend::Oidc,
            labels: mapping::labels(&provider.labels, &claims),
            credential: None,
        },
        subject,
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_logins_round_trip_and_reject_junk() {
        let p = Pending::new("corp");
        assert_eq!(Pending::decode(&p.encode()), Some(p.clone()));
        for bad in [
            "",
            "corp",
            "corp.a.b.c",
            &format!("Corp.{}.{}.{}", p.state, p.nonce, p.verifier),
            &format!("{}.x", p.encode()),
        ] {
            assert_eq!(Pending::decode(bad), None, "{bad}");
        }
        // RFC 7636 appendix B: S256 of the verifier.
        let rfc = Pending {
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            ..p
        };
        assert_eq!(
            rfc.challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
