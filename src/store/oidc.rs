//! The `oidc_accounts` table: people of an OpenID provider, as the provider
//! described them at their last login (account, provider, subject, labels).

use super::{Store, StoreError, on_pool};
use crate::authn::Labels;

/// One SSO account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcAccount {
    /// `<provider>:<account claim>`.
    pub account: String,
    pub provider: String,
    /// The provider's `sub`.
    pub subject: String,
    pub labels: Labels,
    pub last_login_at: i64,
}

impl Store {
    /// Records a login: inserts or replaces what is known about the account.
    pub async fn save_oidc_account(&self, a: &OidcAccount) -> Result<(), StoreError> {
        self.ensure_migrated().await?;
        let labels =
            serde_json::to_string(&a.labels).map_err(|e| StoreError::Query(e.to_string()))?;
        let sql = "INSERT INTO oidc_accounts (account, provider, subject, labels, last_login_at) \
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account) DO UPDATE SET \
                   provider = excluded.provider, subject = excluded.subject, \
                   labels = excluded.labels, last_login_at = excluded.last_login_at";
        on_pool!(self, p => sqlx::query(sql)
            .bind(&a.account)
            .bind(&a.provider)
            .bind(&a.subject)
            .bind(&labels)
            .bind(a.last_login_at)
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// What the last login of `account` recorded, if it ever logged in.
    pub async fn oidc_account(&self, account: &str) -> Result<Option<OidcAccount>, StoreError> {
        self.ensure_migrated().await?;
        let sql = "SELECT account, provider, subject, labels, last_login_at \
                   FROM oidc_accounts WHERE account = $1";
        let row: Option<(String, String, String, String, i64)> =
            on_pool!(self, p => sqlx::query_as(sql).bind(account).fetch_optional(p).await)?;
        row.map(|(account, provider, subject, labels, last_login_at)| {
            let labels = serde_json::from_str(&labels)
                .map_err(|e| StoreError::Query(format!("oidc account {account}: labels: {e}")))?;
            Ok(OidcAccount {
                account,
                provider,
                subject,
                labels,
                last_login_at,
            })
        })
        .transpose()
    }
}
