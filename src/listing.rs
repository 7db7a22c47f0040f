//! The upstream's list of repositories, read whole, shared by everything
//! that lists (`GET /v2/_catalog` and the web UI) and kept for a short
//! time.
//!
//! Depends on `upstream` only; `http::catalog` and `ui` filter the list
//! through the ACL themselves.
//!
//! Why one shared list: filtering the catalog per caller means reading
//! upstream pages until enough visible names turn up, and a caller who may
//! see few of many repositories made one request cost tens of upstream
//! requests (25 for one anonymous `GET /ui/` with 25,000 repositories, 50 for
//! `_catalog?n=1`). Now a listing is read at most once per [`TTL`] per
//! process however many ask (one reader, the others wait for its result),
//! at most [`MAX_PAGES`] pages of [`PAGE`] names; a request then costs an
//! in-memory filter. A successful write through the gate (a push or a
//! delete) drops the list, so that this instance's clients see their own
//! pushes at once; other instances see them within [`TTL`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{StatusCode, header};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::http::body;
use crate::upstream::{Origin, Upstream, UpstreamError};

/// How long one listing is used.
pub const TTL: Duration = Duration::from_secs(5);
/// How long a failed listing is answered from memory (so that callers
/// queued behind a failing read do not each wait for another one).
const FAILURE_TTL: Duration = Duration::from_secs(1);
/// Names asked per upstream page (distribution's largest page).
pub const PAGE: usize = 1000;
/// Upstream pages read for one listing at most: 100,000 names.
pub const MAX_PAGES: usize = 100;
/// Upstream catalog pages larger than this are refused.
const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// The upstream's repositories, sorted (byte order), and whether there
/// were more than [`MAX_PAGES`] pages of them (the rest is not listed).
#[derive(Debug, Default)]
pub struct Listing {
    pub names: Vec<String>,
    pub truncated: bool,
}

impl Listing {
    /// The names strictly after `last` (all of them without one), in order.
    pub fn after(&self, last: Option<&str>) -> &[String] {
        let start = match last {
            Some(last) => self.names.partition_point(|n| n.as_str() <= last),
            None => 0,
        };
        &self.names[start..]
    }
}

/// Why no listing could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ListingError {
    /// No answer (refused connection, timeout): the upstream is down.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream did not answer in time")]
    Timeout,
    /// It answered, but not with a catalog (an error status, garbage).
    #[error("upstream catalog refused or unusable: {0}")]
    Refused(String),
}

type Stored = (Instant, u64, Result<Arc<Listing>, ListingError>);

/// See the module documentation.
#[derive(Default)]
pub struct ListingCache {
    /// The last result, when it was made, and the generation it was read in.
    /// The lock is held while reading: concurrent callers share one read.
    last: Mutex<Option<Stored>>,
    /// Bumped by every write through the gate: older listings are stale.
    generation: AtomicU64,
    /// Upstream catalog pages read so far (for tests and the docs' figures).
    pages_read: AtomicU64,
}

impl ListingCache {
    /// The current listing: from memory when younger than [`TTL`] and no
    /// write happened since, else read from the upstream (once, however
    /// many ask at the same time).
    pub async fn get(
        &self,
        upstream: &Upstream,
        origin: &Origin,
    ) -> Result<Arc<Listing>, ListingError> {
        let mut last = self.last.lock().await;
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some((at, g, result)) = &*last
            && *g == generation
            && at.elapsed() < if result.is_ok() { TTL } else { FAILURE_TTL }
        {
            return result.clone();
        }
        let result = self.read(upstream, origin).await.map(Arc::new);
        if let Err(e) = &result {
            tracing::error!(error = %e, "upstream catalog listing failed");
        }
        *last = Some((Instant::now(), generation, result.clone()));
        result
    }

    /// Something was written upstream: the next listing is read afresh.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Upstream catalog pages read by this cache so far.
    pub fn pages_read(&self) -> u64 {
        self.pages_read.load(Ordering::Relaxed)
    }

    async fn read(&self, upstream: &Upstream, origin: &Origin) -> Result<Listing, ListingError> {
        let mut names = Vec::new();
        let mut last: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut pq = format!("/v2/_catalog?n={PAGE}");
            if let Some(last) = &last {
                pq.push_str("&last=");
                pq.extend(form_urlencoded::byte_serialize(last.as_bytes()));
            }
            self.pages_read.fetch_add(1, Ordering::Relaxed);
            let (page, more) = page(upstream, &pq, origin).await?;
            match page.last() {
                Some(name) if more => last = Some(name.clone()),
                _ => {
                    names.extend(page);
                    return Ok(finish(names, false));
                }
            }
            names.extend(page);
        }
        tracing::warn!(
            names = names.len(),
            "the upstream catalog is longer than the gate lists; the rest is not shown"
        );
        Ok(finish(names, true))
    }
}

fn finish(mut names: Vec<String>, truncated: bool) -> Listing {
    names.sort_unstable();
    names.dedup();
    Listing { names, truncated }
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    repositories: Vec<String>,
}

/// One upstream page and whether the upstream says there is more.
async fn page(
    upstream: &Upstream,
    pq: &str,
    origin: &Origin,
) -> Result<(Vec<String>, bool), ListingError> {
    let resp = upstream.get(pq, origin).await.map_err(|e| match e {
        UpstreamError::Timeout => ListingError::Timeout,
        e => ListingError::Unreachable(e.to_string()),
    })?;
    let status = resp.status();
    if status != StatusCode::OK {
        return Err(ListingError::Refused(format!("status {status}")));
    }
    let more = resp.headers().contains_key(header::LINK);
    let bytes = body::collect_limited(resp.into_body(), MAX_PAGE_BYTES)
        .await
        .map_err(|e| ListingError::Refused(format!("unreadable page: {e}")))?;
    let page: Page = serde_json::from_slice(&bytes)
        .map_err(|e| ListingError::Refused(format!("not a catalog: {e}")))?;
    Ok((page.repositories, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_after_a_cursor() {
        let l = finish(
            ["b", "a/x", "c", "a", "b"].map(String::from).to_vec(),
            false,
        );
        assert_eq!(l.names, ["a", "a/x", "b", "c"]);
        let cases: [(Option<&str>, &[&str]); 6] = [
            (None, &["a", "a/x", "b", "c"]),
            (Some(""), &["a", "a/x", "b", "c"]),
            (Some("a"), &["a/x", "b", "c"]),
            (Some("a/"), &["a/x", "b", "c"]),
            (Some("bb"), &["c"]),
            (Some("c"), &[]),
        ];
        for (last, want) in cases {
            assert_eq!(l.after(last), want, "{last:?}");
        }
    }
}
