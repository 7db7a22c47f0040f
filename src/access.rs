//! Request classification: (method, path, query) -> the access a registry
//! request needs.
//!
//! Everything here fails closed: a request that is not exactly one of the
//! distribution / OCI distribution-spec endpoints, spelled canonically, is
//! refused and never forwarded. In particular the path is the *raw* request
//! path and is never decoded or normalised: any `%`, empty segment (`//`),
//! dot segment, or byte outside the grammar is an error, so the registry
//! behind us can never see a different path than the one we authorised.
//!
//! Routing. Repository names contain `/`, so a route is recognised by its
//! fixed suffix, matched from the end of the path (`…/tags/list`,
//! `…/manifests/<reference>`, `…/blobs/<digest>`, `…/blobs/uploads/`,
//! `…/blobs/uploads/<uuid>`, `…/referrers/<digest>`); everything before the
//! suffix is the name. A name component may itself be `manifests` or `blobs`
//! (`/v2/foo/blobs/manifests/latest` is manifest `latest` of `foo/blobs`).
//! This parse is unambiguous: each suffix is told apart by the keyword in the
//! second-to-last segment, a tag or digest never contains `/`, an upload id
//! never contains `:` while a digest always does, and no name is `_catalog`.
//! The tests check this against an independent regex oracle.
//!
//! Queries. Only the parameters that change what a request may do are
//! decoded: `mount`/`from` (cross-repository mount needs pull on `from`),
//! and, for validation only, `digest`. See [`is_form_content_type`] for the
//! one place (a form-encoded request body) where such parameters could reach
//! the registry without passing here.
//!
//! Refusing versus answering. What cannot be classified safely is refused
//! before any token is looked at ([`ClassifyError`]). A request that names a
//! valid repository but a reference or digest no registry route accepts
//! (`/v2/a/manifests/.INVALID`) is classified all the same and comes back as
//! [`ClassifyError::AfterPermit`]: it is never forwarded, but once the caller
//! holds the access it needs, the gate answers what the registry would (404
//! `MANIFEST_UNKNOWN`...). `docs/clients.md` lists where the answers still
//! differ from distribution's, and why.

use std::borrow::Cow;

use http::Method;

use crate::scope::{self, Action, Scope};

/// Longest repository name (distribution's limit).
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag: one leading character and up to 127 more.
pub const MAX_TAG_LEN: usize = 128;
/// Longest digest we accept (`sha512:` + 128 hex is 135).
pub const MAX_DIGEST_LEN: usize = 256;
/// Longest upload session id.
pub const MAX_UPLOAD_ID_LEN: usize = 256;
/// Longest raw query string.
pub const MAX_QUERY_LEN: usize = 8 * 1024;
/// Longest raw path; the longest valid one is well below (`/v2/` + name +
/// `/blobs/uploads/` + upload id).
const MAX_PATH_LEN: usize = 1024;

/// Which distribution API endpoint a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET|HEAD /v2/`: any valid token, no scope.
    Base,
    /// `GET /v2/_catalog`.
    Catalog,
    /// `GET|HEAD /v2/<name>/tags/list`.
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

    /// The methods this endpoint serves; anything else is
    /// [`ClassifyError::MethodNotAllowed`].
    pub fn methods(self) -> &'static [Method] {
        match self {
            Endpoint::Base | Endpoint::Tags => &[Method::GET, Method::HEAD],
            Endpoint::Catalog | Endpoint::Referrers => &[Method::GET],
            Endpoint::Manifest => &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE],
            Endpoint::Blob => &[Method::GET, Method::HEAD, Method::DELETE],
            Endpoint::UploadStart => &[Method::POST],
            Endpoint::Upload => &[
                Method::GET,
                Method::HEAD,
                Method::PATCH,
                Method::PUT,
                Method::DELETE,
            ],
        }
    }

    /// True when this endpoint serves `method`.
    pub fn allows(self, method: &Method) -> bool {
        self.methods().contains(method)
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
    /// The query to forward instead of the request's, when the gate drops
    /// parameters: an upload start whose `mount`/`from` are not a valid
    /// pair goes on as an ordinary upload session, without them.
    pub forward_query: Option<String>,
}

/// What the gate answers itself, after the permit, for a request it
/// classified but never forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Answer {
    /// The reference is neither a tag nor a digest: no such manifest can
    /// exist (distribution's router answers 404).
    #[error("no manifest can have this reference")]
    ManifestUnknown,
    /// The digest of a blob is not a digest: no such blob can exist.
    #[error("no blob can have this digest")]
    BlobUnknown,
    /// Digest syntax with a wrong length (`sha256:abc`).
    #[error("invalid digest")]
    DigestInvalid,
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
    /// The `digest` query parameter is not a digest.
    #[error("invalid digest")]
    DigestInvalid,
    #[error("invalid query: {0}")]
    QueryInvalid(&'static str),
    /// Classified, never forwarded: the caller needs `access`, and then
    /// the gate answers `answer` itself. Boxed: errors stay small.
    #[error("{answer}")]
    AfterPermit {
        access: Box<RequiredAccess>,
        answer: Answer,
    },
}

/// Classifies a request. `path` is the raw, still percent-encoded path of the
/// request URI; `query` the raw query string.
///
/// Errors, in the order they are checked: a path that is not a canonical
/// registry route is `UnknownRoute` (or `NameInvalid` when only the name is
/// bad); a method the endpoint does not serve is `MethodNotAllowed`; a bad
/// query is `QueryInvalid` (`DigestInvalid` for a bad `digest`); last, a
/// reference or digest in the path that no route accepts is `AfterPermit`.
pub fn classify(
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Result<RequiredAccess, ClassifyError> {
    let analysis = analyze(method, path, query)?;
    match analysis.answer {
        None => Ok(analysis.required_access()),
        Some(answer) => Err(ClassifyError::AfterPermit {
            access: Box::new(analysis.required_access()),
            answer,
        }),
    }
}

/// The actions a method needs on the repository it addresses. This mirrors
/// distribution's `appendAccessRecords` (registry/handlers/app.go) and is the
/// only place that maps methods to actions.
fn method_actions(method: &Method) -> Option<&'static [Action]> {
    match *method {
        // Reads: fetch a manifest, blob, tag list, referrers, upload status.
        Method::GET | Method::HEAD => Some(&[Action::Pull]),
        // Writes: start/continue/finish an upload, put a manifest. Pushing
        // implies pulling (the client reads back what it wrote, and a mount
        // reads a blob into the repository).
        Method::POST | Method::PUT | Method::PATCH => Some(&[Action::Pull, Action::Push]),
        // Deleting a manifest or blob, or cancelling an upload.
        Method::DELETE => Some(&[Action::Delete]),
        // OPTIONS, TRACE, CONNECT and extension methods: nothing serves them.
        _ => None,
    }
}

/// A parsed path: the endpoint and the pieces the path names. Borrowed from
/// the path, which has been validated as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Base,
    Catalog,
    Tags { name: &'a str },
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    UploadStart { name: &'a str },
    Upload { name: &'a str, id: &'a str },
    Referrers { name: &'a str, digest: &'a str },
}

impl<'a> Route<'a> {
    fn endpoint(self) -> Endpoint {
        match self {
            Route::Base => Endpoint::Base,
            Route::Catalog => Endpoint::Catalog,
            Route::Tags { .. } => Endpoint::Tags,
            Route::Manifest { .. } => Endpoint::Manifest,
            Route::Blob { .. } => Endpoint::Blob,
            Route::UploadStart { .. } => Endpoint::UploadStart,
            Route::Upload { .. } => Endpoint::Upload,
            Route::Referrers { .. } => Endpoint::Referrers,
        }
    }

    fn name(self) -> Option<&'a str> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. } => Some(name),
        }
    }
}

