//! Spec-exact answers: the same request sent to the upstream registry
//! (Debian's docker-registry, distribution 2.8) directly and through the
//! gate, with a token that may pull, push and delete, must get the same
//! status and error code, except where the gate deliberately differs (each
//! listed with its reason here and in docs/clients.md).

use crate::harness::http::{RawBody, RawResponse, client, raw_send, token};
use crate::harness::{Gate, Registry};

const ADMIN: (&str, &str) = ("admin", "badmin");
/// A digest no blob or manifest has.
const ABSENT: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// What the gate must answer, compared with the upstream's answer.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// The same status and the same error code (or neither has one).
    Same,
    /// The upstream's router answers in plain text (no error code): the
    /// same status, and the gate's JSON envelope carries this code.
    Router(&'static str),
    /// A deliberate difference: the upstream answers `upstream`, the gate
    /// (`status`, `code`), for the reason given (docs/clients.md).
    Differs {
        upstream: u16,
        status: u16,
        code: &'static str,
        why: &'static str,
    },
}

struct Case {
    method: &'static str,
    /// Path and query, byte for byte.
    target: String,
    headers: Vec<(&'static str, &'static str)>,
    want: Want,
}

fn case(method: &'static str, target: impl Into<String>, want: Want) -> Case {
    Case {
        method,
        target: target.into(),
        headers: Vec::new(),
        want,
    }
}

/// The first error code of a registry error body, if it is one.
fn code(resp: &RawResponse) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&resp.body).ok()?;
    v["errors"][0]["code"].as_str().map(str::to_owned)
}

const SECURITY: &str = "security";

