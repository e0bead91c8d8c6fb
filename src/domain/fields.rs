//! One parser per field: username, email, password, full name, role, status and metadata.

use std::collections::BTreeMap;
use std::fmt;

/// Every bound the parsers enforce, in one place (the README and a snapshot repeat them).
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

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

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
            Err(err) => Err(FieldViolation::new(
                "email",
                format!("must be a valid email address like name@example.com ({err})"),
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

/// What a user may do. Numbers match `userservice.UserRole`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    User = 1,
    Admin = 2,
    Moderator = 3,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::User, Role::Admin, Role::Moderator];

    /// A defined, specified role.
    pub fn parse(field: &str, raw: i32) -> Result<Self, FieldViolation> {
        Self::ALL
            .into_iter()
            .find(|role| *role as i32 == raw)
            .ok_or_else(|| {
                FieldViolation::new(
                    field,
                    format!(
                        "must be USER_ROLE_USER (1), USER_ROLE_ADMIN (2) or USER_ROLE_MODERATOR (3), got {raw}"
                    ),
                )
            })
    }

    /// The name used in token claims and policy tables.
    pub fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Moderator => "moderator",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.name() == name)
    }

    /// At creation UNSPECIFIED means USER.
    pub fn parse_for_create(raw: i32) -> Result<Self, FieldViolation> {
        if raw == 0 {
            Ok(Role::User)
        } else {
            Self::parse("role", raw)
        }
    }
}

/// Where a user stands. Numbers match `userservice.UserStatus`. Deleted users are removed,
/// so DELETED is never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UserStatus {
    Active = 1,
    Inactive = 2,
    Suspended = 3,
    Deleted = 4,
}

impl UserStatus {
    pub const ALL: [UserStatus; 4] = [
        UserStatus::Active,
        UserStatus::Inactive,
        UserStatus::Suspended,
        UserStatus::Deleted,
    ];

    /// The name used in messages: `active`, `inactive`, `suspended`, `deleted`.
    pub fn name(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Inactive => "inactive",
            UserStatus::Suspended => "suspended",
            UserStatus::Deleted => "deleted",
        }
    }

    /// A status a user can be given: ACTIVE, INACTIVE or SUSPENDED (DELETED is DeleteUser).
    pub fn parse_settable(raw: i32) -> Result<Self, FieldViolation> {
        match Self::parse("status", raw) {
            Ok(UserStatus::Deleted) | Err(_) => Err(FieldViolation::new(
                "status",
                format!(
                    "must be USER_STATUS_ACTIVE (1), USER_STATUS_INACTIVE (2) or USER_STATUS_SUSPENDED (3), got {raw}; use DeleteUser to delete"
                ),
            )),
            Ok(status) => Ok(status),
        }
    }

    pub fn parse(field: &str, raw: i32) -> Result<Self, FieldViolation> {
        Self::ALL
            .into_iter()
            .find(|status| *status as i32 == raw)
            .ok_or_else(|| {
                FieldViolation::new(
                    field,
                    format!("must be a defined UserStatus (1-4), got {raw}"),
                )
            })
    }
}

fn parse_metadata_key(key: &str) -> Result<(), FieldViolation> {
    let max = limits::METADATA_KEY_MAX_CHARS;
    let valid = !key.is_empty()
        && key.chars().count() <= max
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(FieldViolation::new(
            "metadata",
            format!(
                "key {key:?} must be 1-{max} characters of ASCII letters, digits, '_', '-' or '.'"
            ),
        ))
    }
}

fn parse_metadata_value(key: &str, value: &str) -> Result<(), FieldViolation> {
    let max = limits::METADATA_VALUE_MAX_CHARS;
    let len = value.chars().count();
    if len > max {
        return Err(FieldViolation::new(
            "metadata",
            format!("value of key {key:?} must be at most {max} characters, got {len}"),
        ));
    }
    if has_control(value) {
        return Err(FieldViolation::new(
            "metadata",
            format!("value of key {key:?} must not contain control characters"),
        ));
    }
    Ok(())
}

