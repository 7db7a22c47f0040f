//! The web UI (issue 8) in a real headless Chromium, against the gate in
//! front of a real upstream (images pushed by skopeo through the gate) and
//! slapd with the example directory. Screenshots of the main pages are
//! saved under `<target>/tmp/ui-screenshots/`.
//!
//! The ACL here gives each account its own view:
//! - anonymous: `public/*` (pull)
//! - admin: everything, delete included
//! - test: `public/*` and `test/*` (pull)
//! - LDAP users (mozart): `public/*` (pull) and `<account>/*` (pull, push)

use crate::harness::browser::{Browser, screenshot_dir};
use crate::harness::gate::example_config;
use crate::harness::http;
use crate::harness::image::{Skopeo, gzip_stored, sha256_digest, tar_one_file};
use crate::harness::{Gate, Registry, Stack};
use rand::RngCore as _;
use serde_json::{Value, json};
use std::path::Path;
use tempfile::TempDir;

const ADMIN: (&str, &str) = ("admin", "badmin");
const TEST: (&str, &str) = ("test", "123");
const MOZART: (&str, &str) = ("mozart", "password");

/// The example config (users, LDAP) with the ACL described above.
fn config() -> String {
    let example = example_config();
    let head = &example[..example.find("\n[[acl]]").expect("example has an ACL")];
    format!(
        r#"{head}
[[acl]]
match = {{ account = "admin" }}
actions = ["*"]

[[acl]]
match = {{ account = "test", name = "test/*" }}
actions = ["pull"]

[[acl]]
match = {{ name = "public/*" }}
actions = ["pull"]

[[acl]]
match = {{ account = "/.+/", name = "${{account}}/*" }}
actions = ["pull", "push"]
"#
    )
}

/// A layer's digest and size, as the manifest lists them.
#[derive(Debug, Clone)]
struct Layer {
    digest: String,
    size: usize,
}

/// An OCI layout (tag `latest`) holding an image with a real config
/// (entrypoint, cmd, env, labels, ports, history) and two random layers,
/// or an index of such images.
struct Built {
    dir: TempDir,
    /// The digest of what `latest` names (the manifest or the index).
    digest: String,
    /// The layers of the (first) image.
    layers: Vec<Layer>,
}

fn write_blob(dir: &Path, data: &[u8]) -> Value {
    let digest = sha256_digest(data);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir blobs");
    std::fs::write(blobs.join(&digest["sha256:".len()..]), data).expect("write blob");
    json!({"digest": digest, "size": data.len()})
}

/// Writes an image (config + 2 layers + manifest) into the layout at `dir`;
/// returns the manifest's descriptor and the layers.
fn write_image(dir: &Path, arch: &str, created: &str) -> (Value, Vec<Layer>) {
    let mut layers = Vec::new();
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, size) in [6000usize, 2500].iter().enumerate() {
        let mut content = vec![0u8; *size];
        rand::rng().fill_bytes(&mut content);
        let tar = tar_one_file(&format!("file{i}.bin"), &content);
        let gz = gzip_stored(&tar);
        diff_ids.push(sha256_digest(&tar));
        let mut d = write_blob(dir, &gz);
        d["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+gzip");
        layers.push(Layer {
            digest: d["digest"].as_str().unwrap().to_string(),
            size: gz.len(),
        });
        descriptors.push(d);
    }
    let config = json!({
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": {
            "Entrypoint": ["/usr/bin/app"],
            "Cmd": ["--listen", ":8080"],
            "Env": ["PATH=/usr/bin:/bin", "APP_MODE=production"],
            "Labels": {"org.opencontainers.image.source": "https://example.com/app"},
            "ExposedPorts": {"8080/tcp": {}},
            "WorkingDir": "/srv",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": created, "created_by": "COPY file0.bin / # buildkit"},
            {"created": created, "created_by": "ENV APP_MODE=production", "empty_layer": true},
            {"created": created, "created_by": "COPY file1.bin / # buildkit"},
        ],
    });
    let config = serde_json::to_vec(&config).unwrap();
    let mut config_d = write_blob(dir, &config);
    config_d["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_d,
        "layers": descriptors,
    }))
    .unwrap();
    let mut d = write_blob(dir, &manifest);
    d["mediaType"] = json!("application/vnd.oci.image.manifest.v1+json");
    d["platform"] = json!({"architecture": arch, "os": "linux"});
    (d, layers)
}

