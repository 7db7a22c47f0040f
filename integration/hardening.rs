//! Issue 5, hardening: hostile requests, brute force, slow clients, faults,
//! restarts, TLS renewals, several instances, and load. Every test runs its
//! own upstream registry and gate(s) on loopback ports chosen at run time;
//! timeouts are configured short so the suite stays fast.
//!
//! Fault injection: where a real registry cannot misbehave on demand
//! (answering garbage, dying half way through a body, never answering),
//! a few lines of TCP in the test play the broken upstream.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::http::{
    self, SERVICE, assert_denied, bearer, json_ok, jwt_parts, raw_exchange, token,
};
use crate::harness::image::{MANIFEST_TYPE, OciImage, Skopeo, push_http, sha256_digest};
use crate::harness::{Gate, Registry, Stack, open_fds, rss_kib};

const ADMIN: (&str, &str) = ("admin", "badmin");
const TEST: (&str, &str) = ("test", "123");
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The example setup without LDAP (these tests need no directory):
/// admin/badmin may do anything, test/123 may only pull. `token` lines go
/// into `[token]`, `extra` is appended (more tables).
fn config(token: &str, extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:5000"

[upstream]
url = "http://127.0.0.1:5001"

[token]
service = "Docker registry"
issuer = "registry-gate"
lifetime = "5m"
{token}

[users.admin]
password = "$2y$10$BbjHSBR07iNZhnzmPGLb1OV/Mp8kjkcepRhg.xD01t06FYg6rOVYa"

[users.test]
password = "$2y$10$j/zV1NrXiP0d/NjCSbO6z.LPudtqAOQXDkZHPGBHcMWFMAGU74Wka"

{extra}

[[acl]]
match = {{ account = "admin" }}
actions = ["*"]

[[acl]]
match = {{ account = "test" }}
actions = ["pull"]
"#
    )
}

/// Asserts a registry JSON error (`{"errors":[{"code":...}]}`) and returns its code.
fn error_code(status: u16, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{status}: not a JSON error ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{status}: no error code in {v}"))
        .to_string()
}

async fn tags(gate: &Gate, repo: &str, token: &str) -> reqwest::Response {
    bearer(
        Method::GET,
        &format!("{}/v2/{repo}/tags/list", gate.url()),
        token,
    )
    .await
}

