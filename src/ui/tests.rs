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
}

/// The gate (alice: everything; bob and anonymous: pull `open/*`) on a
/// loopback port, in front of the fake upstream.
async fn gate() -> Gate {
    let deletes = Arc::new(AtomicUsize::new(0));
    let upstream = fake_upstream(deletes.clone()).await;
    let hash = bcrypt::hash("pw", 4).unwrap();
    let text = format!(
        r#"
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
    );
    let raw: RawConfig = toml::from_str(&text).unwrap();
    let app = Arc::new(App::build(Config::resolve(raw).unwrap()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(crate::server::serve(
        listener,
        Arc::new(crate::reload::Live::fixed(app.clone())),
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
    }
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
    let allowed = g.app.throttle.config().failures_per_account;
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
