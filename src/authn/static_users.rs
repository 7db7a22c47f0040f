//! Static users from the config file: bcrypt hashes checked off the async
//! runtime (bcrypt is deliberately slow: tens of milliseconds per check).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{AuthnError, Backend, Identity};
use crate::config::StaticUser;
use crate::secret::Secret;

/// A hash of a random password, checked when the account is unknown so that
/// unknown and known accounts take the same time (no account enumeration).
const DUMMY_HASH: &str = "$2y$10$j/zV1NrXiP0d/NjCSbO6z.LPudtqAOQXDkZHPGBHcMWFMAGU74Wka";

/// The accounts and passwords of the example configuration
/// (config/registry-gate.toml, printed in the README).
const EXAMPLE_LOGINS: &[(&str, &str)] = &[("admin", "badmin"), ("test", "123")];

/// The static accounts that still have the example configuration's
/// password: anyone who read the README can log in as them. Checks at most
/// one bcrypt hash per example account (tens of milliseconds each).
pub fn with_example_passwords(users: &BTreeMap<String, StaticUser>) -> Vec<&'static str> {
    EXAMPLE_LOGINS
        .iter()
        .filter(|(account, password)| {
            users.get(*account).is_some_and(|u| {
                bcrypt::verify(password, u.password_hash.expose()).unwrap_or(false)
            })
        })
        .map(|(account, _)| *account)
        .collect()
}

#[derive(Debug, Clone, Default)]
pub struct StaticUsers {
    users: Arc<BTreeMap<String, StaticUser>>,
    /// What an unknown account's password is checked against: a hash of
    /// the highest bcrypt cost among the users' (`DUMMY_HASH` when that is
    /// its cost, or there are no users), so that an unknown account costs
    /// at least what a known one does.
    dummy: Option<Arc<str>>,
}

impl StaticUsers {
    pub fn new(users: BTreeMap<String, StaticUser>) -> Self {
        let dummy_cost = DUMMY_HASH
            .parse::<bcrypt::HashParts>()
            .map(|h| h.get_cost());
        let cost = users
            .values()
            .filter_map(|u| u.password_hash.expose().parse::<bcrypt::HashParts>().ok())
            .map(|h| h.get_cost())
            .max();
        let dummy = match (cost, dummy_cost) {
            (Some(c), Ok(d)) if c != d => {
                let random: [u8; 16] = rand::random();
                bcrypt::hash(random, c).ok().map(Arc::from)
            }
            _ => None,
        };
        StaticUsers {
            users: Arc::new(users),
            dummy,
        }
    }

    fn dummy_hash(&self) -> String {
        self.dummy.as_deref().unwrap_or(DUMMY_HASH).to_owned()
    }

    /// The work a wrong password for a static account costs (one bcrypt
    /// check), done for nothing: with LDAP configured, a rejected LDAP or
    /// unknown account costs it too, so static accounts cannot be told
    /// apart by timing.
    pub async fn equal_work(&self, password: &Secret) {
        let hash = self.dummy_hash();
        let password = password.clone();
        let _ = tokio::task::spawn_blocking(move || bcrypt::verify(password.expose(), &hash)).await;
    }

    /// True when the account is a static one: then only this backend decides
    /// about it, so a static user and an LDAP user of the same name are never
    /// confused.
    pub fn contains(&self, account: &str) -> bool {
        self.users.contains_key(account)
    }

    /// The identity of a static account, without checking a password (used
    /// when a refresh token names it: the account must still exist).
    pub fn lookup(&self, account: &str) -> Option<Identity> {
        self.users.get(account).map(|u| Identity {
            account: account.to_owned(),
            backend: Backend::Static,
            labels: u.labels.clone(),
            credential: None,
        })
    }

    /// `Ok(None)` for an unknown account or a wrong password.
    pub async fn authenticate(
        &self,
        account: &str,
        password: &Secret,
    ) -> Result<Option<Identity>, AuthnError> {
        let user = self.users.get(account);
        let hash = user.map_or_else(
            || self.dummy_hash(),
            |u| u.password_hash.expose().to_owned(),
        );
        let password = password.clone();
        let matches = tokio::task::spawn_blocking(move || {
            bcrypt::verify(password.expose(), &hash).unwrap_or(false)
        })
        .await
        .map_err(|e| AuthnError::Backend(format!("password check failed: {e}")))?;
        Ok(match (user, matches) {
            (Some(_), true) => self.lookup(account),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> StaticUsers {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        StaticUsers::new(
            [(
                "alice".to_owned(),
                StaticUser {
                    password_hash: Secret::new(hash),
                    labels: [("team".to_owned(), vec!["ops".to_owned()])].into(),
                },
            )]
            .into(),
        )
    }

    #[tokio::test]
    async fn checks_passwords() {
        let u = users();
        let ok = u
            .authenticate("alice", &Secret::new("s3cret"))
            .await
            .unwrap();
        assert_eq!(ok.unwrap().labels["team"], vec!["ops"]);
        let cases = [
            ("alice", "wrong"),
            ("alice", ""),
            ("bob", "s3cret"),
            ("", ""),
        ];
        for (account, password) in cases {
            let got = u
                .authenticate(account, &Secret::new(password))
                .await
                .unwrap();
            assert!(got.is_none(), "{account}/{password}");
        }
    }

    #[test]
    fn example_passwords_are_found() {
        let user = |password: &str| StaticUser {
            password_hash: Secret::new(bcrypt::hash(password, 4).unwrap()),
            labels: Default::default(),
        };
        // (accounts and their passwords, the accounts reported)
        type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                vec![("admin", "badmin"), ("test", "123")],
                vec!["admin", "test"],
            ),
            (vec![("admin", "badmin"), ("test", "other")], vec!["admin"]),
            (vec![("admin", "changed"), ("alice", "badmin")], vec![]),
            (vec![("test", "123")], vec!["test"]),
            (vec![], vec![]),
        ];
        for (accounts, want) in cases {
            let users = accounts
                .iter()
                .map(|(a, p)| ((*a).to_owned(), user(p)))
                .collect();
            assert_eq!(with_example_passwords(&users), want, "{accounts:?}");
        }
    }
}
