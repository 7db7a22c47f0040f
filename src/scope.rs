//! Scopes of Docker's token protocol: `type:name:actions`.
//!
//! A leaf module: it imports nothing of ours. Everything that talks about
//! "access" (the token request, the JWT `access` claim, the ACL, the request
//! classifier) speaks in these types.
//!
//! Grammar (distribution `docs/spec/auth/scope.md`): a scope is
//! `resourcetype ":" resourcename ":" action *("," action)`. The resource name
//! may itself contain `:` (a registry host with a port, for instance), so the
//! type ends at the *first* colon and the actions start after the *last* one.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The resource type of repositories.
pub const REPOSITORY: &str = "repository";
/// The resource type of registry-wide resources (`registry:catalog:*`).
pub const REGISTRY: &str = "registry";
/// Longest scope string we accept; real ones are far shorter.
const MAX_SCOPE_LEN: usize = 1024;

/// One action of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// The literal action `*`, as in `registry:catalog:*`. In ACL rules `*`
    /// means "everything asked"; in a scope it is a named action of its own.
    All,
}

impl Action {
    /// Parses one action name; unknown names are `None` (they are never granted).
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            "*" => Some(Action::All),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::All => "*",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of actions, ordered for stable output.
pub type Actions = BTreeSet<Action>;

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope is too long")]
    TooLong,
    #[error("scope {0:?} is not of the form type:name:actions")]
    Malformed(String),
}

/// One requested or granted scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub resource_type: String,
    pub name: String,
    pub actions: Actions,
}

impl Scope {
    pub fn new(resource_type: &str, name: &str, actions: impl IntoIterator<Item = Action>) -> Self {
        Scope {
            resource_type: resource_type.to_owned(),
            name: name.to_owned(),
            actions: actions.into_iter().collect(),
        }
    }

    /// `repository:<name>:<actions>`.
    pub fn repository(name: &str, actions: impl IntoIterator<Item = Action>) -> Self {
        Scope::new(REPOSITORY, name, actions)
    }

    /// `registry:catalog:*`, what `GET /v2/_catalog` needs.
    pub fn catalog() -> Self {
        Scope::new(REGISTRY, "catalog", [Action::All])
    }

    /// Parses one scope. Unknown action names are dropped (they can never be
    /// granted); an empty type or name is an error. A resource type may carry a
    /// class in parentheses (`repository(plugin)`), which we keep verbatim.
    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        if s.len() > MAX_SCOPE_LEN {
            return Err(ScopeError::TooLong);
        }
        let malformed = || ScopeError::Malformed(s.to_owned());
        let (resource_type, rest) = s.split_once(':').ok_or_else(malformed)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(malformed)?;
        if resource_type.is_empty() || name.is_empty() {
            return Err(malformed());
        }
        let valid_type = resource_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"()._-".contains(&b));
        if !valid_type || name.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(malformed());
        }
        let actions = actions.split(',').filter_map(Action::parse).collect();
        Ok(Scope::new(resource_type, name, []).with_actions(actions))
    }

    /// Parses a space-separated list of scopes, as containerd sends in one
    /// `scope` form field (OAuth2 style) and docker in repeated parameters.
    pub fn parse_list(s: &str) -> Result<Vec<Scope>, ScopeError> {
        s.split(' ')
            .filter(|p| !p.is_empty())
            .map(Scope::parse)
            .collect()
    }

    pub fn with_actions(mut self, actions: Actions) -> Self {
        self.actions = actions;
        self
    }

    /// True when this scope names the same resource as `other`.
    pub fn same_resource(&self, other: &Scope) -> bool {
        self.resource_type == other.resource_type && self.name == other.name
    }

    /// True when every action of `needed` is in this scope (same resource).
    /// A granted `*` covers every action, as in distribution's `actionSet`
    /// (`auth/token/util.go`): `repository:a:*` allows pull, push and delete.
    pub fn covers(&self, needed: &Scope) -> bool {
        self.same_resource(needed)
            && (self.actions.contains(&Action::All) || needed.actions.is_subset(&self.actions))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.resource_type, self.name)?;
        for (i, a) in self.actions.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(a.as_str())?;
        }
        Ok(())
    }
}

/// Merges scopes that name the same resource, uniting their actions, so that
/// `repository:a:pull` and `repository:a:push` become `repository:a:pull,push`.
pub fn merge(scopes: impl IntoIterator<Item = Scope>) -> Vec<Scope> {
    let mut out: Vec<Scope> = Vec::new();
    for s in scopes {
        match out.iter_mut().find(|o| o.same_resource(&s)) {
            Some(o) => o.actions.extend(s.actions),
            None => out.push(s),
        }
    }
    out
}

/// The JWT `access` claim entry (distribution `docs/spec/auth/jwt.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl From<&Scope> for AccessEntry {
    fn from(s: &Scope) -> Self {
        AccessEntry {
            resource_type: s.resource_type.clone(),
            name: s.name.clone(),
            actions: s.actions.iter().map(|a| a.as_str().to_owned()).collect(),
        }
    }
}

