//! Enforcing `[[immutable]]` release tags against the upstream's state.
//!
//! The rules themselves (which tag of which repository is immutable for
//! whom) are pure and live in [`crate::authz::tags`]; this module asks the
//! upstream what a tag points to now and serializes the writes that could
//! race. Both `/v2/` (`http::registry`) and the web UI's delete use it, so
//! neither path can bypass it.
//!
//! Concurrency, within one process: a push to an immutable tag holds that
//! tag's lock (and its repository's lock shared) from the upstream lookup
//! until the upstream has answered the PUT; a delete by digest in a
//! repository with immutable tags holds the repository's lock exclusively
//! from the tag lookups until the upstream has answered the DELETE. So two
//! first pushes of one tag through one gate cannot both see "absent": the
//! second sees the first one's digest. Across instances there is no shared
//! lock (docs/tags.md says what that leaves open).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use http::{Method, StatusCode, header};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::authz::tags::{Immutable, RuleRef};
use crate::http::body;
use crate::upstream::{Origin, Upstream, UpstreamError};

/// Every manifest media type, so that the upstream answers with the digest
/// of what it stores (distribution converts or picks a platform otherwise).
const ACCEPT_ANY_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v1+prettyjws, \
     application/vnd.docker.distribution.manifest.v1+json";

/// Tags asked per upstream page, and pages read at most (100k tags).
const TAGS_PAGE: usize = 1000;
const MAX_TAG_PAGES: usize = 100;
const MAX_TAGS_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A push to an immutable tag that exists with another digest.
    Overwrite {
        rule: RuleRef,
        tag: String,
        existing: String,
        pushed: String,
    },
    /// A delete of an immutable tag, or of a manifest an immutable tag
    /// points to.
    Delete {
        rule: RuleRef,
        tag: String,
        digest: Option<String>,
    },
}

impl Refusal {
    pub fn rule(&self) -> &RuleRef {
        match self {
            Refusal::Overwrite { rule, .. } | Refusal::Delete { rule, .. } => rule,
        }
    }

    pub fn tag(&self) -> &str {
        match self {
            Refusal::Overwrite { tag, .. } | Refusal::Delete { tag, .. } => tag,
        }
    }

    /// `overwrite` or `delete`: the audit event's and the metric's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Overwrite { .. } => "overwrite",
            Refusal::Delete { .. } => "delete",
        }
    }

    /// What the client is told (no secret: the caller may pull the tag).
    pub fn message(&self, repository: &str) -> String {
        match self {
            Refusal::Overwrite {
                rule,
                tag,
                existing,
                ..
            } => format!(
                "tag {tag} of {repository} is immutable ({rule}) and points to {existing}; \
                 it cannot be overwritten"
            ),
            Refusal::Delete {
                rule,
                tag,
                digest: None,
            } => format!("tag {tag} of {repository} is immutable ({rule}); it cannot be deleted"),
            Refusal::Delete {
                rule,
                tag,
                digest: Some(d),
            } => format!(
                "manifest {d} is tagged {tag} in {repository}, which is immutable ({rule}); \
                 it cannot be deleted"
            ),
        }
    }
}

/// Why no decision could be made: the upstream did not say what a tag
/// points to. The write is refused (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum Unverified {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the upstream answered {0}")]
    Status(StatusCode),
    #[error("the upstream answered without a usable Docker-Content-Digest")]
    NoDigest,
    #[error("the upstream tag list is unreadable: {0}")]
    TagList(String),
}

/// Held while an immutable-tag write is decided and sent.
#[derive(Debug)]
pub enum Hold {
    Tag(OwnedRwLockReadGuard<()>, OwnedMutexGuard<()>),
    Repository(OwnedRwLockWriteGuard<()>),
}

