//! Tag conditions of ACL rules, and immutable release tags (`[[immutable]]`).
//!
//! Both are decided from what a registry request names: the classifier
//! ([`crate::access`]) validates `/v2/<name>/manifests/<reference>`, and
//! [`Reference::parse`] tells a tag from a digest. Pure decisions only; the
//! gate's enforcement (which reads the upstream's tags) is
//! [`crate::immutable`], and the HTTP answers are made in `http::tagrules`
//! (and, for the web UI's deletes, in `ui::registry`).
//!
//! # How `tag` rules combine with first-match ordering
//!
//! A token request carries no tag (docker_auth issue #136), so the ACL is
//! decided twice for tag-aware configs:
//!
//! 1. **At the token request** ([`super::Acl::grant`]) rules are walked in
//!    order. A matching rule *without* `tag` decides, as always. A matching
//!    rule *with* `tag` does not stop the walk: its actions are added (some
//!    tag may match it) and the walk goes on. The grant is the union of the
//!    actions of the `tag` rules passed and of the first matching rule
//!    without `tag` (nothing, if none). Without `tag` rules this is exactly
//!    the old first-match decision.
//! 2. **At the registry request**, when the ACL has any `tag` rule, the gate
//!    decides again with what the request names ([`super::Acl::grant_at`]),
//!    and the token must cover the request as well: a manifest request by
//!    tag (GET, HEAD, PUT, DELETE) is decided with its tag; a manifest PUT or
//!    DELETE by digest, and a blob DELETE, are decided with no tag. Here the
//!    first matching rule decides: a rule with `tag` matches only a request
//!    naming a tag it matches, a rule without `tag` matches whatever the tag.
//!
//! Everything else (blob uploads and reads, manifest reads by digest, tag
//! lists) names no tag and is governed by the token as granted in step 1.
//! Use the tag-aware decision with [`needs_tag_decision`].

use serde::{Deserialize, Serialize};

use super::AclError;
use super::pattern::{Pattern, Vars};
use crate::access::Endpoint;
use crate::authn::Labels;
use http::Method;

/// What a manifest request names after `/manifests/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference<'a> {
    Tag(&'a str),
    Digest(&'a str),
}

impl<'a> Reference<'a> {
    /// A validated reference: digests always hold `:`, tags never do (the
    /// classifier's rule, `access::parse_path`).
    pub fn parse(reference: &'a str) -> Reference<'a> {
        if reference.contains(':') {
            Reference::Digest(reference)
        } else {
            Reference::Tag(reference)
        }
    }

    pub fn tag(self) -> Option<&'a str> {
        match self {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        }
    }
}

/// Whether a request with this endpoint and method is decided again at the
/// request when the ACL has `tag` rules, and with which tag (`Some(None)`:
/// decided with no tag). See the module documentation.
pub fn needs_tag_decision<'a>(
    endpoint: Endpoint,
    method: &Method,
    reference: Option<Reference<'a>>,
) -> Option<Option<&'a str>> {
    match (endpoint, reference) {
        (Endpoint::Manifest, Some(Reference::Tag(t))) => Some(Some(t)),
        (Endpoint::Manifest, Some(Reference::Digest(_)))
            if *method == Method::PUT || *method == Method::DELETE =>
        {
            Some(None)
        }
        (Endpoint::Blob, _) if *method == Method::DELETE => Some(None),
        _ => None,
    }
}

/// One `[[immutable]]` entry as written in the config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImmutable {
    /// Repositories (glob or `/regex/`).
    pub name: String,
    /// Tags (globs or `/regex/`es); a tag matching any of them is immutable.
    pub tags: Vec<String>,
    /// Accounts (globs or `/regex/`es) the rule does not hold for: they may
    /// still overwrite and delete (as far as the ACL lets them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// The compiled `[[immutable]]` rules. Empty by default: no tag is immutable.
#[derive(Debug, Clone, Default)]
pub struct Immutable {
    rules: Vec<ImmutableRule>,
}

#[derive(Debug, Clone)]
struct ImmutableRule {
    /// `immutable[i]`, for messages.
    index: usize,
    name_src: String,
    name: Pattern,
    tags: Vec<Pattern>,
    except: Vec<Pattern>,
}

/// The rule that makes a tag immutable, shown in refusals as
/// `immutable[0] (name = "team/*")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub index: usize,
    pub name: String,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "immutable[{}] (name = {:?})", self.index, self.name)
    }
}

