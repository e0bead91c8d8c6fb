//! The email field.

use super::FieldViolation;
use super::validation::limits;

/// A syntactically valid address (RFC 5322 by the `email_address` parser), at most 254
/// characters, with a dotted domain and no display name. Unique regardless of letter case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: String) -> Result<Self, FieldViolation> {
        use email_address::{EmailAddress, Options};
        let max = limits::EMAIL_MAX_CHARS;
        let len = raw.chars().count();
        if len > max {
            return Err(FieldViolation::new(
                "email",
                format!("must be at most {max} characters, got {len}"),
            ));
        }
        let options = Options::default()
            .with_required_tld()
            .without_domain_literal()
            .without_display_text();
        match EmailAddress::parse_with_options(&raw, options) {
            Ok(_) => Ok(Self(raw)),
            // Our words, not the parser's: its messages change between its versions.
            Err(_) => Err(FieldViolation::new(
                "email",
                "must be an address like name@example.com: one @, a dotted domain, no display \
                 name and no IP literal",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness is decided on.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }

    /// Storage rebuilds values it validated when it wrote them.
    pub(crate) fn from_trusted(raw: String) -> Self {
        Self(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Username;

    #[test]
    fn usernames_and_emails_compare_without_letter_case() {
        let a = Username::parse("Alice".into()).unwrap();
        let b = Username::parse("aLICE".into()).unwrap();
        assert_eq!(a.key(), b.key());
        let a = Email::parse("Ann@Example.com".into()).unwrap();
        let b = Email::parse("ann@example.COM".into()).unwrap();
        assert_eq!(a.key(), b.key());
    }

    #[test]
    fn an_email_without_a_domain_or_with_a_display_name_is_rejected() {
        for bad in [
            "plain",
            "a@b",
            "@example.com",
            "Ann <ann@example.com>",
            "a@[127.0.0.1]",
            "a b@example.com",
        ] {
            assert!(Email::parse(bad.into()).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn an_email_longer_than_254_characters_is_rejected() {
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(200));
        let err = Email::parse(long).unwrap_err();
        assert!(err.description.contains("at most 254"), "{err}");
    }
}
