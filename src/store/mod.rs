//! The store: the one door to the database that holds what must outlive a
//! process and be shared by every instance (robot accounts' and personal
//! access tokens' credentials, "log out everywhere" marks).
//!
//! SQLite (embedded, one instance) and PostgreSQL (several instances) sit
//! behind the same functions, through sqlx. Every query is written once in
//! portable SQL (`$1` placeholders work on both) and run by [`on_pool!`] on
//! whichever pool is configured. Migrations are embedded and applied at start
//! (PostgreSQL serialises concurrent starts with an advisory lock) and by
//! `registry-gate migrate`.
//!
//! Opening a store opens no connection: a database that is down when the
//! gate starts must not stop it (static and LDAP logins never need it). Each
//! query waits at most [`ACQUIRE_TIMEOUT`] for a connection and then fails
//! as [`StoreError::Unavailable`], which the realm answers with 503.
//!
//! Depends on `config`-free leaves only (`secret`); nothing of HTTP.

pub mod activity;
pub mod config;
pub mod credentials;
pub mod logouts;
pub mod oidc;
pub mod sessions;
pub mod throttle;

use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};

pub use config::{Backend, RawStore, StoreConfig, StoreUrl};
pub use credentials::{Credential, CredentialKind, NewCredential};
pub use oidc::OidcAccount;

/// The schema, embedded in the binary (`src/store/migrations/*.sql`).
static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations");

/// How long a query waits for a connection before the store counts as down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Migration runs before a failure counts (see [`Store::migrate`]).
const MIGRATE_ATTEMPTS: u64 = 5;

/// Why the store could not answer. Never "not found" (that is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the connection.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A query or migration failed.
    #[error("store error: {0}")]
    Query(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
            other => StoreError::Query(other.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(inner) => inner.into(),
            other => StoreError::Query(other.to_string()),
        }
    }
}

pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// How to connect, checked when the store is opened.
enum Options {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
}

/// Runs the same expression on whichever pool the store has: `$p` is bound
/// to the concrete pool, so sqlx's generic query builders work on both.
macro_rules! on_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match $store.pool() {
            $crate::store::Pool::Sqlite($p) => $body,
            $crate::store::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// An open (lazily connecting) store.
pub struct Store {
    options: Options,
    /// Made on first use, inside the runtime (sqlx's pools spawn tasks),
    /// so that opening a store needs no runtime (`check-config`).
    pool: OnceLock<Pool>,
    shown: String,
    /// Whether the schema is known to be current in this process.
    migrated: AtomicBool,
    /// One migration run at a time in this process (the start-up task and
    /// a first query may both ask).
    migrating: tokio::sync::Mutex<()>,
    /// Writes under way off a request's path ([`Store::spawn_write`]).
    pending: std::sync::atomic::AtomicUsize,
    settled: tokio::sync::Notify,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.shown)
    }
}

impl Store {
    /// The store `config` names; connects on first use. Fails only on a URL
    /// that sqlx cannot parse.
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let options = match &config.backend {
            Backend::Sqlite(path) => Options::Sqlite(
                SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    // Readers do not wait for the writer; `busy_timeout`
                    // covers the writers of a second process (the CLI).
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5)),
            ),
            Backend::Postgres { url, password } => {
                let mut options = PgConnectOptions::from_str(url.expose()).map_err(|_| {
                    // sqlx's message may quote the URL; ours does not.
                    StoreError::Query(format!("store.url {} is not a valid URL", config.shown))
                })?;
                if let Some(pw) = password {
                    options = options.password(pw.expose());
                }
                Options::Postgres(options.application_name("registry-gate"))
            }
        };
        Ok(Store {
            options,
            pool: OnceLock::new(),
            shown: config.shown.clone(),
            migrated: AtomicBool::new(false),
            migrating: tokio::sync::Mutex::new(()),
            pending: std::sync::atomic::AtomicUsize::new(0),
            settled: tokio::sync::Notify::new(),
        })
    }

    /// The pool, made on first use (from async code, inside the runtime).
    pub(crate) fn pool(&self) -> &Pool {
        self.pool.get_or_init(|| match &self.options {
            Options::Sqlite(o) => Pool::Sqlite(
                PoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(o.clone()),
            ),
            Options::Postgres(o) => Pool::Postgres(
                PoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(o.clone()),
            ),
        })
    }

    /// The URL, password redacted.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Applies the embedded migrations that are not applied yet. Safe when
    /// several processes start at once: sqlx takes PostgreSQL's advisory
    /// lock around it. SQLite has no such lock, so two processes (the gate
    /// starting and `registry-gate token create`, say) may both try a
    /// migration: the loser's fails ("already exists") once the winner
    /// commits, and a new run then finds it applied. So a failed run is
    /// retried a few times before it counts.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let _one = self.migrating.lock().await;
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        self.create_sqlite_dir()?;
        let mut attempt = 0;
        loop {
            match on_pool!(self, p => MIGRATOR.run(p).await) {
                Ok(()) => break,
                Err(e) => {
                    let e = StoreError::from(e);
                    attempt += 1;
                    if matches!(e, StoreError::Unavailable(_)) || attempt >= MIGRATE_ATTEMPTS {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, attempt, "store: migration raced another process; again");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
            }
        }
        self.migrated.store(true, Ordering::Release);
        Ok(())
    }

    /// Runs `write` off the caller's path (a registry request never waits
    /// on the database), counted so that shutdown can wait for it
    /// ([`Store::settle`]). A failure is logged as `what`.
    pub fn spawn_write<F>(self: &std::sync::Arc<Self>, what: &'static str, write: F)
    where
        F: std::future::Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        let store = self.clone();
        rt.spawn(async move {
            if let Err(e) = write.await {
                tracing::warn!(error = %e, "store: could not write {what}");
            }
            if store.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                store.settled.notify_waiters();
            }
        });
    }

    /// Waits (at most `limit`) until the writes under way are done: at
    /// shutdown, so that a push's activity row is not lost with the process.
    pub async fn settle(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let notified = self.settled.notified();
                if self.pending.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }

    /// Migrates if this process has not yet; the first query after a store
    /// comes back applies what a failed start could not.
    pub async fn ensure_migrated(&self) -> Result<(), StoreError> {
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        self.migrate().await
    }

    /// One round trip: is the database there and the schema current?
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.ensure_migrated().await?;
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// SQLite creates the file, not its directory (`data/` by default).
    fn create_sqlite_dir(&self) -> Result<(), StoreError> {
        if let Options::Sqlite(o) = &self.options {
            let file = o.get_filename();
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch, as the store keeps times.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two processes migrating one fresh SQLite file at once (the gate
    /// starting and `registry-gate token create`): sqlx has no lock there,
    /// so the loser's `CREATE TABLE` failed with "already exists".
    #[tokio::test]
    async fn concurrent_first_migrations_of_one_sqlite_file_both_succeed() {
        for _ in 0..8 {
            let dir = tempfile::tempdir().unwrap();
            let config = StoreConfig {
                backend: Backend::Sqlite(dir.path().join("store.db")),
                shown: "sqlite://test".into(),
            };
            // Two stores: two pools, as two processes would have.
            let (a, b) = (Store::open(&config).unwrap(), Store::open(&config).unwrap());
            let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
            ra.unwrap();
            rb.unwrap();
            a.ping().await.unwrap();
        }
    }
}
