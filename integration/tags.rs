//! Tag rules (issue 16): `tag` conditions in ACL rules and `[[immutable]]`
//! release tags, against a real docker-registry, with skopeo, docker and
//! raw HTTP. The accounts are static users standing in for robots: `ci`
//! (may push `sha-*`/`pr-*` tags), `release` (may push `v*` tags) and `ops`
//! (may do anything, so that refused deletes are refused by the immutable
//! rule, not by the ACL).

use reqwest::Method;
use serde_json::Value;

use crate::harness::docker::Docker;
use crate::harness::http::{bearer, client, token};
use crate::harness::image::{MANIFEST_TYPE, OciImage, Skopeo};
use crate::harness::{Stack, output_text};

const CI: (&str, &str) = ("ci", "ci-secret");
const RELEASE: (&str, &str) = ("release", "release-secret");
const OPS: (&str, &str) = ("ops", "ops-secret");

/// The CI/release example of docs/tags.md, plus `ops`, and `other/*` where
/// no tag rule and no immutable rule applies.
fn config() -> String {
    let hash = |pw: &str| bcrypt::hash(pw, 4).expect("bcrypt");
    format!(
        r#"[server]
listen = "127.0.0.1:5000"

[upstream]
url = "http://127.0.0.1:5001"

[token]
service = "Docker registry"
issuer = "registry-gate"

[users.ci]
password = "{ci}"
[users.release]
password = "{release}"
[users.ops]
password = "{ops}"

[[acl]]
match = {{ account = "ops" }}
actions = ["*"]

[[acl]]
match = {{ account = "ci", name = "team/*", tag = "/^(sha|pr)-.+$/" }}
actions = ["pull", "push"]

[[acl]]
match = {{ account = "release", name = "team/*", tag = "v*" }}
actions = ["pull", "push"]

[[acl]]
match = {{ account = "/.+/", name = "team/*" }}
actions = ["pull"]

[[acl]]
match = {{ account = "/.+/", name = "other/*" }}
actions = ["pull", "push", "delete"]

[[immutable]]
name = "team/*"
tags = ["v*", "/^\\d+\\.\\d+\\.\\d+$/"]
"#,
        ci = hash(CI.1),
        release = hash(RELEASE.1),
        ops = hash(OPS.1),
    )
}

/// What `repo:tag` points to in the upstream itself (not through the gate).
async fn upstream_digest(stack: &Stack, repo: &str, tag: &str) -> Option<String> {
    let resp = client()
        .head(format!(
            "{}/v2/{repo}/manifests/{tag}",
            stack.registry.url()
        ))
        .header("accept", MANIFEST_TYPE)
        .send()
        .await
        .expect("HEAD upstream manifest");
    if resp.status() == 404 {
        return None;
    }
    assert_eq!(resp.status(), 200, "HEAD {repo}:{tag}");
    Some(
        resp.headers()["docker-content-digest"]
            .to_str()
            .expect("ascii")
            .to_owned(),
    )
}

