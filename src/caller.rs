//! Who a call comes from, once authentication has said: the caller, their token's expiry,
//! and how logs name them. Set on each call by the auth middleware; everything above reads it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::domain::{Role, UserId};
use crate::storage::sessions::TokenBasis;

/// When the caller's token expires (`exp`, seconds since the Unix epoch), set beside the
/// `Caller` by the auth middleware, so that streams end when it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenExpiry(pub u64);

impl TokenExpiry {
    /// A credential that does not expire (a service key made without an expiry).
    pub const NEVER: TokenExpiry = TokenExpiry(u64::MAX);

    /// The moment the token stops working, with the leeway verification allows; `None` when
    /// that is beyond what a clock can hold (a credential without an expiry).
    pub fn instant(self) -> Option<tokio::time::Instant> {
        let expires = UNIX_EPOCH.checked_add(Duration::from_secs(
            self.0.checked_add(crate::tokens::LEEWAY_SECS)?,
        ))?;
        let left = expires
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::Instant::now().checked_add(left)
    }
}

/// What the auth middleware leaves in the call's state (`call::CallState`) for the handlers
/// and the access log.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub caller: Caller,
    /// When the token stops working (none for anonymous calls), so that streams end then.
    pub expiry: Option<TokenExpiry>,
    /// What a user's token needs to go on working: its session open, or to be issued after
    /// the user's sessions last ended.
    pub basis: Option<TokenBasis>,
}

/// The authenticated caller of one request, set by the auth middleware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token was sent.
    Anonymous,
    /// The token's subject is a stored user; `role` is that user's current role.
    User { id: UserId, role: Role },
    /// The token's subject is a service name; `role` comes from the token.
    Service { name: Arc<str>, role: Role },
    /// A service key (`CreateServiceKey`); `role` is the key's.
    Key { id: uuid::Uuid, role: Role },
}

impl Caller {
    pub fn role(&self) -> Option<Role> {
        match self {
            Caller::Anonymous => None,
            Caller::User { role, .. } | Caller::Service { role, .. } | Caller::Key { role, .. } => {
                Some(*role)
            }
        }
    }

    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Caller::User { id, .. } => Some(*id),
            Caller::Anonymous | Caller::Service { .. } | Caller::Key { .. } => None,
        }
    }

    /// Who the event log records as the author of this caller's changes.
    pub fn actor(&self) -> crate::domain::Actor {
        use crate::domain::Actor;
        match self {
            Caller::Anonymous => Actor::Anonymous,
            Caller::User { id, .. } => Actor::User(*id),
            Caller::Service { name, .. } => Actor::Service(name.to_string()),
            Caller::Key { id, .. } => Actor::Key(*id),
        }
    }

    /// How logs name the caller (`user:ID`, `service:NAME`); `None` when anonymous.
    pub fn principal(&self) -> Option<Principal<'_>> {
        match self {
            Caller::Anonymous => None,
            Caller::User { .. } | Caller::Service { .. } | Caller::Key { .. } => {
                Some(Principal(self))
            }
        }
    }
}

/// A caller's name in the logs, formatted only when a line is written.
pub struct Principal<'a>(&'a Caller);

impl std::fmt::Display for Principal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Caller::Anonymous => f.write_str("-"),
            // Pieces written as they are: a nested format showed in the profile of every
            // logged call.
            Caller::User { id, .. } => {
                f.write_str("user:")?;
                f.write_str(id.encode(&mut [0; 36]))
            }
            Caller::Service { name, .. } => {
                f.write_str("service:")?;
                f.write_str(name)
            }
            Caller::Key { id, .. } => {
                f.write_str("key:")?;
                f.write_str(id.hyphenated().encode_lower(&mut [0; 36]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TokenExpiry;

    #[test]
    fn a_credential_without_an_expiry_has_no_instant_and_does_not_panic() {
        assert_eq!(TokenExpiry::NEVER.instant(), None);
        assert_eq!(TokenExpiry(u64::MAX - 1).instant(), None);
        let soon = TokenExpiry(1).instant().expect("the past is a moment");
        assert!(soon <= tokio::time::Instant::now(), "long expired: now");
    }
}
