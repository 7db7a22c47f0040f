//! Discovery and keys of each issuer: `/.well-known/openid-configuration`,
//! then its `jwks_uri`, fetched on first use and cached.
//!
//! - A token whose `kid` is not among the cached keys makes one refetch,
//!   at most once per `[oidc] key_refetch_interval` per issuer (a flood of
//!   made-up kids costs the issuer one request per interval); so a key
//!   rotation at the issuer is picked up without a restart.
//! - Keys older than [`MAX_KEY_AGE`] are refetched on use (a key the
//!   issuer withdrew stops working); when that fails the old keys stay.
//! - When the issuer is down, cached keys keep verifying; an issuer never
//!   reached yet cannot decide ([`FetchError`], a 503).
//!
//! The HTTP client is reqwest on the gate's rustls (ring) with the system
//! trust roots; no redirects are followed and answers are size-capped.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::config::allowed_url;
use super::verify::{Jwk, parse_jwks};

/// Keys are refetched on use once they are this old.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(3600);
/// Largest discovery, JWKS, token or userinfo answer read.
const MAX_BODY: usize = 1024 * 1024;
/// Bound on each request to an issuer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The issuer could not be asked (down, timeout, a broken answer): the
/// gate cannot decide, which is a 503, never a 401.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

/// The HTTP client for issuers.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> Result<Http, String> {
        let mut roots = rustls::RootCertStore::empty();
        crate::authn::ldap::tls::add_system_roots(&mut roots);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .user_agent(concat!("registry-gate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Http { client })
    }

    /// GET `url` (which must be https or loopback http), 200 expected.
    pub async fn get(&self, url: &str, bearer: Option<&str>) -> Result<Vec<u8>, FetchError> {
        allowed_url(url).map_err(FetchError)?;
        let mut req = self
            .client
            .get(url)
            .header(http::header::ACCEPT, "application/json");
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| FetchError(format!("GET {url}: {}", error_chain(&e))))?;
        let status = resp.status();
        let body = read_capped(resp, url).await?;
        if status != http::StatusCode::OK {
            return Err(FetchError(format!("GET {url}: HTTP {status}")));
        }
        Ok(body)
    }

    /// POST a form to a token endpoint with client_secret_basic; returns
    /// the status and body (the caller reads OAuth errors itself).
    pub async fn post_form(
        &self,
        url: &str,
        client_id: &str,
        client_secret: &str,
        form: &[(&str, &str)],
    ) -> Result<(http::StatusCode, Vec<u8>), FetchError> {
        allowed_url(url).map_err(FetchError)?;
        // RFC 6749 §2.3.1: id and secret are form-encoded before Basic.
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = self
            .client
            .post(url)
            .basic_auth(enc(client_id), Some(enc(client_secret)))
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| FetchError(format!("POST {url}: {}", error_chain(&e))))?;
        let status = resp.status();
        Ok((status, read_capped(resp, url).await?))
    }
}

