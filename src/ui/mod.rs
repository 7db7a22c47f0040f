//! The built-in web UI under `/ui/`: browse, inspect and delete what the
//! viewer may, behind the same logins and ACL as docker.
//!
//! Server-rendered HTML (askama templates in `templates/ui/`, compiled in),
//! a stylesheet and a little JavaScript embedded with `include_bytes!`; no
//! build step beyond `cargo build`. Every page asks the ACL for the viewer
//! (anonymous = account `""`) before it asks the upstream anything, and talks
//! to the upstream only through `app.upstream`.
//!
//! Routes:
//! - `GET /ui/` repositories (`?q=` search, `?page=`)
//! - `GET|POST /ui/login`, `POST /ui/logout`
//! - `GET /ui/r/<name>` tags; `GET /ui/r/<name>/-/tag/<tag>`,
//!   `GET /ui/r/<name>/-/manifest/<digest>` a manifest or index
//! - `GET /ui/r/<name>/-/delete?reference=..` confirmation, `POST` deletes
//! - `GET /ui/activity` recent upstream writes (`?repo=`, `?all=1`, `?page=`)
//! - `GET /ui/static/<file>` assets
//!
//! (`-` cannot be a repository path component, so `/-/` separates the name.)

mod assets;
mod login;
mod oidc;
pub mod registry;
pub mod session;
mod tokens;
mod views;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::access;
use crate::app::App;
use crate::audit::RecentWrite;
use crate::authn::Identity;
use crate::authz::Subject;
use crate::http::Conn;
use crate::http::body::{self, Body};
use crate::scope::{Action, Scope};
use crate::secret::Secret;
use crate::upstream::Origin;

use registry::{Deleted, Granted, ImageConfig, Summary};
use session::Viewer;
use views::{Layout, MessagePage, Pager};

/// Repositories a page.
const REPOS_PER_PAGE: usize = 100;
/// Tags a page.
const TAGS_PER_PAGE: usize = 50;
/// Upstream writes a page on the activity page.
const WRITES_PER_PAGE: usize = 50;
/// Up to this many tags, every tag is looked up and the list sorted by date;
/// beyond, sorted by name and only the shown page is looked up.
const MAX_DETAILED_TAGS: usize = 300;
const MAX_FORM_BYTES: usize = 16 * 1024;

/// The UI's in-memory state: ended sessions and caches. Part of `App`.
pub struct UiState {
    /// `jti`s of sessions ended by logout, until they would have expired.
    pub(crate) revoked: moka::sync::Cache<String, ()>,
    /// (account, backend) -> identity, so the ACL sees current labels.
    pub(crate) identities: moka::future::Cache<(String, String), Identity>,
    /// Image configs by (repository, digest): content is immutable, but a
    /// digest proves nothing about where it is stored (a manifest may name
    /// another repository's config, e.g. with `urls`), so a cached config
    /// answers only for the repository it was read from, whose pull the
    /// viewer's `Granted` proves.
    pub(crate) configs: moka::sync::Cache<(String, String), Arc<ImageConfig>>,
    /// Manifest summaries by (repository, digest), for the same reason.
    pub(crate) summaries: moka::sync::Cache<(String, String), Arc<Summary>>,
}

impl Default for UiState {
    fn default() -> Self {
        UiState {
            revoked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(session::SESSION_LIFETIME + Duration::from_secs(60))
                .build(),
            identities: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(session::IDENTITY_TTL)
                .build(),
            configs: moka::sync::Cache::builder().max_capacity(2_000).build(),
            summaries: moka::sync::Cache::builder().max_capacity(20_000).build(),
        }
    }
}

/// Why a page could not be shown; each becomes an error page.
#[derive(Debug, Clone)]
pub enum UiError {
    BadRequest(String),
    NotFound(String),
    Forbidden(String),
    Conflict(String),
    MethodNotAllowed,
    /// The user directory could not say who the session's account is.
    Unavailable,
    Upstream(String),
    Internal,
}

