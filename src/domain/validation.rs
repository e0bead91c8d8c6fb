//! What a broken rule looks like, and the bounds every field parser enforces.

use std::fmt;

/// Every bound the parsers enforce, in one place (docs/api.md and a snapshot repeat them).
pub mod limits {
    pub const USERNAME_MIN_CHARS: usize = 3;
    pub const USERNAME_MAX_CHARS: usize = 30;
    pub const EMAIL_MAX_CHARS: usize = 254;
    pub const PASSWORD_MIN_CHARS: usize = 8;
    pub const PASSWORD_MAX_CHARS: usize = 128;
    pub const FULL_NAME_MAX_CHARS: usize = 128;
    pub const METADATA_MAX_ENTRIES: usize = 32;
    pub const METADATA_KEY_MAX_CHARS: usize = 64;
    pub const METADATA_VALUE_MAX_CHARS: usize = 512;
    /// ListUsers page size when the request gives 0.
    pub const DEFAULT_PAGE_SIZE: usize = 10;
    /// ListUsers never returns more than this many users at once.
    pub const MAX_PAGE_SIZE: usize = 100;
    /// The longest ListUsers query: an email's length.
    pub const QUERY_MAX_CHARS: usize = EMAIL_MAX_CHARS;
}

/// One broken rule: which field, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// All the rules a request broke, so a caller can fix them in one round trip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub violations: Vec<FieldViolation>,
}

impl ValidationError {
    pub fn single(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            violations: vec![FieldViolation::new(field, description)],
        }
    }
}

/// One broken rule is an error of its own: the one way to make a `ValidationError` from a
/// field's parser (`map_err(ValidationError::from)`, or `?`).
impl From<FieldViolation> for ValidationError {
    fn from(violation: FieldViolation) -> Self {
        Self {
            violations: vec![violation],
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, violation) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{violation}")?;
        }
        Ok(())
    }
}

/// Collects the violations of several parsers, keeping the values that parsed.
#[derive(Default)]
pub(crate) struct Violations(Vec<FieldViolation>);

impl Violations {
    pub(crate) fn check<T>(&mut self, parsed: Result<T, FieldViolation>) -> Option<T> {
        parsed.map_err(|violation| self.0.push(violation)).ok()
    }

    /// `Ok(value)` when nothing was violated; `value` is only built in that case.
    pub(crate) fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, ValidationError> {
        if self.0.is_empty()
            && let Some(value) = value()
        {
            return Ok(value);
        }
        Err(ValidationError { violations: self.0 })
    }
}

/// Whether `text` holds a control character, which no stored text may.
pub(super) fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}
