//! Decision tables for the ACL, written as the TOML users write.

use super::*;
use crate::scope::Action::*;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    acl: Vec<RawRule>,
}

fn parse(toml_src: &str) -> Vec<RawRule> {
    toml::from_str::<Config>(toml_src)
        .unwrap_or_else(|e| panic!("{e}"))
        .acl
}

fn compile(toml_src: &str) -> Acl {
    Acl::compile(&parse(toml_src)).unwrap_or_else(|e| panic!("{e}"))
}

/// An owned caller, so that tables can build [`Subject`]s from it.
#[derive(Clone)]
struct Who {
    account: String,
    labels: Labels,
    ip: Option<IpAddr>,
    service: String,
}

fn user(account: &str) -> Who {
    Who {
        account: account.into(),
        labels: Labels::new(),
        ip: None,
        service: "registry.example".into(),
    }
}

fn anon() -> Who {
    user("")
}

impl Who {
    fn ip(mut self, ip: &str) -> Self {
        self.ip = Some(ip.parse().unwrap());
        self
    }
    fn label(mut self, key: &str, values: &[&str]) -> Self {
        self.labels
            .insert(key.into(), values.iter().map(|v| v.to_string()).collect());
        self
    }
    fn service(mut self, s: &str) -> Self {
        self.service = s.into();
        self
    }
    fn subject(&self) -> Subject<'_> {
        Subject {
            account: &self.account,
            labels: &self.labels,
            ip: self.ip,
            service: &self.service,
        }
    }
}

