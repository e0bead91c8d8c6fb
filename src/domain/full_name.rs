//! The full name field.

use super::FieldViolation;
use super::validation::{has_control, limits};

/// At most 128 characters, no control characters; may be empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullName(String);

impl FullName {
    pub fn parse(raw: String) -> Result<Self, FieldViolation> {
        let max = limits::FULL_NAME_MAX_CHARS;
        let len = raw.chars().count();
        if len > max {
            return Err(FieldViolation::new(
                "full_name",
                format!("must be at most {max} characters, got {len}"),
            ));
        }
        if has_control(&raw) {
            return Err(FieldViolation::new(
                "full_name",
                "must not contain control characters",
            ));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
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
    fn a_full_name_with_a_control_character_is_rejected() {
        assert!(FullName::parse("Ann\nLee".into()).is_err());
        assert!(FullName::parse("Ann Lee".into()).is_ok());
        assert!(FullName::parse("x".repeat(129)).is_err());
    }
}
