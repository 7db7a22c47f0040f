//! LDAP authentication: find the account's entry with the service account,
//! then bind as that entry with the given password; labels from the entry's
//! attributes and from a group search.
//!
//! The identity's account name is the entry's `account_attribute` value
//! (see [`LdapConfig`]), never the name as typed: the directory matches
//! names case- and space-insensitively, ACL rules match them exactly.
//!
//! Connections:
//! - one shared *service* connection, bound as the service account, carries
//!   every search (ldap3 multiplexes concurrent operations on it); it is
//!   re-established after a failure, trying the URLs in order;
//! - a small pool of *bind* connections carries the users' binds and
//!   nothing else, so no search ever runs as a user. A Bind replaces a
//!   connection's authentication state, a failed one leaves it anonymous.

mod config;
mod dn;
pub(crate) mod tls;

pub use crate::authn::{MAX_ACCOUNT_LEN, acceptable_account};
pub use config::{
    GroupSearchConfig, LdapConfig, LdapConfigError, ResolvedLdap, read_password_file,
};
pub use dn::{fill_filter, first_rdn_value, label_value};

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions};

use super::{AuthnError, Backend, Identity, Labels};
use crate::secret::Secret;

/// LDAP result codes this module tells apart.
mod rc {
    pub const SUCCESS: u32 = 0;
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INAPPROPRIATE_AUTHENTICATION: u32 = 48;
    pub const INVALID_CREDENTIALS: u32 = 49;
    pub const INSUFFICIENT_ACCESS_RIGHTS: u32 = 50;
    pub const BUSY: u32 = 51;
    pub const UNAVAILABLE: u32 = 52;
    pub const UNWILLING_TO_PERFORM: u32 = 53;
}

/// Idle bind connections kept for re-use.
const BIND_POOL_SIZE: usize = 4;
/// Entries listed by [`LdapAuthenticator::check`].
const CHECK_LIST_LIMIT: usize = 20;

/// The shared service connection.
#[derive(Default)]
struct ServiceState {
    conn: Option<ServiceConn>,
    generation: u64,
    /// The last failed attempt to open it: callers that queued behind that
    /// attempt get its error instead of each waiting for a timeout again.
    last_failure: Option<(Instant, bool, String)>,
}

#[derive(Clone)]
struct ServiceConn {
    ldap: Ldap,
    url: String,
    generation: u64,
}

/// What the account search found.
enum Found {
    Nothing,
    One(SearchEntry),
    Many(Vec<String>),
}

/// Authenticates accounts against LDAP. See the module documentation.
pub struct LdapAuthenticator {
    cfg: ResolvedLdap,
    service: tokio::sync::Mutex<ServiceState>,
    bind_pool: Mutex<Vec<Ldap>>,
}

impl std::fmt::Debug for LdapAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapAuthenticator")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn is_transport(e: &LdapError) -> bool {
    !matches!(
        e,
        LdapError::LdapResult { .. }
            | LdapError::FilterParsing
            | LdapError::UrlParsing { .. }
            | LdapError::UnknownScheme(_)
            | LdapError::DecodingUTF8
            | LdapError::AddNoValues
            | LdapError::AdapterInit(_)
    )
}

fn unavailable_rc(code: u32) -> bool {
    code == rc::BUSY || code == rc::UNAVAILABLE
}

fn result_error(what: &str, res: &ldap3::LdapResult) -> AuthnError {
    let msg = format!("{what}: LDAP result {} {}", res.rc, res.text)
        .trim_end()
        .to_owned();
    if unavailable_rc(res.rc) {
        AuthnError::Unavailable(msg)
    } else {
        AuthnError::Backend(msg)
    }
}

fn ldap_error(what: &str, e: &LdapError) -> AuthnError {
    if let LdapError::LdapResult { result } = e {
        return result_error(what, result);
    }
    let msg = format!("{what}: {e}");
    if is_transport(e) {
        AuthnError::Unavailable(msg)
    } else {
        AuthnError::Backend(msg)
    }
}

