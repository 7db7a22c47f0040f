//! podman (Debian's `podman`), daemonless, with everything private: vfs
//! storage under a temp dir (graph root, run root), its own
//! registries.conf (a plain-HTTP gate's address marked insecure, as a user
//! would), containers.conf, trust policy and auth file, and an empty
//! `DOCKER_CONFIG` (podman also reads `$DOCKER_CONFIG/config.json`).

use super::{output_text, run_tool, scrub_env, unmount_under};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use tempfile::TempDir;

pub const BIN: &str = "podman";

pub struct Podman {
    dir: TempDir,
}

impl Podman {
    /// A podman whose registries.conf marks `insecure_registry` (host:port)
    /// `insecure` (plain HTTP allowed, certificates not checked); with None,
    /// every registry must present a certificate podman trusts
    /// (`--cert-dir`).
    pub fn new(insecure_registry: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("it-podman-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for sub in ["root", "runroot", "home", "tmp", "docker-config", "config"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let write = |name: &str, text: String| std::fs::write(d.join(name), text).expect("write");
        write(
            "storage.conf",
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                d.join("root").display(),
                d.join("runroot").display()
            ),
        );
        let insecure = insecure_registry
            .map(|r| format!("\n[[registry]]\nlocation = \"{r}\"\ninsecure = true\n"))
            .unwrap_or_default();
        write(
            "registries.conf",
            format!("unqualified-search-registries = []\n{insecure}"),
        );
        write(
            "containers.conf",
            format!(
                "[engine]\nevents_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\nimage_copy_tmp_dir = \"{}\"\n",
                d.join("tmp").display()
            ),
        );
        write(
            "policy.json",
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#.to_string(),
        );
        Podman { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where `podman login` keeps credentials (`REGISTRY_AUTH_FILE`).
    pub fn auth_file(&self) -> PathBuf {
        self.dir().join("auth.json")
    }

    /// The auth file as JSON (`{}` if podman wrote none yet).
    pub fn auth_json(&self) -> Value {
        match std::fs::read(self.auth_file()) {
            Ok(bytes) => serde_json::from_slice(&bytes).expect("auth.json is JSON"),
            Err(_) => Value::Object(Default::default()),
        }
    }

    /// Runs `podman --root R --runroot RR --storage-driver vfs <args>`.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let d = self.dir();
        let mut cmd = Command::new(BIN);
        scrub_env(&mut cmd);
        cmd.env("HOME", d.join("home"))
            .env("XDG_RUNTIME_DIR", d.join("runroot"))
            .env("XDG_CONFIG_HOME", d.join("config"))
            .env("TMPDIR", d.join("tmp"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("REGISTRY_AUTH_FILE", self.auth_file())
            .env("DOCKER_CONFIG", d.join("docker-config"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--storage-driver")
            .arg("vfs")
            .args(args);
        run_tool(cmd, stdin, Duration::from_secs(120)).await
    }

    /// `--signature-policy P`: the private trust policy, for pull and push.
    pub fn policy_args(&self) -> [String; 2] {
        [
            "--signature-policy".to_string(),
            self.dir().join("policy.json").display().to_string(),
        ]
    }

    /// `podman import` of a one-file tarball of random bytes as `reference`.
    pub async fn import_random(&self, reference: &str) {
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
        assert!(out.status.success(), "podman import: {}", output_text(&out));
    }

    /// The manifest digest podman recorded for a local image.
    pub async fn image_digest(&self, reference: &str) -> String {
        let out = self
            .run(
                &["image", "inspect", "--format", "{{.Digest}}", reference],
                None,
            )
            .await;
        assert!(
            out.status.success(),
            "podman image inspect {reference}: {}",
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub async fn has_image(&self, reference: &str) -> bool {
        self.run(&["image", "exists", reference], None)
            .await
            .status
            .success()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // vfs mounts nothing, but a podman killed mid-way must not leave a
        // temp dir that cannot be removed.
        unmount_under(self.dir());
    }
}
