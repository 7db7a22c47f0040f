//! What the bench stores: large blobs made of a 1 MiB pseudo-random pattern
//! repeated (so a push streams without holding the blob), a small image
//! (config, one layer, a Docker schema 2 manifest), and the registry calls
//! that upload them (monolithic: POST, then PUT with the whole body).

use bytes::Bytes;
use http::{Method, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::client::{BoxError, Conn, ReqBody};

pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;
pub const PATTERN_LEN: usize = MIB as usize;

pub const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// What docker sends when it asks for a manifest.
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// 1 MiB from xorshift64*, seeded: the same bytes every run.
pub fn pattern(seed: u64) -> Bytes {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(PATTERN_LEN);
    while out.len() < PATTERN_LEN {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    Bytes::from(out)
}

/// `sha256:<hex>` of `len` bytes of `pattern` repeated.
pub fn pattern_digest(pattern: &[u8], len: u64) -> String {
    let mut h = Sha256::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(pattern.len() as u64) as usize;
        h.update(&pattern[..n]);
        left -= n as u64;
    }
    format!("sha256:{}", hex(&h.finalize()))
}

pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A blob of the bench: its size, digest and content.
#[derive(Clone)]
pub struct Blob {
    pub len: u64,
    pub digest: String,
    pub pattern: Bytes,
}

impl Blob {
    pub fn new(pattern: Bytes, len: u64) -> Self {
        Blob {
            digest: pattern_digest(&pattern, len),
            len,
            pattern,
        }
    }
}

/// The small image: config and layer blobs (bytes), and its manifest.
pub struct SmallImage {
    pub blobs: Vec<Bytes>,
    pub manifest: Bytes,
}

pub fn small_image() -> SmallImage {
    let config = Bytes::from_static(
        br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["/hello"]},"rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#,
    );
    let layer = pattern(7).slice(..32 * 1024);
    let descriptor = |media_type: &str, data: &Bytes| {
        format!(
            r#"{{"mediaType":"{media_type}","size":{},"digest":"{}"}}"#,
            data.len(),
            digest(data)
        )
    };
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_TYPE}","config":{},"layers":[{}]}}"#,
        descriptor("application/vnd.docker.container.image.v1+json", &config),
        descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", &layer),
    );
    SmallImage {
        blobs: vec![config, layer],
        manifest: Bytes::from(manifest),
    }
}

fn auth(builder: http::request::Builder, bearer: Option<&str>) -> http::request::Builder {
    match bearer {
        Some(token) => builder.header(header::AUTHORIZATION, format!("Bearer {token}")),
        None => builder,
    }
}

/// `Ok` if the registry answered `want`, else an error naming the step
/// and quoting the answer's body.
fn expect_status(
    step: &str,
    status: StatusCode,
    want: StatusCode,
    body: &[u8],
) -> Result<(), BoxError> {
    if status == want {
        return Ok(());
    }
    Err(format!("{step}: {status} {}", String::from_utf8_lossy(body)).into())
}

/// Starts an upload in `repo`; the path and query of its `Location`.
pub async fn start_upload(
    conn: &mut Conn,
    repo: &str,
    bearer: Option<&str>,
) -> Result<String, BoxError> {
    let req = auth(
        conn.request(Method::POST, &format!("/v2/{repo}/blobs/uploads/")),
        bearer,
    )
    .header(header::CONTENT_LENGTH, "0")
    .body(ReqBody::Empty)?;
    let (status, headers, body) = conn.fetch(req).await?;
    expect_status("POST upload", status, StatusCode::ACCEPTED, &body)?;
    upload_location(&headers)
}

/// The path and query of an upload answer's `Location` (distribution sends
/// it absolute).
fn upload_location(headers: &http::HeaderMap) -> Result<String, BoxError> {
    let location = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("upload answer without Location")?;
    let start = location.find("/v2/").ok_or("odd upload Location")?;
    Ok(location[start..].to_string())
}

