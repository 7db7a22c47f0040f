//! Real clients through the gate, unchanged: docker (a private dockerd),
//! podman, skopeo and containerd's `ctr` log in, push a generated image,
//! remove it locally, pull it back and get the same digest, as a static user
//! (admin/badmin), as an LDAP user (mozart/password) and as a robot account
//! (`robot+NAME` with its `rgt_` secret, scoped to `team/*`); a pull-only
//! user (test/123), a robot outside its scopes and a personal token of the
//! pull-only user whose scopes say push are refused a push with a clear
//! message. Each test runs the
//! reference stack (registry + slapd + gate with the example config).
//!
//! Then transparency: the same raw requests straight to the upstream and
//! through the gate get the same statuses and headers.
//!
//! Every step that passes prints `matrix: CLIENT | USER KIND | OPERATION |
//! pass` (shown with `--nocapture`); a failing step panics with the
//! client's output.

use crate::harness::containerd::Containerd;
use crate::harness::docker::Docker;
use crate::harness::http::{self, RawBody, RawResponse, jwt_parts, raw_send, token};
use crate::harness::image::{MANIFEST_TYPE, OciImage, Skopeo, push_http};
use crate::harness::podman::Podman;
use crate::harness::{Stack, output_text, slapd};
use base64::Engine as _;
use std::collections::BTreeSet;
use std::net::SocketAddr;

#[derive(Clone, Copy)]
struct User {
    name: &'static str,
    password: &'static str,
    /// "static" or "LDAP", for the matrix.
    kind: &'static str,
    /// The backend the gate names in its tokens.
    backend: &'static str,
    /// Where the user's test repositories live (`NAMESPACE/docker-app`).
    namespace: &'static str,
}

const STATIC_USER: User = User {
    name: "admin",
    password: "badmin",
    kind: "static",
    backend: "static",
    namespace: "admin",
};
const LDAP_USER: User = User {
    name: "mozart",
    password: slapd::PASSWORD,
    kind: "LDAP",
    backend: "ldap",
    namespace: "mozart",
};
/// May only pull (example ACL).
const PULL_ONLY: User = User {
    name: "test",
    password: "123",
    kind: "static",
    backend: "static",
    namespace: "test",
};

/// A robot account made in the stack's store (`token create --robot`),
/// scoped to push and pull `team/*`: its repositories live there.
async fn robot(stack: &Stack, name: &'static str) -> User {
    let secret = stack
        .gate
        .create_token(&["--robot", name, "--scope", "repository:team/*:pull,push"])
        .await;
    User {
        name: Box::leak(format!("robot+{name}").into_boxed_str()),
        password: Box::leak(secret.into_boxed_str()),
        kind: "robot",
        backend: "robot",
        namespace: "team",
    }
}

/// A personal access token of the pull-only `test` whose scopes say push:
/// the ACL still decides (rights = scopes ∩ what the owner may do).
async fn pull_only_personal_token(stack: &Stack) -> User {
    let secret = stack
        .gate
        .create_token(&[
            "--owner",
            "test",
            "--name",
            "ci",
            "--scope",
            "repository:*/*:pull,push",
        ])
        .await;
    User {
        password: Box::leak(secret.into_boxed_str()),
        kind: "personal token (pull-only owner)",
        ..PULL_ONLY
    }
}

fn pass(client: &str, user: User, operation: &str) {
    println!("matrix: {client} | {} | {operation} | pass", user.kind);
}

/// Asserts the tool succeeded, showing its output otherwise.
fn ok(out: &std::process::Output, what: &str) -> String {
    let text = output_text(out);
    assert!(out.status.success(), "{what} failed: {text}");
    text
}

/// Asserts the tool failed and said something a user understands as
/// "not allowed"; returns what it said.
fn refused(out: &std::process::Output, what: &str, words: &[&str]) -> String {
    let text = output_text(out);
    assert!(!out.status.success(), "{what} succeeded: {text}");
    let lower = text.to_lowercase();
    assert!(
        words.iter().any(|w| lower.contains(w)),
        "{what} failed without saying {words:?}: {text}"
    );
    text
}

/// The last line that says something: what a user reads first.
fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
}

/// The first `sha256:<64 hex>` after `marker` in `text`.
fn digest_after(text: &str, marker: &str) -> Option<String> {
    let start = text.find(marker)? + marker.len();
    let rest = &text[start..];
    let at = rest.find("sha256:")?;
    let candidate: String = rest[at..].chars().take(7 + 64).collect();
    let hex = &candidate[7..];
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(candidate)
}

#[test]
fn digests_are_found_after_markers() {
    let d = format!("sha256:{}", "ab".repeat(32));
    assert_eq!(
        digest_after(&format!("v1: digest: {d} size: 524"), "digest: "),
        Some(d.clone())
    );
    assert_eq!(digest_after("digest: sha256:abc", "digest: "), None);
    assert_eq!(digest_after("nothing here", "digest: "), None);
}

/// The manifest digest the upstream itself serves for `repo:tag` (asked
/// directly, with every manifest type accepted).
async fn upstream_digest(stack: &Stack, repo: &str, tag: &str) -> String {
    let resp = http::client()
        .head(format!("{}/v2/{repo}/manifests/{tag}", stack.registry.url()))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .expect("HEAD manifest upstream");
    assert_eq!(resp.status(), 200, "{repo}:{tag} upstream");
    resp.headers()["docker-content-digest"]
        .to_str()
        .expect("ascii")
        .to_string()
}

