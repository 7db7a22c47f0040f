//! OpenID Connect: people logging in to the web UI through a provider
//! (`[[oidc.providers]]`, [`flow`]) and machines using a JWT from a trusted
//! issuer as the registry password (`[[oidc.trust]]`, [`Oidc::workload`]).
//!
//! keys (discovery + JWKS cache) <- verify (signature, registered claims)
//! <- mapping (claims -> account, labels, `require`) <- this module.
//! Depends on `config`-free leaves, `store` (SSO accounts) and nothing of HTTP
//! serving; the realm and the UI call in.

pub mod check;
pub mod config;
pub mod flow;
pub mod keys;
pub mod mapping;
pub mod verify;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

pub use config::{OidcConfig, Provider, RawOidc, Trust};
use keys::{FetchError, Http, IssuerKeys, OnFetch};
use mapping::MappingError;
use verify::{Expect, VerifyError};

use super::{Backend, Identity};

/// The backend name of SSO people in sessions, refresh tokens and personal
/// tokens' `owner_backend`.
pub const PEOPLE_BACKEND: &str = "oidc";

/// Why an issuer's token was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Verify(#[from] VerifyError),
    #[error("{0}")]
    Mapping(#[from] MappingError),
    /// The issuer's keys could not be fetched and none cached decide (503).
    #[error("{0}")]
    Unavailable(#[from] FetchError),
}

impl Refusal {
    /// For metrics and audit events.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Verify(e) => e.reason(),
            Refusal::Mapping(e) => e.reason(),
            Refusal::Unavailable(_) => "issuer_unavailable",
        }
    }
}

/// A workload token accepted by a trust entry.
#[derive(Debug, Clone)]
pub struct WorkloadLogin {
    /// The `[[oidc.trust]]` entry's name.
    pub trust: String,
    pub identity: Identity,
    pub claims: Map<String, Value>,
}

/// A workload token refused, and by which entry (the last one tried).
#[derive(Debug, Clone)]
pub struct WorkloadRefused {
    pub trust: String,
    pub refusal: Refusal,
}

/// See the module documentation.
pub struct Oidc {
    pub config: OidcConfig,
    pub http: Http,
    /// By issuer URL: one cache per issuer, shared by its entries.
    issuers: HashMap<String, Arc<IssuerKeys>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuers", &self.issuers.keys())
            .finish_non_exhaustive()
    }
}

impl Oidc {
    pub fn new(config: OidcConfig, on_fetch: OnFetch) -> Result<Oidc, String> {
        let http = Http::new()?;
        let mut issuers = HashMap::new();
        let urls = config
            .providers
            .iter()
            .map(|p| &p.issuer)
            .chain(config.trust.iter().map(|t| &t.issuer));
        for url in urls {
            issuers.entry(url.clone()).or_insert_with(|| {
                Arc::new(IssuerKeys::new(
                    url,
                    http.clone(),
                    config.key_refetch_interval,
                    on_fetch.clone(),
                ))
            });
        }
        Ok(Oidc {
            config,
            http,
            issuers,
        })
    }

    /// The key cache of `issuer` (a configured one).
    pub fn issuer(&self, issuer: &str) -> Option<&Arc<IssuerKeys>> {
        self.issuers.get(issuer)
    }

    /// Whether `password` is a JWT naming a trusted issuer: then it is
    /// decided by [`Oidc::workload`] and by nothing else.
    pub fn is_workload_token(&self, password: &str) -> bool {
        !self.config.trust.is_empty()
            && verify::peek_issuer(password)
                .is_some_and(|iss| self.config.trust.iter().any(|t| t.issuer == iss))
    }

    /// Verifies `token` (signature by a key of `issuer`, then `expect`).
    pub async fn verify(
        &self,
        token: &str,
        expect: &Expect<'_>,
    ) -> Result<Map<String, Value>, Refusal> {
        let parsed = verify::parse(token)?;
        verify::check_algorithm(&parsed.header.alg)?;
        let keys = self
            .issuers
            .get(expect.issuer)
            .ok_or_else(|| VerifyError::Issuer(expect.issuer.to_owned()))?;
        let key = keys
            .key(parsed.header.kid.as_deref())
            .await?
            .ok_or(VerifyError::UnknownKey)?;
        verify::check_signature(&parsed, &key)?;
        verify::check_claims(&parsed.claims, expect, verify::now())?;
        Ok(parsed.claims)
    }

    /// A workload login: `None` when `token` is not a JWT of a trusted
    /// issuer. Entries sharing the issuer are tried in order; the first
    /// that accepts it decides. Deny by default: no entry, no identity.
    pub async fn workload(&self, token: &str) -> Option<Result<WorkloadLogin, WorkloadRefused>> {
        let iss = verify::peek_issuer(token)?;
        let mut refused = None;
        for t in self.config.trust.iter().filter(|t| t.issuer == iss) {
            match self.workload_entry(t, token).await {
                Ok(login) => return Some(Ok(login)),
                Err(refusal) => {
                    // The issuer is down: no other entry can do better.
                    let stop = matches!(refusal, Refusal::Unavailable(_));
                    refused = Some(WorkloadRefused {
                        trust: t.name.clone(),
                        refusal,
                    });
                    if stop {
                        break;
                    }
                }
            }
        }
        refused.map(Err)
    }

    /// Checks `token` against one trust entry: verified, mapped, required.
    pub async fn workload_entry(&self, t: &Trust, token: &str) -> Result<WorkloadLogin, Refusal> {
        let claims = self
            .verify(
                token,
                &Expect {
                    issuer: &t.issuer,
                    audience: &t.audience,
                    nonce: None,
                },
            )
            .await?;
        let identity = map_workload(t, &claims)?;
        Ok(WorkloadLogin {
            trust: t.name.clone(),
            identity,
            claims,
        })
    }
}

/// The identity verified `claims` map to under trust entry `t`.
pub fn map_workload(t: &Trust, claims: &Map<String, Value>) -> Result<Identity, MappingError> {
    if let Some(claim) = mapping::unmet(&t.require, claims) {
        return Err(MappingError::Unmet(claim.to_owned()));
    }
    Ok(Identity {
        account: t.account.render(claims)?,
        backend: Backend::Workload,
        labels: mapping::labels(&t.labels, claims),
        credential: None,
    })
}

/// The account name of a person of provider `provider`: always
/// `<provider>/<claim>`, so it can never be a static account (no '/'
/// there), a robot (`robot+`), a workload (`prefix:`, see
/// [`mapping::Template::literal_namespace`]) or the same person of another
/// provider; LDAP is never asked about it. Not ':' (a Basic header's
/// user name ends at the first ':', and people use this name with their
/// personal access tokens in `docker login`).
pub fn person_account(provider: &str, claim_value: &str) -> String {
    format!("{provider}/{claim_value}")
}

/// The provider an SSO account name (`<provider>/...`) belongs to, if any
/// is configured.
pub fn provider_of<'a>(config: &'a OidcConfig, account: &str) -> Option<&'a Provider> {
    let (ns, _) = account.split_once('/')?;
    config.provider(ns)
}