async fn skopeo_push(
    skopeo: &Skopeo,
    stack: &Stack,
    image: &OciImage,
    dest: &str,
    who: (&str, &str),
) -> Result<String, String> {
    let out = skopeo
        .push(image, &format!("{}/{dest}", stack.gate.addr), Some(who))
        .await;
    let text = output_text(&out);
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// The registry JSON error of a refused request: (status, code, detail).
async fn refusal(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("JSON error body");
    let e = &body["errors"][0];
    (
        status,
        e["code"].as_str().unwrap_or_default().to_owned(),
        e["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Uploads an image's blobs (not its manifest) with a bearer token.
async fn upload_blobs(stack: &Stack, repo: &str, token: &str, image: &OciImage) {
    let base = stack.gate.url();
    for (digest, data) in &image.blobs {
        let resp = client()
            .post(format!("{base}/v2/{repo}/blobs/uploads/"))
            .bearer_auth(token)
            .send()
            .await
            .expect("start upload");
        assert_eq!(resp.status(), 202, "start upload");
        let location = resp.headers()["location"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let mut url = reqwest::Url::parse(&base)
            .and_then(|b| b.join(&location))
            .expect("location");
        url.query_pairs_mut().append_pair("digest", digest);
        let resp = client()
            .put(url)
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(data.clone())
            .send()
            .await
            .expect("finish upload");
        assert_eq!(resp.status(), 201, "finish upload");
    }
}

async fn put_manifest(
    stack: &Stack,
    repo: &str,
    tag: &str,
    token: &str,
    image: &OciImage,
) -> reqwest::Response {
    client()
        .put(format!("{}/v2/{repo}/manifests/{tag}", stack.gate.url()))
        .bearer_auth(token)
        .header("content-type", MANIFEST_TYPE)
        .body(image.manifest.clone())
        .send()
        .await
        .expect("PUT manifest")
}

#[tokio::test]
async fn ci_and_release_tags_with_immutable_releases() {
    let stack = Stack::with_config(&config()).await;
    let skopeo = Skopeo::new();
    let a = OciImage::generate();
    let b = OciImage::generate();

    // CI may push its own tags, not release tags.
    skopeo_push(&skopeo, &stack, &a, "team/app:sha-abc", CI)
        .await
        .unwrap_or_else(|e| panic!("ci push sha-abc: {e}"));
    assert_eq!(
        upstream_digest(&stack, "team/app", "sha-abc")
            .await
            .as_deref(),
        Some(&*a.manifest_digest)
    );
    let said = skopeo_push(&skopeo, &stack, &a, "team/app:v1.0", CI)
        .await
        .expect_err("ci must not push v1.0");
    assert!(said.contains("denied"), "{said}");
    assert_eq!(upstream_digest(&stack, "team/app", "v1.0").await, None);

    // Release creates v1.0 ...
    skopeo_push(&skopeo, &stack, &a, "team/app:v1.0", RELEASE)
        .await
        .unwrap_or_else(|e| panic!("release push v1.0: {e}"));
    assert_eq!(
        upstream_digest(&stack, "team/app", "v1.0").await.as_deref(),
        Some(&*a.manifest_digest)
    );
    // ... cannot make it point elsewhere ...
    let said = skopeo_push(&skopeo, &stack, &b, "team/app:v1.0", RELEASE)
        .await
        .expect_err("v1.0 must not be overwritten");
    assert!(said.contains("immutable"), "{said}");
    assert_eq!(
        upstream_digest(&stack, "team/app", "v1.0").await.as_deref(),
        Some(&*a.manifest_digest)
    );
    // ... and may push the same image again (a retry).
    skopeo_push(&skopeo, &stack, &a, "team/app:v1.0", RELEASE)
        .await
        .unwrap_or_else(|e| panic!("release re-push v1.0: {e}"));

    // Deleting v1.0 is refused, by tag and by digest, even for `ops`.
    let ops = token(&stack.gate, Some(OPS), &["repository:team/app:delete"]).await;
    let base = format!("{}/v2/team/app/manifests", stack.gate.url());
    let (status, code, detail) =
        refusal(bearer(Method::DELETE, &format!("{base}/v1.0"), &ops).await).await;
    assert_eq!((status, code.as_str()), (403, "DENIED"), "{detail}");
    assert!(
        detail.contains("immutable[0]"),
        "the refusal names the rule: {detail}"
    );
    let (status, code, detail) = refusal(
        bearer(
            Method::DELETE,
            &format!("{base}/{}", a.manifest_digest),
            &ops,
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "DENIED"), "{detail}");
    assert!(
        detail.contains("v1.0") && detail.contains("immutable[0]"),
        "{detail}"
    );
    assert_eq!(
        upstream_digest(&stack, "team/app", "v1.0").await.as_deref(),
        Some(&*a.manifest_digest)
    );

    // A manifest no immutable tag points to may still be deleted by digest.
    let c = OciImage::generate();
    skopeo_push(&skopeo, &stack, &c, "team/app:sha-def", CI)
        .await
        .expect("ci push sha-def");
    let resp = bearer(
        Method::DELETE,
        &format!("{base}/{}", c.manifest_digest),
        &ops,
    )
    .await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    assert_eq!(upstream_digest(&stack, "team/app", "sha-def").await, None);

    // Repositories no rule names are unaffected: anyone may push v1.0,
    // overwrite it and delete it.
    skopeo_push(&skopeo, &stack, &a, "other/app:v1.0", CI)
        .await
        .expect("other/app v1.0");
    skopeo_push(&skopeo, &stack, &b, "other/app:v1.0", CI)
        .await
        .expect("other/app v1.0 overwritten");
    assert_eq!(
        upstream_digest(&stack, "other/app", "v1.0")
            .await
            .as_deref(),
        Some(&*b.manifest_digest)
    );
    let ci = token(&stack.gate, Some(CI), &["repository:other/app:delete"]).await;
    let resp = bearer(
        Method::DELETE,
        &format!(
            "{}/v2/other/app/manifests/{}",
            stack.gate.url(),
            b.manifest_digest
        ),
        &ci,
    )
    .await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);

    // Each refusal is an audit event and counted.
    let log = stack.gate.log();
    let refused: Vec<Value> = log
        .lines()
        .filter(|l| l.contains("\"tag_immutable_refused\""))
        .map(|l| serde_json::from_str(l).expect("audit JSON line"))
        .collect();
    let kinds: Vec<&str> = refused
        .iter()
        .map(|e| e["action"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(kinds, ["overwrite", "delete", "delete"], "{refused:#?}");
    assert_eq!(refused[0]["existing"], a.manifest_digest.as_str());
    assert_eq!(refused[0]["digest"], b.manifest_digest.as_str());
    assert_eq!(refused[0]["rule"], "immutable[0] (name = \"team/*\")");
    let metrics = client()
        .get(format!("{}/metrics", stack.gate.url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    for line in [
        "registry_gate_tag_refusals_total{kind=\"overwrite\"} 1",
        "registry_gate_tag_refusals_total{kind=\"delete\"} 2",
        "registry_gate_tag_refusals_total{kind=\"acl\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
}

#[tokio::test]
async fn tag_rules_decide_manifest_requests_by_what_they_name() {
    let stack = Stack::with_config(&config()).await;
    let image = OciImage::generate();
    let ci = token(&stack.gate, Some(CI), &["repository:team/raw:pull,push"]).await;
    // The token grants push on the repository (blob uploads need it)...
    upload_blobs(&stack, "team/raw", &ci, &image).await;
    // ... and the gate decides each manifest PUT by its tag.
    let (status, code, detail) =
        refusal(put_manifest(&stack, "team/raw", "v9", &ci, &image).await).await;
    assert_eq!((status, code.as_str()), (403, "DENIED"), "{detail}");
    assert!(detail.contains("tag v9"), "{detail}");
    // By digest, only rules without `tag` apply: ci may only pull there.
    let (status, code, _) =
        refusal(put_manifest(&stack, "team/raw", &image.manifest_digest, &ci, &image).await).await;
    assert_eq!((status, code.as_str()), (403, "DENIED"));
    let resp = put_manifest(&stack, "team/raw", "pr-7", &ci, &image).await;
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    // Reads by tag follow the same rules (pull is allowed for everyone here).
    let pull = token(&stack.gate, Some(CI), &["repository:team/raw:pull"]).await;
    let resp = client()
        .get(format!("{}/v2/team/raw/manifests/pr-7", stack.gate.url()))
        .bearer_auth(&pull)
        .header("accept", MANIFEST_TYPE)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream_digest(&stack, "team/raw", "v9").await, None);
}

#[tokio::test]
async fn concurrent_first_pushes_of_an_immutable_tag_leave_one_digest() {
    let stack = Stack::with_config(&config()).await;
    let t = token(
        &stack.gate,
        Some(RELEASE),
        &["repository:team/race:pull,push"],
    )
    .await;
    // The body of an immutable push is read whole, within the manifest limit.
    let resp = client()
        .put(format!(
            "{}/v2/team/race/manifests/v0.big",
            stack.gate.url()
        ))
        .bearer_auth(&t)
        .header("content-type", MANIFEST_TYPE)
        .body(vec![b' '; 4 * 1024 * 1024 + 1])
        .send()
        .await
        .expect("PUT oversized manifest");
    let (status, code, _) = refusal(resp).await;
    assert_eq!((status, code.as_str()), (413, "MANIFEST_INVALID"));
    let (a, b) = (OciImage::generate(), OciImage::generate());
    upload_blobs(&stack, "team/race", &t, &a).await;
    upload_blobs(&stack, "team/race", &t, &b).await;
    for round in 0..5 {
        let tag = format!("v2.{round}");
        // Four pushes of each image, all at once.
        let pushes = (0..8).map(|i| {
            let image = if i % 2 == 0 { &a } else { &b };
            let (stack, tag, t) = (&stack, &tag, &t);
            async move {
                let resp = put_manifest(stack, "team/race", tag, t, image).await;
                (image.manifest_digest.clone(), resp.status().as_u16())
            }
        });
        let results = futures_util::future::join_all(pushes).await;
        let won: std::collections::BTreeSet<&str> = results
            .iter()
            .filter(|(_, s)| *s == 201)
            .map(|(d, _)| d.as_str())
            .collect();
        assert_eq!(won.len(), 1, "{tag}: exactly one digest wins: {results:?}");
        let winner = *won.first().expect("a winner");
        for (digest, status) in &results {
            let want = if digest == winner { 201 } else { 403 };
            assert_eq!(*status, want, "{tag}: {results:?}");
        }
        assert_eq!(
            upstream_digest(&stack, "team/race", &tag).await.as_deref(),
            Some(winner)
        );
    }
}

#[tokio::test]
async fn docker_push_follows_tag_rules() {
    let config = config();
    let (stack, docker) = tokio::join!(Stack::with_config(&config), Docker::start());
    let host = stack.gate.addr.to_string();
    let out = docker
        .run(
            &["login", "--username", CI.0, "--password-stdin", &host],
            Some(&format!("{}\n", CI.1)),
        )
        .await;
    assert!(out.status.success(), "docker login: {}", output_text(&out));
    let sha = format!("{host}/team/dock:sha-abc");
    docker.import_random(&sha).await;
    let out = docker.run(&["push", &sha], None).await;
    assert!(
        out.status.success(),
        "docker push sha-abc: {}",
        output_text(&out)
    );
    let release = format!("{host}/team/dock:v1.0");
    let out = docker.run(&["tag", &sha, &release], None).await;
    assert!(out.status.success(), "docker tag: {}", output_text(&out));
    let out = docker.run(&["push", &release], None).await;
    let said = output_text(&out);
    assert!(!out.status.success(), "ci must not push v1.0: {said}");
    // docker prints the error's message: the reason reaches the user.
    assert!(
        said.contains("denied: the ACL does not allow push of tag v1.0 in team/dock"),
        "{said}"
    );
    assert!(
        upstream_digest(&stack, "team/dock", "sha-abc")
            .await
            .is_some()
    );
    assert_eq!(upstream_digest(&stack, "team/dock", "v1.0").await, None);
}

#[tokio::test]
async fn ui_marks_immutable_tags_and_refuses_their_delete() {
    use crate::harness::browser::Browser;
    let stack = Stack::with_config(&config()).await;
    let skopeo = Skopeo::new();
    let (a, b) = (OciImage::generate(), OciImage::generate());
    skopeo_push(&skopeo, &stack, &a, "team/ui:v1.0", RELEASE)
        .await
        .expect("push v1.0");
    skopeo_push(&skopeo, &stack, &b, "team/ui:sha-abc", CI)
        .await
        .expect("push sha-abc");
    let gate = stack.gate.url();
    let browser = Browser::start().await;
    browser.goto(&format!("{gate}/ui/login")).await;
    browser.fill("#account-input", OPS.0).await;
    browser.fill("#password", OPS.1).await;
    browser.click("#login-submit").await;
    browser
        .wait_url("the repository list", |u| !u.contains("/ui/login"))
        .await;

    // The list marks v1.0 and offers no delete for it; sha-abc keeps its delete.
    browser.goto(&format!("{gate}/ui/r/team/ui")).await;
    let marked = browser
        .attrs("tr[data-tag] .badge.immutable", "title")
        .await;
    assert_eq!(marked.len(), 1, "{}", browser.text("main").await);
    assert!(marked[0].contains("immutable[0]"), "{marked:?}");
    assert!(
        browser
            .exists(r#"tr[data-tag="v1.0"] .badge.immutable"#)
            .await
    );
    let deletes = browser.attrs("a.danger", "href").await;
    assert_eq!(deletes, ["/ui/r/team/ui/-/delete?reference=sha-abc"]);
    browser
        .goto(&format!("{gate}/ui/r/team/ui/-/tag/v1.0"))
        .await;
    assert!(browser.exists("#immutable").await);
    assert!(!browser.exists("#delete").await);

    // Asking anyway (by tag, and by digest) is refused, and nothing goes.
    for reference in ["v1.0", a.manifest_digest.as_str()] {
        browser
            .goto(&format!(
                "{gate}/ui/r/team/ui/-/delete?reference={reference}"
            ))
            .await;
        browser.click("#confirm-delete").await;
        browser
            .wait_url("the result", |u| u.ends_with("/-/delete"))
            .await;
        let said = browser.text("#message").await;
        assert!(said.contains("immutable"), "{reference}: {said}");
    }
    assert_eq!(
        upstream_digest(&stack, "team/ui", "v1.0").await.as_deref(),
        Some(&*a.manifest_digest)
    );
    let log = stack.gate.log();
    let via_ui = log
        .lines()
        .filter(|l| l.contains("\"tag_immutable_refused\"") && l.contains("\"via\":\"ui\""))
        .count();
    assert_eq!(via_ui, 2, "{log}");
    browser.close().await;
}
