//! Managing robot accounts and personal access tokens: create, list,
//! revoke, and "log out everywhere", with the permission rules that the
//! three doors (the `token` CLI, the `/api/v1/` API and the UI's "Access
//! tokens" page) share. Nothing here knows HTTP.
//!
//! Who may do what:
//! - the CLI (an operator with the config file and the database) may do
//!   everything;
//! - an administrator, i.e. an identity the ACL grants
//!   `registry:credentials:*` (and, for a robot or personal token used as
//!   the caller's credential, whose scopes include it), may do everything;
//! - anyone else signed in with a password (or the UI) manages their own
//!   personal tokens, with scopes limited to what the ACL lets them do, and
//!   may log themselves out everywhere. A personal token or robot without
//!   the admin scope cannot manage tokens: a leaked token must not mint more.

pub mod cli;

use std::time::Duration;

use crate::authn::{Authenticators, Backend, Identity, Labels, ROBOT_PREFIX, rgt};
use crate::authz::{Acl, Restriction, Subject};
use crate::config::TokensConfig;
use crate::scope::{Action, Actions, REGISTRY, Scope};
use crate::secret::Secret;
use crate::store::{Credential, CredentialKind, NewCredential, Store, StoreError};

/// Who asks.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// `registry-gate token ...` on the server.
    Cli,
    /// A signed-in caller of the API or the UI.
    Caller {
        identity: &'a Identity,
        ip: std::net::IpAddr,
    },
}

impl Actor<'_> {
    /// The name audit events record.
    pub fn name(&self) -> String {
        match self {
            Actor::Cli => "cli".to_owned(),
            Actor::Caller { identity, .. } => identity.account.clone(),
        }
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub enum Kind {
    Robot {
        name: String,
        labels: Labels,
    },
    /// `owner: None`: the caller's own.
    Personal {
        owner: Option<String>,
        name: String,
    },
}

#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub kind: Kind,
    pub scopes: Vec<String>,
    pub expires_in: Option<Duration>,
    pub description: String,
}

/// A new credential and its secret, which is shown this once.
#[derive(Debug)]
pub struct Created {
    pub credential: Credential,
    pub secret: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no such credential")]
    NotFound,
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for ManageError {
    fn from(e: StoreError) -> Self {
        ManageError::Unavailable(e.to_string())
    }
}

/// The rules over one store and ACL.
pub struct Manager<'a> {
    pub store: &'a Store,
    pub acl: &'a Acl,
    pub authn: &'a Authenticators,
    pub tokens: &'a TokensConfig,
    /// The token service (ACL rules may match on it).
    pub service: &'a str,
}

/// The longest name or description accepted.
const MAX_TEXT: usize = 256;

impl<'a> Manager<'a> {
    /// The rules over `app`'s store, ACL and settings.
    pub fn for_app(app: &'a crate::app::App) -> Manager<'a> {
        Manager {
            store: &app.store,
            acl: &app.acl,
            authn: &app.authn,
            tokens: &app.config.tokens,
            service: &app.config.token.service,
        }
    }
}

impl Manager<'_> {
    /// Whether `actor` administers every credential.
    pub fn is_admin(&self, actor: Actor<'_>) -> bool {
        match actor {
            Actor::Cli => true,
            Actor::Caller { identity, ip } => {
                let admin = Scope::new(REGISTRY, "credentials", [Action::All]);
                self.grant(identity, ip, &admin).contains(&Action::All)
            }
        }
    }

    /// What the ACL (and the caller's own credential, if any) grants.
    fn grant(&self, identity: &Identity, ip: std::net::IpAddr, scope: &Scope) -> Actions {
        let subject = Subject {
            account: &identity.account,
            labels: &identity.labels,
            ip: Some(ip),
            service: self.service,
        };
        let granted = self.acl.grant(&subject, scope);
        match &identity.credential {
            Some(c) => c.restriction.bound(&scope.clone().with_actions(granted)),
            None => granted,
        }
    }

