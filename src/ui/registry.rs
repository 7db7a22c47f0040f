//! What the UI reads from (and deletes in) the upstream, always through
//! `app.upstream` and only after the ACL said yes: every call here takes a
//! [`Granted`], which only [`Granted::check`] makes.
//!
//! Manifests and config blobs are small JSON documents, collected with a
//! size limit and checked against their digest; everything immutable (looked
//! up by digest) is cached.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use http::{Method, StatusCode, header};
use serde::Deserialize;
use sha2::{Digest, Sha256, Sha512};

use crate::app::App;
use crate::audit::Event;
use crate::authz::Subject;
use crate::authz::tags::Reference;
use crate::http::body;
use crate::immutable::{self, Refusal};
use crate::scope::{Action, Scope};
use crate::upstream::Origin;

use super::UiError;

/// Manifest media types the UI asks for and understands.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

const MAX_MANIFEST: usize = 4 * 1024 * 1024;
const MAX_CONFIG: usize = 8 * 1024 * 1024;
const MAX_LIST_PAGE: usize = 8 * 1024 * 1024;
/// Names asked per upstream catalog or tags page.
const LIST_PAGE: usize = 1000;
/// Upstream pages read for one listing at most (100k names).
const MAX_LIST_PAGES: usize = 100;
/// Upstream requests in flight for one page at most.
const CONCURRENCY: usize = 8;
/// Children of an index looked at for sizes and dates.
const MAX_CHILDREN: usize = 32;

/// Proof that the ACL lets the viewer pull `name` (and whether it lets them
/// delete there). Private fields: only [`Granted::check`] makes one.
#[derive(Debug, Clone)]
pub struct Granted {
    name: String,
    delete: bool,
}

impl Granted {
    /// `Some` when the subject may pull `name`.
    pub fn check(app: &App, subject: &Subject<'_>, name: &str) -> Option<Granted> {
        if !app
            .acl
            .allows(subject, &Scope::repository(name, [Action::Pull]))
        {
            return None;
        }
        let delete = app
            .acl
            .allows(subject, &Scope::repository(name, [Action::Delete]));
        Some(Granted {
            name: name.to_owned(),
            delete,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn may_delete(&self) -> bool {
        self.delete
    }
}

/// The repositories `subject` may pull, sorted; and whether the upstream
/// catalog was longer than we read. From the shared listing
/// ([`crate::listing`]): no upstream request of its own.
pub async fn visible_repositories(
    app: &App,
    subject: &Subject<'_>,
    origin: &Origin,
) -> Result<(Vec<String>, bool), UiError> {
    let listing = app
        .listing
        .get(&app.upstream, origin)
        .await
        .map_err(|e| match e {
            crate::listing::ListingError::Refused(why) => {
                UiError::Upstream(format!("the upstream registry refused the listing ({why})"))
            }
            _ => UiError::Upstream("the upstream registry is unreachable".into()),
        })?;
    let visible = listing
        .names
        .iter()
        .filter(|name| {
            app.acl
                .allows(subject, &Scope::repository(name, [Action::Pull]))
        })
        .cloned()
        .collect();
    Ok((visible, listing.truncated))
}

/// Every tag of the repository (upstream order), and whether there were more
/// than we read.
pub async fn tags(app: &App, g: &Granted, origin: &Origin) -> Result<(Vec<String>, bool), UiError> {
    let mut all = Vec::new();
    let mut last: Option<String> = None;
    for _ in 0..MAX_LIST_PAGES {
        let mut pq = format!("/v2/{}/tags/list?n={LIST_PAGE}", g.name);
        if let Some(last) = &last {
            pq.push_str("&last=");
            pq.extend(form_urlencoded::byte_serialize(last.as_bytes()));
        }
        let (names, more) = match list_page(app, &pq, origin, "tags").await {
            // A repository whose last manifest was deleted has no tags.
            Err(UiError::NotFound(_)) if all.is_empty() => return Ok((Vec::new(), false)),
            other => other?,
        };
        all.extend(names.iter().cloned());
        match names.last() {
            Some(name) if more => last = Some(name.clone()),
            _ => return Ok((all, false)),
        }
    }
    Ok((all, true))
}

/// One page of `_catalog` or `tags/list`: the names under `field` and whether
/// the upstream announced a next page.
async fn list_page(
    app: &App,
    pq: &str,
    origin: &Origin,
    field: &str,
) -> Result<(Vec<String>, bool), UiError> {
    let resp = app
        .upstream
        .request(Method::GET, pq, None, origin)
        .await
        .map_err(upstream_down)?;
    let status = resp.status();
    if status == StatusCode::NOT_FOUND {
        return Err(UiError::NotFound("no such repository".into()));
    }
    if !status.is_success() {
        tracing::error!(%status, path = pq, "upstream listing failed");
        return Err(UiError::Upstream(format!(
            "the upstream registry answered {status}"
        )));
    }
    let more = resp.headers().contains_key(header::LINK);
    let bytes = body::collect_limited(resp.into_body(), MAX_LIST_PAGE)
        .await
        .map_err(|e| UiError::Upstream(format!("listing unreadable: {e}")))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| UiError::Upstream("the upstream listing is not JSON".into()))?;
    // distribution answers `"tags": null` for a repository without tags.
    let names = v[field]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok((names, more))
}

/// A content descriptor (OCI image-spec `descriptor.md`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub artifact_type: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/arm64/v8`.
    pub fn display(&self) -> String {
        let mut s = format!("{}/{}", self.os, self.architecture);
        if let Some(v) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            s.push('/');
            s.push_str(v);
        }
        s
    }