fn cases(layer: &str) -> Vec<Case> {
    use Want::*;
    let long_tag = "t".repeat(129);
    let mut cases = Vec::new();
    // Manifests: every method × malformed references, an unknown tag, digest
    // and repository.
    for m in ["GET", "HEAD", "PUT", "DELETE"] {
        for reference in [".INVALID", "-x", "x=", &long_tag, "SHA256:abc", "a:"] {
            cases.push(case(
                m,
                format!("/v2/fid/app/manifests/{reference}"),
                Router("MANIFEST_UNKNOWN"),
            ));
        }
        cases.push(case(
            m,
            "/v2/fid/App/manifests/latest",
            Router("NAME_UNKNOWN"),
        ));
        cases.push(case(
            m,
            "/v2/fid/a__-b/manifests/latest",
            Router("NAME_UNKNOWN"),
        ));
        if m != "PUT" {
            cases.push(case(m, "/v2/fid/app/manifests/nope", Same));
            cases.push(case(m, format!("/v2/fid/app/manifests/{ABSENT}"), Same));
            cases.push(case(m, "/v2/fid/none/manifests/latest", Same));
        }
    }
    // Digest syntax with a wrong length: distribution 2.8 takes it for a
    // tag (GET, HEAD: 500 with its storage path in the detail).
    for m in ["GET", "HEAD"] {
        cases.push(case(
            m,
            "/v2/fid/app/manifests/sha256:abc",
            Differs {
                upstream: 500,
                status: 400,
                code: "DIGEST_INVALID",
                why: "distribution reads it as a tag and fails",
            },
        ));
    }
    cases.push(case(
        "PUT",
        "/v2/fid/app/manifests/sha256:abc",
        Differs {
            upstream: 400,
            status: 400,
            code: "DIGEST_INVALID",
            why: "distribution tries to write it as a tag",
        },
    ));
    cases.push(case("DELETE", "/v2/fid/app/manifests/sha256:abc", Same));
    // Blobs.
    for m in ["GET", "HEAD", "DELETE"] {
        for digest in ["latest", "SHA256:abc", "sha256:", "x:a.b"] {
            cases.push(case(
                m,
                format!("/v2/fid/app/blobs/{digest}"),
                Router("BLOB_UNKNOWN"),
            ));
        }
        cases.push(case(m, "/v2/fid/app/blobs/sha256:abc", Same));
        cases.push(case(m, format!("/v2/fid/app/blobs/{ABSENT}"), Same));
        cases.push(case(m, format!("/v2/fid/none/blobs/{ABSENT}"), Same));
        cases.push(case(
            m,
            format!("/v2/fid/App/blobs/{ABSENT}"),
            Router("NAME_UNKNOWN"),
        ));
        // distribution's router also takes a first component that looks like
        // a host name (upper case, `:port`); the spec's grammar does not.
        cases.push(case(
            m,
            format!("/v2/Fid/app/blobs/{ABSENT}"),
            Differs {
                upstream: 404,
                status: 404,
                code: "NAME_UNKNOWN",
                why: "the spec's name grammar",
            },
        ));
    }
    // Tag lists: the registry reads `n` and `last`.
    for q in ["", "?n=0", "?n=abc", "?n=1", "?last=-x", "?n=1&n=2"] {
        cases.push(case("GET", format!("/v2/fid/app/tags/list{q}"), Same));
        cases.push(case("HEAD", format!("/v2/fid/app/tags/list{q}"), Same));
    }
    cases.push(case("GET", "/v2/fid/none/tags/list", Same));
    cases.push(case("GET", "/v2/-fid/tags/list", Router("NAME_UNKNOWN")));
    // The catalog (the gate serves it, filtered, with distribution's rules).
    for q in [
        "",
        "?n=0",
        "?n=abc",
        "?n=-1",
        "?n=1000",
        "?n=1001",
        "?last=A",
        "?n=1&n=5000",
    ] {
        cases.push(case("GET", format!("/v2/_catalog{q}"), Same));
    }
    cases.push(case("HEAD", "/v2/_catalog", Router("UNSUPPORTED")));
    // Upload starts: whatever cannot mount is an ordinary upload session.
    for q in [
        String::new(),
        format!("?mount={layer}"),
        "?from=fid/src".to_owned(),
        "?mount=latest&from=fid/src".to_owned(),
        format!("?mount={layer}&from=fid/Src"),
        format!("?mount={layer}&from="),
        format!("?mount={layer}&from=fid/src"),
        format!("?mount={ABSENT}&from=fid/src"),
    ] {
        cases.push(case("POST", format!("/v2/fid/app/blobs/uploads/{q}"), Same));
    }
    cases.push(case("POST", "/v2/fid/app/blobs/uploads", Same));
    cases.push(case(
        "POST",
        "/v2/fid/app/blobs/uploads/?digest=sha256:abc",
        Differs {
            upstream: 202,
            status: 400,
            code: "DIGEST_INVALID",
            why: "distribution 2.8 ignores digest on POST; the spec's monolithic upload checks it",
        },
    ));
    cases.push(case(
        "POST",
        format!("/v2/fid/app/blobs/uploads/?mount={layer}&from=fid/src&from=fid/app"),
        Differs {
            upstream: 201,
            status: 400,
            code: "BAD_REQUEST",
            why: SECURITY,
        },
    ));
    cases.push(Case {
        headers: vec![("Content-Type", "application/x-www-form-urlencoded")],
        ..case(
            "POST",
            "/v2/fid/app/blobs/uploads/",
            Differs {
                upstream: 202,
                status: 400,
                code: "BAD_REQUEST",
                why: SECURITY,
            },
        )
    });
    // Upload sessions that do not exist.
    for m in ["GET", "HEAD", "PATCH", "DELETE"] {
        cases.push(case(m, "/v2/fid/app/blobs/uploads/nonexistent", Same));
    }
    cases.push(case(
        "PUT",
        format!("/v2/fid/app/blobs/uploads/nonexistent?digest={ABSENT}"),
        Same,
    ));
    cases.push(case(
        "GET",
        "/v2/fid/app/blobs/uploads/a+b",
        Router("NOT_FOUND"),
    ));
    // Referrers (distribution 2.8 has no such API: 404 from its router).
    cases.push(case("GET", format!("/v2/fid/app/referrers/{ABSENT}"), Same));
    cases.push(case(
        "GET",
        "/v2/fid/app/referrers/latest",
        Router("MANIFEST_UNKNOWN"),
    ));
    cases.push(case(
        "GET",
        "/v2/fid/app/referrers/sha256:abc",
        Differs {
            upstream: 404,
            status: 400,
            code: "DIGEST_INVALID",
            why: "the spec's referrers API checks the digest",
        },
    ));
    // Methods and routes.
    cases.push(case(
        "POST",
        "/v2/fid/app/manifests/latest",
        Router("UNSUPPORTED"),
    ));
    cases.push(case(
        "PATCH",
        "/v2/fid/app/manifests/latest",
        Router("UNSUPPORTED"),
    ));
    cases.push(case(
        "PUT",
        format!("/v2/fid/app/blobs/{ABSENT}"),
        Router("UNSUPPORTED"),
    ));
    cases.push(case(
        "DELETE",
        "/v2/fid/app/tags/list",
        Router("UNSUPPORTED"),
    ));
    cases.push(case(
        "POST",
        "/v2/fid/app/manifests/.INVALID",
        Router("NOT_FOUND"),
    ));
    cases.push(case("GET", "/v2/fid/app/foo", Router("NOT_FOUND")));
    cases.push(case("GET", "/v2/fid", Router("NOT_FOUND")));
    for (m, target, upstream) in [
        ("OPTIONS", "/v2/fid/app/manifests/latest", 200),
        ("POST", "/v2/", 200),
        ("GET", "/v2/fid/app/blobs/uploads/", 404),
    ] {
        cases.push(case(
            m,
            target,
            Differs {
                upstream,
                status: 405,
                code: "UNSUPPORTED",
                why: "the gate serves the spec's methods only",
            },
        ));
    }
    // Paths and queries the registry would read otherwise than written.
    for (target, upstream, status, code) in [
        ("/v2/fid%2Fapp/tags/list", 200, 404, "NOT_FOUND"),
        ("/v2/fid/./app/tags/list", 301, 404, "NOT_FOUND"),
        ("/v2/fid/app/tags/list?a=b;c", 200, 400, "BAD_REQUEST"),
        ("/v2/fid/app/tags/list?a=%zz", 200, 400, "BAD_REQUEST"),
    ] {
        cases.push(case(
            "GET",
            target,
            Differs {
                upstream,
                status,
                code,
                why: SECURITY,
            },
        ));
    }
    cases
}

