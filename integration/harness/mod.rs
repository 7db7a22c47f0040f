//! The integration harness: real servers (distribution's `docker-registry`,
//! the gate, later slapd) as child processes on loopback ports chosen at run
//! time, each with its own temp dir, each stopped by its PID when dropped.
//!
//! Nothing here mocks anything, nothing here talks to anything but 127.0.0.1.
// Shared by several test modules; not every helper is used by every module.
#![allow(dead_code)]

pub mod balancer;
pub mod browser;
pub mod containerd;
pub mod docker;
pub mod gate;
pub mod http;
pub mod image;
pub mod oidc;
pub mod podman;
pub mod postgres;
pub mod registry;
pub mod slapd;

pub use gate::Gate;
pub use registry::Registry;

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago. Callers that hand it to a
/// server retry with another one when the server fails to bind.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The repository root (where Cargo.toml and config/ live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Removes from a child's environment what would make it talk to something
/// other than loopback (proxies) or read the developer's gate settings.
pub fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        let upper = key_str.to_ascii_uppercase();
        if upper.ends_with("_PROXY") || upper.starts_with("REGISTRY_GATE_") {
            cmd.env_remove(&key);
        }
    }
}

/// A child process with its output in a log file. Dropping it kills and
/// reaps exactly that child (by its PID, never by name). When dropped during
/// a panic (a failed test), the tail of its log goes to stderr, which the
/// test runner shows with the failure.
pub struct Daemon {
    name: String,
    child: Child,
    log_path: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &str, mut cmd: Command, log_path: &Path) -> Self {
        let log = File::create(log_path).expect("create log file");
        let err = log.try_clone().expect("clone log file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Daemon {
            name: name.to_string(),
            child,
            log_path: log_path.to_path_buf(),
        }
    }

    /// Like [`Self::spawn`], but appends to `log_path` (a restart keeps
    /// the earlier log).
    pub fn spawn_appending(name: &str, mut cmd: Command, log_path: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .expect("open log file");
        let err = log.try_clone().expect("clone log file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Daemon {
            name: name.to_string(),
            child,
            log_path: log_path.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills exactly this process (SIGKILL by PID) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM to exactly this process (by PID) and returns at once;
    /// see [`Self::wait_exit`].
    pub fn sigterm(&mut self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends `signal` to exactly this process (by PID).
    pub fn signal(&mut self, signal: libc::c_int) {
        assert!(self.exited().is_none(), "{} is not running", self.name);
        let pid = i32::try_from(self.pid()).expect("pid");
        // SAFETY: kill(2) on the PID of our own unreaped child: the PID
        // cannot have been reused by another process yet.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill -{signal} {pid} failed");
    }

    /// Waits up to `timeout` for the process to exit; its status if it did.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status if the process has already stopped.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Asks the process to stop (SIGTERM to its PID), waits up to `grace`
    /// for it to exit, then kills it. For daemons that must clean up after
    /// themselves (dockerd unmounts and stops its containerd on SIGTERM).
    pub fn terminate(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.pid()) {
            // SAFETY: kill(2) on the PID of our own unreaped child: the PID
            // cannot have been reused by another process yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Polls `url` until it answers 200. Err (with the reason) if the process
    /// exits first or `timeout` passes.
    pub async fn wait_ready(&mut self, url: &str, timeout: Duration) -> Result<(), String> {
        // A gate serving TLS in tests has a self-signed certificate.
        let client = if url.starts_with("https://") {
            http::client_accepting_any_certificate()
        } else {
            http::client()
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "{} exited ({status}) before {url} answered 200",
                    self.name
                ));
            }
            if let Ok(resp) = client.get(url).send().await {
                if resp.status() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not answer 200 on {url} within {timeout:?}",
                    self.name
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "----- last lines of the {} log ({}) -----",
                self.name,
                self.log_path.display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Runs a client tool once with `stdin` as its input (none: closed) and
/// returns its Output whatever the exit code; kills it after `timeout`.
pub async fn run_tool(
    cmd: Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> std::process::Output {
    use tokio::io::AsyncWriteExt as _;
    let what = format!("{cmd:?}");
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let run = async {
        let mut child = cmd.spawn()?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A tool that does not read its input may close it first.
            let _ = pipe.write_all(input.as_bytes()).await;
        }
        child.wait_with_output().await
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {timeout:?}"))
        .unwrap_or_else(|e| panic!("run {what}: {e}"))
}

/// stdout and stderr of a finished tool, for assertions and messages.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Unmounts (lazily) whatever is still mounted under `dir`, deepest first:
/// a daemon killed before it cleaned up may leave its bind mounts behind,
/// and a temp dir with a mount in it cannot be removed. Only ever called
/// with a temp dir of our own.
pub fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(point)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// How many file descriptors the process has open (sockets included).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
}

/// The process's resident memory in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// CPU time (user + system) the process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The fields after the command name, which ends at the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect(")") + 2..].split(' ').collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf only reads a system constant.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).expect("clock ticks");
    Duration::from_millis(ticks * 1000 / hz)
}

/// A fresh upstream registry and a gate in front of it.
/// Field order matters: the gate is dropped (stopped) before the registry.
pub struct Stack {
    // Field order is drop order: the gate stops first.
    pub gate: Gate,
    pub registry: Registry,
    pub slapd: Option<slapd::Slapd>,
}

impl Stack {
    /// The reference setup: registry + slapd with the example directory + the
    /// gate running the example config (config/registry-gate.toml), its
    /// `[ldap] url` pointed at this slapd.
    pub async fn start() -> Self {
        Self::with_config(&gate::example_config()).await
    }

    /// Registry + gate running `config` (TOML text); listen and upstream
    /// come from the environment overrides. A config with an `[ldap]` section
    /// gets its own slapd, loaded with the example directory.
    pub async fn with_config(config: &str) -> Self {
        Self::with_config_env(config, &[]).await
    }

    /// Like [`Self::with_config`], with more `REGISTRY_GATE_*` overrides for
    /// the gate (`REGISTRY_GATE_SERVER__TLS__CERT`/`__KEY` make it serve TLS).
    pub async fn with_config_env(config: &str, extra_env: &[(&str, &str)]) -> Self {
        let registry = Registry::start().await;
        if !config.contains("\n[ldap]") {
            let gate = Gate::start_with_config(config, &registry.url(), extra_env).await;
            return Stack {
                gate,
                registry,
                slapd: None,
            };
        }
        let slapd = slapd::Slapd::start(slapd::SlapdOptions::default()).await;
        let url = slapd.url();
        let mut env = vec![("REGISTRY_GATE_LDAP__URL", url.as_str())];
        env.extend_from_slice(extra_env);
        let gate = Gate::start_with_config(config, &registry.url(), &env).await;
        Stack {
            gate,
            registry,
            slapd: Some(slapd),
        }
    }
}

/// Checks the harness itself, without the gate.
mod selftest {
    use super::image::{OciImage, Skopeo, push_http};
    use super::{Registry, http};

    #[tokio::test]
    async fn upstream_harness_accepts_direct_push() {
        let registry = Registry::start().await;
        let skopeo = Skopeo::new();

        // skopeo, straight to the upstream, no credentials.
        let image = OciImage::generate();
        let dest = format!("{}/harness/skopeo:v1", registry.addr);
        let out = skopeo.push(&image, &dest, None).await;
        assert!(
            out.status.success(),
            "skopeo push: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(registry.has_repository("harness/skopeo"));
        assert_eq!(
            skopeo.inspect_digest(&dest, None).await,
            image.manifest_digest
        );

        // The hand-rolled HTTP push gives the same digest to skopeo.
        let other = OciImage::generate();
        let client = http::client();
        push_http(&client, &registry.url(), "harness/http", "v2", None, &other).await;
        let dest = format!("{}/harness/http:v2", registry.addr);
        assert_eq!(
            skopeo.inspect_digest(&dest, None).await,
            other.manifest_digest
        );

        // Pull back into a fresh layout: same manifest digest.
        let (out, pulled) = skopeo.pull(&dest, None).await;
        assert!(
            out.status.success(),
            "skopeo pull: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(pulled.digest(), other.manifest_digest);

        // The request log parser sees what happened, and settles on demand.
        let seen = registry.requests_settled().await;
        let put = "PUT /v2/harness/http/manifests/v2".to_string();
        assert!(seen.contains(&put), "{put} not in {seen:#?}");
        assert!(!registry.has_repository("harness/never"));
    }
}
