//! The password field, as a caller gives it (the stored form is `PasswordHash`).

use std::fmt;

use super::FieldViolation;
use super::validation::limits;

/// 8 to 128 characters (not bytes). Never printed: `Debug` shows a placeholder.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn parse(raw: String) -> Result<Self, FieldViolation> {
        use limits::{PASSWORD_MAX_CHARS as MAX, PASSWORD_MIN_CHARS as MIN};
        let len = raw.chars().count();
        if !(MIN..=MAX).contains(&len) {
            return Err(FieldViolation::new(
                "password",
                format!("must be {MIN}-{MAX} characters, got {len}"),
            ));
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_counted_in_characters_not_bytes() {
        assert!(
            Password::parse("ééééééé".into()).is_err(),
            "7 chars, 14 bytes"
        );
        assert!(Password::parse("éééééééé".into()).is_ok(), "8 chars");
        assert!(
            Password::parse("é".repeat(128)).is_ok(),
            "128 chars, 256 bytes"
        );
        assert!(Password::parse("a".repeat(129)).is_err());
    }

    #[test]
    fn a_password_never_appears_in_debug_output() {
        let password = Password::parse("correct horse".into()).unwrap();
        assert!(!format!("{password:?}").contains("horse"));
    }
}