impl UiError {
    fn status(&self) -> StatusCode {
        match self {
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::Forbidden(_) => StatusCode::FORBIDDEN,
            UiError::Conflict(_) => StatusCode::CONFLICT,
            UiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            UiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            UiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            UiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn text(&self) -> (&'static str, String) {
        match self {
            UiError::BadRequest(m) => ("Bad request", m.clone()),
            UiError::NotFound(m) => ("Not found", m.clone()),
            UiError::Forbidden(m) => ("Not allowed", m.clone()),
            UiError::Conflict(m) => ("Not done", m.clone()),
            UiError::MethodNotAllowed => (
                "Not allowed",
                "This page does not take that kind of request.".into(),
            ),
            UiError::Unavailable => (
                "Directory unavailable",
                "The user directory is unavailable, so the gate cannot check your \
                 account. Try again in a moment."
                    .into(),
            ),
            UiError::Upstream(m) => ("Registry error", format!("{m}.")),
            UiError::Internal => ("Internal error", "Something went wrong in the gate.".into()),
        }
    }
}

/// One request's context.
struct Ctx<'a> {
    app: &'a App,
    conn: Conn,
    /// `http://gate:5000`: the gate as the browser sees it.
    base: String,
    origin: Origin,
    viewer: Viewer,
    path: String,
    cookies: Vec<HeaderValue>,
}

impl Ctx<'_> {
    fn subject(&self) -> Subject<'_> {
        Subject {
            account: &self.viewer.identity.account,
            labels: &self.viewer.identity.labels,
            ip: Some(self.conn.peer.ip()),
            service: &self.app.config.token.service,
        }
    }

    fn layout(&self, title: impl Into<String>) -> Layout {
        Layout::new(
            title,
            &self.viewer.identity.account,
            &self.viewer.csrf,
            &self.path,
        )
    }

    /// `gate:5000`: what `docker pull` needs.
    fn registry_host(&self) -> &str {
        self.base
            .split_once("://")
            .map_or(self.base.as_str(), |(_, h)| h)
            .trim_end_matches('/')
    }

    fn granted(&self, name: &str) -> Result<Granted, UiError> {
        Granted::check(self.app, &self.subject(), name).ok_or_else(|| {
            let mut m = format!("There is no repository {name}, or you may not see it.");
            if !self.viewer.signed_in() {
                m.push_str(" Log in to see more.");
            }
            UiError::NotFound(m)
        })
    }
}

/// Serves `/`, `/ui` and `/ui/...`. Never fails: errors are pages.
/// Returns the response and the account for the access log.
pub async fn handle(
    app: &App,
    req: Request<Incoming>,
    conn: Conn,
) -> (Response<Body>, Option<String>) {
    let path = req.uri().path().to_owned();
    if path == "/" || path == "/ui" {
        return (redirect("/ui/"), None);
    }
    if let Some(name) = path.strip_prefix("/ui/static/") {
        let resp = assets::serve(name, req.method(), req.headers())
            .unwrap_or_else(|| plain(StatusCode::NOT_FOUND, "not found"));
        return (resp, None);
    }
    let base = match crate::http::external_base(app, &req, conn) {
        Ok(b) => b,
        Err(_) => return (plain(StatusCode::BAD_REQUEST, "bad Host header"), None),
    };
    let resolved = match session::resolve(app, req.headers(), conn.tls).await {
        Ok(r) => r,
        Err(e) => {
            let layout = Layout::new(e.text().0, "", "", "/ui/");
            return (finish(error_page(layout, &e), Vec::new()), None);
        }
    };
    let mut ctx = Ctx {
        app,
        conn,
        origin: Origin {
            client_ip: conn.peer.ip(),
            hop: conn.hop,
            external_base: base.clone(),
        },
        base,
        viewer: resolved.viewer,
        path: path.clone(),
        cookies: resolved.set_cookies,
    };
    let resp = match route(&mut ctx, req).await {
        Ok(r) => r,
        Err(e) => error_page(ctx.layout(e.text().0), &e),
    };
    let account = Some(ctx.viewer.identity.account.clone()).filter(|a| !a.is_empty());
    (finish(resp, ctx.cookies), account)
}

