//! A throwaway OpenLDAP slapd with the example directory
//! (config/ldap/example.ldif, configured by config/ldap/slapd.conf.template):
//! its own temp dir and mdb database, loaded offline with slapadd, run in the
//! foreground (`-d`, so the child PID is slapd itself) on free loopback
//! ports, stopped by that PID. Optionally with TLS (ldaps:// and StartTLS)
//! from a CA made here with rcgen.
//!
//! Needs Debian's `slapd` package (/usr/sbin/slapd, slapadd, /usr/lib/ldap,
//! /etc/ldap/schema). It never touches a system slapd.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const SLAPD: &str = "/usr/sbin/slapd";
pub const SLAPADD: &str = "/usr/sbin/slapadd";

pub const SUFFIX: &str = "dc=example,dc=com";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=com";
pub const ROOT_PW: &str = "rootsecret";
pub const SERVICE_DN: &str = "uid=serviceaccount,ou=it,dc=example,dc=com";
/// Every example account's password.
pub const PASSWORD: &str = "password";

/// Log level 256 (stats): connections, operations (`BIND dn=...`), results.
pub const LOG_STATS: u32 = 256;

#[derive(Debug, Clone)]
pub struct SlapdOptions {
    /// Also listen on ldaps:// and offer StartTLS, with a certificate for
    /// 127.0.0.1 and localhost from a CA made for this server.
    pub tls: bool,
    /// slapd's `-d` level; [`LOG_STATS`] is needed for [`Slapd::bind_count`].
    pub log_level: u32,
}

impl Default for SlapdOptions {
    fn default() -> Self {
        SlapdOptions {
            tls: false,
            log_level: LOG_STATS,
        }
    }
}

impl SlapdOptions {
    pub fn tls() -> Self {
        SlapdOptions {
            tls: true,
            ..Default::default()
        }
    }
}

pub struct Slapd {
    dir: TempDir,
    child: Option<Child>,
    /// Port of ldap:// (StartTLS too when TLS is on).
    pub port: u16,
    /// Port of ldaps://, when TLS is on.
    pub tls_port: Option<u16>,
    conf: PathBuf,
    log_path: PathBuf,
    log_level: u32,
    /// Number of times slapd was started, each with its own log file.
    starts: u32,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local_addr")
        .port()
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes a CA and a server certificate for 127.0.0.1/localhost into `dir`;
/// returns the slapd.conf TLS lines.
fn make_tls(dir: &Path) -> String {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    std::fs::create_dir_all(dir).expect("tls dir");
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "registry-gate test LDAP CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params");
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &issuer).expect("server cert");

    let ca_dir = dir.join("ca");
    std::fs::create_dir_all(&ca_dir).expect("ca dir");
    std::fs::write(ca_dir.join("ca.pem"), ca_cert.pem()).expect("write CA");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write key");
    format!(
        "TLSCACertificateFile {ca}\nTLSCertificateFile {cert}\nTLSCertificateKeyFile {key}\n",
        ca = ca_dir.join("ca.pem").display(),
        cert = dir.join("server.pem").display(),
        key = dir.join("server.key").display(),
    )
}

