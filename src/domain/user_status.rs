//! The user status field.

use super::FieldViolation;

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

    /// At creation UNSPECIFIED means ACTIVE; DELETED is refused.
    pub fn parse_for_create(raw: i32) -> Result<Self, FieldViolation> {
        if raw == 0 {
            Ok(UserStatus::Active)
        } else {
            Self::parse_settable(raw)
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
