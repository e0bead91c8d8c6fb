//! Service keys as stored: each key's row holds its name, role, expiry, last use and the
//! SHA-256 digest of its secret (the secret has 256 random bits, so a fast digest is as hard
//! to reverse as a slow hash). Revoking a key deletes its row and, like ending a session,
//! tells every replica's `SessionCache` to forget it (`NOTIFY user_sessions`).

use super::encoding::corrupt;
use super::error::StoreResult;
use super::sessions::Known;
use crate::domain::{KeyId, KeyName, Role, ServiceKey};

/// The most keys there may be: a listing returns them all in one answer.
pub const MAX_KEYS: i64 = 1_000;

/// A key's secret as stored: its SHA-256 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDigest(pub [u8; 32]);

/// The columns of a key row, in the order both backends read them.
macro_rules! key_columns {
    () => {
        "id, name, role, created_at, expires_at, last_used_at, digest"
    };
}
pub(super) use key_columns;

/// A key row before it is checked back into domain types.
pub(super) struct RawKey {
    pub id: Vec<u8>,
    pub name: String,
    pub role: i64,
    pub created_at_ns: i64,
    pub expires_at_ns: Option<i64>,
    pub last_used_at_ns: Option<i64>,
    pub digest: Vec<u8>,
}

impl RawKey {
    pub fn into_key(self) -> StoreResult<(ServiceKey, KeyDigest)> {
        let id = KeyId::from_slice(&self.id).map_err(|_| corrupt("service key id"))?;
        let role = i32::try_from(self.role).unwrap_or(0);
        let digest = <[u8; 32]>::try_from(self.digest.as_slice())
            .map_err(|_| corrupt("service key digest"))?;
        let key = ServiceKey {
            id,
            name: KeyName::from_trusted(self.name),
            role: Role::parse("role", role).map_err(|_| corrupt("service key role"))?,
            created_at_ns: self.created_at_ns,
            expires_at_ns: self.expires_at_ns,
            last_used_at_ns: self.last_used_at_ns,
        };
        Ok((key, KeyDigest(digest)))
    }
}

/// What a key's row (its expiry; `None` when there is none) says for a token resting on it at
/// `now_ns`: usable until it expires, never once revoked. Kept in the cache of sessions' states.
pub(super) fn key_known(found: Option<Option<i64>>, now_ns: i64) -> Known {
    Known::Session {
        open: found.is_some_and(|expires| expires.is_none_or(|expires| expires > now_ns)),
    }
}

/// What creating a key may find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Creation {
    Created,
    NameTaken,
    TooMany,
}

/// The table holds as many keys as a listing answers with.
pub(super) fn too_many() -> super::StoreError {
    super::StoreError::Full(format!(
        "there are already {MAX_KEYS} service keys, the most there may be: revoke unused ones first"
    ))
}

/// Whether a key may be created, given how many there are and whether its name is free.
pub(super) fn may_create(count: i64, name_taken: bool) -> Creation {
    if name_taken {
        Creation::NameTaken
    } else if count >= MAX_KEYS {
        Creation::TooMany
    } else {
        Creation::Created
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_works_until_it_expires_and_never_once_revoked() {
        assert_eq!(key_known(Some(None), 5), Known::Session { open: true });
        assert_eq!(key_known(Some(Some(6)), 5), Known::Session { open: true });
        assert_eq!(key_known(Some(Some(5)), 5), Known::Session { open: false });
        assert_eq!(key_known(None, 5), Known::Session { open: false });
    }

    #[test]
    fn a_taken_name_or_a_full_table_refuses_a_new_key() {
        assert_eq!(may_create(0, false), Creation::Created);
        assert_eq!(may_create(3, true), Creation::NameTaken);
        assert_eq!(may_create(MAX_KEYS, false), Creation::TooMany);
    }
}