    pub async fn create(
        &self,
        actor: Actor<'_>,
        req: CreateRequest,
    ) -> Result<Created, ManageError> {
        let admin = self.is_admin(actor);
        let restriction = Restriction::parse(&req.scopes).map_err(ManageError::Invalid)?;
        if req.scopes.is_empty() {
            return Err(ManageError::Invalid("give at least one scope".into()));
        }
        if req.description.len() > MAX_TEXT {
            return Err(ManageError::Invalid(format!(
                "the description is longer than {MAX_TEXT} bytes"
            )));
        }
        let lifetime = req.expires_in.unwrap_or(self.tokens.default_lifetime);
        if lifetime.is_zero() || lifetime > self.tokens.max_lifetime {
            return Err(ManageError::Invalid(format!(
                "expiry must be more than 0s and at most {} ([tokens] max_lifetime)",
                humantime::format_duration(self.tokens.max_lifetime)
            )));
        }
        let (kind, account, owner_backend, name, labels) = match req.kind {
            Kind::Robot { name, labels } => {
                if !admin {
                    return Err(ManageError::Forbidden(
                        "only administrators create robot accounts".into(),
                    ));
                }
                if !crate::authn::credentials::valid_robot_name(&name) {
                    return Err(ManageError::Invalid(format!(
                        "robot name {name:?} must match [a-z0-9][a-z0-9._-]{{0,63}}"
                    )));
                }
                let account = format!("{ROBOT_PREFIX}{name}");
                (
                    CredentialKind::Robot,
                    account,
                    "robot".to_owned(),
                    name,
                    labels,
                )
            }
            Kind::Personal { owner, name } => {
                let (account, backend) = self.owner(actor, admin, owner).await?;
                if let Actor::Caller { identity, ip } = actor
                    && !admin
                {
                    self.check_within_rights(identity, ip, &restriction)?;
                }
                (
                    CredentialKind::Personal,
                    account,
                    backend,
                    name,
                    Labels::new(),
                )
            }
        };
        if name.is_empty() || name.len() > MAX_TEXT || name.chars().any(char::is_control) {
            return Err(ManageError::Invalid(
                "the name must be 1 to 256 characters, no control characters".into(),
            ));
        }
        let secret = rgt::generate();
        let now = crate::store::now();
        let credential = Credential {
            id: new_id(),
            kind,
            account,
            owner_backend,
            name,
            description: req.description,
            scopes: req.scopes,
            labels,
            created_by: actor.name(),
            created_at: now,
            expires_at: now + lifetime.as_secs() as i64,
            last_used_at: None,
            revoked_at: None,
            revoked_by: None,
        };
        self.store
            .insert_credential(&NewCredential {
                secret_sha256: rgt::hash(secret.expose()),
                credential: credential.clone(),
            })
            .await?;
        Ok(Created { credential, secret })
    }

    /// The owner of a new personal token and the backend that vouches for it.
    async fn owner(
        &self,
        actor: Actor<'_>,
        admin: bool,
        owner: Option<String>,
    ) -> Result<(String, String), ManageError> {
        match (actor, owner) {
            (Actor::Caller { identity, .. }, None) => {
                if identity.credential.is_some() && !admin {
                    return Err(ManageError::Forbidden(
                        "an access token cannot create access tokens; sign in with your password"
                            .into(),
                    ));
                }
                // Nor to machines: a workload's short-lived JWT must not turn
                // into a long-lived secret.
                if matches!(identity.backend, Backend::Robot | Backend::Workload)
                    || identity.account.is_empty()
                {
                    return Err(ManageError::Forbidden(
                        "personal access tokens belong to people".into(),
                    ));
                }
                Ok((
                    identity.account.clone(),
                    identity.backend.as_str().to_owned(),
                ))
            }
            (Actor::Cli, None) => Err(ManageError::Invalid("name the owner (--owner)".into())),
            (actor, Some(owner)) => {
                if !admin
                    && !matches!(actor, Actor::Caller { identity, .. } if identity.account == owner && identity.credential.is_none())
                {
                    return Err(ManageError::Forbidden(
                        "only administrators create tokens for other accounts".into(),
                    ));
                }
                if owner.starts_with(ROBOT_PREFIX) {
                    return Err(ManageError::Invalid(
                        "robots get credentials with --robot, not personal tokens".into(),
                    ));
                }
                let backend = self.owner_backend(&owner).await?;
                Ok((owner, backend))
            }
        }
    }

