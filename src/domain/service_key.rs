//! Service keys: credentials an admin gives a machine caller, with a role and an optional
//! expiry. The secret itself is never a domain value: only its digest is kept.

use super::{FieldViolation, Role};

/// A key's id, shown in listings and event actors.
pub type KeyId = uuid::Uuid;

/// 1 to 64 ASCII letters, digits, '.', '-' or '_'. Unique regardless of letter case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(String);

/// The most characters a key's name may have.
pub const KEY_NAME_MAX_CHARS: usize = 64;

impl KeyName {
    pub fn parse(raw: String) -> Result<Self, FieldViolation> {
        let rule = format!(
            "must be 1-{KEY_NAME_MAX_CHARS} characters of ASCII letters, digits, '.', '-' or '_'"
        );
        let len = raw.chars().count();
        if !(1..=KEY_NAME_MAX_CHARS).contains(&len) {
            let got = crate::text::count(len as u64, "character", "characters");
            return Err(FieldViolation::new("name", format!("{rule}, got {got}")));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(FieldViolation::new("name", format!("{rule}, got {bad:?}")));
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

/// A service key as stored, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceKey {
    pub id: KeyId,
    pub name: KeyName,
    pub role: Role,
    pub created_at_ns: i64,
    /// `None`: it does not expire.
    pub expires_at_ns: Option<i64>,
    /// `None`: never used.
    pub last_used_at_ns: Option<i64>,
}

impl ServiceKey {
    /// Whether it still works at `now_ns` (it exists: a revoked key is gone).
    pub fn works_at(&self, now_ns: i64) -> bool {
        self.expires_at_ns.is_none_or(|expires| expires > now_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_name_of_letters_digits_dots_dashes_and_underscores_is_accepted() {
        for name in ["ci", "billing-eu.prod_2", &"k".repeat(64)] {
            assert!(KeyName::parse(name.into()).is_ok(), "{name}");
        }
    }

    #[test]
    fn an_empty_long_or_spaced_key_name_is_refused_naming_the_field() {
        for name in ["", &"k".repeat(65), "two words", "ünï"] {
            let refused = KeyName::parse(name.into()).unwrap_err();
            assert_eq!(refused.field, "name", "{name}");
        }
    }

    #[test]
    fn a_key_without_an_expiry_always_works_and_one_with_works_until_it() {
        let key = ServiceKey {
            id: KeyId::now_v7(),
            name: KeyName::from_trusted("ci".into()),
            role: Role::User,
            created_at_ns: 1,
            expires_at_ns: None,
            last_used_at_ns: None,
        };
        assert!(key.works_at(i64::MAX));
        let expiring = ServiceKey {
            expires_at_ns: Some(100),
            ..key
        };
        assert!(expiring.works_at(99));
        assert!(!expiring.works_at(100));
    }
}
