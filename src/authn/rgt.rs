//! The `rgt_` secret format of robot accounts and personal access tokens:
//! `rgt_` + 43 random base62 characters (256 bits, as much as 32 random
//! bytes) + a 6-character base62 CRC-32 of everything before it. The fixed
//! prefix and the checksum let secret scanners (GitHub's, gitleaks, ...)
//! recognise a leaked secret without asking us, and let the gate tell a
//! mistyped one from a real one without a database lookup.
//!
//! Only the SHA-256 of a secret is stored: a secret carries 256 random bits,
//! so a fast hash is as safe as a slow one here, and a login costs one hash
//! instead of a bcrypt. A leaf module.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

use crate::secret::Secret;

pub const PREFIX: &str = "rgt_";
const RANDOM_CHARS: usize = 43;
const CHECKSUM_CHARS: usize = 6;
/// The length of every secret.
pub const LEN: usize = PREFIX.len() + RANDOM_CHARS + CHECKSUM_CHARS;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new secret, from the operating system's CSPRNG (rand's thread RNG is
/// seeded from it and reseeded).
pub fn generate() -> Secret {
    let mut s = String::with_capacity(LEN);
    s.push_str(PREFIX);
    s.extend(
        rand::rng()
            .sample_iter(Alphanumeric)
            .take(RANDOM_CHARS)
            .map(char::from),
    );
    let sum = checksum(&s);
    s.push_str(&sum);
    Secret::new(s)
}

/// Whether `candidate` has the form of a secret with a valid checksum.
pub fn is_well_formed(candidate: &str) -> bool {
    candidate.len() == LEN
        && candidate.starts_with(PREFIX)
        && candidate[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
        && checksum(&candidate[..LEN - CHECKSUM_CHARS]) == candidate[LEN - CHECKSUM_CHARS..]
}

/// The stored form: lowercase hex SHA-256 of the whole secret.
pub fn hash(secret: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(secret.as_bytes()))
}

/// CRC-32 of `body` in base62, zero-padded to six characters.
fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut out = [b'0'; CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_well_formed_and_distinct() {
        let a = generate();
        let b = generate();
        assert_ne!(a.expose(), b.expose());
        for s in [&a, &b] {
            assert_eq!(s.expose().len(), LEN);
            assert!(s.expose().starts_with("rgt_"));
            assert!(is_well_formed(s.expose()), "{}", s.expose());
        }
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        let s = generate().expose().to_owned();
        for i in PREFIX.len()..LEN {
            let mut bytes = s.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(!is_well_formed(&changed), "position {i}");
        }
        assert!(!is_well_formed(&s[..LEN - 1]));
        assert!(!is_well_formed(&format!("{s}x")));
        assert!(!is_well_formed(&s.replacen("rgt_", "rgx_", 1)));
        assert!(!is_well_formed("password"));
        assert!(!is_well_formed(""));
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