/// Finishes an upload with the whole body in one PUT (monolithic).
pub async fn finish_upload(
    conn: &mut Conn,
    location: &str,
    digest: &str,
    len: u64,
    body: ReqBody,
    bearer: Option<&str>,
) -> Result<(), BoxError> {
    let sep = if location.contains('?') { '&' } else { '?' };
    let uri = format!("{location}{sep}digest={}", digest.replace(':', "%3A"));
    let req = auth(conn.request(Method::PUT, &uri), bearer)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len.to_string())
        .body(body)?;
    let (status, _, body) = conn.fetch(req).await?;
    expect_status("PUT upload", status, StatusCode::CREATED, &body)?;
    Ok(())
}

/// Uploads `data` as a blob of `repo`.
pub async fn put_bytes(
    conn: &mut Conn,
    repo: &str,
    data: &Bytes,
    bearer: Option<&str>,
) -> Result<(), BoxError> {
    let location = start_upload(conn, repo, bearer).await?;
    let body = ReqBody::Full(Some(data.clone()));
    finish_upload(
        conn,
        &location,
        &digest(data),
        data.len() as u64,
        body,
        bearer,
    )
    .await
}

/// Uploads a pattern blob of `repo`.
pub async fn put_blob(
    conn: &mut Conn,
    repo: &str,
    blob: &Blob,
    bearer: Option<&str>,
) -> Result<(), BoxError> {
    let location = start_upload(conn, repo, bearer).await?;
    let body = ReqBody::pattern(blob.pattern.clone(), blob.len);
    finish_upload(conn, &location, &blob.digest, blob.len, body, bearer).await
}

/// Uploads a pattern blob of `repo` the way docker and podman push a layer:
/// POST, one PATCH with the whole blob chunked in 32 KiB chunks, then a PUT
/// with the digest and no body.
pub async fn patch_blob(
    conn: &mut Conn,
    repo: &str,
    blob: &Blob,
    bearer: Option<&str>,
) -> Result<(), BoxError> {
    let location = start_upload(conn, repo, bearer).await?;
    let req = auth(conn.request(Method::PATCH, &location), bearer)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(ReqBody::chunked(blob.pattern.clone(), blob.len))?;
    let (status, headers, body) = conn.fetch(req).await?;
    expect_status("PATCH upload", status, StatusCode::ACCEPTED, &body)?;
    let location = upload_location(&headers)?;
    finish_upload(conn, &location, &blob.digest, 0, ReqBody::Empty, bearer).await
}

/// Pushes the small image as `repo:tag`.
pub async fn push_small(
    conn: &mut Conn,
    repo: &str,
    tag: &str,
    image: &SmallImage,
) -> Result<(), BoxError> {
    for blob in &image.blobs {
        put_bytes(conn, repo, blob, None).await?;
    }
    let req = conn
        .request(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
        .header(header::CONTENT_TYPE, MANIFEST_TYPE)
        .body(ReqBody::Full(Some(image.manifest.clone())))?;
    let (status, _, body) = conn.fetch(req).await?;
    expect_status("PUT manifest", status, StatusCode::CREATED, &body)?;
    Ok(())
}

/// Checks the pattern and digest code against known values.
pub fn self_check() {
    assert_eq!(
        digest(b"abc"),
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let p = pattern(1);
    assert_eq!(p.len(), PATTERN_LEN);
    assert_eq!(pattern(1), p, "the pattern is deterministic");
    // A length that is not a multiple of the pattern: digest of the bytes.
    let mut bytes = p.to_vec();
    bytes.extend_from_slice(&p[..100]);
    assert_eq!(pattern_digest(&p, bytes.len() as u64), digest(&bytes));
    // The docker-style body: no length for hyper (so it goes chunked), in
    // 32 KiB slices that add up to the blob.
    let mut body = ReqBody::chunked(p.clone(), 100_000);
    assert_eq!(http_body::Body::size_hint(&body).exact(), None);
    let mut lens = Vec::new();
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    while let std::task::Poll::Ready(Some(Ok(frame))) =
        http_body::Body::poll_frame(std::pin::Pin::new(&mut body), &mut cx)
    {
        lens.push(frame.into_data().map_or(0, |d| d.len()));
    }
    assert_eq!(lens, vec![32768, 32768, 32768, 1696]);
    assert_eq!(
        http_body::Body::size_hint(&ReqBody::pattern(p, 5)).exact(),
        Some(5)
    );
}
