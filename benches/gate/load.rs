//! The load loops and what is measured around them: requests per second and
//! latencies of many small requests over keep-alive connections, the rate of
//! one large transfer, and the CPU every process spent meanwhile.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};

use crate::client::{BoxError, Conn, ReqBody, Target};
use crate::content::{self, Blob, MANIFEST_ACCEPT};
use crate::procs::{self, CpuTimes};

/// Which processes to watch, and the clock tick.
#[derive(Clone, Copy)]
pub struct Meter<'a> {
    pub pids: &'a [u32],
    pub tck: f64,
    /// A gate running under callgrind (see `procs::callgrind_mark`).
    pub callgrind: Option<u32>,
}

/// CPU counters read before a measurement.
pub struct Probe {
    pids: Vec<u32>,
    before: Vec<Option<(u64, u64)>>,
    self_before: Option<u64>,
    system_before: Vec<CpuTimes>,
    started: Instant,
}

/// What the CPUs did during a measurement, in seconds.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub wall: f64,
    /// CPU seconds of each probed process.
    pub cpu: HashMap<u32, f64>,
    /// The user-space part of `cpu` (the rest is the kernel's, for it).
    pub user: HashMap<u32, f64>,
    /// The load generator's own CPU seconds.
    pub client: f64,
    /// Busy fraction of each CPU (index = CPU number).
    pub core_busy: Vec<f64>,
    /// Busy CPU seconds of the machine not spent by the probed processes
    /// or the load generator: other work on the machine, kernel threads,
    /// interrupts.
    pub foreign: f64,
    /// CPU seconds the hypervisor gave to other guests.
    pub steal: f64,
}

impl Probe {
    pub fn start(pids: &[u32]) -> Probe {
        Probe {
            pids: pids.to_vec(),
            before: pids.iter().map(|p| procs::cpu_split(*p)).collect(),
            self_before: procs::self_cpu_ticks(),
            system_before: procs::system_cpu_times(),
            started: Instant::now(),
        }
    }

    pub fn end(self, tck: f64) -> Usage {
        let wall = self.started.elapsed().as_secs_f64();
        let system = procs::system_cpu_times();
        let mut cpu = HashMap::new();
        let mut user = HashMap::new();
        for (pid, before) in self.pids.iter().zip(&self.before) {
            if let (Some((bu, bs)), Some((au, as_))) = (before, procs::cpu_split(*pid)) {
                let u = au.saturating_sub(*bu) as f64 / tck;
                let s = as_.saturating_sub(*bs) as f64 / tck;
                cpu.insert(*pid, u + s);
                user.insert(*pid, u);
            }
        }
        let client = match (self.self_before, procs::self_cpu_ticks()) {
            (Some(b), Some(a)) => a.saturating_sub(b) as f64 / tck,
            _ => 0.0,
        };
        let delta = |i: usize| -> (f64, f64) {
            match (self.system_before.get(i), system.get(i)) {
                (Some(b), Some(a)) => (
                    a.busy.saturating_sub(b.busy) as f64,
                    a.total.saturating_sub(b.total) as f64,
                ),
                _ => (0.0, 0.0),
            }
        };
        let core_busy = (1..system.len())
            .map(|i| {
                let (busy, total) = delta(i);
                if total > 0.0 { busy / total } else { 0.0 }
            })
            .collect();
        let ours: f64 = cpu.values().sum::<f64>() + client;
        let foreign = (delta(0).0 / tck - ours).max(0.0);
        let steal = match (self.system_before.first(), system.first()) {
            (Some(b), Some(a)) => a.steal.saturating_sub(b.steal) as f64 / tck,
            _ => 0.0,
        };
        Usage {
            wall,
            cpu,
            user,
            client,
            core_busy,
            foreign,
            steal,
        }
    }
}

/// The `Authorization` header each request carries.
#[derive(Clone)]
pub enum Credentials {
    One(HeaderValue),
    /// A different token per request, in order; past the end they repeat
    /// (counted as reused: then the verifier's cache answers).
    Pool(Arc<Vec<HeaderValue>>),
}

/// What a small-request load sends.
#[derive(Clone)]
pub enum SmallKind {
    /// HEAD and GET of a manifest, alternating.
    Manifest { path: String, creds: Credentials },
    /// GET of a token URL with Basic credentials.
    Token {
        path_and_query: String,
        basic: HeaderValue,
    },
}

#[derive(Debug, Default)]
pub struct SmallResult {
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latencies_us: Vec<u32>,
    pub reused_tokens: u64,
}

pub struct Shared {
    kind: SmallKind,
    next_token: AtomicU64,
    reused: AtomicU64,
}

impl Shared {
    fn request(&self, conn: &Conn, seq: u64) -> Result<(http::Request<ReqBody>, bool), BoxError> {
        match &self.kind {
            SmallKind::Manifest { path, creds } => {
                let head = seq % 2 == 0;
                let method = if head { Method::HEAD } else { Method::GET };
                let mut b = conn
                    .request(method, path)
                    .header(header::ACCEPT, MANIFEST_ACCEPT);
                match creds {
                    Credentials::One(v) => b = b.header(header::AUTHORIZATION, v.clone()),
                    Credentials::Pool(pool) => {
                        let i = self.next_token.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= pool.len() {
                            self.reused.fetch_add(1, Ordering::Relaxed);
                        }
                        b = b.header(header::AUTHORIZATION, pool[i % pool.len()].clone());
                    }
                }
                Ok((b.body(ReqBody::Empty)?, head))
            }
            SmallKind::Token {
                path_and_query,
                basic,
            } => Ok((
                conn.request(Method::GET, path_and_query)
                    .header(header::AUTHORIZATION, basic.clone())
                    .body(ReqBody::Empty)?,
                false,
            )),
        }
    }

