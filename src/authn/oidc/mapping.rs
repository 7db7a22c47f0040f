//! Verified claims -> an account and labels: the `account` template
//! (`github:${claims.repository}`), `labels` (label -> claim) and the
//! `require` conditions (exact, or `/regex/`, matched whole).
//!
//! Pure functions over a JSON object; no I/O.

use serde_json::{Map, Value};

use crate::authn::Labels;

/// A parsed `account` template: literal text and `${claims.NAME}` parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Claim(String),
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let name = after[..end].strip_prefix("claims.").ok_or_else(|| {
                format!("only ${{claims.NAME}} placeholders are known (in {s:?})")
            })?;
            if name.is_empty() || name.contains(['{', '$']) {
                return Err(format!("bad claim name in {s:?}"));
            }
            parts.push(Part::Claim(name.to_owned()));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Claim(_))) {
            return Err(format!(
                "{s:?} names no claim: every token would be the same account"
            ));
        }
        Ok(Template(parts))
    }

    /// `github` for `github:${claims.repository}`: the literal text before
    /// the first placeholder, when it holds a ':' (the part before it).
    pub fn literal_namespace(&self) -> Option<&str> {
        match self.0.first() {
            Some(Part::Literal(l)) => {
                let (ns, _) = l.split_once(':')?;
                super::config::valid_name(ns).then_some(ns)
            }
            _ => None,
        }
    }

    /// Fills the template; every claim it names must be a string, number
    /// or boolean.
    pub fn render(&self, claims: &Map<String, Value>) -> Result<String, MappingError> {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Claim(c) => out.push_str(
                    &scalar(claims.get(c)).ok_or_else(|| MappingError::MissingClaim(c.clone()))?,
                ),
            }
        }
        if !crate::authn::acceptable_account(&out) {
            return Err(MappingError::BadAccount);
        }
        Ok(out)
    }
}

/// A `require` condition: the claim equals the text, or (`/.../`) matches
/// the regular expression as a whole.
#[derive(Debug, Clone)]
pub enum Condition {
    Exact(String),
    Regex(regex::Regex),
}

impl Condition {
    pub fn parse(s: &str) -> Result<Condition, String> {
        match s.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
            Some(re) if s.len() >= 2 => regex::Regex::new(&format!("^(?:{re})$"))
                .map(Condition::Regex)
                .map_err(|e| format!("bad regular expression: {e}")),
            _ => Ok(Condition::Exact(s.to_owned())),
        }
    }

    fn holds(&self, value: &str) -> bool {
        match self {
            Condition::Exact(e) => e == value,
            Condition::Regex(r) => r.is_match(value),
        }
    }

    /// Whether the claim meets the condition: a scalar claim directly, a
    /// list when one of its items does. A missing claim never does.
    pub fn holds_for(&self, claim: Option<&Value>) -> bool {
        match claim {
            Some(Value::Array(items)) => items
                .iter()
                .any(|v| scalar(Some(v)).is_some_and(|s| self.holds(&s))),
            other => scalar(other).is_some_and(|s| self.holds(&s)),
        }
    }
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Condition::Exact(a), Condition::Exact(b)) => a == b,
            (Condition::Regex(a), Condition::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// Why verified claims could not be mapped to an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("claim {0:?} is missing or not a string")]
    MissingClaim(String),
    #[error("the mapped account name is empty, too long or has control characters")]
    BadAccount,
    #[error("require.{0} does not hold")]
    Unmet(String),
}

impl MappingError {
    /// For metrics and audit events.
    pub fn reason(&self) -> &'static str {
        match self {
            MappingError::MissingClaim(_) => "claim_missing",
            MappingError::BadAccount => "bad_account",
            MappingError::Unmet(_) => "require_unmet",
        }
    }
}

fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Labels from claims: each label gets the claim's string, or the strings
/// of a list claim (other items are skipped); a missing claim gives none.
pub fn labels(
    map: &std::collections::BTreeMap<String, String>,
    claims: &Map<String, Value>,
) -> Labels {
    let mut out = Labels::new();
    for (label, claim) in map {
        let values: Vec<String> = match claims.get(claim) {
            Some(Value::Array(items)) => items.iter().filter_map(|v| scalar(Some(v))).collect(),
            other => scalar(other).into_iter().collect(),
        };
        if !values.is_empty() {
            out.insert(label.clone(), values);
        }
    }
    out
}

/// The first `require` condition that does not hold, if any.
pub fn unmet<'a>(
    require: &'a [(String, Condition)],
    claims: &Map<String, Value>,
) -> Option<&'a str> {
    require
        .iter()
        .find(|(claim, cond)| !cond.holds_for(claims.get(claim)))
        .map(|(claim, _)| claim.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn templates_render_from_claims() {
        let c = claims(json!({"repository": "acme/app", "run": 7, "list": ["a"], "ctl": "a\nb"}));
        let cases: &[(&str, Result<&str, MappingError>)] = &[
            ("github:${claims.repository}", Ok("github:acme/app")),
            ("ci:${claims.repository}#${claims.run}", Ok("ci:acme/app#7")),
            (
                "ci:${claims.missing}",
                Err(MappingError::MissingClaim("missing".into())),
            ),
            (
                "ci:${claims.list}",
                Err(MappingError::MissingClaim("list".into())),
            ),
            ("ci:${claims.ctl}", Err(MappingError::BadAccount)),
        ];
        for (t, want) in cases {
            let got = Template::parse(t).unwrap().render(&c);
            assert_eq!(got.as_deref().map_err(Clone::clone), want.clone(), "{t}");
        }
    }

    #[test]
    fn templates_are_parsed_strictly() {
        for bad in [
            "github",
            "x:${claims.",
            "x:${sub}",
            "x:${claims.}",
            "x:${claims.a${b}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        let ns = |t: &str| {
            Template::parse(t)
                .unwrap()
                .literal_namespace()
                .map(str::to_owned)
        };
        assert_eq!(ns("github:${claims.r}").as_deref(), Some("github"));
        assert_eq!(ns("${claims.r}"), None);
        assert_eq!(ns("gh-${claims.r}:x"), None);
        assert_eq!(ns("Bad:${claims.r}"), None);
    }

    #[test]
    fn conditions_are_exact_or_whole_regex() {
        let c = claims(
            json!({"owner": "acme", "ref": "refs/heads/main", "groups": ["x", "admins"], "n": 3}),
        );
        let cases = [
            ("owner", "acme", true),
            ("owner", "acm", false),
            ("owner", "/ac.*/", true),
            ("owner", "/cm/", false), // whole match, not a search
            ("ref", "/refs/heads/(main|release-.*)/", true),
            ("groups", "admins", true),
            ("groups", "/adm.*/", true),
            ("groups", "root", false),
            ("n", "3", true),
            ("missing", "/.*/", false),
        ];
        for (claim, cond, want) in cases {
            let cond = Condition::parse(cond).unwrap();
            assert_eq!(cond.holds_for(c.get(claim)), want, "{claim} {cond:?}");
        }
        let require = vec![
            ("owner".to_owned(), Condition::parse("acme").unwrap()),
            (
                "ref".to_owned(),
                Condition::parse("/refs/tags/.*/").unwrap(),
            ),
        ];
        assert_eq!(unmet(&require, &c), Some("ref"));
        assert_eq!(unmet(&require[..1], &c), None);
    }

    #[test]
    fn labels_take_strings_and_lists() {
        let c = claims(json!({"groups": ["dev", 1, {"x": 1}], "ref": "main"}));
        let map = [("groups", "groups"), ("ref", "ref"), ("none", "missing")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        let l = labels(&map, &c);
        assert_eq!(
            l.get("groups").unwrap(),
            &vec!["dev".to_owned(), "1".to_owned()]
        );
        assert_eq!(l.get("ref").unwrap(), &vec!["main".to_owned()]);
        assert!(!l.contains_key("none"));
    }
}
