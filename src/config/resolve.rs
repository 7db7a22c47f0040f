//! From the raw file shape to a checked `Config`: addresses parsed, URLs
//! checked, password hashes recognised, ACL compiled. Each error names its key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;

use super::raw::RawConfig;
use super::{ConfigError, ConfigErrors};
use crate::authn::Labels;
use crate::authn::ldap::ResolvedLdap;
use crate::authn::oidc::OidcConfig;
use crate::authz::Acl;
use crate::authz::tags::Immutable;
use crate::ratelimit::ThrottleConfig;
use crate::secret::Secret;
use crate::store::StoreConfig;

/// The resolved, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub token: TokenConfig,
    pub users: BTreeMap<String, StaticUser>,
    pub acl: Acl,
    /// `[[immutable]]`: release tags that cannot be overwritten or deleted.
    pub immutable: Immutable,
    /// `[ldap]`, when configured: files read, URLs checked, TLS trust built.
    pub ldap: Option<ResolvedLdap>,
    /// `[oidc]`: providers and trusted issuers (empty when not configured).
    pub oidc: OidcConfig,
    /// `[limits]`: timeouts and sizes of the HTTP edge.
    pub limits: LimitsConfig,
    /// `[ratelimit]`: brute-force protection of the realm.
    pub ratelimit: ThrottleConfig,
    /// `[store]`: which database, password read.
    pub store: StoreConfig,
    /// `[tokens]`: credential lifetimes and the store cache's TTL.
    pub tokens: TokensConfig,
    /// What was read, for `check-config` (secrets print as `***`).
    pub raw: RawConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `scheme://host[:port]`, no trailing slash.
    pub public_url: Option<String>,
    pub tls: Option<TlsFiles>,
    /// As configured: 0 means one per usable CPU (see [`ServerConfig::workers`]).
    pub worker_threads: usize,
    /// Peers whose `X-Forwarded-For` is believed (see [`crate::http::client_address`]).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A PROXY protocol header comes first on every connection.
    pub proxy_protocol: bool,
}

/// The most `server.worker_threads` may ask for.
pub const MAX_WORKER_THREADS: usize = 1024;

impl ServerConfig {
    /// How many threads serve requests: `worker_threads`, or when 0 the
    /// CPUs this process may run on (its affinity mask, e.g. `taskset`, a
    /// container's cpuset or CPU quota). 1 selects tokio's single-threaded
    /// runtime.
    pub fn workers(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How often the files are checked for a renewal.
    pub reload_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `http://host:port`, no trailing slash.
    pub url: String,
    pub authority: http::uri::Authority,
    pub connect_timeout: Duration,
    pub response_header_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub service: String,
    pub issuer: String,
    pub lifetime: Duration,
    pub refresh_lifetime: Duration,
    pub key: Option<PathBuf>,
    /// Public keys of earlier signing keys, still accepted when verifying.
    pub previous_keys: Vec<PathBuf>,
}

/// The resolved `[limits]` section (see `RawLimits` for each meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_manifest_bytes: u64,
    pub max_connections: usize,
    pub body_stall_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub max_connections_per_address: usize,
    pub first_request_timeout: Duration,
    pub max_streams_per_connection: u32,
    pub max_upstream_connections: usize,
}

/// The resolved `[tokens]` section (see `RawTokens`).
pub type TokensConfig = super::raw::RawTokens;

/// The longest `[tokens] cache_ttl`: the promise is that a revoked
/// credential stops working everywhere within 10 seconds.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct StaticUser {
    pub password_hash: Secret,
    pub labels: Labels,
}

/// The longest token lifetime we accept: tokens cannot be revoked, so they
/// must stay short (docker asks for a new one whenever one expires).
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