async fn route(ctx: &mut Ctx<'_>, req: Request<Incoming>) -> Result<Response<Body>, UiError> {
    let path = ctx.path.clone();
    let rest = &path["/ui/".len()..];
    let query = parse_query(req.uri().query());
    let method = req.method().clone();
    let read = method == Method::GET || method == Method::HEAD;
    match rest {
        "" if read => repositories(ctx, &query).await,
        "login" if read => Ok(login_page(ctx, &query)),
        "login" if method == Method::POST => login_post(ctx, req).await,
        "logout" if method == Method::POST => logout(ctx, req).await,
        "activity" if read => activity(ctx, &query).await,
        "tokens" if read => tokens::page(ctx).await,
        "tokens" if method == Method::POST => tokens::create(ctx, req).await,
        "tokens/revoke" if method == Method::POST => tokens::revoke(ctx, req).await,
        "tokens/logout-all" if method == Method::POST => tokens::logout_all(ctx, req).await,
        r if read && r.starts_with("oidc/") => {
            oidc::route(ctx, &r["oidc/".len()..], &query, req.headers()).await
        }
        "" | "login" | "logout" | "activity" | "tokens" | "tokens/revoke" | "tokens/logout-all" => {
            Err(UiError::MethodNotAllowed)
        }
        _ => {
            let Some(r) = rest.strip_prefix("r/") else {
                return Err(UiError::NotFound("There is no such page.".into()));
            };
            let (name, sub) = match r.split_once("/-/") {
                Some((n, s)) => (n, s),
                None => (r.trim_end_matches('/'), ""),
            };
            if !access::is_valid_name(name) {
                return Err(UiError::NotFound("That is not a repository name.".into()));
            }
            match (sub, read) {
                ("", true) => repository(ctx, name, &query).await,
                ("delete", true) => delete_page(ctx, name, &query).await,
                ("delete", false) if method == Method::POST => delete_post(ctx, name, req).await,
                _ if !read => Err(UiError::MethodNotAllowed),
                _ => {
                    if let Some(tag) = sub.strip_prefix("tag/")
                        && access::is_valid_tag(tag)
                    {
                        manifest_page(ctx, name, tag).await
                    } else if let Some(digest) = sub.strip_prefix("manifest/")
                        && access::is_valid_digest(digest)
                    {
                        manifest_page(ctx, name, digest).await
                    } else {
                        Err(UiError::NotFound("There is no such page.".into()))
                    }
                }
            }
        }
    }
}

async fn repositories(ctx: &mut Ctx<'_>, query: &Query) -> Result<Response<Body>, UiError> {
    let (mut names, truncated) =
        registry::visible_repositories(ctx.app, &ctx.subject(), &ctx.origin).await?;
    let q = query.get("q").trim().to_owned();
    if !q.is_empty() {
        let needle = q.to_lowercase();
        names.retain(|n| n.contains(&needle));
    }
    views::sort_for_grouping(&mut names);
    let (start, end, pages, page) = views::paginate(names.len(), query.page(), REPOS_PER_PAGE);
    let qs = form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>();
    let page_view = views::ReposPage {
        layout: ctx.layout("Repositories"),
        groups: views::group(&names[start..end]),
        total: names.len(),
        from: start + 1,
        to: end,
        pager: Pager::new(page, pages, |p| format!("/ui/?q={qs}&page={p}")),
        q,
        truncated,
    };
    render(StatusCode::OK, &page_view)
}

