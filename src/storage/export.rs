//! Exports: every user as of one revision, read in id order in chunks within one read-only
//! snapshot that the export holds until it ends, while writes go on.

use tokio::sync::mpsc;

use super::rules::USER_COLUMNS;
use crate::domain::{PasswordHash, User, UserId};

/// Users read per statement, and the most one part of an export holds.
pub const CHUNK: usize = 1_000;

/// Parts read ahead of the consumer: the reader waits (and its snapshot stays open) while
/// this many are queued.
pub(super) const READ_AHEAD: usize = 2;

/// One exported user with their password hash.
#[derive(Debug)]
pub struct Exported {
    pub user: User,
    pub password_hash: PasswordHash,
}

/// An export under way: the snapshot's revision and user count, and its parts in id order.
/// Dropping it ends the read and releases the snapshot.
pub struct Export {
    pub revision: i64,
    pub total: u64,
    pub parts: mpsc::Receiver<super::StoreResult<Vec<Exported>>>,
}

/// The next chunk after `after` (the empty id before the first), in id order. `param` names
/// the one placeholder in the backend's syntax.
pub(super) fn chunk_sql(param: &str) -> String {
    format!(
        "SELECT {USER_COLUMNS}, password_hash FROM users WHERE id > {param} ORDER BY id LIMIT {CHUNK}"
    )
}

/// The id the first chunk reads after: none when starting, else the last id exported.
pub(super) fn start_after(after: Option<UserId>) -> Vec<u8> {
    after.map_or_else(Vec::new, |id| id.as_uuid().as_bytes().to_vec())
}

/// What to do with a chunk just read.
pub(super) struct Step {
    /// Hand it to the consumer (an empty chunk is not).
    pub send: bool,
    /// Nothing follows it: it was short, or an error.
    pub last: bool,
}

/// Decides on a chunk and moves `after` to its last user, where the next chunk starts.
pub(super) fn step(chunk: &super::StoreResult<Vec<Exported>>, after: &mut Vec<u8>) -> Step {
    match chunk {
        Ok(users) => {
            if let Some(exported) = users.last() {
                *after = exported.user.id.as_uuid().as_bytes().to_vec();
            }
            Step {
                send: !users.is_empty(),
                last: users.len() < CHUNK,
            }
        }
        Err(_) => Step {
            send: true,
            last: true,
        },
    }
}