impl Immutable {
    /// Compiles the rules; the first bad key aborts with its path.
    /// Placeholders (`${account}`...) are refused: these rules are about
    /// repositories and tags, not about who asks.
    pub fn compile(raw: &[RawImmutable]) -> Result<Immutable, AclError> {
        let mut rules = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let pattern = |key: String, src: &str| {
                let err = |message: String| AclError {
                    path: format!("immutable[{i}].{key}"),
                    message,
                };
                if src.contains("${") {
                    return Err(err("placeholders are not supported here".into()));
                }
                Pattern::compile(src).map_err(err)
            };
            if r.tags.is_empty() {
                return Err(AclError {
                    path: format!("immutable[{i}].tags"),
                    message: "must name at least one tag pattern".into(),
                });
            }
            let list = |key: &str, srcs: &[String]| {
                srcs.iter()
                    .enumerate()
                    .map(|(j, s)| pattern(format!("{key}[{j}]"), s))
                    .collect::<Result<Vec<_>, _>>()
            };
            rules.push(ImmutableRule {
                index: i,
                name_src: r.name.clone(),
                name: pattern("name".into(), &r.name)?,
                tags: list("tags", &r.tags)?,
                except: list("except", &r.except)?,
            });
        }
        Ok(Immutable { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule that makes `tag` of `repository` immutable for
    /// `account`, if any. A rule whose `except` names the account does not
    /// hold for it, but another rule may.
    pub fn protecting(&self, account: &str, repository: &str, tag: &str) -> Option<RuleRef> {
        let labels = Labels::new();
        let vars = vars(account, repository, &labels);
        self.rules
            .iter()
            .filter(|r| r.holds_for(account, repository, &vars))
            .find(|r| r.tags.iter().any(|p| p.matches(tag, &vars)))
            .map(|r| RuleRef {
                index: r.index,
                name: r.name_src.clone(),
            })
    }

    /// Whether some tag of `repository` may be immutable for `account`: a
    /// delete by digest must then look at the repository's tags.
    pub fn covers_repository(&self, account: &str, repository: &str) -> bool {
        let labels = Labels::new();
        let vars = vars(account, repository, &labels);
        self.rules
            .iter()
            .any(|r| r.holds_for(account, repository, &vars))
    }

    /// Whether any rule names `repository` (whoever asks): the UI marks
    /// immutable tags for every viewer.
    pub fn protecting_anyone(&self, repository: &str, tag: &str) -> Option<RuleRef> {
        let labels = Labels::new();
        let vars = vars("", repository, &labels);
        self.rules
            .iter()
            .filter(|r| r.name.matches(repository, &vars))
            .find(|r| r.tags.iter().any(|p| p.matches(tag, &vars)))
            .map(|r| RuleRef {
                index: r.index,
                name: r.name_src.clone(),
            })
    }
}

impl ImmutableRule {
    fn holds_for(&self, account: &str, repository: &str, vars: &Vars<'_>) -> bool {
        self.name.matches(repository, vars) && !self.except.iter().any(|p| p.matches(account, vars))
    }
}

fn vars<'a>(account: &'a str, repository: &'a str, labels: &'a Labels) -> Vars<'a> {
    Vars {
        account,
        name: repository,
        resource_type: crate::scope::REPOSITORY,
        service: "",
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Acl, RawRule, Subject};
    use super::*;
    use crate::scope::{Actions, Scope};

    fn compile(src: &str) -> Acl {
        #[derive(serde::Deserialize)]
        struct C {
            acl: Vec<RawRule>,
        }
        let c: C = toml::from_str(src).unwrap_or_else(|e| panic!("{e}"));
        Acl::compile(&c.acl).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Labels and address do not matter here; the ACL tests cover them.
    struct Who(String, Labels);

    fn user(account: &str) -> Who {
        Who(account.to_owned(), Labels::new())
    }

    impl Who {
        fn subject(&self) -> Subject<'_> {
            Subject {
                account: &self.0,
                labels: &self.1,
                ip: None,
                service: "registry.example",
            }
        }
    }

    /// The example of issue 16 and docs/tags.md.
    const CI_RELEASE: &str = r#"
        [[acl]]
        match = { account = "ci", name = "team/*", tag = "/^(sha|pr)-.+$/" }
        actions = ["pull", "push"]
        [[acl]]
        match = { account = "release", name = "team/*", tag = "v*" }
        actions = ["pull", "push"]
        [[acl]]
        match = { account = "/.+/", name = "team/*" }
        actions = ["pull"]
    "#;

    fn show(a: &Actions) -> String {
        a.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(",")
    }

    /// (caller, scope, tag: None = token time, Some("") = no tag, granted)
    fn check(toml_src: &str, cases: &[(&str, &str, Option<&str>, &str)]) {
        let acl = compile(toml_src);
        for (account, scope, tag, want) in cases {
            let who = user(account);
            let s = Scope::parse(scope).unwrap();
            let got = match tag {
                None => acl.grant(&who.subject(), &s),
                Some("") => acl.grant_at(&who.subject(), &s, None),
                Some(t) => acl.grant_at(&who.subject(), &s, Some(t)),
            };
            assert_eq!(show(&got), *want, "{account} {scope} tag {tag:?}");
        }
    }