fn finish_layout(dir: TempDir, top: Value, layers: Vec<Layer>) -> Built {
    let digest = top["digest"].as_str().unwrap().to_string();
    let mut entry = top;
    entry.as_object_mut().unwrap().remove("platform");
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    std::fs::write(
        dir.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("index.json"),
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry]}).to_string(),
    )
    .unwrap();
    Built {
        dir,
        digest,
        layers,
    }
}

fn temp() -> TempDir {
    tempfile::Builder::new()
        .prefix("it-ui-image-")
        .tempdir()
        .expect("temp dir")
}

fn image(created: &str) -> Built {
    let dir = temp();
    let (d, layers) = write_image(dir.path(), "amd64", created);
    finish_layout(dir, d, layers)
}

/// A two-platform index (amd64, arm64).
fn multi_arch(created: &str) -> Built {
    let dir = temp();
    let (amd, layers) = write_image(dir.path(), "amd64", created);
    let (arm, _) = write_image(dir.path(), "arm64", created);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [amd, arm],
    }))
    .unwrap();
    let mut d = write_blob(dir.path(), &index);
    d["mediaType"] = json!("application/vnd.oci.image.index.v1+json");
    finish_layout(dir, d, layers)
}

/// `skopeo copy --all oci:DIR:latest docker://GATE/REPO:TAG` as admin.
async fn push(skopeo: &Skopeo, gate: &Gate, built: &Built, repo_tag: &str) {
    push_as(skopeo, gate, built, repo_tag, ADMIN).await
}

