//! A user as stored, the validated inputs that create or change one, and change events.

use std::fmt;

use uuid::Uuid;

use super::PasswordHash;
use super::{Email, FieldViolation, FullName, Metadata, MetadataPatch, Role, UserStatus, Username};

/// A user id: a UUIDv7, so ids sort roughly by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Uuid);

impl UserId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// `field` names where the id came from (`user_id`, `user_ids[2]`, ...).
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        if raw.is_empty() {
            return Err(FieldViolation::new(field, "must not be empty"));
        }
        Uuid::try_parse(raw).map(Self).map_err(|_| {
            FieldViolation::new(
                field,
                format!(
                    "must be a user id (a UUID as returned by CreateUser), got {}",
                    crate::text::quoted(raw)
                ),
            )
        })
    }

    /// The user a lookup (GetUser, UpdateUser, DeleteUser) names. Any text names a user or
    /// none: text that is not a UUID names none, and is looked up as the nil UUID, which no
    /// user has (ids are UUIDv7), so the caller learns NOT_FOUND, as for any unknown id. Only
    /// empty text is refused.
    pub fn parse_lookup(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        if raw.is_empty() {
            return Err(FieldViolation::new(field, "must not be empty"));
        }
        Ok(Uuid::try_parse(raw).map_or(Self(Uuid::nil()), Self))
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The id's text (lower-case, hyphenated), written into `buffer` without the formatting
    /// machinery `to_string` goes through (it showed in the profile of every GetUser).
    pub fn encode<'b>(&self, buffer: &'b mut [u8; uuid::fmt::Hyphenated::LENGTH]) -> &'b str {
        self.0.hyphenated().encode_lower(buffer)
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The version of a user a conditional write expects: the revision of its last change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Etag(i64);

impl Etag {
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        raw.parse::<i64>()
            .ok()
            .filter(|revision| *revision > 0)
            .map(Self)
            .ok_or_else(|| {
                FieldViolation::new(
                    "etag",
                    format!(
                        "must be an etag as returned in User.etag, got {}",
                        crate::text::quoted(raw)
                    ),
                )
            })
    }

    pub fn of_revision(revision: i64) -> Self {
        Self(revision)
    }

    pub fn revision(&self) -> i64 {
        self.0
    }
}

impl Etag {
    /// The etag as the wire carries it, the revision's digits, written without the
    /// formatting machinery `to_string` goes through (it showed in the profile of every
    /// GetUser).
    pub fn to_text(self) -> String {
        itoa::Buffer::new().format(self.0).to_owned()
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A stored user. Holds no password hash: that never leaves storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: Username,
    pub email: Email,
    pub full_name: FullName,
    pub role: Role,
    pub status: UserStatus,
    /// Nanoseconds since the Unix epoch; strictly increasing across users.
    pub created_at_ns: i64,
    pub updated_at_ns: i64,
    pub metadata: Metadata,
    /// The revision of the last change to this user.
    pub revision: i64,
    /// A code sent to `email` came back (`VerifyEmail`); false again when the email changes.
    pub email_verified: bool,
}

impl User {
    pub fn etag(&self) -> Etag {
        Etag::of_revision(self.revision)
    }
}

/// A validated CreateUser, with the password already hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: Username,
    pub email: Email,
    pub full_name: FullName,
    pub password_hash: PasswordHash,
    pub role: Role,
    /// ACTIVE unless an admin said otherwise (an import keeping an export's statuses).
    pub status: UserStatus,
    pub metadata: Metadata,
    /// Who creates the user.
    pub actor: super::Actor,
}

/// A validated partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub username: Option<Username>,
    pub email: Option<Email>,
    pub full_name: Option<FullName>,
    pub role: Option<Role>,
    pub status: Option<UserStatus>,
    pub metadata: MetadataPatch,
    pub etag: Option<Etag>,
    /// Who makes the change.
    pub actor: super::Actor,
    /// Set by `VerifyEmail` only, never from a request's fields.
    pub email_verified: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created = 1,
    Updated = 2,
    Deleted = 3,
}

impl EventKind {
    pub fn from_i64(raw: i64) -> Option<Self> {
        [Self::Created, Self::Updated, Self::Deleted]
            .into_iter()
            .find(|kind| *kind as i64 == raw)
    }
}

/// A committed change, as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEvent {
    pub revision: i64,
    pub event_id: Uuid,
    pub kind: EventKind,
    pub at_ns: i64,
    /// The user after the change (for a deletion: as it was when deleted).
    pub user: User,
    /// Who made the change.
    pub actor: super::Actor,
    /// The user before an update or a deletion (`None` for a creation, and for events logged
    /// before this was kept).
    pub previous: Option<Box<User>>,
}

/// A validated CreateUser before its password is hashed.
#[derive(Debug, Clone)]
pub struct UserDraft {
    pub username: Username,
    pub email: Email,
    pub full_name: FullName,
    pub credential: Credential,
    pub role: Role,
    pub status: UserStatus,
    pub metadata: Metadata,
}

/// How a new user's password arrives.
#[derive(Debug, Clone)]
pub enum Credential {
    /// In clear, to be hashed.
    Password(super::Password),
    /// As a hash made by another system, stored as it is.
    Imported(PasswordHash),
}

impl UserDraft {
    pub fn with_hash(self, password_hash: PasswordHash, actor: super::Actor) -> NewUser {
        NewUser {
            actor,
            username: self.username,
            email: self.email,
            full_name: self.full_name,
            password_hash,
            role: self.role,
            status: self.status,
            metadata: self.metadata,
        }
    }
}
