//! The configuration file's shape, mirrored by serde structs. Unknown keys are
//! errors (`deny_unknown_fields`): a misspelled key must not be dropped
//! silently, as the token servers we replace did. Values are checked and
//! turned into the resolved `Config` in `super::resolve`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::authn::Labels;
use crate::authn::ldap::LdapConfig;
use crate::authn::oidc::RawOidc;
use crate::authz::RawRule;
use crate::authz::tags::RawImmutable;
use crate::secret::Secret;
use crate::store::RawStore;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub token: RawToken,
    #[serde(default)]
    pub users: BTreeMap<String, RawUser>,
    #[serde(default)]
    pub acl: Vec<RawRule>,
    /// Release tags that cannot be overwritten or deleted (`[[immutable]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub immutable: Vec<RawImmutable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapConfig>,
    /// OpenID providers (people) and trusted issuers (machines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<RawOidc>,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub log: RawLog,
    /// Timeouts and sizes of the HTTP edge (`[limits]`).
    #[serde(default)]
    pub limits: RawLimits,
    /// Brute-force protection of the token realm (`[ratelimit]`).
    #[serde(default)]
    pub ratelimit: RawRateLimit,
    /// The Prometheus endpoint (`[metrics]`).
    #[serde(default)]
    pub metrics: RawMetrics,
    /// The database of credentials and shared state (`[store]`).
    #[serde(default)]
    pub store: RawStore,
    /// Robot accounts' and personal access tokens' lifetimes (`[tokens]`).
    #[serde(default)]
    pub tokens: RawTokens,
}

/// `[tokens]`: robot accounts and personal access tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTokens {
    /// Lifetime of a new credential when none is asked for.
    #[serde(with = "humantime_serde")]
    pub default_lifetime: Duration,
    /// The longest lifetime a credential may be given.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// How long an instance trusts what it looked up in the store (at most
    /// 10s): a revocation anywhere holds everywhere within this time.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
}

impl Default for RawTokens {
    fn default() -> Self {
        RawTokens {
            default_lifetime: Duration::from_secs(90 * 24 * 3600),
            max_lifetime: Duration::from_secs(365 * 24 * 3600),
            cache_ttl: Duration::from_secs(5),
        }
    }
}

/// `[metrics]`: the Prometheus endpoint `GET /metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Serve `/metrics` at all.
    pub enabled: bool,
    /// Serve it on this separate address only (e.g. `127.0.0.1:9100`),
    /// not on the main listener; absent: on the main listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// On the main listener, serve `/metrics` to callers on other hosts
    /// too; default: only to callers on this host (loopback).
    pub public: bool,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            enabled: true,
            listen: None,
            public: false,
        }
    }
}

/// `[audit]`: where the audit trail goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// `"stdout"` (default), `"off"`, or a file path (JSON lines, appended).
    pub output: String,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            output: "stdout".into(),
        }
    }
}

/// `[log]`: the console log (stderr).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `"text"` (default) or `"json"`; `--log-format` overrides it.
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
    /// Threads serving requests: 0 = one per CPU the process may run on;
    /// 1 = a single-threaded runtime (measured cheaper per request).
    #[serde(default)]
    pub worker_threads: usize,
    /// Peers (addresses or CIDRs) whose `X-Forwarded-For` is believed:
    /// load balancers and ingress controllers in front of the gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// Expect a PROXY protocol (v1 or v2) header on every connection.
    #[serde(default)]
    pub proxy_protocol: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "0.0.0.0:5000".into(),
            public_url: None,
            tls: None,
            worker_threads: 0,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How often the certificate and key files are checked for changes
    /// (renewals are picked up without a restart).
    #[serde(default = "default_tls_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

