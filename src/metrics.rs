//! Prometheus metrics (`GET /metrics`, text exposition format).
//!
//! One `Metrics` lives as long as the process and survives config reloads
//! (the app carries it over), so counters keep counting. Handlers record
//! into it; figures that other components already keep (login cache and
//! verified-token cache hits) are read from them at scrape time through
//! [`Sources`], which each rebuilt app re-registers.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::authn::LoginCache;
use crate::token::verifier::CacheCounters;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    outcome: &'static str,
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    kind: &'static str,
    outcome: &'static str,
}

/// An `[[oidc.trust]]` or `[[oidc.providers]]` entry's logins.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OidcLoginLabels {
    /// `trust` (machines, realm) or `provider` (people, UI).
    kind: &'static str,
    /// The entry's configured name.
    entry: String,
    /// `ok`, or why not (`expired`, `audience`, `require_unmet`, ...).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OidcFetchLabels {
    issuer: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabel {
    dependency: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

/// Every metric of the gate.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    authn_seconds: Family<BackendLabel, Histogram>,
    upstream_seconds: Histogram,
    upstream_errors: Family<KindLabel, Counter>,
    /// The two series of `client_bytes`, looked up once: every connection
    /// adds to them directly.
    bytes_in: Counter,
    bytes_out: Counter,
    throttled: Family<KindLabel, Counter>,
    tag_refusals: Family<KindLabel, Counter>,
    connections: Gauge,
    credential_logins: Family<CredentialLabels, Counter>,
    dependency_up: Family<DependencyLabel, Gauge>,
    oidc_logins: Family<OidcLoginLabels, Counter>,
    oidc_key_fetches: Family<OidcFetchLabels, Counter>,
    sources: Arc<RwLock<Sources>>,
}

