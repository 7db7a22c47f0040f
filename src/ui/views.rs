//! The pages: askama templates (`templates/ui/`, compiled into the binary,
//! HTML-escaped by default) and the view models they render.

use askama::Template;

use super::assets;
use super::registry::{self, ImageConfig, Manifest, Referrers};
use crate::audit::RecentWrite;

/// What every page's frame needs.
pub struct Layout {
    pub title: String,
    /// `""` when anonymous.
    pub account: String,
    pub csrf: String,
    /// Where "Log in" comes back to (a `/ui/` path).
    pub here: String,
    pub css: String,
    pub js: String,
    pub icon: String,
}

impl Layout {
    pub fn new(title: impl Into<String>, account: &str, csrf: &str, here: &str) -> Layout {
        Layout {
            title: title.into(),
            account: account.to_owned(),
            csrf: csrf.to_owned(),
            here: here.to_owned(),
            css: assets::url("app.css"),
            js: assets::url("app.js"),
            icon: assets::url("icon.svg"),
        }
    }
}

/// A link of the pager.
pub struct Pager {
    pub page: usize,
    pub pages: usize,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// `href(page)` builds a page's URL; pages count from 1.
    pub fn new(page: usize, pages: usize, href: impl Fn(usize) -> String) -> Pager {
        Pager {
            page,
            pages,
            prev: (page > 1).then(|| href(page - 1)),
            next: (page < pages).then(|| href(page + 1)),
        }
    }
}

/// `(start, end, pages, page)` of page `page` (from 1, clamped) of `total`
/// items, `per` a page.
pub fn paginate(total: usize, page: usize, per: usize) -> (usize, usize, usize, usize) {
    let pages = total.div_ceil(per).max(1);
    let page = page.clamp(1, pages);
    let start = (page - 1) * per;
    (start, (start + per).min(total), pages, page)
}

#[derive(Template)]
#[template(path = "ui/login.html")]
pub struct LoginPage {
    pub layout: Layout,
    /// "Log in with NAME" links: (name, href).
    pub providers: Vec<(String, String)>,
    pub next: String,
    pub account: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "ui/message.html")]
pub struct MessagePage {
    pub layout: Layout,
    pub heading: String,
    pub message: String,
    pub error: bool,
    pub links: Vec<(String, String)>,
}

pub struct Group {
    pub namespace: String,
    /// (full name, last component)
    pub repos: Vec<(String, String)>,
}

/// Groups sorted names by namespace (everything before the last `/`).
pub fn group(names: &[String]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for name in names {
        let (ns, base) = name.rsplit_once('/').unwrap_or(("", name));
        match groups.last_mut() {
            Some(g) if g.namespace == ns => g.repos.push((name.clone(), base.to_owned())),
            _ => groups.push(Group {
                namespace: ns.to_owned(),
                repos: vec![(name.clone(), base.to_owned())],
            }),
        }
    }
    groups
}

/// Sorts names by (namespace, last component), the order `group` expects.
pub fn sort_for_grouping(names: &mut [String]) {
    names.sort_by(|a, b| {
        let split = |n: &str| {
            let (ns, base) = n.rsplit_once('/').unwrap_or(("", n));
            (ns.to_owned(), base.to_owned())
        };
        split(a).cmp(&split(b))
    });
}

#[derive(Template)]
#[template(path = "ui/repos.html")]
pub struct ReposPage {
    pub layout: Layout,
    pub q: String,
    pub groups: Vec<Group>,
    pub total: usize,
    pub from: usize,
    pub to: usize,
    pub pager: Pager,
    pub truncated: bool,
}

pub struct TagRow {
    pub tag: String,
    pub digest: String,
    pub short: String,
    pub index: bool,
    pub size: String,
    pub created: Option<(String, String)>,
    pub platforms: Vec<String>,
    pub pull: String,
    /// The `[[immutable]]` rule that makes this tag immutable, shown as a mark.
    pub immutable: Option<String>,
    /// Whether the viewer is offered a delete (never for a tag immutable for them).
    pub deletable: bool,
}

#[derive(Template)]
#[template(path = "ui/repo.html")]
pub struct RepoPage {
    pub layout: Layout,
    pub name: String,
    pub rows: Vec<TagRow>,
    pub total: usize,
    pub pager: Pager,
    /// Too many tags to look every one up: sorted by name, not date.
    pub by_name: bool,
    pub truncated: bool,
    pub may_delete: bool,
}