/// Asserts the upstream served blobs of `repo` since `before` requests: a
/// pull really fetched something, it did not come from a local cache.
async fn assert_blobs_fetched(stack: &Stack, repo: &str, before: usize) {
    let seen = stack.registry.requests_settled().await;
    let wanted = format!("GET /v2/{repo}/blobs/sha256:");
    assert!(
        seen[before.min(seen.len())..]
            .iter()
            .any(|r| r.starts_with(&wanted)),
        "no {wanted}... upstream after the pull: {seen:#?}"
    );
}

/// Asserts nothing was written to `repo` upstream.
async fn assert_no_writes(stack: &Stack, repo: &str) {
    assert!(
        !stack.registry.has_repository(repo),
        "{repo} exists upstream"
    );
    let seen = stack.registry.requests_settled().await;
    let writes: Vec<&String> = seen
        .iter()
        .filter(|r| !r.starts_with("GET ") && !r.starts_with("HEAD "))
        .filter(|r| r.contains(&format!("/v2/{repo}/")))
        .collect();
    assert!(
        writes.is_empty(),
        "writes reached the upstream: {writes:#?}"
    );
}

// ----------------------------------------------------------------- docker

#[tokio::test]
async fn docker_logs_in_pushes_and_pulls_through_the_gate() {
    let (stack, docker) = tokio::join!(Stack::start(), Docker::start());
    let host = stack.gate.addr.to_string();
    let robot = robot(&stack, "docker").await;
    for user in [STATIC_USER, LDAP_USER, robot] {
        let out = docker
            .run(
                &["login", "--username", user.name, "--password-stdin", &host],
                Some("wrong\n"),
            )
            .await;
        let said = refused(&out, "docker login, wrong password", &["unauthorized"]);
        assert!(docker.config_json()["auths"].get(&host).is_none());
        println!(
            "matrix: docker | {} | wrong password says: {}",
            user.kind,
            last_line(&said)
        );
        docker_round_trip(&stack, &docker, user).await;
    }
    docker_denied_push(&stack, &docker, PULL_ONLY, "test/docker-denied").await;
    // Outside its scopes a robot is refused; a pull-only owner's personal
    // token never pushes, whatever its scopes say.
    docker_denied_push(&stack, &docker, robot, "other/docker-denied").await;
    let personal = pull_only_personal_token(&stack).await;
    docker_denied_push(&stack, &docker, personal, "test/docker-denied-pat").await;
}

async fn docker_login(docker: &Docker, host: &str, user: User) {
    let out = docker
        .run(
            &["login", "--username", user.name, "--password-stdin", host],
            Some(&format!("{}\n", user.password)),
        )
        .await;
    let said = ok(&out, "docker login");
    assert!(said.contains("Login Succeeded"), "{said}");
}

async fn docker_round_trip(stack: &Stack, docker: &Docker, user: User) {
    let host = stack.gate.addr.to_string();
    let repo = format!("{}/docker-app", user.namespace);
    let reference = format!("{host}/{repo}:v1");

    docker_login(docker, &host, user).await;
    pass("docker", user, "login");

    // config.json holds the refresh token as identity token, not the password.
    let raw = std::fs::read_to_string(docker.config_dir().join("config.json"))
        .expect("config.json after login");
    let config = docker.config_json();
    let entry = &config["auths"][&host];
    let identity = entry["identitytoken"]
        .as_str()
        .unwrap_or_else(|| panic!("no identitytoken for {host} in {raw}"));
    let (_, claims) = jwt_parts(identity);
    assert_eq!(claims["sub"], user.name, "{claims}");
    assert_eq!(claims["token_use"], "refresh", "{claims}");
    assert_eq!(claims["backend"], user.backend, "{claims}");
    if let Some(auth) = entry["auth"].as_str() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .expect("base64 auth");
        assert_eq!(
            String::from_utf8_lossy(&decoded),
            format!("{}:", user.name),
            "config.json keeps a password"
        );
    }
    assert!(
        !raw.contains(&format!("\"{}\"", user.password))
            && !raw.contains(
                &base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", user.name, user.password))
            ),
        "config.json holds the password: {raw}"
    );
    pass("docker", user, "identity token in config.json, no password");

    // Push: docker no longer has the password, so the refresh token works.
    docker.import_random(&reference).await;
    let out = docker.run(&["push", &reference], None).await;
    let said = ok(&out, "docker push");
    let pushed = digest_after(&said, "digest: ").unwrap_or_else(|| panic!("no digest: {said}"));
    assert_eq!(upstream_digest(stack, &repo, "v1").await, pushed);
    pass("docker", user, "push");

    // Remove locally, pull back: same digest, fetched from the upstream.
    ok(&docker.run(&["rmi", &reference], None).await, "docker rmi");
    assert!(
        !docker.has_image(&reference).await,
        "{reference} still there"
    );
    let before = stack.registry.requests_settled().await.len();
    let out = docker.run(&["pull", &reference], None).await;
    let said = ok(&out, "docker pull");
    assert_eq!(digest_after(&said, "Digest: ").as_deref(), Some(&*pushed));
    let digests = docker.repo_digests(&reference).await;
    assert!(
        digests.contains(&format!("{host}/{repo}@{pushed}")),
        "{digests:?}"
    );
    assert_blobs_fetched(stack, &repo, before).await;
    pass("docker", user, "pull, same digest");

    // Logout forgets the identity token; pulls are then refused.
    ok(&docker.run(&["logout", &host], None).await, "docker logout");
    assert!(
        docker.config_json()["auths"].get(&host).is_none(),
        "{}",
        docker.config_json()
    );
    let out = docker.run(&["pull", &reference], None).await;
    refused(
        &out,
        "docker pull after logout",
        &["denied", "unauthorized"],
    );
    pass("docker", user, "logout");
}

