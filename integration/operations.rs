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
    assert_eq!(kinds, ["ConfigMap", "Deployment", "Service"]);
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