pub struct ChildRow {
    pub platform: String,
    pub digest: String,
    pub short: String,
    /// Compressed image size, when the child is an image that could be read.
    pub size: String,
    pub created: Option<(String, String)>,
    pub media_type: String,
}

pub struct LayerRow {
    pub digest: String,
    pub short: String,
    pub size: String,
    pub media_type: String,
}

pub struct HistoryRow {
    pub created: Option<(String, String)>,
    pub created_by: String,
    pub comment: String,
    /// The size of the layer this step made, if it made one.
    pub size: Option<String>,
}

pub struct ImageView {
    pub config_digest: String,
    pub config_error: Option<String>,
    pub created: Option<(String, String)>,
    pub platform: String,
    pub author: String,
    pub entrypoint: String,
    pub cmd: String,
    pub working_dir: String,
    pub user: String,
    pub env: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub layers: Vec<LayerRow>,
    pub total: String,
    pub history: Vec<HistoryRow>,
}

impl ImageView {
    pub fn new(m: &Manifest, config: Result<&ImageConfig, String>) -> ImageView {
        let layers: Vec<LayerRow> = m
            .doc
            .layers
            .iter()
            .map(|l| LayerRow {
                digest: l.digest.clone(),
                short: short_digest(&l.digest),
                size: human_size(l.size),
                media_type: l.media_type.clone(),
            })
            .collect();
        let config_digest = m
            .doc
            .config
            .as_ref()
            .map(|c| c.digest.clone())
            .unwrap_or_default();
        let mut v = ImageView {
            config_digest,
            config_error: None,
            created: None,
            platform: String::new(),
            author: String::new(),
            entrypoint: String::new(),
            cmd: String::new(),
            working_dir: String::new(),
            user: String::new(),
            env: Vec::new(),
            labels: Vec::new(),
            ports: Vec::new(),
            volumes: Vec::new(),
            layers,
            total: human_size(m.image_size()),
            history: Vec::new(),
        };
        let c = match config {
            Ok(c) => c,
            Err(e) => {
                v.config_error = Some(e);
                return v;
            }
        };
        v.created = date(c.created.as_deref());
        if !c.os.is_empty() {
            v.platform = registry::Platform {
                architecture: c.architecture.clone(),
                os: c.os.clone(),
                variant: c.variant.clone(),
            }
            .display();
        }
        v.author = c.author.clone().unwrap_or_default();
        if let Some(cc) = &c.config {
            let argv = |a: &Option<Vec<String>>| {
                a.as_ref()
                    .map(|a| serde_json::to_string(a).unwrap_or_default())
                    .unwrap_or_default()
            };
            v.entrypoint = argv(&cc.entrypoint);
            v.cmd = argv(&cc.cmd);
            v.working_dir = cc.working_dir.clone().unwrap_or_default();
            v.user = cc.user.clone().unwrap_or_default();
            v.env = cc.env.clone().unwrap_or_default();
            v.labels = cc.labels.clone().unwrap_or_default().into_iter().collect();
            v.ports = cc
                .exposed_ports
                .as_ref()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            v.volumes = cc
                .volumes
                .as_ref()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
        }
        // Steps that made a layer take the layers in order.
        let mut sizes = m.doc.layers.iter().map(|l| l.size);
        v.history = c
            .history
            .iter()
            .map(|h| HistoryRow {
                created: date(h.created.as_deref()),
                created_by: h.created_by.clone().unwrap_or_default(),
                comment: h.comment.clone().unwrap_or_default(),
                size: if h.empty_layer {
                    None
                } else {
                    sizes.next().map(human_size)
                },
            })
            .collect();
        v
    }
}

pub struct RefRow {
    pub artifact_type: String,
    pub digest: String,
    pub short: String,
    pub size: String,
    pub created: String,
}

pub struct ReferrersView {
    /// The upstream answered the referrers API.
    pub api: bool,
    pub error: Option<String>,
    pub rows: Vec<RefRow>,
    pub tags: Vec<String>,
}

