//! The service's own signing keys in memory: made here (ES256 by default, EdDSA on request),
//! sealed under the key-encryption key before they reach the database, and read back from it
//! by every replica (`storage::signing_keys` decides their states). The ring signs with the
//! key whose instant has come, verifies by `kid`, and serves the JWKS it renders once per
//! change.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::auth::sealed::Sealer;
use crate::storage::signing_keys::{RotationPolicy, StoredKey, states};
use crate::storage::{Store, StoreError};
use crate::tokens::{KeySource, RingKey};

/// The algorithm new keys are made for (`--signing-key-algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SigningAlgorithm {
    /// ECDSA on P-256 with SHA-256: what every gateway and JWT library verifies.
    #[default]
    #[value(name = "ES256")]
    Es256,
    /// Ed25519.
    #[value(name = "EdDSA")]
    EdDsa,
}

impl SigningAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            SigningAlgorithm::Es256 => "ES256",
            SigningAlgorithm::EdDsa => "EdDSA",
        }
    }

    fn of(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(SigningAlgorithm::Es256),
            "EdDSA" => Some(SigningAlgorithm::EdDsa),
            _ => None,
        }
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            SigningAlgorithm::Es256 => jsonwebtoken::Algorithm::ES256,
            SigningAlgorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("no random source for a signing key")]
    Random(#[from] getrandom::Error),
    #[error("cannot encode a signing key")]
    Encoding(String),
    #[error("cannot read or write the signing keys")]
    Store(#[from] StoreError),
}

/// What seals private keys: the key-encryption key, for this purpose alone.
pub fn sealer(key_encryption_key: &[u8]) -> Sealer {
    Sealer::new(key_encryption_key, b"user-service signing key sealing")
}

/// The RFC 7638 thumbprint of a public JWK: its kid.
fn thumbprint(jwk: &Value) -> String {
    // The required members in lexicographic order, no whitespace.
    let canonical = match jwk["kty"].as_str() {
        Some("EC") => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().unwrap_or_default(),
            jwk["x"].as_str().unwrap_or_default(),
            jwk["y"].as_str().unwrap_or_default()
        ),
        _ => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            jwk["crv"].as_str().unwrap_or_default(),
            jwk["x"].as_str().unwrap_or_default()
        ),
    };
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A new key for `algorithm`, its private part sealed: the row to store (its instants are
/// set by the store).
pub fn generate(algorithm: SigningAlgorithm, sealer: &Sealer) -> Result<StoredKey, RingError> {
    use p256::pkcs8::EncodePrivateKey as _;
    let encoding = |err: p256::pkcs8::Error| RingError::Encoding(err.to_string());
    let (der, jwk) = match algorithm {
        SigningAlgorithm::Es256 => {
            let key = loop {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes)?;
                // Nearly every 32 bytes is a scalar below the group order.
                if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&bytes) {
                    break key;
                }
            };
            let point = key.verifying_key().to_encoded_point(false);
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                return Err(RingError::Encoding(
                    "a P-256 point without coordinates".into(),
                ));
            };
            let jwk = json!({
                "kty": "EC",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(x),
                "y": URL_SAFE_NO_PAD.encode(y),
            });
            (
                key.to_pkcs8_der().map_err(encoding)?.as_bytes().to_vec(),
                jwk,
            )
        }
        SigningAlgorithm::EdDsa => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes)?;
            let key = ed25519_dalek::SigningKey::from_bytes(&bytes);
            let jwk = json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
            });
            (
                key.to_pkcs8_der().map_err(encoding)?.as_bytes().to_vec(),
                jwk,
            )
        }
    };
    let kid = thumbprint(&jwk);
    let sealed = sealer.seal(kid.as_bytes(), &der)?;
    Ok(StoredKey {
        kid,
        algorithm: algorithm.name().into(),
        public_jwk: jwk.to_string(),
        sealed,
        created_at_ns: 0,
        activates_at_ns: 0,
    })
}

/// One key as the ring holds it: what signs and verifies, and the JWK it publishes.
struct LiveKey {
    key: Arc<RingKey>,
    /// The public key with `kid`, `use` and `alg`.
    jwk: Value,
}