/// Waits until `f` holds, polling; panics with `what` after `timeout`.
async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Requests beside the path grammar (`core::hostile_paths_never_reach_upstream`
/// covers the basic path cases): more path tricks, parameter games on a
/// cross-repository mount, form bodies, absolute-form targets, Host games
/// and methods nothing serves. Each is answered by the gate with a 4xx
/// registry error, and the upstream's own log shows none of them. Upload
/// starts whose `mount`/`from` cannot mount go on as ordinary sessions and
/// reach the upstream without those parameters.
#[tokio::test]
async fn hostile_requests_never_reach_upstream() {
    let stack = Stack::with_config(&config("", "")).await;
    let token = token(
        &stack.gate,
        Some(ADMIN),
        &["repository:a:*", "repository:b:*", "registry:catalog:*"],
    )
    .await;
    let addr = stack.gate.addr;
    let upstream = stack.registry.addr;
    let auth = format!("Authorization: Bearer {token}\r\n");
    let get = |target: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
    };
    let post = |query: &str| {
        format!(
            "POST /v2/a/blobs/uploads/?{query} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };

    // Control: this token is good, and sound requests reach the upstream.
    let control = raw_exchange(addr, get("/v2/a/tags/list").as_bytes()).await;
    assert_eq!(control.status, 404, "{}", control.text());
    let control = raw_exchange(addr, post(&format!("mount={DIGEST}&from=b")).as_bytes()).await;
    assert_eq!(control.status, 202, "{}", control.text());
    let before = stack.registry.requests_settled().await;
    assert!(
        before
            .iter()
            .any(|r| r.starts_with("POST /v2/a/blobs/uploads/?mount=")),
        "{before:#?}"
    );

    let long_name = format!("/v2/{}/tags/list", "a".repeat(256));
    let long_tag = format!("/v2/a/manifests/{}", "t".repeat(129));
    let long_component = format!("/v2/a/{}/tags/list", "b".repeat(300));
    let mut cases: Vec<(String, String)> = [
        "/v2//a/tags/list",
        "/v2/a//tags/list",
        "/v2/a/./tags/list",
        "/v2/a/b/../tags/list",
        "/v2/a/%2e%2e/b/tags/list",
        "/v2/a/%2E/tags/list",
        "/v2/a%00/tags/list",
        "/v2/a/manifests/latest%00",
        "/v2/a/manifests/latest%2Fx",
        "/v2/a/manifests/Latest;x=1",
        "/v2/a;b/tags/list",
        "/v2/A/tags/list",
        "/v2/a/B/tags/list",
        "/V2/a/tags/list",
        "/v2/a/tags/list/",
        &long_name,
        &long_tag,
        &long_component,
        "/v2/a/blobs/SHA256:0123",
        "/v2/_catalog?n=1;x=2",
    ]
    .iter()
    .map(|p| (format!("GET {p}"), get(p)))
    .collect();
    for q in [
        format!("mount={DIGEST}&from=b&from=c"),
        format!("mount={DIGEST}&from=b&fr%6Fm=c"),
        format!("mount={DIGEST}&mount={DIGEST}&from=b"),
        format!("mount={DIGEST}&from=b;x"),
        format!("mount={DIGEST};from=b"),
        format!("mount={DIGEST}&from=b&digest=sha256:x"),
    ] {
        cases.push((format!("POST ?{q}"), post(&q)));
    }
    // No usable mount: ordinary upload sessions, which reach the upstream
    // without `mount` and `from` (checked at the end).
    let plain_uploads = [
        format!("mount={DIGEST}"),
        "from=b".to_string(),
        format!("mount={DIGEST}&from=..%2Fb"),
        format!("mount={DIGEST}&from=b%2F..%2Fa"),
        format!("mount={DIGEST}&from=B"),
        format!("mount={DIGEST}&from=b%00"),
        format!("mount={}&from=b", DIGEST.to_uppercase()),
    ];
    let form = format!("mount={DIGEST}&from=b");
    cases.push((
        "form body".into(),
        format!(
            "POST /v2/a/blobs/uploads/ HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    ));
    for target in [
        format!("http://{upstream}/v2/a/tags/list"),
        format!("http://{addr}/v2/a/tags/list"),
    ] {
        cases.push((format!("absolute {target}"), get(&target)));
    }
    for (what, host_lines) in [
        (
            "two Host headers",
            format!("Host: {addr}\r\nHost: {upstream}\r\n"),
        ),
        ("no Host header", String::new()),
        ("quoted Host", "Host: evil\"/x\r\n".to_string()),
        ("Host with a path", format!("Host: {addr}/v2/b\r\n")),
        ("Host with a space", "Host: a b\r\n".to_string()),
        ("long Host", format!("Host: {}\r\n", "h".repeat(300))),
    ] {
        cases.push((
            what.into(),
            format!("GET /v2/a/tags/list HTTP/1.1\r\n{host_lines}{auth}Connection: close\r\n\r\n"),
        ));
    }
    for method in ["TRACE", "OPTIONS", "PROPFIND", "CONNECT"] {
        cases.push((
            method.to_string(),
            format!(
                "{method} /v2/a/tags/list HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
            ),
        ));
    }
    cases.push((
        "CONNECT authority-form".into(),
        format!(
            "CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\n{auth}Connection: close\r\n\r\n"
        ),
    ));

    for (what, request) in &cases {
        let resp = raw_exchange(addr, request.as_bytes()).await;
        assert!(
            (400..500).contains(&resp.status),
            "{what}: {} {}",
            resp.status,
            resp.text()
        );
        error_code(resp.status, &resp.body);
    }

    let after = stack.registry.requests_settled().await;
    let leaked = &after[before.len()..];
    assert!(
        leaked.is_empty(),
        "hostile requests reached the upstream: {leaked:#?}"
    );

    for q in &plain_uploads {
        let resp = raw_exchange(addr, post(q).as_bytes()).await;
        assert_eq!(resp.status, 202, "{q}: {}", resp.text());
    }
    let after_plain = stack.registry.requests_settled().await;
    let sent = &after_plain[after.len()..];
    assert_eq!(
        sent,
        vec!["POST /v2/a/blobs/uploads/".to_string(); plain_uploads.len()],
        "ordinary upload sessions"
    );
}

/// A cross-repository mount needs pull on `from`: a caller who may push to
/// their own repository but not read another cannot mount its blobs, by
/// any spelling; the same mount by someone who may read works (control).
#[tokio::test]
async fn mount_from_an_unreadable_repository_gives_nothing() {
    let hash = bcrypt::hash("mallorypw", 4).expect("bcrypt");
    let extra = format!(
        "[users.mallory]\npassword = \"{hash}\"\n\n[[acl]]\nmatch = {{ account = \"mallory\", name = \"mallory/*\" }}\nactions = [\"pull\", \"push\"]\n"
    );
    let stack = Stack::with_config(&config("", &extra)).await;
    let secret = stack.registry.seed("secret/app", "1.0").await;
    let (layer, _) = &secret.blobs[1];
    let gate = &stack.gate;

    let token = token(
        gate,
        Some(("mallory", "mallorypw")),
        &[
            "repository:mallory/x:pull,push",
            "repository:secret/app:pull",
        ],
    )
    .await;
    let claims = jwt_parts(&token).1;
    let names: Vec<&str> = claims["access"]
        .as_array()
        .expect("access")
        .iter()
        .map(|a| a["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["mallory/x"], "{claims}");

    let client = http::client();
    let upload = format!("{}/v2/mallory/x/blobs/uploads/", gate.url());
    let resp = client
        .post(&upload)
        .query(&[("mount", layer.as_str()), ("from", "secret/app")])
        .bearer_auth(&token)
        .send()
        .await
        .expect("mount");
    assert_denied(&resp, "insufficient_scope");
    assert_eq!(
        http::challenge(&resp)["scope"],
        "repository:mallory/x:pull,push repository:secret/app:pull"
    );
    // Two values where parsers disagree on which counts: refused outright.
    for query in [
        format!("mount={layer}&from=mallory/x&from=secret/app"),
        format!("mount={layer}&from=secret%2Fapp&fr%6Fm=mallory/x"),
    ] {
        let resp = client
            .post(format!("{upload}?{query}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("mount");
        assert_eq!(resp.status(), 400, "{query}");
    }
    // No usable pair: an ordinary upload session, forwarded without
    // `mount` and `from` (checked below: nothing was mounted).
    for query in [
        format!("mount={layer}&from=mallory/x/../../secret/app"),
        format!("mount={layer}&from=mallory%2F..%2Fsecret%2Fapp"),
        format!("mount={layer}"),
    ] {
        let resp = client
            .post(format!("{upload}?{query}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("mount");
        assert_eq!(resp.status(), 202, "{query}");
    }
    let resp = client
        .post(&upload)
        .bearer_auth(&token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("mount={layer}&from=secret/app"))
        .send()
        .await
        .expect("form mount");
    assert_eq!(resp.status(), 400);

    let upstream_blob = |repo: &str| {
        let url = format!("{}/v2/{repo}/blobs/{layer}", stack.registry.url());
        async move {
            http::client()
                .head(url)
                .send()
                .await
                .expect("HEAD")
                .status()
        }
    };
    assert_eq!(upstream_blob("mallory/x").await, 404);
    let seen = stack.registry.requests_settled().await;
    // (Our own HEADs above went straight to the upstream; the ordinary
    // upload sessions went without their query.)
    assert!(
        !seen.iter().any(|r| r.contains("/v2/mallory/")
            && !r.starts_with("HEAD ")
            && r != "POST /v2/mallory/x/blobs/uploads/"),
        "{seen:#?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|r| *r == "POST /v2/mallory/x/blobs/uploads/")
            .count(),
        3,
        "{seen:#?}"
    );

    // Control: admin may read secret/app, and the very same mount works.
    let admin = token_for(
        gate,
        ADMIN,
        &["repository:admin/x:pull,push", "repository:secret/app:pull"],
    )
    .await;
    let resp = client
        .post(format!("{}/v2/admin/x/blobs/uploads/", gate.url()))
        .query(&[("mount", layer.as_str()), ("from", "secret/app")])
        .bearer_auth(&admin)
        .send()
        .await
        .expect("mount");
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    assert_eq!(upstream_blob("admin/x").await, 200);
}

async fn token_for(gate: &Gate, creds: (&str, &str), scopes: &[&str]) -> String {
    token(gate, Some(creds), scopes).await
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(ip.parse::<IpAddr>().expect("ip"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn login(client: &reqwest::Client, gate: &Gate, creds: (&str, &str)) -> reqwest::Response {
    client
        .get(format!("{}/auth", gate.url()))
        .query(&[("service", SERVICE), ("scope", "repository:a:pull")])
        .basic_auth(creds.0, Some(creds.1))
        .send()
        .await
        .expect("token request")
}

/// Asserts a 429 with a registry error and a `Retry-After`; returns it.
async fn assert_throttled(resp: reqwest::Response, max: u64) -> Duration {
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=max).contains(&retry), "Retry-After {retry}");
    let body = resp.bytes().await.expect("body");
    assert_eq!(error_code(429, &body), "TOOMANYREQUESTS");
    Duration::from_secs(retry)
}

/// Failed logins are backed off per account and per address, answered with
/// 429 and Retry-After, expire, never lock an account out of an address it
/// logged in from, stay bounded while an attacker keeps trying, and are
/// logged without the passwords tried.
#[tokio::test]
async fn brute_force_is_backed_off_and_expires() {
    let extra = "[ratelimit]\nfailures_per_account = 3\nfailures_per_address = 5\nbackoff = \"1s\"\nmax_backoff = \"2s\"\nforget_after = \"1m\"\n";
    let registry = Registry::start().await;
    let gate = Gate::start_with_config(&config("", extra), &registry.url(), &[]).await;
    let home = client_from("127.0.0.1");
    let attacker = client_from("127.0.0.2");
    let elsewhere = client_from("127.0.0.3");
    let wrong: Vec<String> = (0..3)
        .map(|i| format!("Wr0ng-{i}-{:x}", rand::random::<u32>()))
        .collect();

    // The real admin logs in from home: that address is now trusted for admin.
    assert_eq!(login(&home, &gate, ADMIN).await.status(), 200);
    for w in &wrong {
        assert_eq!(login(&attacker, &gate, ("admin", w)).await.status(), 401);
    }
    // The attacker is backed off, even with the right password...
    assert_throttled(login(&attacker, &gate, ADMIN).await, 2).await;
    // ...and so is the account from an address it never logged in from...
    let started = Instant::now();
    let wait = assert_throttled(login(&elsewhere, &gate, ADMIN).await, 2).await;
    // ...but not at home, nor other accounts.
    let t = Instant::now();
    assert_eq!(login(&home, &gate, ADMIN).await.status(), 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "home login slowed: {:?}",
        t.elapsed()
    );
    assert_eq!(login(&elsewhere, &gate, TEST).await.status(), 200);
    // The back-off expires.
    tokio::time::sleep(wait.saturating_sub(started.elapsed()) + Duration::from_millis(100)).await;
    assert_eq!(login(&elsewhere, &gate, ADMIN).await.status(), 200);

    // Per address: failures across accounts back the address off.
    let spray = client_from("127.0.0.4");
    for i in 0..5 {
        let resp = login(&spray, &gate, (&format!("nobody{i}"), "x")).await;
        assert_eq!(resp.status(), 401);
    }
    let wait = assert_throttled(login(&spray, &gate, TEST).await, 2).await;
    assert_eq!(login(&home, &gate, TEST).await.status(), 200);
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    assert_eq!(login(&spray, &gate, TEST).await.status(), 200);

    // An attacker who keeps going keeps meeting short back-offs, never a
    // longer one, and the account is free again soon after they stop.
    let hammer_until = Instant::now() + Duration::from_secs(4);
    let (mut refused, mut checked) = (0, 0);
    while Instant::now() < hammer_until {
        let resp = login(&attacker, &gate, ("admin", &wrong[0])).await;
        match resp.status().as_u16() {
            401 => checked += 1,
            429 => {
                assert_throttled(resp, 2).await;
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refused > 0 && checked > 0,
        "{refused} refused, {checked} checked"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let fresh = client_from("127.0.0.5");
    assert_eq!(login(&fresh, &gate, ADMIN).await.status(), 200);

    let log = gate.log();
    assert!(
        log.contains("login_failed") && log.contains("login_throttled"),
        "{log}"
    );
    for w in &wrong {
        assert!(!log.contains(w.as_str()), "a password was logged");
    }
}

/// Connections that send a request head slower than `header_read_timeout`
/// are cut off; meanwhile ordinary clients are served; nothing is left open.
#[tokio::test]
async fn slow_header_clients_are_cut_off_while_others_are_served() {
    let extra = "[limits]\nheader_read_timeout = \"2s\"\nidle_timeout = \"30s\"\n";
    let registry = Registry::start().await;
    let gate = Gate::start_with_config(&config("", extra), &registry.url(), &[]).await;
    let token = token(&gate, Some(ADMIN), &["repository:a:pull"]).await;
    let baseline = open_fds(gate.pid());

    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..40 {
        let addr = gate.addr;
        slow.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            // A head that never ends, trickled.
            s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: gate\r\n")
                .await
                .expect("write");
            let t = Instant::now();
            let mut buf = Vec::new();
            loop {
                tokio::select! {
                    n = s.read_buf(&mut buf) => {
                        if n.unwrap_or(0) == 0 { break; }
                    }
                    () = tokio::time::sleep(Duration::from_millis(200)) => {
                        if s.write_all(b"X").await.is_err() { break; }
                    }
                }
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "slow client never cut off"
                );
            }
            t.elapsed()
        }));
    }
    // Ordinary clients are served meanwhile.
    for _ in 0..10 {
        let resp = bearer(Method::GET, &format!("{}/v2/", gate.url()), &token).await;
        assert_eq!(resp.status(), 200);
    }
    let served_at = started.elapsed();
    assert!(
        slow.iter().all(|t| !t.is_finished()),
        "the slow clients were cut off before the others were served ({served_at:?})"
    );
    for t in slow {
        let took = t.await.expect("slow client");
        assert!(
            took >= Duration::from_millis(1900),
            "cut off too early: {took:?}"
        );
    }
    eventually("connections released", Duration::from_secs(5), || {
        open_fds(gate.pid()) <= baseline + 2
    })
    .await;
}

/// The upstream goes away, comes back, or misbehaves: clients get registry
/// JSON errors, the gate stays up, and it serves again on its own once the
/// upstream is back.
#[tokio::test]
async fn upstream_faults_become_registry_errors_and_the_gate_recovers() {
    let mut registry = Registry::start().await;
    let image = registry.seed("team/app", "1.0").await;
    let env = [
        ("REGISTRY_GATE_UPSTREAM__RESPONSE_HEADER_TIMEOUT", "1s"),
        ("REGISTRY_GATE_UPSTREAM__CONNECT_TIMEOUT", "1s"),
    ];
    let gate = Gate::start_with_config(&config("", ""), &registry.url(), &env).await;
    let token = token(&gate, Some(TEST), &["repository:team/app:pull"]).await;
    assert_eq!(tags(&gate, "team/app", &token).await.status(), 200);

    // Down: refused connections.
    registry.kill();
    for _ in 0..3 {
        let resp = tags(&gate, "team/app", &token).await;
        let status = resp.status().as_u16();
        assert_eq!(status, 502);
        assert_eq!(
            error_code(status, &resp.bytes().await.expect("body")),
            "UNAVAILABLE"
        );
    }
    let health = http::client()
        .get(format!("{}/healthz", gate.url()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    // Back: served again, without touching the gate.
    registry.restart().await;
    let body = json_ok(tags(&gate, "team/app", &token).await).await;
    assert_eq!(body["tags"][0], "1.0");
    let blob = &image.blobs[1];
    let resp = bearer(
        Method::GET,
        &format!("{}/v2/team/app/blobs/{}", gate.url(), blob.0),
        &token,
    )
    .await;
    assert_eq!(resp.bytes().await.expect("blob").as_ref(), &blob.1[..]);

    // Misbehaving upstreams, each played by a few lines of TCP.
    for (what, behaviour, want) in [
        ("garbage", Broken::Garbage, 502),
        ("hangs up before answering", Broken::HangUp, 502),
        ("never answers", Broken::Silent, 504),
    ] {
        let broken = broken_upstream(behaviour).await;
        let gate =
            Gate::start_with_config(&config("", ""), &format!("http://{broken}"), &env).await;
        let token = token_for(&gate, TEST, &["repository:team/app:pull"]).await;
        let resp = tags(&gate, "team/app", &token).await;
        let status = resp.status().as_u16();
        assert_eq!(status, want, "{what}");
        assert_eq!(
            error_code(status, &resp.bytes().await.expect("body")),
            "UNAVAILABLE",
            "{what}"
        );
    }

    // Dying half way through a body: the client sees a broken transfer (the
    // status line was sent already), and the gate serves the next request.
    let broken = broken_upstream(Broken::Truncated).await;
    let gate = Gate::start_with_config(&config("", ""), &format!("http://{broken}"), &env).await;
    let token = token_for(&gate, TEST, &["repository:team/app:pull"]).await;
    for _ in 0..2 {
        let resp = bearer(
            Method::GET,
            &format!("{}/v2/team/app/blobs/{DIGEST}", gate.url()),
            &token,
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert!(
            resp.bytes().await.is_err(),
            "a truncated body looked complete"
        );
    }
    let health = http::client()
        .get(format!("{}/healthz", gate.url()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
}

#[derive(Clone, Copy)]
enum Broken {
    /// Answers every request with bytes that are not HTTP.
    Garbage,
    /// Closes the connection once the request head is read.
    HangUp,
    /// Reads and never answers.
    Silent,
    /// Promises 1 MB, sends 1 KB, resets the connection.
    Truncated,
}

async fn broken_upstream(behaviour: Broken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                match behaviour {
                    Broken::Garbage => {
                        let _ = s
                            .write_all(b"SSH-2.0-OpenSSH\r\n\x00\x01\x02 not http\r\n\r\n")
                            .await;
                    }
                    Broken::HangUp => {}
                    Broken::Silent => {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await;
                    }
                    Broken::Truncated => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nContent-Type: application/octet-stream\r\n\r\n")
                            .await;
                        let _ = s.write_all(&[b'x'; 1024]).await;
                        let _ = s.flush().await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = s.set_zero_linger();
                    }
                }
            });
        }
    });
    addr
}

/// Whether any upload in the registry's storage has received data.
fn upload_in_progress(registry: &Registry) -> bool {
    fn walk(dir: &std::path::Path) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                path.file_name().is_some_and(|n| n == "data")
                    && path.to_string_lossy().contains("/_uploads/")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            }
        })
    }
    walk(&registry.storage().join("docker/registry/v2/repositories"))
}

/// The upstream dies while skopeo pushes through the gate: the push fails
/// with an error, the gate answers registry errors while the upstream is
/// down and serves again, push included, once it is back.
#[tokio::test]
async fn upstream_killed_during_a_skopeo_push() {
    let mut registry = Registry::start().await;
    let gate = Gate::start_with_config(&config("", ""), &registry.url(), &[]).await;
    let skopeo = Skopeo::new();
    let reference = format!("{}/team/big:1.0", gate.addr);
    let token = token_for(&gate, ADMIN, &["repository:team/big:pull,push"]).await;

    let mut killed_mid_push = false;
    let mut image = OciImage::generate_sized(48 << 20);
    for _ in 0..3 {
        let out = {
            let push = skopeo.push(&image, &reference, Some(ADMIN));
            tokio::pin!(push);
            loop {
                tokio::select! {
                    out = &mut push => break out,
                    () = tokio::time::sleep(Duration::from_millis(2)) => {
                        if !killed_mid_push && upload_in_progress(&registry) {
                            registry.kill();
                            killed_mid_push = true;
                        }
                    }
                }
            }
        };
        if killed_mid_push {
            assert!(
                !out.status.success(),
                "push succeeded although the upstream died during it"
            );
            break;
        }
        // The push beat us to it: try again with another image.
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        image = OciImage::generate_sized(48 << 20);
    }
    assert!(killed_mid_push, "never caught a push in progress");

    let resp = tags(&gate, "team/big", &token).await;
    let status = resp.status().as_u16();
    assert_eq!(status, 502);
    assert_eq!(
        error_code(status, &resp.bytes().await.expect("body")),
        "UNAVAILABLE"
    );

    registry.restart().await;
    let out = skopeo.push(&image, &reference, Some(ADMIN)).await;
    assert!(
        out.status.success(),
        "push after restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        skopeo.inspect_digest(&reference, Some(TEST)).await,
        image.manifest_digest
    );
}

/// SIGTERM while a large blob is being pulled: new connections are refused
/// at once, the pull completes intact, then the gate exits cleanly.
#[tokio::test]
async fn sigterm_during_a_large_pull_lets_it_complete() {
    let registry = Registry::start().await;
    let image = registry.seed_sized("team/big", "1.0", 64 << 20).await;
    let mut gate = Gate::start_with_config(&config("", ""), &registry.url(), &[]).await;
    let token = token_for(&gate, TEST, &["repository:team/big:pull"]).await;
    let (digest, data) = &image.blobs[1];

    let mut s = TcpStream::connect(gate.addr).await.expect("connect");
    let request = format!(
        "GET /v2/team/big/blobs/{digest} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
        gate.addr
    );
    s.write_all(request.as_bytes()).await.expect("request");
    let mut received = Vec::with_capacity(data.len() + 1024);
    let mut chunk = vec![0u8; 256 * 1024];
    // Read slowly: the transfer is still going when the signal comes.
    while received.len() < 2 << 20 {
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed early");
        received.extend_from_slice(&chunk[..n]);
    }
    gate.sigterm();
    let refused_by = Instant::now() + Duration::from_secs(5);
    loop {
        if TcpStream::connect(gate.addr).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < refused_by,
            "new connections still accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        let n = s.read(&mut chunk).await.expect("read during shutdown");
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let head_end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &received[..40]
    );
    let body = &received[head_end..];
    assert_eq!(body.len(), data.len(), "incomplete body");
    assert_eq!(sha256_digest(body), *digest);
    let status = gate
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the gate exits after draining");
    assert!(status.success(), "{status}");
    assert!(
        gate.log().contains("all connections closed"),
        "{}",
        gate.log()
    );
}

fn write_key(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let path = dir.join(name);
    std::fs::write(&path, key.serialize_pem()).expect("write key");
    (path, key.public_key_pem())
}

/// Instances sharing the signing key accept each other's tokens; after a
/// rotation, the old key listed in `token.previous_keys` keeps old tokens
/// valid on the new instances, and nowhere else.
#[tokio::test]
async fn instances_sharing_a_key_accept_each_others_tokens() {
    let registry = Registry::start().await;
    registry.seed("team/app", "1.0").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (old_key, old_public) = write_key(dir.path(), "old.pem");
    let (new_key, _) = write_key(dir.path(), "new.pem");
    let old_public_path = dir.path().join("old.pub.pem");
    std::fs::write(&old_public_path, old_public).expect("write public key");
    let with_key = |key: &std::path::Path, previous: &[&std::path::Path]| {
        let list: Vec<String> = previous
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect();
        config(
            &format!(
                "key = {:?}\nprevious_keys = [{}]",
                key.display().to_string(),
                list.join(", ")
            ),
            "",
        )
    };
    let a = Gate::start_with_config(&with_key(&old_key, &[]), &registry.url(), &[]).await;
    let b = Gate::start_with_config(&with_key(&old_key, &[]), &registry.url(), &[]).await;
    assert_ne!(a.addr, b.addr);
    let scope = ["repository:team/app:pull"];
    let from_a = token_for(&a, TEST, &scope).await;
    let from_b = token_for(&b, TEST, &scope).await;
    for (gate, token) in [(&a, &from_b), (&b, &from_a), (&a, &from_a)] {
        let body = json_ok(tags(gate, "team/app", token).await).await;
        assert_eq!(body["tags"][0], "1.0");
    }

    // Rotation: new instances sign with the new key and accept the old one.
    let c = Gate::start_with_config(
        &with_key(&new_key, &[&old_public_path]),
        &registry.url(),
        &[],
    )
    .await;
    let strict = Gate::start_with_config(&with_key(&new_key, &[]), &registry.url(), &[]).await;
    assert_eq!(tags(&c, "team/app", &from_a).await.status(), 200);
    assert_denied(&tags(&strict, "team/app", &from_a).await, "invalid_token");
    let from_c = token_for(&c, TEST, &scope).await;
    assert_eq!(tags(&strict, "team/app", &from_c).await.status(), 200);
    assert_denied(&tags(&a, "team/app", &from_c).await, "invalid_token");
    assert_ne!(jwt_parts(&from_a).0["kid"], jwt_parts(&from_c).0["kid"]);
}

fn write_cert(dir: &std::path::Path, cert: &str, key: &str) -> Vec<u8> {
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let certificate = params.self_signed(&key_pair).expect("certificate");
    // Written beside, then renamed: as a renewal tool replaces files.
    for (name, text) in [(key, key_pair.serialize_pem()), (cert, certificate.pem())] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }
    certificate.der().to_vec()
}

/// Connects over TLS trusting only `trusted`; the certificate served and
/// the ALPN protocol, or the handshake error.
async fn tls_connect(
    addr: SocketAddr,
    trusted: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<
    (
        tokio_rustls::client::TlsStream<TcpStream>,
        Vec<u8>,
        Option<Vec<u8>>,
    ),
    String,
> {
    let mut roots = rustls::RootCertStore::empty();
    for der in trusted {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
            .expect("root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let conn = stream.get_ref().1;
    let served = conn.peer_certificates().expect("peer certificates")[0].to_vec();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    Ok((stream, served, alpn))
}

/// TLS: HTTP/2 by ALPN (and TLS 1.2 still accepted), and a certificate
/// replaced on disk is served without a restart.
#[tokio::test]
async fn a_replaced_certificate_is_served_without_restart() {
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let first = write_cert(dir.path(), "cert.pem", "key.pem");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let env = [
        (
            "REGISTRY_GATE_SERVER__TLS__CERT",
            cert.to_str().expect("utf-8 path"),
        ),
        (
            "REGISTRY_GATE_SERVER__TLS__KEY",
            key.to_str().expect("utf-8 path"),
        ),
        ("REGISTRY_GATE_SERVER__TLS__RELOAD_INTERVAL", "200ms"),
    ];
    let gate = Gate::start_with_config(&config("", ""), &registry.url(), &env).await;
    assert!(gate.url().starts_with("https://"));
    let all = [&rustls::version::TLS13, &rustls::version::TLS12];

    let (stream, served, alpn) = tls_connect(gate.addr, &[&first], &all)
        .await
        .expect("handshake");
    assert_eq!(served, first);
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    // A real HTTP/2 exchange on it.
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = ::http::Request::get(format!("https://{}/healthz", gate.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("h2 request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), ::http::Version::HTTP_2);
    let (_, _, _) = tls_connect(gate.addr, &[&first], &[&rustls::version::TLS12])
        .await
        .expect("TLS 1.2 handshake");

    let second = write_cert(dir.path(), "cert.pem", "key.pem");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, served, _) = tls_connect(gate.addr, &[&first, &second], &all)
            .await
            .expect("handshake during renewal");
        if served == second {
            break;
        }
        assert_eq!(served, first);
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(tls_connect(gate.addr, &[&first], &all).await.is_err());
    // The log is written off the request path: wait for the line.
    gate.wait_log("TLS certificate reloaded", 1).await;
}

/// Manifest PUTs are limited (`limits.max_manifest_bytes`), whether the size
/// is declared or streamed; blobs are not.
#[tokio::test]
async fn oversized_manifests_are_refused() {
    let extra = "[limits]\nmax_manifest_bytes = 65536\n";
    let registry = Registry::start().await;
    let gate = Gate::start_with_config(&config("", extra), &registry.url(), &[]).await;
    let token = token_for(&gate, ADMIN, &["repository:team/m:pull,push"]).await;
    let url = format!("{}/v2/team/m/manifests/big", gate.url());

    // Declared too large: refused before a byte of the body is read.
    let head = format!(
        "PUT /v2/team/m/manifests/big HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: {MANIFEST_TYPE}\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n",
        gate.addr
    );
    let resp = raw_exchange(gate.addr, head.as_bytes()).await;
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(error_code(resp.status, &resp.body), "MANIFEST_INVALID");
    // A client that sends its (somewhat) too large body anyway reads the answer.
    let resp = http::client()
        .put(&url)
        .bearer_auth(&token)
        .header("content-type", MANIFEST_TYPE)
        .body(vec![b' '; 100_000])
        .send()
        .await
        .expect("PUT");
    let status = resp.status().as_u16();
    assert_eq!(status, 413);
    assert_eq!(
        error_code(status, &resp.bytes().await.expect("body")),
        "MANIFEST_INVALID"
    );
    let seen = registry.requests_settled().await;
    assert!(
        !seen
            .iter()
            .any(|r| r.starts_with("PUT /v2/team/m/manifests/")),
        "declared too large, yet forwarded: {seen:#?}"
    );

    // Chunked, no length declared: streamed to the upstream and cut off
    // as the limit passes (the upstream sees a broken request).
    let mut request = format!(
        "PUT /v2/team/m/manifests/big HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: {MANIFEST_TYPE}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        gate.addr
    )
    .into_bytes();
    for _ in 0..10 {
        request.extend_from_slice(format!("{:x}\r\n", 10_000).as_bytes());
        request.extend_from_slice(&[b' '; 10_000]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let resp = raw_exchange(gate.addr, &request).await;
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(error_code(resp.status, &resp.body), "MANIFEST_INVALID");

    let upstream = http::client()
        .get(format!("{}/v2/team/m/manifests/big", registry.url()))
        .header("accept", MANIFEST_TYPE)
        .send()
        .await
        .expect("GET upstream");
    assert_eq!(upstream.status(), 404);

    // A real push, with a layer far bigger than the manifest limit, works.
    let image = OciImage::generate_sized(1 << 20);
    push_http(
        &http::client(),
        &gate.url(),
        "team/m",
        "1.0",
        Some(&token),
        &image,
    )
    .await;
}

/// Clients that hang up mid-upload or mid-download leave no socket or task
/// behind: the gate's descriptors return to where they were.
#[tokio::test]
async fn client_disconnects_leak_nothing() {
    let registry = Registry::start().await;
    let image = registry.seed_sized("team/app", "1.0", 8 << 20).await;
    let gate = Gate::start_with_config(&config("", ""), &registry.url(), &[]).await;
    let token = token_for(&gate, ADMIN, &["repository:team/app:pull,push"]).await;
    // Warm up (pooled upstream connections count as descriptors).
    assert_eq!(tags(&gate, "team/app", &token).await.status(), 200);
    let baseline = open_fds(gate.pid());
    let (digest, _) = &image.blobs[1];

    for i in 0..30 {
        let mut s = TcpStream::connect(gate.addr).await.expect("connect");
        let request = if i % 2 == 0 {
            // An upload that promises 10 MB and stops after 1 MB.
            let start = bearer(
                Method::POST,
                &format!("{}/v2/team/app/blobs/uploads/", gate.url()),
                &token,
            )
            .await;
            assert_eq!(start.status(), 202);
            let location = start.headers()["location"]
                .to_str()
                .expect("ascii")
                .to_string();
            let path = location.trim_start_matches(&gate.url()).to_string();
            format!(
                "PATCH {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: 10485760\r\n\r\n",
                gate.addr
            )
        } else {
            // A download read for a moment, then dropped.
            format!(
                "GET /v2/team/app/blobs/{digest} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
                gate.addr
            )
        };
        s.write_all(request.as_bytes()).await.expect("head");
        if i % 2 == 0 {
            s.write_all(&vec![b'x'; 1 << 20]).await.expect("body");
        } else {
            let mut buf = vec![0u8; 64 * 1024];
            let _ = s.read(&mut buf).await;
        }
        drop(s);
    }
    eventually(
        "descriptors back to the baseline",
        Duration::from_secs(10),
        || open_fds(gate.pid()) <= baseline + 2,
    )
    .await;
    assert_eq!(tags(&gate, "team/app", &token).await.status(), 200);
}

/// Hundreds of concurrent clients on loopback, bounded in count and time:
/// every answer is the one intended (including intended refusals), and the
/// gate's memory stays bounded.
#[tokio::test]
async fn load_hundreds_of_concurrent_clients() {
    const CLIENTS: usize = 300;
    const ROUNDS: usize = 3;
    let extra = "[limits]\nmax_connections = 2000\n";
    let registry = Registry::start().await;
    let image = registry.seed("team/app", "1.0").await;
    let gate = std::sync::Arc::new(
        Gate::start_with_config(&config("", extra), &registry.url(), &[]).await,
    );
    // Warm the login cache and the connection pool.
    let warm = token_for(&gate, TEST, &["repository:team/app:pull"]).await;
    assert_eq!(tags(&gate, "team/app", &warm).await.status(), 200);
    let rss_before = rss_kib(gate.pid());
    let fds_before = open_fds(gate.pid());

    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_before));
    let sampling = {
        let (pid, peak) = (gate.pid(), peak.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = Instant::now();
    let blob = image.blobs[1].clone();
    let manifest = image.manifest_digest.clone();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (gate, blob, manifest, barrier) = (
                gate.clone(),
                blob.clone(),
                manifest.clone(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                // Each client its own connection pool: CLIENTS connections,
                // each client from its own address, as real clients are (one
                // address may hold only limits.max_connections_per_address).
                let client = client_from(&format!("127.0.{}.{}", 1 + i / 200, 1 + i % 200));
                barrier.wait().await;
                let mut unexpected = Vec::new();
                let check = |unexpected: &mut Vec<String>, what: &str, got: u16, want: u16| {
                    if got != want {
                        unexpected.push(format!("client {i} {what}: {got}, want {want}"));
                    }
                };
                // One login per client, as docker does; then the pulls.
                let resp = client
                    .get(format!("{}/auth", gate.url()))
                    .query(&[("service", SERVICE), ("scope", "repository:team/app:pull")])
                    .basic_auth(TEST.0, Some(TEST.1))
                    .send()
                    .await;
                let token = match resp {
                    Ok(resp) => {
                        check(&mut unexpected, "token", resp.status().as_u16(), 200);
                        let body: Value = resp.json().await.unwrap_or_default();
                        body["token"].as_str().unwrap_or_default().to_string()
                    }
                    Err(e) => {
                        unexpected.push(format!("client {i}: token request failed: {e}"));
                        String::new()
                    }
                };
                for _ in 0..ROUNDS {
                    let get = |path: String| {
                        client
                            .get(format!("{}{path}", gate.url()))
                            .bearer_auth(&token)
                            .header("accept", MANIFEST_TYPE)
                            .send()
                    };
                    match get(format!("/v2/team/app/manifests/{manifest}")).await {
                        Ok(r) => check(&mut unexpected, "manifest", r.status().as_u16(), 200),
                        Err(e) => unexpected.push(format!("client {i} manifest: {e}")),
                    }
                    match get(format!("/v2/team/app/blobs/{}", blob.0)).await {
                        Ok(r) => {
                            check(&mut unexpected, "blob", r.status().as_u16(), 200);
                            let bytes = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                            if bytes != blob.1 {
                                unexpected.push(format!("client {i}: blob differs"));
                            }
                        }
                        Err(e) => unexpected.push(format!("client {i} blob: {e}")),
                    }
                    // Intended refusals: out of scope, and a hostile path.
                    match get("/v2/team/other/tags/list".into()).await {
                        Ok(r) => check(&mut unexpected, "out of scope", r.status().as_u16(), 401),
                        Err(e) => unexpected.push(format!("client {i} out of scope: {e}")),
                    }
                    match get("/v2/team/App/tags/list".into()).await {
                        Ok(r) => check(&mut unexpected, "hostile", r.status().as_u16(), 404),
                        Err(e) => unexpected.push(format!("client {i} hostile: {e}")),
                    }
                }
                unexpected
            })
        })
        .collect();
    let mut unexpected = Vec::new();
    for t in tasks {
        unexpected.extend(
            tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .expect("load test bounded in time")
                .expect("client task"),
        );
    }
    let took = started.elapsed();
    sampling.abort();
    assert!(
        unexpected.is_empty(),
        "{} unexpected: {:#?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(20)]
    );
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "load: {CLIENTS} clients, 1 login and {ROUNDS} x 4 requests each, in {took:?}; gate RSS {rss_before} KiB before, {peak} KiB peak"
    );
    // Bounded: a generous per-connection allowance, not proportional to
    // the bytes served.
    assert!(
        peak < rss_before + 256 * CLIENTS as u64 + 32 * 1024,
        "RSS grew from {rss_before} KiB to {peak} KiB"
    );
    eventually("connections released", Duration::from_secs(15), || {
        open_fds(gate.pid()) <= fds_before + 70
    })
    .await;
}

/// Plain HTTP sent to the TLS port gets a plain-text 400 saying so, rather
/// than a TLS alert clients report as a "malformed HTTP response".
#[tokio::test]
async fn plain_http_on_the_tls_port_is_told_to_use_https() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let first = write_cert(dir.path(), "cert.pem", "key.pem");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let env = [
        (
            "REGISTRY_GATE_SERVER__TLS__CERT",
            cert.to_str().expect("utf-8 path"),
        ),
        (
            "REGISTRY_GATE_SERVER__TLS__KEY",
            key.to_str().expect("utf-8 path"),
        ),
    ];
    let gate = Gate::start_with_config(&config("", ""), &registry.url(), &env).await;
    let mut tcp = TcpStream::connect(gate.addr).await.expect("connect");
    tcp.write_all(b"GET /v2/ HTTP/1.1\r\nHost: gate\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("speaks HTTPS"), "{answer}");
    // And TLS clients are still served.
    let all = [&rustls::version::TLS13, &rustls::version::TLS12];
    tls_connect(gate.addr, &[&first], &all)
        .await
        .expect("handshake");
}

// ---------------------------------------------------------------------------
// Issue 17 (hardening, round 2): the regression test of each finding.

/// A registry catalog played by a few lines of TCP: `names` (sorted), paged
/// as distribution pages them (`n` default 100, `n > 1000` refused with 400
/// PAGINATION_NUMBER_INVALID, names after `last`, `Link` when more follow).
/// With `refuse`, every catalog request gets `401`. Any other path: `/v2/`
/// answers `{}`, everything else 404. Counts catalog requests.
struct FakeCatalog {
    addr: SocketAddr,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeCatalog {
    async fn start(names: Vec<String>, refuse: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let names = std::sync::Arc::new(names);
        let counter = calls.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let names = names.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let target = head.split(' ').nth(1).unwrap_or("/").to_owned();
                        let (status, link, body) =
                            FakeCatalog::answer(&names, &target, refuse, &counter);
                        let link = link
                            .map(|l| format!("Link: <{l}>; rel=\"next\"\r\n"))
                            .unwrap_or_default();
                        let resp = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{link}Content-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeCatalog { addr, calls }
    }

    fn answer(
        names: &[String],
        target: &str,
        refuse: bool,
        calls: &std::sync::atomic::AtomicUsize,
    ) -> (&'static str, Option<String>, String) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if path == "/v2/" {
            return ("200 OK", None, "{}".into());
        }
        if path != "/v2/_catalog" {
            return (
                "404 Not Found",
                None,
                r#"{"errors":[{"code":"NOT_FOUND"}]}"#.into(),
            );
        }
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if refuse {
            return (
                "401 Unauthorized",
                None,
                r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.into(),
            );
        }
        let (mut n, mut last) = (100usize, String::new());
        for (k, v) in url_pairs(query) {
            match k.as_str() {
                "n" => n = v.parse().unwrap_or(100),
                "last" => last = v,
                _ => {}
            }
        }
        if n > 1000 {
            return (
                "400 Bad Request",
                None,
                r#"{"errors":[{"code":"PAGINATION_NUMBER_INVALID"}]}"#.into(),
            );
        }
        let start = names.partition_point(|x| x.as_str() <= last.as_str());
        let page: Vec<&String> = names[start..].iter().take(n).collect();
        let link = (start + page.len() < names.len()).then(|| {
            format!(
                "/v2/_catalog?last={}&n={n}",
                page.last().map_or("", |s| s.as_str())
            )
        });
        (
            "200 OK",
            link,
            serde_json::json!({ "repositories": page }).to_string(),
        )
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `k=v&...`, percent-decoded.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// The repository names of a `_catalog` answer.
fn repositories(body: &Value) -> Vec<String> {
    body["repositories"]
        .as_array()
        .expect("repositories")
        .iter()
        .map(|v| v.as_str().expect("name").to_owned())
        .collect()
}

/// Finding 10: `_catalog?n=1001..10000` was forwarded as is, the registry
/// refused it (`n > 1000`), and the gate said the upstream "could not be
/// reached". Now the gate answers what distribution answers itself (400
/// `PAGINATION_NUMBER_INVALID`, issue 19's fidelity), never a 502, and pages
/// up to the limit work; an upstream refusal is reported as one.
#[tokio::test]
async fn catalog_pages_beyond_the_registry_limit_are_refused_as_the_registry_does() {
    let names: Vec<String> = (0..1500).map(|i| format!("team/r{i:04}")).collect();
    let upstream = FakeCatalog::start(names, false).await;
    let gate = Gate::start_with_config(&config("", ""), &upstream.url(), &[]).await;
    let token = token_for(&gate, ADMIN, &["registry:catalog:*"]).await;
    for n in [1001, 5000, 10_000] {
        let url = format!("{}/v2/_catalog?n={n}", gate.url());
        let resp = bearer(Method::GET, &url, &token).await;
        assert_eq!(resp.status(), 400, "n={n}");
        let body: Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
        assert_eq!(
            body["errors"][0]["code"], "PAGINATION_NUMBER_INVALID",
            "{body}"
        );
    }
    let url = format!("{}/v2/_catalog?n=1000", gate.url());
    let resp = bearer(Method::GET, &url, &token).await;
    assert_eq!(resp.status(), 200);
    let link = resp
        .headers()
        .get("link")
        .map(|v| v.to_str().expect("link").to_owned())
        .expect("a Link to the next page");
    let got = repositories(&json_ok(resp).await);
    assert_eq!(got.len(), 1000);
    assert_eq!(got[999], "team/r0999");
    assert!(link.contains("last=team/r0999"), "{link}");

    let refusing = FakeCatalog::start(Vec::new(), true).await;
    let gate = Gate::start_with_config(&config("", ""), &refusing.url(), &[]).await;
    let token = token_for(&gate, ADMIN, &["registry:catalog:*"]).await;
    let resp = bearer(Method::GET, &format!("{}/v2/_catalog", gate.url()), &token).await;
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
    assert_eq!(status, 502, "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(!message.contains("could not be reached"), "{body}");
    assert!(message.contains("refused"), "{body}");
    assert!(refusing.calls() > 0, "the refusal came from the upstream");
}

/// A local address that is not loopback (the source of the default route),
/// so a test can be a remote caller of a gate on loopback.
fn non_loopback_ip() -> IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket");
    // connect() on UDP sends nothing; it only picks the source address.
    probe
        .connect("192.0.2.1:9")
        .expect("this host needs a non-loopback address (a default route) for this test");
    let ip = probe.local_addr().expect("local address").ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    ip
}

/// Finding 9: `/readyz` told anyone the upstream's address and why it
/// failed (`connecting to 127.0.0.1:5999: Connection refused`). A remote
/// caller learns which check fails; a caller on the host, the detail.
#[tokio::test]
async fn readiness_details_are_not_told_to_remote_callers() {
    let nowhere = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let gate = Gate::start_with_config(&config("", ""), &nowhere, &[]).await;
    let url = format!("{}/readyz", gate.url());
    let remote = client_from(&non_loopback_ip().to_string())
        .get(&url)
        .send()
        .await
        .expect("readyz from a remote address");
    assert_eq!(remote.status(), 503);
    let body: Value = remote.json().await.expect("json");
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["upstream"], "unavailable", "{body}");
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");

    let local = http::client().get(&url).send().await.expect("readyz");
    assert_eq!(local.status(), 503);
    let body: Value = local.json().await.expect("json");
    let upstream = body["upstream"].as_str().unwrap_or_default();
    assert!(upstream.contains("127.0.0.1"), "{body}");
    gate.wait_log("not ready", 1).await;
}

/// Finding 11: `/metrics` was public on the main port by default. It now
/// answers there only callers on the gate's host unless `[metrics] public`
/// says otherwise.
#[tokio::test]
async fn metrics_on_the_main_port_are_for_this_host_by_default() {
    let remote = client_from(&non_loopback_ip().to_string());
    let gate = Gate::start_with_config(&config("", ""), "http://127.0.0.1:9", &[]).await;
    let url = format!("{}/metrics", gate.url());
    let resp = remote.get(&url).send().await.expect("metrics, remote");
    assert_eq!(resp.status(), 404);
    let body = resp.text().await.expect("body");
    assert!(!body.contains("registry_gate_"), "{body}");
    let local = http::client()
        .get(&url)
        .send()
        .await
        .expect("metrics, local");
    assert_eq!(local.status(), 200);
    assert!(local.text().await.expect("body").contains("registry_gate_"));

    let env = [("REGISTRY_GATE_METRICS__PUBLIC", "true")];
    let gate = Gate::start_with_config(&config("", ""), "http://127.0.0.1:9", &env).await;
    let resp = remote
        .get(format!("{}/metrics", gate.url()))
        .send()
        .await
        .expect("metrics, remote, public");
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.expect("body").contains("registry_gate_"));
}

/// Finding 7, without LDAP: an unknown account was refused without any
/// bcrypt check (the dummy hash was never reached), so `admin` and `test`
/// could be told from unknown names by timing. The gate's CPU work per
/// rejected login is the same for both.
#[tokio::test]
async fn unknown_accounts_cost_the_same_bcrypt_as_static_ones() {
    let env = [("REGISTRY_GATE_RATELIMIT__ENABLED", "false")];
    let gate = Gate::start_with_config(&config("", ""), "http://127.0.0.1:9", &env).await;
    let pid = gate.pid();
    let client = http::client();
    let spent = |accounts: [&'static str; 2]| {
        let (gate, client) = (&gate, &client);
        async move {
            let before = crate::harness::cpu_time(pid);
            for i in 0..3 {
                for account in accounts {
                    // A different wrong password each time: no cache answers.
                    let resp = login(client, gate, (account, &format!("wrong-{i}"))).await;
                    assert_eq!(resp.status(), 401, "{account}");
                }
            }
            crate::harness::cpu_time(pid) - before
        }
    };
    let known = spent(["admin", "test"]).await;
    let unknown = spent(["nobody", "admin2"]).await;
    assert!(
        known >= Duration::from_millis(20),
        "bcrypt cost too little to compare: {known:?}"
    );
    assert!(
        unknown * 2 >= known,
        "unknown accounts cost {unknown:?}, static ones {known:?}"
    );
}

/// `GET url` with a bearer token: the repositories and the `Link` target.
async fn catalog_page(url: &str, token: &str) -> (Vec<String>, Option<String>) {
    let resp = bearer(Method::GET, url, token).await;
    assert_eq!(resp.status(), 200, "{url}");
    let link = resp
        .headers()
        .get("link")
        .map(|v| v.to_str().expect("link").to_owned());
    (repositories(&json_ok(resp).await), link)
}

/// Finding 4: the `Link` cursor was the last name the gate had looked at.
/// After 50 upstream pages without a visible name it was a hidden one
/// (`last=hidden/r04999`), and since `last` is the client's to choose,
/// bisection could recover hidden names. Every cursor is now a name the
/// caller was shown, and pages hold visible names only.
#[tokio::test]
async fn catalog_cursors_name_nothing_hidden() {
    let mut names = vec!["aaa/one".to_string(), "zzz/two".to_string()];
    names.extend((0..6000).map(|i| format!("hidden/r{i:05}")));
    names.sort();
    let upstream = FakeCatalog::start(names, false).await;
    let deny = r#"[[acl]]
match = { account = "test", name = "hidden/*" }
actions = []

[[acl]]
match = { account = "test", type = "registry", name = "catalog" }
actions = ["*"]
"#;
    let gate = Gate::start_with_config(&config("", deny), &upstream.url(), &[]).await;
    let token = token_for(&gate, TEST, &["registry:catalog:*"]).await;

    let mut url = format!("{}/v2/_catalog?n=1", gate.url());
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (page, link) = catalog_page(&url, &token).await;
        assert!(page.iter().all(|n| !n.starts_with("hidden/")), "{page:?}");
        seen.extend(page.iter().cloned());
        let Some(link) = link else { break };
        assert!(!link.contains("hidden"), "{link}");
        let last = page.last().expect("a Link follows a non-empty page");
        assert!(link.contains(&format!("last={last}&")), "{link}");
        let target = &link[link.find('<').expect("<") + 1..link.find('>').expect(">")];
        url = format!("{}{target}", gate.url());
    }
    assert_eq!(seen, ["aaa/one", "zzz/two"]);

    // A cursor of the client's choosing (here a hidden name) gets the
    // visible names after it, and a cursor that names no hidden one.
    let url = format!("{}/v2/_catalog?n=1&last=hidden/r00100", gate.url());
    let (page, link) = catalog_page(&url, &token).await;
    assert_eq!(page, ["zzz/two"]);
    assert_eq!(link, None);
}

/// Finding 5: every anonymous `GET /ui/` read the whole upstream catalog
/// (25 upstream requests with 25,000 repositories) and `_catalog?n=1` up to
/// 50: a few requests were hundreds of upstream calls. One listing is now
/// read for all of them (single flight, kept for a few seconds), and a
/// push through the gate makes the next one fresh.
#[tokio::test]
async fn catalog_listing_is_shared_between_requests() {
    let names: Vec<String> = (0..25_000).map(|i| format!("team/r{i:05}")).collect();
    let upstream = FakeCatalog::start(names, false).await;
    let deny = r#"[[acl]]
match = { account = "test", name = "team/*" }
actions = []

[[acl]]
match = { account = "test", type = "registry", name = "catalog" }
actions = ["*"]
"#;
    let gate = Gate::start_with_config(&config("", deny), &upstream.url(), &[]).await;
    let token = token_for(&gate, TEST, &["registry:catalog:*"]).await;
    let before = upstream.calls();
    let client = http::client();
    let ui = (0..4).map(|_| {
        let (client, url) = (client.clone(), format!("{}/ui/", gate.url()));
        async move {
            let resp = client.get(url).send().await.expect("GET /ui/");
            assert_eq!(resp.status(), 200);
        }
    });
    let catalog = (0..4).map(|_| {
        let (url, token) = (format!("{}/v2/_catalog?n=1", gate.url()), token.clone());
        async move {
            let (page, link) = catalog_page(&url, &token).await;
            assert!(page.is_empty() && link.is_none(), "{page:?} {link:?}");
        }
    });
    let started = Instant::now();
    tokio::join!(
        futures_util::future::join_all(ui),
        futures_util::future::join_all(catalog)
    );
    let calls = upstream.calls() - before;
    // One listing: 25 pages of 1000 names (before: 4 x 25 + 4 x 50 = 300).
    assert_eq!(calls, 25, "upstream catalog requests for 8 listings");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

/// A TCP connection to `to` from `from` (any 127.0.0.0/8 address).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from.parse().expect("ip"), 0))
        .expect("bind");
    socket.connect(to).await.expect("connect")
}

/// Whether the peer closed `s` within `within` (EOF or reset).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Finding 3: 1,030 silent connections from one address filled
/// `max_connections`, and `/healthz` and every client waited (the idle
/// timeout is 90 s, and the attacker reconnects). Now one address gets at
/// most `max_connections_per_address`, a silent connection is closed after
/// `first_request_timeout`, and when every slot is taken idle connections
/// make room. Scaled down: 48 slots, 16 per address.
#[tokio::test]
async fn idle_sockets_do_not_lock_others_out() {
    let env = [
        ("REGISTRY_GATE_LIMITS__MAX_CONNECTIONS", "48"),
        ("REGISTRY_GATE_LIMITS__MAX_CONNECTIONS_PER_ADDRESS", "16"),
        ("REGISTRY_GATE_LIMITS__FIRST_REQUEST_TIMEOUT", "1m"),
        ("REGISTRY_GATE_LIMITS__IDLE_TIMEOUT", "1m"),
        ("REGISTRY_GATE_LIMITS__HEADER_READ_TIMEOUT", "1m"),
    ];
    let gate = Gate::start_with_config(&config("", ""), "http://127.0.0.1:9", &env).await;
    // One address: 16 connections are kept, the next 4 closed at once.
    let mut kept = Vec::new();
    for _ in 0..16 {
        kept.push(connect_from("127.0.0.2", gate.addr).await);
    }
    for i in 0..4 {
        let mut extra = connect_from("127.0.0.2", gate.addr).await;
        assert!(
            closed_within(&mut extra, Duration::from_secs(10)).await,
            "connection {} from one address was kept",
            17 + i
        );
    }
    // Two more addresses take the remaining 32 slots, silently.
    for from in ["127.0.0.3", "127.0.0.4"] {
        for _ in 0..16 {
            kept.push(connect_from(from, gate.addr).await);
        }
    }
    // Every slot is held by a silent connection: another client is served
    // anyway, because idle connections make room.
    let started = Instant::now();
    let health = tokio::time::timeout(
        Duration::from_secs(20),
        client_from("127.0.0.9")
            .get(format!("{}/healthz", gate.url()))
            .send(),
    )
    .await
    .expect("/healthz answered while silent connections held every slot")
    .expect("healthz");
    assert_eq!(health.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(20));
    let mut closed = 0;
    for s in &mut kept {
        if closed_within(s, Duration::from_millis(1)).await {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no idle connection made room");
    drop(kept);

    // A silent connection is closed after first_request_timeout; one that
    // speaks in time is served.
    let env = [("REGISTRY_GATE_LIMITS__FIRST_REQUEST_TIMEOUT", "1s")];
    let gate = Gate::start_with_config(&config("", ""), "http://127.0.0.1:9", &env).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(gate.addr).await.expect("connect");
    assert!(closed_within(&mut silent, Duration::from_secs(15)).await);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    let health = http::client()
        .get(format!("{}/healthz", gate.url()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
}
