//! The one table of registry error codes (code, HTTP status, message), and
//! the single place where errors become responses. Handlers return
//! `ApiError`; the detail goes to the log, the client gets the code, the
//! table's message and only the detail that is safe and useful to it.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use super::body::{Body, full};
use super::challenge::Challenge;

/// Registry error codes (distribution `registry/api/errcode` and the OCI
/// distribution spec), plus the few the gate itself needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthorized,
    Denied,
    NameInvalid,
    NameUnknown,
    TagInvalid,
    ManifestUnknown,
    BlobUnknown,
    DigestInvalid,
    PaginationNumberInvalid,
    Unsupported,
    NotFound,
    BadRequest,
    HeadTooLarge,
    TooManyRequests,
    ManifestTooLarge,
    Unavailable,
    UpstreamError,
    /// The upstream answered, but not with what the gate asked for (an
    /// error status, or a body it cannot use): never "could not be reached".
    UpstreamRefused,
    UpstreamTimeout,
    Internal,
}

impl ErrorCode {
    /// (code, status, message): the whole table.
    pub fn info(self) -> (&'static str, StatusCode, &'static str) {
        use ErrorCode::*;
        match self {
            Unauthorized => (
                "UNAUTHORIZED",
                StatusCode::UNAUTHORIZED,
                "authentication required",
            ),
            Denied => (
                "DENIED",
                StatusCode::FORBIDDEN,
                "requested access to the resource is denied",
            ),
            NameInvalid => (
                "NAME_INVALID",
                StatusCode::BAD_REQUEST,
                "invalid repository name",
            ),
            NameUnknown => (
                "NAME_UNKNOWN",
                StatusCode::NOT_FOUND,
                "repository name not known to registry",
            ),
            ManifestUnknown => (
                "MANIFEST_UNKNOWN",
                StatusCode::NOT_FOUND,
                "manifest unknown",
            ),
            BlobUnknown => (
                "BLOB_UNKNOWN",
                StatusCode::NOT_FOUND,
                "blob unknown to registry",
            ),
            PaginationNumberInvalid => (
                "PAGINATION_NUMBER_INVALID",
                StatusCode::BAD_REQUEST,
                "invalid number of results requested",
            ),
            TagInvalid => (
                "TAG_INVALID",
                StatusCode::BAD_REQUEST,
                "invalid tag or reference",
            ),
            DigestInvalid => ("DIGEST_INVALID", StatusCode::BAD_REQUEST, "invalid digest"),
            Unsupported => (
                "UNSUPPORTED",
                StatusCode::METHOD_NOT_ALLOWED,
                "the operation is unsupported",
            ),
            NotFound => ("NOT_FOUND", StatusCode::NOT_FOUND, "no such endpoint"),
            BadRequest => ("BAD_REQUEST", StatusCode::BAD_REQUEST, "malformed request"),
            HeadTooLarge => (
                "BAD_REQUEST",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large",
            ),
            TooManyRequests => (
                "TOOMANYREQUESTS",
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests",
            ),
            ManifestTooLarge => (
                "MANIFEST_INVALID",
                StatusCode::PAYLOAD_TOO_LARGE,
                "manifest too large",
            ),
            Unavailable => (
                "UNAVAILABLE",
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable",
            ),
            UpstreamError => (
                "UNAVAILABLE",
                StatusCode::BAD_GATEWAY,
                "the upstream registry could not be reached",
            ),
            UpstreamRefused => (
                "UNAVAILABLE",
                StatusCode::BAD_GATEWAY,
                "the upstream registry refused the request or answered unusably",
            ),
            UpstreamTimeout => (
                "UNAVAILABLE",
                StatusCode::GATEWAY_TIMEOUT,
                "the upstream registry did not answer in time",
            ),
            Internal => (
                "UNKNOWN",
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            ),
        }
    }
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    /// Told to the client; must hold no secret.
    pub detail: Option<String>,
    /// Rendered as `WWW-Authenticate` on 401s (boxed: errors travel in
    /// `Result`s on every path, and stay small that way).
    pub challenge: Option<Box<Challenge>>,
    /// Rendered as `Retry-After` on 429s: whole seconds, at least 1.
    pub retry_after_secs: Option<u32>,
    /// The account a refused request was made as, for the access log only.
    pub account: Option<String>,
    /// Replaces the table's message: for refusals whose reason clients must
    /// show (docker and skopeo print `message`, not `detail`). Must hold no secret.
    pub message: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode) -> Self {
        ApiError {
            code,
            detail: None,
            challenge: None,
            retry_after_secs: None,
            account: None,
            message: None,
        }
    }

    pub fn detail(code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            detail: Some(detail.into()),
            challenge: None,
            retry_after_secs: None,
            account: None,
            message: None,
        }
    }

    /// 429: come back after `retry_after`.
    pub fn too_many_requests(retry_after: Duration, detail: impl Into<String>) -> Self {
        // Whole seconds, rounded up: never tell a client to retry early.
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        ApiError {
            retry_after_secs: Some(u32::try_from(secs).unwrap_or(u32::MAX).max(1)),
            ..ApiError::detail(ErrorCode::TooManyRequests, detail)
        }
    }

    pub fn challenge(challenge: Challenge) -> Self {
        ApiError {
            code: ErrorCode::Unauthorized,
            detail: None,
            challenge: Some(Box::new(challenge)),
            retry_after_secs: None,
            account: None,
            message: None,
        }
    }

    /// A refusal with its own message instead of the table's (see
    /// [`ApiError::message`]); the detail says the same.
    pub fn explained(code: ErrorCode, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError {
            message: Some(message.clone()),
            ..ApiError::detail(code, message)
        }
    }

    /// Names the account in the access log line (never told the client).
    pub fn for_account(mut self, account: &str) -> Self {
        self.account = Some(account.to_owned()).filter(|a| !a.is_empty());
        self
    }

    pub fn into_response(self) -> Response<Body> {
        let (code, status, message) = self.code.info();
        let message = self.message.as_deref().unwrap_or(message);
        let mut entry = serde_json::json!({ "code": code, "message": message });
        if let Some(detail) = &self.detail {
            entry["detail"] = detail.as_str().into();
        }
        let body = serde_json::json!({ "errors": [entry] }).to_string();
        let mut resp = json_response(status, body);
        if let Some(challenge) = &self.challenge {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge.header_value());
        }
        if self.code == ErrorCode::TooManyRequests {
            let secs = self.retry_after_secs.unwrap_or(1);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A JSON response with the registry's API version header.
pub fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

/// `Docker-Distribution-API-Version`, which docker checks on `/v2/`.
pub const API_VERSION: &str = "docker-distribution-api-version";

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_the_registry_envelope() {
        let resp = ApiError::detail(ErrorCode::NameInvalid, "bad name").into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()[API_VERSION], "registry/2.0");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "NAME_INVALID");
        assert_eq!(v["errors"][0]["detail"], "bad name");
    }

    #[tokio::test]
    async fn an_explained_refusal_carries_its_own_message() {
        let resp = ApiError::explained(ErrorCode::Denied, "tag v1 is immutable").into_response();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "DENIED");
        assert_eq!(v["errors"][0]["message"], "tag v1 is immutable");
    }

    #[test]
    fn retry_after_rounds_up() {
        for (wait, want) in [
            (1500, "2"),
            (1000, "1"),
            (1, "1"),
            (0, "1"),
            (299_001, "300"),
        ] {
            let resp = ApiError::too_many_requests(Duration::from_millis(wait), "slow down")
                .into_response();
            assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(resp.headers()[header::RETRY_AFTER], want, "{wait}");
        }
    }
}
