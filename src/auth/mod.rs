//! Who is calling (from a verified bearer token) and what they may do.

pub mod authenticator;
pub mod hasher;

pub mod policy;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::domain::{Role, User, UserId, UserStatus};
use crate::error::ServiceError;
use crate::storage::sessions::Standing;
use crate::storage::{Store, StoreError};

/// When the caller's token expires (`exp`, seconds since the Unix epoch), set beside the
/// `Caller` by the auth middleware, so that streams end when it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenExpiry(pub u64);

impl TokenExpiry {
    /// The moment the token stops working, with the leeway verification allows.
    pub fn instant(self) -> tokio::time::Instant {
        let expires = UNIX_EPOCH
            + Duration::from_secs(self.0.saturating_add(crate::contract::tokens::LEEWAY_SECS));
        let left = expires
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::Instant::now() + left
    }
}

/// What the auth middleware leaves on a call for the handlers: one extension, since every
/// call carries it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub caller: Caller,
    /// When the token stops working (none for anonymous calls), so that streams end then.
    pub expiry: Option<TokenExpiry>,
    /// What a user's token needs to go on working: its session open, or to be issued after
    /// the user's sessions last ended.
    pub standing: Option<Standing>,
}

impl Authenticated {
    /// What authentication left on a call; `None` when it has not passed the auth middleware.
    pub fn of(extensions: &http::Extensions) -> Option<&Self> {
        extensions.get::<Self>()
    }

    /// The caller authentication left on a call; anonymous when there is none.
    pub fn caller_of(extensions: &http::Extensions) -> &Caller {
        static ANONYMOUS: Caller = Caller::Anonymous;
        Self::of(extensions).map_or(&ANONYMOUS, |authenticated| &authenticated.caller)
    }
}

/// The token's session has ended (logout, a password change, a reused refresh token), or the
/// token was issued before its user's sessions were all ended.
pub fn session_ended() -> ServiceError {
    ServiceError::Unauthenticated("the token's session has ended: log in again".into())
}

/// Fails when the caller's token no longer works because its session ended. `current` checks
/// it; a watch, which follows the caller's standing through events, checks it alone.
pub async fn session_holds(standing: Option<Standing>, store: &Store) -> Result<(), ServiceError> {
    let Some(standing) = standing else {
        return Ok(());
    };
    match store.session_holds(standing).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(session_ended()),
        Err(err) => Err(err.into()),
    }
}

/// What a stored user's token stands for, given the user as they are now: only an ACTIVE
/// user acts, with their current role.
pub fn standing(user: &User) -> Result<Caller, ServiceError> {
    if user.status == UserStatus::Active {
        Ok(Caller::User {
            id: user.id,
            role: user.role,
        })
    } else {
        Err(ServiceError::Unauthenticated(format!(
            "the token's user is {}",
            user.status.name()
        )))
    }
}

/// The token's user no longer exists.
pub fn gone() -> ServiceError {
    ServiceError::Unauthenticated("the token's user no longer exists".into())
}

/// The caller as they stand now: their token's session still open (`token`: what the token
/// needs, from `CallerStanding`), and a stored user's role and status read again (the caches
/// make both lookups, not queries); a service's come from its token and do not change.
pub async fn current(
    caller: &Caller,
    token: Option<Standing>,
    store: &Store,
) -> Result<Caller, ServiceError> {
    session_holds(token, store).await?;
    let Caller::User { id, .. } = caller else {
        return Ok(caller.clone());
    };
    match store.standing(*id).await {
        Ok(user) => standing(&user),
        Err(StoreError::NotFound(_)) => Err(gone()),
        Err(err) => Err(err.into()),
    }
}

/// `current`'s answer when it needs no wait (a service, or a user and session in the caches);
/// `None` when something must be read from the database.
pub fn current_now(
    caller: &Caller,
    token: Option<Standing>,
    store: &Store,
) -> Option<Result<Caller, ServiceError>> {
    if let Some(token) = token {
        match store.session_holds_now(&token)? {
            true => {}
            false => return Some(Err(session_ended())),
        }
    }
    let Caller::User { id, .. } = caller else {
        return Some(Ok(caller.clone()));
    };
    store.cached_standing(*id).map(|user| standing(&user))
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

    /// Who the event log records as the author of this caller's changes.
    pub fn actor(&self) -> crate::domain::Actor {
        use crate::domain::Actor;
        match self {
            Caller::Anonymous => Actor::Anonymous,
            Caller::User { id, .. } => Actor::User(*id),
            Caller::Service { name, .. } => Actor::Service(name.to_string()),
        }
    }

    /// How logs name the caller (`user:ID`, `service:NAME`); `None` when anonymous.
    pub fn principal(&self) -> Option<Principal<'_>> {
        match self {
            Caller::Anonymous => None,
            Caller::User { .. } | Caller::Service { .. } => Some(Principal(self)),
        }
    }
}

/// A caller's name in the logs, formatted only when a line is written.
pub struct Principal<'a>(&'a Caller);

impl std::fmt::Display for Principal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Caller::Anonymous => f.write_str("-"),
            Caller::User { id, .. } => write!(f, "user:{id}"),
            Caller::Service { name, .. } => write!(f, "service:{name}"),
        }
    }
}
