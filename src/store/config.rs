//! `[store]` as written in the file, and resolved: which database, where,
//! and with which password. A leaf: no connection is opened here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The default store: an SQLite file, created on first use.
pub const DEFAULT_URL: &str = "sqlite://data/registry-gate.db";

/// `[store]` in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `sqlite://PATH` or `postgres://user@host:port/db`.
    pub url: StoreUrl,
    /// The PostgreSQL password, read from this file (`\r\n` trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// How long the activity page's write history is kept.
    #[serde(default = "default_activity_retention", with = "humantime_serde")]
    pub activity_retention: std::time::Duration,
}

fn default_activity_retention() -> std::time::Duration {
    std::time::Duration::from_secs(30 * 24 * 3600)
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            url: StoreUrl(DEFAULT_URL.to_owned()),
            password_file: None,
            activity_retention: default_activity_retention(),
        }
    }
}

/// A store URL. It may hold a password (`postgres://u:pw@h/db`), so it
/// prints (and serializes, for `check-config`) with that password as `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(pub String);

impl StoreUrl {
    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for StoreUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// `scheme://user:password@host...` -> `scheme://user:***@host...`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => url.to_owned(),
    }
}

/// The resolved store settings. Equal when they name the same database
/// with the same password (a reload then keeps the open pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub backend: Backend,
    /// The URL as it may be shown (password redacted).
    pub shown: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The database file (relative paths resolved against the base dir).
    Sqlite(PathBuf),
    /// The URL as written, and the password from `password_file`, if any.
    Postgres {
        url: Secret,
        password: Option<Secret>,
    },
}

/// A `[store]` error: the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfigError {
    pub key: &'static str,
    pub message: String,
}

impl RawStore {
    /// Checks the URL and reads the password file. Relative paths resolve
    /// against `base` (the working directory, as every path in the file).
    pub fn resolve(&self, base: &Path) -> Result<StoreConfig, StoreConfigError> {
        let url = self.url.0.trim();
        let err = |key, message: String| StoreConfigError { key, message };
        let backend = if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(err("store.url", "sqlite:// needs a file path".into()));
            }
            if self.password_file.is_some() {
                return Err(err(
                    "store.password_file",
                    "only PostgreSQL stores take a password".into(),
                ));
            }
            Backend::Sqlite(base.join(path))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let password = match &self.password_file {
                Some(p) => Some(
                    crate::authn::ldap::read_password_file(&base.join(p)).map_err(|e| {
                        err(
                            "store.password_file",
                            format!("cannot read {}: {e}", p.display()),
                        )
                    })?,
                ),
                None => None,
            };
            Backend::Postgres {
                url: Secret::new(url),
                password,
            }
        } else {
            return Err(err(
                "store.url",
                format!(
                    "{:?} must start with sqlite:// or postgres://",
                    self.url.redacted()
                ),
            ));
        };
        Ok(StoreConfig {
            backend,
            shown: self.url.redacted(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_print_without_their_password() {
        let cases = [
            (
                "postgres://gate:s3cret@db:5432/rg",
                "postgres://gate:***@db:5432/rg",
            ),
            ("postgres://gate@db/rg", "postgres://gate@db/rg"),
            (
                "postgres://u:p:q@db/rg?sslmode=require",
                "postgres://u:***@db/rg?sslmode=require",
            ),
            ("sqlite://data/x.db", "sqlite://data/x.db"),
            ("not a url", "not a url"),
        ];
        for (url, shown) in cases {
            let u = StoreUrl(url.into());
            assert_eq!(u.redacted(), shown);
            assert_eq!(format!("{u:?}"), shown);
            assert_eq!(toml::Value::try_from(&u).unwrap().as_str(), Some(shown));
        }
    }

    #[test]
    fn resolves_paths_and_refuses_other_schemes() {
        let raw = |url: &str| RawStore {
            url: StoreUrl(url.into()),
            ..RawStore::default()
        };
        let c = raw("sqlite://data/gate.db")
            .resolve(Path::new("/srv"))
            .unwrap();
        assert!(matches!(c.backend, Backend::Sqlite(p) if p == Path::new("/srv/data/gate.db")));
        let c = raw("sqlite:///var/lib/g.db")
            .resolve(Path::new("/srv"))
            .unwrap();
        assert!(matches!(c.backend, Backend::Sqlite(p) if p == Path::new("/var/lib/g.db")));
        assert_eq!(
            raw("mysql://x").resolve(Path::new(".")).unwrap_err().key,
            "store.url"
        );
        assert_eq!(
            raw("sqlite://").resolve(Path::new(".")).unwrap_err().key,
            "store.url"
        );
        let mut pw = raw("sqlite://x.db");
        pw.password_file = Some("p".into());
        assert_eq!(
            pw.resolve(Path::new(".")).unwrap_err().key,
            "store.password_file"
        );
        let mut missing = raw("postgres://u@h/d");
        missing.password_file = Some("/no/such/file".into());
        let e = missing.resolve(Path::new(".")).unwrap_err();
        assert_eq!(e.key, "store.password_file");
        assert!(!e.message.contains("s3cret"));
    }

    #[test]
    fn password_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "hunter2\r\n").unwrap();
        let raw = RawStore {
            url: StoreUrl("postgres://gate@127.0.0.1:5432/rg".into()),
            password_file: Some("pw".into()),
            ..RawStore::default()
        };
        match raw.resolve(dir.path()).unwrap().backend {
            Backend::Postgres { password, .. } => {
                assert_eq!(password.unwrap().expose(), "hunter2")
            }
            other => panic!("{other:?}"),
        }
    }
}
