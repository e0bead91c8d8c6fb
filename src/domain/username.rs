//! The username field.

use super::FieldViolation;
use super::validation::limits;

/// 3 to 30 ASCII letters, digits or underscores. Unique regardless of letter case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: String) -> Result<Self, FieldViolation> {
        use limits::{USERNAME_MAX_CHARS as MAX, USERNAME_MIN_CHARS as MIN};
        let rule = || format!("must be {MIN}-{MAX} characters of ASCII letters, digits or '_'");
        let len = raw.chars().count();
        if !(MIN..=MAX).contains(&len) {
            return Err(FieldViolation::new(
                "username",
                format!(
                    "{}, got {}",
                    rule(),
                    crate::text::count(len as u64, "character", "characters")
                ),
            ));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            return Err(FieldViolation::new(
                "username",
                format!("{}, got {bad:?}", rule()),
            ));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness is decided on.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }

    /// Storage rebuilds values it validated when it wrote them.
    pub(crate) fn from_trusted(raw: String) -> Self {
        Self(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_of_letters_digits_and_underscores_is_accepted() {
        assert!(Username::parse("Alice_01".into()).is_ok());
    }

    #[test]
    fn a_username_shorter_than_three_or_longer_than_thirty_characters_is_rejected() {
        assert!(Username::parse("ab".into()).is_err());
        assert!(Username::parse("a".repeat(31)).is_err());
        assert!(Username::parse("a".repeat(30)).is_ok());
    }

    #[test]
    fn a_too_short_username_is_counted_in_the_right_number() {
        let one = Username::parse("a".into()).unwrap_err();
        assert!(one.description.ends_with("got 1 character"), "{one}");
        let two = Username::parse("ab".into()).unwrap_err();
        assert!(two.description.ends_with("got 2 characters"), "{two}");
    }

    #[test]
    fn a_username_with_a_cyrillic_letter_is_rejected() {
        let err = Username::parse("аlice".into()).unwrap_err();
        assert_eq!(err.field, "username");
        assert!(err.description.contains("'а'"), "{err}");
    }
}
