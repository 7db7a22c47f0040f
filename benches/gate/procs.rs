//! Child processes and what /proc says about them: CPU time (utime + stime
//! from /proc/PID/stat, in clock ticks), resident memory (VmRSS, VmHWM from
//! /proc/PID/status, the peak reset through /proc/PID/clear_refs), CPU
//! pinning with taskset, and the machine-wide CPU counters of /proc/stat.
//!
//! Every process here is stopped by its own PID (SIGTERM, then SIGKILL),
//! never by name.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server started by the bench. Dropping it stops it: SIGTERM first (so a
/// profiler wrapped around the gate writes its output), SIGKILL after 10 s.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log_path: PathBuf,
}

impl Proc {
    /// Spawns `program args`, pinned to `cpu` with `taskset -c` when given
    /// (taskset execs the program, so the PID is the server's own), its
    /// stdout and stderr into `log_path`.
    pub fn spawn(
        name: &str,
        mut argv: Vec<String>,
        cwd: &Path,
        env: &[(String, String)],
        log_path: &Path,
        cpu: Option<usize>,
    ) -> Result<Proc, String> {
        if let Some(cpu) = cpu {
            let mut pinned = vec!["taskset".into(), "-c".into(), cpu.to_string()];
            pinned.append(&mut argv);
            argv = pinned;
        }
        let log = File::create(log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        scrub_env(&mut cmd);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {name} ({argv:?}): {e}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log_path: log_path.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keeps proxies and the developer's gate settings out of a child's environment.
pub fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let upper = key.to_string_lossy().to_ascii_uppercase();
        if upper.ends_with("_PROXY") || upper.starts_with("REGISTRY_GATE_") {
            cmd.env_remove(&key);
        }
    }
}

/// Whether `program` can be found on PATH (or is an existing path).
pub fn have(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Pins every thread of `pid` (and so the threads it starts later) to `cpu`.
pub fn pin(pid: u32, cpu: usize) -> Result<(), String> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process (all its threads, living and exited), in ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?).map(|(u, s)| u + s)
}

/// (utime, stime) of a process, in ticks: user space and kernel apart.
pub fn cpu_split(pid: u32) -> Option<(u64, u64)> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Same for this process (the load generator).
pub fn self_cpu_ticks() -> Option<u64> {
    stat_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?).map(|(u, s)| u + s)
}

/// Fields 14 and 15 of /proc/PID/stat, counted after the `)` that ends the
/// command name (which may itself hold spaces and parentheses).
fn stat_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

/// A `VmXXX:` line of /proc/PID/status, in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resets the peak RSS (VmHWM) of `pid` to its current RSS. False where the
/// kernel or our permissions do not allow it.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// With the gate under callgrind: zero its counters before a measured
/// round (`start = true`) and dump them after it, so each dump file holds
/// exactly one round's work (not start-up, not the bcrypt of the first login).
pub fn callgrind_mark(pid: Option<u32>, start: bool) {
    let Some(pid) = pid else { return };
    let flag = if start { "-z" } else { "-d" };
    let _ = Command::new("callgrind_control")
        .arg(flag)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Busy and total ticks of one CPU (`cpuN` line) or of all (`cpu`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
    pub steal: u64,
}

/// /proc/stat: index 0 is the whole machine, index i + 1 is CPU i.
pub fn system_cpu_times() -> Vec<CpuTimes> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    stat.lines()
        .take_while(|l| l.starts_with("cpu"))
        .map(|l| {
            let nums: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            let total: u64 = nums.iter().take(8).sum();
            let field = |i: usize| nums.get(i).copied().unwrap_or(0);
            // Not busy here: idle, iowait, and steal (the hypervisor ran
            // another guest), which is reported apart.
            let steal = field(7);
            CpuTimes {
                busy: total.saturating_sub(field(3) + field(4) + steal),
                total,
                steal,
            }
        })
        .collect()
}

/// Checks the /proc parsers (run by `cargo test`, which runs this bench
/// binary without `--bench`).
pub fn self_check() {
    let line =
        "4242 (registry) gate) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 37 0 0 20 0 3 0 100";
    assert_eq!(stat_ticks(line), Some((150, 37)), "stat parser");
    let me = std::process::id();
    assert!(cpu_ticks(me).is_some(), "/proc/{me}/stat unreadable");
    assert!(status_kib(me, "VmRSS").is_some_and(|k| k > 0), "VmRSS");
    assert!(system_cpu_times().len() >= 2, "/proc/stat");
}
