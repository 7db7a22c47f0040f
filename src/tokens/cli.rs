//! The command-line doors: `registry-gate migrate`, `token create|list|
//! revoke` and `logout-all`. They work on the store named by the config,
//! with the CLI's rights (everything: whoever runs them holds the config
//! and the database). A created secret is printed alone on the last line of
//! stdout; everything else goes to stderr. Exit codes: 0, 1 runtime (the
//! store is down), 2 usage or configuration.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use super::{Actor, CreateRequest, Kind, ManageError, Manager};
use crate::app::App;
use crate::audit::{Audit, Event};
use crate::authn::Labels;
use crate::store::Credential;

/// Arguments of `token create`, as parsed by the binary.
#[derive(Debug, Clone)]
pub struct CreateArgs {
    pub robot: Option<String>,
    pub owner: Option<String>,
    pub name: Option<String>,
    pub scopes: Vec<String>,
    pub labels: Vec<String>,
    pub expires: Option<Duration>,
    pub description: String,
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("registry-gate: {message}");
    ExitCode::from(code)
}

fn manage_error(e: ManageError) -> ExitCode {
    match e {
        ManageError::Unavailable(_) => fail(1, e),
        _ => fail(2, e),
    }
}

fn audit(app: &App) -> Audit {
    Audit::for_cli(&app.config.raw.audit.output).unwrap_or_else(|e| {
        eprintln!("registry-gate: audit trail unavailable ({e}); events go to stderr");
        Audit::new(crate::audit::Sink::Stderr)
    })
}

fn manager(app: &App) -> Manager<'_> {
    Manager::for_app(app)
}

/// `registry-gate migrate`: applies the embedded schema migrations.
pub async fn migrate(app: &App) -> ExitCode {
    match app.store.migrate().await {
        Ok(()) => {
            eprintln!("registry-gate: store {} is up to date", app.store.shown());
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, format!("store {}: {e}", app.store.shown())),
    }
}

pub async fn create(app: &App, args: CreateArgs) -> ExitCode {
    let kind = match (args.robot, args.owner, args.name) {
        (Some(robot), None, None) => {
            let mut labels = Labels::new();
            for kv in &args.labels {
                let Some((k, v)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                    return fail(2, format!("--label {kv:?} is not KEY=VALUE"));
                };
                labels.entry(k.to_owned()).or_default().push(v.to_owned());
            }
            Kind::Robot {
                name: robot,
                labels,
            }
        }
        (None, Some(owner), Some(name)) if args.labels.is_empty() => Kind::Personal {
            owner: Some(owner),
            name,
        },
        (None, Some(_), Some(_)) => return fail(2, "--label is for robots only"),
        _ => {
            return fail(
                2,
                "give either --robot NAME, or --owner ACCOUNT with --name NAME",
            );
        }
    };
    let req = CreateRequest {
        kind,
        scopes: args.scopes,
        expires_in: args.expires,
        description: args.description,
    };
    match manager(app).create(Actor::Cli, req).await {
        Ok(created) => {
            let c = &created.credential;
            audit(app).record(created_event(c, "cli"));
            eprintln!(
                "registry-gate: created {} credential {} for {} (expires {}); the secret is shown once:",
                c.kind.as_str(),
                c.id,
                c.account,
                when(c.expires_at)
            );
            out(format_args!("{}\n", created.secret.expose()))
        }
        Err(e) => manage_error(e),
    }
}

/// The audit event of a new credential.
pub fn created_event(c: &Credential, by: &str) -> Event {
    Event::CredentialCreated {
        id: c.id.clone(),
        kind: c.kind.as_str(),
        account: c.account.clone(),
        name: c.name.clone(),
        scopes: c.scopes.clone(),
        expires_at: c.expires_at,
        by: by.to_owned(),
    }
}

pub async fn list(app: &App, owner: Option<String>, json: bool) -> ExitCode {
    let found = match manager(app).list(Actor::Cli, owner.as_deref()).await {
        Ok(f) => f,
        Err(e) => return manage_error(e),
    };
    if json {
        return match serde_json::to_string_pretty(&found) {
            Ok(text) => out(format_args!("{text}\n")),
            Err(e) => fail(1, e),
        };
    }
    let now = crate::store::now();
    let mut text = format!(
        "{:<20} {:<8} {:<24} {:<20} {:<8} {:<20} {:<20} SCOPES\n",
        "ID", "KIND", "ACCOUNT", "NAME", "STATE", "EXPIRES", "LAST USED"
    );
    for c in &found {
        let state = if c.revoked_at.is_some() {
            "revoked"
        } else if !c.is_active(now) {
            "expired"
        } else {
            "active"
        };
        text += &format!(
            "{:<20} {:<8} {:<24} {:<20} {:<8} {:<20} {:<20} {}\n",
            c.id,
            c.kind.as_str(),
            c.account,
            c.name,
            state,
            when(c.expires_at),
            c.last_used_at.map_or_else(|| "never".to_owned(), when),
            c.scopes.join(" ")
        );
    }
    out(format_args!("{text}"))
}

/// Writes to stdout; a closed pipe (`| head`) ends quietly, not in a panic.
fn out(args: std::fmt::Arguments<'_>) -> ExitCode {
    match std::io::stdout().lock().write_fmt(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(1, format!("cannot write to stdout: {e}")),
    }
}

pub async fn revoke(app: &App, id: &str) -> ExitCode {
    match manager(app).revoke(Actor::Cli, id).await {
        Ok(c) => {
            audit(app).record(Event::CredentialRevoked {
                id: c.id.clone(),
                account: c.account.clone(),
                by: "cli".into(),
            });
            eprintln!(
                "registry-gate: revoked {} ({}); every instance refuses it within {}",
                c.id,
                c.account,
                humantime::format_duration(app.config.tokens.cache_ttl)
            );
            ExitCode::SUCCESS
        }
        Err(ManageError::NotFound) => fail(2, format!("no credential {id:?}")),
        Err(e) => manage_error(e),
    }
}

pub async fn logout_all(app: &App, account: &str) -> ExitCode {
    match manager(app).log_out_everywhere(Actor::Cli, account).await {
        Ok(()) => {
            audit(app).record(Event::LoggedOutEverywhere {
                account: account.to_owned(),
                by: "cli".into(),
            });
            eprintln!(
                "registry-gate: {account} is logged out everywhere: refresh tokens and UI sessions issued until now stop working within {}",
                humantime::format_duration(app.config.tokens.cache_ttl)
            );
            ExitCode::SUCCESS
        }
        Err(e) => manage_error(e),
    }
}

/// A Unix time as RFC 3339 (seconds).
pub fn when(t: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}
