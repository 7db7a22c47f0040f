//! UI sessions ended by logout: every instance refuses them, not only the
//! one where "Log out" was clicked.

use super::{Store, StoreError, on_pool};

impl Store {
    /// Ends session `jti` (kept until its token would have expired).
    pub async fn end_session(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        self.ensure_migrated().await?;
        let sql = "INSERT INTO ended_sessions (jti, expires_at) VALUES ($1, $2) \
                   ON CONFLICT (jti) DO NOTHING";
        on_pool!(self, p => sqlx::query(sql).bind(jti).bind(expires_at).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn session_ended(&self, jti: &str) -> Result<bool, StoreError> {
        self.ensure_migrated().await?;
        let sql = "SELECT 1 FROM ended_sessions WHERE jti = $1";
        let found: Option<i32> =
            on_pool!(self, p => sqlx::query_scalar(sql).bind(jti).fetch_optional(p).await)?;
        Ok(found.is_some())
    }
}
