//! Secrets sealed at rest: XChaCha20-Poly1305 under a key derived (HMAC-SHA256) from the
//! server's key material for one purpose, each sealed value bound to what it belongs to (its
//! associated data), so a copy of the database alone opens nothing and a sealed value moved to
//! another row does not open either.

use chacha20poly1305::aead::{Aead, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes of a nonce, stored before the ciphertext.
const NONCE_BYTES: usize = 24;

/// A key for one purpose, derived from the server's key material.
pub fn derive(material: &[u8], purpose: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(material).expect("HMAC takes any key length");
    mac.update(purpose);
    mac.finalize().into_bytes().into()
}

/// Seals and opens values for one purpose.
#[derive(Clone)]
pub struct Sealer {
    key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn new(material: &[u8], purpose: &[u8]) -> Self {
        Self {
            key: derive(material, purpose),
        }
    }

    /// `secret` sealed for `owner`: a random nonce, then the ciphertext and its tag.
    pub fn seal(&self, owner: &[u8], secret: &[u8]) -> Result<Vec<u8>, getrandom::Error> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce)?;
        let cipher = XChaCha20Poly1305::new(&self.key.into());
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: owner,
                },
            )
            .expect("sealing in memory cannot fail");
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// What `seal` sealed for `owner`; `None` when it does not open (other key material,
    /// another owner's row, or tampered bytes).
    pub fn open(&self, owner: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, sealed) = sealed.split_at_checked(NONCE_BYTES)?;
        let nonce = XNonce::from(<[u8; NONCE_BYTES]>::try_from(nonce).ok()?);
        let cipher = XChaCha20Poly1305::new(&self.key.into());
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: owner,
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_for_its_owner_under_the_same_material() {
        let sealer = Sealer::new(&[1; 32], b"test");
        let sealed = sealer.seal(b"owner", b"secret").unwrap();
        assert_eq!(
            sealer.open(b"owner", &sealed).as_deref(),
            Some(&b"secret"[..])
        );
        assert_eq!(sealer.open(b"other", &sealed), None, "another row");
        let other = Sealer::new(&[2; 32], b"test");
        assert_eq!(other.open(b"owner", &sealed), None, "other material");
        let purpose = Sealer::new(&[1; 32], b"another purpose");
        assert_eq!(purpose.open(b"owner", &sealed), None, "another purpose");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(sealer.open(b"owner", &tampered), None, "tampered");
    }
}