impl Config {
    /// Checks every value; collects all errors rather than stopping at the first.
    pub fn resolve(raw: RawConfig) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut check = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                errors.push(e);
            }
        };
        let listen = raw.server.listen.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new(
                "server.listen",
                format!(
                    "{:?} is not an address like 0.0.0.0:5000",
                    raw.server.listen
                ),
            )
        });
        let public_url = raw
            .server
            .public_url
            .as_deref()
            .map(|u| base_url("server.public_url", u, &["http", "https"]))
            .transpose();
        let upstream = base_url("upstream.url", &raw.upstream.url, &["http"]);
        check(token_checks(&raw));
        if !matches!(raw.log.format.as_str(), "text" | "json") {
            check(Err(ConfigError::new(
                "log.format",
                "must be \"text\" or \"json\"",
            )));
        }
        if let Some(listen) = &raw.metrics.listen
            && listen.parse::<SocketAddr>().is_err()
        {
            check(Err(ConfigError::new(
                "metrics.listen",
                format!("{listen:?} is not an address like 127.0.0.1:9100"),
            )));
        }
        if raw.audit.output.trim().is_empty() {
            check(Err(ConfigError::new(
                "audit.output",
                "must be \"stdout\", \"off\" or a file path",
            )));
        }
        let mut users = BTreeMap::new();
        for (name, user) in &raw.users {
            let key = format!("users.{name}");
            check(valid_account(&key, name));
            let hash = user.password.expose();
            if bcrypt_cost(hash).is_none() {
                check(Err(ConfigError::new(
                    format!("{key}.password"),
                    "not a bcrypt hash; make one with `registry-gate hash-password`",
                )));
                continue;
            }
            users.insert(
                name.clone(),
                StaticUser {
                    password_hash: user.password.clone(),
                    labels: user.labels.clone(),
                },
            );
        }
        errors.extend(limits_checks(&raw));
        errors.extend(ratelimit_checks(&raw));
        if raw.server.worker_threads > MAX_WORKER_THREADS {
            errors.push(ConfigError::new(
                "server.worker_threads",
                format!("must be at most {MAX_WORKER_THREADS} (0: one per CPU)"),
            ));
        }
        if let Some(tls) = &raw.server.tls
            && tls.reload_interval < Duration::from_millis(100)
        {
            errors.push(ConfigError::new(
                "server.tls.reload_interval",
                "must be at least 100ms",
            ));
        }
        let mut trusted_proxies = Vec::new();
        for (i, p) in raw.server.trusted_proxies.iter().enumerate() {
            match crate::authz::parse_net(p) {
                Some(net) => trusted_proxies.push(net),
                None => errors.push(ConfigError::new(
                    format!("server.trusted_proxies[{i}]"),
                    format!("{p:?} is not an address or CIDR like 10.0.0.0/8"),
                )),
            }
        }
        let acl = Acl::compile(&raw.acl).map_err(|e| ConfigError::new(e.path, e.message));
        let immutable = Immutable::compile(&raw.immutable)
            .map_err(|e| ConfigError::new(e.path, e.message))
            .inspect_err(|e| errors.push(e.clone()))
            .unwrap_or_default();
        // Relative paths in [ldap] resolve against the working directory, as
        // every other path in the file does.
        let ldap = raw
            .ldap
            .as_ref()
            .map(|l| l.resolve(Path::new(".")))
            .transpose()
            .map_err(|e| ConfigError::new(e.key, e.message));
        if let Err(e) = &ldap {
            errors.push(e.clone());
        }
        let oidc = raw
            .oidc
            .as_ref()
            .map(|o| o.resolve(Path::new(".")))
            .transpose()
            .map_err(|e| ConfigError::new(e.key, e.message))
            .inspect_err(|e| errors.push(e.clone()))
            .ok()
            .flatten()
            .unwrap_or_default();
        let store = raw
            .store
            .resolve(Path::new("."))
            .map_err(|e| ConfigError::new(e.key, e.message));
        if let Err(e) = &store {
            errors.push(e.clone());
        }
        errors.extend(tokens_checks(&raw));
        let (listen, public_url, upstream, acl, store) =
            match (listen, public_url, upstream, acl, store) {
                (Ok(l), Ok(p), Ok(u), Ok(a), Ok(s)) if errors.is_empty() => (l, p, u, a, s),
                (l, p, u, a, _) => {
                    errors.extend(l.err());
                    errors.extend(p.err());
                    errors.extend(u.err());
                    errors.extend(a.err());
                    return Err(ConfigErrors(errors));
                }
            };
        let authority = upstream
            .parse::<Uri>()
            .ok()
            .and_then(|u| u.authority().cloned())
            .ok_or_else(|| ConfigError::new("upstream.url", "no host"))?;
        Ok(Config {
            server: ServerConfig {
                listen,
                public_url,
                tls: raw.server.tls.as_ref().map(|t| TlsFiles {
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                    reload_interval: t.reload_interval,
                }),
                worker_threads: raw.server.worker_threads,
                trusted_proxies,
                proxy_protocol: raw.server.proxy_protocol,
            },
            upstream: UpstreamConfig {
                url: upstream,
                authority,
                connect_timeout: raw.upstream.connect_timeout,
                response_header_timeout: raw.upstream.response_header_timeout,
            },
            token: TokenConfig {
                service: raw.token.service.clone(),
                issuer: raw.token.issuer.clone(),
                lifetime: raw.token.lifetime,
                refresh_lifetime: raw.token.refresh_lifetime,
                key: raw.token.key.clone(),
                previous_keys: raw.token.previous_keys.clone(),
            },
            users,
            acl,
            immutable,
            ldap: ldap.ok().flatten(),
            oidc,
            limits: LimitsConfig {
                header_read_timeout: raw.limits.header_read_timeout,
                idle_timeout: raw.limits.idle_timeout,
                max_header_bytes: raw.limits.max_header_bytes,
                max_headers: raw.limits.max_headers,
                max_manifest_bytes: raw.limits.max_manifest_bytes,
                max_connections: raw.limits.max_connections,
                body_stall_timeout: raw.limits.body_stall_timeout,
                shutdown_timeout: raw.limits.shutdown_timeout,
                max_connections_per_address: raw.limits.max_connections_per_address,
                first_request_timeout: raw.limits.first_request_timeout,
                max_streams_per_connection: raw.limits.max_streams_per_connection,
                max_upstream_connections: raw.limits.max_upstream_connections,
            },
            ratelimit: ThrottleConfig::from(&raw.ratelimit),
            store,
            tokens: raw.tokens.clone(),
            raw,
        })
    }
}

