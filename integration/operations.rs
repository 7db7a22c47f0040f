//! Operations: health and readiness, and the deployment files in docker/.

use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::harness::gate::example_config;
use crate::harness::http::{SERVICE, client, request_token};
use crate::harness::image::{OciImage, Skopeo};
use crate::harness::{Gate, Stack, free_port, repo_root};

async fn readyz(gate: &Gate) -> (u16, serde_json::Value) {
    let resp = client()
        .get(format!("{}/readyz", gate.url()))
        .send()
        .await
        .expect("GET /readyz");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("readyz JSON"))
}

#[tokio::test]
async fn readyz_reports_each_dependency() {
    let stack = Stack::start().await;
    let (status, body) = readyz(&stack.gate).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["upstream"], "ok");
    assert_eq!(body["ldap"], "ok");
    assert_eq!(body["signing_key"], "ok");
}

#[tokio::test]
async fn readyz_is_unavailable_when_dependencies_are_down() {
    // Ports nobody listens on: the upstream and LDAP are both unreachable,
    // yet the gate starts (it must, to report it) and stays alive.
    let dead_upstream = format!("http://127.0.0.1:{}", free_port());
    let dead_ldap = format!("ldap://127.0.0.1:{}", free_port());
    let env = [("REGISTRY_GATE_LDAP__URL", dead_ldap.as_str())];
    let gate = Gate::start_with_config(&example_config(), &dead_upstream, &env).await;
    let (status, body) = readyz(&gate).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_ne!(body["upstream"], "ok");
    assert_ne!(body["ldap"], "ok");
    let alive = client()
        .get(format!("{}/healthz", gate.url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(alive.status(), 200);
}

fn yaml_documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join(path)).expect(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

#[test]
fn compose_file_mirrors_the_reference_setup() {
    let docs = yaml_documents("docker/compose.yaml");
    assert_eq!(docs.len(), 1);
    let services = &docs[0]["services"];
    for name in ["gate", "registry", "openldap"] {
        assert!(services[name].is_mapping(), "service {name} missing");
    }
    // Only the gate is exposed; the registry has no auth of its own.
    assert_eq!(services["gate"]["ports"][0], "5000:5000");
    assert!(services["registry"]["ports"].is_null());
    assert!(services["openldap"]["ports"].is_null());
    let gate_env = &services["gate"]["environment"];
    assert_eq!(
        gate_env["REGISTRY_GATE_UPSTREAM__URL"],
        "http://registry:5000"
    );
    let mounts: Vec<&str> = services["gate"]["volumes"]
        .as_sequence()
        .expect("gate volumes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        mounts.iter().any(|m| m.starts_with("../config:")),
        "{mounts:?}"
    );
    // The files the compose file points at exist.
    let dockerfile = services["gate"]["build"]["dockerfile"]
        .as_str()
        .expect("dockerfile");
    assert!(repo_root().join(dockerfile).is_file(), "{dockerfile}");
    assert!(repo_root().join("config/ldap/example.ldif").is_file());
}

#[test]
fn kubernetes_manifest_probes_and_shares_the_key() {
    let docs = yaml_documents("docker/kubernetes.yaml");
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment", "Service", "Ingress"]);
    let deployment = &docs[1];
    assert!(deployment["spec"]["replicas"].as_u64().expect("replicas") > 1);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    // The embedded config is a valid gate config once the key file exists.
    let config = docs[0]["data"]["registry-gate.toml"]
        .as_str()
        .expect("config");
    let parsed: toml::Value = toml::from_str(config).expect("embedded config is TOML");
    assert_eq!(
        parsed["token"]["key"].as_str(),
        Some("/etc/registry-gate/key/token-key.pem")
    );
    // The replicas share one PostgreSQL store, and believe the ingress.
    let store = parsed["store"]["url"].as_str().expect("[store] url");
    assert!(store.starts_with("postgres://"), "{store}");
    let mounted = container["volumeMounts"].as_sequence().expect("mounts");
    let password = parsed["store"]["password_file"]
        .as_str()
        .expect("password_file");
    assert!(
        mounted
            .iter()
            .any(|m| password.starts_with(m["mountPath"].as_str().unwrap_or("?"))),
        "the store's password file is mounted"
    );
    assert!(
        !parsed["server"]["trusted_proxies"]
            .as_array()
            .expect("trusted_proxies")
            .is_empty()
    );
}

fn audit_events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
        .collect()
}

#[tokio::test]
async fn audit_trail_answers_who_pushed_what() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trail = dir.path().join("audit.jsonl");
    let registry = crate::harness::Registry::start().await;
    let env = [(
        "REGISTRY_GATE_AUDIT__OUTPUT",
        trail.to_str().expect("utf-8"),
    )];
    let gate = Gate::start(&registry.url(), &env).await;
    let skopeo = Skopeo::new();
    let image = OciImage::generate();
    let dest = format!("{}/team/app:1.4", gate.addr);

    let pushed = skopeo.push(&image, &dest, Some(("admin", "badmin"))).await;
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let refused = skopeo.push(&image, &dest, Some(("test", "123"))).await;
    assert!(!refused.status.success());
    let wrong = request_token(&gate, Some(("admin", "nope")), SERVICE, &[], &[]).await;
    assert_eq!(wrong.status(), 401);

    let events = audit_events(&trail);
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| events.iter().find(|e| pred(e)).cloned();
    let manifest = find(&|e| e["event"] == "upstream_write" && e["action"] == "push_manifest")
        .unwrap_or_else(|| panic!("no manifest push in {events:#?}"));
    assert_eq!(manifest["account"], "admin");
    assert_eq!(manifest["repository"], "team/app");
    assert_eq!(manifest["reference"], "1.4");
    assert_eq!(manifest["digest"], image.manifest_digest.as_str());
    assert_eq!(manifest["outcome"], "ok");
    assert_eq!(manifest["client"], "127.0.0.1");
    assert!(find(&|e| e["event"] == "upstream_write" && e["action"] == "push_blob").is_some());
    let issued = find(&|e| e["event"] == "token_issued" && e["account"] == "admin")
        .expect("token_issued for admin");
    assert_eq!(issued["backend"], "static");
    assert!(
        issued["granted"]
            .to_string()
            .contains("repository:team/app:"),
        "{issued}"
    );
    let denied = find(&|e| e["event"] == "request_denied" && e["account"] == "test")
        .unwrap_or_else(|| panic!("no denial for test in {events:#?}"));
    assert_eq!(denied["repository"], "team/app");
    assert_eq!(denied["reason"], "insufficient_scope");
    assert!(denied["missing"].to_string().contains("push"), "{denied}");
    // The access log names the account of a refused request too.
    gate.wait_log("status=401 account=\"test\"", 1).await;
    let failed = find(&|e| e["event"] == "login_failed").expect("login_failed");
    assert_eq!(failed["account"], "admin");
    assert_eq!(failed["reason"], "bad_credentials");
    // Never a secret in the trail.
    let text = std::fs::read_to_string(&trail).expect("trail");
    for secret in ["badmin", "\"123\"", "nope", "eyJ"] {
        assert!(!text.contains(secret), "audit trail leaks {secret:?}");
    }
}