impl ReferrersView {
    pub fn new(r: Result<Referrers, String>) -> ReferrersView {
        let rows = |list: Vec<registry::Descriptor>| {
            list.into_iter()
                .map(|d| RefRow {
                    artifact_type: d
                        .artifact_type
                        .clone()
                        .filter(|a| !a.is_empty())
                        .unwrap_or_else(|| d.media_type.clone()),
                    short: short_digest(&d.digest),
                    size: human_size(d.size),
                    created: d
                        .annotations
                        .get("org.opencontainers.image.created")
                        .cloned()
                        .unwrap_or_default(),
                    digest: d.digest,
                })
                .collect()
        };
        match r {
            Ok(Referrers::Listed(list)) => ReferrersView {
                api: true,
                error: None,
                rows: rows(list),
                tags: Vec::new(),
            },
            Ok(Referrers::Fallback { listed, tags }) => ReferrersView {
                api: false,
                error: None,
                rows: rows(listed),
                tags,
            },
            Err(e) => ReferrersView {
                api: false,
                error: Some(e),
                rows: Vec::new(),
                tags: Vec::new(),
            },
        }
    }
}

#[derive(Template)]
#[template(path = "ui/manifest.html")]
pub struct ManifestPage {
    pub layout: Layout,
    pub name: String,
    /// Set on a tag's page; a digest's page has none.
    pub tag: Option<String>,
    pub digest: String,
    pub media_type: String,
    /// The manifest document's own size.
    pub size: String,
    /// What a pull downloads (config and layers; an index: all its images).
    pub compressed: String,
    pub pull: String,
    pub may_delete: bool,
    /// The `[[immutable]]` rule that makes this page's tag immutable.
    pub immutable: Option<String>,
    pub annotations: Vec<(String, String)>,
    pub children: Vec<ChildRow>,
    pub image: Option<ImageView>,
    pub subject: Option<String>,
    pub referrers: ReferrersView,
    pub raw: String,
}

#[derive(Template)]
#[template(path = "ui/delete.html")]
pub struct DeletePage {
    pub layout: Layout,
    pub name: String,
    pub reference: String,
    pub is_tag: bool,
    pub digest: String,
    /// The tags that point at `digest` (other than `reference`).
    pub other_tags: Vec<String>,
    /// The tags could not all be looked up.
    pub others_unknown: bool,
}

/// One upstream write on the activity page.
#[derive(Debug, Clone)]
pub struct ActivityRow {
    /// RFC 3339 (UTC, seconds) for `<time datetime>`.
    pub iso: String,
    /// `2024-05-01 10:00:05 UTC`, until the script shows local time.
    pub shown: String,
    /// `""`: anonymous.
    pub account: String,
    /// The audit trail's action (`push_manifest`...).
    pub action: &'static str,
    /// `pushed`, `tried to delete`...
    pub verb: String,
    /// A blob upload, mount or delete, not an image's manifest.
    pub blob: bool,
    pub repository: String,
    /// The tag, when the write named one.
    pub tag: Option<String>,
    /// The manifest's or blob's digest, when known.
    pub digest: Option<String>,
    pub short: String,
    /// Where the pushed image can be seen now, if it still can (as far as
    /// the kept writes tell).
    pub link: Option<String>,
    pub ok: bool,
    pub status: u16,
}

