//! The gate's benchmark: the gate beside the direct upstream and nginx, in
//! one run, on loopback only. See benches/README.md and docs/benchmarks.md.
//!
//! `cargo bench --bench gate [-- --quick]` builds the gate in release mode,
//! starts Debian's docker-registry (filesystem storage in a temp dir), seeds
//! it, starts the gate (plain, TLS, and one without the LDAP login cache),
//! slapd with the example directory and nginx when they are installed, pins
//! the servers to one CPU and itself (the load generator, a small hyper
//! client) to the other, measures in alternating rounds, prints a table and
//! writes JSON (default `<target dir>/bench/results.json`).
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it only
//! checks its own parsers and exits: the benchmark never runs in CI.

mod client;
mod content;
mod load;
mod procs;
mod report;
mod servers;
#[path = "../../integration/harness/slapd.rs"]
mod slapd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, StatusCode};
use serde_json::{Value, json};

use registry_gate::authn::{Backend, Identity};
use registry_gate::scope::{Action, Scope};
use registry_gate::token::{Issuer, SigningKey};

use client::{Conn, ReqBody, Target};
use content::{Blob, GIB, MIB};
use load::{Credentials, Meter, Probe, SmallKind, Transfer, Usage, median, quantile};
use report::{Check, DIRECT, GATE, NGINX, Row, Section, check};
use servers::{GateSettings, Server};

const USAGE: &str = "\
usage: cargo bench --bench gate -- [options]
  --quick               one round, short loads (under a minute)
  --rounds N            rounds per figure (default 3; --quick: 1)
  --duration SECS       length of each small-request round (default 2; --quick: 1)
  --blob-secs SECS      repeat each 256 MiB transfer for at least this long
                        (default 1; --quick: 0, one transfer)
  --connections N       concurrent connections for small requests (default 32)
  --only LIST           comma list of: small,distinct,get,put,patch,tls,tokens
  --no-nginx            do not compare with nginx even if installed
  --nginx-buffering     leave nginx's proxy buffering on (its default); the
                        default here is streaming (proxy_[request_]buffering off)
  --no-ldap             skip LDAP (slapd) figures even if slapd is installed
  --out FILE            JSON output (default <target dir>/bench/results.json)
  --server-cpu N        CPU for the servers (default 0)
  --client-cpu N        CPU for the load generator (default 1)
  --gate-wrapper CMD    run every gate under CMD (split on spaces), e.g.
                        'valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p';
                        CMD must exec the gate or pass SIGTERM on to it: the
                        bench stops each gate by signalling CMD's PID";

const SCENARIOS: &[&str] = &["small", "distinct", "get", "put", "patch", "tls", "tokens"];
const SMALL_REPO: &str = "bench/small";
const BIG_REPO: &str = "bench/big";
const PUSH_REPO: &str = "bench/push";
const LDAP_USER: (&str, &str) = ("mozart", "password");

