//! The scopes of a robot account or personal access token: an upper bound
//! on what a login with that credential gets. The ACL still decides for the
//! account first; a credential's scopes can only take away
//! (granted = ACL's grant ∩ scopes), never add.
//!
//! Grammar (one scope per string):
//! - `repository:PATTERN:ACTIONS`: PATTERN is an ACL name pattern (glob,
//!   `*` not crossing `/`, or `/regex/`; no placeholders); ACTIONS is a
//!   comma list of `pull`, `push`, `delete`, or `*` for all three.
//! - `registry:catalog:*`: may list the catalog.
//! - `registry:credentials:*`: may administer access tokens through the API
//!   (only when the ACL makes the account an administrator too).

use serde::{Deserialize, Serialize};

use super::pattern::{Pattern, Vars};
use crate::authn::Labels;
use crate::scope::{Action, Actions, REGISTRY, REPOSITORY, Scope};

/// The `registry` names a credential scope may carry.
const REGISTRY_NAMES: &[&str] = &["catalog", "credentials"];

/// One parsed credential scope.
#[derive(Debug, Clone)]
struct Bound {
    resource_type: &'static str,
    name: Pattern,
    /// The pattern as written.
    name_text: String,
    /// `None`: every action.
    actions: Option<Actions>,
}

/// A credential's scopes, parsed. Compared by their text.
#[derive(Debug, Clone)]
pub struct Restriction {
    text: Vec<String>,
    bounds: Vec<Bound>,
}