async fn docker_denied_push(stack: &Stack, docker: &Docker, user: User, repo: &str) {
    let host = stack.gate.addr.to_string();
    let reference = format!("{host}/{repo}:v1");
    docker_login(docker, &host, user).await;
    docker.import_random(&reference).await;
    let out = docker.run(&["push", &reference], None).await;
    let said = refused(
        &out,
        &format!("docker push as {} to {repo}", user.name),
        &["denied"],
    );
    assert_no_writes(stack, repo).await;
    println!(
        "matrix: docker | {} | denied push to {repo} says: {}",
        user.kind,
        last_line(&said)
    );
    ok(&docker.run(&["logout", &host], None).await, "docker logout");
}

// ----------------------------------------------------------------- podman

#[tokio::test]
async fn podman_logs_in_pushes_and_pulls_through_the_gate() {
    let stack = Stack::start().await;
    let host = stack.gate.addr.to_string();
    let podman = Podman::new(Some(&host));
    let robot = robot(&stack, "podman").await;
    for user in [STATIC_USER, LDAP_USER, robot] {
        let out = podman
            .run(
                &["login", "--username", user.name, "--password-stdin", &host],
                Some("wrong\n"),
            )
            .await;
        let said = refused(
            &out,
            "podman login, wrong password",
            &["unauthorized", "invalid"],
        );
        assert!(podman.auth_json()["auths"].get(&host).is_none());
        println!(
            "matrix: podman | {} | wrong password says: {}",
            user.kind,
            last_line(&said)
        );
        podman_round_trip(&stack, &podman, user).await;
    }

    // A pull-only user is refused a push, with a clear message.
    let repo = "test/podman-denied";
    let reference = format!("{host}/{repo}:v1");
    podman_login(&podman, &host, PULL_ONLY).await;
    podman.import_random(&reference).await;
    let policy = podman.policy_args();
    let out = podman
        .run(&["push", &policy[0], &policy[1], &reference], None)
        .await;
    let said = refused(&out, "podman push as test", &["denied", "unauthorized"]);
    assert_no_writes(&stack, repo).await;
    println!(
        "matrix: podman | static (pull-only) | denied push says: {}",
        last_line(&said)
    );
    ok(&podman.run(&["logout", &host], None).await, "podman logout");
}

async fn podman_login(podman: &Podman, host: &str, user: User) {
    let out = podman
        .run(
            &["login", "--username", user.name, "--password-stdin", host],
            Some(&format!("{}\n", user.password)),
        )
        .await;
    let said = ok(&out, "podman login");
    assert!(said.contains("Login Succeeded"), "{said}");
}

async fn podman_round_trip(stack: &Stack, podman: &Podman, user: User) {
    let host = stack.gate.addr.to_string();
    let repo = format!("{}/podman-app", user.namespace);
    let reference = format!("{host}/{repo}:v1");
    let policy = podman.policy_args();

    podman_login(podman, &host, user).await;
    // podman keeps the credentials themselves (base64 user:password).
    let auth = podman.auth_json();
    let stored = auth["auths"][&host]["auth"]
        .as_str()
        .unwrap_or_else(|| panic!("no auth for {host}: {auth}"));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(stored)
        .expect("base64");
    assert_eq!(
        String::from_utf8_lossy(&decoded),
        format!("{}:{}", user.name, user.password)
    );
    pass("podman", user, "login (auth.json)");

    podman.import_random(&reference).await;
    let digest_file = podman.dir().join(format!("{}.digest", user.name));
    let digest_arg = digest_file.to_string_lossy().into_owned();
    let out = podman
        .run(
            &[
                "push",
                &policy[0],
                &policy[1],
                "--digestfile",
                &digest_arg,
                &reference,
            ],
            None,
        )
        .await;
    ok(&out, "podman push");
    let pushed = std::fs::read_to_string(&digest_file)
        .expect("digest file")
        .trim()
        .to_string();
    assert_eq!(upstream_digest(stack, &repo, "v1").await, pushed);
    pass("podman", user, "push");

    ok(&podman.run(&["rmi", &reference], None).await, "podman rmi");
    assert!(
        !podman.has_image(&reference).await,
        "{reference} still there"
    );
    let before = stack.registry.requests_settled().await.len();
    let out = podman
        .run(&["pull", &policy[0], &policy[1], &reference], None)
        .await;
    ok(&out, "podman pull");
    assert_eq!(podman.image_digest(&reference).await, pushed);
    assert_blobs_fetched(stack, &repo, before).await;
    pass("podman", user, "pull, same digest");

    ok(&podman.run(&["logout", &host], None).await, "podman logout");
    assert!(
        podman.auth_json()["auths"].get(&host).is_none(),
        "{}",
        podman.auth_json()
    );
    let out = podman
        .run(&["pull", &policy[0], &policy[1], &reference], None)
        .await;
    refused(
        &out,
        "podman pull after logout",
        &["denied", "unauthorized"],
    );
    pass("podman", user, "logout");
}

// ----------------------------------------------------------------- skopeo