    #[test]
    fn tag_rules_grant_push_in_tokens_and_decide_at_the_request() {
        check(
            CI_RELEASE,
            &[
                // Tokens: push on the repository, for both.
                ("ci", "repository:team/app:pull,push", None, "pull,push"),
                (
                    "release",
                    "repository:team/app:pull,push",
                    None,
                    "pull,push",
                ),
                ("alice", "repository:team/app:pull,push", None, "pull"),
                ("ci", "repository:other/app:pull,push", None, ""),
                // At the request: the tag decides.
                (
                    "ci",
                    "repository:team/app:pull,push",
                    Some("sha-abc"),
                    "pull,push",
                ),
                (
                    "ci",
                    "repository:team/app:pull,push",
                    Some("pr-12"),
                    "pull,push",
                ),
                ("ci", "repository:team/app:pull,push", Some("v1.0"), "pull"),
                (
                    "release",
                    "repository:team/app:pull,push",
                    Some("v1.0"),
                    "pull,push",
                ),
                (
                    "release",
                    "repository:team/app:pull,push",
                    Some("sha-abc"),
                    "pull",
                ),
                // No tag (PUT by digest): rules without `tag` only.
                ("ci", "repository:team/app:pull,push", Some(""), "pull"),
                ("release", "repository:team/app:pull,push", Some(""), "pull"),
                ("alice", "repository:team/app:pull", Some("v1.0"), "pull"),
            ],
        );
    }

    #[test]
    fn a_tag_rule_never_shadows_later_rules_at_token_time() {
        // A deny rule for `v*` tags must not take away CI's push token: the
        // rule without `tag` below it still decides the other tags.
        check(
            r#"
            [[acl]]
            match = { account = "ci", tag = "v*" }
            actions = []
            [[acl]]
            match = { account = "ci" }
            actions = ["pull", "push"]
            "#,
            &[
                ("ci", "repository:a:pull,push", None, "pull,push"),
                ("ci", "repository:a:pull,push", Some("v2"), ""),
                ("ci", "repository:a:pull,push", Some("latest"), "pull,push"),
                ("ci", "repository:a:pull,push", Some(""), "pull,push"),
            ],
        );
    }

    #[test]
    fn an_earlier_rule_without_tag_still_decides_first() {
        check(
            r#"
            [[acl]]
            match = { account = "ci", name = "frozen/*" }
            actions = ["pull"]
            [[acl]]
            match = { account = "ci", tag = "sha-*" }
            actions = ["pull", "push"]
            "#,
            &[
                ("ci", "repository:frozen/a:pull,push", None, "pull"),
                ("ci", "repository:frozen/a:pull,push", Some("sha-1"), "pull"),
                ("ci", "repository:b:pull,push", None, "pull,push"),
                ("ci", "repository:b:pull,push", Some("sha-1"), "pull,push"),
                ("ci", "repository:b:pull,push", Some("v1"), ""),
                ("ci", "repository:b:pull,push", Some(""), ""),
            ],
        );
    }

    #[test]
    fn tag_rules_are_about_repositories_only() {
        check(
            r#"
            [[acl]]
            match = { account = "ci", tag = "*" }
            actions = ["*"]
            "#,
            &[
                ("ci", "registry:catalog:*", None, ""),
                ("ci", "repository:a:pull", None, "pull"),
            ],
        );
    }

    #[test]
    fn tags_match_as_globs_regexes_and_placeholders() {
        check(
            r#"
            [[acl]]
            match = { tag = "${account}-*" }
            actions = ["push"]
            [[acl]]
            match = { tag = "/^\\d+\\.\\d+$/" }
            actions = ["pull"]
            "#,
            &[
                ("bob", "repository:a:push", Some("bob-1"), "push"),
                ("bob", "repository:a:push", Some("eve-1"), ""),
                ("bob", "repository:a:pull", Some("1.2"), "pull"),
                ("bob", "repository:a:pull", Some("1.2.3"), ""),
            ],
        );
    }

    #[test]
    fn configs_without_tag_rules_decide_as_before() {
        // The same table through `grant` and through `grant_at` with any tag.
        let src = r#"
            [[acl]]
            match = { account = "test" }
            actions = ["pull"]
            [[acl]]
            match = { account = "/.+/" }
            actions = ["pull", "push"]
        "#;
        let acl = compile(src);
        assert!(!acl.has_tag_rules());
        for (account, scope) in [
            ("test", "repository:a:pull,push"),
            ("alice", "repository:a:pull,push,delete"),
            ("", "repository:a:pull"),
        ] {
            let s = Scope::parse(scope).unwrap();
            let who = user(account);
            let before = acl.grant(&who.subject(), &s);
            for tag in [None, Some("v1"), Some("latest")] {
                assert_eq!(acl.grant_at(&who.subject(), &s, tag), before, "{account}");
            }
        }
        assert!(compile(CI_RELEASE).has_tag_rules());
    }

