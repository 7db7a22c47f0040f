//! "Log out everywhere": per account, the moment before which every refresh
//! token and UI session of that account stops working.

use super::{Store, StoreError, on_pool};

impl Store {
    /// Marks `account` as logged out everywhere as of now: tokens and
    /// sessions issued in or before this second stop working (their `iat`
    /// has whole seconds). Returns once that second has passed, so a login
    /// right after this call is not caught by it.
    pub async fn log_out_everywhere(&self, account: &str) -> Result<(), StoreError> {
        self.ensure_migrated().await?;
        let at = super::now();
        let sql = "INSERT INTO account_logouts (account, logged_out_at) VALUES ($1, $2) \
                   ON CONFLICT (account) DO UPDATE SET logged_out_at = excluded.logged_out_at";
        on_pool!(self, p => sqlx::query(sql).bind(account).bind(at).execute(p).await.map(|r| r.rows_affected()))?;
        let next_second = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at as u64 + 1);
        if let Ok(wait) = next_second.duration_since(std::time::SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// When `account` last logged out everywhere, if ever.
    pub async fn logged_out_at(&self, account: &str) -> Result<Option<i64>, StoreError> {
        self.ensure_migrated().await?;
        let sql = "SELECT logged_out_at FROM account_logouts WHERE account = $1";
        let at: Option<i64> =
            on_pool!(self, p => sqlx::query_scalar(sql).bind(account).fetch_optional(p).await)?;
        Ok(at)
    }
}
