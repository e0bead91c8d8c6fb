//! The role field.

use super::FieldViolation;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_role_at_creation_means_user_and_unknown_numbers_are_rejected() {
        assert_eq!(Role::parse_for_create(0), Ok(Role::User));
        assert_eq!(Role::parse_for_create(2), Ok(Role::Admin));
        assert!(Role::parse_for_create(9).is_err());
        assert!(Role::parse("role", 0).is_err());
    }
}
