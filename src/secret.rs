//! A newtype for secrets (passwords, tokens, keys): its `Debug` and `Display`
//! print `***`, so a secret cannot reach a log line or an error body by accident.
//! A leaf module.

use std::fmt;

/// A secret string. Read it with [`Secret::expose`], on purpose.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself. Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

/// A string, or an integer or boolean taken as its decimal/`true`/`false`
/// text: a password like `123` may arrive as a number (an unquoted TOML
/// value; figment's environment provider parses `123` as one). Those forms
/// are exact. A float is refused: its text is not recoverable (`1.50`
/// arrives as 1.5), so it would silently be the wrong secret.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string (quote the secret)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            // The value itself is not shown: it is a secret.
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(
                    "a number with a decimal point cannot be a secret exactly (1.50 would be read as 1.5): quote it",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

/// Serializes as `***`: serialized configs are for display (`check-config`).
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_itself() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[derive(serde::Deserialize)]
    struct Holder {
        pw: Secret,
    }

    fn from_toml(value: &str) -> Result<Secret, String> {
        toml::from_str::<Holder>(&format!("pw = {value}"))
            .map(|h| h.pw)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_and_booleans_are_their_text() {
        assert_eq!(from_toml("\"0123\"").unwrap().expose(), "0123");
        assert_eq!(from_toml("123").unwrap().expose(), "123");
        assert_eq!(from_toml("-42").unwrap().expose(), "-42");
        assert_eq!(from_toml("true").unwrap().expose(), "true");
        assert_eq!(from_toml("false").unwrap().expose(), "false");
        // What figment hands over for REGISTRY_GATE_..._PASSWORD=123 / =true.
        let from_value = |v: serde_json::Value| serde_json::from_value::<Secret>(v);
        assert_eq!(from_value(serde_json::json!(123)).unwrap().expose(), "123");
        assert_eq!(
            from_value(serde_json::json!(u64::MAX)).unwrap().expose(),
            u64::MAX.to_string()
        );
        assert_eq!(
            from_value(serde_json::json!(true)).unwrap().expose(),
            "true"
        );
    }

    #[test]
    fn floats_and_structures_are_refused_without_echoing_them() {
        assert!(from_toml("1.50").unwrap_err().contains("quote it"));
        let e = serde_json::from_value::<Secret>(serde_json::json!(6.54321))
            .unwrap_err()
            .to_string();
        assert!(e.contains("quote it") && !e.contains("6.54321"), "{e}");
        assert!(from_toml("[1, 2]").is_err());
        assert!(from_toml("{ a = 1 }").is_err());
    }
}