impl From<&AccessEntry> for Scope {
    fn from(e: &AccessEntry) -> Self {
        Scope::new(
            &e.resource_type,
            &e.name,
            e.actions.iter().filter_map(|a| Action::parse(a)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    #[test]
    fn parses_scopes() {
        let cases: &[(&str, Option<Scope>)] = &[
            (
                "repository:foo:pull",
                Some(Scope::repository("foo", [Pull])),
            ),
            (
                "repository:a/b:pull,push",
                Some(Scope::repository("a/b", [Pull, Push])),
            ),
            (
                "repository:localhost:5000/foo:push,pull",
                Some(Scope::repository("localhost:5000/foo", [Pull, Push])),
            ),
            ("registry:catalog:*", Some(Scope::catalog())),
            (
                "repository:foo:pull,bogus",
                Some(Scope::repository("foo", [Pull])),
            ),
            ("repository:foo:", Some(Scope::repository("foo", []))),
            (
                "repository(plugin):foo:pull",
                Some(Scope::new("repository(plugin)", "foo", [Pull])),
            ),
            ("repository:foo", None),
            ("repository::pull", None),
            (":foo:pull", None),
            ("nonsense", None),
            ("", None),
            ("repo sitory:foo:pull", None),
            ("repository:fo o:pull", None),
        ];
        for (input, want) in cases {
            assert_eq!(Scope::parse(input).ok(), *want, "{input}");
        }
    }

    #[test]
    fn displays_canonically() {
        let s = Scope::parse("repository:h:5000/x:push,pull").unwrap();
        assert_eq!(s.to_string(), "repository:h:5000/x:pull,push");
        assert_eq!(Scope::catalog().to_string(), "registry:catalog:*");
    }

    #[test]
    fn parses_space_separated_lists() {
        let got = Scope::parse_list("repository:a:pull  repository:b:push").unwrap();
        assert_eq!(
            got,
            vec![
                Scope::repository("a", [Pull]),
                Scope::repository("b", [Push])
            ]
        );
        assert!(Scope::parse_list("repository:a:pull bad").is_err());
    }

    #[test]
    fn merges_same_resource() {
        let got = merge([
            Scope::repository("a", [Pull]),
            Scope::repository("b", [Pull]),
            Scope::repository("a", [Push]),
        ]);
        assert_eq!(
            got,
            vec![
                Scope::repository("a", [Pull, Push]),
                Scope::repository("b", [Pull])
            ]
        );
    }

    #[test]
    fn covers_needs_subset_of_same_resource() {
        let granted = Scope::repository("a", [Pull, Push]);
        assert!(granted.covers(&Scope::repository("a", [Pull])));
        assert!(!granted.covers(&Scope::repository("a", [Delete])));
        assert!(!granted.covers(&Scope::repository("b", [Pull])));
        assert!(!granted.covers(&Scope::new(REGISTRY, "a", [Pull])));
        let star = Scope::repository("a", [All]);
        assert!(star.covers(&Scope::repository("a", [Pull, Push, Delete])));
        assert!(!star.covers(&Scope::repository("b", [Pull])));
    }

    #[test]
    fn too_long_is_refused() {
        let long = format!("repository:{}:pull", "a".repeat(2000));
        assert_eq!(Scope::parse(&long), Err(ScopeError::TooLong));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Scope-like strings: pieces of real and hostile scopes.
        fn scope_strategy() -> impl Strategy<Value = String> {
            let piece = prop::sample::select(vec![
                "repository",
                "registry",
                "catalog",
                ":",
                "::",
                "a",
                "a/b",
                "..",
                "%2F",
                "pull",
                "push",
                "delete",
                "*",
                ",",
                " ",
                "PULL",
                "(plugin)",
                "\0",
                "\u{e9}",
                "localhost:5000/",
                "",
                "\t",
            ]);
            prop_oneof![
                3 => prop::collection::vec(piece, 0..10).prop_map(|p| p.concat()),
                1 => any::<String>(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            /// Parsing never panics; a parsed scope is already canonical
            /// (parsing its printed form gives it back), names exactly what
            /// stands between the first and last colon, and holds only
            /// actions that were spelled out in full.
            #[test]
            fn parsed_scopes_are_canonical_and_no_broader(s in scope_strategy()) {
                let Ok(scope) = Scope::parse(&s) else { return Ok(()) };
                prop_assert_eq!(Scope::parse(&scope.to_string()), Ok(scope.clone()));
                let first = s.find(':').unwrap();
                let last = s.rfind(':').unwrap();
                prop_assert_eq!(&scope.resource_type, &s[..first]);
                prop_assert_eq!(&scope.name, &s[first + 1..last]);
                let spelled: Vec<&str> = s[last + 1..].split(',').collect();
                for a in &scope.actions {
                    prop_assert!(spelled.contains(&a.as_str()), "{:?} from {:?}", a, s);
                }
                prop_assert!(!scope.name.contains(' ') && !scope.name.chars().any(|c| c.is_ascii_control()));
            }

            /// A list parses as its parts do, or not at all.
            #[test]
            fn lists_parse_as_their_parts(parts in prop::collection::vec(scope_strategy(), 0..4)) {
                let joined = parts.join(" ");
                let whole = Scope::parse_list(&joined);
                let each: Result<Vec<Scope>, _> = joined
                    .split(' ')
                    .filter(|p| !p.is_empty())
                    .map(Scope::parse)
                    .collect();
                prop_assert_eq!(whole, each);
            }

            /// Merging unites actions per resource and never invents one:
            /// whatever the merged list covers, some input scope covered
            /// each of its actions.
            #[test]
            fn merging_never_widens(
                picks in prop::collection::vec((0usize..3, prop::collection::btree_set(0usize..4, 0..4)), 0..6)
            ) {
                let names = ["a", "b", "a/b"];
                let all = [Action::Pull, Action::Push, Action::Delete, Action::All];
                let scopes: Vec<Scope> = picks
                    .iter()
                    .map(|(n, acts)| Scope::repository(names[*n], acts.iter().map(|i| all[*i])))
                    .collect();
                for m in merge(scopes.clone()) {
                    for a in &m.actions {
                        prop_assert!(scopes.iter().any(|s| s.same_resource(&m) && s.actions.contains(a)));
                    }
                }
            }
        }
    }
}