fn show(actions: &Actions) -> String {
    actions
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Each case: caller, requested scope, granted actions (`""` = nothing).
fn check(acl: &Acl, cases: &[(Who, &str, &str)]) {
    for (who, scope, want) in cases {
        let requested = Scope::parse(scope).unwrap();
        let got = acl.grant(&who.subject(), &requested);
        assert_eq!(
            show(&got),
            *want,
            "account {:?} labels {:?} ip {:?} service {:?} asking {scope}",
            who.account,
            who.labels,
            who.ip,
            who.service
        );
    }
}

const DOCKER_AUTH_EXAMPLE: &str = r#"
[[acl]]
match = { account = "admin" }
actions = ["*"]
comment = "Admin has full access to everything."

[[acl]]
match = { account = "test" }
actions = ["pull"]

[[acl]]
match = { account = "/.+/" }
actions = ["pull", "push"]
comment = "Any other authenticated user"
"#;

#[test]
fn first_match_decides_and_default_denies() {
    let acl = compile(DOCKER_AUTH_EXAMPLE);
    check(
        &acl,
        &[
            (
                user("admin"),
                "repository:a/b:pull,push,delete",
                "pull,push,delete",
            ),
            (user("admin"), "registry:catalog:*", "*"),
            // `test` also matches `/.+/`, but the earlier rule decides.
            (user("test"), "repository:a:pull,push", "pull"),
            (user("alice"), "repository:a:pull,push,delete", "pull,push"),
            (user("alice"), "registry:catalog:*", ""),
            // Anonymous: `/.+/` needs one character, so no rule matches.
            (anon(), "repository:a:pull", ""),
            (user("alice"), "repository:a:", ""),
        ],
    );
    assert!(Acl::default().is_empty());
    check(&Acl::default(), &[(user("admin"), "repository:a:pull", "")]);
}

#[test]
fn explicit_empty_actions_deny_and_stop() {
    let acl = compile(
        r#"
        [[acl]]
        match = { name = "secret/*" }
        actions = []
        [[acl]]
        match = {}
        actions = ["pull"]
        [[acl]]
        actions = ["push"]
    "#,
    );
    check(
        &acl,
        &[
            (user("admin"), "repository:secret/x:pull", ""),
            (user("admin"), "repository:public/x:pull,push", "pull"),
            (anon(), "repository:secret/x/y:pull", "pull"),
        ],
    );
}

#[test]
fn actions_intersect_and_star_covers_everything() {
    let acl = compile(
        r#"
        [[acl]]
        match = { account = "ci" }
        actions = ["pull", "delete"]
        [[acl]]
        match = { account = "ops" }
        actions = ["pull", "*"]
        [[acl]]
        match = { account = "cat", type = "registry" }
        actions = ["pull"]
    "#,
    );
    check(
        &acl,
        &[
            (user("ci"), "repository:a:pull,push", "pull"),
            (user("ci"), "repository:a:delete,push", "delete"),
            (user("ci"), "repository:a:push", ""),
            (
                user("ops"),
                "repository:a:pull,push,delete",
                "pull,push,delete",
            ),
            (user("ops"), "registry:catalog:*", "*"),
            // The literal `*` action is only granted by `*`.
            (user("cat"), "registry:catalog:*", ""),
        ],
    );
}

#[test]
fn globs_and_regexes() {
    let acl = compile(
        r#"
        [[acl]]
        match = { account = "g", name = "library/*" }
        actions = ["pull"]
        [[acl]]
        match = { account = "q", name = "app-?" }
        actions = ["pull"]
        [[acl]]
        match = { account = "r", name = "/ab/" }
        actions = ["pull"]
        [[acl]]
        match = { account = "alt", name = "/(foo|bar)/.+/" }
        actions = ["pull"]
        [[acl]]
        match = { account = "star" }
        actions = ["push"]
        [[acl]]
        match = { account = "*" }
        actions = ["pull"]
    "#,
    );
    check(
        &acl,
        &[
            (user("g"), "repository:library/nginx:pull", "pull"),
            (user("g"), "repository:library/nginx/sub:pull", "pull"), // falls to `*`
            (user("q"), "repository:app-1:push", ""),                 // falls to `*`
            (user("star"), "repository:app-1:push", "push"),
            (user("r"), "repository:ab:pull", "pull"),
            (user("alt"), "repository:bar/x:pull", "pull"),
            // `*` on the account matches anonymous callers too, as in docker_auth.
            (anon(), "repository:x:pull", "pull"),
        ],
    );
    // Same rules without the catch-all, to see the glob and regex misses.
    let strict = compile(
        r#"
        [[acl]]
        match = { name = "library/*" }
        actions = ["pull"]
        [[acl]]
        match = { name = "app-?" }
        actions = ["push"]
        [[acl]]
        match = { name = "/ab/" }
        actions = ["delete"]
    "#,
    );
    check(
        &strict,
        &[
            (user("u"), "repository:library/a:pull", "pull"),
            (user("u"), "repository:library/a/b:pull", ""),
            (user("u"), "repository:libraryx:pull", ""),
            (user("u"), "repository:app-1:push", "push"),
            (user("u"), "repository:app-12:push", ""),
            (user("u"), "repository:app-:push", ""),
            (user("u"), "repository:ab:delete", "delete"),
            (user("u"), "repository:xaby:delete", ""),
            (user("u"), "repository:abx:delete", ""),
        ],
    );
}

#[test]
fn placeholders_expand_literally() {
    let acl = compile(
        r#"
        [[acl]]
        match = { account = "/.+/", name = "${account}/*" }
        actions = ["pull", "push"]
        [[acl]]
        match = { name = "${labels:team}/*" }
        actions = ["pull"]
        [[acl]]
        match = { name = "/svc-${service}-.*/" }
        actions = ["delete"]
    "#,
    );
    let team = user("bob").label("team", &["red", "blue"]);
    check(
        &acl,
        &[
            (user("alice"), "repository:alice/app:pull,push", "pull,push"),
            (user("alice"), "repository:bob/app:pull,push", ""),
            (user("alice"), "repository:alice/app/x:push", ""),
            // Substituted values are literal: `a*` does not become a glob.
            (user("a*"), "repository:ab/app:push", ""),
            (user("a*"), "repository:a*/app:push", "push"),
            // Anonymous callers own no namespace (`/.+/` on the account).
            (anon(), "repository:/app:push", ""),
            (team.clone(), "repository:red/x:pull,push", "pull"),
            (team.clone(), "repository:blue/x:pull", "pull"),
            (team.clone(), "repository:green/x:pull", ""),
            (user("carol"), "repository:red/x:pull", ""),
            (
                user("u").service("reg.io"),
                "repository:svc-reg.io-1:delete",
                "delete",
            ),
            // `.` in the service name is escaped, not "any character".
            (
                user("u").service("reg.io"),
                "repository:svc-regxio-1:delete",
                "",
            ),
        ],
    );
}

#[test]
fn labels_must_all_match() {
    let acl = compile(
        r#"
        [[acl]]
        match = { labels = { group = "admins", site = "eu-*" } }
        actions = ["*"]
        [[acl]]
        match = { labels = { group = "/dev(s|elopers)/" } }
        actions = ["pull"]
        [[acl]]
        match = { labels = { own = "${account}" } }
        actions = ["push"]
    "#,
    );
    check(
        &acl,
        &[
            (
                user("u")
                    .label("group", &["devs", "admins"])
                    .label("site", &["us-1", "eu-2"]),
                "repository:a:pull,push",
                "pull,push",
            ),
            // Missing `site`: the first rule does not match.
            (
                user("u").label("group", &["admins", "devs"]),
                "repository:a:pull,push",
                "pull",
            ),
            (
                user("u").label("group", &["developers"]),
                "repository:a:pull",
                "pull",
            ),
            (
                user("u").label("group", &["devsx"]),
                "repository:a:pull",
                "",
            ),
            (user("u").label("group", &[]), "repository:a:pull", ""),
            (user("u"), "repository:a:pull", ""),
            (
                user("u").label("own", &["x", "u"]),
                "repository:a:push",
                "push",
            ),
            (user("u").label("own", &["x"]), "repository:a:push", ""),
        ],
    );
}

#[test]
fn ip_service_type_and_anonymous() {
    let acl = compile(
        r#"
        [[acl]]
        match = { ip = "10.0.0.0/8", account = "" }
        actions = ["pull"]
        [[acl]]
        match = { ip = "2001:db8::/32" }
        actions = ["push"]
        [[acl]]
        match = { ip = "192.0.2.7" }
        actions = ["delete"]
        [[acl]]
        match = { service = "internal", type = "repository" }
        actions = ["pull", "push"]
        [[acl]]
        match = { type = "registry", name = "catalog", account = "/.+/" }
        actions = ["*"]
        [[acl]]
        match = { account = "" }
        actions = ["pull"]
        comment = "anonymous read everywhere else"
    "#,
    );
    check(
        &acl,
        &[
            (anon().ip("10.1.2.3"), "repository:a:pull,push", "pull"),
            (
                anon().ip("::ffff:10.1.2.3"),
                "repository:a:pull,push",
                "pull",
            ),
            // `account = ""` is only anonymous: bob falls through to nothing.
            (user("bob").ip("10.1.2.3"), "repository:a:pull", ""),
            (user("bob").ip("2001:db8::5"), "repository:a:push", "push"),
            (user("bob").ip("2001:db9::5"), "repository:a:push", ""),
            (user("bob").ip("192.0.2.7"), "repository:a:delete", "delete"),
            (
                user("bob").ip("::ffff:192.0.2.7"),
                "repository:a:delete",
                "delete",
            ),
            (user("bob").ip("192.0.2.8"), "repository:a:delete", ""),
            (user("bob"), "repository:a:delete", ""),
            (user("bob").service("internal"), "repository:a:push", "push"),
            (user("bob").service("internal"), "registry:catalog:*", "*"),
            (user("bob").service("internal"), "registry:other:*", ""),
            (anon(), "registry:catalog:*", ""),
            (anon(), "repository:a:pull,push", "pull"),
        ],
    );
}

#[test]
fn grant_all_and_allows() {
    let acl = compile(DOCKER_AUTH_EXAMPLE);
    let test = user("test");
    let requested = Scope::parse_list(
        "repository:a:pull,push repository:b:push registry:catalog:* repository:c:pull",
    )
    .unwrap();
    assert_eq!(
        acl.grant_all(&test.subject(), &requested),
        vec![
            Scope::repository("a", [Pull]),
            Scope::repository("c", [Pull])
        ]
    );
    assert!(acl.grant_all(&anon().subject(), &requested).is_empty());

    let cases: &[(&str, &str, bool)] = &[
        ("test", "repository:a:pull", true),
        ("test", "repository:a:pull,push", false),
        ("alice", "repository:a:pull,push", true),
        ("admin", "registry:catalog:*", true),
        ("alice", "registry:catalog:*", false),
        ("", "repository:a:pull", false),
        // Asking for nothing is never "allowed".
        ("admin", "repository:a:", false),
    ];
    for &(account, scope, want) in cases {
        let who = user(account);
        let s = Scope::parse(scope).unwrap();
        assert_eq!(acl.allows(&who.subject(), &s), want, "{account:?} {scope}");
    }
}

#[test]
fn compile_errors_name_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"[[acl]]
               actions = ["pull", "pul"]"#,
            "acl[0].actions[1]",
            "unknown action \"pul\"",
        ),
        (
            r#"[[acl]]
               match = { ip = "10.0.0.0/33" }
               actions = []"#,
            "acl[0].match.ip",
            "invalid address or CIDR",
        ),
        (
            r#"[[acl]]
               actions = []
               [[acl]]
               actions = []
               [[acl]]
               actions = []
               [[acl]]
               match = { name = "/(unclosed/" }
               actions = ["pull"]"#,
            "acl[3].match.name",
            "invalid regex",
        ),
        (
            r#"[[acl]]
               match = { account = "${acount}" }
               actions = []"#,
            "acl[0].match.account",
            "unknown placeholder",
        ),
        (
            r#"[[acl]]
               match = { type = "/[/" }
               actions = []"#,
            "acl[0].match.type",
            "invalid regex",
        ),
        (
            r#"[[acl]]
               match = { service = "${service" }
               actions = []"#,
            "acl[0].match.service",
            "unterminated placeholder",
        ),
        (
            r#"[[acl]]
               match = { labels = { team = "/(/" } }
               actions = []"#,
            "acl[0].match.labels.team",
            "invalid regex",
        ),
        (
            r#"[[acl]]
               match = { labels = { "a b" = "/(/" } }
               actions = []"#,
            "acl[0].match.labels.\"a b\"",
            "invalid regex",
        ),
    ];
    for (src, path, message) in cases {
        let err = Acl::compile(&parse(src)).expect_err(src);
        assert_eq!(err.path, *path, "{err}");
        assert!(err.message.contains(message), "{err}");
        assert!(err.to_string().starts_with(&format!("{path}: ")), "{err}");
    }
}