async fn send(addr: std::net::SocketAddr, c: &Case, bearer: Option<&str>) -> RawResponse {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = c.headers.clone();
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    raw_send(addr, c.method, &c.target, &headers, RawBody::Empty).await
}

/// Every case of the table; all mismatches reported at once.
#[tokio::test]
async fn gate_answers_what_the_registry_answers() {
    let registry = Registry::start().await;
    let gate = Gate::start(&registry.url(), &[]).await;
    registry.seed("fid/app", "v1").await;
    let src = registry.seed("fid/src", "v1").await;
    let layer = src.blobs[1].0.clone();
    let bearer = token(
        &gate,
        Some(ADMIN),
        &[
            "repository:fid/app:pull,push,delete",
            "repository:fid/none:pull,push,delete",
            "repository:fid/src:pull",
            "registry:catalog:*",
        ],
    )
    .await;

    let mut mismatches = Vec::new();
    let cases = cases(&layer);
    for c in &cases {
        let up = send(registry.addr, c, None).await;
        let via = send(gate.addr, c, Some(&bearer)).await;
        let (up_code, via_code) = (code(&up), code(&via));
        // HEAD answers have no body, so no code to compare.
        let head = c.method == "HEAD";
        let ok = match c.want {
            Want::Same => up.status == via.status && (head || up_code == via_code),
            Want::Router(want) => {
                up.status == via.status
                    && up_code.is_none()
                    && (head || via_code.as_deref() == Some(want))
            }
            Want::Differs {
                upstream,
                status,
                code,
                ..
            } => {
                up.status == upstream
                    && via.status == status
                    && (head || via_code.as_deref() == Some(code))
            }
        };
        if !ok {
            let why = match c.want {
                Want::Differs { why, .. } => why,
                _ => "",
            };
            mismatches.push(format!(
                "{} {}: upstream {} {:?}, gate {} {:?}, wanted {:?} {why}",
                c.method, c.target, up.status, up_code, via.status, via_code, c.want
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

/// The answers the gate gives itself come only once the caller may use the
/// repository: without a token, or with one for another repository, the
/// caller gets the challenge; and such requests never reach the upstream.
#[tokio::test]
async fn gate_answers_unroutable_references_only_after_the_permit() {
    let registry = Registry::start().await;
    let gate = Gate::start(&registry.url(), &[]).await;
    let other = token(&gate, Some(ADMIN), &["repository:fid/other:pull"]).await;
    let pull = token(&gate, Some(("test", "123")), &["repository:fid/app:pull"]).await;
    let url = format!("{}/v2/fid/app/manifests/.INVALID", gate.url());
    let anonymous = client().get(&url).send().await.expect("GET");
    assert_eq!(anonymous.status(), 401);
    let wrong = client()
        .get(&url)
        .bearer_auth(&other)
        .send()
        .await
        .expect("GET");
    assert_eq!(wrong.status(), 401);
    crate::harness::http::assert_denied(&wrong, "insufficient_scope");
    let allowed = client()
        .get(&url)
        .bearer_auth(&pull)
        .send()
        .await
        .expect("GET");
    assert_eq!(allowed.status(), 404);
    let body: serde_json::Value = allowed.json().await.expect("JSON");
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN", "{body}");
    // A pull-only caller may not delete: the challenge, not the 404.
    let delete = client()
        .delete(&url)
        .bearer_auth(&pull)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(delete.status(), 401);
    let seen = registry.requests_settled().await;
    assert!(
        !seen.iter().any(|r| r.contains("/v2/fid/")),
        "forwarded: {seen:?}"
    );
}

/// `mount` without a valid `from` starts an ordinary upload session, and
/// the registry never sees the `mount` (an OCI registry may mount a blob
/// found in any repository when `from` is missing).
#[tokio::test]
async fn mount_without_from_starts_an_ordinary_upload_without_the_mount() {
    let registry = Registry::start().await;
    let gate = Gate::start(&registry.url(), &[]).await;
    let secret = registry.seed("fid/secret", "v1").await;
    let layer = secret.blobs[1].0.clone();
    let bearer = token(&gate, Some(ADMIN), &["repository:fid/app:pull,push"]).await;
    for query in [
        format!("mount={layer}"),
        format!("mount={layer}&from=fid/Secret"),
        format!("x=1&mount={layer}&from="),
    ] {
        let resp = client()
            .post(format!("{}/v2/fid/app/blobs/uploads/?{query}", gate.url()))
            .bearer_auth(&bearer)
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status(), 202, "{query}");
        assert!(resp.headers().contains_key("docker-upload-uuid"), "{query}");
    }
    let seen = registry.requests_settled().await;
    let posts: Vec<&String> = seen
        .iter()
        .filter(|r| r.starts_with("POST /v2/fid/app/"))
        .collect();
    assert_eq!(
        posts,
        [
            "POST /v2/fid/app/blobs/uploads/",
            "POST /v2/fid/app/blobs/uploads/",
            "POST /v2/fid/app/blobs/uploads/?x=1",
        ],
        "{seen:?}"
    );
    let mounted = client()
        .head(format!("{}/v2/fid/app/blobs/{layer}", registry.url()))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(mounted.status(), 404, "the blob was mounted");
}