    #[test]
    fn which_requests_are_decided_with_a_tag() {
        use Endpoint::*;
        let tag = Some(Reference::parse("v1"));
        let digest = Some(Reference::parse("sha256:abc"));
        type Case<'a> = (
            Endpoint,
            Method,
            Option<Reference<'a>>,
            Option<Option<&'a str>>,
        );
        let cases: &[Case] = &[
            (Manifest, Method::PUT, tag, Some(Some("v1"))),
            (Manifest, Method::DELETE, tag, Some(Some("v1"))),
            (Manifest, Method::GET, tag, Some(Some("v1"))),
            (Manifest, Method::HEAD, tag, Some(Some("v1"))),
            (Manifest, Method::PUT, digest, Some(None)),
            (Manifest, Method::DELETE, digest, Some(None)),
            (Manifest, Method::GET, digest, None),
            (Blob, Method::DELETE, digest, Some(None)),
            (Blob, Method::GET, digest, None),
            (Upload, Method::PUT, None, None),
            (UploadStart, Method::POST, None, None),
            (Tags, Method::GET, None, None),
        ];
        for (endpoint, method, reference, want) in cases {
            assert_eq!(
                needs_tag_decision(*endpoint, method, *reference),
                *want,
                "{endpoint:?} {method} {reference:?}"
            );
        }
    }

    fn immutable(src: &str) -> Result<Immutable, AclError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Config {
            immutable: Vec<RawImmutable>,
        }
        let c: Config = toml::from_str(src).unwrap_or_else(|e| panic!("{e}"));
        Immutable::compile(&c.immutable)
    }

    const RELEASES: &str = r#"
        [[immutable]]
        name = "team/*"
        tags = ["v*", "/^\\d+\\.\\d+\\.\\d+$/"]
        except = ["release-admin"]
        [[immutable]]
        name = "/^base/.+$/"
        tags = ["stable"]
    "#;

    #[test]
    fn immutable_rules_protect_matching_tags() {
        let rules = immutable(RELEASES).unwrap();
        let cases: &[(&str, &str, &str, Option<usize>)] = &[
            ("ci", "team/app", "v1.0", Some(0)),
            ("release", "team/app", "1.4.2", Some(0)),
            ("release", "team/app", "1.4", None),
            ("ci", "team/app", "sha-abc", None),
            ("ci", "team/app/sub", "v1.0", None),
            ("ci", "other/app", "v1.0", None),
            ("release-admin", "team/app", "v1.0", None),
            ("ci", "base/debian", "stable", Some(1)),
            ("release-admin", "base/debian", "stable", Some(1)),
        ];
        for (account, repo, tag, want) in cases {
            assert_eq!(
                rules.protecting(account, repo, tag).map(|r| r.index),
                *want,
                "{account} {repo}:{tag}"
            );
        }
        assert!(rules.covers_repository("ci", "team/app"));
        assert!(!rules.covers_repository("release-admin", "team/app"));
        assert!(!rules.covers_repository("ci", "other/app"));
        assert_eq!(
            rules
                .protecting_anyone("team/app", "v2")
                .map(|r| r.to_string()),
            Some("immutable[0] (name = \"team/*\")".to_owned())
        );
        assert!(Immutable::default().is_empty());
    }

    #[test]
    fn bad_immutable_rules_name_their_key() {
        let cases = [
            (
                "[[immutable]]\nname = \"a\"\ntags = []",
                "immutable[0].tags",
            ),
            (
                "[[immutable]]\nname = \"/(/\"\ntags = [\"v*\"]",
                "immutable[0].name",
            ),
            (
                "[[immutable]]\nname = \"a\"\ntags = [\"v*\", \"/[/\"]",
                "immutable[0].tags[1]",
            ),
            (
                "[[immutable]]\nname = \"a\"\ntags = [\"v*\"]\nexcept = [\"${account}\"]",
                "immutable[0].except[0]",
            ),
        ];
        for (src, path) in cases {
            assert_eq!(immutable(src).unwrap_err().path, path, "{src}");
        }
    }

    #[test]
    fn a_bad_tag_pattern_names_its_key() {
        #[derive(serde::Deserialize)]
        struct C {
            acl: Vec<RawRule>,
        }
        let c: C = toml::from_str("[[acl]]\nmatch = { tag = \"/(/\" }\nactions = []").unwrap();
        assert_eq!(Acl::compile(&c.acl).unwrap_err().path, "acl[0].match.tag");
    }
}