/// The recent upstream writes (pushes, deletes, mounts) the audit trail
/// kept, in the repositories the viewer may pull, newest first.
async fn activity(ctx: &Ctx<'_>, query: &Query) -> Result<Response<Body>, UiError> {
    let repo = query.get("repo").trim().to_owned();
    if !repo.is_empty() && !access::is_valid_name(&repo) {
        return Err(UiError::BadRequest("That is not a repository name.".into()));
    }
    let all = query.get("all") == "1";
    let subject = ctx.subject();
    // The same check as the repository list, once per repository.
    let mut may_pull: HashMap<String, bool> = HashMap::new();
    let retention = ctx.app.config.raw.store.activity_retention;
    let (writes, stored) = ctx.app.audit.activity(retention).await;
    let writes: Vec<RecentWrite> = writes
        .into_iter()
        .filter(|w| repo.is_empty() || w.repository == repo)
        .filter(|w| {
            *may_pull.entry(w.repository.clone()).or_insert_with(|| {
                access::is_valid_name(&w.repository)
                    && ctx
                        .app
                        .acl
                        .allows(&subject, &Scope::repository(&w.repository, [Action::Pull]))
            })
        })
        .collect();
    let rows = views::activity_rows(&writes);
    let (rows, hidden): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| all || !r.blob);
    let (start, end, pages, page) = views::paginate(rows.len(), query.page(), WRITES_PER_PAGE);
    let href = |all: bool, page: usize| {
        let mut h = "/ui/activity?".to_owned();
        if !repo.is_empty() {
            h.push_str("repo=");
            h.extend(form_urlencoded::byte_serialize(repo.as_bytes()));
            h.push('&');
        }
        if all {
            h.push_str("all=1&");
        }
        h.push_str(&format!("page={page}"));
        h
    };
    let page_view = views::ActivityPage {
        layout: ctx.layout("Activity"),
        total: rows.len(),
        from: start + 1,
        to: end,
        rows: rows[start..end].to_vec(),
        pager: Pager::new(page, pages, |p| href(all, p)),
        hidden: hidden.len(),
        toggle: href(!all, 1),
        all,
        repo,
        kept: if stored {
            format!(
                "Every gate sharing this one's store records here; writes are kept for {}.",
                humantime::format_duration(retention)
            )
        } else {
            format!(
                "The store is unavailable: this gate shows the last {} writes it made itself since it started.",
                crate::audit::RECENT_WRITES
            )
        },
    };
    render(StatusCode::OK, &page_view)
}

async fn repository(
    ctx: &mut Ctx<'_>,
    name: &str,
    query: &Query,
) -> Result<Response<Body>, UiError> {
    let g = ctx.granted(name)?;
    let (tags, truncated) = registry::tags(ctx.app, &g, &ctx.origin).await?;
    let by_name = tags.len() > MAX_DETAILED_TAGS;
    let (start, end, pages, page) = views::paginate(tags.len(), query.page(), TAGS_PER_PAGE);
    let infos = if by_name {
        let mut sorted = tags.clone();
        sorted.sort();
        registry::tag_infos(ctx.app, &g, &sorted[start..end], &ctx.origin).await
    } else {
        let mut all = registry::tag_infos(ctx.app, &g, &tags, &ctx.origin).await;
        all.sort_by(|a, b| {
            let key =
                |i: &registry::TagInfo| i.summary.created.as_deref().map_or(0, registry::sort_key);
            key(b).cmp(&key(a)).then_with(|| a.tag.cmp(&b.tag))
        });
        all.drain(start..end).collect()
    };
    let host = ctx.registry_host().to_owned();
    let immutable = &ctx.app.config.immutable;
    let viewer = ctx.viewer.identity.account.clone();
    let rows = infos
        .into_iter()
        .map(|i| views::TagRow {
            pull: format!("{host}/{name}:{}", i.tag),
            short: i
                .digest
                .as_deref()
                .map(views::short_digest)
                .unwrap_or_default(),
            digest: i.digest.clone().unwrap_or_default(),
            index: i.summary.index,
            size: if i.digest.is_some() {
                views::human_size(i.summary.size)
            } else {
                String::new()
            },
            created: views::date(i.summary.created.as_deref()),
            platforms: i.summary.platforms.clone(),
            immutable: immutable
                .protecting_anyone(name, &i.tag)
                .map(|r| r.to_string()),
            deletable: immutable.protecting(&viewer, name, &i.tag).is_none(),
            tag: i.tag,
        })
        .collect();
    let base = format!("/ui/r/{name}");
    let page_view = views::RepoPage {
        layout: ctx.layout(name),
        name: name.to_owned(),
        rows,
        total: tags.len(),
        pager: Pager::new(page, pages, |p| format!("{base}?page={p}")),
        by_name,
        truncated,
        may_delete: g.may_delete(),
    };
    render(StatusCode::OK, &page_view)
}

