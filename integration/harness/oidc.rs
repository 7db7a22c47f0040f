//! A real OpenID provider: node's `oidc-provider` (integration/oidc/), run
//! on a loopback port chosen at start, with its own signing keys in a temp
//! dir. Its client-credentials grant hands workload clients JWT access
//! tokens with CI-like claims (integration/oidc/config.json); its login form
//! (any password) logs people in for the UI's code flow.

use super::{Daemon, repo_root, scrub_env};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The audience workload tokens are asked for (the registry's).
pub const AUDIENCE: &str = "https://registry.test";

fn provider_dir() -> PathBuf {
    repo_root().join("integration/oidc")
}

/// Installs oidc-provider from the lock file when missing (test.sh does
/// too); panics with npm's output when that fails.
fn ensure_installed() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dir = provider_dir();
        if dir
            .join("node_modules/oidc-provider/package.json")
            .is_file()
        {
            return;
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("run npm ci (install nodejs and npm)");
        assert!(
            out.status.success(),
            "npm ci in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

pub struct OidcProvider {
    daemon: Option<Daemon>,
    pub port: u16,
    dir: TempDir,
}

impl OidcProvider {
    pub async fn start() -> Self {
        ensure_installed();
        let dir = tempfile::Builder::new()
            .prefix("it-oidc-")
            .tempdir()
            .expect("temp dir");
        let (daemon, port) = spawn(dir.path(), 0).await;
        OidcProvider {
            daemon: Some(daemon),
            port,
            dir,
        }
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn keys_file(&self) -> PathBuf {
        self.dir.path().join("keys.json")
    }

    /// The kid the provider signs with now.
    pub fn kid(&self) -> String {
        let keys: Value =
            serde_json::from_str(&std::fs::read_to_string(self.keys_file()).expect("keys"))
                .expect("keys json");
        keys["keys"][0]["kid"].as_str().expect("kid").to_owned()
    }

    /// Stops the provider (by PID).
    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
    }

    /// Key rotation: the provider comes back on the same port with a new
    /// signing key (and only that one in its JWKS).
    pub async fn restart_with_new_key(&mut self) {
        self.stop();
        std::fs::remove_file(self.keys_file()).expect("remove old keys");
        let (daemon, port) = spawn(self.dir.path(), self.port).await;
        assert_eq!(port, self.port);
        self.daemon = Some(daemon);
    }

    /// A workload's JWT: the client-credentials grant of `client`
    /// (ci-acme, ci-other) for `resource` (the audience).
    pub async fn workload_token(&self, client: &str, resource: &str) -> String {
        let resp = reqwest::Client::new()
            .post(format!("{}/token", self.issuer()))
            .basic_auth(client, Some(format!("{client}-secret")))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", resource),
                ("scope", "push"),
            ])
            .send()
            .await
            .expect("token request");
        let status = resp.status();
        let body: Value = resp.json().await.expect("token json");
        assert_eq!(status, 200, "client credentials for {client}: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// A JWT with `claims` (and extra `header` fields) signed with the
    /// provider's current key, for tokens its grants would not make
    /// (expired ones).
    pub async fn sign(&self, header: Value, claims: Value) -> String {
        let input = serde_json::json!({ "header": header, "claims": claims }).to_string();
        let mut cmd = Command::new("node");
        cmd.arg(provider_dir().join("provider.mjs"))
            .arg("sign")
            .arg(self.keys_file());
        let out = super::run_tool(cmd, Some(&input), Duration::from_secs(30)).await;
        assert!(
            out.status.success(),
            "sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 token")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("provider.log")).unwrap_or_default()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the provider on `port` (0: any) and waits for it to serve its
/// discovery document.
async fn spawn(dir: &Path, port: u16) -> (Daemon, u16) {
    let port_file = dir.join("port");
    let _ = std::fs::remove_file(&port_file);
    let mut cmd = Command::new("node");
    scrub_env(&mut cmd);
    cmd.arg(provider_dir().join("provider.mjs"))
        .arg("serve")
        .arg(dir.join("keys.json"))
        .arg(&port_file)
        .env("PORT", port.to_string())
        .current_dir(provider_dir());
    let mut daemon = Daemon::spawn_appending("oidc-provider", cmd, &dir.join("provider.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        if let Some(p) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
        {
            break p;
        }
        assert!(
            daemon.exited().is_none() && Instant::now() < deadline,
            "oidc-provider did not start:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let url = format!("http://127.0.0.1:{port}/.well-known/openid-configuration");
    daemon
        .wait_ready(&url, Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    (daemon, port)
}
