//! `registry-gate oidc-check NAME [--token-stdin]`: fetches the entry's
//! discovery document and keys and, with a token, shows the verified
//! claims, the account and labels they map to, and each `require` condition.

use std::fmt::Write;

use serde_json::{Map, Value};

use super::verify::Expect;
use super::{Oidc, Refusal, mapping, person_account};

/// What `oidc-check` prints, and how it ends.
pub struct Report {
    pub text: String,
    /// A token was given and would not log in (exit status 3).
    pub refused: bool,
}

/// Why the check could not be made (exit status 1 or 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no [[oidc.providers]] or [[oidc.trust]] entry is named {0:?}")]
    Unknown(String),
    #[error("{0}")]
    Unavailable(String),
}

pub async fn check(oidc: &Oidc, name: &str, token: Option<&str>) -> Result<Report, CheckError> {
    let trust = oidc.config.trust.iter().find(|t| t.name == name);
    let provider = oidc.config.provider(name);
    // A token from a trust entry is for its audience; an ID token is for
    // the provider's client.
    let (kind, issuer, audience) = match (trust, provider) {
        (Some(t), _) => ("trust", &t.issuer, t.audience.as_str()),
        (None, Some(p)) => ("provider", &p.issuer, p.client_id.as_str()),
        (None, None) => return Err(CheckError::Unknown(name.to_owned())),
    };
    let mut out = String::new();
    let _ = writeln!(out, "entry:     {name} ([[oidc.{kind}]])");
    let _ = writeln!(out, "issuer:    {issuer}");
    let keys = oidc
        .issuer(issuer)
        .ok_or_else(|| CheckError::Unknown(name.to_owned()))?;
    let fetched = keys
        .get()
        .await
        .map_err(|e| CheckError::Unavailable(format!("discovery or keys: {e}")))?;
    let _ = writeln!(
        out,
        "discovery: ok, jwks_uri {}",
        fetched.discovery.jwks_uri
    );
    if let Some(a) = &fetched.discovery.authorization_endpoint {
        let _ = writeln!(out, "authorization_endpoint: {a}");
    }
    let _ = writeln!(out, "keys:      {}", fetched.keys.len());
    for k in &fetched.keys {
        let kty = match k.key {
            super::verify::PublicKey::Rsa { .. } => "RSA",
            super::verify::PublicKey::Ec { p384: false, .. } => "EC P-256",
            super::verify::PublicKey::Ec { p384: true, .. } => "EC P-384",
            super::verify::PublicKey::Ed25519(_) => "OKP Ed25519",
        };
        let _ = writeln!(
            out,
            "  kid {} ({kty}{})",
            k.kid.as_deref().unwrap_or("(none)"),
            k.alg
                .as_deref()
                .map(|a| format!(", alg {a}"))
                .unwrap_or_default()
        );
    }
    let Some(token) = token else {
        return Ok(Report {
            text: out,
            refused: false,
        });
    };
    let nonce = None;
    let verified = oidc
        .verify(
            token,
            &Expect {
                issuer,
                audience,
                nonce,
            },
        )
        .await;
    let claims: Map<String, Value> = match verified {
        Ok(c) => c,
        Err(Refusal::Unavailable(e)) => return Err(CheckError::Unavailable(e.0)),
        Err(e) => {
            let _ = writeln!(out, "token:     REFUSED: {e}");
            return Ok(Report {
                text: out,
                refused: true,
            });
        }
    };
    let pretty = serde_json::to_string_pretty(&Value::Object(claims.clone())).unwrap_or_default();
    let _ = writeln!(
        out,
        "token:     signature and registered claims ok\nclaims:\n{pretty}"
    );
    let mut refused = false;
    if let Some(t) = trust {
        for (claim, cond) in &t.require {
            let holds = cond.holds_for(claims.get(claim));
            refused |= !holds;
            let shown = match cond {
                mapping::Condition::Exact(e) => format!("{e:?}"),
                mapping::Condition::Regex(r) => format!("/{}/", r.as_str()),
            };
            let _ = writeln!(
                out,
                "require:   {claim} = {shown}: {}",
                if holds { "ok" } else { "NOT MET" }
            );
        }
        match t.account.render(&claims) {
            Ok(a) => {
                let _ = writeln!(out, "account:   {a}");
            }
            Err(e) => {
                refused = true;
                let _ = writeln!(out, "account:   NONE: {e}");
            }
        }
        let _ = writeln!(out, "labels:    {:?}", mapping::labels(&t.labels, &claims));
    } else if let Some(p) = provider {
        match claims.get(&p.account_claim).and_then(Value::as_str) {
            Some(v) => {
                let _ = writeln!(out, "account:   {}", person_account(&p.name, v));
            }
            None => {
                let _ = writeln!(
                    out,
                    "account:   claim {:?} not in the token (the UI login also asks userinfo)",
                    p.account_claim
                );
            }
        }
        let _ = writeln!(out, "labels:    {:?}", mapping::labels(&p.labels, &claims));
    }
    if refused {
        let _ = writeln!(out, "result:    this token would NOT log in");
    } else {
        let _ = writeln!(
            out,
            "result:    this token would log in (then the ACL decides)"
        );
    }
    Ok(Report { text: out, refused })
}