async fn manifest_page(
    ctx: &mut Ctx<'_>,
    name: &str,
    reference: &str,
) -> Result<Response<Body>, UiError> {
    let g = ctx.granted(name)?;
    let is_tag = !reference.contains(':');
    let m = registry::manifest(ctx.app, &g, reference, &ctx.origin)
        .await?
        .ok_or_else(|| {
            UiError::NotFound(format!(
                "{name} has no {} {reference}.",
                if is_tag { "tag" } else { "manifest" }
            ))
        })?;
    let (tags, _) = registry::tags(ctx.app, &g, &ctx.origin).await?;
    let details = if m.is_index() {
        registry::children(ctx.app, &g, &m.doc.manifests, &ctx.origin).await
    } else {
        Vec::new()
    };
    let children: Vec<views::ChildRow> = m
        .doc
        .manifests
        .iter()
        .zip(details.iter())
        .map(|(d, detail)| views::ChildRow {
            platform: d
                .platform
                .as_ref()
                .map(|p| {
                    if p.is_unknown() {
                        "attestation (unknown/unknown)".to_owned()
                    } else {
                        p.display()
                    }
                })
                .unwrap_or_else(|| "—".into()),
            short: views::short_digest(&d.digest),
            digest: d.digest.clone(),
            size: detail
                .as_ref()
                .map(|(size, _)| views::human_size(*size))
                .unwrap_or_default(),
            created: detail.as_ref().and_then(|(_, c)| views::date(c.as_deref())),
            media_type: d.media_type.clone(),
        })
        .collect();
    let compressed = if m.is_index() {
        details.iter().flatten().map(|(size, _)| size).sum()
    } else {
        m.image_size()
    };
    let image = if m.is_index() {
        None
    } else {
        let config = match &m.doc.config {
            Some(c) => registry::config(ctx.app, &g, &c.digest, &ctx.origin)
                .await
                .map_err(|e| e.text().1),
            None => Err("the manifest names no config".into()),
        };
        Some(views::ImageView::new(
            &m,
            config.as_deref().map_err(Clone::clone),
        ))
    };
    let referrers = registry::referrers(ctx.app, &g, &m.digest, &tags, &ctx.origin)
        .await
        .map_err(|e| e.text().1);
    let host = ctx.registry_host();
    let pull = if is_tag {
        format!("{host}/{name}:{reference}")
    } else {
        format!("{host}/{name}@{reference}")
    };
    let title = if is_tag {
        format!("{name}:{reference}")
    } else {
        format!("{name}@{}", views::short_digest(reference))
    };
    let immutable = &ctx.app.config.immutable;
    let page_view = views::ManifestPage {
        layout: ctx.layout(title),
        name: name.to_owned(),
        tag: is_tag.then(|| reference.to_owned()),
        digest: m.digest.clone(),
        media_type: m.media_type.clone(),
        size: views::human_size(m.size),
        compressed: views::human_size(compressed),
        pull,
        // An immutable tag's page offers no delete; a digest's page does
        // (the delete itself is refused while an immutable tag points to it).
        may_delete: g.may_delete()
            && !(is_tag
                && immutable
                    .protecting(&ctx.viewer.identity.account, name, reference)
                    .is_some()),
        immutable: is_tag
            .then(|| immutable.protecting_anyone(name, reference))
            .flatten()
            .map(|r| r.to_string()),
        annotations: m.doc.annotations.clone().into_iter().collect(),
        children,
        image,
        subject: m.doc.subject.as_ref().map(|s| s.digest.clone()),
        referrers: views::ReferrersView::new(referrers),
        raw: m.pretty.clone(),
    };
    render(StatusCode::OK, &page_view)
}

