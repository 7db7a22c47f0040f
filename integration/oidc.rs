//! OpenID Connect (docs/oidc.md) against a real OpenID provider (node's
//! oidc-provider, harness/oidc.rs): workload JWTs as the registry password
//! (`[[oidc.trust]]`), key rotation and provider outages, `oidc-check`,
//! and people logging in to the web UI (`[[oidc.providers]]`).

use crate::harness::http::{self, SERVICE, jwt_parts, post_token, request_token};
use crate::harness::image::{OciImage, Skopeo};
use crate::harness::oidc::{AUDIENCE, OidcProvider};
use crate::harness::{Gate, Stack, free_port, gate, output_text, repo_root};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// A gate whose only users are `admin` and machines of the provider: the
/// `ci` entry takes the provider's workload tokens for acme's repository
/// only; `dead` trusts an issuer where nothing listens.
fn config(provider: &OidcProvider, dead_port: u16, refetch: &str) -> String {
    format!(
        r#"
[users.admin]
password = "$2y$10$BbjHSBR07iNZhnzmPGLb1OV/Mp8kjkcepRhg.xD01t06FYg6rOVYa"

[oidc]
key_refetch_interval = "{refetch}"

[[oidc.trust]]
name = "ci"
issuer = "{issuer}"
audience = "{AUDIENCE}"
account = "ci:${{claims.repository}}"
labels = {{ owner = "repository_owner", ref = "ref" }}
require = {{ repository_owner = "acme", ref = "/refs/heads/.+/" }}

[[oidc.trust]]
name = "dead"
issuer = "http://127.0.0.1:{dead_port}"
audience = "{AUDIENCE}"
account = "dead:${{claims.sub}}"

[[acl]]
match = {{ account = "admin" }}
actions = ["*"]

[[acl]]
match = {{ labels = {{ owner = "/.+/" }}, name = "${{labels:owner}}/*" }}
actions = ["pull", "push"]
comment = "a workload pushes to its owner's repositories"
"#,
        issuer = provider.issuer()
    )
}

/// What the gate grants `password` (any username) for `scopes`; `Err`
/// with the status and body when it refuses.
async fn grant(gate: &Gate, password: &str, scopes: &[&str]) -> Result<Vec<String>, (u16, String)> {
    let resp = request_token(gate, Some(("anything", password)), SERVICE, scopes, &[]).await;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err((status, resp.text().await.unwrap_or_default()));
    }
    let body = http::json_ok(resp).await;
    Ok(http::access_of(body["token"].as_str().expect("token")))
}

