//! Debian's `docker-registry` (distribution 2.8): an open upstream on a
//! loopback port, filesystem storage in a temp dir, deletes enabled.

use super::image::{OciImage, push_http};
use super::{Daemon, free_port, http, loopback, scrub_env};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const BIN: &str = "docker-registry";

pub struct Registry {
    daemon: Daemon,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Registry {
    /// Starts a registry and waits until `GET /v2/` answers 200. Retries on
    /// another port if the chosen one was taken meanwhile.
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("it-registry-")
            .tempdir()
            .expect("temp dir");
        let mut last_error = String::new();
        for _ in 0..5 {
            let addr = loopback(free_port());
            let config = dir.path().join("config.yml");
            std::fs::write(&config, config_yaml(&dir.path().join("storage"), addr))
                .expect("write registry config");
            let mut cmd = Command::new(BIN);
            cmd.arg("serve").arg(&config).current_dir(dir.path());
            scrub_env(&mut cmd);
            let mut daemon =
                Daemon::spawn("docker-registry", cmd, &dir.path().join("registry.log"));
            match daemon
                .wait_ready(&format!("http://{addr}/v2/"), Duration::from_secs(15))
                .await
            {
                Ok(()) => return Registry { daemon, addr, dir },
                Err(e) => last_error = format!("{e}\n{}", daemon.log()),
            }
        }
        panic!("docker-registry did not start: {last_error}");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the registry (SIGKILL, by PID), as a crash would.
    pub fn kill(&mut self) {
        self.daemon.kill();
    }

    /// Starts the registry again on the same address and storage, after
    /// [`Self::kill`]; its log goes on in the same file.
    pub async fn restart(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .current_dir(self.dir.path());
        scrub_env(&mut cmd);
        self.daemon = Daemon::spawn_appending(
            "docker-registry",
            cmd,
            &self.dir.path().join("registry.log"),
        );
        let url = format!("http://{}/v2/", self.addr);
        if let Err(e) = self.daemon.wait_ready(&url, Duration::from_secs(15)).await {
            panic!("docker-registry did not restart: {e}\n{}", self.log());
        }
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The storage root (distribution's `rootdirectory`).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Whether the repository exists in storage (something was pushed to it).
    pub fn has_repository(&self, name: &str) -> bool {
        self.storage()
            .join("docker/registry/v2/repositories")
            .join(name)
            .is_dir()
    }

    /// Pushes a fresh generated image straight to this registry (no gate).
    pub async fn seed(&self, repo: &str, tag: &str) -> OciImage {
        let image = OciImage::generate();
        push_http(&http::client(), &self.url(), repo, tag, None, &image).await;
        image
    }

    /// Like [`Self::seed`], with a layer of `size` random bytes.
    pub async fn seed_sized(&self, repo: &str, tag: &str, size: usize) -> OciImage {
        let image = OciImage::generate_sized(size);
        push_http(&http::client(), &self.url(), repo, tag, None, &image).await;
        image
    }

    /// Every request the upstream has logged so far, as "METHOD URI" with the
    /// URI exactly as received (from the access log lines).
    pub fn requests_seen(&self) -> Vec<String> {
        parse_access_log(&self.log())
    }

    /// Like [`Self::requests_seen`], but first makes sure every request the
    /// upstream answered before now is in the log: sends a marker request
    /// directly and waits until it is logged. Marker lines are left out.
    pub async fn requests_settled(&self) -> Vec<String> {
        let marker = format!(
            "/v2/harness-marker-{:016x}/tags/list",
            rand::random::<u64>()
        );
        let resp = http::client()
            .get(format!("{}{marker}", self.url()))
            .send()
            .await
            .expect("marker request to the registry");
        assert_eq!(resp.status(), 404, "marker request");
        let deadline = Instant::now() + Duration::from_secs(10);
        let wanted = format!("GET {marker}");
        loop {
            let seen = self.requests_seen();
            if seen.contains(&wanted) {
                return seen
                    .into_iter()
                    .filter(|r| !r.contains("/v2/harness-marker-"))
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "marker never logged:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn config_yaml(storage: &std::path::Path, addr: SocketAddr) -> String {
    format!(
        "version: 0.1
log:
  level: info
  accesslog:
    disabled: false
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: integration-test-secret
",
        storage = storage.display()
    )
}

/// Access log lines look like
/// `127.0.0.1 - - [30/Nov/2026:18:09:13 +0000] "GET /v2/b/manifests/latest HTTP/1.1" 404 96 "" "curl/7.88.1"`.
fn parse_access_log(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| !line.starts_with("time="))
        .filter_map(|line| {
            let start = line.find("] \"")? + 3;
            let rest = &line[start..];
            let request = &rest[..rest.find('"')?];
            let mut parts = request.split(' ');
            let method = parts.next()?;
            let uri = parts.next()?;
            parts
                .next()?
                .starts_with("HTTP/")
                .then(|| format!("{method} {uri}"))
        })
        .collect()
}

#[test]
fn access_log_lines_parse() {
    let log = r#"time="2026-11-30T18:09:13Z" level=info msg="response completed" http.request.uri=/v2/
127.0.0.1 - - [30/Nov/2026:18:09:12 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
127.0.0.1 - - [30/Nov/2026:18:09:13 +0000] "GET /v2/a%2Fb/manifests/x?y=1 HTTP/1.1" 404 91 "" "curl/7.88.1"
"#;
    assert_eq!(
        parse_access_log(log),
        ["GET /v2/", "GET /v2/a%2Fb/manifests/x?y=1"]
    );
}
