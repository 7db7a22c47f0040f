//! The `[ldap]` section: what the operator writes ([`LdapConfig`]) and what
//! the authenticator runs with ([`ResolvedLdap`]: paths read, URLs and
//! filters checked, TLS trust built).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::tls;
use crate::authn::cache::LoginCache;
use crate::secret::Secret;

/// The `[ldap]` section of the configuration file.
///
/// The identity's account name (what ACL rules, `${account}` placeholders
/// and refresh tokens see) is not the name as typed but the value of
/// `account_attribute` (default `"uid"`) of the one entry the search finds:
/// LDAP matching is case- and space-insensitive, so `MOZART` and ` mozart `
/// both find `uid=mozart` and both become `mozart`. An entry without that
/// attribute, or with several values of it, cannot log in. Choose an
/// attribute users cannot change themselves, and one the `filter` matches
/// (refresh tokens look the account up again by that value).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://` or `ldaps://` URLs; several = failover, tried in order.
    /// Accepts a string or an array of strings.
    #[serde(deserialize_with = "one_or_many")]
    pub url: Vec<String>,
    /// Upgrade `ldap://` connections with StartTLS.
    #[serde(default)]
    pub start_tls: bool,
    /// Every PEM certificate in this directory is trusted, in addition to
    /// the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_dir: Option<PathBuf>,
    /// Accept any server certificate. For tests only; loudly warned about.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The service account that searches; absent = anonymous searches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_dn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_password: Option<Secret>,
    /// A file holding the service account's password (trailing CR/LF trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_password_file: Option<PathBuf>,
    /// Where accounts are searched (subtree).
    pub base: String,
    /// The search filter; `${account}` is replaced by the escaped account name.
    #[serde(default = "default_filter")]
    pub filter: String,
    /// The attribute of the account's entry whose (single) value is the
    /// identity's canonical account name; default `"uid"`.
    #[serde(default = "default_account_attribute")]
    pub account_attribute: String,
    /// Label key -> LDAP attribute of the account's entry. DN values are
    /// reduced to the value of their first RDN (`cn=pushers,ou=groups,...` -> `pushers`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Groups found by a second search, collected into a label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_search: Option<GroupSearchConfig>,
    /// How long a successful login is remembered.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How long a failed password (for this account and password) is remembered.
    #[serde(default = "default_negative_cache_ttl", with = "humantime_serde")]
    pub negative_cache_ttl: Duration,
    /// How many logins the cache holds at most.
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: u64,
    /// Bound on each network operation (connect incl. TLS, bind, search).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// `group_search = { base = "...", filter = "(member=${dn})", label = "groups" }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSearchConfig {
    pub base: String,
    /// `${dn}` (the account's DN) and `${account}` are replaced, escaped.
    #[serde(default = "default_group_filter")]
    pub filter: String,
    /// The label the groups go into.
    #[serde(default = "default_group_label")]
    pub label: String,
    /// Take the label values from this attribute of the group entries
    /// instead of the first RDN value of their DN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
}