/// Case-insensitive attribute lookup in an entry.
fn attr_values<'a>(entry: &'a SearchEntry, attr: &str) -> impl Iterator<Item = &'a String> {
    entry
        .attrs
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(attr))
        .flat_map(|(_, v)| v.iter())
}

/// Why an entry has no canonical account name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoCanonical {
    /// The attribute is absent (or has only non-UTF-8 values).
    Missing,
    /// The attribute has this many values.
    Several(usize),
    /// The one value is empty, too long or has control characters.
    Unacceptable,
}

impl std::fmt::Display for NoCanonical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoCanonical::Missing => f.write_str("the entry has no value of it"),
            NoCanonical::Several(n) => write!(f, "the entry has {n} values of it, not one"),
            NoCanonical::Unacceptable => {
                f.write_str("its value is empty, too long or has control characters")
            }
        }
    }
}

/// The canonical account name of `entry`: its single value of `attr`.
fn canonical_account(entry: &SearchEntry, attr: &str) -> Result<String, NoCanonical> {
    let values: Vec<&String> = attr_values(entry, attr).collect();
    let binary = entry
        .bin_attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(attr))
        .map(|(_, v)| v.len())
        .sum::<usize>();
    match (values.as_slice(), binary) {
        ([], _) => Err(NoCanonical::Missing),
        ([one], 0) if acceptable_account(one) => Ok((*one).clone()),
        ([_], 0) => Err(NoCanonical::Unacceptable),
        (text, binary) => Err(NoCanonical::Several(text.len() + binary)),
    }
}

impl LdapAuthenticator {
    /// An authenticator that connects lazily, on first use.
    pub fn new(cfg: ResolvedLdap) -> Self {
        LdapAuthenticator {
            cfg,
            service: tokio::sync::Mutex::new(ServiceState::default()),
            bind_pool: Mutex::new(Vec::new()),
        }
    }

