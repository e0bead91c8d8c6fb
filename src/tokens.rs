//! Bearer tokens: verification with the algorithm pinned to the key, and minting. The
//! service's own keys (`oidc::keys`, behind `KeySource`) sign and are found by `kid`; a
//! configured HS256 secret or public key (legacy) verifies tokens without a `kid`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The role a token claims: the directory's roles.
pub use crate::domain::Role;

/// The claims this service reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// A user id, or the name of a service.
    pub sub: String,
    /// `admin`, `moderator` or `user`.
    pub role: String,
    /// Expiry, seconds since the Unix epoch. Required: validation refuses a token without it
    /// (the default only lets that check, rather than parsing, report it).
    #[serde(default)]
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The session that issued the token (Login and Refresh set it): the token stops working
    /// when that session ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Where the keys come from. With none of them the server makes a random secret.
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    /// HS256 shared secret.
    pub secret: Option<Vec<u8>>,
    /// PEM public key: RS256, ES256 or EdDSA, told apart by the key itself.
    pub public_key_pem: Option<Vec<u8>>,
    /// PEM Ed25519 private key, for signing Login tokens with EdDSA.
    pub private_key_pem: Option<Vec<u8>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Lifetime of tokens this server mints.
    pub token_ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("configure either a JWT secret or a public key, not both")]
    SecretAndPublicKey,
    #[error("--jwt-private-key needs the matching --jwt-public-key")]
    PrivateKeyWithoutPublicKey,
    #[error("the JWT secret must be at least 32 bytes, got {0}")]
    ShortSecret(usize),
    #[error("the JWT public key is not an RSA, P-256 or Ed25519 public key in PEM form")]
    UnreadablePublicKey,
    #[error("the JWT private key is not an Ed25519 private key in PEM form")]
    UnreadablePrivateKey,
}

/// Why a token was refused; the text is for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token is signed with an algorithm this server does not accept")]
    WrongAlgorithm,
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token is from another issuer")]
    WrongIssuer,
    #[error("the token has no expiry (exp)")]
    MissingExpiry,
    #[error("the token has no issuer (iss), which this server requires")]
    MissingIssuer,
    #[error("the token has no audience (aud), which this server requires")]
    MissingAudience,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's role claim must be admin, moderator or user")]
    UnknownRole,
    #[error("the token's key (kid) is not one this server publishes")]
    UnknownKey,
    #[error("the token is malformed")]
    Malformed,
}

#[derive(Debug, thiserror::Error)]
#[error("this server cannot sign tokens: it holds no signing key it can open")]
pub struct CannotSign;

/// One of the service's own keys, as `oidc::keys` holds it.
pub struct RingKey {
    pub kid: String,
    pub algorithm: Algorithm,
    /// When it starts signing, in nanoseconds since the Unix epoch.
    pub activates_at_ns: i64,
    /// `None`: its private part does not open here; it only verifies.
    pub encoding: Option<EncodingKey>,
    pub decoding: DecodingKey,
}

/// Where the service's own keys are found.
pub trait KeySource: Send + Sync {
    /// The key that signs at `now_ns`.
    fn signer(&self, now_ns: i64) -> Option<Arc<RingKey>>;
    /// The published key named `kid`.
    fn verifier(&self, kid: &str) -> Option<Arc<RingKey>>;
}

/// Seconds a token is still accepted after its `exp` (and before its `nbf`), for clock skew.
pub const LEEWAY_SECS: u64 = 5;

/// Verifies tokens, and mints them when it holds a signing key.
pub struct Jwt {
    /// The configured legacy key, for tokens without a `kid`; `None` when none is.
    legacy: Option<DecodingKey>,
    /// The claims every token must pass; its algorithm is set per key.
    validation: Validation,
    signing: Option<(EncodingKey, Algorithm)>,
    /// The service's own keys, once start-up has them.
    keys: Option<Arc<dyn KeySource>>,
    issuer: Option<String>,
    audience: Option<String>,
    ttl: Duration,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn public_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), KeyError> {
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Ok((key, Algorithm::EdDSA));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok((key, Algorithm::ES256));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    Err(KeyError::UnreadablePublicKey)
}

