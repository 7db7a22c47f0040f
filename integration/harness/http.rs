//! HTTP helpers: a reqwest client for ordinary requests, a raw HTTP/1.1
//! client for paths reqwest would normalize (`..`, `%2e%2e`), token
//! fetching, challenge and JWT parsing.

use super::Gate;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const SERVICE: &str = "Docker registry";

/// No proxy, no redirects followed (tests look at `Location` themselves).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// Like [`client`], trusting any server certificate (a test gate's
/// self-signed one).
pub fn client_accepting_any_certificate() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .danger_accept_invalid_certs(true)
        .build()
        .expect("reqwest client")
}

/// `GET /auth?service=..&scope=..` (scope repeated), Basic auth if given.
pub async fn request_token(
    gate: &Gate,
    creds: Option<(&str, &str)>,
    service: &str,
    scopes: &[&str],
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut query: Vec<(&str, &str)> = vec![("service", service)];
    query.extend(scopes.iter().map(|s| ("scope", *s)));
    query.extend_from_slice(extra);
    let mut req = client().get(format!("{}/auth", gate.url())).query(&query);
    if let Some((user, pass)) = creds {
        req = req.basic_auth(user, Some(pass));
    }
    req.send().await.expect("token request")
}

/// A token's `access` claim as `name:action,action` strings, in order.
pub fn access_of(token: &str) -> Vec<String> {
    let (_, claims) = jwt_parts(token);
    let access = claims["access"].as_array().expect("an access claim");
    access
        .iter()
        .map(|a| {
            let name = a["name"].as_str().expect("an access entry's name");
            let actions: Vec<&str> = a["actions"]
                .as_array()
                .expect("an access entry's actions")
                .iter()
                .map(|x| x.as_str().expect("an action"))
                .collect();
            format!("{name}:{}", actions.join(","))
        })
        .collect()
}

/// A token for `scopes` from the gate (asserts 200), as the JSON answer.
pub async fn token_response(gate: &Gate, creds: Option<(&str, &str)>, scopes: &[&str]) -> Value {
    let resp = request_token(gate, creds, SERVICE, scopes, &[]).await;
    json_ok(resp).await
}

/// The bearer token for `scopes` (asserts 200 and that `token` is there).
pub async fn token(gate: &Gate, creds: Option<(&str, &str)>, scopes: &[&str]) -> String {
    let body = token_response(gate, creds, scopes).await;
    body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {body}"))
        .to_string()
}

/// `POST /auth` with a form body (the OAuth2 flavour).
pub async fn post_token(gate: &Gate, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(format!("{}/auth", gate.url()))
        .form(form)
        .send()
        .await
        .expect("POST /auth")
}

/// Asserts 200 and returns the body as JSON.
pub async fn json_ok(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 200, "body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A request to the gate with `Authorization: Bearer`.
pub async fn bearer(method: reqwest::Method, url: &str, token: &str) -> reqwest::Response {
    client()
        .request(method, url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// The parameters of a `WWW-Authenticate: Bearer k="v",...` header.
/// Panics if the header is missing or not a Bearer challenge.
pub fn challenge(resp: &reqwest::Response) -> BTreeMap<String, String> {
    let header = resp
        .headers()
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("no WWW-Authenticate in {:?}", resp.headers()))
        .to_str()
        .expect("ascii header");
    parse_challenge(header)
}

pub fn parse_challenge(header: &str) -> BTreeMap<String, String> {
    let rest = header
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer challenge: {header}"));
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || *c == ' ') {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
        }
        params.insert(key.trim().to_string(), value);
    }
    params
}

#[test]
fn challenges_parse() {
    let p = parse_challenge(
        r#"Bearer realm="http://127.0.0.1:1/auth",service="Docker registry",scope="repository:a/b:pull,push",error="insufficient_scope""#,
    );
    assert_eq!(p["realm"], "http://127.0.0.1:1/auth");
    assert_eq!(p["service"], "Docker registry");
    assert_eq!(p["scope"], "repository:a/b:pull,push");
    assert_eq!(p["error"], "insufficient_scope");
    assert_eq!(p.len(), 4);
}

/// Asserts a 401 whose Bearer challenge carries `error="<error>"`.
pub fn assert_denied(resp: &reqwest::Response, error: &str) {
    assert_eq!(resp.status(), 401, "{} {:?}", resp.url(), resp.headers());
    let params = challenge(resp);
    assert_eq!(
        params.get("error").map(String::as_str),
        Some(error),
        "{params:?}"
    );
}

/// The parts of a JWT: (header, claims), decoded, signature not checked.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWS compact token: {token}");
    let decode = |s: &str| -> Value {
        let bytes = URL_SAFE_NO_PAD.decode(s).expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON")
    };
    (decode(parts[0]), decode(parts[1]))
}