#[tokio::test]
async fn skopeo_logs_in_pushes_and_pulls_through_the_gate() {
    let stack = Stack::start().await;
    let host = stack.gate.addr.to_string();
    let skopeo = Skopeo::new();
    let robot = robot(&stack, "skopeo").await;
    for user in [STATIC_USER, LDAP_USER, robot] {
        let wrong = User {
            password: "wrong",
            ..user
        };
        let out = skopeo_login_output(&skopeo, &host, wrong).await;
        let said = refused(
            &out,
            "skopeo login, wrong password",
            &["unauthorized", "invalid"],
        );
        println!(
            "matrix: skopeo | {} | wrong password says: {}",
            user.kind,
            last_line(&said)
        );
        skopeo_login(&skopeo, &host, user).await;
        pass("skopeo", user, "login (auth.json)");

        // Push an OCI layout with the stored credentials: digest kept.
        let image = OciImage::generate();
        let repo = format!("{}/skopeo-app", user.namespace);
        let reference = format!("{host}/{repo}:v1");
        ok(
            &skopeo.push(&image, &reference, None).await,
            "skopeo copy (push)",
        );
        assert_eq!(
            upstream_digest(&stack, &repo, "v1").await,
            image.manifest_digest
        );
        pass("skopeo", user, "push");

        // skopeo keeps no local image: pulling into a fresh layout is the
        // remove-and-pull-back.
        let (out, pulled) = skopeo.pull(&reference, None).await;
        ok(&out, "skopeo copy (pull)");
        assert_eq!(pulled.digest(), image.manifest_digest);
        pass("skopeo", user, "pull, same digest");

        let out = skopeo.run(&["logout".into(), host.clone()]).await;
        ok(&out, "skopeo logout");
        let (out, _) = skopeo.pull(&reference, None).await;
        refused(
            &out,
            "skopeo pull after logout",
            &["denied", "unauthorized"],
        );
        pass("skopeo", user, "logout");
    }

    skopeo_login(&skopeo, &host, PULL_ONLY).await;
    let repo = "test/skopeo-denied";
    let out = skopeo
        .push(&OciImage::generate(), &format!("{host}/{repo}:v1"), None)
        .await;
    let said = refused(&out, "skopeo push as test", &["denied", "unauthorized"]);
    assert_no_writes(&stack, repo).await;
    println!(
        "matrix: skopeo | static (pull-only) | denied push says: {}",
        last_line(&said)
    );
    ok(
        &skopeo.run(&["logout".into(), host.clone()]).await,
        "skopeo logout",
    );
}

/// `server.worker_threads = 1` runs the gate on tokio's single-threaded
/// runtime (also what `0` picks when the gate may use one CPU only, as in
/// the benchmark): logins (bcrypt on the blocking pool, LDAP), a push and a
/// pull must work there exactly as on the multi-threaded one.
#[tokio::test]
async fn skopeo_pushes_and_pulls_through_a_single_threaded_gate() {
    let stack = Stack::with_config_env(
        &crate::harness::gate::example_config(),
        &[("REGISTRY_GATE_SERVER__WORKER_THREADS", "1")],
    )
    .await;
    stack.gate.wait_log("workers=1", 1).await;
    let host = stack.gate.addr.to_string();
    let skopeo = Skopeo::new();
    for user in [STATIC_USER, LDAP_USER] {
        skopeo_login(&skopeo, &host, user).await;
        let image = OciImage::generate();
        let repo = format!("{}/single-thread", user.namespace);
        let reference = format!("{host}/{repo}:v1");
        ok(
            &skopeo.push(&image, &reference, None).await,
            "skopeo copy (push), one worker",
        );
        let (out, pulled) = skopeo.pull(&reference, None).await;
        ok(&out, "skopeo copy (pull), one worker");
        assert_eq!(pulled.digest(), image.manifest_digest);
        ok(
            &skopeo.run(&["logout".into(), host.clone()]).await,
            "skopeo logout",
        );
    }
}

async fn skopeo_login(skopeo: &Skopeo, host: &str, user: User) {
    let out = skopeo_login_output(skopeo, host, user).await;
    let said = ok(&out, "skopeo login");
    assert!(said.contains("Login Succeeded"), "{said}");
}