impl Jwt {
    /// Builds the verifier of the configured keys (none is allowed: the service's own keys
    /// come with `with_keys`).
    pub fn new(settings: &JwtSettings) -> Result<Self, KeyError> {
        let (legacy, signing, algorithm) = match (
            &settings.secret,
            &settings.public_key_pem,
            &settings.private_key_pem,
        ) {
            (Some(_), Some(_), _) => return Err(KeyError::SecretAndPublicKey),
            (None, None, Some(_)) => return Err(KeyError::PrivateKeyWithoutPublicKey),
            (Some(secret), None, _) => {
                if secret.len() < 32 {
                    return Err(KeyError::ShortSecret(secret.len()));
                }
                let signing = (EncodingKey::from_secret(secret), Algorithm::HS256);
                (
                    Some(DecodingKey::from_secret(secret)),
                    Some(signing),
                    Algorithm::HS256,
                )
            }
            (None, Some(pem), private) => {
                let (decoding, algorithm) = public_key(pem)?;
                let signing = match private {
                    Some(pem) if algorithm == Algorithm::EdDSA => {
                        let key = EncodingKey::from_ed_pem(pem)
                            .map_err(|_| KeyError::UnreadablePrivateKey)?;
                        Some((key, Algorithm::EdDSA))
                    }
                    Some(_) => return Err(KeyError::UnreadablePrivateKey),
                    None => None,
                };
                (Some(decoding), signing, algorithm)
            }
            (None, None, None) => (None, None, Algorithm::ES256),
        };
        // One algorithm, the key's: never `none`, never HS256 with a public key as secret.
        let mut validation = Validation::new(algorithm);
        // A configured issuer or audience is required, not only checked when present.
        let mut required = vec!["exp"];
        if settings.issuer.is_some() {
            required.push("iss");
        }
        if settings.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        validation.validate_aud = settings.audience.is_some();
        if let Some(audience) = &settings.audience {
            validation.set_audience(&[audience]);
        }
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(Self {
            legacy,
            validation,
            signing,
            keys: None,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl: settings.token_ttl,
        })
    }

    /// Signs with the service's own keys from now on, as `issuer` (written into every token;
    /// required of tokens only when configured), and verifies tokens that name them.
    pub fn with_keys(mut self, keys: Arc<dyn KeySource>, issuer: String) -> Self {
        self.keys = Some(keys);
        self.issuer = Some(issuer);
        self
    }

    /// Whether a verified token's `exp` has passed since, with the leeway verification allows.
    pub fn expired(&self, exp: u64) -> bool {
        exp.saturating_add(self.validation.leeway) < now()
    }

