//! Several gates as one (issue 18): state shared through the store.

use crate::harness::http;
use crate::harness::image::{OciImage, push_http};
use crate::harness::{Gate, Registry, gate};

/// The example config without LDAP (these tests need only static users).
fn config() -> String {
    let config = gate::example_config();
    config[..config.find("\n[ldap]").unwrap()].to_owned()
        + &config[config.find("\n# ACL").unwrap()..]
}

/// A browser-like UI session without a browser: plain HTTP with the
/// login form's CSRF token and cookies.
pub struct UiSession {
    pub cookie: String,
    pub csrf: String,
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn cookie_of(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

fn csrf_in(html: &str) -> String {
    let at =
        html.find(r#"name="csrf" value=""#).expect("a csrf field") + r#"name="csrf" value=""#.len();
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

/// Logs `account` in to `base`'s UI (any instance of the fleet).
pub async fn ui_login(base: &str, account: &str, password: &str) -> UiSession {
    let c = no_redirects();
    let page = c.get(format!("{base}/ui/login")).send().await.unwrap();
    let anon = cookie_of(&page, "rg_csrf").expect("csrf cookie");
    let csrf = csrf_in(&page.text().await.unwrap());
    let resp = c
        .post(format!("{base}/ui/login"))
        .header("cookie", &anon)
        .form(&[
            ("csrf", csrf.as_str()),
            ("account", account),
            ("password", password),
            ("next", "/ui/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "login as {account}");
    let cookie = cookie_of(&resp, "rg_session").expect("a session cookie");
    let page = c
        .get(format!("{base}/ui/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let csrf = csrf_in(&page.text().await.unwrap());
    UiSession { cookie, csrf }
}

/// `GET path` with the session: (signed in as someone?, HTML).
pub async fn ui_get(base: &str, s: &UiSession, path: &str) -> (bool, String) {
    let resp = no_redirects()
        .get(format!("{base}{path}"))
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap();
    let html = resp.text().await.unwrap();
    (html.contains(r#"id="account""#), html)
}

pub async fn ui_logout(base: &str, s: &UiSession) {
    let resp = no_redirects()
        .post(format!("{base}/ui/logout"))
        .header("cookie", &s.cookie)
        .form(&[("csrf", s.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
}

/// The activity page as `admin` sees it (HTML).
async fn activity(gate: &Gate) -> String {
    let s = ui_login(&gate.url(), "admin", "badmin").await;
    ui_get(&gate.url(), &s, "/ui/activity").await.1
}

#[tokio::test]
async fn activity_survives_a_restart_with_an_sqlite_store() {
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/store.db", dir.path().display());
    let env = [("REGISTRY_GATE_STORE__URL", url.as_str())];
    let first = Gate::start_with_config(&config(), &registry.url(), &env).await;
    let token = http::token(
        &first,
        Some(("admin", "badmin")),
        &["repository:team/app:pull,push"],
    )
    .await;
    push_http(
        &http::client(),
        &first.url(),
        "team/app",
        "before-restart",
        Some(&token),
        &OciImage::generate(),
    )
    .await;
    first.wait_log("\"event\":\"upstream_write\"", 1).await;
    // A graceful stop waits for the rows still on their way to the store.
    let mut first = first;
    first.sigterm();
    assert!(
        first
            .wait_exit(std::time::Duration::from_secs(30))
            .await
            .is_some(),
        "the gate stops"
    );
    drop(first);
    let second = Gate::start_with_config(&config(), &registry.url(), &env).await;
    let html = activity(&second).await;
    assert!(
        html.contains("before-restart"),
        "the write is gone after a restart:\n{html}"
    );
}

#[tokio::test]
async fn a_ui_logout_on_one_gate_ends_the_session_on_another() {
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/store.db", dir.path().display());
    let key = dir.path().join("key.pem");
    let out = gate::cli(
        &["gen-key", "--out", key.to_str().unwrap()],
        &[],
        "",
        dir.path(),
    )
    .await;
    assert!(out.status.success());
    // Two instances: one store, one signing key (a session made by one is
    // valid on the other).
    let env = [
        ("REGISTRY_GATE_STORE__URL", url.as_str()),
        ("REGISTRY_GATE_TOKEN__KEY", key.to_str().unwrap()),
    ];
    let (text, upstream) = (config(), registry.url());
    let (a, b) = tokio::join!(
        Gate::start_with_config(&text, &upstream, &env),
        Gate::start_with_config(&text, &upstream, &env)
    );
    let s = ui_login(&a.url(), "admin", "badmin").await;
    assert!(
        ui_get(&b.url(), &s, "/ui/").await.0,
        "the session works on the other instance"
    );
    ui_logout(&a.url(), &s).await;
    assert!(
        !ui_get(&a.url(), &s, "/ui/").await.0,
        "ended where it was clicked, at once"
    );
    let started = std::time::Instant::now();
    while ui_get(&b.url(), &s, "/ui/").await.0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the other instance still accepts the session"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!(
        "logout reached the other instance after {:?}",
        started.elapsed()
    );
}

/// A client whose connections come from `source` (a loopback address),
/// one per request (a TCP balancer spreads connections, not requests).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// The status of a token request for `scope` with Basic credentials.
async fn token_status(c: &reqwest::Client, base: &str, user: &str, pw: &str, scope: &str) -> u16 {
    c.get(format!("{base}/auth"))
        .query(&[("service", "Docker registry"), ("scope", scope)])
        .basic_auth(user, Some(pw))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// What a token request for `scope` grants (`None`: refused).
async fn granted(
    c: &reqwest::Client,
    base: &str,
    user: &str,
    pw: &str,
    scope: &str,
    xff: Option<&str>,
) -> Option<Value> {
    let mut req = c
        .get(format!("{base}/auth"))
        .query(&[("service", "Docker registry"), ("scope", scope)])
        .basic_auth(user, Some(pw));
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    let resp = req.send().await.unwrap();
    if resp.status() != 200 {
        return None;
    }
    let body: Value = resp.json().await.unwrap();
    Some(http::jwt_parts(body["token"].as_str().unwrap()).1["access"].clone())
}

/// Polls `f` until it holds, at most 10 s (what other instances learn
/// through the store, they learn within `[tokens] cache_ttl`).
async fn within_10s<F, Fut>(what: &str, mut f: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !f().await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "not within 10 s: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    started.elapsed()
}

use crate::harness::balancer::{Balancer, NGINX_SOURCE};

/// nginx connects to the gates from here: the one trusted proxy.
const TRUSTED: &str = NGINX_SOURCE;
use crate::harness::postgres::Postgres;
use crate::harness::slapd::{self, Slapd};
use serde_json::{Value, json};

/// The fleet's config: the example's users, LDAP and ACL, with `test` also
/// pushing from one address (an `ip` rule), nginx's address trusted, a
/// long first back-off (so a lockout outlasts the test's next request).
fn fleet_config() -> String {
    let example = gate::example_config();
    let acl_at = example.find("\n# ACL").unwrap();
    format!(
        "{}\n[ratelimit]\nfailures_per_account = 5\nfailures_per_address = 0\nbackoff = \"1m\"\n{}",
        &example[..acl_at],
        example[acl_at..].replacen(
            "[[acl]]",
            "[[acl]]\nmatch = { account = \"test\", ip = \"127.0.0.9\" }\nactions = [\"pull\", \"push\"]\n\n[[acl]]",
            1
        )
    )
}

#[tokio::test]
async fn three_gates_behind_nginx_act_as_one_through_postgresql() {
    let (mut pg, registry, mut ldap) = tokio::join!(
        Postgres::start(),
        Registry::start(),
        Slapd::start(slapd::SlapdOptions::default())
    );
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    assert!(
        gate::cli(
            &["gen-key", "--out", key.to_str().unwrap()],
            &[],
            "",
            dir.path()
        )
        .await
        .status
        .success()
    );
    let (store, password_file, ldap_url) = (pg.url(), pg.password_file(), ldap.url());
    let trusted = format!("[\"{TRUSTED}/32\"]");
    let env = [
        ("REGISTRY_GATE_STORE__URL", store.as_str()),
        (
            "REGISTRY_GATE_STORE__PASSWORD_FILE",
            password_file.to_str().unwrap(),
        ),
        ("REGISTRY_GATE_TOKEN__KEY", key.to_str().unwrap()),
        ("REGISTRY_GATE_LDAP__URL", ldap_url.as_str()),
        ("REGISTRY_GATE_SERVER__TRUSTED_PROXIES", &trusted),
    ];
    let (text, upstream) = (fleet_config(), registry.url());
    let (a, b, c) = tokio::join!(
        Gate::start_with_config(&text, &upstream, &env),
        Gate::start_with_config(&text, &upstream, &env),
        Gate::start_with_config(&text, &upstream, &env)
    );
    let gates = [&a, &b, &c];
    let lb = Balancer::nginx(&[a.addr, b.addr, c.addr]).await;
    let here = client_from("127.0.0.9");
    let elsewhere = client_from("127.0.0.1");

    // The real client address behind the proxy: `test` pushes only from
    // 127.0.0.9; a spoofed X-Forwarded-For changes nothing, through nginx
    // (it appends the real address) or straight to a gate (not trusted).
    let push = "repository:test/app:pull,push";
    for _ in 0..3 {
        let got = granted(&here, &lb.url(), "test", "123", push, None)
            .await
            .unwrap();
        assert_eq!(
            got[0]["actions"],
            json!(["pull", "push"]),
            "from 127.0.0.9 via nginx"
        );
        let got = granted(
            &elsewhere,
            &lb.url(),
            "test",
            "123",
            push,
            Some("127.0.0.9"),
        )
        .await
        .unwrap();
        assert_eq!(got[0]["actions"], json!(["pull"]), "spoofed through nginx");
    }
    let got = granted(&elsewhere, &a.url(), "test", "123", push, Some("127.0.0.9"))
        .await
        .unwrap();
    assert_eq!(
        got[0]["actions"],
        json!(["pull"]),
        "spoofed straight to a gate"
    );
    a.wait_log("\"client\":\"127.0.0.9\"", 1).await;

    // Brute force counted across instances: 5 failures in total lock the
    // account, though nginx spread them over three gates.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(token_status(&here, &lb.url(), "bach", "wrong", "repository:x/y:pull").await);
    }
    assert_eq!(statuses, [401; 5]);
    for _ in 0..3 {
        assert_eq!(
            token_status(&here, &lb.url(), "bach", "password", "repository:x/y:pull").await,
            429,
            "locked on every instance"
        );
    }

    // A UI logout on one instance ends the session on all.
    let s = ui_login(&a.url(), "admin", "badmin").await;
    for g in gates {
        assert!(ui_get(&g.url(), &s, "/ui/").await.0);
    }
    ui_logout(&a.url(), &s).await;
    for g in [&b, &c] {
        let took = within_10s("logout on the others", || async {
            !ui_get(&g.url(), &s, "/ui/").await.0
        })
        .await;
        println!("fleet: logout reached {} after {took:?}", g.addr);
    }

    // The activity page on any instance lists the pushes made through all.
    for (i, g) in gates.iter().enumerate() {
        let token = http::token(
            g,
            Some(("admin", "badmin")),
            &["repository:team/app:pull,push"],
        )
        .await;
        push_http(
            &http::client(),
            &g.url(),
            "team/app",
            &format!("via-{i}"),
            Some(&token),
            &OciImage::generate(),
        )
        .await;
    }
    let admin = ui_login(&c.url(), "admin", "badmin").await;
    within_10s("every push on one activity page", || async {
        let html = ui_get(&c.url(), &admin, "/ui/activity").await.1;
        (0..3).all(|i| html.contains(&format!("via-{i}")))
    })
    .await;

    // A credential revoked through one instance is refused by all.
    let (status, made) = api_post(
        &a.url(),
        ("admin", "badmin"),
        "/api/v1/credentials",
        json!({"robot": "ci", "scopes": ["repository:team/*:pull"]}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let secret = made["secret"].as_str().unwrap().to_owned();
    for g in gates {
        assert_eq!(
            token_status(
                &here,
                &g.url(),
                "robot+ci",
                &secret,
                "repository:team/app:pull"
            )
            .await,
            200
        );
    }
    let id = made["id"].as_str().unwrap();
    let resp = reqwest::Client::new()
        .delete(format!("{}/api/v1/credentials/{id}", a.url()))
        .basic_auth("admin", Some("badmin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for g in gates {
        let took = within_10s("revocation everywhere", || async {
            token_status(
                &here,
                &g.url(),
                "robot+ci",
                &secret,
                "repository:team/app:pull",
            )
            .await
                == 401
        })
        .await;
        println!("fleet: revocation reached {} after {took:?}", g.addr);
    }

    // PostgreSQL down: tokens, static and LDAP logins go on; credential
    // logins get 503; back up, everything recovers without a restart.
    let robot = a
        .create_token(&["--robot", "up", "--scope", "repository:team/*:pull"])
        .await;
    let token = http::token(&a, Some(("admin", "badmin")), &["repository:team/app:pull"]).await;
    pg.stop();
    for g in gates {
        let resp = http::bearer(
            reqwest::Method::GET,
            &format!("{}/v2/team/app/tags/list", g.url()),
            &token,
        )
        .await;
        assert_eq!(resp.status(), 200, "a valid token with the store down");
        assert_eq!(
            token_status(
                &here,
                &g.url(),
                "admin",
                "badmin",
                "repository:team/app:pull"
            )
            .await,
            200
        );
        assert_eq!(
            token_status(
                &here,
                &g.url(),
                "mozart",
                "password",
                "repository:team/app:pull"
            )
            .await,
            200
        );
        within_10s("503 for credentials with the store down", || async {
            token_status(
                &here,
                &g.url(),
                "robot+up",
                &robot,
                "repository:team/app:pull",
            )
            .await
                == 503
        })
        .await;
    }
    pg.restart().await;
    for g in gates {
        let started = std::time::Instant::now();
        while token_status(
            &here,
            &g.url(),
            "robot+up",
            &robot,
            "repository:team/app:pull",
        )
        .await
            != 200
        {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "no recovery:\n{}",
                g.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    // LDAP down: every instance stays ready (degraded, said to loopback
    // callers), and a cached LDAP login goes on.
    ldap.stop();
    for g in gates {
        let body: Value = within_readyz(g).await;
        assert_eq!(body["ready"], true, "{body}");
        assert_eq!(body["degraded"], json!(["ldap"]), "{body}");
        assert_eq!(
            token_status(
                &here,
                &g.url(),
                "mozart",
                "password",
                "repository:team/app:pull"
            )
            .await,
            200
        );
    }
    ldap.restart().await;
}

/// `/readyz` once LDAP's outage is seen (its answer is cached 2 s); it
/// must stay 200 all along.
async fn within_readyz(g: &Gate) -> Value {
    let started = std::time::Instant::now();
    loop {
        let resp = http::client()
            .get(format!("{}/readyz", g.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "an LDAP outage must not make the gate unready"
        );
        let body: Value = resp.json().await.unwrap();
        if body["degraded"].is_array() {
            return body;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "readyz never saw LDAP down: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn api_post(base: &str, creds: (&str, &str), path: &str, body: Value) -> (u16, Value) {
    let resp = http::client()
        .post(format!("{base}{path}"))
        .basic_auth(creds.0, Some(creds.1))
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn gates_behind_haproxy_take_the_client_from_the_proxy_protocol() {
    let registry = Registry::start().await;
    let env = [("REGISTRY_GATE_SERVER__PROXY_PROTOCOL", "true")];
    let text = fleet_config();
    let text =
        text[..text.find("\n[ldap]").unwrap()].to_owned() + &text[text.find("\n# ACL").unwrap()..];
    let upstream = registry.url();
    let (a, b) = tokio::join!(
        Gate::start_with_config_no_wait(&text, &upstream, &env),
        Gate::start_with_config_no_wait(&text, &upstream, &env)
    );
    let lb = Balancer::haproxy(&[a.addr, b.addr]).await;
    let here = client_from("127.0.0.9");
    let push = "repository:test/app:pull,push";
    for _ in 0..2 {
        let got = granted(&here, &lb.url(), "test", "123", push, None)
            .await
            .unwrap();
        assert_eq!(
            got[0]["actions"],
            json!(["pull", "push"]),
            "the PROXY header names 127.0.0.9"
        );
    }
    let got = granted(
        &client_from("127.0.0.1"),
        &lb.url(),
        "test",
        "123",
        push,
        Some("127.0.0.9"),
    )
    .await
    .unwrap();
    assert_eq!(
        got[0]["actions"],
        json!(["pull"]),
        "X-Forwarded-For is not trusted here"
    );
    // Straight to a gate without a header: the connection is closed.
    assert!(
        http::client()
            .get(format!("{}/healthz", a.url()))
            .send()
            .await
            .is_err()
    );
    for g in [&a, &b] {
        g.wait_log("\"client\":\"127.0.0.9\"", 1).await;
    }
}
