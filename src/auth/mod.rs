//! Who is calling (from a verified bearer token), whether their session still holds, and
//! what they may do.

pub mod authenticator;
pub mod hasher;
pub mod keys;

pub mod policy;
pub mod sealed;
pub mod second_factor;

use crate::caller::Caller;
use crate::domain::{User, UserStatus};
use crate::error::ServiceError;
use crate::storage::sessions::TokenBasis;
use crate::storage::{Store, StoreError};

/// The token's session has ended (logout, a password change, a reused refresh token), or the
/// token was issued before its user's sessions were all ended.
pub fn session_ended() -> ServiceError {
    ServiceError::Unauthenticated("the token's session has ended: log in again".into())
}

/// Why a token whose basis no longer holds is refused.
fn ended(basis: TokenBasis) -> ServiceError {
    match basis {
        TokenBasis::Key(_) => {
            ServiceError::Unauthenticated("the service key was revoked or has expired".into())
        }
        TokenBasis::Session(_) | TokenBasis::IssuedAt { .. } => session_ended(),
    }
}

/// Fails when the caller's token no longer works because its session ended. `current` checks
/// it; a watch, which follows the caller's role and status through events, checks it alone.
pub async fn session_holds(basis: Option<TokenBasis>, store: &Store) -> Result<(), ServiceError> {
    let Some(basis) = basis else {
        return Ok(());
    };
    match store.session_holds(basis).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ended(basis)),
        Err(err) => Err(err.into()),
    }
}

/// What a stored user's token stands for, given the user as they are now: only an ACTIVE
/// user acts, with their current role.
pub fn acting_as(user: &User) -> Result<Caller, ServiceError> {
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
    token: Option<TokenBasis>,
    store: &Store,
) -> Result<Caller, ServiceError> {
    session_holds(token, store).await?;
    let Caller::User { id, .. } = caller else {
        return Ok(caller.clone());
    };
    match store.current_user(*id).await {
        Ok(user) => acting_as(&user),
        Err(StoreError::NotFound(_)) => Err(gone()),
        Err(err) => Err(err.into()),
    }
}

/// `current`'s answer when it needs no wait (a service, or a user and session in the caches);
/// `None` when something must be read from the database.
pub fn current_now(
    caller: &Caller,
    token: Option<TokenBasis>,
    store: &Store,
) -> Option<Result<Caller, ServiceError>> {
    if let Some(token) = token {
        match store.session_holds_now(&token)? {
            true => {}
            false => return Some(Err(ended(token))),
        }
    }
    let Caller::User { id, .. } = caller else {
        return Some(Ok(caller.clone()));
    };
    store.cached_user(*id).map(|user| acting_as(&user))
}
