//! What the write path takes and answers beyond domain types: a batch's items, and what an
//! update did.

use crate::domain::{Actor, Etag, NewUser, User, UserEvent, UserId, UserPatch};

/// One item of a batch: its position in the caller's stream, and the user to create.
#[derive(Debug)]
pub struct BatchItem {
    pub position: usize,
    pub user: NewUser,
}

/// What an update did.
#[derive(Debug)]
pub enum Updated {
    /// The change committed as this event; `event.user` is the user after it.
    Changed(UserEvent),
    /// The patch asked for what the user already was: nothing was written, and the etag
    /// stays as it was.
    Unchanged(User),
}

impl Updated {
    pub fn into_user(self) -> User {
        match self {
            Updated::Changed(event) => event.user,
            Updated::Unchanged(user) => user,
        }
    }
}

/// An update or a delete, as a group commits it.
pub(crate) enum Change {
    Update(UserId, UserPatch),
    Delete(UserId, Option<Etag>, Actor),
}

/// What one write did, by its kind: a create's event, an update's outcome, a delete's event.
pub(crate) enum Written {
    Created(UserEvent),
    Updated(Updated),
    Deleted(UserEvent),
}
