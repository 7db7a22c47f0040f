//! Tokens: what the realm issues and what every registry request carries.
//!
//! `claims` is a leaf of serde shapes; `keys` loads and makes signing keys;
//! `issuer` signs, `verifier` checks. Nothing here knows about HTTP.

pub mod claims;
pub mod crypto;
pub mod issuer;
pub mod keys;
pub mod verifier;

pub use claims::{AccessClaims, RefreshClaims, SessionClaims};
pub use issuer::{Issued, Issuer};
pub use keys::SigningKey;
pub use verifier::{LEEWAY_SECS, TokenError, Verifier, VerifyingKey};

#[cfg(test)]
mod tests;
