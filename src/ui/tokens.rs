//! The "Access tokens" page (`/ui/tokens`): a signed-in person creates and
//! revokes their own personal access tokens and logs out everywhere;
//! administrators also create robot credentials and see and revoke every
//! credential. The rules are [`crate::tokens`]'s, shared with the CLI and
//! the API; this file only turns forms into requests and results into a page.

use askama::Template;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::views::Layout;
use super::{Ctx, Query, UiError, read_form, redirect, render, session};
use crate::audit::Event;
use crate::authn::Labels;
use crate::http::body::Body;
use crate::store::Credential;
use crate::tokens::{Actor, CreateRequest, Kind, ManageError, Manager};

#[derive(Template)]
#[template(path = "ui/tokens.html")]
struct TokensPage {
    layout: Layout,
    admin: bool,
    rows: Vec<Row>,
    created: Option<NewSecret>,
    error: Option<String>,
    host: String,
    default_lifetime: String,
    cache_ttl: String,
}

struct Row {
    id: String,
    kind: &'static str,
    account: String,
    name: String,
    description: String,
    scopes: String,
    expires: String,
    last_used: Option<String>,
    state: &'static str,
}

struct NewSecret {
    kind: &'static str,
    account: String,
    secret: String,
}

fn manager<'a>(ctx: &'a Ctx<'_>) -> Manager<'a> {
    Manager::for_app(ctx.app)
}

fn actor<'a>(ctx: &'a Ctx<'_>) -> Result<Actor<'a>, UiError> {
    if !ctx.viewer.signed_in() {
        return Err(UiError::Forbidden(
            "Log in to manage your access tokens.".into(),
        ));
    }
    Ok(Actor::Caller {
        identity: &ctx.viewer.identity,
        ip: ctx.conn.peer.ip(),
    })
}

fn store_error(e: ManageError) -> UiError {
    match e {
        ManageError::Forbidden(m) => UiError::Forbidden(m),
        ManageError::Invalid(m) => UiError::BadRequest(m),
        ManageError::NotFound => UiError::NotFound("There is no such token.".into()),
        ManageError::Unavailable(m) => {
            tracing::error!(error = %m, "ui: the store could not answer");
            UiError::Upstream("The credential store is unavailable; try again in a moment".into())
        }
    }
}

/// `GET /ui/tokens`.
pub(super) async fn page(ctx: &Ctx<'_>) -> Result<Response<Body>, UiError> {
    show(ctx, StatusCode::OK, None, None).await
}