    /// Checks signature, algorithm, expiry, issuer and audience, and reads the role. A token
    /// naming a `kid` is checked against that key of the service's, with that key's algorithm
    /// alone; one without, against the configured legacy key and its algorithm.
    pub fn verify(&self, token: &str) -> Result<(Claims, Role), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let mut validation = self.validation.clone();
        // A kid of the service's own names its key; any other token (without a kid, or with
        // another issuer's, as identity providers write) is the legacy key's to judge.
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.as_ref()?.verifier(kid));
        if let Some(key) = &key {
            validation.algorithms = vec![key.algorithm];
        }
        let decoding = match (&key, &self.legacy) {
            (Some(key), _) => &key.decoding,
            (None, Some(legacy)) => legacy,
            (None, None) => return Err(TokenError::UnknownKey),
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, decoding, &validation).map_err(
                |err| match err.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        TokenError::WrongAlgorithm
                    }
                    ErrorKind::InvalidAudience => TokenError::WrongAudience,
                    ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                    ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => {
                        TokenError::MissingExpiry
                    }
                    ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                        TokenError::MissingAudience
                    }
                    ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => {
                        TokenError::MissingIssuer
                    }
                    ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                    _ => TokenError::Malformed,
                },
            )?;
        let role = Role::from_name(&data.claims.role).ok_or(TokenError::UnknownRole)?;
        Ok((data.claims, role))
    }

    /// The claims of a token `verify` accepted, read again without checking its signature
    /// (the authenticator's cache holds the verdict): `None` when it is not shaped as a JWT.
    /// Only ever for a token already verified.
    pub fn claims_of_verified(token: &str) -> Option<Claims> {
        use base64::Engine as _;
        let payload = token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Signs a token for `subject` with `role`, valid for `ttl` (the configured lifetime when
    /// `None`). Returns the token and its expiry in seconds since the epoch.
    pub fn mint(
        &self,
        subject: &str,
        role: Role,
        ttl: Option<Duration>,
    ) -> Result<(String, u64), CannotSign> {
        let issued = now();
        self.sign(
            subject,
            role,
            issued,
            issued + ttl.unwrap_or(self.ttl).as_secs(),
            None,
        )
    }

    /// Signs a token for a session's user, valid for the configured lifetime but never past
    /// the session's end (`ends`, seconds since the epoch).
    pub fn mint_for_session(
        &self,
        subject: &str,
        role: Role,
        session: &str,
        ends: u64,
    ) -> Result<(String, u64), CannotSign> {
        let issued = now();
        let exp = (issued + self.ttl.as_secs()).min(ends);
        self.sign(subject, role, issued, exp, Some(session.to_owned()))
    }

    fn sign(
        &self,
        subject: &str,
        role: Role,
        issued: u64,
        exp: u64,
        sid: Option<String>,
    ) -> Result<(String, u64), CannotSign> {
        let own = self
            .keys
            .as_ref()
            .and_then(|keys| keys.signer(crate::timing::now_ns()));
        let (key, header) = match (&own, &self.signing) {
            (Some(own), _) => {
                let key = own.encoding.as_ref().ok_or(CannotSign)?;
                let header = Header {
                    kid: Some(own.kid.clone()),
                    ..Header::new(own.algorithm)
                };
                (key, header)
            }
            // Without keys of its own (a tool minting with the shared secret): the legacy key.
            (None, Some((key, algorithm))) if self.keys.is_none() => (key, Header::new(*algorithm)),
            _ => return Err(CannotSign),
        };
        let claims = Claims {
            sub: subject.to_owned(),
            role: role.name().to_owned(),
            exp,
            iat: issued,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sid,
        };
        let token = jsonwebtoken::encode(&header, &claims, key)
            .expect("signing with a key that was parsed at start-up does not fail");
        Ok((token, claims.exp))
    }

    /// Whether this server can mint tokens now (it holds a signing key it can open).
    pub fn can_sign(&self) -> bool {
        match &self.keys {
            Some(keys) => keys.signer(crate::timing::now_ns()).is_some(),
            None => self.signing.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs256() -> Jwt {
        let settings = JwtSettings {
            secret: Some(vec![7; 32]),
            token_ttl: Duration::from_secs(60),
            ..Default::default()
        };
        Jwt::new(&settings).unwrap()
    }

    #[test]
    fn a_minted_token_verifies_with_its_subject_and_role() {
        let jwt = hs256();
        let (token, _) = jwt.mint("billing", Role::Moderator, None).unwrap();
        let (claims, role) = jwt.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), role), ("billing", Role::Moderator));
    }

    #[test]
    fn claims_expire_after_their_exp_plus_the_leeway() {
        let jwt = hs256();
        let (token, _) = jwt
            .mint("svc", Role::User, Some(Duration::from_secs(60)))
            .unwrap();
        let (claims, _) = jwt.verify(&token).unwrap();
        assert!(!jwt.expired(claims.exp));
        assert!(!jwt.expired(now() - 4), "within the leeway");
        assert!(jwt.expired(now() - 10));
    }

    #[test]
    fn a_short_secret_is_refused() {
        let settings = JwtSettings {
            secret: Some(b"short".to_vec()),
            ..Default::default()
        };
        assert!(matches!(Jwt::new(&settings), Err(KeyError::ShortSecret(5))));
    }

    #[test]
    fn without_keys_nothing_verifies_or_signs() {
        let jwt = Jwt::new(&JwtSettings::default()).unwrap();
        assert!(!jwt.can_sign());
        let (token, _) = hs256().mint("dev", Role::Admin, None).unwrap();
        assert_eq!(jwt.verify(&token).unwrap_err(), TokenError::UnknownKey);
    }
}