/// The sha256 digest of a manifest body, as the registry computes it.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in Sha256::digest(bytes) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Decides a manifest PUT of `pushed` (its body's digest) as `tag` when
/// `rule` makes the tag immutable: absent upstream or already `pushed`,
/// it may go on, with the returned hold kept until the upstream answered
/// the PUT; pointing elsewhere, it is refused.
pub async fn check_push(
    upstream: &Upstream,
    origin: &Origin,
    rule: RuleRef,
    repository: &str,
    tag: &str,
    pushed: &str,
) -> Result<Result<Hold, Refusal>, Unverified> {
    let repo_lock = locks().repository(repository);
    let shared = repo_lock.read_owned().await;
    let tag_lock = locks().tag(repository, tag);
    let exclusive = tag_lock.lock_owned().await;
    // Looked up under the lock: a push that held it before us has been
    // answered by the upstream, so its digest is what we see.
    match tag_digest(upstream, origin, repository, tag).await? {
        Some(existing) if existing != pushed => Ok(Err(Refusal::Overwrite {
            rule,
            tag: tag.to_owned(),
            existing,
            pushed: pushed.to_owned(),
        })),
        _ => Ok(Ok(Hold::Tag(shared, exclusive))),
    }
}

/// Decides a manifest DELETE by `digest` in `repository` when some tag there
/// may be immutable for the caller (`rules.covers_repository`): refused
/// while such a tag points to `digest`. The hold is kept until the upstream
/// answered the DELETE, so no immutable push lands in between.
pub async fn check_delete_digest(
    upstream: &Upstream,
    origin: &Origin,
    rules: &Immutable,
    account: &str,
    repository: &str,
    digest: &str,
) -> Result<Result<Hold, Refusal>, Unverified> {
    let repo_lock = locks().repository(repository);
    let exclusive = repo_lock.write_owned().await;
    for tag in tags(upstream, origin, repository).await? {
        let Some(rule) = rules.protecting(account, repository, &tag) else {
            continue;
        };
        if tag_digest(upstream, origin, repository, &tag)
            .await?
            .is_some_and(|d| d == digest)
        {
            return Ok(Err(Refusal::Delete {
                rule,
                tag,
                digest: Some(digest.to_owned()),
            }));
        }
    }
    Ok(Ok(Hold::Repository(exclusive)))
}

/// What `tag` points to upstream; `None` when it does not exist.
pub async fn tag_digest(
    upstream: &Upstream,
    origin: &Origin,
    repository: &str,
    tag: &str,
) -> Result<Option<String>, Unverified> {
    let resp = upstream
        .request(
            Method::HEAD,
            &format!("/v2/{repository}/manifests/{tag}"),
            Some(ACCEPT_ANY_MANIFEST),
            origin,
        )
        .await?;
    let status = resp.status();
    let digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Read to the end (nothing, for a HEAD) so the connection is reused.
    let _ = body::collect_limited(resp.into_body(), 64 * 1024).await;
    match status {
        StatusCode::NOT_FOUND => Ok(None),
        s if s.is_success() => match digest {
            Some(d) if d.starts_with("sha256:") => Ok(Some(d)),
            _ => Err(Unverified::NoDigest),
        },
        s => Err(Unverified::Status(s)),
    }
}