async fn skopeo_login_output(skopeo: &Skopeo, host: &str, user: User) -> std::process::Output {
    let args: Vec<String> = [
        "login",
        "--tls-verify=false",
        "--username",
        user.name,
        "--password-stdin",
        host,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    skopeo
        .run_with_input(&args, Some(&format!("{}\n", user.password)))
        .await
}

// ------------------------------------------------------ containerd (ctr)

#[tokio::test]
async fn containerd_ctr_pushes_and_pulls_through_the_gate() {
    let (stack, containerd) = tokio::join!(Stack::start(), Containerd::start());
    let host = stack.gate.addr.to_string();
    let robot = robot(&stack, "ctr").await;
    for user in [STATIC_USER, LDAP_USER, robot] {
        // ctr has no login: credentials go with each command (`--user`), and
        // its resolver asks the realm by POST grant_type=password first.
        let creds = format!("{}:{}", user.name, user.password);
        let image = OciImage::generate();
        let repo = format!("{}/ctr-app", user.namespace);
        let base = format!("{host}/{repo}");
        let reference = format!("{base}:latest");
        containerd.import(&image.archive(), &base).await;
        assert_eq!(
            containerd.image_digest(&reference).await.as_deref(),
            Some(&*image.manifest_digest)
        );
        let out = containerd
            .ctr(&[
                "images",
                "push",
                "--plain-http",
                "--user",
                &creds,
                &reference,
            ])
            .await;
        ok(&out, "ctr images push");
        assert_eq!(
            upstream_digest(&stack, &repo, "latest").await,
            image.manifest_digest
        );
        pass("ctr", user, "push (--user, POST grant_type=password)");

        let out = containerd
            .ctr(&["images", "rm", "--sync", &reference])
            .await;
        ok(&out, "ctr images rm");
        assert_eq!(containerd.image_digest(&reference).await, None);
        let before = stack.registry.requests_settled().await.len();
        let out = containerd
            .ctr(&[
                "images",
                "pull",
                "--plain-http",
                "--user",
                &creds,
                &reference,
            ])
            .await;
        ok(&out, "ctr images pull");
        assert_eq!(
            containerd.image_digest(&reference).await.as_deref(),
            Some(&*image.manifest_digest)
        );
        assert_blobs_fetched(&stack, &repo, before).await;
        pass("ctr", user, "pull, same digest");

        // Without credentials the same pull is refused.
        let out = containerd
            .ctr(&["images", "pull", "--plain-http", &reference])
            .await;
        refused(
            &out,
            "ctr pull without credentials",
            &["insufficient_scope", "denied", "unauthorized", "401"],
        );
        pass("ctr", user, "pull without credentials refused");
    }

    // A wrong password: the POST is refused (401), containerd retries with
    // GET, refused too, and says so.
    for user in [STATIC_USER, LDAP_USER] {
        let creds = format!("{}:wrong", user.name);
        let reference = format!("{host}/{}/ctr-app:latest", user.namespace);
        let out = containerd
            .ctr(&[
                "images",
                "pull",
                "--plain-http",
                "--user",
                &creds,
                &reference,
            ])
            .await;
        let said = refused(&out, "ctr pull, wrong password", &["401", "unauthorized"]);
        println!(
            "matrix: ctr | {} | wrong password says: {}",
            user.kind,
            last_line(&said)
        );
    }
    // The log is written off the request path: wait for the lines.
    for wanted in [
        "method=POST path=/auth status=401",
        "method=GET path=/auth status=401",
    ] {
        stack.gate.wait_log(wanted, 1).await;
    }

    let image = OciImage::generate();
    let repo = "test/ctr-denied";
    let base = format!("{host}/{repo}");
    containerd.import(&image.archive(), &base).await;
    let creds = format!("{}:{}", PULL_ONLY.name, PULL_ONLY.password);
    let out = containerd
        .ctr(&[
            "images",
            "push",
            "--plain-http",
            "--user",
            &creds,
            &format!("{base}:latest"),
        ])
        .await;
    let said = refused(&out, "ctr push as test", &["insufficient_scope", "denied"]);
    assert_no_writes(&stack, repo).await;
    println!(
        "matrix: ctr | static (pull-only) | denied push says: {}",
        last_line(&said)
    );

    // The token requests containerd made: POST forms first, several scopes.
    // containerd must have used the POST form (the log is written off the
    // request path: wait for the line).
    stack
        .gate
        .wait_log("method=POST path=/auth status=200", 1)
        .await;
}

// -------------------------------------------------------- a TLS gate

/// A self-signed certificate for 127.0.0.1 in a temp dir: `cert.pem`,
/// `key.pem`, and `certs/ca.crt` (the same certificate, where podman and
/// skopeo look for CAs with `--cert-dir`).
fn self_signed_cert() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("it-tls-")
        .tempdir()
        .expect("temp dir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("certificate");
    let pem = certified.cert.pem();
    std::fs::write(dir.path().join("cert.pem"), &pem).expect("write cert");
    std::fs::write(
        dir.path().join("key.pem"),
        certified.signing_key.serialize_pem(),
    )
    .expect("write key");
    std::fs::create_dir_all(dir.path().join("certs")).expect("mkdir certs");
    std::fs::write(dir.path().join("certs/ca.crt"), &pem).expect("write ca.crt");
    dir
}

/// The same clients against a gate serving TLS (realm `https://...`):
/// podman, skopeo and ctr verify the gate's certificate against the CA they
/// are given; docker, for which 127.0.0.0/8 is always an insecure registry,
/// skips verification. Static user: the transport does not depend on the
/// backend.
#[tokio::test]
async fn clients_push_and_pull_through_a_tls_gate() {
    let tls = self_signed_cert();
    let cert = tls.path().join("cert.pem").display().to_string();
    let key = tls.path().join("key.pem").display().to_string();
    let ca_dir = tls.path().join("certs").display().to_string();
    let env = [
        ("REGISTRY_GATE_SERVER__TLS__CERT", cert.as_str()),
        ("REGISTRY_GATE_SERVER__TLS__KEY", key.as_str()),
    ];
    let config = crate::harness::gate::example_config();
    let (stack, docker, containerd) = tokio::join!(
        Stack::with_config_env(&config, &env),
        Docker::start(),
        Containerd::start()
    );
    assert!(stack.gate.url().starts_with("https://"));
    let host = stack.gate.addr.to_string();
    let user = STATIC_USER;
    let creds = format!("{}:{}", user.name, user.password);

    // docker
    let reference = format!("{host}/admin/tls-docker:v1");
    docker_login(&docker, &host, user).await;
    docker.import_random(&reference).await;
    let said = ok(
        &docker.run(&["push", &reference], None).await,
        "docker push (TLS)",
    );
    let pushed = digest_after(&said, "digest: ").expect("digest");
    ok(&docker.run(&["rmi", &reference], None).await, "docker rmi");
    let said = ok(
        &docker.run(&["pull", &reference], None).await,
        "docker pull (TLS)",
    );
    assert_eq!(digest_after(&said, "Digest: ").as_deref(), Some(&*pushed));
    ok(&docker.run(&["logout", &host], None).await, "docker logout");
    println!("matrix: docker | static | TLS gate: login, push, pull | pass");

    // podman, verifying the certificate (no `insecure` entry).
    let podman = Podman::new(None);
    let reference = format!("{host}/admin/tls-podman:v1");
    let cert_dir = ["--cert-dir", ca_dir.as_str()];
    let out = podman
        .run(
            &[
                "login",
                cert_dir[0],
                cert_dir[1],
                "--username",
                user.name,
                "--password-stdin",
                &host,
            ],
            Some(&format!("{}\n", user.password)),
        )
        .await;
    ok(&out, "podman login (TLS)");
    podman.import_random(&reference).await;
    let policy = podman.policy_args();
    let digest_file = podman.dir().join("tls.digest");
    let digest_arg = digest_file.to_string_lossy().into_owned();
    let out = podman
        .run(
            &[
                "push",
                &policy[0],
                &policy[1],
                cert_dir[0],
                cert_dir[1],
                "--digestfile",
                &digest_arg,
                &reference,
            ],
            None,
        )
        .await;
    ok(&out, "podman push (TLS)");
    let pushed = std::fs::read_to_string(&digest_file)
        .expect("digest")
        .trim()
        .to_string();
    ok(&podman.run(&["rmi", &reference], None).await, "podman rmi");
    let out = podman
        .run(
            &[
                "pull",
                &policy[0],
                &policy[1],
                cert_dir[0],
                cert_dir[1],
                &reference,
            ],
            None,
        )
        .await;
    ok(&out, "podman pull (TLS)");
    assert_eq!(podman.image_digest(&reference).await, pushed);
    // Without the CA, podman refuses the gate's certificate.
    let out = podman
        .run(&["pull", &policy[0], &policy[1], &reference], None)
        .await;
    refused(&out, "podman pull without the CA", &["certificate", "x509"]);
    println!("matrix: podman | static | TLS gate (verified): login, push, pull | pass");

    // skopeo, verifying the certificate.
    let skopeo = Skopeo::new();
    let image = OciImage::generate();
    let reference = format!("{host}/admin/tls-skopeo:v1");
    let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let out = skopeo
        .run_with_input(
            &strings(&[
                "login",
                "--cert-dir",
                &ca_dir,
                "--username",
                user.name,
                "--password-stdin",
                &host,
            ]),
            Some(&format!("{}\n", user.password)),
        )
        .await;
    ok(&out, "skopeo login (TLS)");
    let out = skopeo
        .run(&strings(&[
            "copy",
            "--retry-times",
            "0",
            "--preserve-digests",
            "--dest-cert-dir",
            &ca_dir,
            &image.reference(),
            &format!("docker://{reference}"),
        ]))
        .await;
    ok(&out, "skopeo copy (push, TLS)");
    let pulled = tempfile::Builder::new()
        .prefix("it-pulled-")
        .tempdir()
        .expect("temp dir");
    let out = skopeo
        .run(&strings(&[
            "copy",
            "--retry-times",
            "0",
            "--preserve-digests",
            "--src-cert-dir",
            &ca_dir,
            &format!("docker://{reference}"),
            &format!("oci:{}:latest", pulled.path().display()),
        ]))
        .await;
    ok(&out, "skopeo copy (pull, TLS)");
    assert_eq!(
        crate::harness::image::layout_digest(pulled.path()),
        image.manifest_digest
    );
    println!("matrix: skopeo | static | TLS gate (verified): login, push, pull | pass");

    // ctr, verifying the certificate. containerd 1.6 talks plain HTTP to a
    // localhost registry unless a hosts.toml (what Kubernetes nodes use
    // under /etc/containerd/certs.d) says https, with the CA to trust.
    let image = OciImage::generate();
    let base = format!("{host}/admin/tls-ctr");
    let reference = format!("{base}:latest");
    let hosts_dir = tls.path().join("containerd-certs.d");
    std::fs::create_dir_all(hosts_dir.join(&host)).expect("mkdir hosts dir");
    std::fs::write(
        hosts_dir.join(&host).join("hosts.toml"),
        format!(
            "server = \"https://{host}\"\n\n[host.\"https://{host}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n  ca = \"{}\"\n",
            tls.path().join("cert.pem").display()
        ),
    )
    .expect("write hosts.toml");
    let hosts_dir = hosts_dir.display().to_string();
    containerd.import(&image.archive(), &base).await;
    let out = containerd
        .ctr(&[
            "images",
            "push",
            "--hosts-dir",
            &hosts_dir,
            "--user",
            &creds,
            &reference,
        ])
        .await;
    ok(&out, "ctr images push (TLS)");
    ok(
        &containerd
            .ctr(&["images", "rm", "--sync", &reference])
            .await,
        "ctr images rm",
    );
    let out = containerd
        .ctr(&[
            "images",
            "pull",
            "--hosts-dir",
            &hosts_dir,
            "--user",
            &creds,
            &reference,
        ])
        .await;
    ok(&out, "ctr images pull (TLS)");
    assert_eq!(
        containerd.image_digest(&reference).await.as_deref(),
        Some(&*image.manifest_digest)
    );
    println!("matrix: ctr | static | TLS gate (verified): push, pull | pass");

    // Every upload Location and realm pointed at https://gate: nothing
    // went around it.
    for repo in [
        "admin/tls-docker",
        "admin/tls-podman",
        "admin/tls-skopeo",
        "admin/tls-ctr",
    ] {
        assert!(stack.registry.has_repository(repo), "{repo}");
    }
}

// ---------------------------------------------------- a TLS probe on HTTP

/// docker first tries TLS on a plain-HTTP registry port, then falls back to
/// HTTP: the gate must answer the ClientHello in a way TLS clients read as
/// "this is HTTP" (a plain HTTP 400), and keep serving.
#[tokio::test]
async fn tls_handshake_on_plain_http_port_is_answered_and_gate_keeps_serving() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start().await;

    // A real ClientHello, as rustls would send it.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).expect("ClientHello");
    assert_eq!(hello[0], 0x16, "a TLS handshake record");

    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(stack.gate.addr)
            .await
            .expect("connect");
        stream.write_all(&hello).await.expect("send ClientHello");
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut answer),
        )
        .await
        .expect("the gate answers a TLS probe and closes, it does not hang")
        .expect("read");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 400"), "answer: {text:?}");
    }

    let resp = http::client()
        .get(format!("{}/v2/", stack.gate.url()))
        .send()
        .await
        .expect("GET /v2/ after the probes");
    assert_eq!(resp.status(), 401);
}