/// The tags of the repository that point at `digest`, and whether every tag
/// could be looked up.
async fn tags_at(ctx: &Ctx<'_>, g: &Granted, digest: &str) -> Result<(Vec<String>, bool), UiError> {
    let (tags, truncated) = registry::tags(ctx.app, g, &ctx.origin).await?;
    if tags.len() > MAX_DETAILED_TAGS * 4 {
        return Ok((Vec::new(), false));
    }
    let mut complete = !truncated;
    let mut at = Vec::new();
    for info in registry::tag_infos(ctx.app, g, &tags, &ctx.origin).await {
        match info.digest.as_deref() {
            Some(d) if d == digest => at.push(info.tag),
            Some(_) => {}
            None => complete = false,
        }
    }
    at.sort();
    Ok((at, complete))
}

async fn delete_page(
    ctx: &mut Ctx<'_>,
    name: &str,
    query: &Query,
) -> Result<Response<Body>, UiError> {
    let g = ctx.granted(name)?;
    if !g.may_delete() {
        return Err(UiError::Forbidden(format!("You may not delete in {name}.")));
    }
    let reference = query.get("reference").to_owned();
    let is_tag = !reference.contains(':');
    if !(access::is_valid_tag(&reference) || access::is_valid_digest(&reference)) {
        return Err(UiError::BadRequest(
            "Name a tag or a digest to delete.".into(),
        ));
    }
    let m = registry::manifest(ctx.app, &g, &reference, &ctx.origin)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("{name} has no {reference}.")))?;
    let (mut at, complete) = tags_at(ctx, &g, &m.digest).await?;
    if is_tag {
        at.retain(|t| *t != reference);
    }
    let page_view = views::DeletePage {
        layout: ctx.layout(format!("Delete {reference}")),
        name: name.to_owned(),
        is_tag,
        digest: m.digest,
        reference,
        other_tags: at,
        others_unknown: !complete,
    };
    render(StatusCode::OK, &page_view)
}

async fn delete_post(
    ctx: &mut Ctx<'_>,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, UiError> {
    let headers = req.headers().clone();
    let form = read_form(req).await?;
    session::check_csrf(&ctx.viewer, form.opt("csrf"), &headers, &ctx.base)?;
    let g = ctx.granted(name)?;
    if !g.may_delete() {
        tracing::warn!(target: "audit", event = "ui_delete_denied", account = %ctx.viewer.identity.account, repository = name, client = %ctx.conn.peer.ip());
        return Err(UiError::Forbidden(format!("You may not delete in {name}.")));
    }
    let reference = form.get("reference").to_owned();
    let expected = form.get("digest").to_owned();
    let is_tag = !reference.contains(':');
    if !(access::is_valid_tag(&reference) || access::is_valid_digest(&reference))
        || !access::is_valid_digest(&expected)
    {
        return Err(UiError::BadRequest(
            "Name a tag or a digest to delete.".into(),
        ));
    }
    let back = vec![(format!("/ui/r/{name}"), format!("Back to {name}"))];
    let Some(current) = registry::manifest(ctx.app, &g, &reference, &ctx.origin).await? else {
        return Ok(message(
            ctx,
            StatusCode::NOT_FOUND,
            "Already gone",
            format!("{name} has no {reference} (any more)."),
            true,
            back,
        ));
    };
    if current.digest != expected {
        return Err(UiError::Conflict(format!(
            "{reference} changed since the confirmation page was shown (it now points to {}); nothing was deleted.",
            current.digest
        )));
    }
    let audit = |what: &str, digest: &str| {
        tracing::info!(
            target: "audit",
            event = "ui_delete",
            account = %ctx.viewer.identity.account,
            client = %ctx.conn.peer.ip(),
            repository = name,
            deleted = what,
            reference = %reference,
            digest = digest,
        );
    };
    let disabled = || {
        UiError::Conflict(
        "The upstream registry has deletion disabled (distribution: storage.delete.enabled is false), so nothing was deleted.".into(),
    )
    };
    let outcome = registry::delete(ctx.app, &g, &ctx.subject(), &reference, &ctx.origin).await?;
    let done = |ctx: &Ctx<'_>, text: String| {
        message(ctx, StatusCode::OK, "Deleted", text, false, back.clone())
    };
    match outcome {
        Deleted::Done if is_tag => {
            audit("tag", &expected);
            Ok(done(
                ctx,
                format!("Tag {reference} was deleted from {name}."),
            ))
        }
        Deleted::Done => {
            audit("manifest", &expected);
            Ok(done(
                ctx,
                format!("Manifest {reference} and its tags were deleted from {name}."),
            ))
        }
        Deleted::NotFound => Ok(message(
            ctx,
            StatusCode::NOT_FOUND,
            "Already gone",
            format!("{name} has no {reference} (any more)."),
            true,
            back,
        )),
        Deleted::Disabled => Err(disabled()),
        Deleted::Refused(why) if !is_tag => Err(UiError::Conflict(format!(
            "The upstream registry refused the delete: {why}"
        ))),
        Deleted::Refused(_) => {
            // The upstream deletes manifests, not tags (distribution 2.8):
            // delete the manifest only when no other tag would go with it.
            let (mut at, complete) = tags_at(ctx, &g, &expected).await?;
            at.retain(|t| *t != reference);
            if !at.is_empty() || !complete {
                let others = if at.is_empty() {
                    "tags that could not be checked".to_owned()
                } else {
                    at.join(", ")
                };
                return Err(UiError::Conflict(format!(
                    "The upstream registry cannot delete a tag alone, and manifest {expected} is also used by {others}; nothing was deleted. Delete the manifest to remove all of its tags."
                )));
            }
            match registry::delete(ctx.app, &g, &ctx.subject(), &expected, &ctx.origin).await? {
                Deleted::Done => {
                    audit("tag", &expected);
                    Ok(done(
                        ctx,
                        format!(
                            "Tag {reference} was deleted from {name} (with its manifest, which no other tag used)."
                        ),
                    ))
                }
                Deleted::NotFound => Ok(message(
                    ctx,
                    StatusCode::NOT_FOUND,
                    "Already gone",
                    format!("{name} has no {reference} (any more)."),
                    true,
                    back,
                )),
                Deleted::Disabled => Err(disabled()),
                Deleted::Refused(why) => Err(UiError::Conflict(format!(
                    "The upstream registry refused the delete: {why}"
                ))),
            }
        }
    }
}