    /// Like [`LdapAuthenticator::new`], and tries to open the service
    /// connection right away. LDAP being down is logged, not an error: the
    /// authenticator connects when it is next needed.
    pub async fn connect(cfg: ResolvedLdap) -> Self {
        let me = Self::new(cfg);
        match me.service_conn().await {
            Ok((c, _)) => tracing::info!(url = %c.url, "LDAP service connection established"),
            Err(e) => {
                tracing::warn!(error = %e, "LDAP not reachable at startup; will retry on demand")
            }
        }
        me
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ResolvedLdap {
        &self.cfg
    }

    /// Opens a connection to the first URL that answers, bound as the
    /// service account if `as_service`.
    async fn open(&self, as_service: bool) -> Result<(Ldap, String), AuthnError> {
        let mut failures = Vec::new();
        for url in &self.cfg.urls {
            let starttls = self.cfg.start_tls && url.to_ascii_lowercase().starts_with("ldap://");
            let settings = LdapConnSettings::new()
                .set_conn_timeout(self.cfg.timeout)
                .set_starttls(starttls)
                .set_no_tls_verify(self.cfg.insecure_skip_verify)
                .set_config(self.cfg.tls.clone());
            let mut ldap = match LdapConnAsync::with_settings(settings, url).await {
                Ok((conn, ldap)) => {
                    let url_for_log = url.clone();
                    tokio::spawn(async move {
                        if let Err(e) = conn.drive().await {
                            tracing::debug!(url = %url_for_log, error = %e, "LDAP connection ended");
                        }
                    });
                    ldap
                }
                Err(e) => {
                    tracing::warn!(%url, error = %e, "cannot connect to LDAP server");
                    failures.push(format!("{url}: {e}"));
                    continue;
                }
            };
            if as_service {
                if let Some((dn, pw)) = &self.cfg.service_account {
                    match ldap
                        .with_timeout(self.cfg.timeout)
                        .simple_bind(dn, pw.expose())
                        .await
                    {
                        Ok(res) if res.rc == rc::SUCCESS => {}
                        Ok(res) if res.rc == rc::INVALID_CREDENTIALS => {
                            return Err(AuthnError::Backend(format!(
                                "{url}: the service account {dn} was refused (invalid credentials)"
                            )));
                        }
                        Ok(res) if !unavailable_rc(res.rc) => {
                            return Err(result_error(
                                &format!("{url}: service account bind"),
                                &res,
                            ));
                        }
                        Ok(res) => {
                            let e = result_error("service account bind", &res);
                            tracing::warn!(%url, error = %e, "LDAP server unavailable");
                            failures.push(format!("{url}: {e}"));
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(%url, error = %e, "LDAP service account bind failed");
                            failures.push(format!("{url}: service account bind: {e}"));
                            continue;
                        }
                    }
                }
            }
            return Ok((ldap, url.clone()));
        }
        Err(AuthnError::Unavailable(format!(
            "no LDAP server reachable ({})",
            failures.join("; ")
        )))
    }

    /// The shared service connection, opened if needed.
    async fn service_conn(&self) -> Result<(ServiceConn, bool), AuthnError> {
        let queued_at = Instant::now();
        let mut st = self.service.lock().await;
        if let Some(c) = &mut st.conn {
            if !c.ldap.is_closed() {
                return Ok((c.clone(), false));
            }
            st.conn = None;
        }
        if let Some((at, unavailable, msg)) = &st.last_failure {
            if *at >= queued_at {
                let msg = msg.clone();
                return Err(if *unavailable {
                    AuthnError::Unavailable(msg)
                } else {
                    AuthnError::Backend(msg)
                });
            }
        }
        match self.open(true).await {
            Ok((ldap, url)) => {
                st.generation += 1;
                let c = ServiceConn {
                    ldap,
                    url,
                    generation: st.generation,
                };
                st.conn = Some(c.clone());
                st.last_failure = None;
                Ok((c, true))
            }
            Err(e) => {
                let unavailable = matches!(e, AuthnError::Unavailable(_));
                st.last_failure = Some((Instant::now(), unavailable, e.to_string()));
                Err(e)
            }
        }
    }

    /// Forgets the service connection `generation` (if still current).
    async fn drop_service(&self, generation: u64) {
        let mut st = self.service.lock().await;
        if st.conn.as_ref().is_some_and(|c| c.generation == generation) {
            st.conn = None;
        }
    }

    /// A subtree search on the service connection, retried once on a fresh
    /// connection if a re-used one turns out broken. Returns the entries
    /// and the result code (success or size limit exceeded).
    async fn search(
        &self,
        base: &str,
        filter: &str,
        attrs: &[String],
        size_limit: i32,
    ) -> Result<(Vec<SearchEntry>, u32), AuthnError> {
        let attrs: Vec<String> = if attrs.is_empty() {
            vec!["1.1".to_owned()]
        } else {
            attrs.to_vec()
        };
        let mut retried = false;
        loop {
            let (conn, fresh) = self.service_conn().await?;
            let mut ldap = conn.ldap.clone();
            let result = ldap
                .with_timeout(self.cfg.timeout)
                .with_search_options(SearchOptions::new().sizelimit(size_limit))
                .search(base, Scope::Subtree, filter, attrs.clone())
                .await;
            match result {
                Ok(ldap3::SearchResult(entries, res)) => {
                    return match res.rc {
                        rc::SUCCESS | rc::SIZE_LIMIT_EXCEEDED => Ok((
                            entries
                                .into_iter()
                                .filter(|e| !e.is_ref() && !e.is_intermediate())
                                .map(SearchEntry::construct)
                                .collect(),
                            res.rc,
                        )),
                        rc::NO_SUCH_OBJECT => Err(AuthnError::Backend(format!(
                            "LDAP search base {base:?} does not exist"
                        ))),
                        _ => Err(result_error(&format!("LDAP search under {base:?}"), &res)),
                    };
                }
                Err(e) if is_transport(&e) => {
                    self.drop_service(conn.generation).await;
                    let timed_out = matches!(e, LdapError::Timeout { .. });
                    if fresh || retried || timed_out {
                        return Err(ldap_error(&format!("LDAP search on {}", conn.url), &e));
                    }
                    tracing::debug!(url = %conn.url, error = %e, "LDAP service connection broken, reconnecting");
                    retried = true;
                }
                Err(e) => return Err(ldap_error("LDAP search", &e)),
            }
        }
    }

    fn take_bind_conn(&self) -> Option<Ldap> {
        let mut pool = self.bind_pool.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(mut ldap) = pool.pop() {
            if !ldap.is_closed() {
                return Some(ldap);
            }
        }
        None
    }

    fn put_bind_conn(&self, ldap: Ldap) {
        let mut pool = self.bind_pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < BIND_POOL_SIZE {
            pool.push(ldap);
        }
    }

    /// Binds as `dn` with `password` on a bind connection: `Ok(true)` if the
    /// directory accepts the password, `Ok(false)` if it refuses it.
    async fn user_bind(&self, dn: &str, password: &Secret) -> Result<bool, AuthnError> {
        let mut retried = false;
        loop {
            let (mut ldap, fresh) = match self.take_bind_conn() {
                Some(l) => (l, false),
                None => (self.open(false).await?.0, true),
            };
            match ldap
                .with_timeout(self.cfg.timeout)
                .simple_bind(dn, password.expose())
                .await
            {
                Ok(res) => {
                    let verdict = match res.rc {
                        rc::SUCCESS => Ok(true),
                        rc::INVALID_CREDENTIALS => Ok(false),
                        rc::INAPPROPRIATE_AUTHENTICATION
                        | rc::INSUFFICIENT_ACCESS_RIGHTS
                        | rc::UNWILLING_TO_PERFORM => {
                            tracing::info!(%dn, rc = res.rc, text = %res.text, "LDAP refused the bind");
                            Ok(false)
                        }
                        _ => Err(result_error("LDAP bind", &res)),
                    };
                    if verdict.is_ok() {
                        self.put_bind_conn(ldap);
                    }
                    return verdict;
                }
                Err(e) if is_transport(&e) && !fresh && !retried => {
                    if matches!(e, LdapError::Timeout { .. }) {
                        return Err(ldap_error("LDAP bind", &e));
                    }
                    tracing::debug!(error = %e, "pooled LDAP bind connection broken, reconnecting");
                    retried = true;
                }
                Err(e) => return Err(ldap_error("LDAP bind", &e)),
            }
        }
    }

    /// Searches the account's entry.
    async fn find(&self, account: &str) -> Result<Found, AuthnError> {
        let filter = fill_filter(&self.cfg.filter, account, None);
        let mut attrs: Vec<String> = self.cfg.labels.values().cloned().collect();
        attrs.push(self.cfg.account_attribute.clone());
        attrs.sort();
        attrs.dedup();
        let (mut entries, _) = self.search(&self.cfg.base, &filter, &attrs, 2).await?;
        Ok(match entries.len() {
            0 | 1 => entries.pop().map_or(Found::Nothing, Found::One),
            _ => Found::Many(entries.into_iter().map(|e| e.dn).collect()),
        })
    }

    /// The account's entry and canonical name if exactly one entry matches
    /// and it has exactly one value of `account_attribute`; logs why not
    /// otherwise.
    async fn find_one(&self, account: &str) -> Result<Option<(SearchEntry, String)>, AuthnError> {
        if !acceptable_account(account) {
            tracing::debug!(
                "account name refused before asking LDAP (empty, too long or control characters)"
            );
            return Ok(None);
        }
        match self.find(account).await? {
            Found::One(e) => match canonical_account(&e, &self.cfg.account_attribute) {
                Ok(canonical) => Ok(Some((e, canonical))),
                Err(why) => {
                    tracing::warn!(
                        dn = %e.dn,
                        account_attribute = %self.cfg.account_attribute,
                        "LDAP entry has no usable account name ({why}); refusing the login"
                    );
                    Ok(None)
                }
            },
            Found::Nothing => {
                tracing::debug!(%account, "no LDAP entry for account");
                Ok(None)
            }
            Found::Many(dns) => {
                tracing::warn!(
                    %account,
                    entries = ?dns,
                    "LDAP filter matches more than one entry for account; refusing the login"
                );
                Ok(None)
            }
        }
    }

    /// Labels from the entry's attributes and from the group search.
    async fn labels(&self, entry: &SearchEntry, account: &str) -> Result<Labels, AuthnError> {
        let mut labels = Labels::new();
        for (label, attr) in &self.cfg.labels {
            let values: Vec<String> = attr_values(entry, attr).map(|v| label_value(v)).collect();
            if !values.is_empty() {
                labels.entry(label.clone()).or_default().extend(values);
            }
        }
        if let Some(g) = &self.cfg.group_search {
            let filter = fill_filter(&g.filter, account, Some(&entry.dn));
            let attrs: Vec<String> = g.attribute.iter().cloned().collect();
            let (groups, _) = self.search(&g.base, &filter, &attrs, 0).await?;
            let mut values = Vec::new();
            for group in &groups {
                match &g.attribute {
                    Some(a) => values.extend(attr_values(group, a).map(|v| label_value(v))),
                    None => values.extend(first_rdn_value(&group.dn)),
                }
            }
            if !values.is_empty() {
                labels.entry(g.label.clone()).or_default().extend(values);
            }
        }
        for values in labels.values_mut() {
            values.sort();
            values.dedup();
        }
        Ok(labels)
    }

    fn identity(account: &str, labels: Labels) -> Identity {
        Identity {
            account: account.to_owned(),
            backend: Backend::Ldap,
            labels,
            credential: None,
        }
    }

    /// Whether the directory answers a search as the service account (for
    /// `/readyz`): a one-entry search of the base, bounded by the timeout.
    pub async fn ping(&self) -> Result<(), AuthnError> {
        self.search(&self.cfg.base, "(objectClass=*)", &[], 1)
            .await
            .map(|_| ())
    }

    /// Checks `account`'s password. `Ok(None)`: no such account, ambiguous
    /// account, no usable `account_attribute` value, or wrong/empty
    /// password. `Err`: LDAP could not decide. The identity's account is
    /// the canonical name (the entry's `account_attribute` value), which
    /// may differ from `account` (`MOZART` -> `mozart`).
    pub async fn authenticate(
        &self,
        account: &str,
        password: &Secret,
    ) -> Result<Option<Identity>, AuthnError> {
        if password.is_empty() {
            // An empty simple bind is an anonymous bind, which "succeeds".
            tracing::debug!("empty password refused before asking LDAP");
            return Ok(None);
        }
        let Some((entry, canonical)) = self.find_one(account).await? else {
            return Ok(None);
        };
        if !self.user_bind(&entry.dn, password).await? {
            tracing::debug!(%account, dn = %entry.dn, "LDAP password rejected");
            return Ok(None);
        }
        let labels = self.labels(&entry, &canonical).await?;
        Ok(Some(Self::identity(&canonical, labels)))
    }

    /// Whether the account with the canonical name `account` (as a refresh
    /// token carries it) still exists, with its current labels; no
    /// password involved. `Ok(None)` also when the entry found has a
    /// different canonical name than `account` (another spelling, or the
    /// name changed in the directory): a token for one name never yields
    /// an identity with another.
    pub async fn lookup(&self, account: &str) -> Result<Option<Identity>, AuthnError> {
        let Some((entry, canonical)) = self.find_one(account).await? else {
            return Ok(None);
        };
        if canonical != account {
            tracing::warn!(
                %account,
                %canonical,
                dn = %entry.dn,
                "LDAP entry's account name differs from the one looked up; refusing"
            );
            return Ok(None);
        }
        let labels = self.labels(&entry, &canonical).await?;
        Ok(Some(Self::identity(&canonical, labels)))
    }

    /// A human-readable report for `ldap-check [ACCOUNT]`: connection and
    /// service account, what the base and filter find, and for an account
    /// whether it would log in and with which labels. `Err`: the directory
    /// could not be asked.
    pub async fn check(
        &self,
        account: Option<&str>,
        password: Option<&Secret>,
    ) -> Result<CheckReport, AuthnError> {
        let mut out = String::new();
        // What ends the report early says the account would not log in.
        let refused = |text: String| {
            Ok(CheckReport {
                text,
                refused: true,
            })
        };
        let cfg = &self.cfg;
        let (conn, _) = self.service_conn().await?;
        let tls = if conn.url.to_ascii_lowercase().starts_with("ldaps://") {
            "LDAPS"
        } else if cfg.start_tls {
            "StartTLS"
        } else {
            "no TLS"
        };
        let _ = writeln!(out, "connected to {} ({tls})", conn.url);
        if cfg.insecure_skip_verify {
            let _ = writeln!(
                out,
                "WARNING: server certificates are not verified (insecure_skip_verify)"
            );
        }
        match &cfg.service_account {
            Some((dn, _)) => {
                let _ = writeln!(out, "bound as service account {dn}");
            }
            None => {
                let _ = writeln!(out, "searching anonymously (no bind_dn)");
            }
        }
        let Some(account) = account else {
            let filter = cfg.filter.replace("${account}", "*");
            let (entries, code) = self.search(&cfg.base, &filter, &[], 1000).await?;
            let more = if code == rc::SIZE_LIMIT_EXCEEDED {
                " (size limit reached, there are more)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{} entries under {} match {filter}{more}",
                entries.len(),
                cfg.base
            );
            for e in entries.iter().take(CHECK_LIST_LIMIT) {
                let _ = writeln!(out, "  {}", e.dn);
            }
            if entries.len() > CHECK_LIST_LIMIT {
                let _ = writeln!(out, "  ... and {} more", entries.len() - CHECK_LIST_LIMIT);
            }
            return Ok(CheckReport {
                text: out,
                refused: false,
            });
        };
        if !acceptable_account(account) {
            let _ = writeln!(
                out,
                "account {account:?} is refused before LDAP is asked (empty, over {MAX_ACCOUNT_LEN} bytes or control characters)"
            );
            return refused(out);
        }
        let filter = fill_filter(&cfg.filter, account, None);
        let entry = match self.find(account).await? {
            Found::Nothing => {
                let _ = writeln!(
                    out,
                    "no entry under {} matches {filter}: {account} cannot log in",
                    cfg.base
                );
                return refused(out);
            }
            Found::Many(dns) => {
                let _ = writeln!(
                    out,
                    "{} entries under {} match {filter} (at least):",
                    dns.len(),
                    cfg.base
                );
                for dn in dns {
                    let _ = writeln!(out, "  {dn}");
                }
                let _ = writeln!(
                    out,
                    "ambiguous: {account} cannot log in (exactly one entry must match)"
                );
                return refused(out);
            }
            Found::One(e) => e,
        };
        let _ = writeln!(out, "{account} is {}", entry.dn);
        let attr = &cfg.account_attribute;
        let canonical = match canonical_account(&entry, attr) {
            Ok(c) => c,
            Err(why) => {
                let _ = writeln!(
                    out,
                    "account_attribute {attr}: {why}: {account} cannot log in"
                );
                return refused(out);
            }
        };
        let _ = writeln!(
            out,
            "account name (from {attr}, used by ACL rules): {canonical}"
        );
        let labels = self.labels(&entry, &canonical).await?;
        if labels.is_empty() {
            let _ = writeln!(out, "labels: none");
        } else {
            let _ = writeln!(out, "labels:");
            for (k, v) in &labels {
                let _ = writeln!(out, "  {k} = {v:?}");
            }
        }
        let accepted = match password {
            None => {
                let _ = writeln!(out, "no password given: the bind was not tried");
                true
            }
            Some(p) if p.is_empty() => {
                let _ = writeln!(out, "empty password: refused without asking LDAP");
                false
            }
            Some(p) => {
                let ok = self.user_bind(&entry.dn, p).await?;
                if ok {
                    let _ = writeln!(out, "password accepted: would log in as {canonical}");
                } else {
                    let _ = writeln!(out, "password rejected: {account} would NOT log in");
                }
                ok
            }
        };
        Ok(CheckReport {
            text: out,
            refused: !accepted,
        })
    }
}

/// What `ldap-check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The report, one finding a line.
    pub text: String,
    /// The account asked about would not log in: no entry or several, an
    /// unusable name, or the password (when given) refused. False without
    /// an account, and for an entry found when no password was given.
    pub refused: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticator_is_send_and_sync() {
        fn is<T: Send + Sync>() {}
        is::<LdapAuthenticator>();
    }

