//! Authorization: ACL rules compiled once. INTERFACE STUB: to be implemented.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::authn::Labels;
use crate::scope::{Actions, Scope};

/// One `[[acl]]` entry as written in the config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    #[serde(rename = "match", default)]
    pub matches: RawMatch,
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The `match` table of an ACL rule. Every field present must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Who asks, from where, for which service.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Empty for anonymous callers.
    pub account: &'a str,
    pub labels: &'a Labels,
    pub ip: Option<IpAddr>,
    pub service: &'a str,
}

/// A rule that failed to compile; `path` names the key, e.g. `acl[2].match.name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct AclError {
    pub path: String,
    pub message: String,
}

/// The compiled, ordered ACL.
#[derive(Debug, Clone, Default)]
pub struct Acl {}

impl Acl {
    pub fn compile(_rules: &[RawRule]) -> Result<Acl, AclError> {
        Ok(Acl {})
    }

    /// The actions of `requested` that the first matching rule allows.
    pub fn grant(&self, _subject: &Subject<'_>, _requested: &Scope) -> Actions {
        Actions::new()
    }
}
