//! Authorization: which of the requested actions a caller gets.
//!
//! Owns the `[[acl]]` rules: their config shape ([`RawRule`]), their
//! compilation into an [`Acl`] (once, at startup or reload, so bad rules fail
//! loudly with the key path instead of denying at request time), and the
//! decision itself. Semantics follow cesanta/docker_auth because many users
//! migrate from it: ordered rules, the first matching rule decides, no match
//! denies.
//!
//! Rules may also match on the `tag` a request names ([`tags`] explains how
//! such rules combine with first-match ordering), and [`tags::Immutable`]
//! holds the `[[immutable]]` release-tag rules.
//!
//! Dependencies run one way: authz uses the [`crate::scope`] and
//! [`crate::authn`] types and nothing of the HTTP layer, so decisions are
//! pure functions, testable without a server, and callable from both the
//! token endpoint and the proxy (catalog filtering).

mod ip;
mod pattern;
mod restriction;
pub mod tags;

pub use restriction::Restriction;

/// An address or CIDR as `ip` rules take it (also `server.trusted_proxies`).
pub fn parse_net(s: &str) -> Option<IpNet> {
    ip::parse_net(s).ok()
}

/// Whether `ip` lies in `net` (IPv4-mapped IPv6 compared as IPv4).
pub fn net_contains(net: &IpNet, ip: IpAddr) -> bool {
    ip::contains(net, ip)
}

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::authn::Labels;
use crate::scope::{Action, Actions, Scope};

use pattern::{Pattern, Vars};

/// One `[[acl]]` entry as written in the config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    #[serde(rename = "match", default)]
    pub matches: RawMatch,
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The `match` table of an ACL rule. Every field present must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The tag a manifest request names (see [`tags`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Who asks, from where, for which service.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Empty for anonymous callers.
    pub account: &'a str,
    pub labels: &'a Labels,
    pub ip: Option<IpAddr>,
    pub service: &'a str,
}

/// A rule that failed to compile; `path` names the key, e.g. `acl[2].match.name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct AclError {
    pub path: String,
    pub message: String,
}

/// The compiled, ordered ACL. The default ACL has no rules and so denies
/// everything.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    rules: Vec<Rule>,
    /// Some rule has a `tag` condition (see [`Acl::has_tag_rules`]).
    tag_rules: bool,
}

#[derive(Debug, Clone)]
struct Rule {
    when: Match,
    allowed: Allowed,
}

/// A compiled `match` table; `None` fields are absent and match anything.
#[derive(Debug, Clone, Default)]
struct Match {
    account: Option<Pattern>,
    name: Option<Pattern>,
    resource_type: Option<Pattern>,
    service: Option<Pattern>,
    ip: Option<IpNet>,
    labels: Vec<(String, Pattern)>,
    /// Only on repository scopes, and only decided where the tag is known
    /// (see [`Acl::grant_at`]).
    tag: Option<Pattern>,
}

/// What a decision knows about the tag of the request it is for.
#[derive(Debug, Clone, Copy)]
enum TagKnown<'a> {
    /// A token request or a visibility check: any request may follow.
    NotYet,
    /// The request names no tag (a manifest by digest, a blob).
    NoTag,
    Tag(&'a str),
}

/// What a matching rule lets through.
#[derive(Debug, Clone)]
enum Allowed {
    /// `actions = ["*"]`: everything asked, including the literal `*` action
    /// of `registry:catalog:*`.
    All,
    /// These actions only; empty is an explicit deny.
    Only(Actions),
}

impl Allowed {
    fn apply(&self, requested: &Actions) -> Actions {
        match self {
            Allowed::All => requested.clone(),
            Allowed::Only(allowed) => requested.intersection(allowed).copied().collect(),
        }
    }
}

impl Match {
    fn matches(&self, subject: &Subject<'_>, scope: &Scope, vars: &Vars<'_>) -> bool {
        let field =
            |p: &Option<Pattern>, value: &str| p.as_ref().is_none_or(|p| p.matches(value, vars));
        field(&self.account, subject.account)
            && field(&self.name, &scope.name)
            && field(&self.resource_type, &scope.resource_type)
            && field(&self.service, subject.service)
            // A rule limited to addresses never matches a caller whose address is unknown.
            && self
                .ip
                .as_ref()
                .is_none_or(|net| subject.ip.is_some_and(|ip| ip::contains(net, ip)))
            // Every listed label key must have at least one matching value;
            // a caller without the key does not match.
            && self.labels.iter().all(|(key, p)| {
                subject
                    .labels
                    .get(key)
                    .is_some_and(|values| values.iter().any(|v| p.matches(v, vars)))
            })
    }
}

/// `labels.team`, or `labels."odd key"` when the key is not a bare TOML key.
fn label_path(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        format!("labels.{key}")
    } else {
        format!("labels.{key:?}")
    }
}