fn default_tls_reload_interval() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: String,
    /// Bound on opening a TCP connection to the upstream.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound on the upstream's response headers, counted from the moment
    /// the request (with its whole body) has been sent. Bodies themselves are
    /// not limited as a whole.
    #[serde(default = "default_response_header_timeout", with = "humantime_serde")]
    pub response_header_timeout: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_response_header_timeout() -> Duration {
    Duration::from_secs(60)
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            url: "http://127.0.0.1:5001".into(),
            connect_timeout: default_connect_timeout(),
            response_header_timeout: default_response_header_timeout(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub service: String,
    pub issuer: String,
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// How long a refresh token (docker's stored identity token) stays valid.
    #[serde(with = "humantime_serde")]
    pub refresh_lifetime: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Public keys (PEM) of earlier signing keys whose tokens are still
    /// accepted, for key rotation across instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_keys: Vec<PathBuf>,
}

impl Default for RawToken {
    fn default() -> Self {
        RawToken {
            service: "Docker registry".into(),
            issuer: "registry-gate".into(),
            lifetime: Duration::from_secs(5 * 60),
            refresh_lifetime: Duration::from_secs(30 * 24 * 3600),
            key: None,
            previous_keys: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    /// A bcrypt hash, never the password itself.
    pub password: Secret,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// `[limits]`: what one client may cost the gate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// A client must send a request's complete headers within this time of
    /// its first byte (slowloris); also bounds the TLS handshake.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Largest manifest a client may PUT, in bytes (distribution: 4 MiB).
    pub max_manifest_bytes: u64,
    /// Most client connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// A request or response body that delivers no byte for this long is
    /// aborted (a stalled transfer, not a slow one).
    #[serde(with = "humantime_serde")]
    pub body_stall_timeout: Duration,
    /// On SIGTERM, how long in-flight requests may run on.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Most connections from one client address (IPv6: one /64) at once;
    /// 0: no limit. Connections beyond it are closed at once.
    pub max_connections_per_address: usize,
    /// A new connection must send the first byte of its first request (or
    /// of its TLS handshake) within this time.
    #[serde(with = "humantime_serde")]
    pub first_request_timeout: Duration,
    /// Most concurrent HTTP/2 streams (requests) on one connection, and so
    /// upstream connections one client connection can use.
    pub max_streams_per_connection: u32,
    /// Most upstream connections busy with a request at once, whichever
    /// clients they serve; more requests wait for one (up to
    /// `upstream.connect_timeout`, then 503).
    pub max_upstream_connections: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            header_read_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(90),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_manifest_bytes: 4 * 1024 * 1024,
            max_connections: 1024,
            body_stall_timeout: Duration::from_secs(120),
            shutdown_timeout: Duration::from_secs(30),
            max_connections_per_address: 128,
            first_request_timeout: Duration::from_secs(10),
            max_streams_per_connection: 32,
            max_upstream_connections: 1024,
        }
    }
}

/// `[ratelimit]`: failed logins on the token realm, per client address and
/// per account, answered with growing back-off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimit {
    pub enabled: bool,
    /// Failed logins from one address (IPv6: one /64) before back-off
    /// starts; 0 turns the per-address limit off.
    pub failures_per_address: u32,
    /// Failed logins for one account (from anywhere) before back-off
    /// starts; 0 turns the per-account limit off.
    pub failures_per_account: u32,
    /// The first back-off; each further failure doubles it.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// The longest back-off: no lockout lasts longer.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Failures are forgotten after this long without one (counted from
    /// the end of the last back-off).
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
    /// An address an account logged in from successfully stays exempt from
    /// that account's lockout this long.
    #[serde(with = "humantime_serde")]
    pub trusted_address_ttl: Duration,
    /// Most addresses and accounts tracked at once.
    pub capacity: u64,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        RawRateLimit {
            enabled: true,
            failures_per_address: 20,
            failures_per_account: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            forget_after: Duration::from_secs(900),
            trusted_address_ttl: Duration::from_secs(7 * 24 * 3600),
            capacity: 100_000,
        }
    }
}