impl LiveKey {
    fn read(stored: &StoredKey, sealer: &Sealer) -> Option<Self> {
        let algorithm = SigningAlgorithm::of(&stored.algorithm)?;
        let mut jwk: Value = serde_json::from_str(&stored.public_jwk).ok()?;
        // The kid is the key's thumbprint: a row whose key is not the one it names is not
        // published (nor trusted) at all.
        if thumbprint(&jwk) != stored.kid {
            tracing::error!(kid = %stored.kid, "a signing key's public key does not match its kid: ignored");
            return None;
        }
        let x = jwk["x"].as_str()?;
        let decoding = match algorithm {
            SigningAlgorithm::Es256 => DecodingKey::from_ec_components(x, jwk["y"].as_str()?),
            SigningAlgorithm::EdDsa => DecodingKey::from_ed_components(x),
        }
        .ok()?;
        let encoding =
            sealer
                .open(stored.kid.as_bytes(), &stored.sealed)
                .map(|der| match algorithm {
                    SigningAlgorithm::Es256 => EncodingKey::from_ec_der(&der),
                    SigningAlgorithm::EdDsa => EncodingKey::from_ed_der(&der),
                });
        if encoding.is_none() {
            tracing::error!(
                kid = %stored.kid,
                "a signing key's private part does not open under this server's key-encryption key: it verifies here but never signs; give every replica the same --key-encryption-key-file"
            );
        }
        jwk["kid"] = stored.kid.clone().into();
        jwk["use"] = "sig".into();
        jwk["alg"] = algorithm.name().into();
        Some(Self {
            key: Arc::new(RingKey {
                kid: stored.kid.clone(),
                algorithm: algorithm.jwt(),
                activates_at_ns: stored.activates_at_ns,
                encoding,
                decoding,
            }),
            jwk,
        })
    }
}

/// The keys as last read, with their JWKS rendered.
#[derive(Default)]
struct KeySet {
    /// By the instant each starts signing.
    keys: Vec<Arc<LiveKey>>,
    jwks: Bytes,
    etag: String,
}

/// A key's state as `RotateSigningKey` reports it.
#[derive(Debug, Clone)]
pub struct KeyReport {
    pub kid: String,
    pub algorithm: String,
    pub state: &'static str,
    pub created_at_ns: i64,
    pub activates_at_ns: i64,
}

/// The signing keys every replica shares.
#[derive(Clone)]
pub struct KeyRing {
    set: Arc<RwLock<Arc<KeySet>>>,
    sealer: Sealer,
    policy: RotationPolicy,
    algorithm: SigningAlgorithm,
}

impl KeyRing {
    pub fn new(sealer: Sealer, policy: RotationPolicy, algorithm: SigningAlgorithm) -> Self {
        Self {
            set: Arc::default(),
            sealer,
            policy,
            algorithm,
        }
    }