struct Options {
    quick: bool,
    rounds: usize,
    small_secs: f64,
    blob_secs: f64,
    connections: usize,
    token_connections: usize,
    only: Vec<String>,
    nginx: bool,
    nginx_buffering: bool,
    ldap: bool,
    out: Option<PathBuf>,
    server_cpu: usize,
    client_cpu: usize,
    gate_wrapper: Vec<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut o = Options {
            quick,
            rounds: if quick { 1 } else { 3 },
            small_secs: if quick { 1.0 } else { 2.0 },
            blob_secs: if quick { 0.0 } else { 1.0 },
            connections: 32,
            token_connections: 16,
            only: SCENARIOS.iter().map(|s| s.to_string()).collect(),
            nginx: true,
            nginx_buffering: false,
            ldap: true,
            out: None,
            server_cpu: 0,
            client_cpu: 1,
            gate_wrapper: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            let number = |name: &str, v: String| {
                v.parse::<f64>()
                    .ok()
                    .filter(|n| *n > 0.0)
                    .ok_or_else(|| format!("{name}: not a positive number: {v}"))
            };
            match arg.as_str() {
                "--bench" | "--quick" => {}
                "--rounds" => o.rounds = number(arg, value(arg)?)? as usize,
                "--duration" => o.small_secs = number(arg, value(arg)?)?,
                "--blob-secs" => o.blob_secs = number(arg, value(arg)?)?,
                "--connections" => o.connections = number(arg, value(arg)?)? as usize,
                "--only" => {
                    o.only = value(arg)?.split(',').map(str::to_string).collect();
                    if let Some(bad) = o.only.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
                        return Err(format!("--only: unknown scenario {bad}"));
                    }
                }
                "--no-nginx" => o.nginx = false,
                "--nginx-buffering" => o.nginx_buffering = true,
                "--no-ldap" => o.ldap = false,
                "--out" => o.out = Some(PathBuf::from(value(arg)?)),
                "--server-cpu" => o.server_cpu = value(arg)?.parse().map_err(|e| format!("{e}"))?,
                "--client-cpu" => o.client_cpu = value(arg)?.parse().map_err(|e| format!("{e}"))?,
                "--gate-wrapper" => {
                    o.gate_wrapper = value(arg)?.split_whitespace().map(str::to_string).collect()
                }
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        o.rounds = o.rounds.max(1);
        o.connections = o.connections.max(1);
        Ok(o)
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only.iter().any(|s| s == scenario)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test` runs bench targets without `--bench`: check the
        // parsers the figures depend on, and measure nothing.
        procs::self_check();
        content::self_check();
        load::self_check();
        report::self_check();
        println!("gate bench: self-check ok (measure with `cargo bench --bench gate`)");
        return ExitCode::SUCCESS;
    }
    let opts = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("gate bench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(wrapper) = opts.gate_wrapper.first() {
        // The bench signals the PID it started: the wrapper's. One that
        // neither execs the gate nor forwards signals (`sh -c`, `sudo`,
        // `strace` without -f...) leaves gates running after the bench.
        eprintln!(
            "gate bench: WARNING: --gate-wrapper {wrapper}: the bench stops each gate with \
             SIGTERM (then SIGKILL) to the wrapper's PID; the wrapper must exec the gate or \
             pass signals on to it (valgrind does), or the gates outlive the bench"
        );
    }
    // Pin the load generator before its runtime starts threads.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = procs::have("taskset")
        && cpus >= 2
        && opts.server_cpu != opts.client_cpu
        && procs::pin(std::process::id(), opts.client_cpu).is_ok();
    if !pinned {
        eprintln!(
            "gate bench: WARNING: not pinned (needs taskset and 2 CPUs; have {cpus}): \
             servers and load generator share the CPUs"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        tokio::select! {
            r = run(opts, pinned) => match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gate bench: FAILED: {e}");
                    ExitCode::from(1)
                }
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!("gate bench: interrupted; stopping the servers");
                ExitCode::from(130)
            }
        }
    })
}

/// One way to reach the registry: directly, through the gate, through nginx.
#[derive(Clone)]
struct Endpoint {
    col: usize,
    name: &'static str,
    target: Target,
    /// The process serving this endpoint (the registry itself for direct).
    own_pid: u32,
    /// The registry behind a proxy.
    upstream_pid: Option<u32>,
}

/// Everything started for the run. Field order is drop order: proxies stop
/// before the registries, the temp dirs go last.
struct Stack {
    gate: Server,
    gate_tls: Server,
    gate_cold: Option<Server>,
    nginx: Option<Server>,
    registry: Server,
    registry_tls: Server,
    slapd: Option<slapd::Slapd>,
    _storage: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl Stack {
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![
            self.gate.pid(),
            self.gate_tls.pid(),
            self.registry.pid(),
            self.registry_tls.pid(),
        ];
        pids.extend(self.gate_cold.as_ref().map(Server::pid));
        pids.extend(self.nginx.as_ref().map(Server::pid));
        pids.extend(self.slapd.as_ref().and_then(slapd::Slapd::pid));
        pids
    }

    fn plain_endpoints(&self) -> Vec<Endpoint> {
        let mut eps = vec![
            Endpoint {
                col: DIRECT,
                name: "direct",
                target: self.registry.target.clone(),
                own_pid: self.registry.pid(),
                upstream_pid: None,
            },
            Endpoint {
                col: GATE,
                name: "gate",
                target: self.gate.target.clone(),
                own_pid: self.gate.pid(),
                upstream_pid: Some(self.registry.pid()),
            },
        ];
        if let Some(n) = &self.nginx {
            eps.push(Endpoint {
                col: NGINX,
                name: "nginx",
                target: n.target.clone(),
                own_pid: n.pid(),
                upstream_pid: Some(self.registry.pid()),
            });
        }
        eps
    }

    fn tls_endpoints(&self) -> Vec<Endpoint> {
        let mut eps = vec![
            Endpoint {
                col: DIRECT,
                name: "direct",
                target: self.registry_tls.target.clone(),
                own_pid: self.registry_tls.pid(),
                upstream_pid: None,
            },
            Endpoint {
                col: GATE,
                name: "gate",
                target: self.gate_tls.target.clone(),
                own_pid: self.gate_tls.pid(),
                upstream_pid: Some(self.registry.pid()),
            },
        ];
        if let Some(n) = &self.nginx {
            eps.push(Endpoint {
                col: NGINX,
                name: "nginx",
                target: n.tls_target.clone().expect("nginx TLS port"),
                own_pid: n.pid(),
                upstream_pid: Some(self.registry.pid()),
            });
        }
        eps
    }
}

/// The run's state: the servers, what is measured, what is reported.
struct Ctx {
    opts: Options,
    tck: f64,
    stack: Stack,
    pids: Vec<u32>,
    bearer: HeaderValue,
    minter: Issuer,
    blob_256m: Blob,
    blob_1g: Blob,
    /// The gate's small-request rate, to size the distinct-token pool.
    gate_small_rate: Option<f64>,
    json: serde_json::Map<String, Value>,
    noise: std::collections::BTreeMap<String, Noise>,
    sections: Vec<Section>,
    checks: Vec<Check>,
    warnings: Vec<String>,
}

/// What the rounds of one endpoint (or token kind) add up to.
#[derive(Clone, Default)]
struct Acc {
    rates: Vec<f64>,
    latencies: Vec<u32>,
    /// Requests, tokens or bytes.
    count: u64,
    own_cpu: f64,
    /// slapd's CPU for logins.
    other_cpu: f64,
    rounds: Vec<Value>,
    peak_rss_kib: Option<u64>,
    /// The largest rise of RSS within one transfer (peak minus RSS before).
    rss_growth_kib: Option<u64>,
    rss_reset: bool,
}

/// Other work seen on the machine during one scenario's rounds.
#[derive(Default)]
struct Noise {
    rounds: u32,
    noisy: u32,
    client_bound: u32,
    max_foreign: f64,
}

/// Rotates the endpoints so each takes each position across rounds.
fn rotated<T: Clone>(items: &[T], round: usize) -> Vec<T> {
    let mut v = items.to_vec();
    let n = v.len().max(1);
    v.rotate_left(round % n);
    v
}

async fn run(opts: Options, pinned: bool) -> Result<(), String> {
    let started = Instant::now();
    if !procs::have(servers::REGISTRY_BIN) {
        return Err(format!(
            "{} not found: apt-get install docker-registry",
            servers::REGISTRY_BIN
        ));
    }
    let server_cpu = pinned.then_some(opts.server_cpu);
    let tck = procs::clk_tck();
    let dir = tempfile::Builder::new()
        .prefix("gate-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let storage = storage_dir()?;
    println!(
        "gate bench ({}): temp dir {}, registry storage {}",
        if opts.quick { "quick" } else { "full" },
        dir.path().display(),
        storage.path().display()
    );

    // Keys, certificates, the bench user.
    let tls = servers::make_tls(dir.path());
    let client_tls = client::tls_client_config(&tls.ca_pem);
    let key_pem = registry_gate::token::keys::generate_es256_pem().map_err(|e| e.to_string())?;
    let key_path = dir.path().join("token-key.pem");
    std::fs::write(&key_path, &key_pem).map_err(|e| e.to_string())?;
    let signing = Arc::new(SigningKey::from_pem(&key_pem).map_err(|e| e.to_string())?);
    let minter = Issuer::new(
        signing,
        servers::ISSUER,
        servers::SERVICE,
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    );
    let bench_hash = bcrypt::hash(servers::BENCH_PASSWORD, 10).map_err(|e| e.to_string())?;

    // slapd with the example directory (integration/harness/slapd.rs).
    let slapd =
        if opts.ldap && Path::new(slapd::SLAPD).exists() && Path::new(slapd::SLAPADD).exists() {
            let s = slapd::Slapd::start(slapd::SlapdOptions {
                tls: false,
                log_level: 0,
            })
            .await;
            if let (Some(cpu), Some(pid)) = (server_cpu, s.pid()) {
                procs::pin(pid, cpu)?;
            }
            Some(s)
        } else {
            if opts.ldap {
                println!("slapd not installed: LDAP figures skipped (apt-get install slapd)");
            }
            None
        };

    // The upstream, plain and TLS, on one storage.
    let registry =
        servers::start_registry("registry", dir.path(), storage.path(), None, server_cpu).await?;
    let registry_tls = servers::start_registry(
        "registry-tls",
        dir.path(),
        storage.path(),
        Some((&tls, client_tls.clone())),
        server_cpu,
    )
    .await?;

    // Seed it, directly.
    let t = Instant::now();
    let pattern = content::pattern(42);
    let blob_256m = Blob::new(pattern.clone(), 256 * MIB);
    let blob_1g = Blob::new(pattern.clone(), GIB);
    let mut conn = Conn::open(&registry.target)
        .await
        .map_err(|e| e.to_string())?;
    content::push_small(&mut conn, SMALL_REPO, "v1", &content::small_image())
        .await
        .map_err(|e| format!("seeding the small image: {e}"))?;
    for blob in [&blob_256m, &blob_1g] {
        content::put_blob(&mut conn, BIG_REPO, blob, None)
            .await
            .map_err(|e| format!("seeding a blob: {e}"))?;
    }
    drop(conn);
    println!("seeded the registry in {:.1} s", t.elapsed().as_secs_f64());

    // The gates.
    let ldap_url = slapd.as_ref().map(slapd::Slapd::url);
    let settings = GateSettings {
        upstream: &registry.target,
        key_path: &key_path,
        bench_hash: &bench_hash,
        ldap_url: ldap_url.as_deref(),
        ldap_cache_off: false,
        tls: None,
    };
    let w = &opts.gate_wrapper;
    let gate = servers::start_gate("gate", dir.path(), &settings, None, w, server_cpu).await?;
    let gate_tls = servers::start_gate(
        "gate-tls",
        dir.path(),
        &GateSettings {
            ldap_url: None,
            tls: Some(&tls),
            ..settings
        },
        Some(client_tls.clone()),
        w,
        server_cpu,
    )
    .await?;
    let gate_cold = match &ldap_url {
        Some(url) => Some(
            servers::start_gate(
                "gate-cold",
                dir.path(),
                &GateSettings {
                    ldap_url: Some(url),
                    ldap_cache_off: true,
                    ..settings
                },
                None,
                w,
                server_cpu,
            )
            .await?,
        ),
        None => None,
    };
    let nginx = if opts.nginx && procs::have(servers::NGINX_BIN) {
        Some(
            servers::start_nginx(
                dir.path(),
                &registry.target,
                &tls,
                client_tls.clone(),
                opts.nginx_buffering,
                server_cpu,
            )
            .await?,
        )
    } else {
        if opts.nginx {
            println!("nginx not installed: no nginx column (apt-get install nginx-light)");
        }
        None
    };

    let stack = Stack {
        gate,
        gate_tls,
        gate_cold,
        nginx,
        registry,
        registry_tls,
        slapd,
        _storage: storage,
        _dir: dir,
    };
    println!(
        "PIDs: registry {}, registry-tls {}, gate {}, gate-tls {}{}{}{}",
        stack.registry.pid(),
        stack.registry_tls.pid(),
        stack.gate.pid(),
        stack.gate_tls.pid(),
        stack
            .gate_cold
            .as_ref()
            .map_or(String::new(), |g| format!(", gate-cold {}", g.pid())),
        stack
            .nginx
            .as_ref()
            .map_or(String::new(), |n| format!(", nginx {}", n.pid())),
        stack
            .slapd
            .as_ref()
            .and_then(slapd::Slapd::pid)
            .map_or(String::new(), |p| format!(", slapd {p}")),
    );
    let bearer = fetch_bearer(&stack.gate.target).await?;
    let mut ctx = Ctx {
        tck,
        pids: stack.pids(),
        stack,
        bearer,
        minter,
        blob_256m,
        blob_1g,
        gate_small_rate: None,
        json: serde_json::Map::new(),
        noise: Default::default(),
        sections: Vec::new(),
        checks: Vec::new(),
        warnings: Vec::new(),
        opts,
    };
    ctx.json.insert(
        "machine".into(),
        machine(&ctx, pinned, server_cpu.is_some()),
    );
    ctx.json.insert("options".into(), options_json(&ctx.opts));
    let idle: Vec<(String, Option<u64>)> = [
        ("gate", ctx.stack.gate.pid()),
        ("registry", ctx.stack.registry.pid()),
    ]
    .into_iter()
    .chain(ctx.stack.nginx.as_ref().map(|n| ("nginx", n.pid())))
    .map(|(n, p)| (n.to_string(), procs::status_kib(p, "VmRSS")))
    .collect();
    ctx.json.insert(
        "idle_rss_kib".into(),
        Value::Object(idle.into_iter().map(|(k, v)| (k, json!(v))).collect()),
    );

    if ctx.opts.wants("small") {
        small(&mut ctx, false).await?;
    }
    if ctx.opts.wants("distinct") {
        small(&mut ctx, true).await?;
    }
    if ctx.opts.wants("get") {
        blobs(&mut ctx, Transfer::Get).await?;
    }
    if ctx.opts.wants("put") {
        blobs(&mut ctx, Transfer::Put).await?;
    }
    if ctx.opts.wants("patch") {
        blobs(&mut ctx, Transfer::Patch).await?;
    }
    if ctx.opts.wants("tls") {
        tls_get(&mut ctx).await?;
    }
    if ctx.opts.wants("tokens") {
        tokens(&mut ctx).await?;
    }

    ctx.noise_warnings();
    println!();
    report::print_sections(&ctx.sections);
    report::print_checks(&ctx.checks);
    for w in &ctx.warnings {
        println!("WARNING: {w}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    ctx.json.insert("duration_s".into(), json!(elapsed));
    ctx.json.insert(
        "targets".into(),
        Value::Array(
            ctx.checks
                .iter()
                .map(|c| {
                    json!({"what": c.what, "wanted": c.wanted, "measured": c.measured,
                           "met": c.met, "margin": c.margin})
                })
                .collect(),
        ),
    );
    ctx.json.insert("warnings".into(), json!(ctx.warnings));
    let out = ctx.opts.out.clone().unwrap_or_else(default_out);
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(&Value::Object(ctx.json)).expect("JSON");
    std::fs::write(&out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("\nJSON: {} (run took {elapsed:.0} s)", out.display());
    Ok(())
}

/// Registry storage: in /dev/shm when it has room (so disk writeback does
/// not blur pushes), else in the temp dir.
fn storage_dir() -> Result<tempfile::TempDir, String> {
    let shm = Path::new("/dev/shm");
    let room = std::process::Command::new("df")
        .args(["-Pk", "/dev/shm"])
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            text.lines()
                .nth(1)?
                .split_whitespace()
                .nth(3)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("gate-bench-storage-");
        b
    };
    if shm.is_dir() && room > 6 * 1024 * 1024 {
        builder.tempdir_in(shm).map_err(|e| e.to_string())
    } else {
        builder.tempdir().map_err(|e| e.to_string())
    }
}

fn default_out() -> PathBuf {
    // The bench runs as <target>/<profile>/deps/gate-<hash>.
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("bench/results.json")
}

fn auth_query(account: &str, scopes: &[&str]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("account", account)
        .append_pair("service", servers::SERVICE);
    for s in scopes {
        q.append_pair("scope", s);
    }
    format!("/auth?{}", q.finish())
}

fn basic(user: &str, password: &str) -> HeaderValue {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    HeaderValue::from_str(&format!("Basic {encoded}")).expect("header")
}

/// A token from the gate's realm for every repository the bench touches.
async fn fetch_bearer(gate: &Target) -> Result<HeaderValue, String> {
    let mut conn = Conn::open(gate).await.map_err(|e| e.to_string())?;
    let path = auth_query(
        "bench",
        &[
            &format!("repository:{SMALL_REPO}:pull"),
            &format!("repository:{BIG_REPO}:pull"),
            &format!("repository:{PUSH_REPO}:pull,push"),
        ],
    );
    let req = conn
        .request(Method::GET, &path)
        .header(
            http::header::AUTHORIZATION,
            basic("bench", servers::BENCH_PASSWORD),
        )
        .body(ReqBody::Empty)
        .map_err(|e| e.to_string())?;
    let (status, _, body) = conn.fetch(req).await.map_err(|e| e.to_string())?;
    if status != StatusCode::OK {
        return Err(format!(
            "token request: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let token = v["token"]
        .as_str()
        .ok_or("no token in the realm's answer")?;
    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())
}

/// `n` distinct access tokens for the small image, signed with the gate's
/// key (as the gate's realm would sign them), as `Authorization` values.
fn mint(minter: &Issuer, n: usize) -> Result<Vec<HeaderValue>, String> {
    let identity = Identity {
        account: "bench".into(),
        backend: Backend::Static,
        labels: Default::default(),
        credential: None,
    };
    let scopes = [Scope::repository(SMALL_REPO, [Action::Pull])];
    (0..n)
        .map(|_| {
            let issued = minter
                .issue(&identity, &scopes)
                .map_err(|e| e.to_string())?;
            HeaderValue::from_str(&format!("Bearer {}", issued.token)).map_err(|e| e.to_string())
        })
        .collect()
}

/// Per-round figures kept for the JSON.
fn usage_json(ep: &Endpoint, u: &Usage, server_cpu: Option<usize>, client_cpu: usize) -> Value {
    json!({
        "wall_s": u.wall,
        "own_cpu_s": u.cpu.get(&ep.own_pid),
        "own_user_cpu_s": u.user.get(&ep.own_pid),
        "upstream_cpu_s": ep.upstream_pid.and_then(|p| u.cpu.get(&p)),
        "client_cpu_s": u.client,
        "server_core_busy": server_cpu.and_then(|c| u.core_busy.get(c)),
        "client_core_busy": u.core_busy.get(client_cpu),
        "foreign_cpu_s": u.foreign,
        "steal_s": u.steal,
    })
}

impl Ctx {
    fn server_cpu(&self) -> Option<usize> {
        self.json["machine"]["pinned"]
            .as_bool()
            .filter(|p| *p)
            .map(|_| self.opts.server_cpu)
    }

    /// The PID to mark for callgrind, when `pid` is a gate run under it.
    fn callgrind(&self, pid: u32) -> Option<u32> {
        let gates = [
            Some(self.stack.gate.pid()),
            Some(self.stack.gate_tls.pid()),
            self.stack.gate_cold.as_ref().map(Server::pid),
        ];
        (self
            .opts
            .gate_wrapper
            .iter()
            .any(|w| w.contains("callgrind"))
            && gates.contains(&Some(pid)))
        .then_some(pid)
    }

    /// Notes, per scenario, how much other work ran on the machine and
    /// whether the load generator used up its CPU (then the figure may be
    /// the client's limit, not the server's).
    fn note_usage(&mut self, what: &str, u: &Usage) {
        if u.wall <= 0.0 {
            return;
        }
        let scenario = what.split_whitespace().next().unwrap_or(what).to_string();
        let entry = self.noise.entry(scenario).or_default();
        entry.rounds += 1;
        entry.max_foreign = entry.max_foreign.max(u.foreign / u.wall);
        if u.foreign / u.wall > 0.05 {
            entry.noisy += 1;
        }
        if u.client / u.wall > 0.9 {
            entry.client_bound += 1;
        }
    }

    fn noise_warnings(&mut self) {
        for (scenario, n) in &self.noise {
            if n.noisy > 0 {
                self.warnings.push(format!(
                    "{scenario}: other work on the machine took over 5% of a CPU in {} of {} rounds (up to {:.0}%)",
                    n.noisy,
                    n.rounds,
                    100.0 * n.max_foreign
                ));
            }
            if n.client_bound > 0 {
                self.warnings.push(format!(
                    "{scenario}: the load generator used over 90% of its CPU in {} of {} rounds",
                    n.client_bound, n.rounds
                ));
            }
        }
    }
}

/// HEAD/GET of the small image's manifest with a bearer token: one token
/// for all (`distinct = false`, the verifier's cache answers) or a fresh
/// one per request (`distinct = true`, each is verified).
async fn small(ctx: &mut Ctx, distinct: bool) -> Result<(), String> {
    let (key, title) = if distinct {
        (
            "small_distinct_tokens",
            "small requests, a new token per request (HEAD+GET manifest)",
        )
    } else {
        ("small", "small requests, one token (HEAD+GET manifest)")
    };
    println!("measuring: {title}");
    let eps = ctx.stack.plain_endpoints();
    let duration = Duration::from_secs_f64(ctx.opts.small_secs);
    let path = format!("/v2/{SMALL_REPO}/manifests/v1");
    let mut rounds: Vec<Vec<Value>> = vec![Vec::new(); eps.len()];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); eps.len()];
    let mut lat: Vec<Vec<u32>> = vec![Vec::new(); eps.len()];
    let mut totals = vec![(0u64, 0.0f64, 0.0f64); eps.len()];
    let mut user_totals = vec![0.0f64; eps.len()];
    let mut shared_pool: Option<Arc<Vec<HeaderValue>>> = None;
    for r in 0..ctx.opts.rounds {
        for ep in rotated(&eps, r) {
            let i = eps
                .iter()
                .position(|e| e.name == ep.name)
                .expect("endpoint");
            let creds = if !distinct {
                Credentials::One(ctx.bearer.clone())
            } else if ep.col == GATE {
                // Enough never-seen tokens for the whole round.
                let rate = ctx.gate_small_rate.unwrap_or(8_000.0);
                let n =
                    (rate * ctx.opts.small_secs * 1.3) as usize + 4 * ctx.opts.connections + 500;
                let t = Instant::now();
                let pool = Arc::new(mint(&ctx.minter, n)?);
                println!("  minted {n} tokens in {:.1} s", t.elapsed().as_secs_f64());
                shared_pool = Some(pool.clone());
                Credentials::Pool(pool)
            } else {
                let pool = match &shared_pool {
                    Some(p) => p.clone(),
                    None => Arc::new(mint(&ctx.minter, 2000)?),
                };
                shared_pool = Some(pool.clone());
                Credentials::Pool(pool)
            };
            let kind = SmallKind::Manifest {
                path: path.clone(),
                creds,
            };
            let (conns, shared) = load::open_small(&ep.target, ctx.opts.connections, &kind, 2)
                .await
                .map_err(|e| format!("{} {}: {e}", ep.name, title))?;
            procs::callgrind_mark(ctx.callgrind(ep.own_pid), true);
            let probe = Probe::start(&ctx.pids);
            let res = load::run_small(&ep.target, conns, shared, duration).await;
            let usage = probe.end(ctx.tck);
            procs::callgrind_mark(ctx.callgrind(ep.own_pid), false);
            if res.errors > 0 {
                ctx.warnings.push(format!(
                    "{key} {}: {} errors of {} requests, first: {}",
                    ep.name,
                    res.errors,
                    res.requests + res.errors,
                    res.first_error.clone().unwrap_or_default()
                ));
            }
            if res.reused_tokens > 0 && ep.col == GATE {
                ctx.warnings.push(format!(
                    "{key}: {} requests reused a token (pool too small)",
                    res.reused_tokens
                ));
            }
            ctx.note_usage(&format!("{key} {} round {}", ep.name, r + 1), &usage);
            let rate = res.requests as f64 / usage.wall;
            println!(
                "  round {} {:<6} {:>8.0} req/s  own CPU {:>6.1} µs/req",
                r + 1,
                ep.name,
                rate,
                usage.cpu.get(&ep.own_pid).copied().unwrap_or(f64::NAN) * 1e6
                    / res.requests.max(1) as f64
            );
            let mut u = usage_json(&ep, &usage, ctx.server_cpu(), ctx.opts.client_cpu);
            u["requests"] = json!(res.requests);
            u["errors"] = json!(res.errors);
            u["req_s"] = json!(rate);
            u["reused_tokens"] = json!(res.reused_tokens);
            rounds[i].push(u);
            rates[i].push(rate);
            user_totals[i] += usage.user.get(&ep.own_pid).copied().unwrap_or(0.0);
            totals[i].0 += res.requests;
            totals[i].1 += usage.cpu.get(&ep.own_pid).copied().unwrap_or(0.0);
            totals[i].2 += ep
                .upstream_pid
                .and_then(|p| usage.cpu.get(&p).copied())
                .unwrap_or(0.0);
            lat[i].extend(res.latencies_us);
        }
    }
    let mut section = Section {
        title: title.into(),
        rows: Vec::new(),
    };
    let mut values = [[None; 3]; 4];
    let mut out = serde_json::Map::new();
    for (i, ep) in eps.iter().enumerate() {
        lat[i].sort_unstable();
        let rate = median(&rates[i]);
        let p50 = quantile(&lat[i], 0.5);
        let p99 = quantile(&lat[i], 0.99);
        let (n, own, up) = totals[i];
        let own_us = own * 1e6 / n.max(1) as f64;
        let up_us = up * 1e6 / n.max(1) as f64;
        values[0][ep.col] = Some(rate);
        values[1][ep.col] = Some(p50);
        values[2][ep.col] = Some(p99);
        values[3][ep.col] = Some(own_us);
        out.insert(
            ep.name.into(),
            json!({
                "req_s": rate, "p50_us": p50, "p99_us": p99,
                "own_cpu_us_per_req": own_us,
                "own_user_cpu_us_per_req": user_totals[i] * 1e6 / n.max(1) as f64,
                "upstream_cpu_us_per_req": ep.upstream_pid.map(|_| up_us),
                "rounds": rounds[i],
            }),
        );
        if ep.col == GATE && !distinct {
            ctx.gate_small_rate = Some(rate);
        }
    }
    let (t_rate, t_cpu) = if distinct {
        (String::new(), String::new())
    } else {
        (">= 0.95x direct".into(), "<= nginx".into())
    };
    section.rows.push(Row {
        label: "throughput".into(),
        unit: "req/s",
        values: values[0],
        target: t_rate,
    });
    section.rows.push(Row {
        label: "latency p50".into(),
        unit: "µs",
        values: values[1],
        target: String::new(),
    });
    section.rows.push(Row {
        label: "latency p99".into(),
        unit: "µs",
        values: values[2],
        target: String::new(),
    });
    section.rows.push(Row {
        label: "own CPU per request; direct: the registry's".into(),
        unit: "µs",
        values: values[3],
        target: t_cpu,
    });
    if !distinct {
        if let (Some(g), Some(d)) = (values[0][GATE], values[0][DIRECT]) {
            ctx.checks.push(check(
                "small requests: gate throughput vs direct",
                ">= 0.95x".into(),
                g / d,
                0.95,
                true,
                "x",
            ));
        }
        if let (Some(g), Some(n)) = (values[3][GATE], values[3][NGINX]) {
            ctx.checks.push(check(
                "small requests: gate CPU per request vs nginx's",
                format!("<= {n:.1} µs (nginx)"),
                g,
                n,
                false,
                "µs",
            ));
        }
    }
    ctx.sections.push(section);
    ctx.json.insert(key.into(), Value::Object(out));
    Ok(())
}

/// Large blob GET, push with one monolithic PUT (256 MiB and 1 GiB), or
/// push as docker and podman do (chunked PATCH; 256 MiB), with the peak RSS
/// of the serving process during each. The issue's targets are checked on
/// GET and PUT; the PATCH figures are for comparison (no target).
async fn blobs(ctx: &mut Ctx, how: Transfer) -> Result<(), String> {
    let eps = ctx.stack.plain_endpoints();
    let (verb, repo) = match how {
        Transfer::Get => ("GET", BIG_REPO),
        Transfer::Put => ("PUT", PUSH_REPO),
        Transfer::Patch => ("PATCH", PUSH_REPO),
    };
    // The issue's targets are for GET and PUT; PATCH is measured beside them.
    let targeted = how != Transfer::Patch;
    let mut blobs = vec![("256m", "256 MiB", ctx.blob_256m.clone(), ctx.opts.blob_secs)];
    if targeted {
        blobs.push(("1g", "1 GiB", ctx.blob_1g.clone(), 0.0));
    }
    for (tag, size, blob, min_secs) in blobs {
        let key = format!("blob_{}_{tag}", verb.to_ascii_lowercase());
        let title = if targeted {
            format!("large blob {verb}, {size}, one stream")
        } else {
            format!(
                "large blob push as docker/podman send it: {verb} chunked in 32 KiB chunks, {size}"
            )
        };
        println!("measuring: {title}");
        let mut per = vec![
            Acc {
                rss_reset: true,
                ..Acc::default()
            };
            eps.len()
        ];
        for r in 0..ctx.opts.rounds {
            for ep in rotated(&eps, r) {
                let i = eps
                    .iter()
                    .position(|e| e.name == ep.name)
                    .expect("endpoint");
                let reset = procs::reset_peak_rss(ep.own_pid);
                let rss_before = procs::status_kib(ep.own_pid, "VmRSS");
                let (bytes, usage) = load::transfer_rounds(
                    &ep.target,
                    &blob,
                    repo,
                    how,
                    Some(&ctx.bearer),
                    Duration::from_secs_f64(min_secs),
                    Meter {
                        pids: &ctx.pids,
                        tck: ctx.tck,
                        callgrind: ctx.callgrind(ep.own_pid),
                    },
                )
                .await
                .map_err(|e| format!("{} {title}: {e}", ep.name))?;
                let hwm = procs::status_kib(ep.own_pid, "VmHWM");
                ctx.note_usage(&format!("{key} {} round {}", ep.name, r + 1), &usage);
                let mbs = bytes as f64 / 1e6 / usage.wall;
                let own = usage.cpu.get(&ep.own_pid).copied().unwrap_or(f64::NAN);
                println!(
                    "  round {} {:<6} {:>7.0} MB/s  own CPU {:.3} s/GiB  peak RSS {} MiB",
                    r + 1,
                    ep.name,
                    mbs,
                    own / (bytes as f64 / GIB as f64),
                    hwm.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
                );
                let mut u = usage_json(&ep, &usage, ctx.server_cpu(), ctx.opts.client_cpu);
                u["bytes"] = json!(bytes);
                u["mb_s"] = json!(mbs);
                u["peak_rss_kib"] = json!(hwm);
                u["peak_rss_reset"] = json!(reset);
                u["rss_before_kib"] = json!(rss_before);
                let p = &mut per[i];
                p.rates.push(mbs);
                p.own_cpu += own;
                p.count += bytes;
                p.rounds.push(u);
                p.peak_rss_kib = p.peak_rss_kib.max(hwm);
                if let (Some(peak), Some(before)) = (hwm, rss_before) {
                    p.rss_growth_kib = p.rss_growth_kib.max(Some(peak.saturating_sub(before)));
                }
                p.rss_reset &= reset;
            }
        }
        let mut vals = [[None; 3]; 4];
        let mut out = serde_json::Map::new();
        for (i, ep) in eps.iter().enumerate() {
            let Acc {
                rates,
                own_cpu: own,
                count: bytes,
                rounds,
                peak_rss_kib: hwm,
                rss_growth_kib: growth,
                rss_reset: reset,
                ..
            } = &per[i];
            let mbs = median(rates);
            let cpu_per_gib = own / (*bytes as f64 / GIB as f64);
            let rss_mib = hwm.map(|k| k as f64 / 1024.0);
            vals[0][ep.col] = Some(mbs);
            vals[1][ep.col] = Some(cpu_per_gib);
            vals[2][ep.col] = rss_mib;
            let growth_mib = growth.map(|k| k as f64 / 1024.0);
            vals[3][ep.col] = growth_mib;
            out.insert(
                ep.name.into(),
                json!({"mb_s": mbs, "own_cpu_s_per_gib": cpu_per_gib,
                       "peak_rss_mib": rss_mib, "peak_rss_since_reset": reset,
                       "rss_growth_mib": growth_mib,
                       "rounds": rounds}),
            );
            if ep.col == GATE && !reset {
                ctx.warnings.push(format!(
                    "{key}: could not reset the gate's peak RSS: VmHWM is the peak since start"
                ));
            }
        }
        let target = |t: &str| {
            if targeted {
                t.to_string()
            } else {
                String::new()
            }
        };
        let rows = vec![
            Row {
                label: "throughput".into(),
                unit: "MB/s",
                values: vals[0],
                target: target(">= 0.9x direct"),
            },
            Row {
                label: "own CPU per GiB; direct: the registry's".into(),
                unit: "s",
                values: vals[1],
                target: target("<= 0.3 s"),
            },
            Row {
                label: "peak RSS during the transfer".into(),
                unit: "MiB",
                values: vals[2],
                target: target("< 32 MiB"),
            },
            Row {
                label: "RSS growth within one transfer".into(),
                unit: "MiB",
                values: vals[3],
                target: target("flat"),
            },
        ];
        if !targeted {
            ctx.sections.push(Section { title, rows });
            ctx.json.insert(key, Value::Object(out));
            continue;
        }
        if let (Some(g), Some(d)) = (vals[0][GATE], vals[0][DIRECT]) {
            ctx.checks.push(check(
                &format!("blob {verb} {size}: gate throughput vs direct"),
                ">= 0.9x".into(),
                g / d,
                0.9,
                true,
                "x",
            ));
        }
        if let Some(g) = vals[1][GATE] {
            ctx.checks.push(check(
                &format!("blob {verb} {size}: gate CPU per GiB"),
                "<= 0.3 s".into(),
                g,
                0.3,
                false,
                "s",
            ));
        }
        if let Some(g) = vals[2][GATE] {
            ctx.checks.push(check(
                &format!("blob {verb} {size}: gate peak RSS"),
                "< 32 MiB".into(),
                g,
                32.0,
                false,
                "MiB",
            ));
        }
        ctx.sections.push(Section { title, rows });
        ctx.json.insert(key, Value::Object(out));
    }
    Ok(())
}

/// The 256 MiB blob GET over TLS: the registry serving TLS itself, the gate
/// with TLS (plain HTTP to the upstream), nginx with TLS.
async fn tls_get(ctx: &mut Ctx) -> Result<(), String> {
    let title = "TLS: large blob GET, 256 MiB, one stream";
    println!("measuring: {title}");
    let eps = ctx.stack.tls_endpoints();
    let blob = ctx.blob_256m.clone();
    let mut per = vec![Acc::default(); eps.len()];
    for r in 0..ctx.opts.rounds {
        for ep in rotated(&eps, r) {
            let i = eps
                .iter()
                .position(|e| e.name == ep.name)
                .expect("endpoint");
            let (bytes, usage) = load::transfer_rounds(
                &ep.target,
                &blob,
                BIG_REPO,
                Transfer::Get,
                Some(&ctx.bearer),
                Duration::from_secs_f64(ctx.opts.blob_secs),
                Meter {
                    pids: &ctx.pids,
                    tck: ctx.tck,
                    callgrind: ctx.callgrind(ep.own_pid),
                },
            )
            .await
            .map_err(|e| format!("{} {title}: {e}", ep.name))?;
            ctx.note_usage(&format!("tls {} round {}", ep.name, r + 1), &usage);
            let mbs = bytes as f64 / 1e6 / usage.wall;
            let own = usage.cpu.get(&ep.own_pid).copied().unwrap_or(f64::NAN);
            println!(
                "  round {} {:<6} {:>7.0} MB/s  own CPU {:.3} s/GiB",
                r + 1,
                ep.name,
                mbs,
                own / (bytes as f64 / GIB as f64)
            );
            let mut u = usage_json(&ep, &usage, ctx.server_cpu(), ctx.opts.client_cpu);
            u["bytes"] = json!(bytes);
            u["mb_s"] = json!(mbs);
            let p = &mut per[i];
            p.rates.push(mbs);
            p.own_cpu += own;
            p.count += bytes;
            p.rounds.push(u);
        }
    }
    let mut vals = [[None; 3]; 2];
    let mut out = serde_json::Map::new();
    for (i, ep) in eps.iter().enumerate() {
        let Acc {
            rates,
            own_cpu: own,
            count: bytes,
            rounds,
            ..
        } = &per[i];
        let mbs = median(rates);
        let cpu = own / (*bytes as f64 / GIB as f64);
        vals[0][ep.col] = Some(mbs);
        vals[1][ep.col] = Some(cpu);
        out.insert(
            ep.name.into(),
            json!({"mb_s": mbs, "own_cpu_s_per_gib": cpu, "rounds": rounds}),
        );
    }
    if let (Some(g), Some(n)) = (vals[0][GATE], vals[0][NGINX]) {
        ctx.checks.push(check(
            "TLS blob GET: gate throughput vs nginx with TLS",
            ">= 1.5x".into(),
            g / n,
            1.5,
            true,
            "x",
        ));
    }
    ctx.sections.push(Section {
        title: title.into(),
        rows: vec![
            Row {
                label: "throughput".into(),
                unit: "MB/s",
                values: vals[0],
                target: ">= 1.5x nginx".into(),
            },
            Row {
                label: "own CPU per GiB; direct: the registry's".into(),
                unit: "s",
                values: vals[1],
                target: String::new(),
            },
        ],
    });
    ctx.json
        .insert("tls_blob_get_256m".into(), Value::Object(out));
    Ok(())
}

/// Token issuance at the realm: a static user, a robot account and an LDAP
/// user whose logins are cached, and cold LDAP logins (a gate with the LDAP login cache off:
/// service bind, search, user bind every time).
async fn tokens(ctx: &mut Ctx) -> Result<(), String> {
    let title = "token issuance (GET /auth, Basic credentials)";
    println!("measuring: {title}");
    struct Kind {
        key: &'static str,
        label: &'static str,
        target: Target,
        pid: u32,
        user: (&'static str, &'static str),
    }
    // A robot account's secret, looked up in the store once per cache_ttl
    // (SQLite here): the same path as a personal access token.
    let robot: &'static str =
        Box::leak(servers::create_robot(ctx.stack._dir.path(), "gate")?.into_boxed_str());
    let mut kinds = vec![
        Kind {
            key: "static_cached",
            label: "static user, login cached",
            target: ctx.stack.gate.target.clone(),
            pid: ctx.stack.gate.pid(),
            user: ("bench", servers::BENCH_PASSWORD),
        },
        Kind {
            key: "robot_cached",
            label: "robot account, credential cached",
            target: ctx.stack.gate.target.clone(),
            pid: ctx.stack.gate.pid(),
            user: ("robot+bench", robot),
        },
    ];
    if let Some(cold) = &ctx.stack.gate_cold {
        kinds.push(Kind {
            key: "ldap_cached",
            label: "LDAP user, login cached",
            target: ctx.stack.gate.target.clone(),
            pid: ctx.stack.gate.pid(),
            user: LDAP_USER,
        });
        kinds.push(Kind {
            key: "ldap_cold",
            label: "LDAP user, cold login (cache off)",
            target: cold.target.clone(),
            pid: cold.pid(),
            user: LDAP_USER,
        });
    }
    let slapd_pid = ctx.stack.slapd.as_ref().and_then(slapd::Slapd::pid);
    let duration = Duration::from_secs_f64(ctx.opts.small_secs);
    let idx: Vec<usize> = (0..kinds.len()).collect();
    let mut per = vec![Acc::default(); kinds.len()];
    for r in 0..ctx.opts.rounds {
        for i in rotated(&idx, r) {
            let k = &kinds[i];
            let scope = format!("repository:{SMALL_REPO}:pull");
            let kind = SmallKind::Token {
                path_and_query: auth_query(k.user.0, &[&scope]),
                basic: basic(k.user.0, k.user.1),
            };
            let (conns, shared) = load::open_small(&k.target, ctx.opts.token_connections, &kind, 2)
                .await
                .map_err(|e| format!("tokens {}: {e}", k.key))?;
            procs::callgrind_mark(ctx.callgrind(k.pid), true);
            let probe = Probe::start(&ctx.pids);
            let res = load::run_small(&k.target, conns, shared, duration).await;
            let usage = probe.end(ctx.tck);
            procs::callgrind_mark(ctx.callgrind(k.pid), false);
            if res.errors > 0 {
                ctx.warnings.push(format!(
                    "tokens {}: {} errors, first: {}",
                    k.key,
                    res.errors,
                    res.first_error.clone().unwrap_or_default()
                ));
            }
            ctx.note_usage(&format!("tokens {} round {}", k.key, r + 1), &usage);
            let rate = res.requests as f64 / usage.wall;
            let own = usage.cpu.get(&k.pid).copied().unwrap_or(0.0);
            let ldap = slapd_pid
                .and_then(|p| usage.cpu.get(&p).copied())
                .unwrap_or(0.0);
            println!(
                "  round {} {:<14} {:>8.0} tokens/s  gate CPU {:>7.1} µs/token",
                r + 1,
                k.key,
                rate,
                own * 1e6 / res.requests.max(1) as f64
            );
            let p = &mut per[i];
            p.rates.push(rate);
            p.latencies.extend(res.latencies_us);
            p.count += res.requests;
            p.own_cpu += own;
            p.other_cpu += ldap;
            p.rounds.push(json!({
                "tokens": res.requests, "errors": res.errors, "tokens_s": rate,
                "wall_s": usage.wall, "gate_cpu_s": own, "slapd_cpu_s": ldap,
                "gate_user_cpu_s": usage.user.get(&k.pid),
                "client_core_busy": usage.core_busy.get(ctx.opts.client_cpu),
                "foreign_cpu_s": usage.foreign,
            }));
        }
    }
    let mut rows = Vec::new();
    let mut out = serde_json::Map::new();
    for (i, k) in kinds.iter().enumerate() {
        let Acc {
            rates,
            latencies: lat,
            count: n,
            own_cpu: own,
            other_cpu: ldap,
            rounds,
            ..
        } = &mut per[i];
        lat.sort_unstable();
        let rate = median(rates);
        let cpu_us = *own * 1e6 / (*n).max(1) as f64;
        out.insert(
            k.key.into(),
            json!({"tokens_s": rate, "p50_us": quantile(lat, 0.5), "p99_us": quantile(lat, 0.99),
                   "gate_cpu_us_per_token": cpu_us,
                   "slapd_cpu_us_per_token": *ldap * 1e6 / (*n).max(1) as f64,
                   "rounds": rounds}),
        );
        let cached = k.key != "ldap_cold";
        rows.push(Row {
            label: format!("{}: tokens/s", k.label),
            unit: "1/s",
            values: [None, Some(rate), None],
            target: if cached {
                ">= 10000/s".into()
            } else {
                String::new()
            },
        });
        rows.push(Row {
            label: format!("{}: gate CPU per token", k.label),
            unit: "µs",
            values: [None, Some(cpu_us), None],
            target: String::new(),
        });
        if cached {
            ctx.checks.push(check(
                &format!("token issuance, {}", k.label),
                ">= 10000 tokens/s".into(),
                rate,
                10_000.0,
                true,
                "tokens/s",
            ));
        }
    }
    ctx.sections.push(Section {
        title: title.into(),
        rows,
    });
    ctx.json.insert("tokens".into(), Value::Object(out));
    Ok(())
}

fn first_line(path: &str, prefix: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(prefix))
        .map(|l| {
            l.split_once(':')
                .map_or(l, |(_, v)| v)
                .trim()
                .trim_matches('"')
                .to_string()
        })
}

fn machine(ctx: &Ctx, pinned: bool, servers_pinned: bool) -> Value {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(servers::repo_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    json!({
        "cpu": first_line("/proc/cpuinfo", "model name"),
        "cpus": procs::system_cpu_times().len().saturating_sub(1),
        "memory": first_line("/proc/meminfo", "MemTotal"),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        "os": first_line("/etc/os-release", "PRETTY_NAME=").map(|s| s.trim_start_matches("PRETTY_NAME=").trim_matches('"').to_string()),
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_string()),
        "registry": servers::version_of(&[servers::REGISTRY_BIN, "--version"]),
        "nginx": ctx.stack.nginx.as_ref().and_then(|_| servers::version_of(&[servers::NGINX_BIN, "-v"])),
        "slapd": ctx.stack.slapd.is_some(),
        "gate_commit": git(&["rev-parse", "--short", "HEAD"]).map(|c| if dirty { format!("{c}-dirty") } else { c }),
        "pinned": pinned && servers_pinned,
        "server_cpu": ctx.opts.server_cpu,
        "client_cpu": ctx.opts.client_cpu,
        "clk_tck": ctx.tck,
        "load_generator": "benches/gate/client.rs: hyper 1 HTTP/1.1 client, current-thread tokio runtime",
        "gate_wrapper": ctx.opts.gate_wrapper,
    })
}

fn options_json(o: &Options) -> Value {
    json!({
        "quick": o.quick, "rounds": o.rounds, "small_secs": o.small_secs,
        "blob_min_secs": o.blob_secs, "connections": o.connections,
        "token_connections": o.token_connections, "only": o.only,
        "nginx_buffering": o.nginx_buffering,
    })
}
