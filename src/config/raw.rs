//! The configuration file's shape, mirrored by serde structs. Unknown keys are
//! errors (`deny_unknown_fields`): a misspelled key must not be dropped
//! silently, as the token servers we replace did. Values are checked and
//! turned into the resolved `Config` in `super::resolve`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::authn::Labels;
use crate::authn::ldap::LdapConfig;
use crate::authz::RawRule;
use crate::secret::Secret;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub token: RawToken,
    #[serde(default)]
    pub users: BTreeMap<String, RawUser>,
    #[serde(default)]
    pub acl: Vec<RawRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapConfig>,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub log: RawLog,
}

/// `[audit]`: where the audit trail goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// `"stdout"` (default), `"off"`, or a file path (JSON lines, appended).
    pub output: String,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            output: "stdout".into(),
        }
    }
}

/// `[log]`: the console log (stderr).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `"text"` (default) or `"json"`; `--log-format` overrides it.
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "0.0.0.0:5000".into(),
            public_url: None,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: String,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            url: "http://127.0.0.1:5001".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub service: String,
    pub issuer: String,
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// How long a refresh token (docker's stored identity token) stays valid.
    #[serde(with = "humantime_serde")]
    pub refresh_lifetime: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl Default for RawToken {
    fn default() -> Self {
        RawToken {
            service: "Docker registry".into(),
            issuer: "registry-gate".into(),
            lifetime: Duration::from_secs(5 * 60),
            refresh_lifetime: Duration::from_secs(30 * 24 * 3600),
            key: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    /// A bcrypt hash, never the password itself.
    pub password: Secret,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}
