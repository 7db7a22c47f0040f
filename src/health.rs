//! Readiness: can this instance serve? Its upstream is reachable and its
//! signing key loaded. LDAP and the store, shared by every instance, are
//! reported beside them (`degraded`) but never make an instance unready:
//! cached, static and anonymous users and issued tokens work without them,
//! and an unready fleet would serve no one. Checked at most once per `TTL` however often
//! probes come (a load balancer may ask several times a second per instance).

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;

use crate::authn::Authenticators;
use crate::upstream::Upstream;

/// How long one answer is reused.
const TTL: Duration = Duration::from_secs(2);
/// How long each dependency may take to answer a probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The readiness of each dependency: `"ok"` or what is wrong.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub upstream: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ldap: Option<String>,
    pub signing_key: String,
    /// The credential store. Reported, but it does not make the gate
    /// unready: static and LDAP logins and every issued token work without
    /// it; only robot and personal-token logins answer 503 meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The shared dependencies that are down (`ldap`, `store`): the gate
    /// still serves (cached, static and anonymous users, issued tokens), so
    /// they do not make it unready (docs/operations.md). Loopback callers
    /// and the metrics listener see this; others only `ready`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<&'static str>,
}

/// The last answer and when it was made.
#[derive(Default)]
pub struct ReadinessCache {
    last: Mutex<Option<(Instant, Readiness)>>,
}

impl ReadinessCache {
    /// The cached answer, or a fresh one when it is older than `TTL`. The
    /// lock is held while checking, so concurrent probes share one check.
    pub async fn get(&self, upstream: &Upstream, authn: &Authenticators) -> Readiness {
        let mut last = self.last.lock().await;
        if let Some((at, r)) = &*last
            && at.elapsed() < TTL
        {
            return r.clone();
        }
        let r = check(upstream, authn).await;
        if !r.ready {
            // The detail is for operators: /readyz tells remote callers less.
            tracing::warn!(upstream = %r.upstream, ldap = ?r.ldap, "not ready");
        } else if !r.degraded.is_empty() {
            tracing::warn!(degraded = ?r.degraded, ldap = ?r.ldap, store = ?r.store, "ready, but degraded");
        }
        *last = Some((Instant::now(), r.clone()));
        r
    }
}

async fn check(upstream: &Upstream, authn: &Authenticators) -> Readiness {
    let describe = |r: Result<(), String>| r.map_or_else(|e| e, |()| "ok".to_owned());
    let (up, ldap, store) = tokio::join!(
        upstream.probe(PROBE_TIMEOUT),
        async {
            match &authn.ldap {
                Some((ldap, _)) => Some(
                    tokio::time::timeout(PROBE_TIMEOUT, ldap.ping())
                        .await
                        .map_err(|_| "no answer in time".to_owned())
                        .and_then(|r| r.map_err(|e| e.to_string())),
                ),
                None => None,
            }
        },
        async {
            match &authn.credentials {
                Some(creds) => Some(
                    tokio::time::timeout(PROBE_TIMEOUT, creds.store().ping())
                        .await
                        .map_err(|_| "no answer in time".to_owned())
                        .and_then(|r| r.map_err(|e| e.to_string())),
                ),
                None => None,
            }
        }
    );
    // Only what this instance cannot serve without: its upstream (and its
    // listener, config and signing key, which it would not run without).
    // LDAP and the store are shared by every instance: one of them down
    // must not take the whole fleet out of the load balancer at once.
    let ready = up.is_ok();
    let mut degraded = Vec::new();
    if ldap.as_ref().is_some_and(Result::is_err) {
        degraded.push("ldap");
    }
    if store.as_ref().is_some_and(Result::is_err) {
        degraded.push("store");
    }
    Readiness {
        ready,
        degraded,
        upstream: describe(up),
        ldap: ldap.map(describe),
        // The app cannot be built without its key: if we run, it is loaded.
        signing_key: "ok".into(),
        store: store.map(describe),
    }
}
