//! Load balancers in front of several gates: Debian's nginx (HTTP, round
//! robin, `X-Forwarded-For`, its connections to the gates from a loopback
//! address of its own so that the gates can tell it from direct clients)
//! and Debian's HAProxy (TCP, round robin, PROXY protocol v2). Foreground
//! processes with their own config and temp dirs, stopped by PID.

use super::{Daemon, free_port, loopback};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The address nginx connects to the gates from (`proxy_bind`).
pub const NGINX_SOURCE: &str = "127.0.0.2";

pub struct Balancer {
    _daemon: Daemon,
    pub addr: SocketAddr,
    _dir: TempDir,
}

fn program(name: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin"] {
        let p = format!("{dir}/{name}");
        if std::path::Path::new(&p).exists() {
            return p;
        }
    }
    name.to_owned()
}

impl Balancer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// nginx, round robin over `backends`, setting `X-Forwarded-For`.
    pub async fn nginx(backends: &[SocketAddr]) -> Balancer {
        let dir = tempfile::Builder::new()
            .prefix("it-nginx-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path().display();
        let servers: String = backends
            .iter()
            .map(|b| format!("    server {b};\n"))
            .collect();
        let port = free_port();
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             upstream gates {{\n{servers}    keepalive 8;\n  }}\n\
             server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 0;\n\
             location / {{\n      proxy_pass http://gates;\n      proxy_bind {NGINX_SOURCE};\n\
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
             proxy_set_header Host $http_host;\n\
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             proxy_buffering off;\n      proxy_request_buffering off;\n    }}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).expect("write nginx.conf");
        let mut cmd = Command::new(program("nginx"));
        cmd.arg("-c").arg(&path).arg("-p").arg(dir.path());
        let daemon = Daemon::spawn("nginx", cmd, &dir.path().join("nginx.log"));
        Self::ready(daemon, loopback(port), dir).await
    }

    /// HAProxy in TCP mode, round robin over `backends`, sending a PROXY
    /// protocol v2 header on every connection.
    pub async fn haproxy(backends: &[SocketAddr]) -> Balancer {
        let dir = tempfile::Builder::new()
            .prefix("it-haproxy-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("  server g{i} {b} send-proxy-v2\n"))
            .collect();
        let config = format!(
            "global\n  maxconn 256\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n\
             timeout server 60s\nfrontend front\n  bind 127.0.0.1:{port}\n  default_backend gates\n\
             backend gates\n  balance roundrobin\n{servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let mut cmd = Command::new(program("haproxy"));
        cmd.arg("-db").arg("-f").arg(&path);
        let daemon = Daemon::spawn("haproxy", cmd, &dir.path().join("haproxy.log"));
        Self::ready(daemon, loopback(port), dir).await
    }

    /// Returns once `/healthz` answers through the balancer.
    async fn ready(mut daemon: Daemon, addr: SocketAddr, dir: TempDir) -> Balancer {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = super::http::client();
        loop {
            if let Some(status) = daemon.exited() {
                panic!("the balancer exited ({status}):\n{}", daemon.log());
            }
            if let Ok(r) = client.get(format!("http://{addr}/healthz")).send().await
                && r.status() == 200
            {
                return Balancer {
                    _daemon: daemon,
                    addr,
                    _dir: dir,
                };
            }
            assert!(
                Instant::now() < deadline,
                "balancer not ready:\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
