//! BatchCreateUsers: validates every item like CreateUser, hashes in parallel, and writes in
//! batched transactions, holding only one chunk of the stream in memory at a time.

use std::collections::HashMap;

use tokio::task::JoinSet;
use tonic::{Status, Streaming};

use super::UserServiceImpl;
use super::convert::{parse_create, user_to_pb};
use crate::error::ServiceError;
use crate::pb;
use crate::storage::BatchItem;

/// Items validated, hashed and committed together.
const CHUNK: usize = 64;

fn item_error(position: usize, username: &str, reason: impl std::fmt::Display) -> String {
    format!("item {position} (username {username:?}): {reason}")
}

pub async fn run(
    service: &UserServiceImpl,
    mut stream: Streaming<pb::CreateUserRequest>,
) -> Result<pb::BatchCreateUsersResponse, Status> {
    let mut response = pb::BatchCreateUsersResponse::default();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut position = 0;
    while let Some(request) = stream.message().await? {
        if position < service.max_batch_items {
            chunk.push((position, request));
            if chunk.len() == CHUNK {
                create_chunk(service, std::mem::take(&mut chunk), &mut response).await?;
            }
        }
        position += 1;
    }
    create_chunk(service, chunk, &mut response).await?;
    if position > service.max_batch_items {
        let max = service.max_batch_items;
        response.errors.push(format!(
            "items {max} to {}: not created: one batch holds at most {max} items; send the rest in another call",
            position - 1
        ));
    }
    Ok(response)
}

async fn create_chunk(
    service: &UserServiceImpl,
    chunk: Vec<(usize, pb::CreateUserRequest)>,
    response: &mut pb::BatchCreateUsersResponse,
) -> Result<(), Status> {
    if chunk.is_empty() {
        return Ok(());
    }
    let mut errors = Vec::new();
    let mut usernames = HashMap::new();
    let mut hashing = JoinSet::new();
    for (position, request) in chunk {
        let username = request.username.clone();
        match parse_create(request) {
            Ok(draft) => {
                let hasher = service.hasher.clone();
                hashing.spawn(async move {
                    let hash = hasher.hash(draft.password.clone()).await;
                    hash.map(|hash| BatchItem {
                        position,
                        user: draft.with_hash(hash),
                    })
                });
            }
            Err(invalid) => errors.push((position, item_error(position, &username, invalid))),
        }
        usernames.insert(position, username);
    }
    let mut items = Vec::with_capacity(hashing.len());
    while let Some(hashed) = hashing.join_next().await {
        let item = hashed
            .map_err(|err| ServiceError::Internal(Box::new(err)))?
            .map_err(ServiceError::from)?;
        items.push(item);
    }
    items.sort_by_key(|item| item.position);
    let outcomes = service
        .store
        .create_batch(items)
        .await
        .map_err(ServiceError::from)?;
    for (position, outcome) in outcomes {
        match outcome {
            Ok(event) => response.users.push(user_to_pb(event.user)),
            Err(err) => {
                let username = usernames.get(&position).map_or("", String::as_str);
                errors.push((
                    position,
                    item_error(position, username, ServiceError::from(err)),
                ));
            }
        }
    }
    errors.sort_by_key(|(position, _)| *position);
    response
        .errors
        .extend(errors.into_iter().map(|(_, error)| error));
    Ok(())
}