/// A classified request, with everything needed to rebuild it canonically.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Analysis<'a> {
    route: Route<'a>,
    /// What the method needs on the named repository.
    actions: &'static [Action],
    /// A cross-repository mount: (`mount` digest, `from` repository).
    mount: Option<(Cow<'a, str>, Cow<'a, str>)>,
    /// See [`RequiredAccess::forward_query`].
    forward_query: Option<String>,
    /// See [`ClassifyError::AfterPermit`].
    answer: Option<Answer>,
}

impl Analysis<'_> {
    fn required_access(&self) -> RequiredAccess {
        let endpoint = self.route.endpoint();
        match self.route.name() {
            None => RequiredAccess {
                endpoint,
                name: None,
                scopes: match self.route {
                    Route::Catalog => vec![Scope::catalog()],
                    _ => Vec::new(),
                },
                forward_query: None,
            },
            Some(name) => {
                let mut scopes = vec![Scope::repository(name, self.actions.iter().copied())];
                if let Some((_, from)) = &self.mount {
                    // Mounting a blob reads it from the source repository.
                    scopes.push(Scope::repository(from, [Action::Pull]));
                }
                RequiredAccess {
                    endpoint,
                    name: Some(name.to_owned()),
                    scopes: scope::merge(scopes),
                    forward_query: self.forward_query.clone(),
                }
            }
        }
    }
}

fn analyze<'a>(
    method: &Method,
    path: &'a str,
    query: Option<&'a str>,
) -> Result<Analysis<'a>, ClassifyError> {
    let route = parse_route(path)?;
    let endpoint = route.endpoint();
    if !endpoint.allows(method) {
        // distribution's router matches the reference before the method:
        // a path no route accepts is 404 whatever the method.
        return Err(match check_reference(route) {
            Ok(()) => ClassifyError::MethodNotAllowed,
            Err(_) => ClassifyError::UnknownRoute,
        });
    }
    let actions = match endpoint {
        // Not repository endpoints: their access does not depend on the method.
        Endpoint::Base | Endpoint::Catalog => &[][..],
        _ => method_actions(method).ok_or(ClassifyError::MethodNotAllowed)?,
    };
    check_raw_query(query)?;
    let mut mount = None;
    let mut forward_query = None;
    match route {
        Route::UploadStart { .. } => {
            let p = Params::parse(query)?;
            p.check_digest()?;
            match (p.mount, p.from) {
                (Some(digest), Some(from)) if is_valid_digest(&digest) && is_valid_name(&from) => {
                    mount = Some((digest, from))
                }
                (None, None) => {}
                // Anything else cannot mount: a registry that cannot mount
                // starts an ordinary upload session (202; distribution-spec
                // "Mounting a blob from another repository"), and so does
                // the gate, forwarding the POST without `mount` and `from`.
                // Never with them: without `from`, an OCI registry may look
                // the blob up in any repository ("automatic content
                // discovery"), and an invalid `from` is a repository the
                // token was never checked for.
                _ => forward_query = Some(without_mount(query.unwrap_or(""))),
            }
        }
        Route::Upload { .. } => Params::parse(query)?.check_digest()?,
        // The catalog's `n` and `last` are read by the gate itself
        // (http/catalog.rs), the tag list's by the registry within the one
        // repository the token covers: not access decisions.
        Route::Base
        | Route::Catalog
        | Route::Tags { .. }
        | Route::Manifest { .. }
        | Route::Blob { .. }
        | Route::Referrers { .. } => {}
    }
    Ok(Analysis {
        route,
        actions,
        mount,
        forward_query,
        answer: check_reference(route).err(),
    })
}

/// `query` without its `mount` and `from` pairs (keys compared decoded, as
/// the registry reads them; the raw query is already checked).
fn without_mount(query: &str) -> String {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !form_urlencoded::parse(key.as_bytes()).any(|(k, _)| k == "mount" || k == "from")
        })
        .collect();
    kept.join("&")
}

/// Parses and validates the raw path: the route, with a valid name. The
/// reference or digest is checked apart ([`check_reference`]).
fn parse_route(path: &str) -> Result<Route<'_>, ClassifyError> {
    use ClassifyError::{NameInvalid, UnknownRoute};

    if path == "/v2/" || path == "/v2" {
        return Ok(Route::Base);
    }
    let rest = path.strip_prefix("/v2/").ok_or(UnknownRoute)?;
    if rest.len() > MAX_PATH_LEN || !rest.bytes().all(is_path_byte) {
        return Err(UnknownRoute);
    }
    // No empty segment except a final one (the `/` of `blobs/uploads/`), no
    // dot segments anywhere.
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if (seg.is_empty() && !last) || seg == "." || seg == ".." {
            return Err(UnknownRoute);
        }
    }
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }

    let (head, last) = rest.rsplit_once('/').ok_or(UnknownRoute)?;
    let route = if last.is_empty() {
        // `/v2/<name>/blobs/uploads/`
        let name = head.strip_suffix("/blobs/uploads").ok_or(UnknownRoute)?;
        Route::UploadStart { name }
    } else {
        let (name, keyword) = head.rsplit_once('/').ok_or(UnknownRoute)?;
        match (keyword, last) {
            ("tags", "list") => Route::Tags { name },
            ("manifests", reference) => Route::Manifest { name, reference },
            // Also tolerated without the trailing slash.
            ("blobs", "uploads") => Route::UploadStart { name },
            ("blobs", digest) => Route::Blob { name, digest },
            ("uploads", id) => Route::Upload {
                name: name.strip_suffix("/blobs").ok_or(UnknownRoute)?,
                id,
            },
            ("referrers", digest) => Route::Referrers { name, digest },
            _ => return Err(UnknownRoute),
        }
    };

    require(route.name().is_some_and(is_valid_name), NameInvalid)?;
    if let Route::Upload { id, .. } = route {
        require(is_valid_upload_id(id), UnknownRoute)?;
    }
    Ok(route)
}

/// The reference or digest a route names: Err when no registry route
/// accepts it (distribution answers such paths 404 from its router), or
/// when it has digest syntax with the wrong length (400 `DIGEST_INVALID`).
fn check_reference(route: Route<'_>) -> Result<(), Answer> {
    let digest = |d: &str, unknown| {
        if is_valid_digest(d) {
            Ok(())
        } else if is_digest_syntax(d) {
            Err(Answer::DigestInvalid)
        } else {
            Err(unknown)
        }
    };
    match route {
        Route::Manifest { reference, .. } if reference.contains(':') => {
            digest(reference, Answer::ManifestUnknown)
        }
        Route::Manifest { reference, .. } => {
            require(is_valid_tag(reference), Answer::ManifestUnknown)
        }
        Route::Blob { digest: d, .. } => digest(d, Answer::BlobUnknown),
        Route::Referrers { digest: d, .. } => digest(d, Answer::ManifestUnknown),
        Route::Base
        | Route::Catalog
        | Route::Tags { .. }
        | Route::UploadStart { .. }
        | Route::Upload { .. } => Ok(()),
    }
}

fn require<E>(ok: bool, otherwise: E) -> Result<(), E> {
    if ok { Ok(()) } else { Err(otherwise) }
}