async fn show(
    ctx: &Ctx<'_>,
    status: StatusCode,
    created: Option<NewSecret>,
    error: Option<String>,
) -> Result<Response<Body>, UiError> {
    let actor = actor(ctx)?;
    let m = manager(ctx);
    let admin = m.is_admin(actor);
    let list = m.list(actor, None).await.map_err(store_error)?;
    let now = crate::store::now();
    let page = TokensPage {
        layout: ctx.layout("Access tokens"),
        admin,
        rows: list.iter().map(|c| row(c, now)).collect(),
        created,
        error,
        host: ctx.registry_host().to_owned(),
        default_lifetime: days(ctx.app.config.tokens.default_lifetime),
        cache_ttl: humantime::format_duration(ctx.app.config.tokens.cache_ttl).to_string(),
    };
    let mut resp = render(status, &page)?;
    // The page may hold a new secret: nothing may keep a copy.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `90d` for whole days (what people type), humantime's form otherwise.
fn days(d: std::time::Duration) -> String {
    match d.as_secs() {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ => humantime::format_duration(d).to_string(),
    }
}

fn row(c: &Credential, now: i64) -> Row {
    let when = crate::tokens::cli::when;
    Row {
        id: c.id.clone(),
        kind: c.kind.as_str(),
        account: c.account.clone(),
        name: c.name.clone(),
        description: c.description.clone(),
        scopes: c.scopes.join(" "),
        expires: when(c.expires_at),
        last_used: c.last_used_at.map(when),
        state: if c.revoked_at.is_some() {
            "revoked"
        } else if !c.is_active(now) {
            "expired"
        } else {
            "active"
        },
    }
}

/// `POST /ui/tokens`: create; the answer shows the secret once.
pub(super) async fn create(
    ctx: &mut Ctx<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, UiError> {
    let form = checked_form(ctx, req).await?;
    let lines = |key: &str| -> Vec<String> {
        form.get(key)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let name = form.get("name").trim().to_owned();
    let kind = match form.get("kind") {
        "robot" => {
            let mut labels = Labels::new();
            for kv in lines("labels") {
                let Some((k, v)) = kv.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
                    return show(
                        ctx,
                        StatusCode::BAD_REQUEST,
                        None,
                        Some(format!("Label {kv:?} is not KEY=VALUE.")),
                    )
                    .await;
                };
                labels
                    .entry(k.trim().to_owned())
                    .or_default()
                    .push(v.trim().to_owned());
            }
            Kind::Robot { name, labels }
        }
        _ => Kind::Personal { owner: None, name },
    };
    let expires_in = match form.get("expires").trim() {
        "" => None,
        text => match humantime::parse_duration(text) {
            Ok(d) => Some(d),
            Err(_) => {
                let why = format!("\"{text}\" is not a duration like 30d or 12h.");
                return show(ctx, StatusCode::BAD_REQUEST, None, Some(why)).await;
            }
        },
    };
    let req = CreateRequest {
        kind,
        scopes: lines("scopes"),
        expires_in,
        description: form.get("description").trim().to_owned(),
    };
    let result = manager(ctx).create(actor(ctx)?, req).await;
    match result {
        Ok(created) => {
            let c = &created.credential;
            ctx.app.audit.record(crate::tokens::cli::created_event(
                c,
                &ctx.viewer.identity.account,
            ));
            let shown = NewSecret {
                kind: c.kind.as_str(),
                account: c.account.clone(),
                secret: created.secret.expose().to_owned(),
            };
            show(ctx, StatusCode::CREATED, Some(shown), None).await
        }
        Err(ManageError::Invalid(m) | ManageError::Forbidden(m)) => {
            show(ctx, StatusCode::BAD_REQUEST, None, Some(m)).await
        }
        Err(e) => Err(store_error(e)),
    }
}

/// `POST /ui/tokens/revoke`.
pub(super) async fn revoke(
    ctx: &mut Ctx<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, UiError> {
    let form = checked_form(ctx, req).await?;
    let revoked = manager(ctx)
        .revoke(actor(ctx)?, form.get("id"))
        .await
        .map_err(store_error)?;
    ctx.app.audit.record(Event::CredentialRevoked {
        id: revoked.id.clone(),
        account: revoked.account.clone(),
        by: ctx.viewer.identity.account.clone(),
    });
    Ok(redirect("/ui/tokens"))
}

/// `POST /ui/tokens/logout-all`: this session ends too.
pub(super) async fn logout_all(
    ctx: &mut Ctx<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, UiError> {
    checked_form(ctx, req).await?;
    let account = ctx.viewer.identity.account.clone();
    manager(ctx)
        .log_out_everywhere(actor(ctx)?, &account)
        .await
        .map_err(store_error)?;
    ctx.app.audit.record(Event::LoggedOutEverywhere {
        account: account.clone(),
        by: account,
    });
    ctx.cookies
        .push(session::end(ctx.app, &ctx.viewer, ctx.conn.tls));
    Ok(redirect("/ui/"))
}

async fn checked_form(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<Query, UiError> {
    let headers = req.headers().clone();
    let form = read_form(req).await?;
    session::check_csrf(&ctx.viewer, form.opt("csrf"), &headers, &ctx.base)?;
    actor(ctx)?;
    Ok(form)
}
