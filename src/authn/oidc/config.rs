//! The `[oidc]` section: `[[oidc.providers]]` (people, the web UI's "Log in
//! with ...") and `[[oidc.trust]]` (machines: a JWT from the issuer as the
//! registry password). What the operator writes ([`RawOidc`]) and what the
//! gate uses ([`OidcConfig`]), checked with errors that name the key.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::mapping::{Condition, Template};
use crate::secret::Secret;

/// `[oidc]` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<RawProvider>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust: Vec<RawTrust>,
    /// The shortest time between two key fetches from one issuer that a
    /// token with an unknown `kid` may cause (a flood of made-up kids
    /// cannot hammer the issuer).
    #[serde(
        default = "default_refetch_interval",
        with = "humantime_serde",
        skip_serializing_if = "is_default_refetch"
    )]
    pub key_refetch_interval: Duration,
}

fn default_refetch_interval() -> Duration {
    Duration::from_secs(10)
}

fn is_default_refetch(d: &Duration) -> bool {
    *d == default_refetch_interval()
}

/// `[[oidc.providers]]`: an OpenID provider people log in with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret_file: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_account_claim")]
    pub account_claim: String,
    /// Label name -> claim (a string or a list of strings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}

fn default_account_claim() -> String {
    "preferred_username".into()
}

/// `[[oidc.trust]]`: an issuer whose JWTs machines use as the password.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrust {
    pub name: String,
    pub issuer: String,
    pub audience: String,
    /// `prefix:${claims.NAME}...`: the account name, from the claims.
    pub account: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Claim -> `"exact"` or `"/regex/"`; all must hold.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub require: BTreeMap<String, String>,
}

/// A checked `[[oidc.providers]]` entry.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub account_claim: String,
    pub labels: BTreeMap<String, String>,
}

/// A checked `[[oidc.trust]]` entry.
#[derive(Debug, Clone)]
pub struct Trust {
    pub name: String,
    pub issuer: String,
    pub audience: String,
    pub account: Template,
    pub labels: BTreeMap<String, String>,
    pub require: Vec<(String, Condition)>,
}

/// The checked `[oidc]` section.
#[derive(Debug, Clone, Default)]
pub struct OidcConfig {
    pub providers: Vec<Provider>,
    pub trust: Vec<Trust>,
    pub key_refetch_interval: Duration,
}

impl OidcConfig {
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty() && self.trust.is_empty()
    }

    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }
}

/// A key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> OidcConfigError {
    OidcConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// Entry names: they appear in account names (`corp/alice`), URLs
/// (`/ui/oidc/login/corp`), metrics and audit events.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-".contains(&c))
}

