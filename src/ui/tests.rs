//! The UI served by the real server in-process, in front of an in-process
//! fake upstream (the browser tests in `integration/ui.rs` use real ones):
//! sessions, CSRF, ACL filtering, and an upstream with deletion disabled.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::app::App;
use crate::audit::Event;
use crate::config::Config;
use crate::config::RawConfig;

use super::registry::sha256_digest;

const CONFIG_BLOB: &str = r#"{"created":"2024-05-01T10:00:00Z","architecture":"amd64","os":"linux","config":{"Entrypoint":["/app"]},"history":[{"created_by":"COPY app /app"}]}"#;

fn manifest() -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{}","size":1234}}]}}"#,
        sha256_digest(CONFIG_BLOB.as_bytes()),
        CONFIG_BLOB.len(),
        "ab".repeat(32)
    )
}

/// An upstream with `open/a:v1` and `closed/b:v1` whose deletes answer as
/// distribution does with `storage.delete.enabled: false`.
async fn fake_upstream(deletes: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let deletes = deletes.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let deletes = deletes.clone();
                    async move { Ok::<_, Infallible>(answer(&req, &deletes)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn answer(req: &Request<Incoming>, deletes: &AtomicUsize) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let m = manifest();
    let digest = sha256_digest(m.as_bytes());
    let config = sha256_digest(CONFIG_BLOB.as_bytes());
    let reply = |status: u16, ct: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", ct)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let repo = ["/v2/open/a/", "/v2/closed/b/"]
        .iter()
        .find_map(|p| path.strip_prefix(p));
    if req.method() == http::Method::DELETE {
        deletes.fetch_add(1, Ordering::SeqCst);
        return reply(
            405,
            "application/json",
            r#"{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}"#
                .into(),
        );
    }
    match (path, repo) {
        ("/v2/_catalog", _) => reply(
            200,
            "application/json",
            r#"{"repositories":["closed/b","open/a"]}"#.into(),
        ),
        (_, Some("tags/list")) => reply(200, "application/json", r#"{"tags":["v1"]}"#.into()),
        (_, Some(r)) if r == "manifests/v1" || r == format!("manifests/{digest}") => {
            reply(200, "application/vnd.oci.image.manifest.v1+json", m)
        }
        (_, Some(r)) if r == format!("blobs/{config}") => {
            reply(200, "application/octet-stream", CONFIG_BLOB.into())
        }
        _ => reply(404, "text/plain", "404 page not found".into()),
    }
}

struct Gate {
    app: Arc<App>,
    base: String,
    deletes: Arc<AtomicUsize>,
    client: reqwest::Client,
    /// The test's own store, when it made one.
    _store: Option<tempfile::TempDir>,
}

/// The gate (alice: everything; bob and anonymous: pull `open/*`) on a
/// loopback port, in front of the fake upstream.
async fn gate() -> Gate {
    let deletes = Arc::new(AtomicUsize::new(0));
    let upstream = fake_upstream(deletes.clone()).await;
    let store = tempfile::tempdir().unwrap();
    let raw: RawConfig = toml::from_str(&config_text(upstream, store.path())).unwrap();
    let app = Arc::new(App::build(Config::resolve(raw).unwrap()).unwrap());
    let live = Arc::new(crate::reload::Live::fixed(app.clone()));
    let mut g = serve(app, live, deletes).await;
    g._store = Some(store);
    g
}

async fn serve(app: Arc<App>, live: Arc<crate::reload::Live>, deletes: Arc<AtomicUsize>) -> Gate {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(crate::server::serve(
        listener,
        live,
        None,
        std::future::pending(),
    ));
    Gate {
        app,
        base,
        deletes,
        client: reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        _store: None,
    }
}

fn config_text(upstream: SocketAddr, store: &std::path::Path) -> String {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let store = store.display();
    format!(
        r#"
[store]
url = "sqlite://{store}/store.db"
[server]
listen = "127.0.0.1:0"
[upstream]
url = "http://{upstream}"
[audit]
output = "off"
[users.alice]
password = "{hash}"
[users.bob]
password = "{hash}"
[[acl]]
match = {{ account = "alice" }}
actions = ["*"]
[[acl]]
match = {{ name = "open/*" }}
actions = ["pull"]
"#
    )
}

/// `name=value` of each `Set-Cookie` named `name`.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The value of the first `name="csrf" value="..."` on a page.
fn csrf_in(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

impl Gate {
    async fn get(&self, path: &str, cookie: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Logs in; returns the session cookie (`rg_session=...`) and its CSRF token.
    async fn login(&self, account: &str) -> (String, String) {
        let page = self.get("/ui/login", "").await;
        let anon = set_cookie(&page, "rg_csrf").unwrap();
        let anon = anon.split(';').next().unwrap().to_owned();
        let csrf = csrf_in(&page.text().await.unwrap());
        let resp = self
            .post(
                "/ui/login",
                &anon,
                &[
                    ("csrf", &csrf),
                    ("account", account),
                    ("password", "pw"),
                    ("next", "/ui/"),
                ],
            )
            .await;
        assert_eq!(resp.status(), 303);
        let session = set_cookie(&resp, "rg_session").expect("a session cookie");
        let cookie = session.split(';').next().unwrap().to_owned();
        let page = self.get("/ui/", &cookie).await.text().await.unwrap();
        (cookie, csrf_in(&page))
    }
}

#[tokio::test]
async fn anonymous_visitors_see_what_the_acl_grants_anonymous() {
    let g = gate().await;
    let resp = g.get("/", "").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/ui/");
    let resp = g.get("/ui/", "").await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-store");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let html = resp.text().await.unwrap();
    assert!(html.contains(r#"data-repo="open/a""#), "{html}");
    assert!(!html.contains("closed/b"), "{html}");
    assert!(html.contains(r#"id="login-link""#));
    // Not even by URL.
    let resp = g.get("/ui/r/closed/b", "").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(g.get("/ui/r/closed/b/-/tag/v1", "").await.status(), 404);
    assert_eq!(g.get("/ui/r/open/a/-/tag/v1", "").await.status(), 200);
    assert_eq!(g.get("/ui/r/Bad..Name", "").await.status(), 404);
    assert_eq!(g.get("/ui/static/app.css", "").await.status(), 200);
}

#[tokio::test]
async fn login_sessions_csrf_and_logout() {
    let g = gate().await;
    // The login form needs its CSRF token (double-submit cookie).
    let page = g.get("/ui/login", "").await;
    let anon = set_cookie(&page, "rg_csrf").unwrap();
    assert!(anon.contains("HttpOnly; SameSite=Strict"), "{anon}");
    let anon = anon.split(';').next().unwrap().to_owned();
    let csrf = csrf_in(&page.text().await.unwrap());
    let form = |pw: &'static str| vec![("account", "alice"), ("password", pw)];
    let resp = g.post("/ui/login", &anon, &form("pw")).await;
    assert_eq!(resp.status(), 403, "no CSRF token");
    let mut wrong = form("nope");
    wrong.push(("csrf", &csrf));
    let resp = g.post("/ui/login", &anon, &wrong).await;
    assert_eq!(resp.status(), 401);
    assert!(set_cookie(&resp, "rg_session").is_none());
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Wrong user name or password.")
    );

    let (session, csrf) = g.login("alice").await;
    let page = g.get("/ui/", &session).await.text().await.unwrap();
    assert!(page.contains(r#"data-repo="closed/b""#), "{page}");
    assert!(page.contains(r#"id="account" title="Signed in">alice<"#));

    // The session cookie is HttpOnly, SameSite=Strict, scoped to /ui.
    let page = g.get("/ui/login", "").await;
    let anon = set_cookie(&page, "rg_csrf")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let anon_csrf = csrf_in(&page.text().await.unwrap());
    let resp = g
        .post(
            "/ui/login",
            &anon,
            &[
                ("csrf", &anon_csrf),
                ("account", "alice"),
                ("password", "pw"),
                ("next", "https://evil.example/"),
            ],
        )
        .await;
    assert_eq!(resp.headers()["location"], "/ui/", "no open redirect");
    let c = set_cookie(&resp, "rg_session").unwrap();
    assert!(
        c.contains("; Path=/ui; HttpOnly; SameSite=Strict; Max-Age="),
        "{c}"
    );
    assert!(!c.contains("Secure"), "plain HTTP: no Secure flag");

    // Logout needs the session's CSRF token, from this site.
    assert_eq!(g.post("/ui/logout", &session, &[]).await.status(), 403);
    let resp = g
        .client
        .post(format!("{}/ui/logout", g.base))
        .header("cookie", &session)
        .header("origin", "http://evil.example")
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = g.post("/ui/logout", &session, &[("csrf", &csrf)]).await;
    assert_eq!(resp.status(), 303);
    assert!(
        set_cookie(&resp, "rg_session")
            .unwrap()
            .contains("Max-Age=0")
    );
    // The old cookie no longer works.
    let page = g.get("/ui/", &session).await.text().await.unwrap();
    assert!(!page.contains("closed/b"));
    assert!(page.contains(r#"id="login-link""#));
}

#[tokio::test]
async fn deletes_need_the_acl_and_report_disabled_deletion() {
    let g = gate().await;
    let digest = sha256_digest(manifest().as_bytes());
    // bob may pull open/a but not delete: no button, and the server refuses.
    let (bob, bob_csrf) = g.login("bob").await;
    let page = g
        .get("/ui/r/open/a/-/tag/v1", &bob)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(&digest));
    assert!(!page.contains("/-/delete"), "{page}");
    assert_eq!(
        g.get("/ui/r/open/a/-/delete?reference=v1", &bob)
            .await
            .status(),
        403
    );
    let form = [
        ("csrf", bob_csrf.as_str()),
        ("reference", "v1"),
        ("digest", digest.as_str()),
    ];
    assert_eq!(
        g.post("/ui/r/open/a/-/delete", &bob, &form).await.status(),
        403
    );
    assert_eq!(
        g.deletes.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );

    // alice may delete, but the upstream has deletion disabled.
    let (alice, csrf) = g.login("alice").await;
    let page = g
        .get("/ui/r/open/a/-/tag/v1", &alice)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("/ui/r/open/a/-/delete?reference=v1"),
        "{page}"
    );
    let confirm = g.get("/ui/r/open/a/-/delete?reference=v1", &alice).await;
    assert_eq!(confirm.status(), 200);
    assert!(confirm.text().await.unwrap().contains(&digest));
    // Another session's CSRF token does not do.
    let stale = [
        ("csrf", bob_csrf.as_str()),
        ("reference", "v1"),
        ("digest", digest.as_str()),
    ];
    assert_eq!(
        g.post("/ui/r/open/a/-/delete", &alice, &stale)
            .await
            .status(),
        403
    );
    let form = [
        ("csrf", csrf.as_str()),
        ("reference", "v1"),
        ("digest", digest.as_str()),
    ];
    let resp = g.post("/ui/r/open/a/-/delete", &alice, &form).await;
    assert_eq!(resp.status(), 409);
    let html = resp.text().await.unwrap();
    assert!(html.contains("deletion disabled"), "{html}");
    assert_eq!(g.deletes.load(Ordering::SeqCst), 1);
    // A digest that no longer matches the tag is not deleted.
    let moved = "sha256:".to_owned() + &"0".repeat(64);
    let form = [
        ("csrf", csrf.as_str()),
        ("reference", "v1"),
        ("digest", moved.as_str()),
    ];
    assert_eq!(
        g.post("/ui/r/open/a/-/delete", &alice, &form)
            .await
            .status(),
        409
    );
    assert_eq!(g.deletes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn wrong_passwords_count_against_the_login_throttle() {
    let g = gate().await;
    let page = g.get("/ui/login", "").await;
    let anon = set_cookie(&page, "rg_csrf")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = csrf_in(&page.text().await.unwrap());
    let allowed = g.app.throttle.local.config().failures_per_account;
    for _ in 0..allowed {
        let form = [
            ("csrf", csrf.as_str()),
            ("account", "alice"),
            ("password", "nope"),
        ];
        assert_eq!(g.post("/ui/login", &anon, &form).await.status(), 401);
    }
    // Past the allowance even the right password is not looked at.
    let form = [
        ("csrf", csrf.as_str()),
        ("account", "alice"),
        ("password", "pw"),
    ];
    let resp = g.post("/ui/login", &anon, &form).await;
    assert_eq!(resp.status(), 429);
    assert!(set_cookie(&resp, "rg_session").is_none());
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Too many failed logins")
    );
}

/// An `upstream_write` as `src/http/registry.rs` records it.
fn write(
    account: &str,
    action: &'static str,
    repo: &str,
    reference: Option<&str>,
    digest: Option<&str>,
    status: u16,
) -> Event {
    Event::UpstreamWrite {
        account: account.into(),
        client: "127.0.0.1".parse().unwrap(),
        action,
        repository: repo.into(),
        reference: reference.map(str::to_owned),
        digest: digest.map(str::to_owned),
        status,
        outcome: if (200..300).contains(&status) {
            "ok"
        } else {
            "failed"
        },
    }
}

/// `(data-action, data-account, data-repo, data-tag, data-outcome)` of each
/// row of the activity table, top to bottom.
fn activity_rows(html: &str) -> Vec<[String; 5]> {
    let attr = |tr: &str, name: &str| {
        let key = format!(r#"{name}=""#);
        let at = tr.find(&key).unwrap_or_else(|| panic!("{name} in {tr}")) + key.len();
        tr[at..at + tr[at..].find('"').unwrap()].to_owned()
    };
    html.split("<tr data-action=")
        .skip(1)
        .map(|tr| {
            let tr = format!("data-action={tr}");
            [
                attr(&tr, "data-action"),
                attr(&tr, "data-account"),
                attr(&tr, "data-repo"),
                attr(&tr, "data-tag"),
                attr(&tr, "data-outcome"),
            ]
        })
        .collect()
}

fn row(action: &str, account: &str, repo: &str, tag: &str, outcome: &str) -> [String; 5] {
    [action, account, repo, tag, outcome].map(str::to_owned)
}

#[tokio::test]
async fn activity_shows_only_the_writes_in_repositories_the_viewer_may_pull() {
    let g = gate().await;
    let digest = sha256_digest(manifest().as_bytes());
    let blob = format!("sha256:{}", "cd".repeat(32));
    let audit = &g.app.audit;
    audit.record(write(
        "alice",
        "push_blob",
        "open/a",
        None,
        Some(&blob),
        201,
    ));
    audit.record(write(
        "alice",
        "push_manifest",
        "open/a",
        Some("v1"),
        Some(&digest),
        201,
    ));
    audit.record(write(
        "alice",
        "push_manifest",
        "closed/b",
        Some("v1"),
        Some(&digest),
        201,
    ));
    audit.record(write("", "push_manifest", "open/a", Some("v2"), None, 400));

    // A delete through /v2/ with a token: the fake upstream refuses it (405),
    // and the gate's audit trail says so.
    let token: serde_json::Value = g
        .client
        .get(format!(
            "{}/auth?service={}&scope=repository:closed/b:delete",
            g.base, g.app.config.token.service
        ))
        .basic_auth("alice", Some("pw"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = g
        .client
        .delete(format!("{}/v2/closed/b/manifests/{digest}", g.base))
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(g.deletes.load(Ordering::SeqCst), 1);

    // A delete from the UI is recorded too, as the signed-in account.
    let (alice, csrf) = g.login("alice").await;
    let form = [
        ("csrf", csrf.as_str()),
        ("reference", "v1"),
        ("digest", digest.as_str()),
    ];
    assert_eq!(
        g.post("/ui/r/open/a/-/delete", &alice, &form)
            .await
            .status(),
        409
    );
    assert_eq!(g.deletes.load(Ordering::SeqCst), 2);

    // alice may pull everything: every image write, newest first.
    let resp = g.get("/ui/activity", &alice).await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert_eq!(
        activity_rows(&html),
        [
            row("delete_manifest", "alice", "open/a", "v1", "failed"),
            row("delete_manifest", "alice", "closed/b", "", "failed"),
            row("push_manifest", "", "open/a", "v2", "failed"),
            row("push_manifest", "alice", "closed/b", "v1", "ok"),
            row("push_manifest", "alice", "open/a", "v1", "ok"),
        ],
        "{html}"
    );
    assert!(html.contains(r#"aria-current="page">Activity<"#), "{html}");
    assert!(html.contains("tried to delete"), "{html}");
    assert!(html.contains("(HTTP 405)"), "{html}");
    // A failed delete takes nothing away: the pushed tag is still linked.
    assert!(html.contains(r#"href="/ui/r/open/a/-/tag/v1""#), "{html}");
    assert!(html.contains(r#"href="/ui/r/closed/b/-/tag/v1""#), "{html}");
    // The blob upload shows on asking.
    assert!(!html.contains(&blob), "blobs are left out by default");
    let html = g
        .get("/ui/activity?all=1", &alice)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(activity_rows(&html).len(), 6, "{html}");
    assert_eq!(
        activity_rows(&html)[5],
        row("push_blob", "alice", "open/a", "", "ok")
    );
    assert!(html.contains(&blob[..19]), "{html}");

    // bob and anonymous may pull open/* only: closed/b's writes are not there.
    let (bob, _) = g.login("bob").await;
    let only_open = [
        row("delete_manifest", "alice", "open/a", "v1", "failed"),
        row("push_manifest", "", "open/a", "v2", "failed"),
        row("push_manifest", "alice", "open/a", "v1", "ok"),
    ];
    for cookie in [bob.as_str(), ""] {
        let html = g.get("/ui/activity", cookie).await.text().await.unwrap();
        assert_eq!(activity_rows(&html), only_open, "{html}");
        assert!(!html.contains("closed/b"), "{html}");
        let html = g
            .get("/ui/activity?repo=closed/b&all=1", cookie)
            .await
            .text()
            .await
            .unwrap();
        assert!(activity_rows(&html).is_empty(), "{html}");
        assert!(html.contains(r#"id="empty""#), "{html}");
    }
    let html = g.get("/ui/activity", "").await.text().await.unwrap();
    assert!(
        html.contains(r#"href="/ui/login?next=/ui/activity""#),
        "{html}"
    );
    assert!(
        html.contains(r#"<span class="muted">anonymous</span>"#),
        "{html}"
    );

    // One repository's writes.
    let html = g
        .get("/ui/activity?repo=closed/b", &alice)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        activity_rows(&html),
        [
            row("delete_manifest", "alice", "closed/b", "", "failed"),
            row("push_manifest", "alice", "closed/b", "v1", "ok"),
        ],
        "{html}"
    );
    let page = g.get("/ui/r/closed/b", &alice).await.text().await.unwrap();
    assert!(
        page.contains(r#"href="/ui/activity?repo=closed%2Fb""#),
        "{page}"
    );
    let html = g
        .get("/ui/activity?repo=closed%2Fb", &alice)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(activity_rows(&html).len(), 2, "{html}");
    assert_eq!(g.get("/ui/activity?repo=..", &alice).await.status(), 400);
    assert_eq!(g.post("/ui/activity", &alice, &[]).await.status(), 405);
}

#[tokio::test]
async fn activity_links_only_what_is_still_there_and_pages() {
    let g = gate().await;
    let (alice, _) = g.login("alice").await;
    let html = g.get("/ui/activity", &alice).await.text().await.unwrap();
    assert!(html.contains(r#"id="empty""#), "{html}");

    let d1 = format!("sha256:{}", "1".repeat(64));
    let d2 = format!("sha256:{}", "2".repeat(64));
    let audit = &g.app.audit;
    // v1 pushed twice (d1, then d2), d1 pushed as "old", then d1 deleted.
    audit.record(write(
        "alice",
        "push_manifest",
        "open/a",
        Some("v1"),
        Some(&d1),
        201,
    ));
    audit.record(write(
        "alice",
        "push_manifest",
        "open/a",
        Some("old"),
        Some(&d1),
        201,
    ));
    audit.record(write(
        "alice",
        "push_manifest",
        "open/a",
        Some("v1"),
        Some(&d2),
        201,
    ));
    audit.record(write(
        "alice",
        "delete_manifest",
        "open/a",
        Some(&d1),
        None,
        202,
    ));
    audit.record(write(
        "alice",
        "push_manifest",
        "open/a",
        Some(&d2),
        Some(&d2),
        201,
    ));
    let html = g.get("/ui/activity", &alice).await.text().await.unwrap();
    // The link around each row's tag or digest, if there is one.
    let links: Vec<&str> = html
        .split("<tr data-action=")
        .skip(1)
        .map(|tr| {
            let Some((before, _)) = tr.split_once(r#" class="ref">"#) else {
                return "";
            };
            let (_, tag) = before.rsplit_once('<').unwrap();
            tag.strip_prefix(r#"a href=""#)
                .map_or("", |href| href.trim_end_matches('"'))
        })
        .collect();
    assert_eq!(
        links,
        [
            // by digest: its manifest page
            &format!("/ui/r/open/a/-/manifest/{d2}")[..],
            // a delete has nothing to show
            "",
            // the newest v1 push: the tag
            "/ui/r/open/a/-/tag/v1",
            // "old" and the first v1 pointed to the deleted d1
            "",
            "",
        ],
        "{html}"
    );
    assert!(
        html.contains(">deleted<") || html.contains(">deleted "),
        "{html}"
    );

    // Paged, 50 a page, newest first.
    for i in 0..60 {
        audit.record(write(
            "alice",
            "push_manifest",
            "open/a",
            Some(&format!("n{i}")),
            None,
            201,
        ));
    }
    let html = g.get("/ui/activity", &alice).await.text().await.unwrap();
    let rows = activity_rows(&html);
    assert_eq!(rows.len(), 50);
    assert_eq!(rows[0][3], "n59");
    assert!(html.contains("65 writes, 1–50 shown"), "{html}");
    assert!(
        html.contains(r#"href="/ui/activity?page=2" rel="next""#),
        "{html}"
    );
    let html = g
        .get("/ui/activity?page=2", &alice)
        .await
        .text()
        .await
        .unwrap();
    let rows = activity_rows(&html);
    assert_eq!(rows.len(), 15);
    assert_eq!(rows[14][3], "v1");
}

#[tokio::test]
async fn activity_survives_a_reload() {
    let deletes = Arc::new(AtomicUsize::new(0));
    let upstream = fake_upstream(deletes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gate.toml");
    std::fs::write(&path, config_text(upstream, dir.path())).unwrap();
    let app = Arc::new(App::build(crate::config::load(&path, true).unwrap()).unwrap());
    let live = Arc::new(crate::reload::Live::new(app.clone(), path.clone(), true));
    let g = serve(app, live.clone(), deletes).await;
    g.app.audit.record(write(
        "alice",
        "push_manifest",
        "open/a",
        Some("v1"),
        None,
        201,
    ));

    // The new config lets anonymous pull nothing; the writes stay.
    let text =
        config_text(upstream, dir.path()).replace(r#"name = "open/*""#, r#"name = "none/*""#);
    std::fs::write(&path, text).unwrap();
    live.reload().unwrap();
    let current = live.current();
    assert!(!Arc::ptr_eq(&current, &g.app), "a new app");
    assert_eq!(current.audit.recent_writes().len(), 1);
    let (alice, _) = g.login("alice").await;
    let html = g.get("/ui/activity", &alice).await.text().await.unwrap();
    assert_eq!(
        activity_rows(&html),
        [row("push_manifest", "alice", "open/a", "v1", "ok")],
        "{html}"
    );
    // The new ACL applies to what the page shows.
    let html = g.get("/ui/activity", "").await.text().await.unwrap();
    assert!(activity_rows(&html).is_empty(), "{html}");
}

/// Issue 17, finding 1: an upstream where `closed/secret:v1` has a config
/// blob holding a secret, and `open/lure:v1` (pushable by an attacker) is a
/// manifest naming that same config digest with a `urls` entry, which
/// distribution 2.8 accepts without the blob: `open/lure` does not hold it
/// (its blob GET is 404).
async fn lure_upstream() -> SocketAddr {
    const SECRET_CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{"Env":["SECRET_TOKEN=hunter2"],"Labels":{"secret.label":"classified"}}}"#;
    let config = sha256_digest(SECRET_CONFIG.as_bytes());
    let manifest = |urls: bool| {
        let urls = if urls {
            r#","urls":["https://example.com/x"]"#
        } else {
            ""
        };
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{}{urls}}},"layers":[]}}"#,
            SECRET_CONFIG.len()
        )
    };
    let (secret, lure) = (manifest(false), manifest(true));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (config, secret, lure) = (config.clone(), secret.clone(), lure.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let path = req.uri().path().to_owned();
                    let reply = |status: u16, ct: &str, body: String| {
                        Response::builder()
                            .status(status)
                            .header("content-type", ct)
                            .body(Full::new(Bytes::from(body)))
                            .unwrap()
                    };
                    let json = "application/json";
                    let oci = "application/vnd.oci.image.manifest.v1+json";
                    let resp = match path.as_str() {
                        "/v2/_catalog" => reply(
                            200,
                            json,
                            r#"{"repositories":["closed/secret","open/lure"]}"#.into(),
                        ),
                        "/v2/closed/secret/tags/list" | "/v2/open/lure/tags/list" => {
                            reply(200, json, r#"{"tags":["v1"]}"#.into())
                        }
                        "/v2/closed/secret/manifests/v1" => reply(200, oci, secret.clone()),
                        "/v2/open/lure/manifests/v1" => reply(200, oci, lure.clone()),
                        p if p == format!("/v2/closed/secret/blobs/{config}") => {
                            reply(200, "application/octet-stream", SECRET_CONFIG.into())
                        }
                        _ => reply(404, json, r#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#.into()),
                    };
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Finding 1: the UI cached image configs (and manifest summaries) by
/// digest alone, so once alice had viewed `closed/secret`, bob's view of
/// `open/lure` showed its environment and labels from the cache. A cached
/// config answers only for the repository it was read from.
#[tokio::test]
async fn cached_configs_answer_only_for_the_repository_they_came_from() {
    let upstream = lure_upstream().await;
    let store = tempfile::tempdir().unwrap();
    let raw: RawConfig = toml::from_str(&config_text(upstream, store.path())).unwrap();
    let app = Arc::new(App::build(Config::resolve(raw).unwrap()).unwrap());
    let live = Arc::new(crate::reload::Live::fixed(app.clone()));
    let gate = serve(app, live, Arc::new(AtomicUsize::new(0))).await;

    let (alice, _) = gate.login("alice").await;
    for page in ["/ui/r/closed/secret", "/ui/r/closed/secret/-/tag/v1"] {
        let resp = gate.get(page, &alice).await;
        assert_eq!(resp.status(), 200, "{page}");
        let html = resp.text().await.unwrap();
        if page.contains("/tag/") {
            assert!(
                html.contains("hunter2"),
                "the control view shows the config"
            );
        }
    }

    let (bob, _) = gate.login("bob").await;
    assert_eq!(
        gate.get("/ui/r/closed/secret/-/tag/v1", &bob)
            .await
            .status(),
        404
    );
    for page in ["/ui/r/open/lure", "/ui/r/open/lure/-/tag/v1"] {
        let html = gate.get(page, &bob).await.text().await.unwrap();
        assert!(
            !html.contains("hunter2") && !html.contains("classified"),
            "{page} shows closed/secret's config: {html}"
        );
    }
}