#[test]
fn parses_realistic_config() {
    let rules = parse(
        r#"
        [[acl]]
        match = { account = "admin" }
        actions = ["*"]
        comment = "admins do everything"

        [[acl]]
        match = { account = "/.+/", name = "${account}/*" }
        actions = ["pull", "push", "delete"]

        [[acl]]
        match = { labels = { team = "*" }, name = "${labels:team}/*", service = "registry.example" }
        actions = ["pull", "push"]

        [[acl]]
        match = { ip = "10.0.0.0/8", type = "repository" }
        actions = ["pull"]

        [[acl]]
        actions = ["pull"]
        [acl.match]
        account = ""
        name = "public/*"
        [acl.match.labels]
        tier = "free"

        # nothing else: deny by default
        "#,
    );
    assert_eq!(rules.len(), 5);
    assert_eq!(rules[0].comment.as_deref(), Some("admins do everything"));
    assert_eq!(rules[2].matches.labels["team"], "*");
    assert_eq!(
        rules[3].matches.resource_type.as_deref(),
        Some("repository")
    );
    assert_eq!(
        rules[4].matches,
        RawMatch {
            account: Some(String::new()),
            name: Some("public/*".into()),
            labels: [("tier".to_string(), "free".to_string())].into(),
            ..RawMatch::default()
        }
    );
    let acl = Acl::compile(&rules).unwrap();
    assert_eq!(acl.len(), 5);
    check(
        &acl,
        &[
            (user("admin"), "repository:x:delete", "delete"),
            (user("eve"), "repository:eve/x:delete", "delete"),
            (
                user("kim").label("team", &["ops"]),
                "repository:ops/x:push,delete",
                "push",
            ),
            (
                user("kim").label("team", &["ops"]).service("other"),
                "repository:ops/x:push",
                "",
            ),
            (
                user("kim").ip("10.2.3.4"),
                "repository:ops/x:pull,push",
                "pull",
            ),
            (
                anon().label("tier", &["free"]),
                "repository:public/x:pull",
                "pull",
            ),
            (anon(), "repository:public/x:pull", ""),
        ],
    );
}

#[test]
fn unknown_keys_are_rejected() {
    let cases = [
        // Misspelt match field.
        r#"[[acl]]
           match = { acount = "x" }
           actions = []"#,
        // Misspelt rule key.
        r#"[[acl]]
           match = {}
           action = ["pull"]"#,
        // Extra rule key next to valid ones.
        r#"[[acl]]
           actions = ["pull"]
           priority = 1"#,
        // Missing `actions`: a rule must say what it grants, even `[]`.
        r#"[[acl]]
           match = { account = "x" }"#,
        // Labels map to one pattern, not a list.
        r#"[[acl]]
           match = { labels = { team = ["a", "b"] } }
           actions = []"#,
    ];
    for src in cases {
        assert!(toml::from_str::<Config>(src).is_err(), "accepted: {src}");
    }
}
