//! The core issue: token authentication in front of an open registry.
//! Every test runs its own upstream registry and gate (example config unless
//! said otherwise: admin/badmin may do anything, test/123 may only pull,
//! anonymous gets nothing).

use crate::harness::gate::{self, example_config, example_config_path};
use crate::harness::http::{
    self, SERVICE, assert_denied, bearer, challenge, json_ok, jwt_parts, post_token, raw_request,
    request_token, token, token_response, with_bad_signature, with_claims,
};
use crate::harness::image::{OciImage, Skopeo, push_http};
use crate::harness::{Gate, Registry, Stack, repo_root};
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("admin", "badmin");
const TEST: (&str, &str) = ("test", "123");

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The actions the token's claims grant on `type:name` (empty if none).
fn granted(claims: &Value, kind: &str, name: &str) -> Vec<String> {
    claims["access"]
        .as_array()
        .unwrap_or_else(|| panic!("no access array in {claims}"))
        .iter()
        .filter(|a| a["type"] == kind && a["name"] == name)
        .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
        .map(|action| action.as_str().expect("action is a string").to_string())
        .collect()
}

async fn tags_list(gate: &Gate, repo: &str, token: &str) -> reqwest::Response {
    bearer(
        Method::GET,
        &format!("{}/v2/{repo}/tags/list", gate.url()),
        token,
    )
    .await
}

/// Asserts `GET /v2/REPO/tags/list` with `token` is forwarded and lists `tag`.
async fn assert_pulls(gate: &Gate, repo: &str, token: &str, tag: &str) {
    let body = json_ok(tags_list(gate, repo, token).await).await;
    assert_eq!(body["name"], repo, "{body}");
    assert!(
        body["tags"]
            .as_array()
            .is_some_and(|t| t.contains(&json!(tag))),
        "{body}"
    );
}

fn combined_output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The upstream requests that change something (uploads, manifests, deletes).
fn writes(requests: &[String]) -> Vec<&String> {
    requests
        .iter()
        .filter(|r| {
            ["POST ", "PUT ", "PATCH ", "DELETE "]
                .iter()
                .any(|m| r.starts_with(m))
        })
        .collect()
}