    /// buildx stores attestations as `unknown/unknown` children of an index.
    pub fn is_unknown(&self) -> bool {
        self.os == "unknown" && self.architecture == "unknown"
    }
}

/// An image manifest or an index, whichever it is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestDoc {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default)]
    pub subject: Option<Descriptor>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A fetched manifest: what it is, its digest, its size and its bytes.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub doc: ManifestDoc,
    /// Pretty-printed JSON, for the "raw manifest" view.
    pub pretty: String,
}

impl Manifest {
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }

    /// Config plus layers: what a pull downloads, compressed.
    pub fn image_size(&self) -> u64 {
        self.doc.config.as_ref().map_or(0, |c| c.size)
            + self.doc.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

/// The image config (OCI image-spec `config.md`), the parts the UI shows.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    #[serde(default)]
    pub history: Vec<History>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct History {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub empty_layer: bool,
}

/// Fetches a manifest by tag or digest; `Ok(None)` when the upstream has none.
pub async fn manifest(
    app: &App,
    g: &Granted,
    reference: &str,
    origin: &Origin,
) -> Result<Option<Manifest>, UiError> {
    let pq = format!("/v2/{}/manifests/{reference}", g.name);
    let resp = app
        .upstream
        .request(Method::GET, &pq, Some(ACCEPT_MANIFESTS), origin)
        .await
        .map_err(upstream_down)?;
    let status = resp.status();
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        tracing::error!(%status, path = pq, "upstream manifest fetch failed");
        return Err(UiError::Upstream(format!(
            "the upstream registry answered {status} for the manifest"
        )));
    }
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    let bytes = body::collect_limited(resp.into_body(), MAX_MANIFEST)
        .await
        .map_err(|e| UiError::Upstream(format!("manifest unreadable: {e}")))?;
    let digest = if reference.contains(':') {
        // Fetched by digest: the bytes must be what the digest names.
        if !digest_matches(reference, &bytes) {
            return Err(UiError::Upstream(format!(
                "the upstream returned a manifest that does not match {reference}"
            )));
        }
        reference.to_owned()
    } else {
        sha256_digest(&bytes)
    };
    parse_manifest(digest, &content_type, &bytes).map(Some)
}