    fn check(&self, status: StatusCode, head: bool, body: &Bytes) -> Result<(), String> {
        if status != StatusCode::OK {
            return Err(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        let ok = match self.kind {
            SmallKind::Manifest { .. } => head || !body.is_empty(),
            SmallKind::Token { .. } => body.windows(8).any(|w| w == b"\"token\":"),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "unexpected body: {}",
                String::from_utf8_lossy(body)
            ))
        }
    }
}

/// Opens `n` connections and sends `warmup` requests on each (not counted).
pub async fn open_small(
    target: &Target,
    n: usize,
    kind: &SmallKind,
    warmup: u64,
) -> Result<(Vec<Conn>, Arc<Shared>), BoxError> {
    let shared = Arc::new(Shared {
        kind: kind.clone(),
        next_token: AtomicU64::new(0),
        reused: AtomicU64::new(0),
    });
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut conn = Conn::open(target).await?;
        for seq in 0..warmup {
            let (req, head) = shared.request(&conn, seq)?;
            let (status, _, body) = conn.fetch(req).await?;
            shared.check(status, head, &body)?;
        }
        conns.push(conn);
    }
    Ok((conns, shared))
}

/// Sends requests on every connection, each waiting for its answer before
/// the next (closed loop), for `duration`. Every answer is checked.
pub async fn run_small(
    target: &Target,
    conns: Vec<Conn>,
    shared: Arc<Shared>,
    duration: Duration,
) -> SmallResult {
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let shared = shared.clone();
        let target = target.clone();
        tasks.spawn(async move {
            let mut r = SmallResult {
                latencies_us: Vec::with_capacity(16 * 1024),
                ..Default::default()
            };
            let mut seq = i as u64;
            while Instant::now() < deadline {
                seq += 1;
                let outcome = async {
                    let (req, head) = shared.request(&conn, seq)?;
                    let t = Instant::now();
                    let (status, _, body) = conn.fetch(req).await?;
                    shared.check(status, head, &body)?;
                    Ok::<_, BoxError>(t.elapsed())
                }
                .await;
                match outcome {
                    Ok(latency) => {
                        r.requests += 1;
                        r.latencies_us
                            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
                    }
                    Err(e) => {
                        r.errors += 1;
                        r.first_error.get_or_insert_with(|| e.to_string());
                        match Conn::open(&target).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            r
        });
    }
    let mut total = SmallResult::default();
    while let Some(joined) = tasks.join_next().await {
        let r = joined.expect("load task panicked");
        total.requests += r.requests;
        total.errors += r.errors;
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
        total.latencies_us.extend(r.latencies_us);
    }
    total.reused_tokens = shared.reused.load(Ordering::Relaxed);
    total
}

/// One GET of a blob, its body counted and dropped; checks the size.
pub async fn get_blob(
    conn: &mut Conn,
    path: &str,
    bearer: Option<&HeaderValue>,
    len: u64,
) -> Result<(), BoxError> {
    let mut b = conn.request(Method::GET, path);
    if let Some(v) = bearer {
        b = b.header(header::AUTHORIZATION, v.clone());
    }
    let (status, n) = conn.drain(b.body(ReqBody::Empty)?).await?;
    if status != StatusCode::OK || n != len {
        return Err(format!("GET {path}: {status}, {n} of {len} bytes").into());
    }
    Ok(())
}

/// How a large blob moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// A GET of the whole blob.
    Get,
    /// POST, then one PUT with the blob and its `Content-Length` (the
    /// monolithic upload of the figures; containerd's pusher does
    /// this, per its source, not measured here).
    Put,
    /// POST, a chunked PATCH in 32 KiB chunks, a PUT with the digest: how
    /// docker and podman push a layer (measured; skopeo shares podman's
    /// library).
    Patch,
}

/// Transfers of one blob on one connection, repeated until `min_time`
/// passed (at least once); the bytes moved.
pub async fn transfer_rounds(
    target: &Target,
    blob: &Blob,
    repo: &str,
    how: Transfer,
    bearer: Option<&HeaderValue>,
    min_time: Duration,
    meter: Meter<'_>,
) -> Result<(u64, Usage), BoxError> {
    let mut conn = Conn::open(target).await?;
    let token = bearer
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let path = format!("/v2/{repo}/blobs/{}", blob.digest);
    procs::callgrind_mark(meter.callgrind, true);
    let probe = Probe::start(meter.pids);
    let started = Instant::now();
    let mut bytes = 0;
    loop {
        match how {
            Transfer::Get => get_blob(&mut conn, &path, bearer, blob.len).await?,
            Transfer::Put => content::put_blob(&mut conn, repo, blob, token).await?,
            Transfer::Patch => content::patch_blob(&mut conn, repo, blob, token).await?,
        }
        bytes += blob.len;
        if started.elapsed() >= min_time {
            break;
        }
    }
    let usage = probe.end(meter.tck);
    procs::callgrind_mark(meter.callgrind, false);
    Ok((bytes, usage))
}

/// The `q`-quantile (0..=1) of `sorted`.
pub fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[idx.min(sorted.len() - 1)])
}

pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn self_check() {
    assert_eq!(quantile(&[1, 2, 3, 4, 5], 0.5), 3.0);
    assert_eq!(quantile(&[1, 2, 3, 4, 5], 0.99), 5.0);
    assert!(quantile(&[], 0.5).is_nan());
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
}