fn compile_rule(i: usize, raw: &RawRule) -> Result<Rule, AclError> {
    let err = |key: &str, message: String| AclError {
        path: format!("acl[{i}].{key}"),
        message,
    };
    let pattern = |key: &str, src: &Option<String>| {
        src.as_deref()
            .map(Pattern::compile)
            .transpose()
            .map_err(|m| err(&format!("match.{key}"), m))
    };
    let m = &raw.matches;
    let mut labels = Vec::with_capacity(m.labels.len());
    for (key, src) in &m.labels {
        let p =
            Pattern::compile(src).map_err(|msg| err(&format!("match.{}", label_path(key)), msg))?;
        labels.push((key.clone(), p));
    }
    let when = Match {
        account: pattern("account", &m.account)?,
        name: pattern("name", &m.name)?,
        resource_type: pattern("type", &m.resource_type)?,
        service: pattern("service", &m.service)?,
        ip: m
            .ip
            .as_deref()
            .map(ip::parse_net)
            .transpose()
            .map_err(|msg| err("match.ip", msg))?,
        labels,
        tag: pattern("tag", &m.tag)?,
    };

    let mut only = Actions::new();
    let mut all = false;
    for (j, name) in raw.actions.iter().enumerate() {
        match Action::parse(name) {
            // `*` anywhere in the list means "everything asked"; pairing it
            // with named actions adds nothing.
            Some(Action::All) => all = true,
            Some(a) => {
                only.insert(a);
            }
            None => {
                return Err(err(
                    &format!("actions[{j}]"),
                    format!("unknown action {name:?} (expected pull, push, delete or *)"),
                ));
            }
        }
    }
    let allowed = if all {
        Allowed::All
    } else {
        Allowed::Only(only)
    };
    Ok(Rule { when, allowed })
}

impl Acl {
    /// Compiles the rules in order. Every pattern without placeholders is
    /// compiled here, once; the first bad key aborts with its path.
    pub fn compile(rules: &[RawRule]) -> Result<Acl, AclError> {
        let rules: Vec<Rule> = rules
            .iter()
            .enumerate()
            .map(|(i, r)| compile_rule(i, r))
            .collect::<Result<_, _>>()?;
        let tag_rules = rules.iter().any(|r| r.when.tag.is_some());
        Ok(Acl { rules, tag_rules })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules, i.e. everything is denied.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// True when some rule has a `tag` condition: only then does the gate
    /// decide manifest requests again at the request (see [`tags`]).
    pub fn has_tag_rules(&self) -> bool {
        self.tag_rules
    }

    /// The actions of `requested` that the ACL allows when the tag is not
    /// known yet: for a token request, or to decide what a caller may see.
    /// Without `tag` rules this is exactly "the first matching rule decides";
    /// with them, see [`tags`] (a matching `tag` rule adds its actions and
    /// the walk goes on to the first matching rule without `tag`).
    pub fn grant(&self, subject: &Subject<'_>, requested: &Scope) -> Actions {
        self.decide(subject, requested, TagKnown::NotYet)
    }

    /// The actions of `requested` that the first matching rule allows for a
    /// request that names `tag` (`None`: it names a digest, or nothing). A
    /// rule with `tag` matches only a request naming a tag it matches.
    pub fn grant_at(&self, subject: &Subject<'_>, requested: &Scope, tag: Option<&str>) -> Actions {
        self.decide(
            subject,
            requested,
            match tag {
                Some(t) => TagKnown::Tag(t),
                None => TagKnown::NoTag,
            },
        )
    }

    fn decide(&self, subject: &Subject<'_>, requested: &Scope, tag: TagKnown<'_>) -> Actions {
        let vars = Vars {
            account: subject.account,
            name: &requested.name,
            resource_type: &requested.resource_type,
            service: subject.service,
            labels: subject.labels,
        };
        // Actions of `tag` rules passed while the tag is not known yet.
        let mut possible = Actions::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.when.matches(subject, requested, &vars) {
                continue;
            }
            match (&rule.when.tag, tag) {
                (None, _) => {}
                // A tag condition is about repositories only.
                (Some(_), _) if requested.resource_type != crate::scope::REPOSITORY => continue,
                (Some(p), TagKnown::Tag(t)) if p.matches(t, &vars) => {}
                (Some(_), TagKnown::Tag(_) | TagKnown::NoTag) => continue,
                (Some(_), TagKnown::NotYet) => {
                    // Some tag may match this rule: what it allows may be
                    // needed (a token must carry `push` for the tags the
                    // caller may push), and the gate decides each manifest
                    // request again once its tag is known.
                    possible.extend(rule.allowed.apply(&requested.actions));
                    continue;
                }
            }
            // The first match decides, even when it grants nothing:
            // `actions = []` is how a rule carves out an exception.
            let mut granted = rule.allowed.apply(&requested.actions);
            granted.extend(possible);
            tracing::trace!(rule = i, account = subject.account, scope = %requested, granted = granted.len(), "acl decision");
            return granted;
        }
        // Deny by default: no rule mentions this caller and resource, so
        // nothing is granted beyond what `tag` rules may allow for some tag.
        // An ACL must opt in to every access.
        tracing::trace!(account = subject.account, scope = %requested, "no acl rule without tag matched");
        possible
    }

    /// Each requested scope with the actions granted on it, in request order.
    /// Scopes granted nothing are left out, as the token's `access` claim
    /// should not list resources the caller cannot use. Duplicates are not
    /// merged; use [`crate::scope::merge`] first if that matters.
    pub fn grant_all(&self, subject: &Subject<'_>, requested: &[Scope]) -> Vec<Scope> {
        requested
            .iter()
            .filter_map(|s| {
                let granted = self.grant(subject, s);
                (!granted.is_empty()).then(|| s.clone().with_actions(granted))
            })
            .collect()
    }

    /// True when every action of `scope` is granted. A scope asking for no
    /// action is not "allowed": callers checking visibility must name the
    /// action they need (pull), so a mistake fails closed.
    pub fn allows(&self, subject: &Subject<'_>, scope: &Scope) -> bool {
        !scope.actions.is_empty() && self.grant(subject, scope) == scope.actions
    }
}

#[cfg(test)]
mod tests;