// ----------------------------------------------------------- transparency

/// One side of the comparison: a base address and how to authorize.
struct Side<'a> {
    addr: SocketAddr,
    repo: &'a str,
    /// Where blobs of `repo` get mounted.
    mount_repo: &'a str,
    bearer: Option<String>,
}

impl Side<'_> {
    async fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: RawBody<'_>,
    ) -> RawResponse {
        let auth = self.bearer.as_ref().map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(auth) = &auth {
            all.push(("Authorization", auth));
        }
        raw_send(self.addr, method, target, &all, body).await
    }

    /// The path and query of an absolute or relative `Location`, after
    /// asserting an absolute one names this side's address.
    fn follow(&self, resp: &RawResponse) -> String {
        let location = resp.header("location").expect("Location");
        match location.strip_prefix("http://") {
            Some(rest) => {
                let (authority, path) = rest.split_at(rest.find('/').expect("path"));
                assert_eq!(authority, self.addr.to_string(), "Location {location}");
                path.to_string()
            }
            None => location.to_string(),
        }
    }
}

type Header<'a> = (&'a str, &'a str);
type Headers<'a> = Vec<Header<'a>>;

/// Headers whose values must be identical on both sides.
const SAME_VALUE: &[&str] = &[
    "content-type",
    "content-length",
    "content-range",
    "range",
    "docker-content-digest",
    "docker-distribution-api-version",
    "accept-ranges",
    "etag",
    "x-content-type-options",
    "oci-subject",
];

