//! The activity page's history: every upstream write through any instance,
//! kept for `[store] activity_retention`, readable after a restart.

use super::{Store, StoreError, on_pool};

/// One upstream write as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ActivityRow {
    pub at_ms: i64,
    pub account: String,
    pub action: String,
    pub repository: String,
    pub reference: Option<String>,
    pub digest: Option<String>,
    pub status: i32,
    pub outcome: String,
}

impl Store {
    pub async fn record_activity(&self, row: &ActivityRow) -> Result<(), StoreError> {
        self.ensure_migrated().await?;
        let sql = "INSERT INTO activity (at_ms, account, action, repository, reference, digest, status, outcome) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        on_pool!(self, p => sqlx::query(sql)
            .bind(row.at_ms).bind(&row.account).bind(&row.action).bind(&row.repository)
            .bind(&row.reference).bind(&row.digest).bind(row.status).bind(&row.outcome)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The newest `limit` writes since `since_ms`, newest first.
    pub async fn recent_activity(
        &self,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<ActivityRow>, StoreError> {
        self.ensure_migrated().await?;
        let sql = "SELECT at_ms, account, action, repository, reference, digest, status, outcome \
                   FROM activity WHERE at_ms >= $1 ORDER BY at_ms DESC LIMIT $2";
        let rows: Vec<ActivityRow> =
            on_pool!(self, p => sqlx::query_as(sql).bind(since_ms).bind(limit).fetch_all(p).await)?;
        Ok(rows)
    }

    /// Forgets writes older than `before_ms` and ended sessions that have
    /// expired; returns how many rows went.
    pub async fn prune(&self, before_ms: i64, now_s: i64) -> Result<u64, StoreError> {
        self.ensure_migrated().await?;
        let a = on_pool!(self, p => sqlx::query("DELETE FROM activity WHERE at_ms < $1")
            .bind(before_ms).execute(p).await.map(|r| r.rows_affected()))?;
        let s = on_pool!(self, p => sqlx::query("DELETE FROM ended_sessions WHERE expires_at < $1")
            .bind(now_s).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(a + s)
    }
}
