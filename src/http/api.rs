//! `/api/v1/`: managing robot accounts and personal access tokens over
//! HTTP (JSON), for scripts and Terraform-style automation. The same rules
//! as the UI and the CLI ([`crate::tokens`]); callers authenticate as at the
//! realm (HTTP Basic with a password, or a credential holding the
//! `registry:credentials:*` scope), throttled and audited like a login.
//!
//! - `GET /api/v1/credentials[?account=A]`: list (administrators: all or
//!   one account's; others: their own personal tokens)
//! - `POST /api/v1/credentials`: create; the answer (201) holds the secret,
//!   shown this once
//! - `DELETE /api/v1/credentials/{id}`: revoke
//! - `POST /api/v1/logout-all`: log an account out everywhere (`{}`: yourself)
//!
//! Errors use the registry's JSON envelope.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::body::Body;
use super::errors::{ApiError, ErrorCode, json_response};
use super::{Conn, Routed};
use crate::app::App;
use crate::audit::Event;
use crate::authn::{Identity, Labels};
use crate::store::Credential;
use crate::tokens::{Actor, CreateRequest, Kind, ManageError, Manager};

/// Requests to the API are small JSON documents.
const MAX_BODY: usize = 64 * 1024;

/// `POST /api/v1/credentials`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// A robot credential for `robot+NAME` (administrators).
    #[serde(default)]
    robot: Option<String>,
    /// A personal token's name.
    #[serde(default)]
    name: Option<String>,
    /// A personal token's owner (administrators; default: yourself).
    #[serde(default)]
    owner: Option<String>,
    scopes: Vec<String>,
    #[serde(default)]
    labels: Labels,
    /// e.g. `"30d"`; default `[tokens] default_lifetime`.
    #[serde(default, with = "humantime_serde")]
    expires_in: Option<std::time::Duration>,
    #[serde(default)]
    description: String,
}

#[derive(Serialize)]
struct CreatedBody<'a> {
    #[serde(flatten)]
    credential: &'a Credential,
    /// Shown this once; only its hash is kept.
    secret: &'a str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogoutBody {
    #[serde(default)]
    account: Option<String>,
}

pub async fn handle(app: &App, req: Request<Incoming>, conn: Conn) -> Result<Routed, ApiError> {
    let identity = caller(app, &req, conn).await?;
    let account = Some(identity.account.clone());
    let actor = Actor::Caller {
        identity: &identity,
        ip: conn.peer.ip(),
    };
    let manager = Manager::for_app(app);
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let resp = match (&method, path.as_str()) {
        (&Method::GET, "/api/v1/credentials") => {
            let filter = req.uri().query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "account")
                    .map(|(_, v)| v.into_owned())
            });
            let list = manager
                .list(actor, filter.as_deref())
                .await
                .map_err(manage_error)?;
            json(StatusCode::OK, &list)?
        }
        (&Method::POST, "/api/v1/credentials") => {
            let body: CreateBody = read_json(req).await?;
            let kind = match (body.robot, body.name) {
                (Some(name), None) if body.owner.is_none() => Kind::Robot {
                    name,
                    labels: body.labels,
                },
                (None, Some(name)) if body.labels.is_empty() => Kind::Personal {
                    owner: body.owner,
                    name,
                },
                _ => {
                    return Err(ApiError::detail(
                        ErrorCode::BadRequest,
                        "give either \"robot\" (with optional \"labels\"), or \"name\" (with optional \"owner\")",
                    ));
                }
            };
            let created = manager
                .create(
                    actor,
                    CreateRequest {
                        kind,
                        scopes: body.scopes,
                        expires_in: body.expires_in,
                        description: body.description,
                    },
                )
                .await
                .map_err(manage_error)?;
            app.audit.record(crate::tokens::cli::created_event(
                &created.credential,
                &identity.account,
            ));
            let mut resp = json(
                StatusCode::CREATED,
                &CreatedBody {
                    credential: &created.credential,
                    secret: created.secret.expose(),
                },
            )?;
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            resp
        }
        (&Method::DELETE, p) if p.starts_with("/api/v1/credentials/") => {
            let id = &p["/api/v1/credentials/".len()..];
            let revoked = manager.revoke(actor, id).await.map_err(manage_error)?;
            app.audit.record(Event::CredentialRevoked {
                id: revoked.id.clone(),
                account: revoked.account.clone(),
                by: identity.account.clone(),
            });
            json(StatusCode::OK, &revoked)?
        }
        (&Method::POST, "/api/v1/logout-all") => {
            let body: LogoutBody = read_json(req).await?;
            let target = body.account.unwrap_or_else(|| identity.account.clone());
            manager
                .log_out_everywhere(actor, &target)
                .await
                .map_err(manage_error)?;
            app.audit.record(Event::LoggedOutEverywhere {
                account: target,
                by: identity.account.clone(),
            });
            json_response(StatusCode::OK, "{}".to_owned())
        }
        (_, "/api/v1/credentials" | "/api/v1/logout-all") => {
            return Err(ApiError::new(ErrorCode::Unsupported));
        }
        (_, p) if p.starts_with("/api/v1/credentials/") => {
            return Err(ApiError::new(ErrorCode::Unsupported));
        }
        _ => return Err(ApiError::new(ErrorCode::NotFound)),
    };
    Ok((resp, account))
}

/// The caller, from HTTP Basic credentials checked as at the realm.
async fn caller(app: &App, req: &Request<Incoming>, conn: Conn) -> Result<Identity, ApiError> {
    let Some(auth) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::detail(
            ErrorCode::Unauthorized,
            "authenticate with HTTP Basic (account and password)",
        ));
    };
    let (account, password) = super::realm::parse_basic(auth)?;
    super::realm::login(app, &account, &password, conn)
        .await
        .map_err(|e| e.for_account(&account))
}

async fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::detail(
            ErrorCode::BadRequest,
            "send Content-Type: application/json",
        ));
    }
    let bytes: Bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| ApiError::detail(ErrorCode::BadRequest, "body too large or broken"))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::detail(ErrorCode::BadRequest, format!("invalid JSON: {e}")))
}

fn json(status: StatusCode, value: &impl Serialize) -> Result<Response<Body>, ApiError> {
    let text = serde_json::to_string(value).map_err(|e| {
        tracing::error!(error = %e, "api: cannot encode an answer");
        ApiError::new(ErrorCode::Internal)
    })?;
    Ok(json_response(status, text))
}

fn manage_error(e: ManageError) -> ApiError {
    match e {
        ManageError::Forbidden(m) => ApiError::detail(ErrorCode::Denied, m),
        ManageError::Invalid(m) => ApiError::detail(ErrorCode::BadRequest, m),
        ManageError::NotFound => ApiError::detail(ErrorCode::NotFound, "no such credential"),
        ManageError::Unavailable(m) => {
            tracing::error!(error = %m, "api: the store could not answer");
            ApiError::detail(
                ErrorCode::Unavailable,
                "the credential store is unavailable, try again later",
            )
        }
    }
}