async fn metrics(gate: &Gate) -> String {
    http::client()
        .get(format!("{}/metrics", gate.url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

#[tokio::test]
async fn workload_jwts_log_in_through_trust_and_the_acl_decides() {
    let provider = OidcProvider::start().await;
    let stack = Stack::with_config(&config(&provider, free_port(), "10s")).await;
    let gate = &stack.gate;
    let acme = provider.workload_token("ci-acme", AUDIENCE).await;

    // GET with Basic: the labels from the claims fill ${labels:owner}.
    let granted = grant(
        gate,
        &acme,
        &[
            "repository:acme/app:pull,push",
            "repository:other/app:pull,push",
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}\n{}", gate.log()));
    assert_eq!(granted, vec!["acme/app:pull,push".to_owned()]);
    // POST grant_type=password, offline: a token, but no refresh token.
    let resp = post_token(
        gate,
        &[
            ("grant_type", "password"),
            ("service", SERVICE),
            ("username", "ci"),
            ("password", &acme),
            ("access_type", "offline"),
            ("client_id", "containerd"),
            ("scope", "repository:acme/app:pull"),
        ],
    )
    .await;
    let body = http::json_ok(resp).await;
    assert!(body.get("refresh_token").is_none(), "{body}");
    let (_, claims) = jwt_parts(body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "ci:acme/app", "{claims}");
    // GET with offline_token=true: no refresh token either.
    let resp = request_token(
        gate,
        Some(("ci", &acme)),
        SERVICE,
        &[],
        &[("offline_token", "true")],
    )
    .await;
    let body = http::json_ok(resp).await;
    assert!(body.get("refresh_token").is_none(), "{body}");

    // skopeo with the JWT as the password: acme's repository yes, another no.
    let skopeo = Skopeo::new();
    let image = OciImage::generate();
    let host = gate.addr.to_string();
    let out = skopeo
        .push(&image, &format!("{host}/acme/app:v1"), Some(("ci", &acme)))
        .await;
    assert!(out.status.success(), "skopeo push: {}", output_text(&out));
    assert!(stack.registry.has_repository("acme/app"));
    let out = skopeo
        .push(&image, &format!("{host}/other/app:v1"), Some(("ci", &acme)))
        .await;
    assert!(
        !out.status.success(),
        "pushed outside the ACL: {}",
        output_text(&out)
    );
    assert!(!stack.registry.has_repository("other/app"));

    // Metrics and audit events name the trust entry.
    let m = metrics(gate).await;
    assert!(
        counter(
            &m,
            r#"registry_gate_oidc_logins_total{kind="trust",entry="ci",outcome="ok"}"#
        ) >= 3,
        "{m}"
    );
    let log = gate.log();
    assert!(
        log.contains(r#""event":"oidc_login""#) && log.contains(r#""entry":"ci""#),
        "{log}"
    );
}

#[tokio::test]
async fn bad_workload_jwts_are_refused() {
    let provider = OidcProvider::start().await;
    // Thirty refusals from one address would be throttled (429) otherwise.
    let unthrottled = config(&provider, free_port(), "10s") + "\n[ratelimit]\nenabled = false\n";
    let stack = Stack::with_config(&unthrottled).await;
    let gate = &stack.gate;
    let good = provider.workload_token("ci-acme", AUDIENCE).await;
    let (header, claims) = jwt_parts(&good);
    assert!(grant(gate, &good, &[]).await.is_ok());
    let now = claims["iat"].as_u64().unwrap();
    let issuer = provider.issuer();
    let signed = |c: Value| provider.sign(json!({}), c);
    let base = |extra: Value| {
        let mut c = claims.clone();
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    // alg none, and HS256 keyed with the issuer's public key (the classic
    // confusion): the JWKS's RSA modulus and the whole JWKS document.
    let jwks = http::client()
        .get(format!("{issuer}/jwks"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let n: Value = serde_json::from_str(&jwks).unwrap();
    let n = URL_SAFE_NO_PAD
        .decode(n["keys"][0]["n"].as_str().unwrap())
        .unwrap();
    let payload = b64(claims.to_string().as_bytes());
    let hs = |secret: &[u8]| {
        let h = b64(json!({"alg": "HS256", "kid": header["kid"]})
            .to_string()
            .as_bytes());
        let signed = format!("{h}.{payload}");
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            signed.as_bytes(),
        );
        format!("{signed}.{}", b64(tag.as_ref()))
    };
    let none = format!(
        "{}.{payload}.",
        b64(json!({"alg": "none", "kid": header["kid"]})
            .to_string()
            .as_bytes())
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            signed(base(json!({"iat": now - 7200, "exp": now - 3600}))).await,
            "expired",
        ),
        (
            "wrong audience",
            provider
                .workload_token("ci-acme", "https://elsewhere.test")
                .await,
            "audience",
        ),
        (
            "unmet require",
            provider.workload_token("ci-other", AUDIENCE).await,
            "require_unmet",
        ),
        (
            "tampered",
            http::with_claims(
                &good,
                &base(json!({"repository_owner": "acme", "repository": "acme/admin"})),
            ),
            "signature",
        ),
        (
            "bad signature",
            http::with_bad_signature(&good),
            "signature",
        ),
        ("alg none", none, "algorithm"),
        ("HS256 with the modulus", hs(&n), "algorithm"),
        ("HS256 with the JWKS", hs(jwks.as_bytes()), "algorithm"),
        (
            "unknown kid",
            provider
                .sign(json!({"kid": "made-up"}), claims.clone())
                .await,
            "unknown_key",
        ),
        (
            "not yet valid",
            signed(base(json!({"nbf": now + 3600}))).await,
            "not_yet_valid",
        ),
    ];
    for (what, token, reason) in &cases {
        let got = grant(gate, token, &["repository:acme/app:pull"]).await;
        assert!(matches!(got, Err((401, _))), "{what}: {got:?}");
        let m = metrics(gate).await;
        let series = format!(
            r#"registry_gate_oidc_logins_total{{kind="trust",entry="ci",outcome="{reason}"}}"#
        );
        assert!(counter(&m, &series) >= 1, "{what}: no {series}");
    }
    // An issuer no trust entry names: an ordinary (wrong) password.
    let untrusted = signed(base(json!({"iss": "http://127.0.0.1:1/untrusted"}))).await;
    let got = grant(gate, &untrusted, &[]).await;
    assert!(matches!(got, Err((401, _))), "untrusted issuer: {got:?}");

    // A flood of made-up kids costs the issuer at most one more fetch per
    // key_refetch_interval (10s here).
    let fetches = |m: &str| {
        counter(
            m,
            &format!(r#"registry_gate_oidc_key_fetches_total{{issuer="{issuer}",outcome="ok"}}"#),
        )
    };
    let before = fetches(&metrics(gate).await);
    for i in 0..20 {
        let t = provider
            .sign(json!({"kid": format!("bogus-{i}")}), claims.clone())
            .await;
        assert!(grant(gate, &t, &[]).await.is_err());
    }
    let after = fetches(&metrics(gate).await);
    assert!(
        after - before <= 1,
        "{before} -> {after} key fetches for 20 bogus kids"
    );
    assert!(
        grant(gate, &good, &[]).await.is_ok(),
        "the good token after the flood"
    );
}

#[tokio::test]
async fn key_rotation_is_picked_up_and_cached_keys_outlive_the_provider() {
    let mut provider = OidcProvider::start().await;
    let dead_port = free_port();
    let stack = Stack::with_config(&config(&provider, dead_port, "100ms")).await;
    let gate = &stack.gate;
    let first = provider.workload_token("ci-acme", AUDIENCE).await;
    let old_kid = provider.kid();
    assert!(grant(gate, &first, &[]).await.is_ok());

    // The provider rotates its key: a token with the new kid is accepted,
    // the gate not restarted (one refetch on the unknown kid).
    provider.restart_with_new_key().await;
    assert_ne!(provider.kid(), old_kid);
    let second = provider.workload_token("ci-acme", AUDIENCE).await;
    assert_eq!(jwt_parts(&second).0["kid"], provider.kid());
    let pid = gate.pid();
    grant(gate, &second, &["repository:acme/app:pull"])
        .await
        .unwrap_or_else(|e| panic!("after rotation: {e:?}\n{}", gate.log()));
    assert_eq!(gate.pid(), pid);

    // The provider goes down: the cached key still verifies.
    provider.stop();
    let granted = grant(gate, &second, &["repository:acme/app:pull"]).await;
    assert_eq!(granted, Ok(vec!["acme/app:pull".to_owned()]));
    // An issuer never reached cannot decide: 503, saying which entry.
    let claims = jwt_parts(&second).1;
    let mut dead = claims.clone();
    dead["iss"] = json!(format!("http://127.0.0.1:{dead_port}"));
    let payload = b64(dead.to_string().as_bytes());
    let parts: Vec<&str> = second.split('.').collect();
    let for_dead = format!("{}.{payload}.{}", parts[0], parts[2]);
    let got = grant(gate, &for_dead, &[]).await;
    let Err((503, body)) = &got else {
        panic!("new issuer while down: {got:?}");
    };
    assert!(
        body.contains("UNAVAILABLE") && body.contains("\\\"dead\\\""),
        "{body}"
    );
}

#[tokio::test]
async fn oidc_check_shows_claims_mapping_and_require() {
    let provider = OidcProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gate.toml");
    std::fs::write(&path, config(&provider, free_port(), "10s")).unwrap();
    let path = path.to_str().unwrap();
    let run = |args: Vec<String>, stdin: String| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        gate::cli(&args, &[], &stdin, &repo_root()).await
    };
    let args = |rest: &[&str]| {
        let mut v = vec![
            "--config".to_owned(),
            path.to_owned(),
            "oidc-check".to_owned(),
        ];
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    let out = run(args(&["ci"]), String::new()).await;
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("discovery: ok") && text.contains(&provider.kid()),
        "{text}"
    );

    let acme = provider.workload_token("ci-acme", AUDIENCE).await;
    let out = run(args(&["ci", "--token-stdin"]), acme).await;
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    for want in [
        "account:   ci:acme/app",
        "\"repository_owner\": \"acme\"",
        "require:   repository_owner = \"acme\": ok",
        "would log in",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    let other = provider.workload_token("ci-other", AUDIENCE).await;
    let out = run(args(&["ci", "--token-stdin"]), other).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("require:   repository_owner = \"acme\": NOT MET"),
        "{text}"
    );
    let out = run(args(&["dead"]), String::new()).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let out = run(args(&["nope"]), String::new()).await;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
}

// ------------------------------------------------------------ people (UI)

/// The provider's people log in to the UI as `corp/NAME`; the `groups`
/// claim is a label, and `developers` may push and pull `dev/*`.
fn ui_config(provider: &OidcProvider, secret_file: &std::path::Path) -> String {
    format!(
        r#"
[users.admin]
password = "$2y$10$BbjHSBR07iNZhnzmPGLb1OV/Mp8kjkcepRhg.xD01t06FYg6rOVYa"

[[oidc.providers]]
name = "corp"
issuer = "{issuer}"
client_id = "registry-gate"
client_secret_file = "{secret}"
scopes = ["openid", "profile", "email", "groups"]
account_claim = "preferred_username"
labels = {{ groups = "groups" }}

[[acl]]
match = {{ account = "admin" }}
actions = ["*"]

[[acl]]
match = {{ labels = {{ groups = "developers" }}, name = "dev/*" }}
actions = ["pull", "push"]
comment = "the developers group of the provider"
"#,
        issuer = provider.issuer(),
        secret = secret_file.display()
    )
}

/// "Log in with corp", through the provider's own login and consent forms.
async fn sso_login(b: &crate::harness::browser::Browser, gate: &Gate, person: &str) {
    b.goto(&format!("{}/ui/login", gate.url())).await;
    b.click_to_page("#sso-corp").await;
    b.wait_url("the provider's login form", |u| u.contains("/interaction/"))
        .await;
    b.fill("input[name=login]", person).await;
    b.fill("input[name=password]", "any").await;
    b.click_to_page("button[type=submit]").await;
    // The provider asks for consent the first time.
    if b.exists("input[name=prompt][value=consent]").await {
        b.click_to_page("button[type=submit]").await;
    }
    b.wait_url("back at the gate", |u| u.ends_with("/ui/"))
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !b.exists("#account").await {
        assert!(
            std::time::Instant::now() < deadline,
            "not signed in:\n{}",
            gate.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(b.text("#account").await, format!("corp/{person}"));
}

#[tokio::test]
async fn ui_sso_login_groups_drive_the_acl_and_logout() {
    let provider = OidcProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("oidc_secret.txt");
    std::fs::write(&secret, "registry-gate-secret\n").unwrap();
    let stack = Stack::with_config(&ui_config(&provider, &secret)).await;
    let gate = &stack.gate;
    let skopeo = Skopeo::new();
    for repo in ["dev/app:1", "secret/keys:1"] {
        let out = skopeo
            .push(
                &OciImage::generate(),
                &format!("{}/{repo}", gate.addr),
                Some(("admin", "badmin")),
            )
            .await;
        assert!(out.status.success(), "push {repo}: {}", output_text(&out));
    }
    let b = crate::harness::browser::Browser::start().await;
    b.goto(&format!("{}/ui/login", gate.url())).await;
    assert_eq!(b.text("#sso-corp").await, "Log in with corp");

    // alice is in the developers group: she sees dev/app, not secret/keys.
    sso_login(&b, gate, "alice").await;
    b.goto(&format!("{}/ui/", gate.url())).await;
    let names = b.attrs("#repositories a[data-repo]", "data-repo").await;
    assert_eq!(names, vec!["dev/app".to_owned()], "{}", gate.log());
    let log = gate.log();
    assert!(
        log.contains(
            r#""event":"oidc_login","kind":"provider","entry":"corp","account":"corp/alice""#
        ),
        "{log}"
    );

    // A personal access token owned by the SSO account works with docker
    // login semantics: its owner is looked up in the store at each use.
    let pat = gate
        .create_token(&[
            "--owner",
            "corp/alice",
            "--name",
            "laptop",
            "--scope",
            "repository:dev/*:pull,push",
        ])
        .await;
    let granted = grant_as(
        gate,
        ("corp/alice", &pat),
        &["repository:dev/app:pull", "repository:secret/keys:pull"],
    )
    .await;
    assert_eq!(granted, vec!["dev/app:pull".to_owned()]);
    // Her password at the provider is not a password here.
    let resp = request_token(gate, Some(("corp/alice", "any")), SERVICE, &[], &[]).await;
    assert_eq!(resp.status(), 401);

    // Logout ends the session.
    b.click_to_page("#logout").await;
    b.wait_url("the logged-out list", |u| u.ends_with("/ui/"))
        .await;
    assert!(b.exists("#login-link").await);
    assert!(!b.exists("#account").await);

    // bob is in no group: nothing. (A fresh browser: the gate's logout
    // does not end the session at the provider, which would log alice
    // straight in again; docs/oidc.md says so.)
    b.close().await;
    let b = crate::harness::browser::Browser::start().await;
    sso_login(&b, gate, "bob").await;
    b.goto(&format!("{}/ui/", gate.url())).await;
    assert!(
        b.attrs("#repositories a[data-repo]", "data-repo")
            .await
            .is_empty()
    );

    // A callback without the pending login's cookie (or a forged state)
    // starts nothing.
    let resp = http::client()
        .get(format!("{}/ui/oidc/callback?code=x&state=y", gate.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    b.close().await;
}

async fn grant_as(gate: &Gate, creds: (&str, &str), scopes: &[&str]) -> Vec<String> {
    let resp = request_token(gate, Some(creds), SERVICE, scopes, &[]).await;
    let body = http::json_ok(resp).await;
    let (_, claims) = jwt_parts(body["token"].as_str().expect("token"));
    claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let actions: Vec<&str> = a["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            format!("{}:{}", a["name"].as_str().unwrap(), actions.join(","))
        })
        .collect()
}

#[tokio::test]
async fn docker_pushes_with_a_workload_jwt_where_the_acl_allows() {
    let provider = OidcProvider::start().await;
    let text = config(&provider, free_port(), "10s");
    let (stack, docker) = tokio::join!(
        Stack::with_config(&text),
        crate::harness::docker::Docker::start()
    );
    let host = stack.gate.addr.to_string();
    let jwt = provider.workload_token("ci-acme", AUDIENCE).await;
    let out = docker
        .run(
            &["login", "--username", "ci", "--password-stdin", &host],
            Some(&format!("{jwt}\n")),
        )
        .await;
    assert!(out.status.success(), "docker login: {}", output_text(&out));
    for (repo, allowed) in [("acme/docker-app", true), ("other/docker-app", false)] {
        let reference = format!("{host}/{repo}:v1");
        docker.import_random(&reference).await;
        let out = docker.run(&["push", &reference], None).await;
        assert_eq!(
            out.status.success(),
            allowed,
            "docker push {repo}: {}",
            output_text(&out)
        );
        assert_eq!(stack.registry.has_repository(repo), allowed, "{repo}");
    }
}
