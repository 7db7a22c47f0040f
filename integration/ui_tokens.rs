//! The web UI's "Access tokens" page in headless Chromium: a person
//! creates a personal token (the secret shown once), cannot exceed their
//! rights, revokes it, and logs out everywhere; an administrator creates a
//! robot credential. Each step waits for what its answer puts on the page.

use crate::harness::browser::Browser;
use crate::harness::http::{self, post_token, request_token};
use crate::harness::{Gate, Stack};
use std::time::{Duration, Instant};

const SERVICE: &str = "Docker registry";

/// Waits until an element matching `css` is on the page.
async fn wait_for(b: &Browser, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !b.exists(css).await {
        assert!(Instant::now() < deadline, "no {css} on {}", b.url().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn login(b: &Browser, gate: &Gate, user: &str, password: &str) {
    b.goto(&format!("{}/ui/login?next=/ui/tokens", gate.url()))
        .await;
    b.fill("#account-input", user).await;
    b.fill("#password", password).await;
    b.click("#login-submit").await;
    wait_for(b, "#create-personal").await;
    assert_eq!(b.text("#account").await, user);
}

async fn works(gate: &Gate, account: &str, secret: &str) -> bool {
    let resp = request_token(
        gate,
        Some((account, secret)),
        SERVICE,
        &["repository:test/tool:pull"],
        &[],
    )
    .await;
    resp.status() == 200
}

#[tokio::test]
async fn ui_creates_shows_once_and_revokes_access_tokens() {
    let stack = Stack::start().await;
    let gate = &stack.gate;
    // test's stored docker login, to be ended by "log out everywhere".
    let resp = request_token(
        gate,
        Some(("test", "123")),
        SERVICE,
        &[],
        &[("offline_token", "true")],
    )
    .await;
    let refresh = http::json_ok(resp).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = Browser::start().await;

    login(&b, gate, "test", "123").await;
    assert!(
        !b.exists("#create-robot").await,
        "only administrators create robots"
    );
    assert!(b.exists("#no-tokens").await);

    // Beyond what test may do (push): refused with the reason.
    b.fill("#personal-name", "too-much").await;
    b.fill("#personal-scopes", "repository:test/*:pull,push")
        .await;
    b.click("#create-personal-submit").await;
    wait_for(&b, "#tokens-error").await;
    assert!(
        b.text("#tokens-error")
            .await
            .contains("beyond what you may do")
    );

    // Within test's rights: created, the secret shown once.
    b.fill("#personal-name", "laptop").await;
    b.fill("#personal-scopes", "repository:test/*:pull").await;
    b.click("#create-personal-submit").await;
    wait_for(&b, "#secret").await;
    let secret = b.text("#secret").await;
    assert!(secret.starts_with("rgt_"), "{secret}");
    b.click("#copy-secret").await;
    b.screenshot("access-tokens-new").await;
    assert!(works(gate, "test", &secret).await);
    b.goto(&format!("{}/ui/tokens", gate.url())).await;
    wait_for(&b, "#tokens tr[data-state=active]").await;
    assert!(!b.exists("#secret").await, "the secret is shown only once");
    let html = b
        .js("return document.documentElement.outerHTML", vec![])
        .await;
    assert!(!html.as_str().unwrap().contains(&secret));

    // Revoke: the row says so and the gate refuses the token within 10 s.
    b.click("#tokens tr[data-state=active] button.revoke").await;
    wait_for(&b, "#tokens tr[data-state=revoked]").await;
    let started = Instant::now();
    while works(gate, "test", &secret).await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "revoked token still works"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Log out everywhere: this session and the stored docker login end.
    b.click("#logout-all").await;
    wait_for(&b, "#login-link").await;
    b.goto(&format!("{}/ui/tokens", gate.url())).await;
    wait_for(&b, "#login-link").await;
    let form = [
        ("grant_type", "refresh_token"),
        ("service", SERVICE),
        ("refresh_token", refresh.as_str()),
    ];
    let started = Instant::now();
    while post_token(gate, &form).await.status() != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "refresh token survives"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An administrator makes a robot and sees every credential.
    login(&b, gate, "admin", "badmin").await;
    b.fill("#robot-name", "ui-ci").await;
    b.fill("#robot-scopes", "repository:test/*:pull").await;
    b.click("#create-robot-submit").await;
    wait_for(&b, "#secret").await;
    let robot = b.text("#secret").await;
    assert!(works(gate, "robot+ui-ci", &robot).await);
    assert_eq!(b.texts("#tokens tbody tr").await.len(), 2);
    b.screenshot("access-tokens").await;
    b.close().await;
}
