//! The `credentials` table: robot accounts' secrets and personal access
//! tokens. Rows hold the SHA-256 of a secret, never the secret.

use serde::Serialize;

use super::{Store, StoreError, on_pool};

/// Robot account or personal access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    Robot,
    Personal,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Robot => "robot",
            CredentialKind::Personal => "personal",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "robot" => Some(CredentialKind::Robot),
            "personal" => Some(CredentialKind::Personal),
            _ => None,
        }
    }
}

/// One credential as stored (without its secret, which is not stored).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Credential {
    pub id: String,
    pub kind: CredentialKind,
    /// `robot+NAME` for robots; the owner's account for personal tokens.
    pub account: String,
    /// The backend that vouches for the owner (`static`, `ldap`); `store`
    /// for robots, which exist only here.
    pub owner_backend: String,
    pub name: String,
    pub description: String,
    pub scopes: Vec<String>,
    pub labels: crate::authn::Labels,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

impl Credential {
    /// Usable at `now`: neither revoked nor expired.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// A credential to insert, with the hash of its freshly made secret.
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub credential: Credential,
    pub secret_sha256: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    kind: String,
    account: String,
    owner_backend: String,
    name: String,
    description: String,
    scopes: String,
    labels: String,
    created_by: String,
    created_at: i64,
    expires_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    revoked_by: Option<String>,
}

const COLUMNS: &str = "id, kind, account, owner_backend, name, description, scopes, labels, \
                       created_by, created_at, expires_at, last_used_at, revoked_at, revoked_by";

impl TryFrom<Row> for Credential {
    type Error = StoreError;
    fn try_from(r: Row) -> Result<Credential, StoreError> {
        let bad = |what: &str| StoreError::Query(format!("credential {}: malformed {what}", r.id));
        Ok(Credential {
            kind: CredentialKind::parse(&r.kind).ok_or_else(|| bad("kind"))?,
            scopes: serde_json::from_str(&r.scopes).map_err(|_| bad("scopes"))?,
            labels: serde_json::from_str(&r.labels).map_err(|_| bad("labels"))?,
            id: r.id.clone(),
            account: r.account,
            owner_backend: r.owner_backend,
            name: r.name,
            description: r.description,
            created_by: r.created_by,
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
            revoked_by: r.revoked_by,
        })
    }
}

fn rows(rows: Vec<Row>) -> Result<Vec<Credential>, StoreError> {
    rows.into_iter().map(Credential::try_from).collect()
}

impl Store {
    pub async fn insert_credential(&self, new: &NewCredential) -> Result<(), StoreError> {
        self.ensure_migrated().await?;
        let c = &new.credential;
        let json = |e: serde_json::Error| StoreError::Query(e.to_string());
        let scopes = serde_json::to_string(&c.scopes).map_err(json)?;
        let labels = serde_json::to_string(&c.labels).map_err(json)?;
        let sql = format!(
            "INSERT INTO credentials ({COLUMNS}, secret_sha256) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        );
        on_pool!(self, p => sqlx::query(&sql)
            .bind(&c.id).bind(c.kind.as_str()).bind(&c.account).bind(&c.owner_backend)
            .bind(&c.name).bind(&c.description).bind(&scopes).bind(&labels)
            .bind(&c.created_by).bind(c.created_at).bind(c.expires_at)
            .bind(c.last_used_at).bind(c.revoked_at).bind(&c.revoked_by)
            .bind(&new.secret_sha256)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The credential whose secret hashes to `sha256` (hex), if any.
    pub async fn credential_by_hash(&self, sha256: &str) -> Result<Option<Credential>, StoreError> {
        self.ensure_migrated().await?;
        let sql = format!("SELECT {COLUMNS} FROM credentials WHERE secret_sha256 = $1");
        let row: Option<Row> =
            on_pool!(self, p => sqlx::query_as(&sql).bind(sha256).fetch_optional(p).await)?;
        row.map(Credential::try_from).transpose()
    }

    pub async fn credential_by_id(&self, id: &str) -> Result<Option<Credential>, StoreError> {
        self.ensure_migrated().await?;
        let sql = format!("SELECT {COLUMNS} FROM credentials WHERE id = $1");
        let row: Option<Row> =
            on_pool!(self, p => sqlx::query_as(&sql).bind(id).fetch_optional(p).await)?;
        row.map(Credential::try_from).transpose()
    }

    /// Every credential, or those of one account (a robot's `robot+NAME` or
    /// a personal token's owner), newest first.
    pub async fn list_credentials(
        &self,
        account: Option<&str>,
    ) -> Result<Vec<Credential>, StoreError> {
        self.ensure_migrated().await?;
        let found: Vec<Row> = match account {
            Some(a) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM credentials WHERE account = $1 \
                     ORDER BY created_at DESC, id"
                );
                on_pool!(self, p => sqlx::query_as(&sql).bind(a).fetch_all(p).await)?
            }
            None => {
                let sql = format!("SELECT {COLUMNS} FROM credentials ORDER BY created_at DESC, id");
                on_pool!(self, p => sqlx::query_as(&sql).fetch_all(p).await)?
            }
        };
        rows(found)
    }

    /// Revokes `id`; false when there is no such credential or it was
    /// already revoked (the first revocation's time and author stay).
    pub async fn revoke_credential(&self, id: &str, by: &str, at: i64) -> Result<bool, StoreError> {
        self.ensure_migrated().await?;
        let sql = "UPDATE credentials SET revoked_at = $1, revoked_by = $2 \
                   WHERE id = $3 AND revoked_at IS NULL";
        let done = on_pool!(self, p => sqlx::query(sql).bind(at).bind(by).bind(id).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// Records a use (callers write at most once a minute per credential).
    pub async fn touch_credential(&self, id: &str, at: i64) -> Result<(), StoreError> {
        self.ensure_migrated().await?;
        let sql = "UPDATE credentials SET last_used_at = $1 WHERE id = $2";
        on_pool!(self, p => sqlx::query(sql).bind(at).bind(id).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}