fn token_checks(raw: &RawConfig) -> Result<(), ConfigError> {
    let t = &raw.token;
    if t.service.trim().is_empty() {
        return Err(ConfigError::new("token.service", "must not be empty"));
    }
    if t.issuer.trim().is_empty() {
        return Err(ConfigError::new("token.issuer", "must not be empty"));
    }
    if t.lifetime < Duration::from_secs(60) || t.lifetime > MAX_LIFETIME {
        return Err(ConfigError::new(
            "token.lifetime",
            "must be between 1m and 24h (docker asks for a new token when one expires)",
        ));
    }
    if t.refresh_lifetime < t.lifetime {
        return Err(ConfigError::new(
            "token.refresh_lifetime",
            "must not be shorter than token.lifetime",
        ));
    }
    Ok(())
}

fn tokens_checks(raw: &RawConfig) -> Vec<ConfigError> {
    let t = &raw.tokens;
    let mut errors = Vec::new();
    if t.max_lifetime < Duration::from_secs(3600) {
        errors.push(ConfigError::new(
            "tokens.max_lifetime",
            "must be at least 1h",
        ));
    }
    if t.default_lifetime.is_zero() || t.default_lifetime > t.max_lifetime {
        errors.push(ConfigError::new(
            "tokens.default_lifetime",
            "must be longer than 0s and not longer than tokens.max_lifetime",
        ));
    }
    if t.cache_ttl.is_zero() || t.cache_ttl > MAX_CACHE_TTL {
        errors.push(ConfigError::new(
            "tokens.cache_ttl",
            "must be between 1s and 10s (revocations must hold everywhere within 10s)",
        ));
    }
    errors
}

/// The smallest request head limit hyper accepts.
const MIN_HEADER_BYTES: usize = 8 * 1024;
/// Beyond this a "header" is an attack, whatever the config says.
const MAX_HEADER_BYTES: usize = 1024 * 1024;
/// The most connections a semaphore of ours is sized for.
const MAX_CONNECTIONS: usize = 1_000_000;