/// Every tag of `repository` upstream (none when it does not exist).
async fn tags(
    upstream: &Upstream,
    origin: &Origin,
    repository: &str,
) -> Result<Vec<String>, Unverified> {
    let mut all: Vec<String> = Vec::new();
    for _ in 0..MAX_TAG_PAGES {
        let mut pq = format!("/v2/{repository}/tags/list?n={TAGS_PAGE}");
        if let Some(last) = all.last() {
            pq.push_str("&last=");
            pq.extend(form_urlencoded::byte_serialize(last.as_bytes()));
        }
        let resp = upstream.request(Method::GET, &pq, None, origin).await?;
        let status = resp.status();
        let more = resp.headers().contains_key(header::LINK);
        let bytes = body::collect_limited(resp.into_body(), MAX_TAGS_PAGE_BYTES)
            .await
            .map_err(|e| Unverified::TagList(e.to_string()))?;
        if status == StatusCode::NOT_FOUND && all.is_empty() {
            return Ok(all);
        }
        if !status.is_success() {
            return Err(Unverified::Status(status));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| Unverified::TagList("not JSON".into()))?;
        // distribution answers `"tags": null` for a repository without tags.
        let page: Vec<String> = v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let done = !more || page.is_empty();
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
    // Fail closed: a tag we did not read might point to the digest.
    Err(Unverified::TagList(format!(
        "more than {} tags",
        TAGS_PAGE * MAX_TAG_PAGES
    )))
}

/// The per-process locks. Kept for the process, not per configuration: a
/// reload in the middle of a push must not hand a second push a fresh lock.
struct Locks {
    repositories: Mutex<HashMap<String, Weak<RwLock<()>>>>,
    tags: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

fn locks() -> &'static Locks {
    static LOCKS: OnceLock<Locks> = OnceLock::new();
    LOCKS.get_or_init(|| Locks {
        repositories: Mutex::new(HashMap::new()),
        tags: Mutex::new(HashMap::new()),
    })
}

impl Locks {
    fn repository(&self, repository: &str) -> Arc<RwLock<()>> {
        shared(&self.repositories, repository)
    }

    fn tag(&self, repository: &str, tag: &str) -> Arc<tokio::sync::Mutex<()>> {
        // `:` never occurs in a repository name, so the key is unambiguous.
        shared(&self.tags, &format!("{repository}:{tag}"))
    }
}

/// The live lock for `key`, or a new one. Entries nobody holds any more are
/// swept when the map has grown, so it stays as small as the writes in flight.
fn shared<T: Default>(map: &Mutex<HashMap<String, Weak<T>>>, key: &str) -> Arc<T> {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(lock) = map.get(key).and_then(Weak::upgrade) {
        return lock;
    }
    if map.len() >= 64 {
        map.retain(|_, w| w.strong_count() > 0);
    }
    let lock = Arc::new(T::default());
    map.insert(key.to_owned(), Arc::downgrade(&lock));
    lock
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_of_the_bytes() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[tokio::test]
    async fn one_lock_per_tag_while_held_and_none_left_after() {
        let a = locks().tag("r/x", "v1");
        let b = locks().tag("r/x", "v1");
        assert!(Arc::ptr_eq(&a, &b));
        let held = a.clone().lock_owned().await;
        assert!(b.try_lock().is_err(), "the same tag is serialized");
        assert!(
            locks().tag("r/x", "v2").try_lock().is_ok(),
            "other tags are not"
        );
        drop(held);
        drop((a, b));
        let map = locks().tags.lock().unwrap();
        assert!(map.get("r/x:v1").is_none_or(|w| w.strong_count() == 0));
    }

    #[tokio::test]
    async fn a_digest_delete_excludes_pushes_in_its_repository() {
        let repo = locks().repository("r/y");
        let delete = repo.clone().write_owned().await;
        assert!(locks().repository("r/y").try_read().is_err());
        drop(delete);
        let push = locks().repository("r/y").read_owned().await;
        assert!(
            locks().repository("r/y").try_read().is_ok(),
            "pushes share it"
        );
        assert!(locks().repository("r/y").try_write().is_err());
        drop(push);
    }

    #[test]
    fn refusals_name_the_rule() {
        let rule = RuleRef {
            index: 1,
            name: "team/*".into(),
        };
        let r = Refusal::Overwrite {
            rule: rule.clone(),
            tag: "v1.0".into(),
            existing: "sha256:aa".into(),
            pushed: "sha256:bb".into(),
        };
        assert_eq!(
            r.message("team/app"),
            "tag v1.0 of team/app is immutable (immutable[1] (name = \"team/*\")) and points to sha256:aa; it cannot be overwritten"
        );
        let d = Refusal::Delete {
            rule,
            tag: "v1.0".into(),
            digest: Some("sha256:aa".into()),
        };
        assert!(d.message("team/app").contains("immutable[1]"));
        assert_eq!((r.kind(), d.kind()), ("overwrite", "delete"));
    }
}