/// Whether `url` may be an issuer (or an endpoint it names): `https`, or
/// `http` on a loopback address (tests, an IdP on the same host).
pub fn allowed_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!("{url:?} must not contain credentials"));
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        _ => Err(format!(
            "{url:?} must use https (http only on a loopback address)"
        )),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl RawOidc {
    /// Checks every entry; `client_secret_file` is read, relative to `base`.
    pub fn resolve(&self, base: &Path) -> Result<OidcConfig, OidcConfigError> {
        let mut names = std::collections::BTreeSet::new();
        let mut providers = Vec::new();
        for (i, p) in self.providers.iter().enumerate() {
            let key = |k: &str| format!("oidc.providers[{i}].{k}");
            if !valid_name(&p.name) {
                return Err(err(
                    key("name"),
                    "use lowercase letters, digits, '-' and '_' (at most 64, starting with a letter)",
                ));
            }
            if !names.insert(p.name.clone()) {
                return Err(err(key("name"), format!("{:?} is used twice", p.name)));
            }
            allowed_url(&p.issuer).map_err(|m| err(key("issuer"), m))?;
            if p.client_id.is_empty() {
                return Err(err(key("client_id"), "must not be empty"));
            }
            let path = base.join(&p.client_secret_file);
            let secret = std::fs::read_to_string(&path).map_err(|e| {
                err(
                    key("client_secret_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let secret = secret.trim_end_matches(['\r', '\n']);
            if secret.is_empty() {
                return Err(err(
                    key("client_secret_file"),
                    format!("{} is empty", path.display()),
                ));
            }
            if !p.scopes.iter().any(|s| s == "openid") {
                return Err(err(key("scopes"), "must include \"openid\""));
            }
            if p.account_claim.is_empty() {
                return Err(err(key("account_claim"), "must not be empty"));
            }
            check_labels(&p.labels, &key("labels"))?;
            providers.push(Provider {
                name: p.name.clone(),
                issuer: p.issuer.clone(),
                client_id: p.client_id.clone(),
                client_secret: Secret::new(secret),
                scopes: p.scopes.clone(),
                account_claim: p.account_claim.clone(),
                labels: p.labels.clone(),
            });
        }
        let mut trust = Vec::new();
        for (i, t) in self.trust.iter().enumerate() {
            let key = |k: &str| format!("oidc.trust[{i}].{k}");
            if !valid_name(&t.name) {
                return Err(err(
                    key("name"),
                    "use lowercase letters, digits, '-' and '_' (at most 64, starting with a letter)",
                ));
            }
            if !names.insert(t.name.clone()) {
                return Err(err(
                    key("name"),
                    format!(
                        "{:?} is used twice (names are shared with oidc.providers)",
                        t.name
                    ),
                ));
            }
            allowed_url(&t.issuer).map_err(|m| err(key("issuer"), m))?;
            if t.audience.is_empty() {
                return Err(err(key("audience"), "must not be empty"));
            }
            let account = Template::parse(&t.account).map_err(|m| err(key("account"), m))?;
            // Workload accounts live in a namespace of their own: the
            // template starts with a literal `prefix:`, and static account
            // names cannot hold ':' (nor can robots' `robot+`), so no
            // token can become a person. See docs/oidc.md.
            // SSO people are `<provider>/...` and cannot collide either.
            if account.literal_namespace().is_none() {
                return Err(err(
                    key("account"),
                    "must start with a literal namespace such as \"github:\" (e.g. \"github:${claims.repository}\")",
                ));
            }
            check_labels(&t.labels, &key("labels"))?;
            let mut require = Vec::new();
            for (claim, cond) in &t.require {
                let c = Condition::parse(cond)
                    .map_err(|m| err(format!("{}.{claim}", key("require")), m))?;
                require.push((claim.clone(), c));
            }
            trust.push(Trust {
                name: t.name.clone(),
                issuer: t.issuer.clone(),
                audience: t.audience.clone(),
                account,
                labels: t.labels.clone(),
                require,
            });
        }
        if self.key_refetch_interval > Duration::from_secs(3600) {
            return Err(err("oidc.key_refetch_interval", "must be at most 1h"));
        }
        Ok(OidcConfig {
            providers,
            trust,
            key_refetch_interval: self.key_refetch_interval,
        })
    }
}

fn check_labels(labels: &BTreeMap<String, String>, key: &str) -> Result<(), OidcConfigError> {
    for (label, claim) in labels {
        if label.is_empty() || claim.is_empty() {
            return Err(err(key, "label names and claims must not be empty"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(account: &str, require: &[(&str, &str)]) -> RawTrust {
        RawTrust {
            name: "github".into(),
            issuer: "https://token.actions.githubusercontent.com".into(),
            audience: "https://registry.example.com".into(),
            account: account.into(),
            labels: BTreeMap::new(),
            require: require
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn issuers_must_be_https_except_loopback() {
        for ok in [
            "https://login.example.com/realms/corp",
            "http://127.0.0.1:8080",
            "http://[::1]:9000/x",
            "http://localhost:3000",
        ] {
            assert!(allowed_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://login.example.com",
            "http://10.0.0.1",
            "ftp://x",
            "https://user:pw@x.example",
            "not a url",
            "http://127.0.0.1.evil.example",
        ] {
            assert!(allowed_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn trust_entries_are_checked_with_their_key_path() {
        let cases: &[(RawTrust, Option<&str>)] = &[
            (trust("github:${claims.repository}", &[]), None),
            (
                trust("${claims.repository}", &[]),
                Some("oidc.trust[0].account"),
            ),
            (
                trust("github:${claims.", &[]),
                Some("oidc.trust[0].account"),
            ),
            (
                trust("github:${claims.sub}", &[("repository_owner", "/(/")]),
                Some("oidc.trust[0].require.repository_owner"),
            ),
        ];
        for (t, want) in cases {
            let raw = RawOidc {
                providers: vec![],
                trust: vec![t.clone()],
                key_refetch_interval: default_refetch_interval(),
            };
            let got = raw.resolve(Path::new(".")).err().map(|e| e.key);
            assert_eq!(got.as_deref(), *want, "{}", t.account);
        }
    }
}