/// Parses manifest bytes; the media type is the document's own, else the
/// `Content-Type` it came with.
pub fn parse_manifest(
    digest: String,
    content_type: &str,
    bytes: &[u8],
) -> Result<Manifest, UiError> {
    let doc: ManifestDoc = serde_json::from_slice(bytes)
        .map_err(|_| UiError::Upstream("the manifest is not a JSON image manifest".into()))?;
    let media_type = doc
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            // OCI allows omitting mediaType: tell them apart by their fields.
            if !content_type.is_empty() && content_type != "application/json" {
                content_type.to_owned()
            } else if doc.config.is_none() && !doc.manifests.is_empty() {
                OCI_INDEX.to_owned()
            } else {
                OCI_MANIFEST.to_owned()
            }
        });
    if ![OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].contains(&media_type.as_str()) {
        return Err(UiError::Upstream(format!(
            "unsupported manifest type {media_type}"
        )));
    }
    let pretty = serde_json::from_slice::<serde_json::Value>(bytes)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_default();
    Ok(Manifest {
        digest,
        media_type,
        size: bytes.len() as u64,
        doc,
        pretty,
    })
}

/// Fetches and parses an image config blob of `g`'s repository (cached by
/// repository and digest).
pub async fn config(
    app: &App,
    g: &Granted,
    digest: &str,
    origin: &Origin,
) -> Result<Arc<ImageConfig>, UiError> {
    // Keyed by repository too: only content read from `g`'s repository
    // answers for it (issue 17, finding 1).
    let key = (g.name.clone(), digest.to_owned());
    if let Some(c) = app.ui.configs.get(&key) {
        return Ok(c);
    }
    if !crate::access::is_valid_digest(digest) {
        return Err(UiError::Upstream(
            "the manifest names an invalid config digest".into(),
        ));
    }
    let pq = format!("/v2/{}/blobs/{digest}", g.name);
    let resp = app
        .upstream
        .request(Method::GET, &pq, None, origin)
        .await
        .map_err(upstream_down)?;
    if !resp.status().is_success() {
        return Err(UiError::Upstream(format!(
            "the upstream answered {} for the config blob",
            resp.status()
        )));
    }
    let bytes = body::collect_limited(resp.into_body(), MAX_CONFIG)
        .await
        .map_err(|e| UiError::Upstream(format!("config unreadable: {e}")))?;
    if !digest_matches(digest, &bytes) {
        return Err(UiError::Upstream(
            "the config blob does not match its digest".into(),
        ));
    }
    let config: ImageConfig = serde_json::from_slice(&bytes)
        .map_err(|_| UiError::Upstream("the config blob is not an image config".into()))?;
    let config = Arc::new(config);
    app.ui.configs.insert(key, config.clone());
    Ok(config)
}

/// What the repository page shows of a manifest: derived from content
/// addressed by its digest, so cached by digest.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub index: bool,
    /// Compressed size (config + layers; for an index, all its images).
    pub size: u64,
    /// RFC 3339, from the image config (an index: its newest image).
    pub created: Option<String>,
    pub platforms: Vec<String>,
}

/// The summary of `m` (fetching index children and configs as needed).
/// Failures of children degrade to missing fields, never to an error page.
pub async fn summary(app: &App, g: &Granted, m: &Manifest, origin: &Origin) -> Arc<Summary> {
    let key = (g.name.clone(), m.digest.clone());
    if let Some(s) = app.ui.summaries.get(&key) {
        return s;
    }
    let s = if m.is_index() {
        let children: Vec<&Descriptor> = m
            .doc
            .manifests
            .iter()
            .filter(|d| !d.platform.as_ref().is_some_and(Platform::is_unknown))
            .take(MAX_CHILDREN)
            .collect();
        let platforms = children
            .iter()
            .filter_map(|d| d.platform.as_ref().map(Platform::display))
            .collect();
        let parts: Vec<Option<(u64, Option<String>)>> = bounded(
            children
                .into_iter()
                .map(|d| child_size_and_date(app, g, d, origin))
                .collect(),
        )
        .await;
        let complete = parts.iter().all(Option::is_some);
        let size = parts.iter().flatten().map(|(s, _)| *s).sum();
        let created = parts
            .iter()
            .flatten()
            .filter_map(|(_, c)| c.clone())
            .max_by_key(|c| sort_key(c));
        let s = Arc::new(Summary {
            index: true,
            size,
            created,
            platforms,
        });
        if !complete {
            // Do not remember a summary made of failed lookups.
            return s;
        }
        s
    } else {
        let config = match &m.doc.config {
            Some(c) => match config(app, g, &c.digest, origin).await {
                Ok(c) => Some(c),
                Err(_) => return Arc::new(image_summary(m, None)),
            },
            None => None,
        };
        Arc::new(image_summary(m, config.as_deref()))
    };
    app.ui.summaries.insert(key, s.clone());
    s
}