    fn current(&self) -> Arc<KeySet> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One rotation pass in the database (adding a key when one is due, or at once when
    /// `asked`), then the keys it left, read into the ring: what each now is.
    pub async fn pass(&self, store: &Store, asked: bool) -> Result<Vec<KeyReport>, RingError> {
        let fresh = generate(self.algorithm, &self.sealer)?;
        let stored = store
            .advance_signing_keys(self.policy, asked, fresh)
            .await?;
        self.load(&stored);
        let now = crate::timing::now_ns();
        Ok(states(&stored, now)
            .into_iter()
            .map(|(key, state)| KeyReport {
                kid: key.kid.clone(),
                algorithm: key.algorithm.clone(),
                state: state.name(),
                created_at_ns: key.created_at_ns,
                activates_at_ns: key.activates_at_ns,
            })
            .collect())
    }

    /// Reads stored keys into the ring, reusing keys it holds already.
    fn load(&self, stored: &[StoredKey]) {
        let current = self.current();
        let keys: Vec<Arc<LiveKey>> = stored
            .iter()
            .filter_map(|key| {
                current
                    .keys
                    .iter()
                    .find(|held| held.key.kid == key.kid)
                    .cloned()
                    .or_else(|| LiveKey::read(key, &self.sealer).map(Arc::new))
            })
            .collect();
        let same = keys.len() == current.keys.len()
            && keys
                .iter()
                .zip(&current.keys)
                .all(|(a, b)| a.key.kid == b.key.kid);
        if same {
            return;
        }
        let jwks = json!({ "keys": keys.iter().map(|key| key.jwk.clone()).collect::<Vec<_>>() })
            .to_string();
        let etag = format!(
            "\"{}\"",
            URL_SAFE_NO_PAD.encode(&Sha256::digest(jwks.as_bytes())[..16])
        );
        let set = Arc::new(KeySet {
            keys,
            jwks: Bytes::from(jwks),
            etag,
        });
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = set;
    }

    /// The JWKS document and its entity tag.
    pub fn jwks(&self) -> (Bytes, String) {
        let set = self.current();
        (set.jwks.clone(), set.etag.clone())
    }

    /// How often replicas run a rotation pass and read the keys again: often enough that a
    /// key added by another replica is held well within `publish_ahead`.
    pub fn pass_every(&self) -> Duration {
        (self.policy.publish_ahead / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
    }
}

impl KeySource for KeyRing {
    /// The latest key whose instant has come, of those this server can open: when the
    /// newest does not open here (another key-encryption key made it), an older published one
    /// that does goes on signing rather than none.
    fn signer(&self, now_ns: i64) -> Option<Arc<RingKey>> {
        self.current()
            .keys
            .iter()
            .rev()
            .filter(|live| live.key.activates_at_ns <= now_ns)
            .find(|live| live.key.encoding.is_some())
            .map(|live| live.key.clone())
    }

    fn verifier(&self, kid: &str) -> Option<Arc<RingKey>> {
        self.current()
            .keys
            .iter()
            .find(|live| live.key.kid == kid)
            .map(|live| live.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_what_its_published_jwk_verifies_and_opens_only_under_its_kek() {
        for algorithm in [SigningAlgorithm::Es256, SigningAlgorithm::EdDsa] {
            let kek = sealer(&[3; 32]);
            let mut stored = generate(algorithm, &kek).unwrap();
            stored.activates_at_ns = 1;
            let live = LiveKey::read(&stored, &kek).unwrap();
            let jwk = &live.jwk;
            let live = &live.key;
            let header = jsonwebtoken::Header {
                kid: Some(live.kid.clone()),
                ..jsonwebtoken::Header::new(live.algorithm)
            };
            let claims = json!({ "sub": "ann", "exp": 4_000_000_000u64 });
            let token =
                jsonwebtoken::encode(&header, &claims, live.encoding.as_ref().unwrap()).unwrap();
            let validation = jsonwebtoken::Validation::new(live.algorithm);
            jsonwebtoken::decode::<Value>(&token, &live.decoding, &validation)
                .unwrap_or_else(|err| panic!("{algorithm:?}: {err}"));
            assert_eq!(jwk["kid"], stored.kid.as_str());
            assert_eq!(jwk["alg"], algorithm.name());
            let other = LiveKey::read(&stored, &sealer(&[4; 32])).unwrap();
            assert!(
                other.key.encoding.is_none(),
                "another KEK cannot sign with it"
            );
        }
    }

    #[test]
    fn a_row_whose_public_key_is_not_the_one_its_kid_names_is_not_read() {
        let kek = sealer(&[3; 32]);
        let mut stored = generate(SigningAlgorithm::Es256, &kek).unwrap();
        let other = generate(SigningAlgorithm::Es256, &kek).unwrap();
        stored.public_jwk = other.public_jwk;
        assert!(LiveKey::read(&stored, &kek).is_none());
    }

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        // RFC 7638 section 3.1's example is RSA; this is the P-256 key of RFC 7517 A.1.
        let jwk = json!({
            "kty": "EC", "crv": "P-256",
            "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
            "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
        });
        assert_eq!(
            thumbprint(&jwk),
            "cn-I_WNMClehiVp51i_0VpOENW1upEerA8sEam5hn-s"
        );
    }
}
