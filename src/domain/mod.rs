//! Validated domain types: once constructed, a value satisfies every rule of its field. One
//! file per field type; `user` puts them together.

mod actor;
mod email;
mod full_name;
mod listing;
mod metadata;
mod password;
mod password_hash;
mod role;
mod service_key;
mod user;
mod user_status;
mod username;
mod validation;

#[cfg(test)]
mod properties;

pub use actor::Actor;
pub use email::Email;
pub use full_name::FullName;
pub use listing::{PageSize, SearchQuery};
pub use metadata::{Metadata, MetadataPatch};
pub use password::{Password, PasswordStrength};
pub use password_hash::{PasswordHash, Scheme};
pub use role::Role;
pub use service_key::{KEY_NAME_MAX_CHARS, KeyId, KeyName, ServiceKey};
pub use user::{
    Credential, Etag, EventKind, NewUser, User, UserDraft, UserEvent, UserId, UserPatch,
};
pub use user_status::UserStatus;
pub use username::Username;
pub(crate) use validation::Violations;
pub use validation::{FieldViolation, ValidationError, limits};
