//! containerd (Debian's `containerd`) with its own root and state dirs,
//! socket and config in a temp dir, and `ctr --address` talking to it.
//! containerd's resolver is what every Kubernetes node pulls with (kubelet
//! -> CRI -> this resolver); `ctr` uses the same code with credentials given
//! per command (`--user`). The CRI plugin is disabled (no Kubernetes here),
//! and `ctr` uses the `native` snapshotter (plain directories, no mounts).

use super::{Daemon, output_text, run_tool, scrub_env, unmount_under};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const DAEMON: &str = "containerd";
pub const CTR: &str = "ctr";

pub struct Containerd {
    daemon: Daemon,
    dir: TempDir,
}

impl Containerd {
    /// Starts containerd and waits until `ctr version` reaches it.
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("it-containerd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("containerd.sock").display(),
            opt = d.join("opt").display(),
        );
        std::fs::write(d.join("config.toml"), config).expect("write containerd config");
        let mut cmd = Command::new(DAEMON);
        cmd.arg("--config")
            .arg(d.join("config.toml"))
            .current_dir(d);
        scrub_env(&mut cmd);
        let daemon = Daemon::spawn(DAEMON, cmd, &d.join("containerd.log"));
        let mut containerd = Containerd { daemon, dir };
        containerd.wait_ready(Duration::from_secs(30)).await;
        containerd
    }

    async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.daemon.exited() {
                panic!(
                    "containerd exited ({status}) before answering:\n{}",
                    self.daemon.log()
                );
            }
            if self.socket().exists() && self.ctr(&["version"]).await.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within {timeout:?}:\n{}",
                self.daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir().join("containerd.sock")
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Runs `ctr --address SOCK <args>`.
    pub async fn ctr(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(CTR);
        scrub_env(&mut cmd);
        cmd.env("HOME", self.dir())
            .env("CONTAINERD_SNAPSHOTTER", "native")
            .env_remove("CONTAINERD_NAMESPACE")
            .arg("--address")
            .arg(self.socket())
            .args(args);
        run_tool(cmd, None, Duration::from_secs(120)).await
    }

    /// `ctr images import` of an OCI image tar, naming its images
    /// `base:TAG` (the layout's ref name is the tag).
    pub async fn import(&self, archive: &Path, base: &str) {
        let archive = archive.to_string_lossy().into_owned();
        let out = self
            .ctr(&["images", "import", "--base-name", base, &archive])
            .await;
        assert!(
            out.status.success(),
            "ctr images import: {}",
            output_text(&out)
        );
    }

    /// The manifest digest of a local image, None if there is none.
    pub async fn image_digest(&self, reference: &str) -> Option<String> {
        let out = self.ctr(&["images", "ls"]).await;
        assert!(out.status.success(), "ctr images ls: {}", output_text(&out));
        // REF TYPE DIGEST SIZE PLATFORMS LABELS
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&reference))
            .and_then(|cols| cols.get(2).map(|d| d.to_string()))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.daemon.terminate(Duration::from_secs(10));
        unmount_under(self.dir());
    }
}