/// Bytes that can occur in a valid path after `/v2/`: the union of the name,
/// tag, digest and upload-id alphabets, and `/`.
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b':' | b'=' | b'+')
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True for a repository name of the OCI distribution spec: components
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` separated by `/`, at most 255 bytes.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.split('/').all(is_valid_name_component)
}

fn is_valid_name_component(component: &str) -> bool {
    let b = component.as_bytes();
    let mut i = 0;
    // Whether the previous byte was alphanumeric: a component starts and ends
    // with one, and every separator run sits between two.
    let mut after_alnum = false;
    while let Some(&c) = b.get(i) {
        if is_lower_alnum(c) {
            after_alnum = true;
            i += 1;
            continue;
        }
        if !after_alnum {
            return false;
        }
        let start = i;
        while b.get(i).is_some_and(|&c| matches!(c, b'.' | b'_' | b'-')) {
            i += 1;
        }
        let separator = &b[start..i];
        let valid = match separator {
            b"." | b"_" | b"__" => true,
            [] => false,
            dashes => dashes.iter().all(|&c| c == b'-'),
        };
        if !valid {
            return false;
        }
        after_alnum = false;
    }
    after_alnum
}

/// True for a tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    match tag.as_bytes().split_first() {
        Some((&first, rest)) => {
            tag.len() <= MAX_TAG_LEN
                && (first.is_ascii_alphanumeric() || first == b'_')
                && rest
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        }
        None => false,
    }
}

/// True for the OCI digest grammar alone, without the length rules of
/// `sha256`/`sha512` or the overall limit (what distribution's router
/// accepts before it parses the digest).
fn is_digest_syntax(digest: &str) -> bool {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return false;
    };
    algorithm
        .split(['+', '.', '_', '-'])
        .all(|part| !part.is_empty() && part.bytes().all(is_lower_alnum))
        && !encoded.is_empty()
        && encoded
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'=' | b'_' | b'-'))
}

/// True for a digest of the OCI image spec, `algorithm:encoded`: algorithm
/// `[a-z0-9]+([+._-][a-z0-9]+)*`, encoded `[a-zA-Z0-9=_-]+`, at most 256
/// bytes; `sha256` needs 64 and `sha512` 128 lower-case hex digits.
pub fn is_valid_digest(digest: &str) -> bool {
    if digest.len() > MAX_DIGEST_LEN {
        return false;
    }
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return false;
    };
    is_digest_syntax(digest)
        && match algorithm {
            "sha256" => encoded.len() == 64 && is_lower_hex(encoded),
            "sha512" => encoded.len() == 128 && is_lower_hex(encoded),
            _ => true,
        }
}

/// True for an upload session id: 1 to 256 of `[A-Za-z0-9_=.-]`, not `.` or
/// `..` (distribution's route accepts `[a-zA-Z0-9-_.=]+`).
fn is_valid_upload_id(id: &str) -> bool {
    (1..=MAX_UPLOAD_ID_LEN).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'=' | b'.' | b'-'))
}

/// Checks the raw query: at most 8 KiB of RFC 3986 query characters except
/// `;` (which Go's query parser refuses, so the registry would silently drop
/// the pair), with every `%` starting a valid escape (Go drops pairs with bad
/// escapes too, while `form_urlencoded` keeps them; refusing them keeps both
/// parsers in agreement).
fn check_raw_query(query: Option<&str>) -> Result<(), ClassifyError> {
    let Some(query) = query else {
        return Ok(());
    };
    if query.len() > MAX_QUERY_LEN {
        return Err(ClassifyError::QueryInvalid("query too long"));
    }
    let b = query.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return Err(ClassifyError::QueryInvalid("bad percent escape"));
            }
            i += 3;
        } else if c.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/?".contains(&c) {
            i += 1;
        } else {
            return Err(ClassifyError::QueryInvalid("forbidden character in query"));
        }
    }
    Ok(())
}

/// The decoded query parameters we look at. Each may occur at most once
/// (parsers disagree on which of two counts).
#[derive(Debug, Default)]
struct Params<'q> {
    digest: Option<Cow<'q, str>>,
    mount: Option<Cow<'q, str>>,
    from: Option<Cow<'q, str>>,
}

impl<'q> Params<'q> {
    fn parse(query: Option<&'q str>) -> Result<Self, ClassifyError> {
        let mut p = Params::default();
        let Some(query) = query else {
            return Ok(p);
        };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let (slot, repeated) = match key.as_ref() {
                "digest" => (&mut p.digest, "repeated digest"),
                "mount" => (&mut p.mount, "repeated mount"),
                "from" => (&mut p.from, "repeated from"),
                _ => continue,
            };
            if slot.is_some() {
                return Err(ClassifyError::QueryInvalid(repeated));
            }
            *slot = Some(value);
        }
        Ok(p)
    }

    /// `digest`, if present, is a digest.
    fn check_digest(&self) -> Result<(), ClassifyError> {
        match self.digest.as_deref() {
            Some(d) if !is_valid_digest(d) => Err(ClassifyError::DigestInvalid),
            _ => Ok(()),
        }
    }
}

/// True when a request body of this `Content-Type` could be read as form
/// parameters by the registry. Go's `Request.FormValue`, which distribution
/// uses to read `mount`, `from` and `digest`, also parses an
/// `application/x-www-form-urlencoded` or `multipart/form-data` body of POST,
/// PUT and PATCH requests, so such a body could carry a `from` that
/// [`classify`] never sees. No registry client sends these types: the proxy
/// should refuse any request with a `Content-Type` value for which this is
/// true (check every value, not just the first). Deliberately broad.
pub fn is_form_content_type(value: &[u8]) -> bool {
    let contains = |needle: &[u8]| {
        value
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    contains(b"x-www-form-urlencoded") || contains(b"multipart/")
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use proptest::prelude::*;
    use regex::Regex;

    use super::*;
    use Action::{Delete, Pull, Push};
    use ClassifyError::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const D_UPPER: &str = "sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef";
    const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn method(s: &str) -> Method {
        Method::from_bytes(s.as_bytes()).expect("test method")
    }

    fn repo(name: &str, actions: &[Action]) -> Scope {
        Scope::repository(name, actions.iter().copied())
    }

    fn access(endpoint: Endpoint, name: Option<&str>, scopes: Vec<Scope>) -> RequiredAccess {
        RequiredAccess {
            endpoint,
            name: name.map(str::to_owned),
            scopes,
            forward_query: None,
        }
    }

    /// The whole path check of the regex oracle's routes: the route and a
    /// reference or digest some route accepts.
    fn parse_path(path: &str) -> Result<Route<'_>, ClassifyError> {
        let route = parse_route(path)?;
        check_reference(route).map_err(|_| UnknownRoute)?;
        Ok(route)
    }

    /// What each method needs, restated independently of `method_actions`.
    fn expected_actions(m: &str) -> &'static [Action] {
        match m {
            "GET" | "HEAD" => &[Pull],
            "POST" | "PUT" | "PATCH" => &[Pull, Push],
            "DELETE" => &[Delete],
            _ => unreachable!("not a registry method: {m}"),
        }
    }

    const ALL_METHODS: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "get",
        "PROPFIND",
    ];

    /// Path, query, endpoint, name, allowed methods.
    type RouteCase<'a> = (String, Option<&'a str>, Endpoint, Option<&'a str>, &'a str);

    /// Every endpoint under every method.
    #[test]
    fn endpoints_by_method() {
        let upload = format!("/v2/a/blobs/uploads/{}", "u".repeat(256));
        let long_name = format!("{}/tags/list", "a".repeat(255));
        let tag128 = format!("/v2/a/manifests/{}", "t".repeat(128));
        let sha512 = format!("/v2/a/blobs/sha512:{HEX64}{HEX64}");
        let digest_q = format!("digest={D}");
        let state_q = format!("_state=ab%3D%3D&digest={D}");
        let routes: Vec<RouteCase> = vec![
            ("/v2/".into(), None, Endpoint::Base, None, "GET HEAD"),
            ("/v2".into(), None, Endpoint::Base, None, "GET HEAD"),
            (
                "/v2/".into(),
                Some("anything=%20goes"),
                Endpoint::Base,
                None,
                "GET HEAD",
            ),
            ("/v2/_catalog".into(), None, Endpoint::Catalog, None, "GET"),
            (
                "/v2/_catalog".into(),
                Some("n=100&last=a/b"),
                Endpoint::Catalog,
                None,
                "GET",
            ),
            (
                "/v2/_catalog".into(),
                Some("n=10000"),
                Endpoint::Catalog,
                None,
                "GET",
            ),
            (
                "/v2/a/tags/list".into(),
                None,
                Endpoint::Tags,
                Some("a"),
                "GET HEAD",
            ),
            (
                "/v2/a/b/tags/list".into(),
                Some("n=1&last=v1.0"),
                Endpoint::Tags,
                Some("a/b"),
                "GET HEAD",
            ),
            (
                format!("/v2/{long_name}"),
                None,
                Endpoint::Tags,
                Some(&long_name[..255]),
                "GET HEAD",
            ),
            (
                "/v2/tags/list/tags/list".into(),
                None,
                Endpoint::Tags,
                Some("tags/list"),
                "GET HEAD",
            ),
            (
                "/v2/a/manifests/latest".into(),
                None,
                Endpoint::Manifest,
                Some("a"),
                "GET HEAD PUT DELETE",
            ),
            (
                format!("/v2/a/manifests/{D}"),
                None,
                Endpoint::Manifest,
                Some("a"),
                "GET HEAD PUT DELETE",
            ),
            (
                tag128,
                None,
                Endpoint::Manifest,
                Some("a"),
                "GET HEAD PUT DELETE",
            ),
            (
                "/v2/a/manifests/_x.Y-1".into(),
                None,
                Endpoint::Manifest,
                Some("a"),
                "GET HEAD PUT DELETE",
            ),
            (
                "/v2/foo/blobs/manifests/latest".into(),
                None,
                Endpoint::Manifest,
                Some("foo/blobs"),
                "GET HEAD PUT DELETE",
            ),
            (
                "/v2/a/tags/list/manifests/list".into(),
                None,
                Endpoint::Manifest,
                Some("a/tags/list"),
                "GET HEAD PUT DELETE",
            ),
            (
                "/v2/h0st.io/x-y/z__w/manifests/v1".into(),
                None,
                Endpoint::Manifest,
                Some("h0st.io/x-y/z__w"),
                "GET HEAD PUT DELETE",
            ),
            (
                format!("/v2/a/blobs/{D}"),
                None,
                Endpoint::Blob,
                Some("a"),
                "GET HEAD DELETE",
            ),
            (sha512, None, Endpoint::Blob, Some("a"), "GET HEAD DELETE"),
            (
                "/v2/a/blobs/sha256+b64u.x:AbC=_-".into(),
                None,
                Endpoint::Blob,
                Some("a"),
                "GET HEAD DELETE",
            ),
            (
                format!("/v2/manifests/blobs/{D}"),
                None,
                Endpoint::Blob,
                Some("manifests"),
                "GET HEAD DELETE",
            ),
            (
                "/v2/a/blobs/uploads/".into(),
                None,
                Endpoint::UploadStart,
                Some("a"),
                "POST",
            ),
            (
                "/v2/a/blobs/uploads".into(),
                None,
                Endpoint::UploadStart,
                Some("a"),
                "POST",
            ),
            (
                "/v2/a/blobs/uploads/".into(),
                Some(&digest_q),
                Endpoint::UploadStart,
                Some("a"),
                "POST",
            ),
            (
                "/v2/a/blobs/uploads/blobs/uploads/".into(),
                None,
                Endpoint::UploadStart,
                Some("a/blobs/uploads"),
                "POST",
            ),
            (
                "/v2/a/blobs/uploads/abc-DEF_1=.x".into(),
                None,
                Endpoint::Upload,
                Some("a"),
                "GET HEAD PATCH PUT DELETE",
            ),
            (
                "/v2/a/blobs/uploads/..x".into(),
                None,
                Endpoint::Upload,
                Some("a"),
                "GET HEAD PATCH PUT DELETE",
            ),
            (
                upload,
                None,
                Endpoint::Upload,
                Some("a"),
                "GET HEAD PATCH PUT DELETE",
            ),
            (
                "/v2/a/blobs/uploads/u".into(),
                Some(&state_q),
                Endpoint::Upload,
                Some("a"),
                "GET HEAD PATCH PUT DELETE",
            ),
            (
                format!("/v2/a/referrers/{D}"),
                None,
                Endpoint::Referrers,
                Some("a"),
                "GET",
            ),
            (
                format!("/v2/a/referrers/{D}"),
                Some("artifactType=application%2Fvnd.x%2Bjson"),
                Endpoint::Referrers,
                Some("a"),
                "GET",
            ),
        ];
        for (path, query, endpoint, name, allowed) in &routes {
            for m in ALL_METHODS {
                let got = classify(&method(m), path, *query);
                let want = if !allowed.split(' ').any(|a| a == *m) {
                    Err(MethodNotAllowed)
                } else {
                    let scopes = match (endpoint, name) {
                        (Endpoint::Base, _) => vec![],
                        (Endpoint::Catalog, _) => vec![Scope::catalog()],
                        (_, Some(n)) => vec![repo(n, expected_actions(m))],
                        (_, None) => unreachable!(),
                    };
                    Ok(access(*endpoint, *name, scopes))
                };
                assert_eq!(got, want, "{m} {path} ?{query:?}");
            }
        }
    }

    #[test]
    fn cross_repository_mount() {
        let post = Method::POST;
        let start = "/v2/a/blobs/uploads/";
        let mount = |q: &str| classify(&post, start, Some(q));
        let both = access(
            Endpoint::UploadStart,
            Some("a"),
            vec![repo("a", &[Pull, Push]), repo("b/c", &[Pull])],
        );
        assert_eq!(mount(&format!("mount={D}&from=b/c")), Ok(both.clone()));
        assert_eq!(
            mount(&format!("from=b%2Fc&mount={D}&x=y")),
            Ok(both.clone())
        );
        // Encoded keys are decoded, as the registry does.
        assert_eq!(mount(&format!("%6Dount={D}&fr%6Fm=b/c")), Ok(both.clone()));
        assert_eq!(
            classify(
                &post,
                "/v2/a/blobs/uploads",
                Some(&format!("mount={D}&from=b/c"))
            ),
            Ok(both)
        );
        // Mounting from the same repository merges into one scope.
        assert_eq!(
            mount(&format!("mount={D}&from=a")),
            Ok(access(
                Endpoint::UploadStart,
                Some("a"),
                vec![repo("a", &[Pull, Push])]
            ))
        );
        // Refused: parsers disagree on which of two values counts, a bad
        // escape or `;` (Go drops the pair), a `digest` that is not one.
        let refused = [
            format!("mount={D}&from=b&from=c"),
            format!("mount={D}&from=b&fr%6Fm=c"),
            format!("mount={D}&mount={D}&from=b"),
            format!("mount={D}&%6Dount={D}&from=b"),
            format!("mount={D}&from=b%zz"),
            format!("mount={D}&from=b;c"),
            format!("mount={D};from=b"),
            format!("digest={D}&digest={D}"),
        ];
        for q in &refused {
            assert!(
                matches!(mount(q), Err(QueryInvalid(_))),
                "{q}: {:?}",
                mount(q)
            );
        }
        for q in [
            format!("mount={D}&from=b&digest=sha256:x"),
            "digest=sha256:abc".to_owned(),
        ] {
            assert_eq!(mount(&q), Err(DigestInvalid), "{q}");
        }
        // No valid pair, no mount: an ordinary upload session, forwarded
        // without `mount` and `from`.
        let plain = |forward: &str| RequiredAccess {
            forward_query: Some(forward.to_owned()),
            ..access(
                Endpoint::UploadStart,
                Some("a"),
                vec![repo("a", &[Pull, Push])],
            )
        };
        for (q, forward) in [
            (format!("mount={D}"), ""),
            ("from=b".to_owned(), ""),
            (format!("x=1&mount={D}&y=%41"), "x=1&y=%41"),
            (format!("%6Dount={D}&digest={D}"), &format!("digest={D}")),
            (format!("mount={D}&from="), ""),
            ("mount=&from=b".to_owned(), ""),
            (format!("mount={D_UPPER}&from=b"), ""),
            ("mount=latest&from=b".to_owned(), ""),
            (format!("mount={D}&from=B"), ""),
            (format!("mount={D}&from=..%2Fb"), ""),
            (format!("mount={D}&from=b/"), ""),
            (format!("mount={D}&fr%6Fm=b%00"), ""),
        ] {
            assert_eq!(mount(&q), Ok(plain(forward)), "{q}");
        }
    }

    #[test]
    fn queries() {
        let get = Method::GET;
        let catalog = |q: &str| classify(&get, "/v2/_catalog", Some(q));
        let tags = |q: &str| classify(&get, "/v2/a/tags/list", Some(q));
        // `n` and `last` are not access decisions: any value passes here
        // (the catalog reads them itself, the registry the tag list's).
        for q in [
            "",
            "n=1",
            "n=0",
            "n=-1",
            "n=abc",
            "n=99999999999",
            "n=1&n=2",
            "last=A",
            "last=..",
            "last=a&last=b",
            "x=1&y",
            "&&",
        ] {
            assert!(catalog(q).is_ok(), "{q}");
            assert!(tags(q).is_ok(), "{q}");
        }
        // The raw query is checked everywhere.
        for q in [
            "a=%zz", "a=%2", "a=%", "a=b;c", "a=\"", "a=b|c", "a=é", "a=\u{1}", "a=b c", "a=b#c",
            "a=[1]",
        ] {
            assert!(
                matches!(catalog(q), Err(QueryInvalid(_))),
                "{q}: {:?}",
                catalog(q)
            );
            assert!(matches!(tags(q), Err(QueryInvalid(_))), "{q}");
        }
        let long = format!("x={}", "a".repeat(MAX_QUERY_LEN - 2));
        assert!(catalog(&long).is_ok());
        let too_long = format!("x={}", "a".repeat(MAX_QUERY_LEN - 1));
        assert_eq!(catalog(&too_long), Err(QueryInvalid("query too long")));
        assert_eq!(tags(&too_long), Err(QueryInvalid("query too long")));
        // The raw query is checked on every endpoint, the parameters only where they matter.
        let manifest = |q: &str| classify(&get, "/v2/a/manifests/latest", Some(q));
        assert!(manifest("mount=x&mount=y&n=0").is_ok());
        assert!(matches!(manifest("a=%zz"), Err(QueryInvalid(_))));
        assert!(matches!(
            classify(&get, "/v2/", Some("a;b")),
            Err(QueryInvalid(_))
        ));
        let put = |q: &str| classify(&Method::PUT, "/v2/a/blobs/uploads/u", Some(q));
        assert!(put(&format!("digest={D}&_state=x")).is_ok());
        assert_eq!(put("digest=latest"), Err(DigestInvalid));
    }

    #[test]
    fn hostile_paths_are_refused() {
        let long_name = format!("/v2/{}/manifests/x", "a".repeat(256));
        let long_tag = format!("/v2/a/manifests/{}", "t".repeat(129));
        let long_id = format!("/v2/a/blobs/uploads/{}", "u".repeat(257));
        let long_digest = format!("/v2/a/blobs/x:{}", "a".repeat(255));
        let cases: Vec<(String, Option<ClassifyError>)> = [
            ("/v2/a/../b/manifests/x", Some(UnknownRoute)),
            ("/v2/./a/manifests/x", Some(UnknownRoute)),
            ("/v2/a/./manifests/x", Some(UnknownRoute)),
            ("/v2/../v2/a/manifests/x", Some(UnknownRoute)),
            ("/v2/a/manifests/..", Some(UnknownRoute)),
            ("/v2/a/manifests/.", Some(UnknownRoute)),
            ("/v2/a/blobs/uploads/..", Some(UnknownRoute)),
            ("/v2/a/blobs/uploads/.", Some(UnknownRoute)),
            ("/v2/a/blobs/uploads/./", Some(UnknownRoute)),
            ("/v2/..", Some(UnknownRoute)),
            ("/v2//", Some(UnknownRoute)),
            ("/v2//a/manifests/x", Some(UnknownRoute)),
            ("/v2/a//manifests/x", Some(UnknownRoute)),
            ("/v2/a/manifests//x", Some(UnknownRoute)),
            ("/v2/a/blobs/uploads//", Some(UnknownRoute)),
            ("//v2/a/manifests/x", Some(UnknownRoute)),
            ("/v2/a%2Fb/manifests/x", Some(UnknownRoute)),
            ("/v2/a%2fb/manifests/x", Some(UnknownRoute)),
            ("/v2/a/manifests/%2e%2e", Some(UnknownRoute)),
            ("/v2/%2e%2e/a/manifests/x", Some(UnknownRoute)),
            ("/v2/a%00/manifests/x", Some(UnknownRoute)),
            ("/v2/a/manifests/x%00", Some(UnknownRoute)),
            ("/v2/%61/manifests/x", Some(UnknownRoute)),
            ("/v2/a/manifests/latest;x", Some(UnknownRoute)),
            ("/v2/a;x/manifests/latest", Some(UnknownRoute)),
            ("/v2/a/manifests/latest\0", Some(UnknownRoute)),
            ("/v2/a/manifests/latest\n", Some(UnknownRoute)),
            ("/v2/a/manifests/la test", Some(UnknownRoute)),
            ("/v2/a\\b/manifests/x", Some(UnknownRoute)),
            ("/v2/\u{e9}/manifests/x", Some(UnknownRoute)),
            ("/v2/a/manifests/x?y", Some(UnknownRoute)),
            ("/v2/a/manifests/x#y", Some(UnknownRoute)),
            ("http://evil/v2/a/manifests/x", Some(UnknownRoute)),
            ("//evil/v2/a/manifests/x", Some(UnknownRoute)),
            ("*", Some(UnknownRoute)),
            ("/v2/a/foo", Some(UnknownRoute)),
            ("/v2/a/foo/bar", Some(UnknownRoute)),
            ("/v2/a", Some(UnknownRoute)),
            ("/v3/", Some(UnknownRoute)),
            ("/V2/", Some(UnknownRoute)),
            ("/v2a/", Some(UnknownRoute)),
            ("/", Some(UnknownRoute)),
            ("", Some(UnknownRoute)),
            ("/v2/_catalog/", Some(UnknownRoute)),
            ("/v2/_catalog/x", Some(UnknownRoute)),
            ("/v2/a/_catalog", Some(UnknownRoute)),
            ("/v2/a/tags/list/", Some(UnknownRoute)),
            ("/v2/a/tags/other", Some(UnknownRoute)),
            ("/v2/a/manifests/latest/", Some(UnknownRoute)),
            ("/v2/a/manifests/", Some(UnknownRoute)),
            ("/v2/a/blobs/", Some(UnknownRoute)),
            ("/v2/a/uploads/x", Some(UnknownRoute)),
            ("/v2/a/blobs/uploads/uploads/x", Some(UnknownRoute)),
            ("/v2/manifests/latest", Some(UnknownRoute)),
            ("/v2/blobs/uploads/", Some(UnknownRoute)),
            ("/v2/blobs/uploads", Some(UnknownRoute)),
            ("/v2/tags/list", Some(UnknownRoute)),
            (long_id.as_str(), Some(UnknownRoute)),
            ("/v2/a/blobs/uploads/sha256:abc", Some(UnknownRoute)),
            ("/v2/a/blobs/uploads/a+b", Some(UnknownRoute)),
            ("/v2/A/manifests/x", Some(NameInvalid)),
            ("/v2/a/B/tags/list", Some(NameInvalid)),
            ("/v2/_a/manifests/x", Some(NameInvalid)),
            (long_name.as_str(), Some(NameInvalid)),
            ("/v2/a___b/manifests/x", Some(NameInvalid)),
            ("/v2/a.-b/blobs/uploads/", Some(NameInvalid)),
            ("/v2/-a/blobs/uploads", Some(NameInvalid)),
            ("/v2/a-/blobs/uploads/u", Some(NameInvalid)),
            ("/v2/a=/referrers/x", Some(NameInvalid)),
            ("/v2/a:5000/b/manifests/x", Some(NameInvalid)),
        ]
        .into_iter()
        .map(|(p, e)| (p.to_owned(), e))
        .collect();
        for (path, want) in &cases {
            for m in ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"] {
                let got = classify(&method(m), path, None);
                match want {
                    Some(e) => assert_eq!(got.as_ref(), Err(e), "{m} {path:?}"),
                    None => assert!(got.is_err(), "{m} {path:?}"),
                }
            }
        }
        // A valid name with a reference or digest no route accepts: classified,
        // not forwarded; the gate answers after the permit (404 as
        // distribution's router, 400 for digest syntax with a wrong length).
        // With a method the endpoint does not serve: 404, as the router.
        let d_upper = format!("/v2/a/blobs/{D_UPPER}");
        let d_longer = format!("/v2/a/blobs/{D}0");
        let answered: Vec<(&str, Answer, Endpoint, Vec<Scope>)> = vec![
            (
                &long_tag,
                Answer::ManifestUnknown,
                Endpoint::Manifest,
                vec![],
            ),
            (
                "/v2/a/manifests/-x",
                Answer::ManifestUnknown,
                Endpoint::Manifest,
                vec![],
            ),
            (
                "/v2/a/manifests/.x",
                Answer::ManifestUnknown,
                Endpoint::Manifest,
                vec![],
            ),
            (
                "/v2/a/manifests/.INVALID",
                Answer::ManifestUnknown,
                Endpoint::Manifest,
                vec![],
            ),
            (
                "/v2/a/manifests/x=",
                Answer::ManifestUnknown,
                Endpoint::Manifest,
                vec![],
            ),
            (
                "/v2/a/manifests/SHA256:abc",
                Answer::ManifestUnknown,
                Endpoint::Manifest,
                vec![],
            ),
            (
                "/v2/a/manifests/sha256:abc",
                Answer::DigestInvalid,
                Endpoint::Manifest,
                vec![],
            ),
            (
                "/v2/a/blobs/latest",
                Answer::BlobUnknown,
                Endpoint::Blob,
                vec![],
            ),
            (
                "/v2/a/blobs/sha256:abc",
                Answer::DigestInvalid,
                Endpoint::Blob,
                vec![],
            ),
            (
                "/v2/a/blobs/sha512:0123",
                Answer::DigestInvalid,
                Endpoint::Blob,
                vec![],
            ),
            (
                "/v2/a/blobs/SHA256:abc",
                Answer::BlobUnknown,
                Endpoint::Blob,
                vec![],
            ),
            (
                "/v2/a/blobs/:abc",
                Answer::BlobUnknown,
                Endpoint::Blob,
                vec![],
            ),
            (
                "/v2/a/blobs/sha256:",
                Answer::BlobUnknown,
                Endpoint::Blob,
                vec![],
            ),
            (
                "/v2/a/blobs/sha256::x",
                Answer::BlobUnknown,
                Endpoint::Blob,
                vec![],
            ),
            (
                "/v2/a/blobs/sha+:x",
                Answer::BlobUnknown,
                Endpoint::Blob,
                vec![],
            ),
            (
                "/v2/a/blobs/a..b:x",
                Answer::BlobUnknown,
                Endpoint::Blob,
                vec![],
            ),
            (
                "/v2/a/blobs/x:a.b",
                Answer::BlobUnknown,
                Endpoint::Blob,
                vec![],
            ),
            (&long_digest, Answer::DigestInvalid, Endpoint::Blob, vec![]),
            (&d_upper, Answer::DigestInvalid, Endpoint::Blob, vec![]),
            (&d_longer, Answer::DigestInvalid, Endpoint::Blob, vec![]),
            (
                "/v2/a/referrers/latest",
                Answer::ManifestUnknown,
                Endpoint::Referrers,
                vec![],
            ),
        ];
        for (path, answer, endpoint, _) in &answered {
            for m in ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"] {
                let got = classify(&method(m), path, None);
                let want = if endpoint.allows(&method(m)) {
                    Err(AfterPermit {
                        access: Box::new(access(
                            *endpoint,
                            Some("a"),
                            vec![repo("a", expected_actions(m))],
                        )),
                        answer: *answer,
                    })
                } else {
                    Err(UnknownRoute)
                };
                assert_eq!(got, want, "{m} {path:?}");
            }
        }
        // A digest of an unknown algorithm may be up to 256 bytes long.
        let max_digest = format!("/v2/a/blobs/x:{}", "a".repeat(254));
        assert!(classify(&Method::GET, &max_digest, None).is_ok());
    }

    #[test]
    fn wrong_methods() {
        let cases = [
            ("HEAD", "/v2/_catalog"),
            ("POST", "/v2/"),
            ("DELETE", "/v2/a/tags/list"),
            ("POST", "/v2/a/manifests/x"),
            ("PATCH", "/v2/a/manifests/x"),
            ("PUT", "/v2/a/blobs/x:y"),
            ("GET", "/v2/a/blobs/uploads/"),
            ("PUT", "/v2/a/blobs/uploads"),
            ("POST", "/v2/a/blobs/uploads/u"),
            ("HEAD", "/v2/a/referrers/x:y"),
            ("OPTIONS", "/v2/a/manifests/x"),
        ];
        for (m, path) in cases {
            assert_eq!(
                classify(&method(m), path, None),
                Err(MethodNotAllowed),
                "{m} {path}"
            );
        }
        assert_eq!(
            classify(&Method::OPTIONS, "/v2/a/foo", None),
            Err(UnknownRoute)
        );
    }

    #[test]
    fn name_components() {
        for ok in [
            "a",
            "0",
            "a__b",
            "a--b",
            "a---b",
            "a_b",
            "a.b",
            "a-b",
            "a.b_c-d",
            "a/b",
            "a/b/c",
            "a0/b.c/d__e",
            "manifests",
            "blobs/uploads",
        ] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in [
            "", "a___b", "a.-b", "a-.b", "a..b", "a._b", "a_.b", "-a", "a-", ".a", "a.", "_a",
            "a_", "__a", "A", "aB", "a/", "/a", "a//b", "a/./b", "a/../b", "..", ".", "a b", "a:b",
            "a%2fb", "\u{e9}",
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
        assert!(is_valid_name(&"a".repeat(255)));
        assert!(!is_valid_name(&"a".repeat(256)));
        assert!(is_valid_name(&format!("{}/b", "a".repeat(253))));
        assert!(!is_valid_name(&format!("{}/b", "a".repeat(254))));
    }

    #[test]
    fn form_content_types() {
        for ct in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded; charset=utf-8",
            " application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "MULTIPART/mixed",
        ] {
            assert!(is_form_content_type(ct.as_bytes()), "{ct}");
        }
        for ct in [
            "application/octet-stream",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "",
        ] {
            assert!(!is_form_content_type(ct.as_bytes()), "{ct}");
        }
    }

    // ---- Independent oracle, written with regexes, for the property tests. ----

    const NAME_RE: &str =
        r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*";
    const TAG_RE: &str = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}";
    const DIGEST_RE: &str = r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+";
    const UPLOAD_ID_RE: &str = r"[A-Za-z0-9_=.-]{1,256}";

    fn full(re: &str) -> Regex {
        Regex::new(&format!("^(?:{re})$")).expect("test regex")
    }

    static NAME: LazyLock<Regex> = LazyLock::new(|| full(NAME_RE));
    static TAG: LazyLock<Regex> = LazyLock::new(|| full(TAG_RE));
    static DIGEST: LazyLock<Regex> = LazyLock::new(|| full(DIGEST_RE));
    static SHA256: LazyLock<Regex> = LazyLock::new(|| full("sha256:[a-f0-9]{64}"));
    static SHA512: LazyLock<Regex> = LazyLock::new(|| full("sha512:[a-f0-9]{128}"));
    static ROUTES: LazyLock<Vec<(Endpoint, Regex)>> = LazyLock::new(|| {
        let n = format!("(?P<name>{NAME_RE})");
        vec![
            (Endpoint::Base, full("/v2/?")),
            (Endpoint::Catalog, full("/v2/_catalog")),
            (Endpoint::Tags, full(&format!("/v2/{n}/tags/list"))),
            (
                Endpoint::Manifest,
                full(&format!("/v2/{n}/manifests/(?P<x>{TAG_RE}|{DIGEST_RE})")),
            ),
            (
                Endpoint::Blob,
                full(&format!("/v2/{n}/blobs/(?P<x>{DIGEST_RE})")),
            ),
            (
                Endpoint::UploadStart,
                full(&format!("/v2/{n}/blobs/uploads/?")),
            ),
            (
                Endpoint::Upload,
                full(&format!("/v2/{n}/blobs/uploads/(?P<x>{UPLOAD_ID_RE})")),
            ),
            (
                Endpoint::Referrers,
                full(&format!("/v2/{n}/referrers/(?P<x>{DIGEST_RE})")),
            ),
        ]
    });

    fn oracle_name(s: &str) -> bool {
        s.len() <= MAX_NAME_LEN && NAME.is_match(s)
    }

    fn oracle_tag(s: &str) -> bool {
        TAG.is_match(s)
    }

    fn oracle_digest(s: &str) -> bool {
        s.len() <= MAX_DIGEST_LEN
            && DIGEST.is_match(s)
            && (!s.starts_with("sha256:") || SHA256.is_match(s))
            && (!s.starts_with("sha512:") || SHA512.is_match(s))
    }

    /// Every route the oracle sees in `path`, with its name.
    fn oracle_routes(path: &str) -> Vec<(Endpoint, Option<String>)> {
        let mut out = Vec::new();
        for (endpoint, re) in ROUTES.iter() {
            let Some(c) = re.captures(path) else { continue };
            let name = c.name("name").map(|m| m.as_str().to_owned());
            if name.as_deref().is_some_and(|n| !oracle_name(n)) {
                continue;
            }
            let x = c.name("x").map_or("", |m| m.as_str());
            let valid = match endpoint {
                Endpoint::Manifest => {
                    if x.contains(':') {
                        oracle_digest(x)
                    } else {
                        oracle_tag(x)
                    }
                }
                Endpoint::Blob | Endpoint::Referrers => oracle_digest(x),
                Endpoint::Upload => x != "." && x != "..",
                _ => true,
            };
            if valid {
                out.push((*endpoint, name));
            }
        }
        out
    }

    /// The canonical request a classification stands for.
    fn canonical(a: &Analysis<'_>) -> (String, Option<String>) {
        let path = match a.route {
            Route::Base => "/v2/".to_owned(),
            Route::Catalog => "/v2/_catalog".to_owned(),
            Route::Tags { name } => format!("/v2/{name}/tags/list"),
            Route::Manifest { name, reference } => format!("/v2/{name}/manifests/{reference}"),
            Route::Blob { name, digest } => format!("/v2/{name}/blobs/{digest}"),
            Route::UploadStart { name } => format!("/v2/{name}/blobs/uploads/"),
            Route::Upload { name, id } => format!("/v2/{name}/blobs/uploads/{id}"),
            Route::Referrers { name, digest } => format!("/v2/{name}/referrers/{digest}"),
        };
        let query = a.mount.as_ref().map(|(digest, from)| {
            form_urlencoded::Serializer::new(String::new())
                .append_pair("mount", digest)
                .append_pair("from", from)
                .finish()
        });
        (path, query.or_else(|| a.forward_query.clone()))
    }

    /// Go's `path.Clean`, as gorilla/mux applies it before routing (it
    /// redirects requests whose path is not clean).
    fn go_clean(path: &str) -> String {
        let mut out: Vec<&str> = Vec::new();
        for seg in path.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    out.pop();
                }
                s => out.push(s),
            }
        }
        format!("/{}", out.join("/"))
    }

    /// The first value of `key` as Go's `url.ParseQuery` reads it: pairs
    /// split on `&` only, a pair with `;` or a bad escape skipped, `+` is a
    /// space, keys decoded too.
    fn go_query_first(query: Option<&str>, key: &str) -> Option<String> {
        fn unescape(s: &str) -> Option<String> {
            let b = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'%' => {
                        let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                        out.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 3;
                    }
                    b'+' => {
                        out.push(b' ');
                        i += 1;
                    }
                    c => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            // Go keeps invalid UTF-8 as bytes; lossy is enough to compare.
            Some(String::from_utf8_lossy(&out).into_owned())
        }
        query?
            .split('&')
            .filter(|pair| !pair.is_empty() && !pair.contains(';'))
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                Some((unescape(k)?, unescape(v)?))
            })
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Pieces of hostile and valid paths, glued together at random.
    const PIECES: &[&str] = &[
        "/",
        "//",
        ".",
        "..",
        "%2f",
        "%2F",
        "%2e",
        "%00",
        "%",
        "manifests",
        "blobs",
        "uploads",
        "tags",
        "list",
        "referrers",
        "_catalog",
        "a",
        "b0",
        "A",
        "v2",
        ":",
        "sha256:",
        HEX64,
        D,
        "latest",
        "-",
        "_",
        "__",
        "+",
        "=",
        ";",
        "\\",
        "?",
        "#",
        " ",
        "\u{e9}",
        "\0",
        "\n",
        "~",
    ];
    /// Whole segments, joined with `/`.
    const SEGMENTS: &[&str] = &[
        "a",
        "b",
        "a.b",
        "a__b",
        "a-b",
        "a_",
        "A",
        "manifests",
        "blobs",
        "uploads",
        "tags",
        "list",
        "referrers",
        "_catalog",
        D,
        "sha256:abc",
        "x:y=",
        "latest",
        "v1.0",
        "_x",
        "-x",
        "u-1=",
        ".",
        "..",
        "",
        "%2e",
        "x;y",
        "a+b:c",
        "v2",
    ];
    const QUERY_PIECES: &[&str] = &[
        "mount=",
        "from=",
        "digest=",
        "n=",
        "last=",
        "&",
        "=",
        D,
        "a",
        "b/c",
        "A",
        "%6Dount=",
        "fr%6Fm=",
        "10",
        "0",
        "10001",
        ";",
        "%",
        "%zz",
        "%2F",
        "+",
        "_state=x",
        "artifactType=y",
        "\u{e9}",
        "..",
    ];

    /// Name components, mostly valid.
    const NAME_PARTS: &[&str] = &[
        "a",
        "b0",
        "a.b",
        "a__b",
        "a-b",
        "a--b",
        "manifests",
        "blobs",
        "uploads",
        "tags",
        "list",
        "referrers",
        "v2",
        "A",
        ".",
        "..",
        "",
        "a_",
        "_a",
        "%2e",
        "a;b",
    ];
    /// Route suffixes, mostly valid.
    const SUFFIXES: &[&str] = &[
        "/tags/list",
        "/manifests/latest",
        "/manifests/_V.1",
        "/manifests/sha256:",
        "/blobs/",
        "/blobs/uploads/",
        "/blobs/uploads",
        "/blobs/uploads/u-1=.x",
        "/blobs/uploads/..",
        "/referrers/",
        "/manifests/..",
        "/blobs/uploads//",
        "/manifests/x;y",
        "/foo",
        "/manifests/-x",
        "/tags/list/",
        "",
    ];
    /// Query parameters, mostly meaningful.
    const PARAMS: &[&str] = &[
        "mount=sha256:",
        "from=a",
        "from=b/c",
        "from=a.b",
        "from=A",
        "from=..%2Fa",
        "mount=x",
        "digest=sha256:",
        "n=10",
        "n=0",
        "last=a",
        "last=-x",
        "%6Dount=sha256:",
        "fr%6Fm=b0",
        "x=%zz",
        "_state=abc%3D",
        "artifactType=t",
        "",
    ];

    fn path_strategy() -> impl Strategy<Value = String> {
        let prefix = prop::sample::select(vec!["/v2/", "/v2/", "/v2/", "/v2", "/", "", "/v3/"]);
        let noise = (
            prefix,
            prop::collection::vec(prop::sample::select(PIECES), 0..12),
        )
            .prop_map(|(p, pieces)| format!("{p}{}", pieces.concat()));
        let segments = (
            prop::collection::vec(prop::sample::select(SEGMENTS), 0..7),
            any::<bool>(),
        )
            .prop_map(|(segs, slash)| {
                format!("/v2/{}{}", segs.join("/"), if slash { "/" } else { "" })
            });
        let structured = (
            prop::collection::vec(prop::sample::select(NAME_PARTS), 1..4),
            prop::sample::select(SUFFIXES),
        )
            .prop_map(|(name, suffix)| {
                // Digest-taking suffixes get a digest.
                let suffix = match suffix {
                    "/blobs/" | "/referrers/" => format!("{suffix}{D}"),
                    "/manifests/sha256:" => format!("{suffix}{HEX64}"),
                    _ => suffix.to_owned(),
                };
                format!("/v2/{}{suffix}", name.join("/"))
            });
        prop_oneof![
            2 => noise,
            2 => segments,
            1 => any::<String>(),
            6 => structured,
        ]
    }

    fn params_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(PARAMS), 0..4).prop_map(|p| {
            let p: Vec<String> = p
                .iter()
                .map(|x| match x.strip_suffix("sha256:") {
                    Some(_) => format!("{x}{HEX64}"),
                    None => (*x).to_owned(),
                })
                .collect();
            p.join("&")
        })
    }

    fn query_strategy() -> impl Strategy<Value = Option<String>> {
        let pieces = prop::collection::vec(prop::sample::select(QUERY_PIECES), 0..8)
            .prop_map(|p| p.concat());
        prop::option::of(prop_oneof![2 => pieces, 1 => any::<String>(), 4 => params_strategy()])
    }

    /// Requests: anything, or an upload start with meaningful parameters.
    fn request_strategy() -> impl Strategy<Value = (Method, String, Option<String>)> {
        let upload_start = (
            prop::collection::vec(prop::sample::select(NAME_PARTS), 1..3),
            any::<bool>(),
            params_strategy(),
        )
            .prop_map(|(name, slash, query)| {
                let slash = if slash { "/" } else { "" };
                (
                    Method::POST,
                    format!("/v2/{}/blobs/uploads{slash}", name.join("/")),
                    Some(query),
                )
            });
        prop_oneof![
            3 => (method_strategy(), path_strategy(), query_strategy()),
            1 => upload_start,
        ]
    }

    fn method_strategy() -> impl Strategy<Value = Method> {
        prop::sample::select(ALL_METHODS).prop_map(method)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The hand-written path parser accepts exactly what the regex oracle
        /// accepts, names the same repository, and no path matches two routes.
        #[test]
        fn path_parser_agrees_with_oracle(path in path_strategy()) {
            let oracle = oracle_routes(&path);
            prop_assert!(oracle.len() <= 1, "ambiguous path {:?}: {:?}", path, oracle);
            let ours = parse_path(&path)
                .ok()
                .map(|r| (r.endpoint(), r.name().map(str::to_owned)));
            prop_assert_eq!(ours, oracle.into_iter().next(), "{:?}", path);
        }

        #[test]
        fn classify_is_sound((m, path, query) in request_strategy()) {
            let got = classify(&m, &path, query.as_deref());
            let Ok(got) = got else { return Ok(()) };
            // Every named repository is a valid name; the only other scope is the catalog.
            for s in &got.scopes {
                if s.resource_type == scope::REPOSITORY {
                    prop_assert!(oracle_name(&s.name), "{:?}", s);
                } else {
                    prop_assert_eq!(s, &Scope::catalog());
                }
            }
            match got.endpoint {
                Endpoint::Base => prop_assert!(got.name.is_none() && got.scopes.is_empty()),
                Endpoint::Catalog => {
                    prop_assert!(got.name.is_none());
                    prop_assert_eq!(&got.scopes, &vec![Scope::catalog()]);
                }
                _ => {
                    let name = got.name.clone().unwrap_or_default();
                    let first = Scope::repository(&name, expected_actions(m.as_str()).iter().copied());
                    prop_assert_eq!(&got.scopes[0], &first);
                    prop_assert!(got.scopes.len() <= 2);
                }
            }
            // The request is already canonical (up to the two tolerated
            // missing slashes), and its canonical form needs the same access.
            let analysis = analyze(&m, &path, query.as_deref()).expect("classified");
            let (canonical_path, canonical_query) = canonical(&analysis);
            let tolerated = canonical_path == format!("{path}/")
                && (path == "/v2" || path.ends_with("/blobs/uploads"));
            prop_assert!(canonical_path == path || tolerated, "{:?} vs {:?}", path, canonical_path);
            let got = RequiredAccess { forward_query: None, ..got };
            prop_assert_eq!(
                classify(&m, &canonical_path, canonical_query.as_deref()),
                Ok(got)
            );
        }

        /// The registry behind us parses the same request with Go's
        /// `net/url` and gorilla/mux: for every request we let through, its
        /// view (cleaned, decoded path; first `mount`/`from` values) is the
        /// one we authorized, so no request means more to it than to us.
        #[test]
        fn the_registry_sees_what_was_authorized((m, path, query) in request_strategy()) {
            let Ok(analysis) = analyze(&m, &path, query.as_deref()) else { return Ok(()) };
            // Answered by the gate, never forwarded.
            if analysis.answer.is_some() { return Ok(()) }
            prop_assert!(!path.contains('%'), "{:?}", path);
            prop_assert_eq!(go_clean(&path), path.trim_end_matches('/'), "{:?}", path);
            // What is sent: the request's query, or the one the gate rewrote.
            let sent = analysis.forward_query.as_deref().or(query.as_deref());
            let go_mount = go_query_first(sent, "mount");
            let go_from = go_query_first(sent, "from");
            match &analysis.mount {
                Some((digest, from)) => {
                    prop_assert_eq!(go_mount.as_deref(), Some(digest.as_ref()));
                    prop_assert_eq!(go_from.as_deref(), Some(from.as_ref()));
                }
                None if analysis.route.endpoint() == Endpoint::UploadStart => {
                    prop_assert!(go_mount.is_none() && go_from.is_none(), "{:?}", query);
                }
                None => {}
            }
        }

        #[test]
        fn names_agree_with_oracle(s in "[ab0._/A-]{0,14}") {
            prop_assert_eq!(is_valid_name(&s), oracle_name(&s), "{:?}", s);
        }

        #[test]
        fn tags_agree_with_oracle(s in "[aA0._:-]{0,6}|[a_.-][a.-]{126,129}") {
            prop_assert_eq!(is_valid_tag(&s), oracle_tag(&s), "{:?}", s);
        }

        #[test]
        fn digests_agree_with_oracle(
            s in "(sha256|sha512|[a0+._-]{0,6}):([0-9a-fA-F]{62,66}|[0-9a-f]{126,130}|[aZ0=_:.-]{0,6})"
        ) {
            prop_assert_eq!(is_valid_digest(&s), oracle_digest(&s), "{:?}", s);
        }
    }
}
