//! The second factor: TOTP (RFC 6238: six digits, 30-second steps, one step of skew either
//! way) and single-use recovery codes. Secrets are sealed with XChaCha20-Poly1305 under a key
//! of the server's (`--second-factor-key-file`), bound to their user, so a copy of the
//! database alone yields no secret; recovery codes are kept as HMAC-SHA256 digests under
//! another key derived from the same one, so a copy of the database alone cannot test
//! guesses offline either.

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;
use totp_rs::{Builder, Secret, Totp};

use super::sealed::{Sealer, derive};
use crate::domain::UserId;

/// Bytes of key material the server needs at least.
pub const MIN_KEY_BYTES: usize = 32;
/// Bytes of a TOTP secret: 160 bits, as RFC 4226 recommends.
const SECRET_BYTES: usize = 20;
/// Recovery codes given at each confirmation.
pub const RECOVERY_CODES: usize = 10;
/// Characters of a recovery code, without its dashes: 12 of 32 letters and digits (60 bits).
const RECOVERY_CHARS: usize = 12;
/// Letters and digits few misread: no 0/o, no 1/l.
const RECOVERY_ALPHABET: &[u8; 32] = b"23456789abcdefghijkmnpqrstuvwxyz";
/// The issuer an authenticator app shows beside the account.
const ISSUER: &str = "user-service";

type HmacSha256 = Hmac<Sha256>;

/// Why second-factor key material was refused at start-up.
#[derive(Debug, thiserror::Error)]
#[error("the second-factor key must be at least {MIN_KEY_BYTES} bytes, got {0}")]
pub struct ShortKey(pub usize);

/// The server's keys for second factors, derived from its configured key material.
#[derive(Clone)]
pub struct SecondFactorKeys {
    seal: Sealer,
    recovery: [u8; 32],
}

impl std::fmt::Debug for SecondFactorKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecondFactorKeys(..)")
    }
}

impl SecondFactorKeys {
    pub fn new(material: &[u8]) -> Result<Self, ShortKey> {
        if material.len() < MIN_KEY_BYTES {
            return Err(ShortKey(material.len()));
        }
        Ok(Self {
            seal: Sealer::new(material, b"user-service totp secret sealing"),
            recovery: derive(material, b"user-service recovery code digests"),
        })
    }

    /// A new secret for `user`: what to show them once (base32 and an otpauth:// URI for
    /// `account`), and its sealed form to store.
    pub fn enroll(&self, user: UserId, account: &str) -> Result<Enrollment, getrandom::Error> {
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut secret)?;
        let base32 = Secret::from(secret).to_base32();
        let uri = format!(
            "otpauth://totp/{issuer}:{account}?secret={base32}&issuer={issuer}&algorithm=SHA1&digits=6&period=30",
            issuer = utf8_percent_encode(ISSUER, NON_ALPHANUMERIC),
            account = utf8_percent_encode(account, NON_ALPHANUMERIC),
        );
        let qr_code_svg = qrcode::QrCode::new(uri.as_bytes())
            .map(|code| {
                code.render::<qrcode::render::svg::Color>()
                    .min_dimensions(200, 200)
                    .build()
            })
            .unwrap_or_default();
        Ok(Enrollment {
            sealed: self.seal(user, &secret)?,
            base32,
            uri,
            qr_code_svg,
        })
    }

    fn seal(&self, user: UserId, secret: &[u8]) -> Result<Vec<u8>, getrandom::Error> {
        self.seal.seal(user.as_uuid().as_bytes(), secret)
    }

    /// The TOTP of `user` from its sealed secret; `None` when it does not open (another
    /// server key, another user's row, or tampered bytes).
    pub fn open(&self, user: UserId, sealed: &[u8]) -> Option<Totp> {
        let secret = self.seal.open(user.as_uuid().as_bytes(), sealed)?;
        Builder::new().with_secret(secret).build().ok()
    }

    /// A recovery code's digest, as stored for `user`: the code as typed, any case, any
    /// dashes or spaces.
    pub fn recovery_digest(&self, user: UserId, code: &str) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.recovery).expect("any key length");
        mac.update(user.as_uuid().as_bytes());
        for byte in normalized(code) {
            mac.update(&[byte]);
        }
        mac.finalize().into_bytes().into()
    }

    /// New recovery codes for `user` and their digests.
    pub fn recovery_codes(
        &self,
        user: UserId,
    ) -> Result<(Vec<String>, Vec<[u8; 32]>), getrandom::Error> {
        let mut codes = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            codes.push(random_code(RECOVERY_CHARS, 4)?);
        }
        let digests = codes
            .iter()
            .map(|code| self.recovery_digest(user, code))
            .collect();
        Ok((codes, digests))
    }
}

/// What enrolling shows the user once, and what is stored.
pub struct Enrollment {
    pub sealed: Vec<u8>,
    pub base32: String,
    pub uri: String,
    /// The URI as a QR code (SVG); empty in the unreachable case of a URI too long for one.
    pub qr_code_svg: String,
}