fn login_page(ctx: &Ctx<'_>, query: &Query) -> Response<Body> {
    let next = safe_next(query.get("next")).to_owned();
    let page = views::LoginPage {
        layout: ctx.layout("Log in"),
        providers: oidc::links(ctx, &next),
        next,
        account: String::new(),
        error: None,
    };
    render(StatusCode::OK, &page).unwrap_or_else(|e| error_page(ctx.layout("Error"), &e))
}

async fn login_post(ctx: &mut Ctx<'_>, req: Request<Incoming>) -> Result<Response<Body>, UiError> {
    let headers = req.headers().clone();
    let form = read_form(req).await?;
    session::check_csrf(&ctx.viewer, form.opt("csrf"), &headers, &ctx.base)?;
    let account = form.get("account").trim().to_owned();
    let password = Secret::new(form.get("password"));
    let next = safe_next(form.get("next")).to_owned();
    let failed = |ctx: &Ctx<'_>, status, error: &str| {
        let page = views::LoginPage {
            layout: ctx.layout("Log in"),
            providers: oidc::links(ctx, &next),
            next: next.clone(),
            account: account.clone(),
            error: Some(error.to_owned()),
        };
        render(status, &page)
    };
    match login::attempt(ctx.app, &account, &password, ctx.conn.peer.ip()).await {
        login::Outcome::Ok(identity) => {
            // A new login replaces any session this browser had.
            if ctx.viewer.signed_in() {
                session::end(ctx.app, &ctx.viewer, ctx.conn.tls);
            }
            let cookie = session::start(ctx.app, &identity, ctx.conn.tls).await?;
            ctx.cookies.push(cookie);
            ctx.viewer.identity = identity;
            Ok(redirect(&next))
        }
        login::Outcome::BadCredentials => failed(
            ctx,
            StatusCode::UNAUTHORIZED,
            "Wrong user name or password.",
        ),
        login::Outcome::Throttled(wait) => failed(
            ctx,
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Too many failed logins. Try again in {} seconds.",
                wait.as_secs().max(1)
            ),
        ),
        login::Outcome::Unavailable => failed(
            ctx,
            StatusCode::SERVICE_UNAVAILABLE,
            "The user directory is unavailable, so your password cannot be checked. Try again in a moment.",
        ),
    }
}

