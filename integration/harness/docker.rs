//! A private Docker engine (Debian's `docker.io`) and its CLI.
//!
//! dockerd runs without any system service, exactly as the clients issue
//! says: vfs storage, all five network flags off (without them dockerd
//! rewrites the machine's firewall and bridges), data and exec roots, PID
//! file, socket and daemon.json in a temp dir. The CLI talks to it through
//! `DOCKER_HOST` and keeps its credentials in a private `DOCKER_CONFIG`.
//! 127.0.0.0/8 is an insecure registry by default, so the gate's plain-HTTP
//! loopback address needs no flag. Stopped by its PID (SIGTERM first, so it
//! unmounts its data root and stops the containerd it started).

use super::{Daemon, run_tool, scrub_env, unmount_under};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const DAEMON: &str = "dockerd";

/// The CLI of the `docker.io` package (it matches the engine), else the
/// first `docker` on PATH.
pub fn cli() -> PathBuf {
    let debian = Path::new("/usr/bin/docker");
    if debian.exists() {
        debian.to_path_buf()
    } else {
        PathBuf::from("docker")
    }
}

pub struct Docker {
    daemon: Daemon,
    dir: TempDir,
}

impl Docker {
    /// Starts dockerd and waits until its API answers `/_ping`.
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("it-docker-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        std::fs::write(d.join("daemon.json"), "{}\n").expect("write daemon.json");
        std::fs::create_dir_all(d.join("config")).expect("mkdir DOCKER_CONFIG");
        let mut cmd = Command::new(DAEMON);
        cmd.arg("--storage-driver=vfs")
            .arg("--iptables=false")
            .arg("--ip6tables=false")
            .arg("--ip-forward=false")
            .arg("--ip-masq=false")
            .arg("--bridge=none")
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .current_dir(d);
        scrub_env(&mut cmd);
        let daemon = Daemon::spawn(DAEMON, cmd, &d.join("dockerd.log"));
        let mut docker = Docker { daemon, dir };
        docker.wait_ready(Duration::from_secs(60)).await;
        docker
    }

    async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let socket = self.socket();
        loop {
            if let Some(status) = self.daemon.exited() {
                panic!(
                    "dockerd exited ({status}) before answering:\n{}",
                    self.daemon.log()
                );
            }
            if ping(&socket).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer /_ping within {timeout:?}:\n{}",
                self.daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir().join("docker.sock")
    }

    /// `unix://D/docker.sock`, the `DOCKER_HOST` of the CLI.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The private `DOCKER_CONFIG` directory.
    pub fn config_dir(&self) -> PathBuf {
        self.dir().join("config")
    }

    /// `$DOCKER_CONFIG/config.json` as JSON (`{}` if docker wrote none yet).
    pub fn config_json(&self) -> Value {
        match std::fs::read(self.config_dir().join("config.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).expect("config.json is JSON"),
            Err(_) => Value::Object(Default::default()),
        }
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Runs the docker CLI against this engine, `stdin` fed to it.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(cli());
        scrub_env(&mut cmd);
        cmd.env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.config_dir())
            .env("HOME", self.dir())
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .args(args);
        run_tool(cmd, stdin, Duration::from_secs(120)).await
    }

    /// `docker import` of a one-file tarball of random bytes as `reference`
    /// (a fresh image each call); the image ID docker prints.
    pub async fn import_random(&self, reference: &str) -> String {
        let mut content = vec![0u8; 4096];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut content);
        let tar = super::image::tar_one_file("random.bin", &content);
        let path = self
            .dir()
            .join(format!("rootfs-{}.tar", rand::random::<u32>()));
        std::fs::write(&path, tar).expect("write rootfs tar");
        let path_str = path.to_string_lossy().into_owned();
        let out = self.run(&["import", &path_str, reference], None).await;
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "docker import: {}",
            super::output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The `REPO@sha256:...` digests the engine knows for a local image.
    pub async fn repo_digests(&self, reference: &str) -> Vec<String> {
        let out = self
            .run(
                &[
                    "image",
                    "inspect",
                    "--format",
                    "{{json .RepoDigests}}",
                    reference,
                ],
                None,
            )
            .await;
        assert!(
            out.status.success(),
            "docker image inspect {reference}: {}",
            super::output_text(&out)
        );
        serde_json::from_slice(&out.stdout).expect("RepoDigests JSON")
    }

    /// Whether the engine has a local image by that reference.
    pub async fn has_image(&self, reference: &str) -> bool {
        self.run(&["image", "inspect", reference], None)
            .await
            .status
            .success()
    }
}

/// `GET /_ping` on the engine's socket answers 200.
async fn ping(socket: &Path) -> bool {
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(socket).await?;
        stream
            .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(Duration::from_secs(2), exchange).await {
        Ok(Ok(buf)) => buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200"),
        _ => false,
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        // dockerd stops the containerd it started; if it had to be killed,
        // that containerd is stopped here, by the PID dockerd recorded.
        let containerd_pid =
            std::fs::read_to_string(self.dir().join("exec/containerd/containerd.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
        self.daemon.terminate(Duration::from_secs(20));
        if let Some(pid) = containerd_pid {
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&*self.dir().to_string_lossy()))
                .unwrap_or(false);
            if ours {
                // SAFETY: kill(2) on a PID whose command line names our temp
                // dir: the containerd this dockerd started, nothing else.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        unmount_under(self.dir());
    }
}