/// The same as another account.
async fn push_as(
    skopeo: &Skopeo,
    gate: &Gate,
    built: &Built,
    repo_tag: &str,
    (user, pass): (&str, &str),
) {
    let args: Vec<String> = [
        "copy",
        "--all",
        "--retry-times",
        "0",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{user}:{pass}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("oci:{}:latest", built.dir.path().display()),
        format!("docker://{}/{repo_tag}", gate.addr),
    ])
    .collect();
    let out = skopeo.run(&args).await;
    assert!(
        out.status.success(),
        "skopeo push {repo_tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tags the upstream itself lists for `repo` (no gate in between).
async fn upstream_tags(registry: &Registry, repo: &str) -> Vec<String> {
    let resp = http::client()
        .get(format!("{}/v2/{repo}/tags/list", registry.url()))
        .send()
        .await
        .expect("tags/list");
    let v: Value = resp.json().await.expect("JSON");
    let mut tags: Vec<String> = v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    tags.sort();
    tags
}

async fn upstream_has_manifest(registry: &Registry, repo: &str, reference: &str) -> bool {
    let resp = http::client()
        .head(format!(
            "{}/v2/{repo}/manifests/{reference}",
            registry.url()
        ))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .await
        .expect("HEAD manifest");
    resp.status() == 200
}

async fn login(b: &Browser, gate: &Gate, (user, pass): (&str, &str)) {
    b.goto(&format!("{}/ui/login", gate.url())).await;
    b.fill("#account-input", user).await;
    b.fill("#password", pass).await;
    b.click_to_page("#login-submit").await;
    b.wait_url("the repository list", |u| !u.contains("/ui/login"))
        .await;
    assert_eq!(b.text("#account").await, user, "signed in as {user}");
}

async fn logout(b: &Browser) {
    b.click_to_page("#logout").await;
    b.wait_url("the logged-out list", |u| u.ends_with("/ui/"))
        .await;
    assert!(b.exists("#login-link").await, "logged out: a login link");
    assert!(!b.exists("#account").await);
}

/// The repository names the list page shows.
async fn listed(b: &Browser, gate: &Gate) -> Vec<String> {
    b.goto(&format!("{}/ui/", gate.url())).await;
    let mut names = b.attrs("#repositories a[data-repo]", "data-repo").await;
    names.sort();
    names
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `fetch` from inside the page (same origin, with the page's cookies):
/// the status of a form POST.
async fn post_from_page(b: &Browser, path: &str, form: &[(&str, &str)]) -> u64 {
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{}={}", k, form_urlencoded_byte(v)))
        .collect();
    let v = b
        .js_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0], {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'}, body: arguments[1], redirect: 'manual'})
               .then(r => done(r.status), e => done(String(e)));",
            vec![json!(path), json!(body.join("&"))],
        )
        .await;
    v.as_u64().unwrap_or_else(|| panic!("fetch failed: {v}"))
}

fn form_urlencoded_byte(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn ui_login_visibility_inspection_and_logout() {
    let stack = Stack::with_config(&config()).await;
    let gate = &stack.gate;
    let skopeo = Skopeo::new();
    let old = image("2024-01-10T08:00:00Z");
    let new = image("2024-06-01T12:30:00Z");
    let multi = multi_arch("2024-03-01T00:00:00Z");
    push(&skopeo, gate, &old, "public/hello:1.0").await;
    push(&skopeo, gate, &new, "public/hello:2.0").await;
    push(&skopeo, gate, &multi, "public/multi:latest").await;
    for repo in [
        "team/app:v1",
        "test/tool:1",
        "mozart/symphony:40",
        "secret/keys:1",
    ] {
        push(&skopeo, gate, &image("2024-02-02T00:00:00Z"), repo).await;
    }
    let b = Browser::start().await;

    // Anonymous: `/` leads to the list, which shows what anonymous may pull.
    b.goto(&format!("{}/", gate.url())).await;
    b.wait_url("/ui/", |u| u.ends_with("/ui/")).await;
    assert!(b.exists("#login-link").await);
    assert_eq!(
        listed(&b, gate).await,
        strings(&["public/hello", "public/multi"])
    );
    b.screenshot("repositories-anonymous").await;

    // A wrong password shows an error and no session.
    b.goto(&format!("{}/ui/login", gate.url())).await;
    b.fill("#account-input", "admin").await;
    b.fill("#password", "wrong").await;
    b.click_to_page("#login-submit").await;
    b.wait_url("the login page", |u| u.ends_with("/ui/login"))
        .await;
    assert_eq!(b.text("#login-error").await, "Wrong user name or password.");
    assert!(b.cookie("rg_session").await.is_none());
    b.screenshot("login-error").await;

    // admin sees everything.
    login(&b, gate, ADMIN).await;
    assert_eq!(
        listed(&b, gate).await,
        strings(&[
            "mozart/symphony",
            "public/hello",
            "public/multi",
            "secret/keys",
            "team/app",
            "test/tool"
        ])
    );
    b.screenshot("repositories").await;
    // The search box narrows the list.
    b.fill("#q", "pub").await;
    b.click_to_page("form.search button").await;
    b.wait_url("the search results", |u| u.contains("q=pub"))
        .await;
    let mut found = b.attrs("#repositories a[data-repo]", "data-repo").await;
    found.sort();
    assert_eq!(found, strings(&["public/hello", "public/multi"]));

    // The repository: newest first, digests, platforms, pull commands, delete.
    b.goto(&format!("{}/ui/r/public/hello", gate.url())).await;
    assert_eq!(
        b.attrs("#tags tbody tr", "data-tag").await,
        strings(&["2.0", "1.0"])
    );
    assert_eq!(
        b.attrs("#tags tbody tr code.digest", "data-digest").await,
        vec![new.digest.clone(), old.digest.clone()]
    );
    assert_eq!(
        b.texts("#tags tbody tr .platform").await,
        strings(&["linux/amd64", "linux/amd64"])
    );
    let host = gate.addr.to_string();
    assert_eq!(
        b.attrs("#tags button.copy", "data-copy").await[1],
        format!("docker pull {host}/public/hello:1.0")
    );
    assert!(b.exists("#tags a.danger").await, "admin may delete");
    b.screenshot("repository").await;

    // A tag: digest, layers with sizes, config, history.
    b.goto(&format!("{}/ui/r/public/hello/-/tag/1.0", gate.url()))
        .await;
    assert_eq!(b.text("#digest").await, old.digest);
    assert_eq!(
        b.attrs("#layers tbody tr", "data-digest").await,
        old.layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>()
    );
    let sizes = b.texts("#layers tbody .layer-size").await;
    assert_eq!(sizes.len(), 2);
    assert_eq!(
        sizes[0],
        format!("{:.1} kB", old.layers[0].size as f64 / 1000.0)
    );
    assert_eq!(b.text("#entrypoint").await, r#"["/usr/bin/app"]"#);
    assert_eq!(b.text("#cmd").await, r#"["--listen",":8080"]"#);
    assert!(b.text("#env").await.contains("APP_MODE=production"));
    assert_eq!(b.text("#config .port").await, "8080/tcp");
    assert!(
        b.text("#labels")
            .await
            .contains("org.opencontainers.image.source")
    );
    assert_eq!(b.texts("#history li").await.len(), 3);
    assert!(
        b.text("#referrers")
            .await
            .contains("does not support the referrers API")
    );
    assert_eq!(
        b.text("#pull").await,
        format!("docker pull {host}/public/hello:1.0")
    );
    assert!(b.exists("#delete").await);
    assert!(b.text("#compressed").await.ends_with("kB"));
    b.set_size(1280, 1350).await;
    b.screenshot("tag").await;
    // The same page in dark mode (the system setting decides).
    b.dark(true).await;
    let bg = b
        .js(
            "return getComputedStyle(document.body).backgroundColor",
            vec![],
        )
        .await;
    assert_eq!(bg, json!("rgb(13, 17, 23)"), "dark background");
    b.screenshot("tag-dark").await;
    b.dark(false).await;
    let bg = b
        .js(
            "return getComputedStyle(document.body).backgroundColor",
            vec![],
        )
        .await;
    assert_eq!(bg, json!("rgb(255, 255, 255)"), "light background");
    b.set_size(1280, 900).await;

    // An index: one row per platform, each leading to its manifest.
    b.goto(&format!("{}/ui/r/public/multi/-/tag/latest", gate.url()))
        .await;
    assert_eq!(b.text("#digest").await, multi.digest);
    assert_eq!(
        b.texts("#children tbody th").await,
        strings(&["linux/amd64", "linux/arm64"])
    );
    for size in b.texts("#children tbody td[data-label=Size]").await {
        assert!(size.ends_with("kB"), "an image size per platform: {size}");
    }
    b.screenshot("index").await;
    b.click_to_page("#children tbody tr a").await;
    b.wait_url("the amd64 manifest", |u| u.contains("/-/manifest/sha256:"))
        .await;
    assert_eq!(
        b.attrs("#layers tbody tr", "data-digest").await,
        multi
            .layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>()
    );

    // Logout ends the session: the old cookie no longer signs anyone in.
    let session = b.cookie("rg_session").await.expect("a session cookie");
    logout(&b).await;
    let replay = http::client()
        .get(format!("{}/ui/r/secret/keys", gate.url()))
        .header("cookie", format!("rg_session={session}"))
        .send()
        .await
        .expect("replay");
    assert_eq!(
        replay.status(),
        404,
        "an ended session sees nothing private"
    );
    let page = replay.text().await.unwrap();
    assert!(page.contains("id=\"login-link\""), "{page}");
    // And the session token is never an access token.
    let v2 = http::bearer(
        reqwest::Method::GET,
        &format!("{}/v2/", gate.url()),
        &session,
    )
    .await;
    assert_eq!(v2.status(), 401);

    // test sees public/* and test/*, and no delete buttons.
    login(&b, gate, TEST).await;
    assert_eq!(
        listed(&b, gate).await,
        strings(&["public/hello", "public/multi", "test/tool"])
    );
    b.goto(&format!("{}/ui/r/public/hello", gate.url())).await;
    assert!(b.exists("#tags").await);
    assert!(!b.exists("#tags a.danger").await, "test may not delete");
    b.goto(&format!("{}/ui/r/public/hello/-/tag/1.0", gate.url()))
        .await;
    assert!(!b.exists("#delete").await);
    b.goto(&format!("{}/ui/r/team/app", gate.url())).await;
    assert!(b.text("#message").await.contains("you may not see it"));

    // A forged delete (valid session and CSRF token) is refused, and one
    // without the token too; the upstream keeps the tag.
    b.goto(&format!("{}/ui/r/public/hello/-/tag/1.0", gate.url()))
        .await;
    let csrf = b
        .attrs("form[action='/ui/logout'] input[name=csrf]", "value")
        .await[0]
        .clone();
    let path = "/ui/r/public/hello/-/delete";
    let form = [
        ("csrf", csrf.as_str()),
        ("reference", "1.0"),
        ("digest", old.digest.as_str()),
    ];
    assert_eq!(post_from_page(&b, path, &form).await, 403);
    assert_eq!(post_from_page(&b, path, &form[1..]).await, 403);
    assert_eq!(
        post_from_page(&b, "/ui/r/team/app/-/delete", &form).await,
        404,
        "a repository test may not see is not found"
    );
    assert_eq!(
        upstream_tags(&stack.registry, "public/hello").await,
        strings(&["1.0", "2.0"])
    );
    logout(&b).await;

    // An LDAP user sees their own namespace and public/*.
    login(&b, gate, MOZART).await;
    assert_eq!(
        listed(&b, gate).await,
        strings(&["mozart/symphony", "public/hello", "public/multi"])
    );
    b.goto(&format!("{}/ui/r/mozart/symphony/-/tag/40", gate.url()))
        .await;
    assert_eq!(b.texts("#layers tbody tr").await.len(), 2);
    // A narrow window (a phone): the same page, one column.
    b.set_size(390, 844).await;
    b.screenshot("tag-narrow").await;
    b.goto(&format!("{}/ui/r/public/hello", gate.url())).await;
    b.screenshot("repository-narrow").await;
    b.set_size(1280, 900).await;
    logout(&b).await;

    eprintln!("screenshots in {}", screenshot_dir().display());
    b.close().await;
}

#[tokio::test]
async fn ui_admin_deletes_tags_and_manifests() {
    let stack = Stack::with_config(&config()).await;
    let gate = &stack.gate;
    let registry = &stack.registry;
    let skopeo = Skopeo::new();
    let v1 = image("2024-01-01T00:00:00Z");
    let v2 = image("2024-02-01T00:00:00Z");
    let shared = image("2024-03-01T00:00:00Z");
    push(&skopeo, gate, &v1, "team/app:v1").await;
    push(&skopeo, gate, &v2, "team/app:v2").await;
    push(&skopeo, gate, &shared, "team/app:stable").await;
    push(&skopeo, gate, &shared, "team/app:current").await;
    // For the activity page: a push by another account, and writes in
    // repositories test may pull.
    push_as(
        &skopeo,
        gate,
        &image("2024-04-01T00:00:00Z"),
        "mozart/opus:1",
        MOZART,
    )
    .await;
    let news = image("2024-05-01T00:00:00Z");
    push(&skopeo, gate, &news, "public/news:1").await;
    push(&skopeo, gate, &image("2024-05-02T00:00:00Z"), "test/tool:1").await;
    let b = Browser::start().await;
    login(&b, gate, ADMIN).await;

    // Delete a tag: confirmation, then gone upstream; the others stay.
    b.goto(&format!("{}/ui/r/team/app/-/tag/v1", gate.url()))
        .await;
    b.click_to_page("#delete").await;
    b.wait_url("the confirmation", |u| u.contains("/-/delete?reference=v1"))
        .await;
    assert!(b.text("h1").await.contains("v1"));
    b.screenshot("delete-confirm").await;
    b.click_to_page("#confirm-delete").await;
    b.wait_url("the result", |u| u.ends_with("/-/delete")).await;
    assert!(
        b.text("#message").await.contains("Tag v1 was deleted"),
        "{}",
        b.text("main").await
    );
    b.screenshot("deleted").await;
    assert_eq!(
        upstream_tags(registry, "team/app").await,
        strings(&["current", "stable", "v2"])
    );
    assert!(!upstream_has_manifest(registry, "team/app", &v1.digest).await);
    assert!(upstream_has_manifest(registry, "team/app", &v2.digest).await);

    // distribution deletes manifests, not tags: a tag whose manifest another
    // tag shares is not deleted behind the user's back.
    b.goto(&format!(
        "{}/ui/r/team/app/-/delete?reference=stable",
        gate.url()
    ))
    .await;
    assert!(
        b.text("main").await.contains("current"),
        "the confirmation names the other tag"
    );
    b.click_to_page("#confirm-delete").await;
    b.wait_url("the result", |u| u.ends_with("/-/delete")).await;
    assert!(
        b.text("#message")
            .await
            .contains("cannot delete a tag alone")
    );
    assert_eq!(
        upstream_tags(registry, "team/app").await,
        strings(&["current", "stable", "v2"])
    );

    // Deleting the manifest takes all of its tags.
    b.goto(&format!(
        "{}/ui/r/team/app/-/manifest/{}",
        gate.url(),
        shared.digest
    ))
    .await;
    b.click_to_page("#delete").await;
    b.wait_url("the confirmation", |u| {
        u.contains("/-/delete?reference=sha256:")
    })
    .await;
    b.click_to_page("#confirm-delete").await;
    b.wait_url("the result", |u| u.ends_with("/-/delete")).await;
    assert!(b.text("#message").await.contains("were deleted"));
    assert_eq!(upstream_tags(registry, "team/app").await, strings(&["v2"]));

    // The list reflects it.
    b.goto(&format!("{}/ui/r/team/app", gate.url())).await;
    assert_eq!(
        b.attrs("#tags tbody tr", "data-tag").await,
        strings(&["v2"])
    );

    // The activity page: the deletes (newest first) and who pushed what.
    b.click_to_page("#nav-activity").await;
    b.wait_url("the activity page", |u| u.ends_with("/ui/activity"))
        .await;
    let rows = activity(&b).await;
    assert_eq!(
        rows[0],
        row(
            "delete_manifest",
            "admin",
            "team/app",
            "",
            &shared.digest,
            "ok"
        ),
        "the manifest delete is the newest: {rows:#?}"
    );
    assert!(
        rows.contains(&row(
            "delete_manifest",
            "admin",
            "team/app",
            "",
            &v1.digest,
            "ok"
        )),
        "{rows:#?}"
    );
    // distribution 2.x refused the tag-only deletes; the page says so.
    assert!(
        rows.contains(&row(
            "delete_manifest",
            "admin",
            "team/app",
            "stable",
            "",
            "failed"
        )),
        "{rows:#?}"
    );
    for (account, repo, tag, built) in [
        ("mozart", "mozart/opus", "1", None),
        ("admin", "public/news", "1", Some(&news)),
        ("admin", "team/app", "v2", Some(&v2)),
        ("admin", "team/app", "v1", Some(&v1)),
    ] {
        let pushed = rows
            .iter()
            .find(|r| r[0] == "push_manifest" && r[2] == repo && r[3] == tag && r[5] == "ok");
        let pushed = pushed.unwrap_or_else(|| panic!("{repo}:{tag} pushed: {rows:#?}"));
        assert_eq!(pushed[1], account, "{repo}:{tag} pushed by {account}");
        if let Some(built) = built {
            assert_eq!(pushed[4], built.digest, "{repo}:{tag}");
        }
    }
    assert!(
        b.text("#activity tbody tr:first-child")
            .await
            .contains("deleted"),
        "{}",
        b.text("#activity").await
    );
    // A pushed tag that is still there is a link; a deleted one is not.
    let links = b.attrs("#activity tbody a.ref", "href").await;
    assert!(
        links.contains(&"/ui/r/team/app/-/tag/v2".to_string()),
        "{links:?}"
    );
    assert!(!links.iter().any(|l| l.ends_with("/-/tag/v1")), "{links:?}");
    // Local time, from the script.
    let shown = b.text("#activity tbody tr:first-child time").await;
    assert!(!shown.ends_with("UTC"), "local time: {shown}");
    b.screenshot("activity").await;
    b.set_size(390, 844).await;
    b.screenshot("activity-narrow").await;
    b.set_size(1280, 900).await;
    b.goto(&format!("{}/ui/activity?all=1", gate.url())).await;
    let all = activity(&b).await;
    assert!(
        all.iter()
            .any(|r| r[0] == "push_blob" && r[2] == "mozart/opus" && r[1] == "mozart"),
        "blob uploads on asking: {all:#?}"
    );
    logout(&b).await;

    // test sees only the writes in public/* and test/*; anonymous, public/*.
    login(&b, gate, TEST).await;
    b.goto(&format!("{}/ui/activity", gate.url())).await;
    let repos: Vec<String> = activity(&b)
        .await
        .into_iter()
        .map(|r| r[2].clone())
        .collect();
    assert_eq!(repos, strings(&["test/tool", "public/news"]));
    b.goto(&format!("{}/ui/activity?all=1", gate.url())).await;
    for r in activity(&b).await {
        assert!(r[2] == "test/tool" || r[2] == "public/news", "{r:?}");
    }
    logout(&b).await;
    b.goto(&format!("{}/ui/activity", gate.url())).await;
    let repos: Vec<String> = activity(&b)
        .await
        .into_iter()
        .map(|r| r[2].clone())
        .collect();
    assert_eq!(repos, strings(&["public/news"]));
    b.close().await;
}

/// The rows of the activity page: (action, account, repository, tag,
/// digest, outcome).
async fn activity(b: &Browser) -> Vec<[String; 6]> {
    let css = "#activity tbody tr";
    let cols = [
        b.attrs(css, "data-action").await,
        b.attrs(css, "data-account").await,
        b.attrs(css, "data-repo").await,
        b.attrs(css, "data-tag").await,
        b.attrs(css, "data-digest").await,
        b.attrs(css, "data-outcome").await,
    ];
    (0..cols[0].len())
        .map(|i| std::array::from_fn(|c| cols[c][i].clone()))
        .collect()
}

fn row(
    action: &str,
    account: &str,
    repo: &str,
    tag: &str,
    digest: &str,
    outcome: &str,
) -> [String; 6] {
    [action, account, repo, tag, digest, outcome].map(str::to_string)
}
