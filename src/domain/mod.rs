//! Validated domain types: once constructed, a value satisfies every rule of its field.

mod fields;
mod password_hash;
mod user;

#[cfg(test)]
mod properties;

pub(crate) use fields::Violations;
pub use fields::{
    Email, FieldViolation, FullName, Metadata, MetadataPatch, Password, Role, UserStatus, Username,
    ValidationError, limits,
};
pub use password_hash::PasswordHash;
pub use user::{Etag, EventKind, NewUser, User, UserDraft, UserEvent, UserId, UserPatch};