fn image_summary(m: &Manifest, config: Option<&ImageConfig>) -> Summary {
    let platform = config
        .filter(|c| !c.os.is_empty())
        .map(|c| {
            Platform {
                architecture: c.architecture.clone(),
                os: c.os.clone(),
                variant: c.variant.clone(),
            }
            .display()
        })
        .into_iter()
        .collect();
    Summary {
        index: false,
        size: m.image_size(),
        created: config.and_then(|c| c.created.clone()),
        platforms: platform,
    }
}

/// A row of the repository page.
#[derive(Debug, Clone)]
pub struct TagInfo {
    pub tag: String,
    /// `None` when the tag vanished between listing and lookup.
    pub digest: Option<String>,
    pub summary: Arc<Summary>,
}

/// Resolves every tag to its digest and summary, `CONCURRENCY` at a time.
pub async fn tag_infos(app: &App, g: &Granted, tags: &[String], origin: &Origin) -> Vec<TagInfo> {
    bounded(tags.iter().map(|t| tag_info(app, g, t, origin)).collect()).await
}

fn tag_info<'a>(
    app: &'a App,
    g: &'a Granted,
    tag: &'a str,
    origin: &'a Origin,
) -> BoxFuture<'a, TagInfo> {
    Box::pin(async move {
        match manifest(app, g, tag, origin).await {
            Ok(Some(m)) => TagInfo {
                tag: tag.to_owned(),
                digest: Some(m.digest.clone()),
                summary: summary(app, g, &m, origin).await,
            },
            _ => TagInfo {
                tag: tag.to_owned(),
                digest: None,
                summary: Arc::default(),
            },
        }
    })
}

/// Each index child's compressed size and creation date (`None` for a child
/// that is not an image or could not be read; only the first `MAX_CHILDREN`
/// are looked at).
pub async fn children(
    app: &App,
    g: &Granted,
    children: &[Descriptor],
    origin: &Origin,
) -> Vec<Option<(u64, Option<String>)>> {
    let mut out = bounded(
        children
            .iter()
            .take(MAX_CHILDREN)
            .map(|d| child_size_and_date(app, g, d, origin))
            .collect(),
    )
    .await;
    out.resize(children.len(), None);
    out
}

/// An index child's compressed size and creation date, if it is an image.
fn child_size_and_date<'a>(
    app: &'a App,
    g: &'a Granted,
    d: &'a Descriptor,
    origin: &'a Origin,
) -> BoxFuture<'a, Option<(u64, Option<String>)>> {
    Box::pin(async move {
        if !crate::access::is_valid_digest(&d.digest) {
            return None;
        }
        let child = manifest(app, g, &d.digest, origin).await.ok()??;
        if child.is_index() {
            return None;
        }
        let created = match &child.doc.config {
            Some(c) => config(app, g, &c.digest, origin)
                .await
                .ok()?
                .created
                .clone(),
            None => None,
        };
        Some((child.image_size(), created))
    })
}