#[tokio::test]
async fn log_settings_from_the_environment_are_not_config_errors() {
    // REGISTRY_GATE_LOG is the log filter, not a config key; the [log]
    // section still takes REGISTRY_GATE_LOG__FORMAT.
    let config = crate::harness::gate::example_config_path();
    let args = ["check-config", "--config", config.to_str().expect("utf-8")];
    let env = [
        ("REGISTRY_GATE_LOG", "debug"),
        ("REGISTRY_GATE_LOG__FORMAT", "json"),
    ];
    let out = crate::harness::gate::cli(&args, &env, "", &repo_root()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("format = \"json\""), "{stdout}");
    let bad = [("REGISTRY_GATE_LOG__FORMAT", "xml")];
    let out = crate::harness::gate::cli(&args, &bad, "", &repo_root()).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("log.format"));
}

/// The value of the first exposition line that starts with `prefix`.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(gate: &Gate) -> String {
    let resp = client()
        .get(format!("{}/metrics", gate.url()))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("metrics text")
}

#[tokio::test]
async fn metrics_move_with_requests() {
    let stack = Stack::start().await;
    stack.registry.seed("team/app", "1.0").await;
    let before = scrape(&stack.gate).await;
    let t = crate::harness::http::token(
        &stack.gate,
        Some(("admin", "badmin")),
        &["repository:team/app:pull"],
    )
    .await;
    for _ in 0..3 {
        let resp = client()
            .get(format!("{}/v2/team/app/manifests/1.0", stack.gate.url()))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .bearer_auth(&t)
            .send()
            .await
            .expect("GET manifest");
        assert_eq!(resp.status(), 200);
    }
    let wrong = request_token(&stack.gate, Some(("admin", "nope")), SERVICE, &[], &[]).await;
    assert_eq!(wrong.status(), 401);
    let after = scrape(&stack.gate).await;
    let delta = |prefix: &str| metric(&after, prefix) - metric(&before, prefix);
    assert_eq!(
        delta(r#"registry_gate_http_requests_total{kind="manifest",method="GET",status="200"}"#),
        3.0,
        "{after}"
    );
    assert_eq!(
        delta(r#"registry_gate_token_requests_total{outcome="issued",backend="static"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"registry_gate_token_requests_total{outcome="bad_credentials",backend="none"}"#),
        1.0
    );
    // One signature check, then two cache hits.
    assert_eq!(delta("registry_gate_token_cache_misses_total"), 1.0);
    assert_eq!(delta("registry_gate_token_cache_hits_total"), 2.0);
    assert_eq!(delta("registry_gate_upstream_response_seconds_count"), 3.0);
    assert!(delta(r#"registry_gate_authentication_seconds_count{backend="static"}"#) >= 2.0);
    assert!(delta(r#"registry_gate_client_bytes_total{direction="out"}"#) > 1000.0);
    assert!(metric(&after, "registry_gate_open_connections") >= 1.0);
    assert!(after.contains(r#"registry_gate_login_cache_misses_total{backend="ldap"}"#));
}

#[tokio::test]
async fn metrics_can_live_on_their_own_listener() {
    let registry = crate::harness::Registry::start().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let env = [("REGISTRY_GATE_METRICS__LISTEN", addr.as_str())];
    let gate = Gate::start(&registry.url(), &env).await;
    let main = client()
        .get(format!("{}/metrics", gate.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(main.status(), 404, "not on the main listener");
    let own = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("GET");
    assert_eq!(own.status(), 200);
    assert!(
        own.text()
            .await
            .expect("text")
            .contains("registry_gate_http_requests_total")
    );
}

#[tokio::test]
async fn readyz_follows_the_upstream_down_and_back() {
    let mut stack = Stack::start().await;
    assert_eq!(readyz(&stack.gate).await.0, 200);
    stack.registry.kill();
    // Answers are cached for 2 s.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = readyz(&stack.gate).await;
    assert_eq!(status, 503, "{body}");
    assert_ne!(body["upstream"], "ok");
    stack.registry.restart().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(readyz(&stack.gate).await.0, 200);
}

/// The `test` account's rule in the example config, granting `actions`.
fn with_test_actions(actions: &str) -> String {
    example_config().replace(
        "match = { account = \"test\" }\nactions = [\"pull\"]",
        &format!("match = {{ account = \"test\" }}\nactions = {actions}"),
    )
}

async fn granted(gate: &Gate, scope: &str) -> Vec<String> {
    let body = crate::harness::http::token_response(gate, Some(("test", "123")), &[scope]).await;
    let token = body["token"].as_str().expect("token");
    let claims = crate::harness::http::jwt_parts(token).1;
    claims["access"]
        .as_array()
        .expect("access")
        .iter()
        .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn sighup_applies_a_new_acl_without_breaking_a_running_pull() {
    let registry = crate::harness::Registry::start().await;
    let image = registry.seed_sized("team/big", "1.0", 48 << 20).await;
    let (layer_digest, layer) = image.blobs.last().expect("layer").clone();
    let mut gate =
        Gate::start_with_config(&with_test_actions(r#"["pull"]"#), &registry.url(), &[]).await;
    assert_eq!(
        granted(&gate, "repository:team/big:pull,push").await,
        ["pull"]
    );

    // A large pull starts, reads a little, and stalls while we reload.
    let t =
        crate::harness::http::token(&gate, Some(("test", "123")), &["repository:team/big:pull"])
            .await;
    let mut pull = client()
        .get(format!("{}/v2/team/big/blobs/{layer_digest}", gate.url()))
        .bearer_auth(&t)
        .send()
        .await
        .expect("GET blob");
    assert_eq!(pull.status(), 200);
    let mut received = pull
        .chunk()
        .await
        .expect("first chunk")
        .expect("data")
        .to_vec();

    std::fs::write(gate.config_path(), with_test_actions(r#"["pull", "push"]"#)).expect("rewrite");
    gate.sighup();
    gate.wait_log("configuration reloaded", 1).await;
    let mut actions = granted(&gate, "repository:team/big:pull,push").await;
    actions.sort();
    assert_eq!(
        actions,
        ["pull", "push"],
        "the new ACL applies to the next token"
    );

    // An invalid config is refused; the one in force stays.
    std::fs::write(gate.config_path(), "bogus_key = 1\n").expect("rewrite");
    gate.sighup();
    gate.wait_log("configuration reload refused", 1).await;
    assert_eq!(granted(&gate, "repository:team/big:push").await, ["push"]);

    while let Some(chunk) = pull.chunk().await.expect("rest of the blob") {
        received.extend_from_slice(&chunk);
    }
    assert_eq!(received.len(), layer.len());
    assert!(
        received == layer,
        "the pull started before the reload completes intact"
    );
}

/// The image builds from what the Dockerfile copies: every directory that
/// Cargo.toml's targets live in, and the compiled-in templates.
#[test]
fn dockerfile_copies_what_the_build_needs() {
    let dockerfile =
        std::fs::read_to_string(repo_root().join("docker/Dockerfile")).expect("Dockerfile");
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| l.split_whitespace().rev().skip(1))
        .collect();
    let manifest: toml::Value = toml::from_str(
        &std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("Cargo.toml"),
    )
    .expect("Cargo.toml");
    let mut needed = vec!["Cargo.toml", "Cargo.lock", "src", "templates"];
    for section in ["test", "bench", "bin"] {
        for target in manifest[section].as_array().into_iter().flatten() {
            let path = target["path"].as_str().expect("target path");
            needed.push(path.split('/').next().expect("top directory"));
        }
    }
    for dir in needed {
        assert!(
            copied.contains(&dir),
            "docker/Dockerfile does not COPY {dir}: {copied:?}"
        );
    }
}

/// A pseudo-terminal for one child: the child gets the slave side as its
/// stdin, stdout, stderr and controlling terminal (so `/dev/tty` is it);
/// the test holds the master side.
struct Pty {
    master: std::fs::File,
}

impl Pty {
    fn spawn(mut cmd: std::process::Command) -> (Self, std::process::Child) {
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two new file descriptors into the out
        // parameters; the null pointers ask for default settings.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here only.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let slave_fd = std::os::fd::AsRawFd::as_raw_fd(&slave);
        cmd.stdin(slave.try_clone().expect("dup"))
            .stdout(slave.try_clone().expect("dup"))
            .stderr(slave.try_clone().expect("dup"));
        // SAFETY: only async-signal-safe calls between fork and exec: a new
        // session, and the slave as its controlling terminal.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn on the pty");
        drop(slave);
        (
            Pty {
                master: std::fs::File::from(master),
            },
            child,
        )
    }

    /// Reads until `needle` has been seen (or the child closed the pty);
    /// everything read is appended to `seen`.
    fn read_until(&mut self, seen: &mut String, needle: &str) {
        use std::io::Read;
        let mut buf = [0u8; 512];
        while !seen.contains(needle) {
            match self.master.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    }

    /// Reads until the child has closed the pty (exited).
    fn read_to_end(&mut self, seen: &mut String) {
        use std::io::Read;
        let mut buf = [0u8; 512];
        // EIO once the last slave descriptor is closed.
        while let Ok(n @ 1..) = self.master.read(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// Whether the terminal echoes what is typed (its termios, read through
    /// the master side).
    fn echoes(&self) -> bool {
        // SAFETY: a zeroed termios is a valid out parameter for tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.master);
        // SAFETY: fd is our open master descriptor.
        assert_eq!(unsafe { libc::tcgetattr(fd, &mut t) }, 0, "tcgetattr");
        t.c_lflag & libc::ECHO != 0
    }

    /// Waits until the child has turned echo off, then types `line`.
    fn type_hidden(&mut self, line: &str) {
        use std::io::Write;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.echoes() {
            assert!(
                std::time::Instant::now() < deadline,
                "echo never turned off"
            );
            std::thread::yield_now();
        }
        self.master
            .write_all(format!("{line}\n").as_bytes())
            .expect("type");
    }
}

/// `hash-password` at a terminal: a hidden prompt, asked twice; two
/// different answers hash nothing.
#[test]
fn hash_password_at_a_terminal_asks_twice_without_echo() {
    for (again, hashed) in [("s3cret pass", true), ("s3cret typo", false)] {
        let mut cmd = std::process::Command::new(crate::harness::gate::BIN);
        cmd.arg("hash-password");
        crate::harness::scrub_env(&mut cmd);
        let (mut pty, mut child) = Pty::spawn(cmd);
        let mut seen = String::new();
        pty.read_until(&mut seen, "Password: ");
        pty.type_hidden("s3cret pass");
        pty.read_until(&mut seen, "Password again: ");
        pty.type_hidden(again);
        pty.read_to_end(&mut seen);
        let status = child.wait().expect("wait");
        assert!(!seen.contains("s3cret"), "echoed: {seen:?}");
        if hashed {
            assert!(status.success(), "{seen:?}");
            let hash = seen
                .lines()
                .map(str::trim)
                .rfind(|l| l.starts_with("$2"))
                .unwrap_or_else(|| panic!("{seen:?}"));
            assert!(bcrypt::verify("s3cret pass", hash).expect("bcrypt hash"));
        } else {
            assert_eq!(status.code(), Some(2), "{seen:?}");
            assert!(seen.contains("the passwords differ"), "{seen:?}");
            assert!(!seen.contains("$2"), "{seen:?}");
        }
    }
}

/// A newcomer's gate says once, with the fix, what is not fit for use yet:
/// an ephemeral signing key and the example configuration's passwords.
/// (Both are logged before the gate listens: once it answers, they are in.)
#[tokio::test]
async fn newcomer_warnings_are_logged_once_with_the_fix() {
    let upstream = format!("http://127.0.0.1:{}", free_port());
    let gate = Gate::start(&upstream, &[]).await;
    let log = gate.log();
    for (needle, fix) in [
        (
            "signing with an ephemeral key",
            "registry-gate gen-key --out",
        ),
        (
            "static user admin still has the example",
            "registry-gate hash-password",
        ),
        (
            "static user test still has the example",
            "registry-gate hash-password",
        ),
    ] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
        assert_eq!(lines.len(), 1, "{needle}:\n{log}");
        assert!(lines[0].contains(fix), "{}", lines[0]);
        assert!(lines[0].contains("WARN"), "{}", lines[0]);
    }
    assert!(!log.contains("badmin"), "a password in the log:\n{log}");

    // New passwords: no such warning.
    let hash = bcrypt::hash("a-new-password", 4).expect("hash");
    let config = example_config()
        .lines()
        .map(|l| match l.trim_start().starts_with("password = \"$2") {
            true => format!("password = \"{hash}\""),
            false => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let gate = Gate::start_with_config(&config, &upstream, &[]).await;
    assert!(
        !gate.log().contains("example configuration's password"),
        "{}",
        gate.log()
    );
}

/// `integration/down.sh --purge` removes what `up.sh` stored (registry
/// storage, LDAP directory, configs, logs) and nothing else; without
/// `--purge` the storage stays.
#[tokio::test]
async fn down_sh_purge_removes_the_dev_stacks_storage() {
    let down = repo_root().join("integration/down.sh");
    let run = |state: &std::path::Path, args: &[&str]| {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(&down).args(args).env("REGISTRY_GATE_STATE", state);
        crate::harness::run_tool(cmd, None, Duration::from_secs(60))
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let fill = |state: &std::path::Path| {
        let blob = state.join("storage/docker/registry/v2/blobs/sha256/ab");
        std::fs::create_dir_all(&blob).expect("mkdir");
        std::fs::write(blob.join("data"), vec![7u8; 4096]).expect("blob");
        std::fs::create_dir_all(state.join("slapd/db")).expect("mkdir");
        std::fs::write(state.join("slapd/db/data.mdb"), "x").expect("db");
        // The gate's store (up.sh points [store] url there).
        std::fs::create_dir_all(state.join("store")).expect("mkdir");
        std::fs::write(state.join("store/registry-gate.db"), "x").expect("store");
        for f in ["registry.yml", "gate.log", "slapd.log", "registry.log"] {
            std::fs::write(state.join(f), "x").expect(f);
        }
    };

    let state = dir.path().join("state");
    fill(&state);
    std::fs::write(state.join("mine.txt"), "not up.sh's").expect("write");
    let out = run(&state, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        crate::harness::output_text(&out)
    );
    assert!(
        state.join("storage/docker").is_dir(),
        "kept without --purge"
    );

    let out = run(&state, &["--purge"]).await;
    let text = crate::harness::output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("purged"), "{text}");
    for gone in [
        "storage",
        "slapd",
        "store",
        "registry.yml",
        "gate.log",
        "registry.log",
    ] {
        assert!(!state.join(gone).exists(), "{gone} left: {text}");
    }
    assert!(
        state.join("mine.txt").is_file(),
        "a file up.sh did not make"
    );

    // Only up.sh's files: the directory goes too.
    let only = dir.path().join("only");
    fill(&only);
    let out = run(&only, &["--purge"]).await;
    assert!(
        out.status.success(),
        "{}",
        crate::harness::output_text(&out)
    );
    assert!(!only.exists());

    let out = run(&only, &["--purg"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        crate::harness::output_text(&out)
    );
}

/// An image Docker Hub lists as official: `name[:tag]`, `library/name` or
/// `docker.io/library/name` (no other namespace, no other registry).
fn is_official_image(image: &str) -> bool {
    let image = image.strip_prefix("docker.io/").unwrap_or(image);
    let image = image.strip_prefix("library/").unwrap_or(image);
    let image = image.split('@').next().unwrap_or("");
    // A tag follows the last `:` after the last `/` (`host:port/x` has none).
    let name = match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    };
    !name.is_empty() && !name.contains('/')
}

#[test]
fn official_images_are_told_apart() {
    for official in [
        "registry:2",
        "debian:bookworm-slim",
        "library/debian:12",
        "docker.io/library/rust:1-bookworm",
        "postgres@sha256:0123",
    ] {
        assert!(is_official_image(official), "{official}");
    }
    for other in [
        "bitnami/openldap:2.6",
        "docker.io/bitnami/openldap",
        "ghcr.io/x/y:1",
        "quay.io/foo:1",
        "localhost:5000/x",
        "",
    ] {
        assert!(!is_official_image(other), "{other}");
    }
}

/// Every image docker/compose.yaml runs is official, or built here from a
/// Dockerfile of this repository whose base images are official (images
/// outside the official namespace have vanished before: bitnami's, 2025).
#[test]
fn compose_runs_only_official_images_or_our_own_builds() {
    let docs = yaml_documents("docker/compose.yaml");
    let services = docs[0]["services"].as_mapping().expect("services");
    for (name, service) in services {
        let name = name.as_str().expect("service name");
        if service["build"].is_mapping() {
            let context = service["build"]["context"].as_str().expect("context");
            let dockerfile = service["build"]["dockerfile"].as_str().expect("dockerfile");
            let root = repo_root().join("docker").join(context);
            assert_eq!(
                root.canonicalize().expect("context"),
                repo_root().canonicalize().expect("repo"),
                "{name}: built from this repository"
            );
            let text = std::fs::read_to_string(root.join(dockerfile))
                .unwrap_or_else(|e| panic!("{name}: {dockerfile}: {e}"));
            let mut stages = Vec::new();
            let mut bases = 0;
            for line in text.lines().filter_map(|l| l.strip_prefix("FROM ")) {
                bases += 1;
                let words: Vec<&str> = line.split_whitespace().collect();
                let base = words[0];
                assert!(
                    stages.contains(&base) || is_official_image(base),
                    "{name}: {dockerfile} builds FROM {base}"
                );
                if let [_, as_, stage] = words[..]
                    && as_.eq_ignore_ascii_case("as")
                {
                    stages.push(stage);
                }
            }
            assert!(bases > 0, "{name}: no FROM in {dockerfile}");
        } else {
            let image = service["image"].as_str().expect("image or build");
            assert!(is_official_image(image), "{name}: {image} is not official");
        }
    }
}

/// docker/openldap/Dockerfile's steps, run here as the image runs them:
/// docker/openldap/setup.sh with the Dockerfile's arguments, then slapd as
/// the openldap user with the Dockerfile's command (on a loopback port);
/// the example configuration's service account and a musician with his
/// group work against it.
#[tokio::test]
async fn openldap_image_steps_serve_the_example_directory() {
    let dockerfile = std::fs::read_to_string(repo_root().join("docker/openldap/Dockerfile"))
        .expect("docker/openldap/Dockerfile");
    assert!(
        dockerfile.contains("FROM debian:bookworm-slim"),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains("apt-get install -y --no-install-recommends slapd ldap-utils"),
        "{dockerfile}"
    );
    // The setup step: COPY targets and RUN arguments, as written there.
    let share = "/usr/local/share/registry-gate-ldap";
    let var = "/var/lib/registry-gate-ldap";
    assert!(
        dockerfile.contains(&format!(
            "COPY config/ldap/slapd.conf.template config/ldap/example.ldif {share}/"
        )),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains(&format!(
            "RUN registry-gate-ldap-setup {share} {var} \\\n        openldap \"$LDAP_ROOT_PASSWORD\""
        )),
        "{dockerfile}"
    );
    let cmd_line = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd_line).expect("CMD is a JSON array");
    assert!(dockerfile.contains("USER openldap"), "{dockerfile}");

    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("share");
    let target = dir.path().join("var");
    std::fs::create_dir(&src).expect("mkdir");
    for f in ["slapd.conf.template", "example.ldif"] {
        std::fs::copy(repo_root().join("config/ldap").join(f), src.join(f)).expect("copy");
    }
    // The temp dir must be reachable by the openldap user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut setup = std::process::Command::new("sh");
    setup
        .arg(repo_root().join("docker/openldap/setup.sh"))
        .arg(&src)
        .arg(&target)
        .args(["openldap", "change-me-admin"]);
    let out = crate::harness::run_tool(setup, None, Duration::from_secs(60)).await;
    assert!(
        out.status.success(),
        "{}",
        crate::harness::output_text(&out)
    );

    let port = free_port();
    let url = format!("ldap://127.0.0.1:{port}/");
    let args: Vec<String> = cmd
        .iter()
        .map(|a| {
            if a.starts_with("ldap://") {
                url.clone()
            } else {
                a.replace(var, &target.display().to_string())
            }
        })
        .collect();
    assert_eq!(args[0], "slapd");
    let mut slapd = std::process::Command::new("setpriv");
    slapd
        .args(["--reuid=openldap", "--regid=openldap", "--init-groups"])
        .args(&args);
    let mut daemon = crate::harness::Daemon::spawn("slapd", slapd, &dir.path().join("slapd.log"));
    // Ready once it accepts connections.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(daemon.exited().is_none(), "slapd exited: {}", daemon.log());
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let env = [("REGISTRY_GATE_LDAP__URL", url.as_str())];
    let args = [
        "ldap-check",
        "--config",
        "config/registry-gate.toml",
        "mozart",
        "--password-stdin",
    ];
    let out = crate::harness::gate::cli(&args, &env, "password\n", &repo_root()).await;
    let text = crate::harness::output_text(&out);
    assert!(out.status.success(), "{text}\n{}", daemon.log());
    assert!(text.contains(r#"groups = ["pushers"]"#), "{text}");
    assert!(text.contains("would log in as mozart"), "{text}");
}
