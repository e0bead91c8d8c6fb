//! The compact binary forms storage writes: metadata maps and user snapshots in the event log.

use std::collections::BTreeMap;

use prost::Message;
use uuid::Uuid;

use super::error::{StoreError, StoreResult};
use crate::domain::{Email, FullName, Metadata, Role, User, UserId, UserStatus, Username};

#[derive(Clone, PartialEq, Message)]
struct StoredMetadata {
    #[prost(btree_map = "string, string", tag = "1")]
    entries: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, Message)]
struct StoredUser {
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(string, tag = "2")]
    username: String,
    #[prost(string, tag = "3")]
    email: String,
    #[prost(string, tag = "4")]
    full_name: String,
    #[prost(int32, tag = "5")]
    role: i32,
    #[prost(int32, tag = "6")]
    status: i32,
    #[prost(int64, tag = "7")]
    created_at_ns: i64,
    #[prost(int64, tag = "8")]
    updated_at_ns: i64,
    #[prost(btree_map = "string, string", tag = "9")]
    metadata: BTreeMap<String, String>,
    #[prost(int64, tag = "10")]
    revision: i64,
    #[prost(bool, tag = "11")]
    email_verified: bool,
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("stored data is corrupt: {what}").into())
}

pub(super) fn encode_metadata(metadata: &Metadata) -> Vec<u8> {
    StoredMetadata {
        entries: metadata.entries().clone(),
    }
    .encode_to_vec()
}

pub(super) fn decode_metadata(bytes: &[u8]) -> StoreResult<BTreeMap<String, String>> {
    let stored = StoredMetadata::decode(bytes).map_err(|_| corrupt("metadata"))?;
    Ok(stored.entries)
}

pub(super) fn decode_id(bytes: &[u8]) -> StoreResult<UserId> {
    Uuid::from_slice(bytes)
        .map(UserId::from_uuid)
        .map_err(|_| corrupt("user id"))
}

/// The fields of a user row, before they are checked back into domain types.
pub(super) struct RawUser {
    pub id: Vec<u8>,
    pub username: String,
    pub email: String,
    pub full_name: String,
    pub role: i64,
    pub status: i64,
    pub created_at_ns: i64,
    pub updated_at_ns: i64,
    pub metadata: BTreeMap<String, String>,
    pub revision: i64,
    pub email_verified: bool,
}

impl RawUser {
    /// Strings were validated when written and are taken back as they are: re-running the
    /// parsers (the email one especially) on every listed row and replayed event would be
    /// work on the read path for nothing. Enum numbers are still checked: they are cheap and
    /// an unknown one could not be represented.
    pub fn into_user(self) -> StoreResult<User> {
        let role = i32::try_from(self.role).unwrap_or(0);
        let status = i32::try_from(self.status).unwrap_or(0);
        Ok(User {
            id: decode_id(&self.id)?,
            username: Username::from_trusted(self.username),
            email: Email::from_trusted(self.email),
            full_name: FullName::from_trusted(self.full_name),
            role: Role::parse("role", role).map_err(|_| corrupt("role"))?,
            status: UserStatus::parse("status", status).map_err(|_| corrupt("status"))?,
            created_at_ns: self.created_at_ns,
            updated_at_ns: self.updated_at_ns,
            metadata: Metadata::from_trusted(self.metadata),
            revision: self.revision,
            email_verified: self.email_verified,
        })
    }
}

pub(super) fn encode_user(user: &User) -> Vec<u8> {
    StoredUser {
        id: user.id.as_uuid().as_bytes().to_vec(),
        username: user.username.as_str().to_owned(),
        email: user.email.as_str().to_owned(),
        full_name: user.full_name.as_str().to_owned(),
        role: user.role as i32,
        status: user.status as i32,
        created_at_ns: user.created_at_ns,
        updated_at_ns: user.updated_at_ns,
        metadata: user.metadata.entries().clone(),
        revision: user.revision,
        email_verified: user.email_verified,
    }
    .encode_to_vec()
}

pub(super) fn decode_user(bytes: &[u8]) -> StoreResult<User> {
    let stored = StoredUser::decode(bytes).map_err(|_| corrupt("event user"))?;
    RawUser {
        id: stored.id,
        username: stored.username,
        email: stored.email,
        full_name: stored.full_name,
        role: stored.role.into(),
        status: stored.status.into(),
        created_at_ns: stored.created_at_ns,
        updated_at_ns: stored.updated_at_ns,
        metadata: stored.metadata,
        revision: stored.revision,
        email_verified: stored.email_verified,
    }
    .into_user()
}

/// An event row of the log, as both backends store it.
pub(super) fn decode_event(
    revision: i64,
    event_id: &[u8],
    kind: i64,
    at_ns: i64,
    user: &[u8],
    actor: &str,
    previous: Option<&[u8]>,
) -> StoreResult<crate::domain::UserEvent> {
    Ok(crate::domain::UserEvent {
        revision,
        event_id: *decode_id(event_id)?.as_uuid(),
        kind: crate::domain::EventKind::from_i64(kind)
            .ok_or_else(|| corrupt(&format!("event {revision} has unknown kind {kind}")))?,
        at_ns,
        user: decode_user(user)?,
        actor: crate::domain::Actor::decode(actor),
        previous: previous.map(decode_user).transpose()?.map(Box::new),
    })
}

/// A user's status as a column holds it, `None` where a join found no user.
pub(super) fn stored_status(raw: Option<i32>) -> Result<Option<UserStatus>, StoreError> {
    raw.map(|raw| UserStatus::parse("status", raw).map_err(|_| corrupt("status")))
        .transpose()
}