async fn logout(ctx: &mut Ctx<'_>, req: Request<Incoming>) -> Result<Response<Body>, UiError> {
    let headers = req.headers().clone();
    let form = read_form(req).await?;
    session::check_csrf(&ctx.viewer, form.opt("csrf"), &headers, &ctx.base)?;
    if ctx.viewer.signed_in() {
        tracing::info!(target: "audit", event = "ui_logout", account = %ctx.viewer.identity.account, client = %ctx.conn.peer.ip());
    }
    ctx.cookies
        .push(session::end(ctx.app, &ctx.viewer, ctx.conn.tls));
    Ok(redirect("/ui/"))
}

/// Where to go after login: a `/ui/` path of ours, never another site.
fn safe_next(next: &str) -> &str {
    let ok = next.starts_with("/ui/")
        && !next.contains("//")
        && !next.contains('\\')
        && !next.starts_with("/ui/login")
        && next.len() <= 2048
        && next.bytes().all(|b| b.is_ascii_graphic());
    if ok { next } else { "/ui/" }
}

fn message(
    ctx: &Ctx<'_>,
    status: StatusCode,
    heading: &str,
    text: String,
    error: bool,
    links: Vec<(String, String)>,
) -> Response<Body> {
    let page = MessagePage {
        layout: ctx.layout(heading),
        heading: heading.to_owned(),
        message: text,
        error,
        links,
    };
    render(status, &page).unwrap_or_else(|e| error_page(ctx.layout("Error"), &e))
}

fn error_page(layout: Layout, e: &UiError) -> Response<Body> {
    let (heading, text) = e.text();
    let page = MessagePage {
        layout,
        heading: heading.to_owned(),
        message: text,
        error: true,
        links: vec![("/ui/".into(), "Repositories".into())],
    };
    match page.render() {
        Ok(html) => html_response(e.status(), html),
        Err(_) => plain(e.status(), heading),
    }
}

fn render(status: StatusCode, page: &impl Template) -> Result<Response<Body>, UiError> {
    let html = page.render().map_err(|e| {
        tracing::error!(error = %e, "ui: rendering failed");
        UiError::Internal
    })?;
    Ok(html_response(status, html))
}

fn html_response(status: StatusCode, html: String) -> Response<Body> {
    let mut resp = Response::new(body::full(html));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// 303 See Other to a path of ours.
fn redirect(to: &str) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    let location = HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/ui/"));
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

/// Security headers and cookies on every page.
fn finish(mut resp: Response<Body>, cookies: Vec<HeaderValue>) -> Response<Body> {
    let h = resp.headers_mut();
    for c in cookies {
        h.append(header::SET_COOKIE, c);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// Query or form parameters (the first value of each).
#[derive(Debug, Default)]
struct Query(Vec<(String, String)>);

impl Query {
    fn opt(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn get(&self, key: &str) -> &str {
        self.opt(key).unwrap_or("")
    }

    fn page(&self) -> usize {
        self.get("page").parse().unwrap_or(1)
    }
}

fn parse_query(q: Option<&str>) -> Query {
    let q = q.unwrap_or("");
    if q.len() > access::MAX_QUERY_LEN {
        return Query::default();
    }
    Query(form_urlencoded::parse(q.as_bytes()).into_owned().collect())
}

async fn read_form(req: Request<Incoming>) -> Result<Query, UiError> {
    if !crate::http::is_form(req.headers()) {
        return Err(UiError::BadRequest("Expected a form.".into()));
    }
    let bytes = body::collect_limited(body::stream(req.into_body()), MAX_FORM_BYTES)
        .await
        .map_err(|_| UiError::BadRequest("The form is too large.".into()))?;
    Ok(Query(form_urlencoded::parse(&bytes).into_owned().collect()))
}

#[cfg(test)]
mod tests;
