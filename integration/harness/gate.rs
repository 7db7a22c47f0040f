//! The gate binary, run as a process: `registry-gate serve --config FILE`,
//! listen address and upstream set by the `REGISTRY_GATE_*` overrides.

use super::{Daemon, free_port, loopback, repo_root, scrub_env};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

pub const BIN: &str = env!("CARGO_BIN_EXE_registry-gate");

/// config/registry-gate.toml, the example configuration.
pub fn example_config_path() -> PathBuf {
    repo_root().join("config/registry-gate.toml")
}

pub fn example_config() -> String {
    std::fs::read_to_string(example_config_path()).expect("read config/registry-gate.toml")
}

pub struct Gate {
    daemon: Daemon,
    pub addr: SocketAddr,
    dir: TempDir,
    /// "https" when started with `REGISTRY_GATE_SERVER__TLS__*`, else "http".
    scheme: &'static str,
    /// The `REGISTRY_GATE_STORE__*` overrides the test gave, for [`Gate::cli`].
    store_env: Vec<(String, String)>,
}

/// `registry-gate serve` with `config` on `addr` in front of `upstream`.
fn serve_command(
    config: &Path,
    addr: SocketAddr,
    upstream: &str,
    dir: &Path,
    extra_env: &[(&str, &str)],
) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").arg("--config").arg(config);
    // Relative paths in the config (config/ldap_password.txt...) resolve
    // against the working directory: the repository root, as for a user.
    cmd.current_dir(repo_root());
    scrub_env(&mut cmd);
    // Each gate its own SQLite store in its temp dir, unless the test
    // names one (a shared PostgreSQL, a file of its own).
    cmd.env("REGISTRY_GATE_SERVER__LISTEN", addr.to_string())
        .env("REGISTRY_GATE_UPSTREAM__URL", upstream)
        .env("REGISTRY_GATE_STORE__URL", default_store(dir))
        .envs(extra_env.iter().copied());
    cmd
}

/// The `REGISTRY_GATE_STORE__*` overrides a test gave, for [`Gate::cli`].
fn store_env(extra_env: &[(&str, &str)]) -> Vec<(String, String)> {
    extra_env
        .iter()
        .filter(|(k, _)| k.starts_with("REGISTRY_GATE_STORE__"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The store of a gate whose test names none: SQLite in its temp dir.
fn default_store(dir: &Path) -> String {
    format!("sqlite://{}/store.db", dir.display())
}

impl Gate {
    /// The gate with the example configuration in front of `upstream_url`.
    pub async fn start(upstream_url: &str, extra_env: &[(&str, &str)]) -> Self {
        Self::start_with_config(&example_config(), upstream_url, extra_env).await
    }

    /// The gate with `config` (TOML text, written to a temp dir, so no site
    /// override file `*.local.toml` is picked up), run from the repository root.
    /// Waits until `GET /healthz` answers 200; panics with the log otherwise.
    pub async fn start_with_config(
        config: &str,
        upstream_url: &str,
        extra_env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("it-gate-")
            .tempdir()
            .expect("temp dir");
        let config_path = dir.path().join("registry-gate.toml");
        std::fs::write(&config_path, config).expect("write gate config");
        let scheme = if extra_env
            .iter()
            .any(|(k, _)| k.starts_with("REGISTRY_GATE_SERVER__TLS"))
        {
            "https"
        } else {
            "http"
        };
        let mut last_error = String::new();
        for _ in 0..3 {
            let addr = loopback(free_port());
            let cmd = serve_command(&config_path, addr, upstream_url, dir.path(), extra_env);
            let mut daemon = Daemon::spawn("registry-gate", cmd, &dir.path().join("gate.log"));
            match daemon
                .wait_ready(
                    &format!("{scheme}://{addr}/healthz"),
                    Duration::from_secs(15),
                )
                .await
            {
                Ok(()) => {
                    return Gate {
                        daemon,
                        addr,
                        dir,
                        scheme,
                        store_env: store_env(extra_env),
                    };
                }
                // An exit may be a lost race for the port: try another one.
                Err(e) if daemon.exited().is_some() => {
                    last_error = format!("{e}\n----- gate log -----\n{}", daemon.log())
                }
                Err(e) => panic!("{e}\n----- gate log -----\n{}", daemon.log()),
            }
        }
        panic!("the gate did not start: {last_error}");
    }

    /// Like [`Gate::start_with_config`] for a gate that cannot be asked
    /// `/healthz` directly (`proxy_protocol = true` wants a PROXY header
    /// first): ready once its log says it listens.
    pub async fn start_with_config_no_wait(
        config: &str,
        upstream_url: &str,
        extra_env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("it-gate-")
            .tempdir()
            .expect("temp dir");
        let config_path = dir.path().join("registry-gate.toml");
        std::fs::write(&config_path, config).expect("write gate config");
        let addr = loopback(free_port());
        let cmd = serve_command(&config_path, addr, upstream_url, dir.path(), extra_env);
        let daemon = Daemon::spawn("registry-gate", cmd, &dir.path().join("gate.log"));
        let gate = Gate {
            daemon,
            addr,
            dir,
            scheme: "http",
            store_env: store_env(extra_env),
        };
        gate.wait_log("registry-gate listening", 1).await;
        gate
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Sends SIGTERM to the gate (by PID) and returns at once.
    pub fn sigterm(&mut self) {
        self.daemon.sigterm();
    }

    /// Sends SIGHUP (reload the configuration) to the gate, by PID.
    pub fn sighup(&mut self) {
        self.daemon.signal(libc::SIGHUP);
    }

    /// Waits until the gate's log has `n` lines containing `needle`.
    pub async fn wait_log(&self, needle: &str, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.log().matches(needle).count() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} (x{n}) in the gate log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits up to `timeout` for the gate to exit; its status if it did.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.daemon.wait_exit(timeout).await
    }

    /// The gate's own temp dir (config, log; tests may put files there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("registry-gate.toml")
    }

    /// Runs the CLI (`token create ...`) against this gate's config and
    /// store, from the repository root as the gate runs.
    pub async fn cli(&self, args: &[&str]) -> Output {
        let config = self.config_path();
        let mut full = vec!["--config", config.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        let default = default_store(self.dir());
        let mut env: Vec<(&str, &str)> = vec![("REGISTRY_GATE_STORE__URL", &default)];
        env.extend(self.store_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cli(&full, &env, "", &repo_root()).await
    }

    /// `token create ARGS...`: the new secret (the last line of stdout).
    pub async fn create_token(&self, args: &[&str]) -> String {
        let mut full = vec!["token", "create"];
        full.extend_from_slice(args);
        let out = self.cli(&full).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "token create {args:?}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let secret = stdout.lines().last().unwrap_or_default().to_owned();
        assert!(secret.starts_with("rgt_"), "not a secret: {stdout:?}");
        secret
    }
}

/// Runs the gate's CLI once (`check-config`, `hash-password`, `gen-key`...)
/// with `stdin` as input, in `cwd`; kills it after 30 s.
pub async fn cli(args: &[&str], env: &[(&str, &str)], stdin: &str, cwd: &Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd);
    scrub_env(&mut cmd);
    cmd.envs(env.iter().copied());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn registry-gate");
    let mut input = child.stdin.take().expect("stdin");
    // A command that does not read its input may close it first: not an error.
    let _ = input.write_all(stdin.as_bytes()).await;
    drop(input);
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("registry-gate {args:?} did not finish within 30 s"))
        .expect("registry-gate output")
}