/// Compares one step: same status, same header names (but `Date`), same
/// values where they do not name a random upload or the address.
fn same(step: &str, up: &RawResponse, gate: &RawResponse) {
    assert_eq!(
        up.status, gate.status,
        "{step}: upstream {up:?}\ngate {gate:?}"
    );
    let names = |r: &RawResponse| -> BTreeSet<String> {
        r.headers
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| k != "date")
            .collect()
    };
    assert_eq!(
        names(up),
        names(gate),
        "{step}: header names differ\nupstream {up:?}\ngate {gate:?}"
    );
    for name in SAME_VALUE {
        assert_eq!(up.header(name), gate.header(name), "{step}: {name} differs");
    }
    println!("transparency: {step}: {} on both sides", up.status);
}

#[tokio::test]
async fn gate_is_transparent_to_registry_statuses_and_headers() {
    let stack = Stack::start().await;
    let gate_token = token(
        &stack.gate,
        Some(("admin", "badmin")),
        &[
            "repository:transparency/two:pull,push,delete",
            "repository:transparency/dos:pull,push",
        ],
    )
    .await;
    let up = Side {
        addr: stack.registry.addr,
        repo: "transparency/one",
        mount_repo: "transparency/uno",
        bearer: None,
    };
    let gate = Side {
        addr: stack.gate.addr,
        repo: "transparency/two",
        mount_repo: "transparency/dos",
        bearer: Some(gate_token.clone()),
    };
    let sides = [&up, &gate];

    // The same image content on both sides, so digests compare equal.
    let image = OciImage::generate();
    // (config, layer): the layer is the bigger one, uploaded by hand here.
    let (layer_digest, layer) = image.blobs[1].clone();
    let (first, second) = layer.split_at(layer.len() / 2);
    let (a, b) = first.split_at(first.len() / 3);

    // 1. Start an upload: 202, Location, Range 0-0, Docker-Upload-UUID.
    let mut r = Vec::new();
    for s in sides {
        let resp = s
            .send(
                "POST",
                &format!("/v2/{}/blobs/uploads/", s.repo),
                &[],
                RawBody::Empty,
            )
            .await;
        assert!(resp.header("docker-upload-uuid").is_some(), "{resp:?}");
        r.push(resp);
    }
    same("POST blobs/uploads/", &r[0], &r[1]);
    assert_eq!(r[1].status, 202);
    let mut at: Vec<String> = vec![up.follow(&r[0]), gate.follow(&r[1])];

    // 2. A chunked (Transfer-Encoding) PATCH, as docker sends its layers.
    let mut r = Vec::new();
    for (i, s) in sides.iter().enumerate() {
        let resp = s
            .send(
                "PATCH",
                &at[i],
                &[("Content-Type", "application/octet-stream")],
                RawBody::Chunked(&[a, b]),
            )
            .await;
        at[i] = s.follow(&resp);
        r.push(resp);
    }
    same("PATCH chunked transfer", &r[0], &r[1]);
    assert_eq!(r[1].status, 202);
    assert_eq!(
        r[1].header("range"),
        Some(&*format!("0-{}", first.len() - 1))
    );

    // 3. A second PATCH with Content-Range (a chunked upload in the spec's sense).
    let content_range = format!("{}-{}", first.len(), layer.len() - 1);
    let mut r = Vec::new();
    for (i, s) in sides.iter().enumerate() {
        let resp = s
            .send(
                "PATCH",
                &at[i],
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", &content_range),
                ],
                RawBody::Fixed(second),
            )
            .await;
        at[i] = s.follow(&resp);
        r.push(resp);
    }
    same("PATCH with Content-Range", &r[0], &r[1]);
    assert_eq!(
        r[1].header("range"),
        Some(&*format!("0-{}", layer.len() - 1))
    );

    // 4. Upload status: 204 with Range and Docker-Upload-UUID.
    let mut r = Vec::new();
    for (i, s) in sides.iter().enumerate() {
        r.push(s.send("GET", &at[i], &[], RawBody::Empty).await);
    }
    same("GET upload status", &r[0], &r[1]);
    assert_eq!(r[1].status, 204);
    assert!(r[1].header("docker-upload-uuid").is_some());

    // 5. Finish: 201, Docker-Content-Digest, Location of the blob.
    let mut r = Vec::new();
    for (i, s) in sides.iter().enumerate() {
        let sep = if at[i].contains('?') { '&' } else { '?' };
        let target = format!("{}{sep}digest={layer_digest}", at[i]);
        r.push(s.send("PUT", &target, &[], RawBody::Empty).await);
    }
    same("PUT finish upload", &r[0], &r[1]);
    assert_eq!(r[1].status, 201);
    assert_eq!(r[1].header("docker-content-digest"), Some(&*layer_digest));
    assert_eq!(
        gate.follow(&r[1]),
        format!("/v2/{}/blobs/{layer_digest}", gate.repo)
    );

    // 6. Blob reads: HEAD, ranges (206 + Content-Range), past the end (416).
    let blob = |s: &Side| format!("/v2/{}/blobs/{layer_digest}", s.repo);
    let past_end = format!("bytes={}-", layer.len() + 10);
    let cases: [(&str, &str, Headers); 4] = [
        ("HEAD blob", "HEAD", vec![]),
        ("GET blob", "GET", vec![]),
        (
            "GET blob Range: bytes=2-9",
            "GET",
            vec![("Range", "bytes=2-9")],
        ),
        (
            "GET blob Range past the end",
            "GET",
            vec![("Range", &past_end)],
        ),
    ];
    for (step, method, headers) in &cases {
        let mut r = Vec::new();
        for s in sides {
            r.push(s.send(method, &blob(s), headers, RawBody::Empty).await);
        }
        same(step, &r[0], &r[1]);
        assert_eq!(r[0].body, r[1].body, "{step}: bodies differ");
    }

    // The rest of the image (tag v0) with the HTTP pusher; then the same
    // manifest by hand as v1: 201, Location, Docker-Content-Digest.
    let client = http::client();
    push_http(&client, &stack.registry.url(), up.repo, "v0", None, &image).await;
    push_http(
        &client,
        &stack.gate.url(),
        gate.repo,
        "v0",
        Some(&gate_token),
        &image,
    )
    .await;
    let mut r = Vec::new();
    for s in sides {
        r.push(
            s.send(
                "PUT",
                &format!("/v2/{}/manifests/v1", s.repo),
                &[("Content-Type", MANIFEST_TYPE)],
                RawBody::Fixed(&image.manifest),
            )
            .await,
        );
    }
    same("PUT manifest", &r[0], &r[1]);
    assert_eq!(r[1].status, 201);
    assert_eq!(
        r[1].header("docker-content-digest"),
        Some(&*image.manifest_digest)
    );
    assert_eq!(
        gate.follow(&r[1]),
        format!("/v2/{}/manifests/{}", gate.repo, image.manifest_digest)
    );

    // The tag list (distribution 2.8 ignores `n` for tags: no Link header
    // on either side; the same header set and list either way).
    let mut r = Vec::new();
    for s in sides {
        r.push(
            s.send(
                "GET",
                &format!("/v2/{}/tags/list?n=1", s.repo),
                &[],
                RawBody::Empty,
            )
            .await,
        );
    }
    same("GET tags/list", &r[0], &r[1]);
    assert_eq!(
        r[1].text().replace(gate.repo, "REPO"),
        r[0].text().replace(up.repo, "REPO")
    );

    // Cross-repository mount: 201 with Location and Docker-Content-Digest.
    let mut r = Vec::new();
    for s in sides {
        let target = format!(
            "/v2/{}/blobs/uploads/?mount={layer_digest}&from={}",
            s.mount_repo, s.repo
        );
        r.push(s.send("POST", &target, &[], RawBody::Empty).await);
    }
    same("POST blobs/uploads/?mount=&from=", &r[0], &r[1]);
    assert_eq!(r[1].status, 201, "{:?}", r[1]);
    assert_eq!(r[1].header("docker-content-digest"), Some(&*layer_digest));

    // 7. Manifests: an OCI Accept passes through (distribution hides OCI
    // manifests from clients that do not accept them: 404 both ways).
    let manifest = |s: &Side, reference: &str| format!("/v2/{}/manifests/{reference}", s.repo);
    let oci_accept = [("Accept", MANIFEST_TYPE)];
    let docker_only = [(
        "Accept",
        "application/vnd.docker.distribution.manifest.v2+json",
    )];
    let cases: [(&str, &str, &[Header], u16); 4] = [
        ("HEAD manifest, OCI Accept", "HEAD", &oci_accept, 200),
        ("GET manifest, OCI Accept", "GET", &oci_accept, 200),
        ("GET manifest, Docker-only Accept", "GET", &docker_only, 404),
        ("GET manifest, no Accept", "GET", &[], 404),
    ];
    for (step, method, headers, status) in cases {
        let mut r = Vec::new();
        for s in sides {
            r.push(
                s.send(method, &manifest(s, "v1"), headers, RawBody::Empty)
                    .await,
            );
        }
        same(step, &r[0], &r[1]);
        assert_eq!(r[1].status, status, "{step}: {:?}", r[1]);
        assert_eq!(r[0].body, r[1].body, "{step}: bodies differ");
    }

    // 8. Delete by digest: 202; then the manifest is gone: 404.
    for (step, method, status) in [
        ("DELETE manifest", "DELETE", 202),
        ("GET deleted manifest", "GET", 404),
    ] {
        let mut r = Vec::new();
        for s in sides {
            r.push(
                s.send(
                    method,
                    &manifest(s, &image.manifest_digest),
                    &oci_accept,
                    RawBody::Empty,
                )
                .await,
            );
        }
        same(step, &r[0], &r[1]);
        assert_eq!(r[1].status, status, "{step}: {:?}", r[1]);
    }
}
