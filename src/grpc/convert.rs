//! Conversions between wire messages and domain types. Every write RPC parses through here.

use prost_types::Timestamp;

use crate::caller::Caller;
use crate::domain::{
    Actor, Credential, Email, Etag, EventKind, FieldViolation, FullName, Metadata, MetadataPatch,
    Password, PasswordHash, PasswordStrength, Role, User, UserDraft, UserEvent, UserId, UserPatch,
    UserStatus, Username, ValidationError, Violations,
};
use crate::pb;
use crate::storage::UserKey;

pub fn timestamp(ns: i64) -> Timestamp {
    Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        // Always in 0..1e9, so it fits.
        nanos: ns.rem_euclid(1_000_000_000) as i32,
    }
}

pub fn user_to_pb(user: &User) -> pb::User {
    pb::User {
        id: user.id.encode(&mut [0; 36]).to_owned(),
        etag: user.etag().to_text(),
        username: user.username.as_str().to_owned(),
        email: user.email.as_str().to_owned(),
        full_name: user.full_name.as_str().to_owned(),
        role: user.role as i32,
        status: user.status as i32,
        created_at: Some(timestamp(user.created_at_ns)),
        updated_at: Some(timestamp(user.updated_at_ns)),
        metadata: user.metadata.entries().clone(),
        email_verified: user.email_verified,
    }
}

/// The actor as a watcher may see them: whole for admins and moderators (and for the actor
/// themselves), the kind alone for other users.
pub fn actor_to_pb(actor: &Actor, seen_by: &Caller) -> pb::Actor {
    let (kind, id) = match actor {
        Actor::Unknown => (pb::ActorKind::Unspecified, String::new()),
        Actor::Anonymous => (pb::ActorKind::Anonymous, String::new()),
        Actor::User(id) => (pb::ActorKind::User, id.to_string()),
        Actor::Service(name) => (pb::ActorKind::Service, name.clone()),
        Actor::Key(id) => (pb::ActorKind::ServiceKey, id.to_string()),
    };
    let whole = match seen_by.role() {
        Some(Role::Admin | Role::Moderator) => true,
        _ => matches!(actor, Actor::User(id) if seen_by.user_id() == Some(*id)),
    };
    pb::Actor {
        kind: kind as i32,
        id: if whole { id } else { String::new() },
    }
}

/// A committed event as `seen_by` may see it.
pub fn event_to_pb(event: UserEvent, seen_by: &Caller) -> pb::UserEvent {
    let actor = actor_to_pb(&event.actor, seen_by);
    let kind = match event.kind {
        EventKind::Created => pb::EventType::Created,
        EventKind::Updated => pb::EventType::Updated,
        EventKind::Deleted => pb::EventType::Deleted,
    };
    pb::UserEvent {
        event_id: event.event_id.to_string(),
        r#type: kind as i32,
        user: Some(user_to_pb(&event.user)),
        timestamp: Some(timestamp(event.at_ns)),
        revision: event.revision,
        failure: None,
        actor: Some(actor),
        prev_user: None,
    }
}

/// An id that must be a UUID (WatchUsers' `user_ids`).
pub fn parse_user_id(field: &str, raw: &str) -> Result<UserId, ValidationError> {
    UserId::parse(field, raw).map_err(ValidationError::from)
}

/// The id of the user a lookup names: anything but empty text (see `UserId::parse_lookup`).
pub fn parse_lookup_id(raw: &str) -> Result<UserId, ValidationError> {
    UserId::parse_lookup("user_id", raw).map_err(ValidationError::from)
}

pub fn parse_etag(raw: Option<&str>) -> Result<Option<Etag>, ValidationError> {
    raw.map(Etag::parse)
        .transpose()
        .map_err(ValidationError::from)
}

/// The one parser for a user to create: CreateUser and BatchCreateUsers both use it.
pub fn parse_create(
    request: pb::CreateUserRequest,
    strength: PasswordStrength,
) -> Result<UserDraft, ValidationError> {
    let mut violations = Violations::default();
    let username = violations.check(Username::parse(request.username));
    let email = violations.check(Email::parse(request.email));
    let full_name = violations.check(FullName::parse(request.full_name));
    let credential = violations.check(match (request.password, request.password_hash) {
        (password, hash) if hash.is_empty() => Password::parse(password).map(Credential::Password),
        (password, hash) if password.is_empty() => {
            PasswordHash::import(hash).map(Credential::Imported)
        }
        _ => Err(FieldViolation::new(
            "password_hash",
            "give password or password_hash, not both",
        )),
    });
    if let (Some(Credential::Password(password)), Some(username), Some(email)) =
        (&credential, &username, &email)
    {
        violations.check(strength.check(password, username.as_str(), email.as_str()));
    }
    let role = violations.check(Role::parse_for_create(request.role));
    let status = violations.check(UserStatus::parse_for_create(request.status));
    let metadata = violations.check(Metadata::parse(request.metadata));
    violations.finish(|| {
        Some(UserDraft {
            username: username?,
            email: email?,
            full_name: full_name?,
            credential: credential?,
            role: role?,
            status: status?,
            metadata: metadata?,
        })
    })
}

/// The one parser for an update: UpdateUser and SyncUsers both use it.
pub fn parse_update(
    request: pb::UpdateUserRequest,
) -> Result<(UserId, UserPatch), ValidationError> {
    let mut violations = Violations::default();
    let id = violations.check(UserId::parse_lookup("user_id", &request.user_id));
    let username = violations.check(request.username.map(Username::parse).transpose());
    let email = violations.check(request.email.map(Email::parse).transpose());
    let full_name = violations.check(request.full_name.map(FullName::parse).transpose());
    let role = violations.check(request.role.map(|raw| Role::parse("role", raw)).transpose());
    let status = violations.check(request.status.map(UserStatus::parse_settable).transpose());
    let metadata = violations.check(MetadataPatch::parse(request.metadata));
    let etag = violations.check(request.etag.as_deref().map(Etag::parse).transpose());
    violations.finish(|| {
        Some((
            id?,
            UserPatch {
                username: username?,
                email: email?,
                full_name: full_name?,
                role: role?,
                status: status?,
                metadata: metadata?,
                etag: etag?,
                actor: Default::default(),
                email_verified: None,
            },
        ))
    })
}

/// A lookup's key, checked by the field's own parser, and how to name it in a NOT_FOUND.
pub fn parse_lookup(request: pb::LookupUserRequest) -> Result<(UserKey, String), ValidationError> {
    use pb::lookup_user_request::Key;
    let single = ValidationError::from;
    match request.key {
        Some(Key::Username(raw)) => Username::parse(raw)
            .map(|username| {
                let named = format!("with username {}", crate::text::quoted(username.as_str()));
                (UserKey::Username(username), named)
            })
            .map_err(single),
        Some(Key::Email(raw)) => Email::parse(raw)
            .map(|email| {
                let named = format!("with email {}", crate::text::quoted(email.as_str()));
                (UserKey::Email(email), named)
            })
            .map_err(single),
        None => Err(single(FieldViolation::new(
            "key",
            "set username or email to look a user up by",
        ))),
    }
}

/// A filter enum: 0 means no filter; any other number must be defined.
pub fn parse_filter<T>(
    field: &str,
    raw: i32,
    parse: impl FnOnce(&str, i32) -> Result<T, FieldViolation>,
) -> Result<Option<T>, FieldViolation> {
    if raw == 0 {
        Ok(None)
    } else {
        parse(field, raw).map(Some)
    }
}