fn default_filter() -> String {
    "(uid=${account})".to_owned()
}
fn default_account_attribute() -> String {
    "uid".to_owned()
}
fn default_group_filter() -> String {
    "(member=${dn})".to_owned()
}
fn default_group_label() -> String {
    "groups".to_owned()
}
fn default_cache_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_negative_cache_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_cache_capacity() -> u64 {
    10_000
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an LDAP URL or an array of LDAP URLs")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// A configuration error, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct LdapConfigError {
    /// The key path, e.g. `ldap.bind_password_file`.
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> LdapConfigError {
    LdapConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// A checked `[ldap]` section, ready for [`super::LdapAuthenticator::new`].
#[derive(Clone)]
pub struct ResolvedLdap {
    pub urls: Vec<String>,
    pub start_tls: bool,
    pub insecure_skip_verify: bool,
    /// Trust for ldaps:// and StartTLS: system roots plus `ca_dir`.
    pub tls: Arc<rustls::ClientConfig>,
    /// How many certificates `ca_dir` contributed.
    pub ca_dir_certificates: usize,
    /// The service account and its password; `None` = anonymous searches.
    pub service_account: Option<(String, Secret)>,
    pub base: String,
    pub filter: String,
    /// The attribute whose value is the canonical account name.
    pub account_attribute: String,
    pub labels: BTreeMap<String, String>,
    pub group_search: Option<GroupSearchConfig>,
    pub cache_ttl: Duration,
    pub negative_cache_ttl: Duration,
    pub cache_capacity: u64,
    pub timeout: Duration,
}

impl fmt::Debug for ResolvedLdap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedLdap")
            .field("urls", &self.urls)
            .field("start_tls", &self.start_tls)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("ca_dir_certificates", &self.ca_dir_certificates)
            .field(
                "bind_dn",
                &self.service_account.as_ref().map(|(dn, _)| dn.as_str()),
            )
            .field("base", &self.base)
            .field("filter", &self.filter)
            .field("account_attribute", &self.account_attribute)
            .field("labels", &self.labels)
            .field("group_search", &self.group_search)
            .field("cache_ttl", &self.cache_ttl)
            .field("negative_cache_ttl", &self.negative_cache_ttl)
            .field("cache_capacity", &self.cache_capacity)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ResolvedLdap {
    /// A login cache sized and timed as configured.
    pub fn login_cache(&self) -> LoginCache {
        LoginCache::new(self.cache_ttl, self.negative_cache_ttl, self.cache_capacity)
    }
}

/// Reads a password file: the content with trailing `\r` and `\n` trimmed.
pub fn read_password_file(path: &Path) -> std::io::Result<Secret> {
    let s = std::fs::read_to_string(path)?;
    Ok(Secret::new(s.trim_end_matches(['\r', '\n'])))
}

/// Checks that `filter` is a valid LDAP filter once its placeholders are
/// replaced.
fn check_filter(key: &str, filter: &str, placeholders: &[&str]) -> Result<(), LdapConfigError> {
    if filter.trim().is_empty() {
        return Err(err(key, "must not be empty"));
    }
    let mut probe = filter.to_owned();
    for p in placeholders {
        probe = probe.replace(p, "x");
    }
    if probe.contains("${") {
        return Err(err(
            key,
            format!("unknown placeholder (known: {})", placeholders.join(", ")),
        ));
    }
    ldap3::parse_filter(&probe)
        .map(|_| ())
        .map_err(|_| err(key, format!("not a valid LDAP filter: {filter}")))
}

fn check_attribute(key: &str, attr: &str) -> Result<(), LdapConfigError> {
    let ok = !attr.is_empty()
        && (attr
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';')
            || attr.chars().all(|c| c.is_ascii_digit() || c == '.'));
    if ok {
        Ok(())
    } else {
        Err(err(key, format!("not an LDAP attribute name: {attr:?}")))
    }
}

impl LdapConfig {
    /// Checks the section and reads what it points to; relative paths are
    /// joined to `base_dir`. Errors name the key (`ldap.url: ...`).
    pub fn resolve(&self, base_dir: &Path) -> Result<ResolvedLdap, LdapConfigError> {
        // url
        if self.url.is_empty() {
            return Err(err("ldap.url", "at least one URL is needed"));
        }
        for u in &self.url {
            let parsed = url_parse(u).map_err(|m| err("ldap.url", format!("{u}: {m}")))?;
            if parsed == "ldaps" && self.start_tls {
                return Err(err(
                    "ldap.start_tls",
                    format!("StartTLS cannot be used with the ldaps:// URL {u}"),
                ));
            }
        }

        // TLS trust
        let ca_dir = self.ca_dir.as_ref().map(|d| base_dir.join(d));
        let (tls, ca_dir_certificates) =
            tls::client_config(ca_dir.as_deref(), self.insecure_skip_verify)?;

        // service account
        let service_account = match (&self.bind_dn, &self.bind_password, &self.bind_password_file) {
            (Some(_), Some(_), Some(_)) => {
                return Err(err(
                    "ldap.bind_password",
                    "set exactly one of bind_password and bind_password_file, not both",
                ));
            }
            (Some(dn), None, None) => {
                return Err(err(
                    "ldap.bind_password",
                    format!(
                        "bind_dn {dn:?} needs exactly one of bind_password and bind_password_file"
                    ),
                ));
            }
            (Some(dn), Some(pw), None) => {
                if pw.is_empty() {
                    return Err(err("ldap.bind_password", "must not be empty"));
                }
                Some((dn.clone(), pw.clone()))
            }
            (Some(dn), None, Some(file)) => {
                let path = base_dir.join(file);
                let pw = read_password_file(&path).map_err(|e| {
                    err(
                        "ldap.bind_password_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                if pw.is_empty() {
                    return Err(err(
                        "ldap.bind_password_file",
                        format!("{} is empty", path.display()),
                    ));
                }
                Some((dn.clone(), pw))
            }
            (None, None, None) => None,
            (None, _, _) => {
                return Err(err(
                    "ldap.bind_dn",
                    "a bind password is set but no bind_dn to use it with",
                ));
            }
        };
        if service_account
            .as_ref()
            .is_some_and(|(dn, _)| dn.trim().is_empty())
        {
            return Err(err("ldap.bind_dn", "must not be empty"));
        }

        if self.base.trim().is_empty() {
            return Err(err("ldap.base", "must not be empty"));
        }
        if !self.filter.contains("${account}") {
            return Err(err("ldap.filter", "must contain ${account}"));
        }
        check_filter("ldap.filter", &self.filter, &["${account}"])?;
        check_attribute("ldap.account_attribute", &self.account_attribute)?;
        for (label, attr) in &self.labels {
            if label.is_empty() {
                return Err(err("ldap.labels", "label names must not be empty"));
            }
            check_attribute(&format!("ldap.labels.{label}"), attr)?;
        }
        if let Some(g) = &self.group_search {
            if g.base.trim().is_empty() {
                return Err(err("ldap.group_search.base", "must not be empty"));
            }
            if !g.filter.contains("${dn}") && !g.filter.contains("${account}") {
                return Err(err(
                    "ldap.group_search.filter",
                    "must contain ${dn} or ${account}",
                ));
            }
            check_filter(
                "ldap.group_search.filter",
                &g.filter,
                &["${dn}", "${account}"],
            )?;
            if g.label.is_empty() {
                return Err(err("ldap.group_search.label", "must not be empty"));
            }
            if let Some(a) = &g.attribute {
                check_attribute("ldap.group_search.attribute", a)?;
            }
        }
        if self.timeout.is_zero() {
            return Err(err("ldap.timeout", "must be more than 0"));
        }
        if self.cache_capacity == 0
            && !(self.cache_ttl.is_zero() && self.negative_cache_ttl.is_zero())
        {
            return Err(err(
                "ldap.cache_capacity",
                "must be more than 0 (set cache_ttl and negative_cache_ttl to 0 to disable the cache)",
            ));
        }

        Ok(ResolvedLdap {
            urls: self.url.clone(),
            start_tls: self.start_tls,
            insecure_skip_verify: self.insecure_skip_verify,
            tls,
            ca_dir_certificates,
            service_account,
            base: self.base.clone(),
            filter: self.filter.clone(),
            account_attribute: self.account_attribute.clone(),
            labels: self.labels.clone(),
            group_search: self.group_search.clone(),
            cache_ttl: self.cache_ttl,
            negative_cache_ttl: self.negative_cache_ttl,
            cache_capacity: self.cache_capacity,
            timeout: self.timeout,
        })
    }
}

/// Checks an LDAP URL; returns its scheme.
fn url_parse(u: &str) -> Result<&'static str, String> {
    let (scheme, rest) = u.split_once("://").ok_or_else(|| {
        "not a URL (expected ldap://HOST[:PORT] or ldaps://HOST[:PORT])".to_owned()
    })?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ldap" => "ldap",
        "ldaps" => "ldaps",
        other => return Err(format!("unsupported scheme {other:?} (ldap or ldaps)")),
    };
    let hostport = rest.trim_end_matches('/');
    if hostport.is_empty() {
        return Err("no host".to_owned());
    }
    if hostport.contains('/') || hostport.contains('?') || hostport.contains('@') {
        return Err("only scheme, host and port are allowed".to_owned());
    }
    if let Some((_, port)) = hostport.rsplit_once(':') {
        if !hostport.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(format!("bad port {port:?}"));
        }
    }
    Ok(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
url = "ldap://127.0.0.1:389"
start_tls = false
bind_dn = "uid=serviceaccount,ou=it,dc=example,dc=com"
bind_password_file = "config/ldap_password.txt"
base = "ou=musicians,dc=example,dc=com"
filter = "(&(uid=${account})(objectClass=person))"
labels = { groups = "memberOf" }
group_search = { base = "ou=groups,dc=example,dc=com", filter = "(member=${dn})", label = "groups" }
cache_ttl = "5m"
negative_cache_ttl = "10s"
timeout = "5s"
"#;

    fn parse(s: &str) -> Result<LdapConfig, toml::de::Error> {
        toml::from_str(s)
    }

    fn repo_root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn parses_the_documented_example() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.url, vec!["ldap://127.0.0.1:389"]);
        assert_eq!(c.cache_ttl, Duration::from_secs(300));
        assert_eq!(c.negative_cache_ttl, Duration::from_secs(10));
        assert_eq!(c.labels["groups"], "memberOf");
        assert_eq!(c.group_search.as_ref().unwrap().label, "groups");
        let r = c.resolve(repo_root()).unwrap();
        let (dn, pw) = r.service_account.as_ref().unwrap();
        assert_eq!(dn, "uid=serviceaccount,ou=it,dc=example,dc=com");
        assert_eq!(pw.expose(), "password");
        assert!(!format!("{r:?}").contains("password\""));
    }

    #[test]
    fn defaults() {
        let c = parse("url = 'ldap://h'\nbase = 'dc=x'").unwrap();
        assert!(!c.start_tls);
        assert!(!c.insecure_skip_verify);
        assert_eq!(c.filter, "(uid=${account})");
        assert_eq!(c.account_attribute, "uid");
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.cache_ttl, Duration::from_secs(300));
        assert_eq!(c.negative_cache_ttl, Duration::from_secs(10));
        assert_eq!(c.cache_capacity, 10_000);
        assert!(c.labels.is_empty());
        let r = c.resolve(repo_root()).unwrap();
        assert!(r.service_account.is_none());
        assert_eq!(r.account_attribute, "uid");
    }

    #[test]
    fn url_as_string_or_array() {
        let c = parse("url = ['ldap://a:389', 'ldaps://b']\nbase = 'dc=x'").unwrap();
        assert_eq!(c.url, vec!["ldap://a:389", "ldaps://b"]);
        c.resolve(repo_root()).unwrap();
        let e = parse("url = 3\nbase = 'dc=x'").unwrap_err();
        assert!(e.to_string().contains("LDAP URL"), "{e}");
    }

    #[test]
    fn unknown_keys_rejected() {
        let e = parse("url = 'ldap://a'\nbase = 'dc=x'\nbind_pasword = 'x'").unwrap_err();
        assert!(e.to_string().contains("bind_pasword"), "{e}");
        let e = parse(
            "url = 'ldap://a'\nbase = 'dc=x'\ngroup_search = { base = 'x', filtre = '(a=b)' }",
        )
        .unwrap_err();
        assert!(e.to_string().contains("filtre"), "{e}");
    }

    fn resolve_err(toml: &str) -> LdapConfigError {
        parse(toml).unwrap().resolve(repo_root()).unwrap_err()
    }

    #[test]
    fn errors_name_the_key() {
        let e = resolve_err("url = 'http://a'\nbase = 'dc=x'");
        assert_eq!(e.key, "ldap.url");
        let e = resolve_err("url = []\nbase = 'dc=x'");
        assert_eq!(e.key, "ldap.url");
        let e = resolve_err("url = 'ldap://a:notaport'\nbase = 'dc=x'");
        assert_eq!(e.key, "ldap.url");
        let e = resolve_err("url = 'ldaps://a'\nstart_tls = true\nbase = 'dc=x'");
        assert_eq!(e.key, "ldap.start_tls");
        let e = resolve_err("url = 'ldap://a'\nbase = 'dc=x'\nbind_dn = 'cn=x'");
        assert_eq!(e.key, "ldap.bind_password");
        assert!(e.to_string().contains("exactly one"), "{e}");
        let e = resolve_err(
            "url = 'ldap://a'\nbase = 'dc=x'\nbind_dn = 'cn=x'\nbind_password = 'p'\nbind_password_file = 'f'",
        );
        assert_eq!(e.key, "ldap.bind_password");
        let e = resolve_err(
            "url = 'ldap://a'\nbase = 'dc=x'\nbind_dn = 'cn=x'\nbind_password_file = 'no/such/file'",
        );
        assert_eq!(e.key, "ldap.bind_password_file");
        assert!(
            e.to_string()
                .starts_with("ldap.bind_password_file: cannot read"),
            "{e}"
        );
        let e = resolve_err("url = 'ldap://a'\nbase = 'dc=x'\nbind_password = 'p'");
        assert_eq!(e.key, "ldap.bind_dn");
        let e = resolve_err("url = 'ldap://a'\nbase = 'dc=x'\nfilter = '(uid=x)'");
        assert_eq!(e.key, "ldap.filter");
        let e = resolve_err("url = 'ldap://a'\nbase = 'dc=x'\nfilter = '(uid=${account}'");
        assert_eq!(e.key, "ldap.filter");
        let e =
            resolve_err("url = 'ldap://a'\nbase = 'dc=x'\nfilter = '(uid=${acount}${account})'");
        assert_eq!(e.key, "ldap.filter");
        let e = resolve_err("url = 'ldap://a'\nbase = 'dc=x'\nca_dir = 'no/such/dir'");
        assert_eq!(e.key, "ldap.ca_dir");
        let e = resolve_err("url = 'ldap://a'\nbase = 'dc=x'\nlabels = { g = 'member Of' }");
        assert_eq!(e.key, "ldap.labels.g");
        let e = resolve_err(
            "url = 'ldap://a'\nbase = 'dc=x'\ngroup_search = { base = 'ou=g', filter = '(member=x)' }",
        );
        assert_eq!(e.key, "ldap.group_search.filter");
        for bad in ["", "u id", "uid)(x", "*"] {
            let e = resolve_err(&format!(
                "url = 'ldap://a'\nbase = 'dc=x'\naccount_attribute = '{bad}'"
            ));
            assert_eq!(e.key, "ldap.account_attribute", "{bad:?}");
        }
        let e = resolve_err("url = 'ldap://a'\nbase = 'dc=x'\ntimeout = '0s'");
        assert_eq!(e.key, "ldap.timeout");
    }

    #[test]
    fn password_file_is_trimmed_and_relative_to_base_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\r\n\n").unwrap();
        let c =
            parse("url = 'ldap://a'\nbase = 'dc=x'\nbind_dn = 'cn=x'\nbind_password_file = 'pw'")
                .unwrap();
        let r = c.resolve(dir.path()).unwrap();
        assert_eq!(r.service_account.unwrap().1.expose(), "s3cret");
        // Only trailing line ends are trimmed, not spaces.
        std::fs::write(dir.path().join("pw"), " a b \n").unwrap();
        let r = c.resolve(dir.path()).unwrap();
        assert_eq!(r.service_account.unwrap().1.expose(), " a b ");
        std::fs::write(dir.path().join("pw"), "\r\n").unwrap();
        assert_eq!(
            c.resolve(dir.path()).unwrap_err().key,
            "ldap.bind_password_file"
        );
    }

    #[test]
    fn serializes_without_passwords() {
        let c =
            parse("url = 'ldap://a'\nbase = 'dc=x'\nbind_dn = 'cn=x'\nbind_password = 'hunter2'")
                .unwrap();
        let s = toml::to_string(&c).unwrap();
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("***"), "{s}");
        assert!(s.contains("cache_ttl = \"5m\""), "{s}");
        let back: LdapConfig = toml::from_str(&s).unwrap();
        assert_eq!(back.url, c.url);
    }

    #[test]
    fn ca_dir_certificates_are_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("README"), "not a certificate").unwrap();
        let c = parse("url = 'ldaps://a'\nbase = 'dc=x'\nca_dir = 'certs'").unwrap();
        let e = c.resolve(dir.path()).unwrap_err();
        assert_eq!(e.key, "ldap.ca_dir");
        let c = parse(&format!(
            "url = 'ldaps://a'\nbase = 'dc=x'\nca_dir = '{}'",
            dir.path().display()
        ))
        .unwrap();
        let r = c.resolve(Path::new("/nonexistent")).unwrap();
        assert_eq!(r.ca_dir_certificates, 1);
    }
}