impl Slapd {
    /// A fresh slapd with the example directory, ready (an anonymous bind
    /// works) when this returns. Panics with slapd's log if it cannot start.
    pub async fn start(opts: SlapdOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("it-slapd-")
            .tempdir()
            .expect("temp dir");
        let tls_lines = if opts.tls {
            make_tls(&dir.path().join("tls"))
        } else {
            String::new()
        };
        let template = std::fs::read_to_string(repo_root().join("config/ldap/slapd.conf.template"))
            .expect("read config/ldap/slapd.conf.template");
        let conf_text = template
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@TLS@", &tls_lines)
            .replace("@ROOTPW@", ROOT_PW);
        let conf = dir.path().join("slapd.conf");
        std::fs::write(&conf, conf_text).expect("write slapd.conf");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");

        let out = Command::new(SLAPADD)
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(repo_root().join("config/ldap/example.ldif"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {SLAPADD} (is the slapd package installed?): {e}"));
        assert!(
            out.status.success(),
            "slapadd failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let mut slapd = Slapd {
            log_path: dir.path().join("slapd.log"),
            dir,
            child: None,
            port: 0,
            tls_port: None,
            conf,
            log_level: opts.log_level,
            starts: 0,
        };
        let mut last = String::new();
        for _ in 0..3 {
            slapd.port = free_port();
            slapd.tls_port = opts.tls.then(free_port);
            match slapd.spawn_and_wait().await {
                Ok(()) => return slapd,
                Err(e) => last = e,
            }
        }
        panic!("slapd did not start: {last}");
    }

    fn listen_urls(&self) -> String {
        let mut urls = format!("ldap://127.0.0.1:{}/", self.port);
        if let Some(p) = self.tls_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
        }
        urls
    }

    /// Starts slapd on the current ports and waits until it answers.
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open slapd log");
        let err = log.try_clone().expect("clone log");
        let child = Command::new(SLAPD)
            .arg("-d")
            .arg(self.log_level.to_string())
            .arg("-f")
            .arg(&self.conf)
            .arg("-h")
            .arg(self.listen_urls())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("spawn {SLAPD}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("slapd exited ({status}):\n{}", self.log_tail(30)));
            }
            if self.answers().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "slapd did not answer within 15s:\n{}",
                    self.log_tail(30)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether an anonymous bind on ldap:// works.
    async fn answers(&self) -> bool {
        let settings = ldap3::LdapConnSettings::new().set_conn_timeout(Duration::from_secs(1));
        let Ok((conn, mut ldap)) = ldap3::LdapConnAsync::with_settings(settings, &self.url()).await
        else {
            return false;
        };
        tokio::spawn(async move {
            let _ = conn.drive().await;
        });
        let ok = matches!(
            ldap.with_timeout(Duration::from_secs(1)).simple_bind("", "").await,
            Ok(r) if r.rc == 0
        );
        let _ = ldap.unbind().await;
        ok
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:PORT` (TLS servers only).
    pub fn ldaps_url(&self) -> String {
        format!(
            "ldaps://127.0.0.1:{}",
            self.tls_port.expect("slapd started without TLS")
        )
    }

    /// A directory holding only the CA certificate of this server (TLS
    /// servers only): an `ldap.ca_dir`.
    pub fn ca_dir(&self) -> PathBuf {
        assert!(self.tls_port.is_some(), "slapd started without TLS");
        self.dir.path().join("tls/ca")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills slapd (by its PID) and reaps it. The data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts slapd again on the same ports with the same data.
    pub async fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        // The old listening sockets are gone with the process; slapd sets
        // SO_REUSEADDR, but give a rare straggler a few tries.
        for _ in 0..5 {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("slapd did not restart: {last}");
    }

    /// Everything slapd logged (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().rev().take(n).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// How many simple binds slapd received for DNs containing
    /// `dn_substring` (case-insensitive), successful or not, from its stats
    /// log (`BIND dn="..." method=128`). `""` counts every simple bind,
    /// anonymous ones included (the readiness probe makes one per start).
    pub fn bind_count(&self, dn_substring: &str) -> usize {
        let needle = dn_substring.to_ascii_lowercase();
        self.log()
            .lines()
            .filter(|l| l.contains(" BIND dn=\"") && l.contains("method=128"))
            .filter(|l| {
                let Some(start) = l.find(" BIND dn=\"") else {
                    return false;
                };
                let rest = &l[start + 10..];
                let dn = rest.split('"').next().unwrap_or("");
                dn.to_ascii_lowercase().contains(&needle)
            })
            .count()
    }

    /// How many binds slapd answered with `err=CODE` (`RESULT tag=97 err=CODE`).
    /// slapd may log a RESULT line just after the client got the answer:
    /// use [`Slapd::wait_for_bind_results`] right after a bind.
    pub fn bind_results(&self, code: u32) -> usize {
        let needle = format!("RESULT tag=97 err={code} ");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// Waits (up to 5 s) until slapd logged at least `count` bind results
    /// with `err=CODE`; returns the number it logged.
    pub async fn wait_for_bind_results(&self, code: u32, count: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = self.bind_results(code);
            if n >= count || Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many connections slapd accepted.
    pub fn connection_count(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(" ACCEPT from "))
            .count()
    }

    /// Sets the `userPassword` of `dn` (as the rootdn, in clear text: slapd
    /// compares clear-text values as they are). Panics if slapd refuses.
    pub async fn set_password(&self, dn: &str, password: &str) {
        let settings = ldap3::LdapConnSettings::new().set_conn_timeout(Duration::from_secs(5));
        let (conn, mut ldap) = ldap3::LdapConnAsync::with_settings(settings, &self.url())
            .await
            .expect("connect to slapd");
        tokio::spawn(async move {
            let _ = conn.drive().await;
        });
        ldap.simple_bind(ROOT_DN, ROOT_PW)
            .await
            .and_then(|r| r.success())
            .expect("bind as the rootdn");
        let values = std::collections::HashSet::from([password]);
        ldap.modify(dn, vec![ldap3::Mod::Replace("userPassword", values)])
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("set the password of {dn}: {e}"));
        let _ = ldap.unbind().await;
    }

    /// The temp dir (config, data, TLS files, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "----- last lines of the slapd log ({}) -----\n{}",
                self.log_path.display(),
                self.log_tail(60)
            );
        }
    }
}