fn check_entry_count(count: usize) -> Result<(), FieldViolation> {
    let max = limits::METADATA_MAX_ENTRIES;
    if count > max {
        return Err(FieldViolation::new(
            "metadata",
            format!("must have at most {max} entries, got {count}"),
        ));
    }
    Ok(())
}

/// At most 32 entries; keys 1-64 of `[A-Za-z0-9_.-]`; values non-empty, at most 512
/// characters, no control characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    pub fn parse(raw: impl IntoIterator<Item = (String, String)>) -> Result<Self, FieldViolation> {
        let entries: BTreeMap<String, String> = raw.into_iter().collect();
        check_entry_count(entries.len())?;
        for (key, value) in &entries {
            parse_metadata_key(key)?;
            if value.is_empty() {
                return Err(FieldViolation::new(
                    "metadata",
                    format!("value of key {key:?} must not be empty"),
                ));
            }
            parse_metadata_value(key, value)?;
        }
        Ok(Self(entries))
    }

    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Applies a merge, checking the entry limit on the result.
    pub fn merged(&self, patch: &MetadataPatch) -> Result<Self, FieldViolation> {
        let mut entries = self.0.clone();
        for (key, value) in &patch.0 {
            match value {
                Some(value) => entries.insert(key.clone(), value.clone()),
                None => entries.remove(key),
            };
        }
        check_entry_count(entries.len())?;
        Ok(Self(entries))
    }

    /// Storage rebuilds metadata it validated when it was written.
    pub(crate) fn from_trusted(entries: BTreeMap<String, String>) -> Self {
        Self(entries)
    }
}

/// A metadata merge: each key is set to a value, or removed (an empty value on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataPatch(BTreeMap<String, Option<String>>);

impl MetadataPatch {
    pub fn parse(raw: impl IntoIterator<Item = (String, String)>) -> Result<Self, FieldViolation> {
        let mut entries = BTreeMap::new();
        for (key, value) in raw {
            parse_metadata_key(&key)?;
            parse_metadata_value(&key, &value)?;
            entries.insert(key, (!value.is_empty()).then_some(value));
        }
        check_entry_count(entries.len())?;
        Ok(Self(entries))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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

    #[test]
    fn a_full_name_with_a_control_character_is_rejected() {
        assert!(FullName::parse("Ann\nLee".into()).is_err());
        assert!(FullName::parse("Ann Lee".into()).is_ok());
        assert!(FullName::parse("x".repeat(129)).is_err());
    }

    #[test]
    fn an_unspecified_role_at_creation_means_user_and_unknown_numbers_are_rejected() {
        assert_eq!(Role::parse_for_create(0), Ok(Role::User));
        assert_eq!(Role::parse_for_create(2), Ok(Role::Admin));
        assert!(Role::parse_for_create(9).is_err());
        assert!(Role::parse("role", 0).is_err());
    }

    #[test]
    fn metadata_bounds_entries_keys_and_values() {
        let too_many = (0..33).map(|i| (format!("k{i}"), "v".to_string()));
        assert!(Metadata::parse(too_many).is_err());
        assert!(Metadata::parse([("bad key".into(), "v".into())]).is_err());
        assert!(Metadata::parse([("k".into(), "v".repeat(513))]).is_err());
        assert!(Metadata::parse([("k".into(), String::new())]).is_err());
        assert!(Metadata::parse([("team".into(), "core".into())]).is_ok());
    }

    #[test]
    fn a_metadata_patch_sets_and_removes_keys() {
        let current =
            Metadata::parse([("a".into(), "1".into()), ("b".into(), "2".into())]).unwrap();
        let patch =
            MetadataPatch::parse([("a".into(), String::new()), ("c".into(), "3".into())]).unwrap();
        let merged = current.merged(&patch).unwrap();
        let keys: Vec<_> = merged.entries().keys().cloned().collect();
        assert_eq!(keys, ["b", "c"]);
    }
}