    #[test]
    fn transport_errors_are_unavailable() {
        let io = LdapError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(ldap_error("x", &io), AuthnError::Unavailable(_)));
        assert!(matches!(
            ldap_error("x", &LdapError::FilterParsing),
            AuthnError::Backend(_)
        ));
    }

    fn entry(attrs: &[(&str, &[&str])], bin_attrs: &[(&str, usize)]) -> SearchEntry {
        SearchEntry {
            dn: "uid=mozart,ou=musicians,dc=example,dc=com".into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            bin_attrs: bin_attrs
                .iter()
                .map(|(k, n)| (k.to_string(), vec![vec![0xff_u8]; *n]))
                .collect(),
        }
    }

    #[test]
    fn canonical_account_is_the_single_attribute_value() {
        let e = entry(&[("uid", &["mozart"]), ("mail", &["m@example.com"])], &[]);
        assert_eq!(canonical_account(&e, "uid").as_deref(), Ok("mozart"));
        // Attribute names are case-insensitive.
        assert_eq!(canonical_account(&e, "UID").as_deref(), Ok("mozart"));
        assert_eq!(
            canonical_account(&e, "mail").as_deref(),
            Ok("m@example.com")
        );
        // The value is taken as stored, not normalised.
        let e = entry(&[("uid", &["Mozart"])], &[]);
        assert_eq!(canonical_account(&e, "uid").as_deref(), Ok("Mozart"));
    }

    #[test]
    fn no_canonical_account_without_exactly_one_good_value() {
        let e = entry(&[("mail", &["m@example.com"])], &[]);
        assert_eq!(canonical_account(&e, "uid"), Err(NoCanonical::Missing));
        let e = entry(&[("uid", &[])], &[]);
        assert_eq!(canonical_account(&e, "uid"), Err(NoCanonical::Missing));
        let e = entry(&[("uid", &["mozart", "wolfgang"])], &[]);
        assert_eq!(canonical_account(&e, "uid"), Err(NoCanonical::Several(2)));
        // Two spellings of the attribute name count together.
        let e = entry(&[("uid", &["mozart"]), ("UID", &["wolfgang"])], &[]);
        assert_eq!(canonical_account(&e, "uid"), Err(NoCanonical::Several(2)));
        // Non-UTF-8 values: missing alone, counted next to a text value.
        let e = entry(&[], &[("uid", 1)]);
        assert_eq!(canonical_account(&e, "uid"), Err(NoCanonical::Missing));
        let e = entry(&[("uid", &["mozart"])], &[("uid", 1)]);
        assert_eq!(canonical_account(&e, "uid"), Err(NoCanonical::Several(2)));
        let long = "a".repeat(MAX_ACCOUNT_LEN + 1);
        for bad in ["", "moz\nart", long.as_str()] {
            let e = entry(&[("uid", &[bad])], &[]);
            assert_eq!(
                canonical_account(&e, "uid"),
                Err(NoCanonical::Unacceptable),
                "{bad:?}"
            );
        }
        assert!(!NoCanonical::Several(2).to_string().is_empty());
    }

    #[tokio::test]
    async fn down_server_is_unavailable_not_a_wrong_password() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg: LdapConfig = toml::from_str(&format!(
            "url = 'ldap://127.0.0.1:{port}'\nbase = 'dc=x'\ntimeout = '1s'"
        ))
        .unwrap();
        let a = LdapAuthenticator::connect(cfg.resolve(std::path::Path::new(".")).unwrap()).await;
        let e = a
            .authenticate("mozart", &Secret::new("password"))
            .await
            .unwrap_err();
        assert!(matches!(e, AuthnError::Unavailable(_)), "{e}");
        // Refused before LDAP is asked: no error even though LDAP is down.
        assert_eq!(
            a.authenticate("mozart", &Secret::new("")).await.unwrap(),
            None
        );
        assert_eq!(a.authenticate("", &Secret::new("x")).await.unwrap(), None);
        assert_eq!(
            a.authenticate("a\nb", &Secret::new("x")).await.unwrap(),
            None
        );
        assert!(a.lookup("mozart").await.is_err());
        assert!(a.check(None, None).await.is_err());
    }
}