async fn read_capped(mut resp: reqwest::Response, url: &str) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| FetchError(format!("{url}: {}", error_chain(&e))))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(FetchError(format!(
                "{url}: answer larger than {MAX_BODY} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// reqwest's top-level message says little ("error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The parts of an OpenID provider's metadata the gate uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// What one fetch brought.
#[derive(Debug)]
pub struct Fetched {
    pub discovery: Discovery,
    pub keys: Vec<Jwk>,
    at: Instant,
}

impl Fetched {
    /// The key a token names: by `kid`, or the only key when it names none.
    pub fn key(&self, kid: Option<&str>) -> Option<&Jwk> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }
}

/// Called after every fetch with the issuer and `ok` or `failed` (metrics).
pub type OnFetch = Arc<dyn Fn(&str, &'static str) + Send + Sync>;

/// One issuer's discovery document and keys (see the module docs).
pub struct IssuerKeys {
    issuer: String,
    http: Http,
    refetch_interval: Duration,
    current: RwLock<Option<Arc<Fetched>>>,
    /// When the last fetch started; held while fetching, so concurrent
    /// requests with the same new kid cause one fetch.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    on_fetch: OnFetch,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl IssuerKeys {
    pub fn new(issuer: &str, http: Http, refetch_interval: Duration, on_fetch: OnFetch) -> Self {
        IssuerKeys {
            issuer: issuer.to_owned(),
            http,
            refetch_interval,
            current: RwLock::new(None),
            last_attempt: tokio::sync::Mutex::new(None),
            on_fetch,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn cached(&self) -> Option<Arc<Fetched>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// The discovery document and keys, fetched when none are cached yet.
    pub async fn get(&self) -> Result<Arc<Fetched>, FetchError> {
        if let Some(f) = self.cached() {
            if f.at.elapsed() >= MAX_KEY_AGE {
                let _ = self.refetch(false).await;
                return Ok(self.cached().unwrap_or(f));
            }
            return Ok(f);
        }
        self.refetch(true).await?;
        self.cached()
            .ok_or_else(|| FetchError(format!("{}: no keys fetched yet", self.issuer)))
    }

    /// The key for `kid`: `Ok(None)` when the issuer does not have it (after
    /// one rate-limited refetch), `Err` when it could not be asked and no
    /// cached key decides.
    pub async fn key(&self, kid: Option<&str>) -> Result<Option<Jwk>, FetchError> {
        let fetched = self.get().await?;
        if let Some(k) = fetched.key(kid) {
            return Ok(Some(k.clone()));
        }
        match self.refetch(false).await {
            Ok(true) => Ok(self.cached().and_then(|f| f.key(kid).cloned())),
            // Rate-limited: the key is unknown as far as we may ask.
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Fetches discovery and keys unless one was started within the
    /// refetch interval (`first`: when nothing is cached, a failure is
    /// still rate-limited but reported). `Ok(true)`: fetched now or by a
    /// concurrent caller; `Ok(false)`: rate-limited.
    async fn refetch(&self, first: bool) -> Result<bool, FetchError> {
        let before = self.cached().map(|f| f.at);
        let mut last = self.last_attempt.lock().await;
        // Someone else fetched while we waited for the lock.
        if self.cached().map(|f| f.at) != before {
            return Ok(true);
        }
        if last.is_some_and(|at| at.elapsed() < self.refetch_interval) {
            return if first {
                Err(FetchError(format!(
                    "{}: the issuer could not be reached recently; not retried for {:?}",
                    self.issuer, self.refetch_interval
                )))
            } else {
                Ok(false)
            };
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(f) => {
                tracing::info!(issuer = %self.issuer, keys = f.keys.len(), "fetched OpenID keys");
                (self.on_fetch)(&self.issuer, "ok");
                if let Ok(mut c) = self.current.write() {
                    *c = Some(Arc::new(f));
                }
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, error = %e, "could not fetch OpenID keys");
                (self.on_fetch)(&self.issuer, "failed");
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<Fetched, FetchError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let body = self.http.get(&url, None).await?;
        let discovery: Discovery = serde_json::from_slice(&body)
            .map_err(|e| FetchError(format!("{url}: not OpenID provider metadata: {e}")))?;
        // OpenID Connect Discovery §4.3: the document must name exactly
        // the issuer it was fetched for.
        if discovery.issuer != self.issuer {
            return Err(FetchError(format!(
                "{url}: names the issuer {:?}, not {:?}",
                discovery.issuer, self.issuer
            )));
        }
        for endpoint in [
            Some(&discovery.jwks_uri),
            discovery.authorization_endpoint.as_ref(),
            discovery.token_endpoint.as_ref(),
            discovery.userinfo_endpoint.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            allowed_url(endpoint).map_err(|m| FetchError(format!("{url}: {m}")))?;
        }
        let jwks = self.http.get(&discovery.jwks_uri, None).await?;
        let keys =
            parse_jwks(&jwks).map_err(|m| FetchError(format!("{}: {m}", discovery.jwks_uri)))?;
        Ok(Fetched {
            discovery,
            keys,
            at: Instant::now(),
        })
    }
}