impl PartialEq for Restriction {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl Eq for Restriction {}

impl Serialize for Restriction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.text.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Restriction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Vec::<String>::deserialize(d)?;
        Restriction::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Restriction {
    /// Parses every scope; the error names the first bad one and why.
    pub fn parse(scopes: &[String]) -> Result<Restriction, String> {
        let bounds = scopes
            .iter()
            .map(|s| parse_one(s).map_err(|why| format!("scope {s:?}: {why}")))
            .collect::<Result<_, _>>()?;
        Ok(Restriction {
            text: scopes.to_vec(),
            bounds,
        })
    }

    /// The actions of `scope` this restriction lets through.
    pub fn bound(&self, scope: &Scope) -> Actions {
        let vars = Vars {
            account: "",
            name: &scope.name,
            resource_type: &scope.resource_type,
            service: "",
            labels: &NO_LABELS,
        };
        let mut out = Actions::new();
        for b in &self.bounds {
            if b.resource_type != scope.resource_type || !b.name.matches(&scope.name, &vars) {
                continue;
            }
            match &b.actions {
                None => return scope.actions.clone(),
                Some(allowed) => out.extend(scope.actions.intersection(allowed)),
            }
        }
        out
    }

    /// Each scope as a request for what it lets through, its pattern taken
    /// as a name (`repository:team/*:*` asks pull, push and delete on
    /// `team/*`), paired with its text: what a person creating a token must
    /// hold already.
    pub fn requested(&self) -> impl Iterator<Item = (&str, Scope)> {
        self.text.iter().zip(&self.bounds).map(|(text, b)| {
            let actions = match (&b.actions, b.resource_type) {
                (Some(a), _) => a.clone(),
                (None, REPOSITORY) => [Action::Pull, Action::Push, Action::Delete].into(),
                (None, _) => [Action::All].into(),
            };
            (
                text.as_str(),
                Scope::new(b.resource_type, &b.name_text, actions),
            )
        })
    }

    /// `granted` with each scope cut down to what this restriction allows;
    /// scopes left with no action are dropped.
    pub fn apply(&self, granted: Vec<Scope>) -> Vec<Scope> {
        granted
            .into_iter()
            .filter_map(|s| {
                let actions = self.bound(&s);
                (!actions.is_empty()).then(|| s.with_actions(actions))
            })
            .collect()
    }

    /// True when every action of `scope` is let through (and it names one).
    pub fn allows(&self, scope: &Scope) -> bool {
        !scope.actions.is_empty() && self.bound(scope) == scope.actions
    }
}

static NO_LABELS: Labels = Labels::new();

fn parse_one(s: &str) -> Result<Bound, String> {
    let (resource_type, rest) = s
        .split_once(':')
        .ok_or("not of the form type:name:actions")?;
    let (name, actions) = rest
        .rsplit_once(':')
        .ok_or("not of the form type:name:actions")?;
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.contains("${") {
        return Err("placeholders are not allowed in credential scopes".into());
    }
    match resource_type {
        REPOSITORY => {
            let mut set = Actions::new();
            for a in actions.split(',') {
                match Action::parse(a) {
                    Some(Action::All) => return bound(REPOSITORY, name, None),
                    Some(action) => {
                        set.insert(action);
                    }
                    None => return Err(format!("unknown action {a:?} (pull, push, delete, *)")),
                }
            }
            bound(REPOSITORY, name, Some(set))
        }
        REGISTRY => {
            if !REGISTRY_NAMES.contains(&name) || actions != "*" {
                return Err(
                    "registry scopes are registry:catalog:* and registry:credentials:*".into(),
                );
            }
            bound(REGISTRY, name, Some([Action::All].into()))
        }
        _ => Err("the type must be repository or registry".into()),
    }
}

fn bound(
    resource_type: &'static str,
    name: &str,
    actions: Option<Actions>,
) -> Result<Bound, String> {
    Ok(Bound {
        resource_type,
        name: Pattern::compile(name)?,
        name_text: name.to_owned(),
        actions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(scopes: &[&str]) -> Restriction {
        Restriction::parse(&scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn repo(name: &str, actions: &[Action]) -> Scope {
        Scope::repository(name, actions.iter().copied())
    }

    #[test]
    fn cuts_grants_down_to_the_scopes() {
        use Action::*;
        let ci = r(&["repository:team/*:pull,push", "repository:base/*:pull"]);
        let cases = [
            (repo("team/app", &[Pull, Push, Delete]), vec![Pull, Push]),
            (repo("team/app/sub", &[Pull]), vec![]),
            (repo("base/debian", &[Pull, Push]), vec![Pull]),
            (repo("other/app", &[Pull]), vec![]),
            (Scope::catalog(), vec![]),
        ];
        for (scope, want) in cases {
            let want: Actions = want.into_iter().collect();
            assert_eq!(ci.bound(&scope), want, "{scope}");
        }
        let all = r(&["repository:/.+/:*", "registry:catalog:*"]);
        assert_eq!(all.bound(&repo("a/b/c", &[Pull, Delete])).len(), 2);
        assert!(all.allows(&Scope::catalog()));
        assert!(!all.allows(&Scope::new(REGISTRY, "credentials", [All])));
        let granted = ci.apply(vec![repo("team/app", &[Pull, Delete]), repo("x", &[Pull])]);
        assert_eq!(granted, vec![repo("team/app", &[Pull])]);
    }

    #[test]
    fn refuses_malformed_scopes() {
        for bad in [
            "repository:team/*",
            "repository::pull",
            "repository:a:pull,fly",
            "registry:catalog:pull",
            "registry:other:*",
            "image:a:pull",
            "repository:${account}/*:pull",
            "repository:/(/:pull",
        ] {
            assert!(Restriction::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
        let ok = r(&["repository:a:b:pull", "registry:credentials:*"]);
        assert!(ok.allows(&repo("a:b", &[Action::Pull])));
    }

    #[test]
    fn scopes_ask_what_they_let_through() {
        use Action::*;
        let r = r(&[
            "repository:team/*:pull,push",
            "repository:a/b:*",
            "registry:catalog:*",
        ]);
        let asked: Vec<(&str, Scope)> = r.requested().collect();
        assert_eq!(
            asked[0],
            ("repository:team/*:pull,push", repo("team/*", &[Pull, Push]))
        );
        assert_eq!(asked[1].1, repo("a/b", &[Pull, Push, Delete]));
        assert_eq!(asked[2].1, Scope::catalog());
    }

    #[test]
    fn round_trips_through_json() {
        let x = r(&["repository:team/*:pull"]);
        let text = serde_json::to_string(&x).unwrap();
        assert_eq!(text, r#"["repository:team/*:pull"]"#);
        let back: Restriction = serde_json::from_str(&text).unwrap();
        assert_eq!(back, x);
        assert!(serde_json::from_str::<Restriction>(r#"["nonsense"]"#).is_err());
    }
}
