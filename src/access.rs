//! Request classification: (method, path, query) -> the access a registry
//! request needs. INTERFACE STUB: to be implemented.

use http::Method;

use crate::scope::Scope;

/// Which distribution API endpoint a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET|HEAD /v2/`: any valid token, no scope.
    Base,
    /// `GET /v2/_catalog`.
    Catalog,
    /// `GET /v2/<name>/tags/list`.
    Tags,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest,
    /// `/v2/<name>/blobs/<digest>`.
    Blob,
    /// `POST /v2/<name>/blobs/uploads/` (incl. cross-repository mount).
    UploadStart,
    /// `/v2/<name>/blobs/uploads/<uuid>`.
    Upload,
    /// `GET /v2/<name>/referrers/<digest>`.
    Referrers,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Base => "base",
            Endpoint::Catalog => "catalog",
            Endpoint::Tags => "tags",
            Endpoint::Manifest => "manifest",
            Endpoint::Blob => "blob",
            Endpoint::UploadStart => "upload_start",
            Endpoint::Upload => "upload",
            Endpoint::Referrers => "referrers",
        }
    }
}

/// What a request needs before it may be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredAccess {
    pub endpoint: Endpoint,
    /// The repository named in the path, if any.
    pub name: Option<String>,
    /// Every scope the token must cover; empty for `Endpoint::Base`.
    pub scopes: Vec<Scope>,
}

/// Why a request could not be classified. Every variant means "refuse, never forward".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    #[error("no such registry endpoint")]
    UnknownRoute,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("invalid repository name")]
    NameInvalid,
    #[error("invalid tag or reference")]
    ReferenceInvalid,
    #[error("invalid digest")]
    DigestInvalid,
    #[error("invalid query: {0}")]
    QueryInvalid(&'static str),
}

/// Classifies a request. `path` is the raw, still percent-encoded path of the
/// request URI; `query` the raw query string.
pub fn classify(
    _method: &Method,
    _path: &str,
    _query: Option<&str>,
) -> Result<RequiredAccess, ClassifyError> {
    Err(ClassifyError::UnknownRoute)
}