/// Counters kept elsewhere, read at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub static_cache: Option<Arc<LoginCache>>,
    pub ldap_cache: Option<Arc<LoginCache>>,
    pub token_cache: Option<Arc<CacheCounters>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Latency buckets from 0.5 ms to about 16 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("registry_gate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by endpoint kind, method and status",
            requests.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "token_requests",
            "Token requests by outcome and authentication backend",
            tokens.clone(),
        );
        let authn_seconds = Family::<BackendLabel, Histogram>::new_with_constructor(latency);
        registry.register(
            "authentication_seconds",
            "Time to check credentials, by backend (cache hits included)",
            authn_seconds.clone(),
        );
        let upstream_seconds = latency();
        registry.register(
            "upstream_response_seconds",
            "Time until the upstream's response headers arrive",
            upstream_seconds.clone(),
        );
        let upstream_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream requests that got no usable answer, by kind",
            upstream_errors.clone(),
        );
        let bytes = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "client_bytes",
            "Bytes read from (in) and written to (out) client connections",
            bytes.clone(),
        );
        let bytes_in = bytes
            .get_or_create(&DirectionLabel { direction: "in" })
            .clone();
        let bytes_out = bytes
            .get_or_create(&DirectionLabel { direction: "out" })
            .clone();
        let throttled = Family::<KindLabel, Counter>::default();
        registry.register(
            "login_throttled",
            "Logins refused by the brute-force throttle, by what was limited",
            throttled.clone(),
        );
        let tag_refusals = Family::<KindLabel, Counter>::default();
        registry.register(
            "tag_refusals",
            "Manifest requests refused by tag rules: immutable overwrite or delete, ACL tag condition",
            tag_refusals.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open now",
            connections.clone(),
        );
        let credential_logins = Family::<CredentialLabels, Counter>::default();
        registry.register(
            "credential_logins",
            "Token requests with a robot account's or personal access token's secret, by kind and outcome",
            credential_logins.clone(),
        );
        let oidc_logins = Family::<OidcLoginLabels, Counter>::default();
        registry.register(
            "oidc_logins",
            "Logins through OpenID Connect, by kind (trust: a workload JWT at the realm; provider: a person in the UI), entry and outcome",
            oidc_logins.clone(),
        );
        let oidc_key_fetches = Family::<OidcFetchLabels, Counter>::default();
        registry.register(
            "oidc_key_fetches",
            "Fetches of an OpenID issuer's discovery document and keys, by issuer and outcome",
            oidc_key_fetches.clone(),
        );
        let dependency_up = Family::<DependencyLabel, Gauge>::default();
        registry.register(
            "dependency_up",
            "1 when the last readiness check reached the dependency (upstream, ldap, store), else 0",
            dependency_up.clone(),
        );
        let sources = Arc::new(RwLock::new(Sources::default()));
        registry.register_collector(Box::new(SourcesCollector(sources.clone())));
        Metrics {
            registry,
            requests,
            tokens,
            authn_seconds,
            upstream_seconds,
            upstream_errors,
            bytes_in,
            bytes_out,
            throttled,
            tag_refusals,
            connections,
            credential_logins,
            dependency_up,
            oidc_logins,
            oidc_key_fetches,
            sources,
        }
    }

    /// A login with a credential: `kind` robot or personal, `outcome`
    /// issued, refused or unavailable.
    pub fn credential_login(&self, kind: &'static str, outcome: &'static str) {
        self.credential_logins
            .get_or_create(&CredentialLabels { kind, outcome })
            .inc();
    }

    /// What the last readiness check found of each dependency.
    pub fn dependencies(&self, r: &crate::health::Readiness) {
        let set = |dependency: &'static str, up: bool| {
            self.dependency_up
                .get_or_create(&DependencyLabel { dependency })
                .set(i64::from(up));
        };
        set("upstream", r.upstream == "ok");
        if let Some(ldap) = &r.ldap {
            set("ldap", ldap == "ok");
        }
        if let Some(store) = &r.store {
            set("store", store == "ok");
        }
    }

    /// An OpenID login: `kind` trust or provider, the entry's name, and
    /// `ok` or the refusal's reason.
    pub fn oidc_login(&self, kind: &'static str, entry: &str, outcome: &'static str) {
        self.oidc_logins
            .get_or_create(&OidcLoginLabels {
                kind,
                entry: entry.to_owned(),
                outcome,
            })
            .inc();
    }

    /// A fetch of an issuer's discovery and keys: `ok` or `failed`.
    pub fn oidc_key_fetch(&self, issuer: &str, outcome: &'static str) {
        self.oidc_key_fetches
            .get_or_create(&OidcFetchLabels {
                issuer: issuer.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Points the scrape-time counters at a (re)built app's caches.
    pub fn set_sources(&self, sources: Sources) {
        if let Ok(mut s) = self.sources.write() {
            *s = sources;
        }
    }

    pub fn request(&self, kind: &'static str, method: &http::Method, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                kind,
                method: method_label(method),
                status,
            })
            .inc();
    }

    pub fn token_request(&self, outcome: &'static str, backend: &'static str) {
        self.tokens
            .get_or_create(&TokenLabels { outcome, backend })
            .inc();
    }

    pub fn authentication(&self, backend: &'static str, took: Duration) {
        self.authn_seconds
            .get_or_create(&BackendLabel { backend })
            .observe(took.as_secs_f64());
    }

    pub fn upstream_response(&self, took: Duration) {
        self.upstream_seconds.observe(took.as_secs_f64());
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// The (in, out) byte counters, for a connection to add to directly.
    pub fn client_byte_counters(&self) -> (Counter, Counter) {
        (self.bytes_in.clone(), self.bytes_out.clone())
    }

    /// A request refused by a tag rule: `overwrite`, `delete` (immutable
    /// tags) or `acl` (a `tag` condition of the ACL).
    pub fn tag_refused(&self, kind: &'static str) {
        self.tag_refusals.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn login_throttled(&self, kind: &'static str) {
        self.throttled.get_or_create(&KindLabel { kind }).inc();
    }

    /// Counts a connection as open until the guard is dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.clone())
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// The method as a static label: no allocation per request, and a bounded
/// label set whatever methods clients invent.
fn method_label(method: &http::Method) -> &'static str {
    use http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Decrements the open-connections gauge when the connection ends.
pub struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

#[derive(Debug)]
struct SourcesCollector(Arc<RwLock<Sources>>);

impl Collector for SourcesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(s) = self.0.read().map(|s| s.clone()) else {
            return Ok(());
        };
        let logins = [("static", &s.static_cache), ("ldap", &s.ldap_cache)];
        for (what, help, pick) in [
            (
                "login_cache_hits",
                "Logins answered from the login cache",
                0,
            ),
            ("login_cache_misses", "Logins that asked the backend", 1),
            (
                "login_cache_errors",
                "Backend calls that failed (LDAP down...)",
                2,
            ),
        ] {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(what, help, None, counter.metric_type())?;
            for (backend, cache) in &logins {
                let Some(cache) = cache else { continue };
                let st = cache.stats();
                let v = [st.hits, st.misses, st.errors][pick];
                let labels = BackendLabel { backend };
                ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
            }
        }
        if let Some(t) = &s.token_cache {
            let (hits, misses) = t.get();
            for (what, help, v) in [
                (
                    "token_cache_hits",
                    "Access tokens found already verified",
                    hits,
                ),
                (
                    "token_cache_misses",
                    "Access tokens whose signature was checked",
                    misses,
                ),
            ] {
                let c = ConstCounter::new(v);
                c.encode(encoder.encode_descriptor(what, help, None, c.metric_type())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_counters_in_text_format() {
        let m = Arc::new(Metrics::new());
        m.request("manifest", &http::Method::GET, 200);
        m.request("manifest", &http::Method::GET, 200);
        m.token_request("issued", "static");
        m.client_byte_counters().0.inc_by(42);
        let guard = m.connection();
        let text = m.encode();
        assert!(
            text.contains(
                "registry_gate_http_requests_total{kind=\"manifest\",method=\"GET\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "registry_gate_token_requests_total{outcome=\"issued\",backend=\"static\"} 1"
        ));
        assert!(text.contains("registry_gate_client_bytes_total{direction=\"in\"} 42"));
        assert!(text.contains("registry_gate_open_connections 1"));
        drop(guard);
        assert!(m.encode().contains("registry_gate_open_connections 0"));
    }

    #[test]
    fn reads_cache_counters_at_scrape_time() {
        let m = Metrics::new();
        let counters = Arc::new(CacheCounters::default());
        counters.hit();
        counters.hit();
        counters.miss();
        m.set_sources(Sources {
            token_cache: Some(counters),
            static_cache: Some(Arc::new(LoginCache::new(
                Duration::from_secs(1),
                Duration::from_secs(1),
                10,
            ))),
            ldap_cache: None,
        });
        let text = m.encode();
        assert!(
            text.contains("registry_gate_token_cache_hits_total 2"),
            "{text}"
        );
        assert!(text.contains("registry_gate_token_cache_misses_total 1"));
        assert!(text.contains("registry_gate_login_cache_hits_total{backend=\"static\"} 0"));
        assert!(!text.contains("backend=\"ldap\""));
    }
}
