//! The servers under test, each a child process on a loopback port chosen at
//! run time, pinned to the servers' CPU: Debian's docker-registry (plain and
//! TLS, one storage), the gate (release build; plain, TLS, and one with the
//! LDAP login cache off), nginx as a plain reverse proxy when installed.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use crate::client::{Conn, ReqBody, Target};
use crate::procs::Proc;

pub const GATE_BIN: &str = env!("CARGO_BIN_EXE_registry-gate");
pub const REGISTRY_BIN: &str = "docker-registry";
pub const NGINX_BIN: &str = "nginx";

/// The password of the bench's static user `bench`.
pub const BENCH_PASSWORD: &str = "bench-password";
pub const SERVICE: &str = "Docker registry";
pub const ISSUER: &str = "registry-gate";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A running server and how to reach it.
pub struct Server {
    pub proc: Proc,
    pub target: Target,
    /// Further addresses the same process serves (nginx's TLS port).
    pub tls_target: Option<Target>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// Polls `GET path` on `target` until it answers 200.
async fn wait_ready(proc: &mut Proc, target: &Target, path: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if proc.exited() {
            return Err(format!(
                "{} exited before answering:\n{}",
                proc.name,
                proc.log_tail(30)
            ));
        }
        let last = match probe(target, path).await {
            Ok(StatusCode::OK) => return Ok(()),
            Ok(status) => format!("answered {status}"),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(format!(
                "{} not ready on {} within 20 s ({last}):\n{}",
                proc.name,
                target.addr,
                proc.log_tail(30)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn probe(target: &Target, path: &str) -> Result<StatusCode, String> {
    let mut conn = Conn::open(target).await.map_err(|e| e.to_string())?;
    let req = conn
        .request(Method::GET, path)
        .body(ReqBody::Empty)
        .map_err(|e| e.to_string())?;
    let (status, _, _) = conn.fetch(req).await.map_err(|e| e.to_string())?;
    Ok(status)
}

/// TLS files for 127.0.0.1: a CA (the client trusts it) and a server
/// certificate it signed.
pub struct TlsFiles {
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_tls(dir: &Path) -> TlsFiles {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "registry-gate bench CA");
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
    let files = TlsFiles {
        ca_pem: ca_cert.pem(),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.cert, cert.pem()).expect("write cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    files
}

/// Debian's docker-registry with the settings of its packaged
/// /etc/docker/registry/config.yml (info logs with an access log, in-memory
/// blob descriptor cache, storage health check), minus its htpasswd auth.
pub async fn start_registry(
    name: &str,
    dir: &Path,
    storage: &Path,
    tls: Option<(
        &TlsFiles,
        std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    )>,
    cpu: Option<usize>,
) -> Result<Server, String> {
    let mut last = String::new();
    for _ in 0..3 {
        let addr = loopback(free_port());
        let tls_yaml = tls.as_ref().map_or(String::new(), |(files, _)| {
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                files.cert.display(),
                files.key.display()
            )
        });
        let config = format!(
            "version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: registry-gate-bench
  headers:
    X-Content-Type-Options: [nosniff]
{tls_yaml}health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
",
            storage = storage.display()
        );
        let config_path = dir.join(format!("{name}.yml"));
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let argv = vec![
            REGISTRY_BIN.to_string(),
            "serve".into(),
            config_path.display().to_string(),
        ];
        let mut proc = Proc::spawn(name, argv, dir, &[], &dir.join(format!("{name}.log")), cpu)?;
        let target = match &tls {
            None => Target::plain(addr),
            Some((_, config)) => Target::tls(addr, config.clone()),
        };
        match wait_ready(&mut proc, &target, "/v2/").await {
            Ok(()) => {
                return Ok(Server {
                    proc,
                    target,
                    tls_target: None,
                });
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// What goes into a gate config besides its listen address.
pub struct GateSettings<'a> {
    pub upstream: &'a Target,
    pub key_path: &'a Path,
    pub bench_hash: &'a str,
    /// `ldap://127.0.0.1:PORT` of the bench's slapd.
    pub ldap_url: Option<&'a str>,
    /// The LDAP login cache off (cold logins).
    pub ldap_cache_off: bool,
    pub tls: Option<&'a TlsFiles>,
}

pub fn gate_config(listen: SocketAddr, s: &GateSettings) -> String {
    let mut config = format!(
        r#"[server]
listen = "{listen}"

[upstream]
url = "http://{upstream}"

[token]
service = "{SERVICE}"
issuer = "{ISSUER}"
lifetime = "1h"
key = "{key}"

[users.bench]
password = "{hash}"

[[acl]]
match = {{ account = "bench" }}
actions = ["*"]

[[acl]]
match = {{ account = "/.+/" }}
actions = ["pull", "push"]
"#,
        upstream = s.upstream.addr,
        key = s.key_path.display(),
        hash = s.bench_hash,
    );
    if let Some(tls) = s.tls {
        config.push_str(&format!(
            "\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            tls.cert.display(),
            tls.key.display()
        ));
    }
    if let Some(url) = s.ldap_url {
        let ttl = if s.ldap_cache_off { "0s" } else { "5m" };
        let negative = if s.ldap_cache_off { "0s" } else { "10s" };
        config.push_str(&format!(
            r#"
[ldap]
url = "{url}"
start_tls = false
bind_dn = "uid=serviceaccount,ou=it,dc=example,dc=com"
bind_password_file = "{password_file}"
base = "ou=musicians,dc=example,dc=com"
filter = "(&(uid=${{account}})(objectClass=person))"
labels = {{ groups = "memberOf" }}
cache_ttl = "{ttl}"
negative_cache_ttl = "{negative}"
timeout = "5s"
"#,
            password_file = repo_root().join("config/ldap_password.txt").display(),
        ));
    }
    config
}

/// The gate, release build, with `settings`; `wrapper` (a profiler such as
/// `valgrind --tool=callgrind`) goes in front of the binary when given.
pub async fn start_gate(
    name: &str,
    dir: &Path,
    settings: &GateSettings<'_>,
    client_tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
    wrapper: &[String],
    cpu: Option<usize>,
) -> Result<Server, String> {
    let mut last = String::new();
    for _ in 0..3 {
        let addr = loopback(free_port());
        let config_path = dir.join(format!("{name}.toml"));
        // Each gate its own store (robot credentials for the token rows).
        let config = gate_config(addr, settings)
            + &format!(
                "\n[store]\nurl = \"sqlite://{}/{name}-store.db\"\n",
                dir.display()
            );
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let mut argv: Vec<String> = wrapper.to_vec();
        argv.extend([
            GATE_BIN.to_string(),
            "serve".into(),
            "--config".into(),
            config_path.display().to_string(),
        ]);
        let mut proc = Proc::spawn(name, argv, dir, &[], &dir.join(format!("{name}.log")), cpu)?;
        let target = match &client_tls {
            None => Target::plain(addr),
            Some(config) => Target::tls(addr, config.clone()),
        };
        // Under a profiler the gate starts far slower: wait_ready allows 20 s.
        match wait_ready(&mut proc, &target, "/healthz").await {
            Ok(()) => {
                return Ok(Server {
                    proc,
                    target,
                    tls_target: None,
                });
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A robot credential `robot+bench` (pull on everything) in the store of
/// the gate started as `name` in `dir`: its secret.
pub fn create_robot(dir: &Path, name: &str) -> Result<String, String> {
    let config = dir.join(format!("{name}.toml"));
    let out = std::process::Command::new(GATE_BIN)
        .arg("--config")
        .arg(&config)
        .args([
            "token",
            "create",
            "--robot",
            "bench",
            "--scope",
            "repository:*/*:pull",
        ])
        .output()
        .map_err(|e| format!("token create: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().last() {
        Some(secret) if out.status.success() && secret.starts_with("rgt_") => Ok(secret.to_owned()),
        _ => Err(format!(
            "token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// nginx as a plain reverse proxy in front of `upstream`, in the shape of
/// distribution's own nginx recipe (Host and X-Forwarded-* headers, no body
/// size limit, long read timeout) plus what a streaming proxy needs to be a
/// fair comparison: keep-alive to the upstream, no response or request
/// buffering to temp files (`buffering = true` keeps nginx's defaults,
/// measured slower here). One process (`master_process off`), so its CPU
/// and memory are those of one PID; access log on, as the gate's is.
pub async fn start_nginx(
    dir: &Path,
    upstream: &Target,
    tls: &TlsFiles,
    client_tls: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    buffering: bool,
    cpu: Option<usize>,
) -> Result<Server, String> {
    // nginx's defaults buffer bodies (to temp files past its memory buffers).
    let buffering = if buffering {
        ""
    } else {
        "proxy_buffering off;\n      proxy_request_buffering off;"
    };
    let mut last = String::new();
    for _ in 0..3 {
        let http_addr = loopback(free_port());
        let tls_addr = loopback(free_port());
        let d = dir.display();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log {d}/nginx-access.log;
  client_body_temp_path {d}/nginx-body;
  proxy_temp_path {d}/nginx-proxy;
  fastcgi_temp_path {d}/nginx-fastcgi;
  uwsgi_temp_path {d}/nginx-uwsgi;
  scgi_temp_path {d}/nginx-scgi;
  upstream registry {{
    server {upstream};
    keepalive 64;
  }}
  server {{
    listen {http_addr};
    listen {tls_addr} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    client_max_body_size 0;
    chunked_transfer_encoding on;
    location /v2/ {{
      proxy_pass http://registry;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_read_timeout 900;
      {buffering}
    }}
  }}
}}
"#,
            upstream = upstream.addr,
            cert = tls.cert.display(),
            key = tls.key.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let argv = vec![
            NGINX_BIN.to_string(),
            "-p".into(),
            format!("{d}/"),
            "-e".into(),
            format!("{d}/nginx-error.log"),
            "-c".into(),
            conf_path.display().to_string(),
        ];
        let mut proc = Proc::spawn("nginx", argv, dir, &[], &dir.join("nginx.log"), cpu)?;
        let target = Target::plain(http_addr);
        let tls_target = Target::tls(tls_addr, client_tls.clone());
        let ready = match wait_ready(&mut proc, &target, "/v2/").await {
            Ok(()) => wait_ready(&mut proc, &tls_target, "/v2/").await,
            Err(e) => Err(e),
        };
        match ready {
            Ok(()) => {
                return Ok(Server {
                    proc,
                    target,
                    tls_target: Some(tls_target),
                });
            }
            Err(e) => {
                let errlog =
                    std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default();
                last = format!("{e}\n{errlog}");
            }
        }
    }
    Err(last)
}

/// `nginx -v`, `docker-registry --version`: what was measured.
pub fn version_of(argv: &[&str]) -> Option<String> {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().next().map(|l| l.trim().to_string())
}
