//! The Bearer challenge: a value that renders its own `WWW-Authenticate`
//! header (distribution `auth/token/accesscontroller.go`), so it is built in
//! one place only.

use http::HeaderValue;

use crate::scope::Scope;

/// Why a presented token was not enough (RFC 6750 section 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeError {
    /// Bad signature, expired, wrong audience...: get a new token.
    InvalidToken,
    /// A valid token without the needed scope.
    InsufficientScope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub service: String,
    pub scopes: Vec<Scope>,
    pub error: Option<ChallengeError>,
}

impl Challenge {
    pub fn header_value(&self) -> HeaderValue {
        let mut v = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            quote(&self.realm),
            quote(&self.service)
        );
        if !self.scopes.is_empty() {
            // Several scopes go space-separated into one parameter, as
            // distribution does; docker and containerd split them again.
            let scopes: Vec<String> = self.scopes.iter().map(Scope::to_string).collect();
            v.push_str(&format!(",scope=\"{}\"", quote(&scopes.join(" "))));
        }
        match self.error {
            Some(ChallengeError::InvalidToken) => v.push_str(",error=\"invalid_token\""),
            Some(ChallengeError::InsufficientScope) => v.push_str(",error=\"insufficient_scope\""),
            None => {}
        }
        // Every part was checked or escaped; a failure here would be a bug,
        // and still yields a challenge the client can act on.
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }
}

/// Escapes a quoted-string (RFC 7230): backslash and double quote.
fn quote(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Action;

    #[test]
    fn renders_every_form() {
        let base = Challenge {
            realm: "http://gate:5000/auth".into(),
            service: "Docker registry".into(),
            scopes: vec![],
            error: None,
        };
        let cases = [
            (
                base.clone(),
                r#"Bearer realm="http://gate:5000/auth",service="Docker registry""#,
            ),
            (
                Challenge {
                    scopes: vec![
                        Scope::repository("a/b", [Action::Pull, Action::Push]),
                        Scope::repository("c", [Action::Pull]),
                    ],
                    error: Some(ChallengeError::InsufficientScope),
                    ..base.clone()
                },
                r#"Bearer realm="http://gate:5000/auth",service="Docker registry",scope="repository:a/b:pull,push repository:c:pull",error="insufficient_scope""#,
            ),
            (
                Challenge {
                    error: Some(ChallengeError::InvalidToken),
                    service: "q\"s".into(),
                    ..base
                },
                r#"Bearer realm="http://gate:5000/auth",service="q\"s",error="invalid_token""#,
            ),
        ];
        for (c, want) in cases {
            assert_eq!(c.header_value().to_str().unwrap(), want);
        }
    }
}