#[tokio::test]
async fn health_and_base_endpoint_challenge() {
    let stack = Stack::start().await;
    let client = http::client();
    let health = client
        .get(format!("{}/healthz", stack.gate.url()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    let resp = client
        .get(format!("{}/v2/", stack.gate.url()))
        .send()
        .await
        .expect("GET /v2/");
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    let params = challenge(&resp);
    assert_eq!(params["realm"], format!("{}/auth", stack.gate.url()));
    assert_eq!(params["service"], SERVICE);
    assert!(!params.contains_key("scope"), "{params:?}");
    let body: Value = resp.json().await.expect("JSON error body");
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED", "{body}");

    // What `docker login` does next: a token without scope opens /v2/.
    let token = token(&stack.gate, Some(ADMIN), &[]).await;
    let resp = bearer(Method::GET, &format!("{}/v2/", stack.gate.url()), &token).await;
    assert_eq!(resp.status(), 200);
}

/// The reference README's manual flow, driven by the challenge alone.
#[tokio::test]
async fn manual_token_flow_lists_catalog() {
    let stack = Stack::start().await;
    stack.registry.seed("anyuser/busybox", "latest").await;
    let client = http::client();
    let catalog = format!("{}/v2/_catalog", stack.gate.url());

    let resp = client.get(&catalog).send().await.expect("catalog");
    assert_eq!(resp.status(), 401);
    let params = challenge(&resp);
    assert_eq!(params["realm"], format!("{}/auth", stack.gate.url()));
    assert_eq!(params["service"], SERVICE);
    assert_eq!(params["scope"], "registry:catalog:*");

    let resp = client
        .get(&params["realm"])
        .query(&[("service", &params["service"]), ("scope", &params["scope"])])
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("token");
    let token = json_ok(resp).await["token"]
        .as_str()
        .expect("token")
        .to_string();

    let body = json_ok(bearer(Method::GET, &catalog, &token).await).await;
    let repos = body["repositories"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    assert!(repos.contains(&json!("anyuser/busybox")), "{body}");
}

#[tokio::test]
async fn skopeo_push_as_admin_then_pull_as_test_keeps_digest() {
    let stack = Stack::start().await;
    let skopeo = Skopeo::new();
    let image = OciImage::generate();
    let reference = format!("{}/team/app:1.0", stack.gate.addr);

    let out = skopeo.push(&image, &reference, Some(ADMIN)).await;
    assert!(out.status.success(), "push: {}", combined_output(&out));
    assert!(stack.registry.has_repository("team/app"));

    assert_eq!(
        skopeo.inspect_digest(&reference, Some(TEST)).await,
        image.manifest_digest
    );
    assert_eq!(
        skopeo.inspect_raw(&reference, Some(TEST)).await,
        image.manifest
    );
    let (out, pulled) = skopeo.pull(&reference, Some(TEST)).await;
    assert!(out.status.success(), "pull: {}", combined_output(&out));
    assert_eq!(pulled.digest(), image.manifest_digest);
}

#[tokio::test]
async fn push_as_pull_only_user_is_refused() {
    let stack = Stack::start().await;
    let skopeo = Skopeo::new();
    let image = OciImage::generate();

    let out = skopeo
        .push(
            &image,
            &format!("{}/team/app:1.0", stack.gate.addr),
            Some(TEST),
        )
        .await;
    assert!(
        !out.status.success(),
        "push as test succeeded: {}",
        combined_output(&out)
    );
    let said = combined_output(&out).to_lowercase();
    assert!(
        ["unauthorized", "denied", "401"]
            .iter()
            .any(|w| said.contains(w)),
        "skopeo failed for another reason: {said}"
    );
    assert!(!stack.registry.has_repository("team/app"));
    let seen = stack.registry.requests_settled().await;
    assert!(
        writes(&seen).is_empty(),
        "writes reached the upstream: {seen:#?}"
    );
}

#[tokio::test]
async fn anonymous_token_grants_nothing() {
    let stack = Stack::start().await;
    stack.registry.seed("team/app", "1.0").await;

    let resp = http::client()
        .get(format!("{}/v2/team/app/tags/list", stack.gate.url()))
        .send()
        .await
        .expect("tags");
    assert_eq!(resp.status(), 401);
    assert_eq!(challenge(&resp)["scope"], "repository:team/app:pull");

    let body = token_response(&stack.gate, None, &["repository:team/app:pull"]).await;
    let token = body["token"].as_str().expect("token");
    assert_eq!(jwt_parts(token).1["access"], json!([]));
    assert_denied(
        &tags_list(&stack.gate, "team/app", token).await,
        "insufficient_scope",
    );
}

#[tokio::test]
async fn token_for_one_repository_is_refused_on_another() {
    let stack = Stack::start().await;
    stack.registry.seed("team/a", "1.0").await;
    stack.registry.seed("team/b", "1.0").await;

    let token = token(&stack.gate, Some(ADMIN), &["repository:team/a:pull"]).await;
    assert_pulls(&stack.gate, "team/a", &token, "1.0").await;
    assert_denied(
        &tags_list(&stack.gate, "team/b", &token).await,
        "insufficient_scope",
    );
}

#[tokio::test]
async fn token_grants_intersection_of_asked_and_allowed() {
    let registry = Registry::start().await;
    let gate = Gate::start(&registry.url(), &[("REGISTRY_GATE_TOKEN__LIFETIME", "1m")]).await;
    let scopes = [
        "repository:team/app:pull,push",
        "repository:team/other:delete",
    ];
    let body = token_response(&gate, Some(TEST), &scopes).await;
    let token = body["token"].as_str().expect("token");
    assert_eq!(body["access_token"], body["token"], "{body}");
    assert_eq!(body["expires_in"], 60, "{body}");
    assert!(body["issued_at"].is_string(), "{body}");

    let (header, claims) = jwt_parts(token);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(claims["iss"], "registry-gate");
    assert_eq!(claims["sub"], "test");
    assert!(
        claims["aud"] == SERVICE || claims["aud"] == json!([SERVICE]),
        "{claims}"
    );
    let (iat, nbf, exp) = (
        claims["iat"].as_u64(),
        claims["nbf"].as_u64(),
        claims["exp"].as_u64(),
    );
    let (iat, nbf, exp) = (iat.expect("iat"), nbf.expect("nbf"), exp.expect("exp"));
    assert!(
        nbf <= iat && iat.abs_diff(now()) < 60 && exp == iat + 60,
        "{claims}"
    );
    assert!(
        claims["jti"].as_str().is_some_and(|j| !j.is_empty()),
        "{claims}"
    );

    assert_eq!(granted(&claims, "repository", "team/app"), ["pull"]);
    assert!(
        granted(&claims, "repository", "team/other").is_empty(),
        "{claims}"
    );
}

#[tokio::test]
async fn token_is_es256_signed_by_configured_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_path = dir.path().join("token-key.pem");
    let key_arg = key_path.to_str().expect("utf-8 path");
    let out = gate::cli(&["gen-key", "--out", key_arg], &[], "", dir.path()).await;
    assert!(out.status.success(), "gen-key: {}", combined_output(&out));
    let pem = std::fs::read_to_string(&key_path).expect("key file");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");

    let registry = Registry::start().await;
    let gate = Gate::start(&registry.url(), &[("REGISTRY_GATE_TOKEN__KEY", key_arg)]).await;
    let first = token(&gate, Some(ADMIN), &["repository:team/app:pull"]).await;
    let claims = http::verify_es256(&first, &pem).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(granted(&claims, "repository", "team/app"), ["pull"]);
    let second = token(&gate, Some(ADMIN), &["repository:team/app:pull"]).await;
    assert_ne!(
        jwt_parts(&second).1["jti"],
        claims["jti"],
        "jti must be unique"
    );
}

#[tokio::test]
async fn password_grant_via_post_pulls() {
    let stack = Stack::start().await;
    stack.registry.seed("team/app", "1.0").await;
    let scope = "repository:team/app:pull repository:team/other:pull";
    let form = [
        ("grant_type", "password"),
        ("username", TEST.0),
        ("password", TEST.1),
        ("service", SERVICE),
        ("scope", scope),
        ("client_id", "integration"),
    ];
    let body = json_ok(post_token(&stack.gate, &form).await).await;
    let token = body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    let claims = jwt_parts(token).1;
    assert_eq!(granted(&claims, "repository", "team/app"), ["pull"]);
    assert_eq!(granted(&claims, "repository", "team/other"), ["pull"]);
    assert_pulls(&stack.gate, "team/app", token, "1.0").await;

    let mut wrong = form;
    wrong[2].1 = "not-the-password";
    assert_eq!(post_token(&stack.gate, &wrong).await.status(), 401);
}

#[tokio::test]
async fn offline_refresh_token_grants_access_but_is_no_bearer() {
    let stack = Stack::start().await;
    stack.registry.seed("team/app", "1.0").await;
    let scope = "repository:team/app:pull";
    let offline = [("offline_token", "true"), ("client_id", "docker")];
    let resp = request_token(&stack.gate, Some(TEST), SERVICE, &[scope], &offline).await;
    let body = json_ok(resp).await;
    let refresh = body["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    assert!(!refresh.is_empty());
    let access = body["token"].as_str().expect("token");

    let form = |refresh_token| {
        [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("service", SERVICE),
            ("scope", scope),
            ("client_id", "docker"),
        ]
    };
    let body = json_ok(post_token(&stack.gate, &form(refresh)).await).await;
    let refreshed = body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(jwt_parts(refreshed).1["sub"], "test");
    assert_pulls(&stack.gate, "team/app", refreshed, "1.0").await;

    assert_denied(
        &tags_list(&stack.gate, "team/app", refresh).await,
        "invalid_token",
    );
    let status = post_token(&stack.gate, &form(access)).await.status();
    assert!(
        status == 400 || status == 401,
        "access token accepted as refresh token: {status}"
    );

    // The form flavour hands out refresh tokens too.
    let password_form = [
        ("grant_type", "password"),
        ("username", TEST.0),
        ("password", TEST.1),
        ("service", SERVICE),
        ("scope", scope),
        ("client_id", "docker"),
        ("access_type", "offline"),
    ];
    let body = json_ok(post_token(&stack.gate, &password_form).await).await;
    let refresh = body["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    json_ok(post_token(&stack.gate, &form(refresh)).await).await;
}

#[tokio::test]
async fn manifest_delete_needs_delete_action() {
    // The example config plus a user the generic rule covers (pull, push).
    let hash = bcrypt::hash("pushpw", 4).expect("bcrypt");
    let config = format!(
        "{}\n[users.pusher]\npassword = \"{hash}\"\n",
        example_config()
    );
    let stack = Stack::with_config(&config).await;
    let image = stack.registry.seed("team/del", "1.0").await;
    let manifest = format!("/v2/team/del/manifests/{}", image.manifest_digest);
    let upstream_has_it = || async {
        let url = format!("{}{manifest}", stack.registry.url());
        let resp = http::client()
            .head(url)
            .header("accept", crate::harness::image::MANIFEST_TYPE)
            .send()
            .await
            .expect("HEAD upstream");
        resp.status() == 200
    };

    let scope = ["repository:team/del:pull,push,delete"];
    let pusher = token(&stack.gate, Some(("pusher", "pushpw")), &scope).await;
    let mut actions = granted(&jwt_parts(&pusher).1, "repository", "team/del");
    actions.sort();
    assert_eq!(actions, ["pull", "push"]);
    let url = format!("{}{manifest}", stack.gate.url());
    assert_denied(
        &bearer(Method::DELETE, &url, &pusher).await,
        "insufficient_scope",
    );
    assert!(upstream_has_it().await);
    let seen = stack.registry.requests_settled().await;
    assert!(!seen.iter().any(|r| r.starts_with("DELETE ")), "{seen:#?}");

    let admin = token(&stack.gate, Some(ADMIN), &scope).await;
    assert_eq!(bearer(Method::DELETE, &url, &admin).await.status(), 202);
    assert!(!upstream_has_it().await);
}

/// Requests the gate must answer itself with a 4xx JSON error: none may be
/// forwarded, whatever normalization the upstream would apply.
const HOSTILE: &[&str] = &[
    "/v2/a/../b/manifests/latest",
    "/v2/%2e%2e/x/manifests/y",
    "/v2/a%2Fb/manifests/x",
    "/v2/A/manifests/x",
    "/v2/a/manifests/latest;x",
    "/v2/a/nope",
    "/v3/",
];

#[tokio::test]
async fn hostile_paths_never_reach_upstream() {
    let stack = Stack::start().await;
    let token = token(&stack.gate, Some(ADMIN), &["repository:a:*"]).await;
    let auth = format!("Bearer {token}");

    // Control: a sound request with this token is forwarded and seen.
    let resp = raw_request(
        stack.gate.addr,
        "GET",
        "/v2/a/tags/list",
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(resp.status, 404, "{}", resp.text());
    let before = stack.registry.requests_settled().await;
    assert!(
        before.contains(&"GET /v2/a/tags/list".to_string()),
        "{before:#?}"
    );

    for path in HOSTILE {
        for method in ["GET", "DELETE"] {
            let resp =
                raw_request(stack.gate.addr, method, path, &[("Authorization", &auth)]).await;
            assert!(
                [400, 404, 405].contains(&resp.status),
                "{method} {path}: {} {}",
                resp.status,
                resp.text()
            );
            let body: Value = serde_json::from_slice(&resp.body)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", resp.text()));
            assert!(
                body["errors"].as_array().is_some_and(|e| !e.is_empty()),
                "{method} {path}: {body}"
            );
        }
    }

    let after = stack.registry.requests_settled().await;
    let leaked: Vec<&String> = after[before.len()..]
        .iter()
        .filter(|r| *r != "GET /v2/")
        .collect();
    assert!(
        leaked.is_empty(),
        "hostile requests reached the upstream: {leaked:#?}"
    );
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let stack = Stack::start().await;
    for creds in [("admin", "wrong"), ("admin", ""), ("nobody", "badmin")] {
        let resp = request_token(
            &stack.gate,
            Some(creds),
            SERVICE,
            &["repository:a:pull"],
            &[],
        )
        .await;
        assert_eq!(resp.status(), 401, "{creds:?}");
    }
}

#[tokio::test]
async fn unknown_service_is_refused() {
    let stack = Stack::start().await;
    let resp = request_token(
        &stack.gate,
        Some(ADMIN),
        "Other registry",
        &["repository:a:pull"],
        &[],
    )
    .await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn altered_tokens_are_invalid() {
    let stack = Stack::start().await;
    stack.registry.seed("team/app", "1.0").await;
    let token = token(&stack.gate, Some(TEST), &["repository:team/app:pull"]).await;
    assert_pulls(&stack.gate, "team/app", &token, "1.0").await;
    let (header, claims) = jwt_parts(&token);

    let mut expired = claims.clone();
    expired["exp"] = json!(now() - 3600);
    expired["nbf"] = json!(now() - 7200);
    expired["iat"] = json!(now() - 7200);
    let mut widened = claims.clone();
    widened["access"] = json!([{"type": "repository", "name": "team/app", "actions": ["*"]}]);
    let mut other_user = claims.clone();
    other_user["sub"] = json!("admin");
    let mut none_header = header.clone();
    none_header["alg"] = json!("none");
    let unsigned = format!(
        "{}.{}.",
        base64_url(&serde_json::to_vec(&none_header).expect("JSON")),
        base64_url(&serde_json::to_vec(&claims).expect("JSON"))
    );

    let forged = [
        ("signature altered", with_bad_signature(&token)),
        ("expired", with_claims(&token, &expired)),
        ("access widened", with_claims(&token, &widened)),
        ("subject changed", with_claims(&token, &other_user)),
        ("alg none", unsigned),
        ("garbage", "not.a.token".to_string()),
    ];
    for (what, forged) in forged {
        let resp = tags_list(&stack.gate, "team/app", &forged).await;
        assert_eq!(resp.status(), 401, "{what}");
        assert_eq!(
            challenge(&resp).get("error").map(String::as_str),
            Some("invalid_token"),
            "{what}"
        );
    }
}

fn base64_url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// Asserts `Location` points at the gate (absolute or relative), never at
/// the upstream's address.
fn assert_location_at_gate(resp: &reqwest::Response, stack: &Stack) {
    let location = resp.headers()["location"].to_str().expect("ascii");
    let gate_url = format!("{}/", stack.gate.url());
    let relative = location.starts_with('/') && !location.starts_with("//");
    assert!(
        relative || location.starts_with(&gate_url),
        "Location {location}"
    );
    assert!(
        !location.contains(&stack.registry.addr.to_string()),
        "Location {location}"
    );
}

#[tokio::test]
async fn upload_location_points_at_gate() {
    let stack = Stack::start().await;
    let token = token(&stack.gate, Some(ADMIN), &["repository:team/x:pull,push"]).await;
    let uploads = format!("{}/v2/team/x/blobs/uploads/", stack.gate.url());
    let resp = bearer(Method::POST, &uploads, &token).await;
    assert_eq!(resp.status(), 202);
    assert_location_at_gate(&resp, &stack);

    // Finishing that upload through the gate lands the blob upstream.
    let image = OciImage::generate();
    let (digest, data) = &image.blobs[0];
    let location = resp.headers()["location"].to_str().expect("ascii");
    let mut url = reqwest::Url::parse(&stack.gate.url())
        .and_then(|u| u.join(location))
        .expect("url");
    url.query_pairs_mut().append_pair("digest", digest);
    let resp = http::client()
        .put(url)
        .bearer_auth(&token)
        .body(data.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status(), 201);
    assert_location_at_gate(&resp, &stack);
    let blob = format!("{}/v2/team/x/blobs/{digest}", stack.registry.url());
    assert_eq!(
        http::client()
            .head(blob)
            .send()
            .await
            .expect("HEAD")
            .status(),
        200
    );

    // And a whole push through the gate works the same way.
    push_http(
        &http::client(),
        &stack.gate.url(),
        "team/x",
        "1.0",
        Some(&token),
        &image,
    )
    .await;
    assert!(stack.registry.has_repository("team/x"));
}

#[tokio::test]
async fn check_config_accepts_example_and_redacts_secrets() {
    let config = example_config_path();
    let args = [
        "check-config",
        "--config",
        config.to_str().expect("utf-8 path"),
    ];
    // From the repository root, as a user runs it: relative paths in the
    // example config (config/ldap_password.txt) resolve against it.
    let out = gate::cli(&args, &[], "", &repo_root()).await;
    let text = combined_output(&out);
    assert!(out.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Docker registry") && stdout.contains("http://127.0.0.1:5001"),
        "{stdout}"
    );
    assert!(!text.contains("$2y$10$"), "password hashes printed: {text}");
}

#[tokio::test]
async fn check_config_names_bad_upstream_url() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = example_config_path();
    let args = [
        "check-config",
        "--config",
        config.to_str().expect("utf-8 path"),
    ];
    let env = [("REGISTRY_GATE_UPSTREAM__URL", "not a url")];
    let out = gate::cli(&args, &env, "", dir.path()).await;
    assert!(!out.status.success());
    assert!(
        combined_output(&out).contains("upstream.url"),
        "{}",
        combined_output(&out)
    );
}

#[tokio::test]
async fn check_config_names_unknown_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    let config = example_config().replacen("[upstream]\n", "[upstream]\nfrobnicate = true\n", 1);
    assert!(
        config.contains("frobnicate"),
        "example config has no [upstream] table"
    );
    std::fs::write(&path, config).expect("write config");
    let args = [
        "check-config",
        "--config",
        path.to_str().expect("utf-8 path"),
    ];
    let out = gate::cli(&args, &[], "", dir.path()).await;
    assert!(!out.status.success());
    assert!(
        combined_output(&out).contains("frobnicate"),
        "{}",
        combined_output(&out)
    );
}

#[tokio::test]
async fn hash_password_output_verifies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = gate::cli(&["hash-password"], &[], "s3cret pass\n", dir.path()).await;
    assert!(out.status.success(), "{}", combined_output(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hash = stdout
        .lines()
        .rfind(|l| l.starts_with("$2"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(bcrypt::verify("s3cret pass", hash).expect("bcrypt hash"));
    assert!(!bcrypt::verify("s3cret", hash).expect("bcrypt hash"));
}
