//! The permit: proof that a registry request was authorized. Only
//! [`Permit::check`] makes one and forwarding takes one, so a request that
//! was not checked cannot reach the upstream by accident.

use std::sync::Arc;

use crate::access::{Endpoint, RequiredAccess};
use crate::scope::Scope;
use crate::token::AccessClaims;

/// An authorized request's access and the claims that allowed it.
#[derive(Debug)]
pub struct Permit {
    // Private fields: no module but this one can build a Permit.
    required: RequiredAccess,
    claims: Arc<AccessClaims>,
}

/// The token lacks some of the required scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insufficient {
    pub missing: Vec<Scope>,
    /// What was asked for, handed back for the challenge (the check takes
    /// it by value so that the allowed path does not copy it).
    pub required: RequiredAccess,
}

impl Permit {
    /// Checks a verified token's `access` against what the request needs.
    /// `GET /v2/` needs a valid token and no scope; everything else needs
    /// every required scope covered. Deny by default: no covering grant, no permit.
    pub fn check(
        claims: Arc<AccessClaims>,
        required: RequiredAccess,
    ) -> Result<Permit, Insufficient> {
        let granted = claims.granted();
        let missing: Vec<Scope> = required
            .scopes
            .iter()
            .filter(|need| !granted.iter().any(|g| g.covers(need)))
            .cloned()
            .collect();
        if !missing.is_empty()
            || (required.scopes.is_empty() && required.endpoint != Endpoint::Base)
        {
            return Err(Insufficient { missing, required });
        }
        Ok(Permit { required, claims })
    }

    /// What the request needed (and was granted).
    pub fn required(&self) -> &RequiredAccess {
        &self.required
    }

    /// The verified claims that allowed it.
    pub fn claims(&self) -> &AccessClaims {
        &self.claims
    }

    /// The account the token was issued to ("" for anonymous).
    pub fn account(&self) -> &str {
        &self.claims.sub
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::{AccessEntry, Action::*};

    fn claims(access: &[Scope]) -> Arc<AccessClaims> {
        Arc::new(AccessClaims {
            iss: "i".into(),
            sub: "alice".into(),
            aud: "s".into(),
            exp: 0,
            nbf: 0,
            iat: 0,
            jti: "j".into(),
            access: access.iter().map(AccessEntry::from).collect(),
            labels: Default::default(),
            restrict: None,
            token_use: None,
            granted: Default::default(),
        })
    }

    fn need(endpoint: Endpoint, scopes: Vec<Scope>) -> RequiredAccess {
        RequiredAccess {
            endpoint,
            name: None,
            scopes,
            forward_query: None,
        }
    }

    #[test]
    fn checks_every_required_scope() {
        let pull_a = Scope::repository("a", [Pull]);
        let push_a = Scope::repository("a", [Pull, Push]);
        let pull_b = Scope::repository("b", [Pull]);
        let cases: Vec<(&str, Vec<Scope>, RequiredAccess, bool)> = vec![
            (
                "base with no access",
                vec![],
                need(Endpoint::Base, vec![]),
                true,
            ),
            (
                "pull with pull",
                vec![pull_a.clone()],
                need(Endpoint::Manifest, vec![pull_a.clone()]),
                true,
            ),
            (
                "push with pull only",
                vec![pull_a.clone()],
                need(Endpoint::Upload, vec![push_a.clone()]),
                false,
            ),
            (
                "push granted in two entries",
                vec![pull_a.clone(), Scope::repository("a", [Push])],
                need(Endpoint::Upload, vec![push_a.clone()]),
                true,
            ),
            (
                "other repository",
                vec![pull_a.clone()],
                need(Endpoint::Blob, vec![pull_b.clone()]),
                false,
            ),
            (
                "mount needs the source too",
                vec![push_a.clone()],
                need(Endpoint::UploadStart, vec![push_a.clone(), pull_b.clone()]),
                false,
            ),
            (
                "catalog",
                vec![Scope::catalog()],
                need(Endpoint::Catalog, vec![Scope::catalog()]),
                true,
            ),
            (
                "non-base with no scopes is refused",
                vec![pull_a.clone()],
                need(Endpoint::Blob, vec![]),
                false,
            ),
        ];
        for (what, granted, required, ok) in cases {
            assert_eq!(
                Permit::check(claims(&granted), required).is_ok(),
                ok,
                "{what}"
            );
        }
    }
}
