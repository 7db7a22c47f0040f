//! The login throttle's counters shared by every instance: failures per
//! key (an address or an account), the back-off they earned, and the
//! addresses an account logged in from (exempt from its lockout).

use super::{Store, StoreError, on_pool};

impl Store {
    /// Counts one failure for `key` at `now_ms` (a count older than
    /// `forget_before_ms` starts again); returns the failures now counted.
    pub async fn throttle_fail(
        &self,
        key: &str,
        now_ms: i64,
        forget_before_ms: i64,
    ) -> Result<i64, StoreError> {
        self.ensure_migrated().await?;
        // One statement: concurrent failures on several instances each
        // count (the row is updated atomically by either database).
        let sql = "INSERT INTO throttle (key, failures, last_failure_ms, blocked_until_ms) \
                   VALUES ($1, 1, $2, 0) \
                   ON CONFLICT (key) DO UPDATE SET \
                     failures = CASE WHEN throttle.last_failure_ms < $3 AND throttle.blocked_until_ms < $3 \
                                THEN 1 ELSE throttle.failures + 1 END, \
                     last_failure_ms = $2 \
                   RETURNING failures";
        let n: i64 = on_pool!(self, p => sqlx::query_scalar(sql).bind(key).bind(now_ms).bind(forget_before_ms).fetch_one(p).await)?;
        Ok(n)
    }

    /// Backs `key` off until `until_ms` (never shortens a longer one).
    pub async fn throttle_block(&self, key: &str, until_ms: i64) -> Result<(), StoreError> {
        self.ensure_migrated().await?;
        let sql =
            "UPDATE throttle SET blocked_until_ms = $2 WHERE key = $1 AND blocked_until_ms < $2";
        on_pool!(self, p => sqlx::query(sql).bind(key).bind(until_ms).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// For each of up to three `keys`, in order: until when it is blocked
    /// (or trusted), and the failures counted (`(0, 0)`: no row). One
    /// indexed query.
    pub async fn throttle_state(&self, keys: [&str; 3]) -> Result<[(i64, i64); 3], StoreError> {
        self.ensure_migrated().await?;
        let sql = "SELECT key, blocked_until_ms, failures FROM throttle WHERE key IN ($1, $2, $3)";
        let rows: Vec<(String, i64, i64)> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(keys[0]).bind(keys[1]).bind(keys[2]).fetch_all(p).await)?;
        let mut out = [(0, 0); 3];
        for (key, until, failures) in rows {
            for (i, k) in keys.iter().enumerate() {
                if *k == key {
                    out[i] = (until, failures);
                }
            }
        }
        Ok(out)
    }

    /// Marks `key` (an account at an address) trusted until `until_ms`.
    pub async fn throttle_trust(&self, key: &str, until_ms: i64) -> Result<(), StoreError> {
        self.ensure_migrated().await?;
        let sql = "INSERT INTO throttle (key, failures, last_failure_ms, blocked_until_ms) \
                   VALUES ($1, 0, 0, $2) \
                   ON CONFLICT (key) DO UPDATE SET blocked_until_ms = $2";
        on_pool!(self, p => sqlx::query(sql).bind(key).bind(until_ms).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Forgets throttle rows quiet since `before_ms`.
    pub async fn throttle_prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.ensure_migrated().await?;
        let sql = "DELETE FROM throttle WHERE last_failure_ms < $1 AND blocked_until_ms < $1";
        let n = on_pool!(self, p => sqlx::query(sql).bind(before_ms).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n)
    }
}
