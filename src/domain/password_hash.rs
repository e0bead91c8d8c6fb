//! A stored password: its hash in PHC string format, a value like any other field.

use std::fmt;

use argon2::password_hash::phc;

use super::FieldViolation;

/// A password hash in PHC string format (Argon2id when this server made it). Never printed:
/// `Debug` shows a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// The hasher makes hashes, and storage rebuilds the ones it wrote.
    pub(crate) fn from_phc(phc: String) -> Self {
        Self(phc)
    }

    pub(crate) fn as_phc(&self) -> &str {
        &self.0
    }

    /// A hash made by another system, to store as it is: a PHC string of argon2id, argon2i,
    /// scrypt or pbkdf2-sha256, or a bcrypt hash. Checked to be well-formed with the
    /// algorithm's own parameter rules; whether it matches a password is for a login to find.
    pub fn import(raw: String) -> Result<Self, FieldViolation> {
        let unsupported = || {
            FieldViolation::new(
                "password_hash",
                "must be a PHC string of argon2id, argon2i, scrypt or pbkdf2-sha256 \
                 ($algorithm$...$salt$hash), or a bcrypt hash ($2a$, $2b$ or $2y$)",
            )
        };
        if Scheme::of(&raw) == Some(Scheme::Bcrypt) {
            // bcrypt's own error quotes the hash: the message says what is expected instead.
            return match raw.parse::<bcrypt::HashParts>() {
                Ok(_) => Ok(Self(raw)),
                Err(_) => Err(FieldViolation::new(
                    "password_hash",
                    "is not a well-formed bcrypt hash: $2b$, a two-digit cost, $, then 53 \
                     characters of salt and hash",
                )),
            };
        }
        let scheme = Scheme::of(&raw).ok_or_else(unsupported)?;
        let malformed = |what: String| {
            FieldViolation::new(
                "password_hash",
                format!("is not a well-formed {} hash: {what}", scheme.name()),
            )
        };
        let parsed = phc::PasswordHash::new(&raw).map_err(|err| malformed(err.to_string()))?;
        if parsed.salt.is_none() || parsed.hash.is_none() {
            return Err(malformed("it has no salt or no hash".into()));
        }
        let parameters = match scheme {
            Scheme::Argon2id | Scheme::Argon2i => argon2::Params::try_from(&parsed)
                .map(drop)
                .map_err(|err| err.to_string()),
            Scheme::Scrypt => scrypt::Params::try_from(&parsed)
                .map(drop)
                .map_err(|err| err.to_string()),
            Scheme::Pbkdf2Sha256 => pbkdf2::Params::try_from(&parsed)
                .map(drop)
                .map_err(|err| err.to_string()),
            Scheme::Bcrypt => Ok(()),
        };
        parameters.map_err(malformed)?;
        Ok(Self(raw))
    }

    /// The algorithm the hash was made with, when it is one this server verifies.
    pub fn scheme(&self) -> Option<Scheme> {
        Scheme::of(&self.0)
    }

    /// The algorithm, version and costs, without the salt and the hash: `$argon2id$v=19$m=…`.
    /// Safe to show.
    pub fn parameters(&self) -> &str {
        // `$algorithm$version$params$salt$hash`: everything before the fourth `$`.
        match self.0.match_indices('$').nth(3) {
            Some((end, _)) => &self.0[..end],
            None => "",
        }
    }
}

/// The password hashing algorithms this server verifies. It makes only Argon2id hashes; the
/// others come from imports and are replaced at the user's first login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Argon2id,
    Argon2i,
    Bcrypt,
    Scrypt,
    Pbkdf2Sha256,
}

impl Scheme {
    fn of(hash: &str) -> Option<Self> {
        let algorithm = hash.strip_prefix('$')?.split('$').next()?;
        Some(match algorithm {
            "argon2id" => Scheme::Argon2id,
            "argon2i" => Scheme::Argon2i,
            "2a" | "2b" | "2y" => Scheme::Bcrypt,
            "scrypt" => Scheme::Scrypt,
            "pbkdf2-sha256" => Scheme::Pbkdf2Sha256,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Scheme::Argon2id => "argon2id",
            Scheme::Argon2i => "argon2i",
            Scheme::Bcrypt => "bcrypt",
            Scheme::Scrypt => "scrypt",
            Scheme::Pbkdf2Sha256 => "pbkdf2-sha256",
        }
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}
