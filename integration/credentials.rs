//! Robot accounts and personal access tokens (docs/tokens.md), against the
//! example stack (registry + slapd + gate) with a real store: SQLite files
//! in temp dirs, and a throwaway PostgreSQL cluster shared by two gates.

use crate::harness::http::{self, jwt_parts, post_token, request_token};
use crate::harness::image::{OciImage, push_http};
use crate::harness::postgres::Postgres;
use crate::harness::{Gate, Stack, gate};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const SERVICE: &str = "Docker registry";

/// The scopes a token for `scopes` grants `creds` (`None`: a 401).
async fn granted(gate: &Gate, creds: (&str, &str), scopes: &[&str]) -> Option<Vec<String>> {
    let resp = request_token(gate, Some(creds), SERVICE, scopes, &[]).await;
    if resp.status() == 401 {
        return None;
    }
    let body = http::json_ok(resp).await;
    Some(http::access_of(body["token"].as_str().expect("token")))
}

/// Polls until the gate refuses `creds` (401), at most `limit`; returns
/// how long that took. What the step produces (a 401) ends the wait.
async fn refused_within(gate: &Gate, creds: (&str, &str), limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if granted(gate, creds, &["repository:team/app:pull"])
            .await
            .is_none()
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "still accepted after {limit:?}:\n{}",
            gate.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A credential's id from `token list --json`, by account and name.
async fn id_of(gate: &Gate, account: &str, name: &str) -> String {
    let out = gate.cli(&["token", "list", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("json list");
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["account"] == account && c["name"] == name)
        .unwrap_or_else(|| panic!("no {account}/{name} in {list}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every file of an SQLite store (the database and its WAL) as bytes.
fn sqlite_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).expect("store dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with("store.db") {
            all.extend(std::fs::read(entry.path()).expect("read store file"));
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn robot_and_personal_tokens_get_scopes_intersected_with_the_acl() {
    let stack = Stack::start().await;
    let gate = &stack.gate;
    let robot = gate
        .create_token(&["--robot", "ci", "--scope", "repository:team/*:pull,push"])
        .await;
    // test may only pull (ACL); its token asks for push too.
    let personal = gate
        .create_token(&[
            "--owner",
            "test",
            "--name",
            "laptop",
            "--scope",
            "repository:*/*:pull,push",
        ])
        .await;

    let got = granted(
        gate,
        ("robot+ci", &robot),
        &[
            "repository:team/app:pull,push,delete",
            "repository:other/app:pull",
        ],
    )
    .await;
    assert_eq!(got, Some(vec!["team/app:pull,push".to_owned()]));
    let got = granted(
        gate,
        ("test", &personal),
        &["repository:team/app:pull,push"],
    )
    .await;
    assert_eq!(
        got,
        Some(vec!["team/app:pull".to_owned()]),
        "a pull-only owner's token never pushes"
    );
    // The secret works only with its own account name.
    assert_eq!(
        granted(gate, ("admin", &personal), &["repository:team/app:pull"]).await,
        None
    );
    assert_eq!(
        granted(gate, ("robot+other", &robot), &["repository:team/app:pull"]).await,
        None
    );
    // A robot secret with one character changed fails its checksum.
    let mut wrong = robot.clone();
    wrong.replace_range(10..11, if &robot[10..11] == "A" { "B" } else { "A" });
    assert_eq!(
        granted(gate, ("robot+ci", &wrong), &["repository:team/app:pull"]).await,
        None
    );

    // Pushing with the robot's token: allowed in team/, refused elsewhere.
    let c = http::client();
    let token = http::token(
        gate,
        Some(("robot+ci", &robot)),
        &["repository:team/app:pull,push"],
    )
    .await;
    push_http(
        &c,
        &gate.url(),
        "team/app",
        "v1",
        Some(&token),
        &OciImage::generate(),
    )
    .await;
    let token = http::token(
        gate,
        Some(("robot+ci", &robot)),
        &["repository:other/app:pull,push"],
    )
    .await;
    let resp = http::bearer(
        reqwest::Method::POST,
        &format!("{}/v2/other/app/blobs/uploads/", gate.url()),
        &token,
    )
    .await;
    assert_eq!(resp.status(), 401, "push outside the robot's scopes");

    // Its last use is recorded (off the login's path: wait for it).
    let started = Instant::now();
    loop {
        let out = gate.cli(&["token", "list", "--json"]).await;
        let list: Value = serde_json::from_slice(&out.stdout).expect("json list");
        let robot_row = list
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["account"] == "robot+ci")
            .cloned()
            .unwrap();
        if robot_row["last_used_at"].is_i64() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no last use recorded: {robot_row}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = http::client()
        .get(format!("{}/metrics", gate.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"registry_gate_credential_logins_total{kind="robot",outcome="issued"}"#)
            && metrics.contains(
                r#"registry_gate_credential_logins_total{kind="personal",outcome="issued"}"#
            )
            && metrics.contains(
                r#"registry_gate_credential_logins_total{kind="robot",outcome="refused"}"#
            ),
        "{metrics}"
    );

    // The audit trail names the credential; the store never holds a secret.
    gate.wait_log("\"credential\":\"c_", 1).await;
    let stored = sqlite_bytes(gate.dir());
    assert!(!stored.is_empty());
    for secret in [&robot, &personal] {
        assert!(!contains(&stored, secret), "the store holds a secret");
        assert!(
            !gate.log().contains(secret.as_str()),
            "the log holds a secret"
        );
    }
}

#[tokio::test]
async fn revoked_and_expired_credentials_and_their_refresh_tokens_are_refused() {
    let stack = Stack::start().await;
    let gate = &stack.gate;
    let robot = gate
        .create_token(&["--robot", "deploy", "--scope", "repository:team/*:pull"])
        .await;
    let creds = ("robot+deploy", robot.as_str());
    // A refresh token obtained with the credential (docker login's way).
    let resp = request_token(
        gate,
        Some(creds),
        SERVICE,
        &["repository:team/app:pull"],
        &[("offline_token", "true")],
    )
    .await;
    let refresh = http::json_ok(resp).await["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let (_, claims) = jwt_parts(&refresh);
    assert!(
        claims["cid"].as_str().unwrap().starts_with("c_"),
        "{claims}"
    );
    let form = |rt: &str| {
        vec![
            ("grant_type", "refresh_token"),
            ("service", SERVICE),
            ("refresh_token", rt),
            ("scope", "repository:team/app:pull"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect::<Vec<_>>()
    };
    let f = form(&refresh);
    let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(post_token(gate, &pairs).await.status(), 200);

    let id = id_of(gate, "robot+deploy", "deploy").await;
    // Rotation (docs/tokens.md): a second credential for the same robot,
    // which outlives the first one's revocation.
    let rotated = gate
        .create_token(&["--robot", "deploy", "--scope", "repository:team/*:pull"])
        .await;
    let out = gate.cli(&["token", "revoke", &id]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = refused_within(gate, creds, Duration::from_secs(10)).await;
    println!("revoked credential refused after {took:?}");
    assert!(
        granted(
            gate,
            ("robot+deploy", &rotated),
            &["repository:team/app:pull"]
        )
        .await
        .is_some(),
        "the robot's other credential still works"
    );
    let started = Instant::now();
    loop {
        let status = post_token(gate, &pairs).await.status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "refresh token of a revoked credential still works"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gate.wait_log("credential_revoked_or_expired", 1).await;

    // Expired: a credential made to live one second.
    let short = gate
        .create_token(&[
            "--robot",
            "short",
            "--scope",
            "repository:team/*:pull",
            "--expires",
            "1s",
        ])
        .await;
    let took = refused_within(gate, ("robot+short", &short), Duration::from_secs(15)).await;
    println!("expired credential refused after {took:?}");
}

#[tokio::test]
async fn token_commands_report_errors_with_exit_codes_and_redact_store_urls() {
    let registry = crate::harness::Registry::start().await;
    let config = gate::example_config();
    let config = config[..config.find("\n[ldap]").unwrap()].to_owned()
        + &config[config.find("\n# ACL").unwrap()..];
    let gate = Gate::start_with_config(&config, &registry.url(), &[]).await;
    let code = |out: &std::process::Output| out.status.code();
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    // Usage and input errors: 2, with the reason.
    for (args, says) in [
        (vec!["token", "revoke", "c_nosuch"], "no credential"),
        (
            vec![
                "token",
                "create",
                "--robot",
                "CI",
                "--scope",
                "repository:a/*:pull",
            ],
            "must match",
        ),
        (
            vec![
                "token",
                "create",
                "--robot",
                "ci",
                "--scope",
                "repository:a/*:fly",
            ],
            "unknown action",
        ),
        (
            vec![
                "token",
                "create",
                "--robot",
                "ci",
                "--scope",
                "repository:a/*:pull",
                "--expires",
                "400d",
            ],
            "at most",
        ),
        (
            vec![
                "token",
                "create",
                "--owner",
                "nobody",
                "--name",
                "x",
                "--scope",
                "repository:a/*:pull",
            ],
            "no static or LDAP account",
        ),
        (
            vec!["token", "create", "--scope", "repository:a/*:pull"],
            "--robot",
        ),
    ] {
        let out = gate.cli(&args).await;
        assert_eq!(code(&out), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    }
    // The store down (a PostgreSQL nobody listens on): 1, without the password.
    let port = crate::harness::free_port();
    let url = format!("postgres://gate:pw-not-to-print@127.0.0.1:{port}/x");
    let config_path = gate.config_path();
    let env = [("REGISTRY_GATE_STORE__URL", url.as_str())];
    let args = ["--config", config_path.to_str().unwrap(), "token", "list"];
    let out = crate::harness::gate::cli(&args, &env, "", &crate::harness::repo_root()).await;
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("pw-not-to-print"),
        "{}",
        stderr(&out)
    );
    let args = ["--config", config_path.to_str().unwrap(), "check-config"];
    let out = crate::harness::gate::cli(&args, &env, "", &crate::harness::repo_root()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(
        stdout.contains(&format!("postgres://gate:***@127.0.0.1:{port}/x")),
        "{stdout}"
    );
    assert!(!stdout.contains("pw-not-to-print"));
}

#[tokio::test]
async fn logout_all_ends_a_persons_refresh_tokens() {
    let stack = Stack::start().await;
    let gate = &stack.gate;
    let resp = request_token(
        gate,
        Some(("admin", "badmin")),
        SERVICE,
        &[],
        &[("offline_token", "true")],
    )
    .await;
    let refresh = http::json_ok(resp).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let form = [
        ("grant_type", "refresh_token"),
        ("service", SERVICE),
        ("refresh_token", refresh.as_str()),
    ];
    assert_eq!(post_token(gate, &form).await.status(), 200);
    let out = gate.cli(&["logout-all", "admin"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    while post_token(gate, &form).await.status() != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "refresh token survives logout-all"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new login works at once.
    assert!(
        granted(gate, ("admin", "badmin"), &["repository:a/b:pull"])
            .await
            .is_some()
    );
}

/// `/api/v1/` with HTTP Basic.
async fn api(
    gate: &Gate,
    method: reqwest::Method,
    path: &str,
    creds: (&str, &str),
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http::client()
        .request(method, format!("{}{path}", gate.url()))
        .basic_auth(creds.0, Some(creds.1));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("api request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn the_api_applies_the_same_rules_as_the_cli_and_the_ui() {
    use reqwest::Method;
    let stack = Stack::start().await;
    let gate = &stack.gate;
    let admin = ("admin", "badmin");
    let test = ("test", "123");
    // An administrator creates a robot; the secret comes back once.
    let (status, made) = api(
        gate,
        Method::POST,
        "/api/v1/credentials",
        admin,
        Some(
            json!({"robot": "ci", "scopes": ["repository:team/*:pull,push"], "expires_in": "30d"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let secret = made["secret"].as_str().unwrap().to_owned();
    assert!(
        granted(gate, ("robot+ci", &secret), &["repository:team/x:push"])
            .await
            .is_some()
    );
    // Not an administrator: no robots, no scopes beyond the ACL's.
    let (status, _) = api(
        gate,
        Method::POST,
        "/api/v1/credentials",
        test,
        Some(json!({"robot": "x", "scopes": ["repository:a/*:pull"]})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = api(
        gate,
        Method::POST,
        "/api/v1/credentials",
        test,
        Some(json!({"name": "ci", "scopes": ["repository:a/*:push"]})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, mine) = api(
        gate,
        Method::POST,
        "/api/v1/credentials",
        test,
        Some(json!({"name": "laptop", "scopes": ["repository:a/*:pull"]})),
    )
    .await;
    assert_eq!(status, 201, "{mine}");
    let pat = mine["secret"].as_str().unwrap().to_owned();
    // A personal token cannot mint more tokens, nor see others'.
    let (status, _) = api(
        gate,
        Method::POST,
        "/api/v1/credentials",
        ("test", &pat),
        Some(json!({"name": "more", "scopes": ["repository:a/*:pull"]})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, list) = api(gate, Method::GET, "/api/v1/credentials", test, None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert!(
        list.to_string().find("rgt_").is_none(),
        "a listing shows a secret: {list}"
    );
    let robot_id = made["id"].as_str().unwrap();
    let (status, _) = api(
        gate,
        Method::DELETE,
        &format!("/api/v1/credentials/{robot_id}"),
        test,
        None,
    )
    .await;
    assert_eq!(status, 404, "someone else's credential is not found");
    let (status, all) = api(gate, Method::GET, "/api/v1/credentials", admin, None).await;
    assert_eq!((status, all.as_array().unwrap().len()), (200, 2));
    // Revoking through the API: refused within 10 s (here at once).
    let (status, revoked) = api(
        gate,
        Method::DELETE,
        &format!("/api/v1/credentials/{robot_id}"),
        admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_i64());
    refused_within(gate, ("robot+ci", &secret), Duration::from_secs(10)).await;
    let (status, _) = api(
        gate,
        Method::GET,
        "/api/v1/credentials",
        ("admin", "wrong"),
        None,
    )
    .await;
    assert_eq!(status, 401);
    gate.wait_log("\"event\":\"credential_created\"", 2).await;
    gate.wait_log("\"event\":\"credential_revoked\"", 1).await;
}

#[tokio::test]
async fn a_revocation_through_one_gate_reaches_another_sharing_postgresql() {
    let (pg, registry) = tokio::join!(Postgres::start(), crate::harness::Registry::start());
    let password_file = pg.password_file();
    let env = [
        ("REGISTRY_GATE_STORE__URL", pg.url()),
        (
            "REGISTRY_GATE_STORE__PASSWORD_FILE",
            password_file.display().to_string(),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config = gate::example_config();
    let config = config[..config.find("\n[ldap]").unwrap()].to_owned()
        + &config[config.find("\n# ACL").unwrap()..];
    // Two gates start at once: both apply the migrations (one waits).
    let upstream = registry.url();
    let (a, b) = tokio::join!(
        Gate::start_with_config(&config, &upstream, &env),
        Gate::start_with_config(&config, &upstream, &env)
    );
    let (status, made) = api(
        &a,
        reqwest::Method::POST,
        "/api/v1/credentials",
        ("admin", "badmin"),
        Some(json!({"robot": "ci", "scopes": ["repository:team/*:pull"]})),
    )
    .await;
    assert_eq!(status, 201, "{made}\n{}", a.log());
    let secret = made["secret"].as_str().unwrap().to_owned();
    assert!(
        granted(&b, ("robot+ci", &secret), &["repository:team/app:pull"])
            .await
            .is_some(),
        "{}",
        b.log()
    );
    let id = made["id"].as_str().unwrap();
    let (status, _) = api(
        &a,
        reqwest::Method::DELETE,
        &format!("/api/v1/credentials/{id}"),
        ("admin", "badmin"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let took = refused_within(&b, ("robot+ci", &secret), Duration::from_secs(10)).await;
    println!("revoked through gate A, refused by gate B after {took:?}");
    let dump = pg.dump();
    assert!(
        dump.contains("robot+ci") && !dump.contains(&secret),
        "PostgreSQL holds the secret"
    );

    // PostgreSQL down: passwords still log in, credentials get a clear 503.
    let robot = b
        .create_token(&["--robot", "up", "--scope", "repository:team/*:pull"])
        .await;
    let mut pg = pg;
    pg.stop();
    assert!(
        granted(&b, ("admin", "badmin"), &["repository:team/app:pull"])
            .await
            .is_some()
    );
    let started = Instant::now();
    loop {
        let resp = request_token(
            &b,
            Some(("robot+up", &robot)),
            SERVICE,
            &["repository:team/app:pull"],
            &[],
        )
        .await;
        let status = resp.status().as_u16();
        if status == 503 {
            let text = resp.text().await.unwrap();
            assert!(text.contains("credential store is unavailable"), "{text}");
            assert!(!text.contains(crate::harness::postgres::PASSWORD));
            break;
        }
        assert_eq!(status, 200, "cached until its TTL, then 503");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no 503 with the store down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pg.restart().await;
    let started = Instant::now();
    while granted(&b, ("robot+up", &robot), &["repository:team/app:pull"])
        .await
        .is_none()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no recovery:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !a.log().contains(crate::harness::postgres::PASSWORD)
            && !b.log().contains(crate::harness::postgres::PASSWORD)
    );
}