/// The token with its claims replaced (signature kept: now invalid).
pub fn with_claims(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("JSON"));
    format!("{}.{payload}.{}", parts[0], parts[2])
}

/// The token with one signature byte altered (header and claims intact).
pub fn with_bad_signature(token: &str) -> String {
    let (rest, sig) = token.rsplit_once('.').expect("JWT");
    let mut bytes = URL_SAFE_NO_PAD.decode(sig).expect("base64url signature");
    bytes[0] ^= 0x01;
    format!("{rest}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// An HTTP response as read off the socket by [`raw_request`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `METHOD target HTTP/1.1` with `target` byte for byte as given
/// (no normalization), `Connection: close`, and reads the whole answer.
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    raw_send(addr, method, target, headers, RawBody::Empty).await
}

/// A request body for [`raw_send`], framed as given.
pub enum RawBody<'a> {
    /// `Content-Length: 0`.
    Empty,
    /// `Content-Length: N` and the bytes.
    Fixed(&'a [u8]),
    /// `Transfer-Encoding: chunked`, one chunk per slice.
    Chunked(&'a [&'a [u8]]),
}

/// Like [`raw_request`], with a body framed exactly as `body` says.
pub async fn raw_send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: RawBody<'_>,
) -> RawResponse {
    let framing = match &body {
        RawBody::Empty => "Content-Length: 0\r\n".to_string(),
        RawBody::Fixed(data) => format!("Content-Length: {}\r\n", data.len()),
        RawBody::Chunked(_) => "Transfer-Encoding: chunked\r\n".to_string(),
    };
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{framing}");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    match body {
        RawBody::Empty => {}
        RawBody::Fixed(data) => request.extend_from_slice(data),
        RawBody::Chunked(chunks) => {
            for chunk in chunks.iter().filter(|c| !c.is_empty()) {
                request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                request.extend_from_slice(chunk);
                request.extend_from_slice(b"\r\n");
            }
            request.extend_from_slice(b"0\r\n\r\n");
        }
    }
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(&request).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {target}: no complete answer within 15 s"))
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    parse_response(&buf).unwrap_or_else(|| {
        panic!(
            "{method} {target}: unparsable answer: {:?}",
            String::from_utf8_lossy(&buf)
        )
    })
}

/// Sends `request` byte for byte (the caller writes every header, and
/// `Connection: close`) and reads the whole answer.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let shown = String::from_utf8_lossy(&request[..request.len().min(200)]).into_owned();
    let buf = tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .unwrap_or_else(|_| panic!("{shown}: no complete answer within 15 s"))
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    parse_response(&buf).unwrap_or_else(|| {
        panic!(
            "{shown}: unparsable answer: {:?}",
            String::from_utf8_lossy(&buf)
        )
    })
}

fn parse_response(buf: &[u8]) -> Option<RawResponse> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let raw_body = &buf[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body)?
    } else {
        raw_body.to_vec()
    };
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_field = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[test]
fn raw_responses_parse() {
    let r = parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n")
        .expect("parse");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), "{\"a\":1}");
}

/// Verifies an ES256 JWT against the public half of `private_pem` (PKCS#8),
/// with the example config's audience and issuer; returns the claims.
pub fn verify_es256(token: &str, private_pem: &str) -> Result<Value, String> {
    // jsonwebtoken's signatures come from the gate's provider (ring).
    registry_gate::token::crypto::install();
    let key_pair = rcgen::KeyPair::from_pem(private_pem).map_err(|e| format!("key: {e}"))?;
    let public = jsonwebtoken::DecodingKey::from_ec_pem(key_pair.public_key_pem().as_bytes())
        .map_err(|e| format!("public key: {e}"))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[SERVICE]);
    validation.set_issuer(&["registry-gate"]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "sub", "aud"]);
    jsonwebtoken::decode::<Value>(token, &public, &validation)
        .map(|data| data.claims)
        .map_err(|e| format!("verify: {e}"))
}

#[test]
fn es256_verification_accepts_only_the_signing_key() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "iss": "registry-gate", "sub": "u", "aud": SERVICE,
        "exp": now + 60, "nbf": now, "iat": now, "jti": "x", "access": [],
    });
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let pem = key.serialize_pem();
    registry_gate::token::crypto::install();
    let encoding = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).expect("encoding key");
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    let token = jsonwebtoken::encode(&header, &claims, &encoding).expect("sign");
    assert_eq!(verify_es256(&token, &pem).expect("valid"), claims);
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    assert!(verify_es256(&token, &other.serialize_pem()).is_err());
    assert!(verify_es256(&with_bad_signature(&token), &pem).is_err());
}