/// Boxed, `Send` futures: naming the type keeps rustc's higher-ranked
/// `Send` inference happy inside hyper's service futures.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Runs `futures` `CONCURRENCY` at a time, keeping their order.
async fn bounded<T>(futures: Vec<BoxFuture<'_, T>>) -> Vec<T> {
    futures_util::stream::iter(futures)
        .buffered(CONCURRENCY)
        .collect()
        .await
}

/// Referrers of a manifest (signatures, SBOMs, attestations).
#[derive(Debug, Clone)]
pub enum Referrers {
    /// The upstream answered the OCI 1.1 referrers API (maybe with none).
    Listed(Vec<Descriptor>),
    /// No referrers API; the OCI fallback tag `sha256-<hex>` and cosign's
    /// `.sig`/`.att`/`.sbom` tags found instead.
    Fallback {
        listed: Vec<Descriptor>,
        tags: Vec<String>,
    },
}

pub async fn referrers(
    app: &App,
    g: &Granted,
    digest: &str,
    all_tags: &[String],
    origin: &Origin,
) -> Result<Referrers, UiError> {
    let pq = format!("/v2/{}/referrers/{digest}", g.name);
    let resp = app
        .upstream
        .request(Method::GET, &pq, Some(OCI_INDEX), origin)
        .await
        .map_err(upstream_down)?;
    let is_index = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(OCI_INDEX));
    if resp.status() == StatusCode::OK && is_index {
        let bytes = body::collect_limited(resp.into_body(), MAX_MANIFEST)
            .await
            .map_err(|e| UiError::Upstream(format!("referrers unreadable: {e}")))?;
        let doc: ManifestDoc = serde_json::from_slice(&bytes)
            .map_err(|_| UiError::Upstream("the referrers answer is not an index".into()))?;
        return Ok(Referrers::Listed(doc.manifests));
    }
    // No referrers API (distribution 2.8 answers 404): the fallback tag schema.
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("", ""));
    let base = format!("{algorithm}-{hex}");
    let mut listed = Vec::new();
    if all_tags.contains(&base)
        && let Ok(Some(m)) = manifest(app, g, &base, origin).await
        && m.is_index()
    {
        listed = m.doc.manifests;
    }
    let tags = all_tags
        .iter()
        .filter(|t| {
            t.strip_prefix(&base)
                .is_some_and(|rest| [".sig", ".att", ".sbom"].contains(&rest))
        })
        .cloned()
        .collect();
    Ok(Referrers::Fallback { listed, tags })
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// Done (202).
    Done,
    /// Nothing there (404).
    NotFound,
    /// The upstream has deletion disabled (distribution: 405 UNSUPPORTED).
    Disabled,
    /// The upstream refused this kind of delete (distribution 2.8 answers a
    /// tag delete with 400: it deletes manifests by digest only).
    Refused(String),
}

