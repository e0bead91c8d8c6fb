//! Who is calling (from a verified bearer token) and what they may do.

pub mod jwt;
pub mod policy;

use crate::domain::{Role, UserId};

/// The authenticated caller of one request, set by the auth middleware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token was sent.
    Anonymous,
    /// The token's subject is a stored user; `role` is that user's current role.
    User { id: UserId, role: Role },
    /// The token's subject is a service name; `role` comes from the token.
    Service { name: String, role: Role },
}

impl Caller {
    pub fn role(&self) -> Option<Role> {
        match self {
            Caller::Anonymous => None,
            Caller::User { role, .. } | Caller::Service { role, .. } => Some(*role),
        }
    }

    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Caller::User { id, .. } => Some(*id),
            Caller::Anonymous | Caller::Service { .. } => None,
        }
    }

    /// How logs and the rate limiter name the caller; `None` when anonymous.
    pub fn principal(&self) -> Option<String> {
        match self {
            Caller::Anonymous => None,
            Caller::User { id, .. } => Some(format!("user:{id}")),
            Caller::Service { name, .. } => Some(format!("service:{name}")),
        }
    }
}