    /// Which backend knows `account` now (static first, then LDAP, then
    /// the people of OpenID providers who have logged in once).
    async fn owner_backend(&self, account: &str) -> Result<String, ManageError> {
        for backend in [Backend::Static, Backend::Ldap, Backend::Oidc] {
            match self.authn.lookup(account, backend.as_str()).await {
                Ok(Some(_)) => return Ok(backend.as_str().to_owned()),
                Ok(None) => {}
                Err(e) => return Err(ManageError::Unavailable(e.to_string())),
            }
        }
        Err(ManageError::Invalid(format!(
            "no static or LDAP account {account:?}, nor an SSO account that has logged in once"
        )))
    }

    /// A person may not write scopes beyond what the ACL grants them now,
    /// judged on the scope's pattern as a name (a glob names the
    /// repositories it covers). Every use is bounded by the ACL again.
    fn check_within_rights(
        &self,
        identity: &Identity,
        ip: std::net::IpAddr,
        scopes: &Restriction,
    ) -> Result<(), ManageError> {
        for (text, wanted) in scopes.requested() {
            if self.grant(identity, ip, &wanted) != wanted.actions {
                return Err(ManageError::Forbidden(format!(
                    "scope {text:?} goes beyond what you may do"
                )));
            }
        }
        Ok(())
    }

    /// Credentials `actor` may see: an administrator's choice (all, or one
    /// account's); anyone else's own personal tokens.
    pub async fn list(
        &self,
        actor: Actor<'_>,
        account: Option<&str>,
    ) -> Result<Vec<Credential>, ManageError> {
        if self.is_admin(actor) {
            return Ok(self.store.list_credentials(account).await?);
        }
        let Actor::Caller { identity, .. } = actor else {
            return Ok(Vec::new());
        };
        if account.is_some_and(|a| a != identity.account) {
            return Err(ManageError::Forbidden(
                "only administrators list other accounts' tokens".into(),
            ));
        }
        let mine = self.store.list_credentials(Some(&identity.account)).await?;
        Ok(mine
            .into_iter()
            .filter(|c| c.kind == CredentialKind::Personal)
            .collect())
    }

    /// Revokes `id`: administrators any, others their own personal tokens.
    pub async fn revoke(&self, actor: Actor<'_>, id: &str) -> Result<Credential, ManageError> {
        let found = self
            .store
            .credential_by_id(id)
            .await?
            .ok_or(ManageError::NotFound)?;
        if !self.is_admin(actor) {
            let own = matches!(actor, Actor::Caller { identity, .. }
                if identity.account == found.account
                    && found.kind == CredentialKind::Personal
                    && identity.credential.is_none());
            if !own {
                // Someone else's token: as if it did not exist.
                return Err(ManageError::NotFound);
            }
        }
        self.store
            .revoke_credential(id, &actor.name(), crate::store::now())
            .await?;
        if let Some(creds) = &self.authn.credentials {
            creds.forget(&found).await;
        }
        let revoked = self.store.credential_by_id(id).await?;
        revoked.ok_or(ManageError::NotFound)
    }

    /// Ends every refresh token and UI session of `account` issued until now.
    pub async fn log_out_everywhere(
        &self,
        actor: Actor<'_>,
        account: &str,
    ) -> Result<(), ManageError> {
        let own = matches!(actor, Actor::Caller { identity, .. }
            if identity.account == account && identity.credential.is_none());
        if !own && !self.is_admin(actor) {
            return Err(ManageError::Forbidden(
                "only administrators log other accounts out".into(),
            ));
        }
        if account.is_empty() || !crate::authn::acceptable_account(account) {
            return Err(ManageError::Invalid("not an account name".into()));
        }
        self.store.log_out_everywhere(account).await?;
        if let Some(creds) = &self.authn.credentials {
            creds.forget_logout(account).await;
        }
        Ok(())
    }
}

/// A credential id: `c_` + 16 random base62 characters (not a secret).
fn new_id() -> String {
    use rand::Rng;
    let tail: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(16)
        .map(char::from)
        .collect();
    format!("c_{tail}")
}
