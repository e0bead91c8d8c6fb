//! BatchCreateUsers: validates every item like CreateUser, hashes in parallel, and writes in
//! batched transactions, holding only one chunk of the stream in memory at a time.

use std::collections::HashMap;

use prost::Message;
use tokio::task::JoinSet;
use tonic::{Status, Streaming};

use super::UserServiceImpl;
use super::convert::{parse_create, user_to_pb};
use crate::error::ServiceError;
use crate::pb;
use crate::storage::BatchItem;

/// Items validated, hashed and committed together.
const CHUNK: usize = 64;
/// Bytes a created user adds to the response beyond its request: id, etag, role, status and
/// timestamps. (The password the request carries more than covers an error line.)
const USER_OVERHEAD: usize = 128;
/// Response bytes kept free for the summary line.
const RESPONSE_HEADROOM: usize = 1024;

/// Why the items from some position on were not created.
enum Cutoff {
    Count,
    ResponseSize,
    /// A chunk could not be written, or the stream broke: the reason, for the caller.
    Failed(String),
}

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
    // The response must fit the message size limit, or the caller would never learn what was
    // created: stop taking items before their answers could overflow it.
    let budget = service.max_message_bytes.saturating_sub(RESPONSE_HEADROOM);
    let mut planned_bytes = 0;
    let mut cutoff = None;
    loop {
        let request = match stream.message().await {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(status) => {
                // What was committed stays committed, and nothing more is: the items still
                // waiting for their chunk, and the one that broke the stream, are not
                // created, and the answer says so, if the client is still there to read it.
                let first = chunk.first().map_or(position, |(first, _)| *first);
                chunk.clear();
                position += 1;
                let why = format!("the request stream broke: {}", status.message());
                if !matches!(cutoff, Some((_, Cutoff::Failed(_)))) {
                    cutoff = Some((
                        first.min(cutoff.as_ref().map_or(first, |(at, _)| *at)),
                        Cutoff::Failed(why),
                    ));
                }
                break;
            }
        };
        if cutoff.is_none() {
            let answer_bytes = request.encoded_len() + USER_OVERHEAD;
            if position >= service.max_batch_items {
                cutoff = Some((position, Cutoff::Count));
            } else if planned_bytes + answer_bytes > budget {
                cutoff = Some((position, Cutoff::ResponseSize));
            } else {
                planned_bytes += answer_bytes;
                chunk.push((position, request));
                if chunk.len() == CHUNK {
                    let full = std::mem::take(&mut chunk);
                    if let Err(failed) = create_chunk(service, full, &mut response).await {
                        cutoff = Some(failed);
                    }
                }
            }
        }
        position += 1;
    }
    if let Err(failed) = create_chunk(service, chunk, &mut response).await {
        cutoff.get_or_insert(failed);
    }
    if let Some((first, why)) = cutoff
        && first < position
    {
        let why = match why {
            Cutoff::Count => format!(
                "one batch takes at most {} items; send the rest in another call",
                service.max_batch_items
            ),
            Cutoff::ResponseSize => format!(
                "the answer would pass the {}-byte message limit; send the rest in another call",
                service.max_message_bytes
            ),
            Cutoff::Failed(why) => why,
        };
        response.errors.push(format!(
            "items {first} to {}: not created: {why}",
            position - 1
        ));
    }
    Ok(response)
}

/// Creates one chunk in one transaction. When that fails, nothing of the chunk exists, and
/// the error names the chunk's first position and why.
async fn create_chunk(
    service: &UserServiceImpl,
    chunk: Vec<(usize, pb::CreateUserRequest)>,
    response: &mut pb::BatchCreateUsersResponse,
) -> Result<(), (usize, Cutoff)> {
    let Some(first) = chunk.first().map(|(position, _)| *position) else {
        return Ok(());
    };
    write_chunk(service, chunk, response).await.map_err(|err| {
        let status = Status::from(err);
        (first, Cutoff::Failed(status.message().to_owned()))
    })
}

async fn write_chunk(
    service: &UserServiceImpl,
    chunk: Vec<(usize, pb::CreateUserRequest)>,
    response: &mut pb::BatchCreateUsersResponse,
) -> Result<(), ServiceError> {
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
        let item = hashed.map_err(|err| ServiceError::Internal(Box::new(err)))??;
        items.push(item);
    }
    items.sort_by_key(|item| item.position);
    let outcomes = service.store.create_batch(items).await?;
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
