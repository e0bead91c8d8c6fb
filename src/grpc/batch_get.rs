//! UserService.BatchGetUsers: many users by id in one call, each id decided by the same
//! policy as GetUser, and every id the caller may not read answered as one that names no one.

use std::collections::HashSet;

use futures_util::future::join_all;

use super::UserServiceImpl;
use super::convert::user_to_pb;
use crate::auth::policy::{Access, Denied, authorize};
use crate::caller::Caller;
use crate::domain::{UserId, ValidationError};
use crate::error::ServiceError;
use crate::pb;
use crate::storage::StoreError;

/// The most ids one call may ask for.
pub const MAX_IDS: usize = 1_000;

pub(super) async fn run(
    service: &UserServiceImpl,
    caller: &Caller,
    request: pb::BatchGetUsersRequest,
) -> Result<pb::BatchGetUsersResponse, ServiceError> {
    if *caller == Caller::Anonymous {
        return Err(Denied::NeedsToken.into());
    }
    let asked = request.user_ids;
    if asked.len() > MAX_IDS {
        return Err(ValidationError::single(
            "user_ids",
            format!("must hold at most {MAX_IDS} ids, got {}", asked.len()),
        )
        .into());
    }
    let mut seen = HashSet::with_capacity(asked.len());
    let unique: Vec<String> = asked
        .into_iter()
        .filter(|raw| seen.insert(raw.clone()))
        .collect();
    // One decision per id: an id that is not a UUID, names no one, or names someone the caller
    // may not read, is missing, and the three look alike.
    let readable = |raw: &str| -> Option<UserId> {
        let id = UserId::parse("user_ids", raw).ok()?;
        authorize(caller, &Access::Read { target: id }, false)
            .ok()
            .map(|()| id)
    };
    let lookups = unique.iter().map(|raw| async move {
        match readable(raw) {
            Some(id) => match service.store.get(id).await {
                Ok(user) => Ok(Some(user)),
                Err(StoreError::NotFound(_)) => Ok(None),
                Err(err) => Err(ServiceError::from(err)),
            },
            None => Ok(None),
        }
    });
    let found = join_all(lookups).await;
    let mut response = pb::BatchGetUsersResponse::default();
    for (raw, user) in unique.into_iter().zip(found) {
        match user? {
            Some(user) => response.users.push(user_to_pb(&user)),
            None => response.missing_ids.push(raw),
        }
    }
    Ok(response)
}
