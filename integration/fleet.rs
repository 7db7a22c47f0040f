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