/// Rows for `writes` (newest first, as `Audit::recent_writes` gives them).
pub fn activity_rows(writes: &[RecentWrite]) -> Vec<ActivityRow> {
    use std::collections::HashSet;
    // What newer writes did, seen while walking back in time.
    let mut deleted: HashSet<(&str, &str)> = HashSet::new();
    let mut repushed: HashSet<(&str, &str)> = HashSet::new();
    let mut rows = Vec::with_capacity(writes.len());
    for w in writes {
        let repo = w.repository.as_str();
        let ok = w.outcome == "ok";
        let by_digest = w
            .reference
            .as_deref()
            .filter(|r| crate::access::is_valid_digest(r));
        let tag = w.reference.as_deref().filter(|_| by_digest.is_none());
        let digest = by_digest.or(w.digest.as_deref());
        let blob = w.action.ends_with("_blob");
        let link = if ok && w.action == "push_manifest" {
            let gone = digest.is_some_and(|d| deleted.contains(&(repo, d)))
                || tag.is_some_and(|t| deleted.contains(&(repo, t)));
            match (tag, digest) {
                _ if gone => None,
                (Some(t), _) if !repushed.contains(&(repo, t)) => {
                    Some(format!("/ui/r/{repo}/-/tag/{t}"))
                }
                (_, Some(d)) => Some(format!("/ui/r/{repo}/-/manifest/{d}")),
                _ => None,
            }
        } else {
            None
        };
        if ok && w.action == "delete_manifest" {
            deleted.extend(w.reference.as_deref().map(|r| (repo, r)));
            deleted.extend(digest.map(|d| (repo, d)));
        }
        if ok && w.action == "push_manifest" {
            repushed.extend(tag.map(|t| (repo, t)));
        }
        let word = match w.action {
            "push_manifest" | "push_blob" => ("pushed", "push"),
            "delete_manifest" | "delete_blob" => ("deleted", "delete"),
            "mount_blob" => ("mounted", "mount"),
            _ => ("changed", "change"),
        };
        let t = humantime::format_rfc3339_seconds(w.at).to_string();
        rows.push(ActivityRow {
            shown: format!("{} {} UTC", &t[..10], &t[11..19]),
            iso: t,
            account: w.account.clone(),
            action: w.action,
            verb: if ok {
                word.0.to_owned()
            } else {
                format!("tried to {}", word.1)
            },
            blob,
            repository: w.repository.clone(),
            tag: tag.map(str::to_owned),
            short: digest.map(short_digest).unwrap_or_default(),
            digest: digest.map(str::to_owned),
            link,
            ok,
            status: w.status,
        });
    }
    rows
}

#[derive(Template)]
#[template(path = "ui/activity.html")]
pub struct ActivityPage {
    pub layout: Layout,
    /// Only this repository's writes (`?repo=`), when set.
    pub repo: String,
    /// Blob writes shown too (`?all=1`).
    pub all: bool,
    pub rows: Vec<ActivityRow>,
    pub total: usize,
    pub from: usize,
    pub to: usize,
    pub pager: Pager,
    /// Blob writes left out (when not `all`).
    pub hidden: usize,
    /// The same page with `all` switched.
    pub toggle: String,
    /// How many writes the gate keeps.
    /// Where the history comes from and how long it is kept.
    pub kept: String,
}

/// `sha256:0123456789ab`: enough to tell digests apart on a page.
pub fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", &hex[..hex.len().min(12)]),
        None => d.chars().take(19).collect(),
    }
}

