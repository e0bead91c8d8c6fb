//! A service key's secret as callers send it: `usk_<key id, 32 hex digits>_<32 random bytes,
//! base64url>`. The id finds the key's row; the rest is checked against the digest kept there.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::domain::KeyId;
use crate::storage::service_keys::KeyDigest;

/// What every key's secret starts with, so a key is told from a JWT before anything else.
pub const PREFIX: &[u8] = b"usk_";

/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;

/// Whether a bearer token is a service key's secret (rather than a JWT).
pub fn is_key(token: &[u8]) -> bool {
    token.starts_with(PREFIX)
}

/// A new secret for the key `id`, and the digest to store.
pub fn issue(id: KeyId) -> Result<(String, KeyDigest), getrandom::Error> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes)?;
    let secret = format!("usk_{}_{}", id.simple(), URL_SAFE_NO_PAD.encode(bytes));
    Ok((secret, digest(&bytes)))
}

fn digest(bytes: &[u8]) -> KeyDigest {
    KeyDigest(Sha256::digest(bytes).into())
}

/// The key a secret names and the digest of its random part; `None` when it is not shaped
/// like a secret `issue` made.
pub fn parse(token: &[u8]) -> Option<(KeyId, KeyDigest)> {
    let rest = token.strip_prefix(PREFIX)?;
    let text = std::str::from_utf8(rest).ok()?;
    let (id, secret) = text.split_once('_')?;
    if id.len() != 32 {
        return None;
    }
    let id = KeyId::try_parse(id).ok()?;
    let bytes = URL_SAFE_NO_PAD.decode(secret).ok()?;
    (bytes.len() == SECRET_BYTES).then(|| (id, digest(&bytes)))
}

/// Compares two digests in time that does not depend on where they differ.
pub fn same(stored: &KeyDigest, presented: &KeyDigest) -> bool {
    stored
        .0
        .iter()
        .zip(presented.0.iter())
        .fold(0u8, |differ, (a, b)| differ | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_secret_parses_back_to_its_key_and_digest() {
        let id = KeyId::now_v7();
        let (secret, stored) = issue(id).unwrap();
        assert!(is_key(secret.as_bytes()));
        let (parsed, presented) = parse(secret.as_bytes()).unwrap();
        assert_eq!(parsed, id);
        assert!(same(&stored, &presented));
    }

    #[test]
    fn a_secret_with_another_random_part_does_not_match() {
        let id = KeyId::now_v7();
        let (secret, stored) = issue(id).unwrap();
        let (other, _) = issue(id).unwrap();
        let (_, presented) = parse(other.as_bytes()).unwrap();
        assert!(!same(&stored, &presented));
        assert_ne!(secret, other);
    }

    #[test]
    fn anything_not_shaped_like_a_secret_is_refused() {
        let id = KeyId::now_v7().simple().to_string();
        for token in [
            "usk_".to_owned(),
            format!("usk_{id}"),
            format!("usk_{id}_short"),
            format!("usk_{}_{}", &id[..31], "A".repeat(43)),
            format!("usk_{id}_{}", "!".repeat(43)),
            "eyJhbGciOi.x.y".to_owned(),
        ] {
            assert_eq!(parse(token.as_bytes()), None, "{token}");
        }
    }
}