/// A code of `chars` random characters of `RECOVERY_ALPHABET` (5 bits each), in dash-joined
/// groups of `group`: recovery codes here, and recovery and verification codes
/// (`grpc/recovery.rs`).
pub fn random_code(chars: usize, group: usize) -> Result<String, getrandom::Error> {
    let mut random = vec![0u8; chars];
    getrandom::fill(&mut random)?;
    let letters: Vec<char> = random
        .iter()
        .map(|byte| char::from(RECOVERY_ALPHABET[usize::from(byte % 32)]))
        .collect();
    let groups: Vec<String> = letters
        .chunks(group)
        .map(|run| run.iter().collect())
        .collect();
    Ok(groups.join("-"))
}

/// A typed code's characters that count: lower case, no dashes or spaces.
pub fn normalized(code: &str) -> impl Iterator<Item = u8> + '_ {
    code.bytes()
        .filter(|byte| !matches!(byte, b'-' | b' '))
        .map(|byte| byte.to_ascii_lowercase())
}

/// What a second-factor code is, by its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    /// Six digits from an authenticator app.
    Totp,
    /// One of the recovery codes.
    Recovery,
    /// Neither.
    Malformed,
}

pub fn kind_of(code: &str) -> CodeKind {
    let trimmed = code.trim();
    if trimmed.len() == 6 && trimmed.bytes().all(|byte| byte.is_ascii_digit()) {
        return CodeKind::Totp;
    }
    let chars: Vec<u8> = normalized(trimmed).collect();
    if chars.len() == RECOVERY_CHARS && chars.iter().all(|c| RECOVERY_ALPHABET.contains(c)) {
        CodeKind::Recovery
    } else {
        CodeKind::Malformed
    }
}

/// The step a six-digit code is valid for at `now_secs` (within a step either way), if any.
pub fn step_of(totp: &Totp, code: &str, now_secs: u64) -> Option<i64> {
    totp.check(code.trim(), now_secs)
        .and_then(|step| i64::try_from(step).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SecondFactorKeys {
        SecondFactorKeys::new(&[7u8; 32]).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_user_and_key() {
        let user = UserId::new();
        let enrollment = keys().enroll(user, "ann").unwrap();
        let secret = Secret::try_from_base32(&enrollment.base32).unwrap();
        assert!(
            !enrollment
                .sealed
                .windows(20)
                .any(|w| w == secret.as_bytes()),
            "the stored form does not hold the secret"
        );
        let totp = keys().open(user, &enrollment.sealed).expect("it opens");
        let code = Builder::new()
            .with_secret(secret.as_bytes().to_vec())
            .build()
            .unwrap()
            .generate(1_700_000_000);
        assert_eq!(totp.generate(1_700_000_000), code);
        assert!(
            keys().open(UserId::new(), &enrollment.sealed).is_none(),
            "another user"
        );
        let other = SecondFactorKeys::new(&[8u8; 32]).unwrap();
        assert!(
            other.open(user, &enrollment.sealed).is_none(),
            "another key"
        );
    }

    #[test]
    fn the_uri_names_the_issuer_and_the_account_escaped() {
        let enrollment = keys().enroll(UserId::new(), "ann lee").unwrap();
        assert!(
            enrollment
                .uri
                .starts_with("otpauth://totp/user%2Dservice:ann%20lee?secret="),
            "{}",
            enrollment.uri
        );
        assert!(enrollment.uri.contains(&enrollment.base32));
        assert!(enrollment.qr_code_svg.contains("<svg"), "a QR code as SVG");
    }

    #[test]
    fn a_code_is_valid_for_its_step_and_one_either_side() {
        let totp = Builder::new().with_secret([9u8; 20]).build().unwrap();
        let now = 1_700_000_000;
        let code = totp.generate(now).to_string();
        let step = i64::try_from(now / 30).unwrap();
        assert_eq!(step_of(&totp, &code, now), Some(step));
        assert_eq!(step_of(&totp, &code, now + 30), Some(step));
        assert_eq!(step_of(&totp, &code, now + 90), None);
    }

    #[test]
    fn recovery_codes_read_back_in_any_case_and_with_or_without_dashes() {
        let user = UserId::new();
        let (codes, digests) = keys().recovery_codes(user).unwrap();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let code = &codes[0];
        assert_eq!(kind_of(code), CodeKind::Recovery, "{code}");
        let typed = code.replace('-', "").to_uppercase();
        assert_eq!(keys().recovery_digest(user, &typed), digests[0]);
        assert_ne!(
            keys().recovery_digest(UserId::new(), code),
            digests[0],
            "bound to its user"
        );
    }

    #[test]
    fn codes_are_told_apart_by_their_shape() {
        assert_eq!(kind_of("123456"), CodeKind::Totp);
        assert_eq!(kind_of(" 123456 "), CodeKind::Totp);
        assert_eq!(kind_of("12345"), CodeKind::Malformed);
        assert_eq!(kind_of("abcd-efgh-jkmn"), CodeKind::Recovery);
        assert_eq!(
            kind_of("abcd-efgh-jkm0"),
            CodeKind::Malformed,
            "0 is not in the alphabet"
        );
        assert_eq!(kind_of(""), CodeKind::Malformed);
    }

    #[test]
    fn short_key_material_is_refused() {
        assert!(SecondFactorKeys::new(&[1u8; 31]).is_err());
    }
}