/// Sizes as docker prints them (powers of 1000).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 999.95 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `(RFC 3339 as given, "2024-05-01 10:00 UTC")` for a `<time>` element.
pub fn date(created: Option<&str>) -> Option<(String, String)> {
    let created = created?;
    let secs = registry::parse_rfc3339(created)?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // "2024-05-01T10:00:00Z" -> "2024-05-01 10:00 UTC"
    let shown = format!("{} {} UTC", &s[..10], &s[11..16]);
    Some((s, shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new("Repositories", "alice", "csrf-token-value", "/ui/")
    }

    #[test]
    fn sizes_and_digests_read_well() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1000), "1.0 kB");
        assert_eq!(human_size(4_718_592), "4.7 MB");
        assert_eq!(human_size(999_999_999), "1.0 GB");
        assert_eq!(
            short_digest("sha256:0123456789abcdef"),
            "sha256:0123456789ab"
        );
        assert_eq!(
            date(Some("2024-05-01T10:00:00.123Z")),
            Some(("2024-05-01T10:00:00Z".into(), "2024-05-01 10:00 UTC".into()))
        );
        assert_eq!(date(Some("soon")), None);
    }

    #[test]
    fn pages_clamp() {
        assert_eq!(paginate(0, 1, 50), (0, 0, 1, 1));
        assert_eq!(paginate(120, 3, 50), (100, 120, 3, 3));
        assert_eq!(paginate(120, 9, 50), (100, 120, 3, 3));
        assert_eq!(paginate(120, 0, 50), (0, 50, 3, 1));
        let p = Pager::new(2, 3, |n| format!("?page={n}"));
        assert_eq!(
            (p.prev.as_deref(), p.next.as_deref()),
            (Some("?page=1"), Some("?page=3"))
        );
    }

    #[test]
    fn repositories_group_by_namespace() {
        let mut names: Vec<String> = ["b", "a/x", "a/b/c", "a/y", "a/b/a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        sort_for_grouping(&mut names);
        let groups = group(&names);
        let shape: Vec<(&str, Vec<&str>)> = groups
            .iter()
            .map(|g| {
                (
                    g.namespace.as_str(),
                    g.repos.iter().map(|(_, b)| b.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("", vec!["b"]),
                ("a", vec!["x", "y"]),
                ("a/b", vec!["a", "c"])
            ]
        );
    }

    #[test]
    fn pages_escape_what_they_show() {
        let page = MessagePage {
            layout: layout(),
            heading: "<script>alert(1)</script>".into(),
            message: "a & b \"quoted\"".into(),
            error: true,
            links: vec![("/ui/?q=<x>".into(), "back".into())],
        };
        let html = page.render().unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{html}"
        );
        assert!(html.contains("a &#38; b &#34;quoted&#34;"), "{html}");
        // Signed in: the account and a logout form carrying the CSRF token.
        assert!(html.contains("alice"));
        assert!(html.contains(r#"action="/ui/logout""#));
        assert!(html.contains(r#"value="csrf-token-value""#));
        assert!(html.contains(r#"role="alert""#));
    }

    #[test]
    fn anonymous_pages_offer_a_login() {
        let page = LoginPage {
            layout: Layout::new("Log in", "", "anon-csrf", "/ui/login"),
            providers: vec![("corp".into(), "/ui/oidc/login/corp?next=%2Fui%2F".into())],
            next: "/ui/r/a/b".into(),
            account: "bob".into(),
            error: Some("Wrong user name or password.".into()),
        };
        let html = page.render().unwrap();
        assert!(!html.contains(r#"action="/ui/logout""#));
        assert!(html.contains(r#"name="csrf" value="anon-csrf""#), "{html}");
        assert!(html.contains(r#"name="next" value="/ui/r/a/b""#), "{html}");
        assert!(html.contains(r#"value="bob""#));
        assert!(html.contains("Wrong user name or password."));
        assert!(html.contains(r#"autocomplete="current-password""#));
    }

    #[test]
    fn repo_pages_show_delete_only_when_allowed() {
        let row = || TagRow {
            tag: "v1".into(),
            digest: "sha256:abc".into(),
            short: "sha256:abc".into(),
            index: true,
            size: "1.0 kB".into(),
            created: date(Some("2024-05-01T10:00:00Z")),
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            pull: "gate:5000/team/app:v1".into(),
            immutable: None,
            deletable: true,
        };
        let page = |may_delete| RepoPage {
            layout: layout(),
            name: "team/app".into(),
            rows: vec![row()],
            total: 1,
            pager: Pager::new(1, 1, |_| String::new()),
            by_name: false,
            truncated: false,
            may_delete,
        };
        let html = page(false).render().unwrap();
        assert!(html.contains("docker pull gate:5000/team/app:v1"), "{html}");
        assert!(html.contains("linux/arm64"));
        assert!(html.contains(r#"datetime="2024-05-01T10:00:00Z""#));
        assert!(!html.contains("/-/delete"), "{html}");
        let html = page(true).render().unwrap();
        assert!(
            html.contains("/ui/r/team/app/-/delete?reference=v1"),
            "{html}"
        );
        assert!(!html.contains("immutable"), "{html}");
    }

    #[test]
    fn immutable_tags_are_marked_and_offer_no_delete() {
        let page = RepoPage {
            layout: layout(),
            name: "team/app".into(),
            rows: vec![TagRow {
                tag: "v1".into(),
                digest: "sha256:abc".into(),
                short: "sha256:abc".into(),
                index: false,
                size: "1.0 kB".into(),
                created: None,
                platforms: vec![],
                pull: "gate:5000/team/app:v1".into(),
                immutable: Some("immutable[0] (name = \"team/*\")".into()),
                deletable: false,
            }],
            total: 1,
            pager: Pager::new(1, 1, |_| String::new()),
            by_name: false,
            truncated: false,
            may_delete: true,
        };
        let html = page.render().unwrap();
        assert!(html.contains(r#"class="badge immutable""#), "{html}");
        assert!(html.contains("immutable[0]"), "{html}");
        assert!(!html.contains("/-/delete"), "{html}");
    }
}