/// `DELETE /v2/<name>/manifests/<reference>`, only when the ACL grants delete.
/// Every attempt that reaches the upstream goes into the audit trail as an
/// `upstream_write` by `account`, as a delete through `/v2/` does.
///
/// Tag rules hold here as on `/v2/`: under an ACL with `tag` rules the
/// delete is decided again with what `reference` names, and an immutable
/// tag (or a manifest one points to) is not deleted; the hold on the
/// repository lasts until the upstream answered.
pub async fn delete(
    app: &App,
    g: &Granted,
    subject: &Subject<'_>,
    reference: &str,
    origin: &Origin,
) -> Result<Deleted, UiError> {
    if !g.may_delete() {
        return Err(UiError::Forbidden(format!(
            "You may not delete in {}.",
            g.name
        )));
    }
    let account = subject.account;
    let named = Reference::parse(reference);
    if app.acl.has_tag_rules() {
        let need = Scope::repository(&g.name, [Action::Delete]);
        if app.acl.grant_at(subject, &need, named.tag()) != need.actions {
            app.metrics.tag_refused("acl");
            return Err(UiError::Forbidden(format!(
                "The ACL does not allow deleting {reference} in {}.",
                g.name
            )));
        }
    }
    let rules = &app.config.immutable;
    let refused = |refusal: Refusal| {
        app.audit.record(Event::TagImmutableRefused {
            account: account.to_owned(),
            client: origin.client_ip,
            action: refusal.kind(),
            repository: g.name.clone(),
            tag: refusal.tag().to_owned(),
            digest: named.tag().is_none().then(|| reference.to_owned()),
            existing: None,
            rule: refusal.rule().to_string(),
            via: "ui",
        });
        app.metrics.tag_refused(refusal.kind());
        UiError::Forbidden(format!("{}.", refusal.message(&g.name)))
    };
    let _hold = match named {
        Reference::Tag(tag) => match rules.protecting(account, &g.name, tag) {
            Some(rule) => {
                return Err(refused(Refusal::Delete {
                    rule,
                    tag: tag.to_owned(),
                    digest: None,
                }));
            }
            None => None,
        },
        Reference::Digest(digest) if rules.covers_repository(account, &g.name) => {
            match immutable::check_delete_digest(
                &app.upstream,
                origin,
                rules,
                account,
                &g.name,
                digest,
            )
            .await
            {
                Ok(Ok(hold)) => Some(hold),
                Ok(Err(refusal)) => return Err(refused(refusal)),
                Err(e) => {
                    tracing::error!(error = %e, "immutable tag check failed; delete refused");
                    return Err(UiError::Upstream(
                        "could not check the immutable tags of this repository".into(),
                    ));
                }
            }
        }
        Reference::Digest(_) => None,
    };
    let pq = format!("/v2/{}/manifests/{reference}", g.name);
    let result = app
        .upstream
        .request(Method::DELETE, &pq, None, origin)
        .await;
    let status = result.as_ref().map_or(502, |r| r.status().as_u16());
    if (200..300).contains(&status) {
        app.listing.invalidate();
    }
    app.audit.record(Event::UpstreamWrite {
        account: account.to_owned(),
        client: origin.client_ip,
        action: "delete_manifest",
        repository: g.name.clone(),
        reference: Some(reference.to_owned()),
        digest: result
            .as_ref()
            .ok()
            .and_then(|r| r.headers().get("docker-content-digest"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        status,
        outcome: if (200..300).contains(&status) {
            "ok"
        } else {
            "failed"
        },
    });
    let resp = result.map_err(upstream_down)?;
    let status = resp.status();
    if status.is_success() {
        return Ok(Deleted::Done);
    }
    let bytes = body::collect_limited(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let (code, message) = registry_error(&bytes);
    Ok(match status {
        StatusCode::NOT_FOUND => Deleted::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => Deleted::Disabled,
        _ if code == "UNSUPPORTED" => Deleted::Disabled,
        StatusCode::BAD_REQUEST => Deleted::Refused(message),
        _ => {
            tracing::error!(%status, path = pq, code, "upstream delete failed");
            return Err(UiError::Upstream(format!(
                "the upstream registry answered {status}{}",
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            )));
        }
    })
}

/// The first `errors[]` entry of a registry error body: (code, message).
fn registry_error(bytes: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let e = &v["errors"][0];
    let s = |k: &str| {
        e[k].as_str()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect()
    };
    (s("code"), s("message"))
}

fn upstream_down(e: crate::upstream::UpstreamError) -> UiError {
    tracing::error!(error = %e, "upstream request failed");
    UiError::Upstream("the upstream registry is unreachable".into())
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Whether `bytes` hash to `digest` (sha256 or sha512; others never match).
pub fn digest_matches(digest: &str, bytes: &[u8]) -> bool {
    match digest.split_once(':') {
        Some(("sha256", h)) => hex(&Sha256::digest(bytes)) == h,
        Some(("sha512", h)) => hex(&Sha512::digest(bytes)) == h,
        _ => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the epoch of an RFC 3339 date (`Z` or `±HH:MM`, fractional
/// seconds ignored); 0 when it does not parse, so unknown dates sort last
/// among newest-first.
pub fn sort_key(created: &str) -> u64 {
    parse_rfc3339(created).unwrap_or(0)
}

pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.len() < 20 || !s.is_char_boundary(19) {
        return None;
    }
    let (datetime, rest) = s.split_at(19);
    // Skip fractional seconds, then read the offset.
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let (sign, hm) = match rest.as_bytes().first()? {
                b'+' => (1, &rest[1..]),
                b'-' => (-1, &rest[1..]),
                _ => return None,
            };
            let (h, m) = hm.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    let t = humantime::parse_rfc3339(&format!("{datetime}Z")).ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
    u64::try_from(secs - offset).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked() {
        let d = sha256_digest(b"abc");
        assert!(digest_matches(&d, b"abc"));
        assert!(!digest_matches(&d, b"abd"));
        assert!(!digest_matches(
            "md5:900150983cd24fb0d6963f7d28e17f72",
            b"abc"
        ));
        let sha512 = format!("sha512:{}", hex(&Sha512::digest(b"abc")));
        assert!(digest_matches(&sha512, b"abc"));
    }

    #[test]
    fn manifests_and_indexes_parse() {
        let image = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa","size":10},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:bb","size":100}]}"#;
        let m = parse_manifest("sha256:x".into(), "", image).unwrap();
        assert!(!m.is_index());
        assert_eq!(m.image_size(), 110);
        // No mediaType: an index is told apart by its fields.
        let index = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "digest":"sha256:cc","size":5,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#;
        let m = parse_manifest("sha256:y".into(), "application/json", index).unwrap();
        assert!(m.is_index());
        assert_eq!(
            m.doc.manifests[0].platform.as_ref().unwrap().display(),
            "linux/arm64/v8"
        );
        // Docker's v2 list by Content-Type.
        let m = parse_manifest(
            "sha256:z".into(),
            DOCKER_LIST,
            br#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .unwrap();
        assert!(m.is_index());
        assert!(parse_manifest("d".into(), "", b"not json").is_err());
        let schema1 = br#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#;
        assert!(parse_manifest("d".into(), "", schema1).is_err());
    }

    #[test]
    fn configs_parse_docker_field_names() {
        let c: ImageConfig = serde_json::from_str(
            r#"{"created":"2024-05-01T10:00:00.123456789Z","architecture":"amd64","os":"linux",
            "config":{"Entrypoint":["/bin/app"],"Cmd":["--serve"],"Env":["PATH=/bin"],
            "Labels":{"a":"b"},"ExposedPorts":{"8080/tcp":{}},"WorkingDir":"/srv","User":"app"},
            "history":[{"created":"2024-05-01T10:00:00Z","created_by":"COPY app /bin/app"},
            {"created_by":"ENV PATH=/bin","empty_layer":true}]}"#,
        )
        .unwrap();
        let cc = c.config.unwrap();
        assert_eq!(cc.entrypoint.unwrap(), ["/bin/app"]);
        assert_eq!(cc.exposed_ports.unwrap().keys().next().unwrap(), "8080/tcp");
        assert!(c.history[1].empty_layer);
    }

    #[test]
    fn dates_sort() {
        assert!(sort_key("2024-05-01T10:00:00.5Z") > sort_key("2024-04-30T23:59:59Z"));
        assert_eq!(sort_key("yesterday"), 0);
        assert_eq!(
            sort_key("2024-05-01T12:00:00+02:00"),
            sort_key("2024-05-01T10:00:00Z")
        );
        assert_eq!(
            sort_key("2024-05-01T09:30:00-00:30"),
            sort_key("2024-05-01T10:00:00.999Z")
        );
        assert_eq!(sort_key("1970-01-01T00:00:10Z"), 10);
    }

    #[test]
    fn registry_errors_are_read() {
        let (code, message) = registry_error(
            br#"{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}"#,
        );
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("UNSUPPORTED", "The operation is unsupported.")
        );
        assert_eq!(registry_error(b"404 page not found").0, "");
    }
}
