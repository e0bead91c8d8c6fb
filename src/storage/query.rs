//! What a read asks for: a user by unique name, a listing's filter and position, a prefix
//! search, and the pages they answer.

use crate::domain::{Role, User, UserId, UserStatus};

/// A user's unique name: username or email, compared without letter case.
#[derive(Debug, Clone)]
pub enum UserKey {
    Username(crate::domain::Username),
    Email(crate::domain::Email),
}

impl UserKey {
    /// The indexed column that holds this key, and the key as stored there.
    pub(super) fn column_and_key(&self) -> (&'static str, String) {
        match self {
            UserKey::Username(username) => ("username_key", username.key()),
            UserKey::Email(email) => ("email_key", email.key()),
        }
    }
}

/// Which users a listing shows, and where the previous page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery {
    pub status: Option<UserStatus>,
    pub role: Option<Role>,
    pub after: Option<Cursor>,
    pub limit: usize,
}

/// A position in the newest-first order: `(created_at_ns, id)` of the last user shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_ns: i64,
    pub id: UserId,
}

/// A prefix search over usernames and emails, in the order of the matching name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// Lower-case, as the stored keys are; not empty.
    pub prefix: String,
    pub status: Option<UserStatus>,
    pub role: Option<Role>,
    /// The key (username or email key) of the last user shown.
    pub after: Option<String>,
    pub limit: usize,
}

impl Search {
    /// Matches counted at most, so a search costs the same however many users match.
    pub const COUNT_LIMIT: u64 = 100;

    /// The end of the prefix's key range, exclusive: every key that starts with the prefix
    /// sorts below it (byte order), and no other key at or above the prefix does.
    pub(super) fn upper_bound(&self) -> String {
        format!("{}\u{10FFFF}", self.prefix)
    }

    /// Where the page starts: after the last key shown, or at the prefix.
    pub(super) fn lower_bound(&self) -> (&str, bool) {
        match &self.after {
            Some(after) if after.as_str() >= self.prefix.as_str() => (after, false),
            _ => (&self.prefix, true),
        }
    }
}

/// One page of a search: each user with the key that matched.
#[derive(Debug)]
pub struct SearchPage {
    pub users: Vec<(String, User)>,
    /// Whether more users may follow: the next page starts after `resume_after`.
    pub more: bool,
    /// The last key this page decided on (shown or skipped as another user's second name).
    pub resume_after: Option<String>,
    /// Users that match, counted up to `Search::COUNT_LIMIT`.
    pub total: u64,
}

#[derive(Debug)]
pub struct Page {
    pub users: Vec<User>,
    /// Set when more users follow.
    pub next: Option<Cursor>,
    /// All users matching the filters, counted in the same snapshot as the page.
    pub total: u64,
}
