//! A throwaway PostgreSQL cluster: Debian's `initdb` into a temp dir, then
//! the `postgres` server in the foreground on a free loopback port (its PID
//! is ours: it is stopped, and can be restarted, by PID). Unix sockets go
//! to the temp dir too, so nothing touches a system cluster.
//!
//! As root (CI), PostgreSQL refuses to run: initdb and the server then run
//! as the `postgres` user that Debian's package creates, through `setpriv`,
//! which execs (no intermediate process holds the PID).

use super::{Daemon, free_port};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const USER: &str = "gate";
pub const PASSWORD: &str = "pg-s3cret-for-tests";
pub const DATABASE: &str = "registry_gate";

pub struct Postgres {
    daemon: Option<Daemon>,
    pub port: u16,
    dir: TempDir,
}

/// Where Debian installs the server's programs (not on PATH).
fn bin(name: &str) -> PathBuf {
    if let Ok(dirs) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = dirs.flatten().map(|d| d.path()).collect();
        versions.sort();
        if let Some(v) = versions.last() {
            let p = v.join("bin").join(name);
            if p.exists() {
                return p;
            }
        }
    }
    PathBuf::from(name)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program` run as the postgres user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ]);
        c.arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// initdb, start, create the database; returns once it answers queries.
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("it-pg-")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(ok.success(), "chown the cluster dir to postgres");
        }
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("write pwfile");
        if is_root() {
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&pwfile)
                .status()
                .expect("chown pwfile");
        }
        let out = as_postgres(&bin("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--no-sync", "-E", "UTF8", "--locale=C"])
            .output()
            .expect("run initdb (Debian package postgresql)");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            daemon: None,
            port: 0,
            dir,
        };
        for _ in 0..3 {
            pg.port = free_port();
            pg.run();
            if pg.wait_answering().await {
                pg.psql("postgres", &format!("CREATE DATABASE {DATABASE}"));
                return pg;
            }
        }
        panic!("postgres did not start:\n{}", pg.log());
    }

    /// Starts the server (again, after [`Postgres::stop`]) on the same port.
    fn run(&mut self) {
        let mut cmd = as_postgres(&bin("postgres"));
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ));
        self.daemon = Some(Daemon::spawn(
            "postgres",
            cmd,
            &self.dir.path().join("postgres.log"),
        ));
    }

    /// Waits until `SELECT 1` works, or the server exits (false).
    async fn wait_answering(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.daemon.as_mut().is_some_and(|d| d.exited().is_some()) {
                return false;
            }
            if self.try_psql("postgres", "SELECT 1").is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Stops the server: SIGINT by PID (a "fast" shutdown, which closes
    /// the gates' pooled connections), then waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take()
            && d.exited().is_none()
        {
            d.signal(libc::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(30);
            while d.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts it again on the same port and data; returns once it answers.
    pub async fn restart(&mut self) {
        self.run();
        assert!(
            self.wait_answering().await,
            "postgres did not come back:\n{}",
            self.log()
        );
    }

    /// The store URL for a gate (the password comes from a file or here).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// A file holding the password, for `[store] password_file`.
    pub fn password_file(&self) -> PathBuf {
        let p = self.dir.path().join("gate-password.txt");
        std::fs::write(&p, format!("{PASSWORD}\n")).expect("write password file");
        p
    }

    fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                db,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-tA", "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs `sql` in `db`; panics with psql's error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?}: {e}\n{}", self.log()))
    }

    /// Everything in the gate's database as text (for secret searches).
    pub fn dump(&self) -> String {
        let out = Command::new(bin("pg_dump"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                DATABASE,
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("pg_dump");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