fn limits_checks(raw: &RawConfig) -> Vec<ConfigError> {
    let l = &raw.limits;
    let mut errors = Vec::new();
    let mut positive = |key: &str, d: Duration| {
        if d.is_zero() {
            errors.push(ConfigError::new(key, "must be longer than 0s"));
        }
    };
    positive("limits.header_read_timeout", l.header_read_timeout);
    positive("limits.idle_timeout", l.idle_timeout);
    positive("limits.body_stall_timeout", l.body_stall_timeout);
    positive("limits.first_request_timeout", l.first_request_timeout);
    positive("upstream.connect_timeout", raw.upstream.connect_timeout);
    positive(
        "upstream.response_header_timeout",
        raw.upstream.response_header_timeout,
    );
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&l.max_header_bytes) {
        errors.push(ConfigError::new(
            "limits.max_header_bytes",
            format!("must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}"),
        ));
    }
    if !(1..=10_000).contains(&l.max_headers) {
        errors.push(ConfigError::new(
            "limits.max_headers",
            "must be between 1 and 10000",
        ));
    }
    if l.max_manifest_bytes < 1024 {
        errors.push(ConfigError::new(
            "limits.max_manifest_bytes",
            "must be at least 1024 (distribution uses 4194304)",
        ));
    }
    if !(1..=MAX_CONNECTIONS).contains(&l.max_connections) {
        errors.push(ConfigError::new(
            "limits.max_connections",
            format!("must be between 1 and {MAX_CONNECTIONS}"),
        ));
    }
    if !(1..=1000).contains(&l.max_streams_per_connection) {
        errors.push(ConfigError::new(
            "limits.max_streams_per_connection",
            "must be between 1 and 1000",
        ));
    }
    if !(1..=MAX_CONNECTIONS).contains(&l.max_upstream_connections) {
        errors.push(ConfigError::new(
            "limits.max_upstream_connections",
            format!("must be between 1 and {MAX_CONNECTIONS}"),
        ));
    }
    errors
}

fn ratelimit_checks(raw: &RawConfig) -> Vec<ConfigError> {
    let r = &raw.ratelimit;
    let mut errors = Vec::new();
    if r.backoff.is_zero() {
        errors.push(ConfigError::new(
            "ratelimit.backoff",
            "must be longer than 0s",
        ));
    }
    if r.max_backoff < r.backoff {
        errors.push(ConfigError::new(
            "ratelimit.max_backoff",
            "must not be shorter than ratelimit.backoff",
        ));
    }
    if r.capacity == 0 {
        errors.push(ConfigError::new("ratelimit.capacity", "must be at least 1"));
    }
    errors
}

/// Checks `scheme://authority[/]` and returns it without the trailing slash.
fn base_url(key: &str, url: &str, schemes: &[&str]) -> Result<String, ConfigError> {
    let bad = |why: &str| ConfigError::new(key, format!("{url:?} {why}"));
    let uri = url.parse::<Uri>().map_err(|_| bad("is not a URL"))?;
    let scheme = uri.scheme_str().ok_or_else(|| bad("has no scheme"))?;
    if !schemes.contains(&scheme) {
        return Err(bad(&format!("must use {}", schemes.join(" or "))));
    }
    let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(bad(
            "must not have a path or query (a registry lives at /v2/)",
        ));
    }
    if authority.as_str().contains('@') {
        return Err(bad("must not contain credentials"));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// Static account names follow the rules the ACL placeholders rely on.
fn valid_account(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            "account names use letters, digits, '.', '_', '-' and '@'",
        ))
    }
}

/// The cost of a bcrypt hash (`$2a$`, `$2b$`, `$2x$` or `$2y$`), if it is one.
pub fn bcrypt_cost(hash: &str) -> Option<u32> {
    let rest = hash
        .strip_prefix("$2a$")
        .or_else(|| hash.strip_prefix("$2b$"))
        .or_else(|| hash.strip_prefix("$2x$"))
        .or_else(|| hash.strip_prefix("$2y$"))?;
    let (cost, salt_hash) = rest.split_once('$')?;
    let cost: u32 = cost.parse().ok()?;
    ((4..=31).contains(&cost) && salt_hash.len() == 53).then_some(cost)
}
