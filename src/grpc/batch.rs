//! BatchCreateUsers: validates every item like CreateUser, hashes in parallel, and writes in
//! batched transactions, holding only one chunk of the stream in memory at a time.

use crate::auth::policy::admit_new_user;
use crate::caller::Caller;
use std::collections::HashMap;

use prost::Message;
use tokio::task::JoinSet;
use tonic::{Code, Status, Streaming};

use super::UserServiceImpl;
use super::convert::{parse_create, user_to_pb};
use crate::error::ServiceError;
use crate::pb;
use crate::storage::BatchItem;

/// Items validated, hashed and committed together.
const CHUNK: usize = 256;
/// Bytes a created user adds to the response beyond its request: id, etag, role, status and
/// timestamps. (The password the request carries more than covers an error line.)
const USER_OVERHEAD: usize = 128;
/// Response bytes kept free for the summary line.
const RESPONSE_HEADROOM: usize = 1024;

/// Why the items from some position on were not created.
enum Cutoff {
    Count,
    ResponseSize,
    /// A chunk could not be written, or the stream broke: the code and reason, for the caller.
    Failed(Code, String),
}

/// Records one item's failure, as a line and structured: one entry per broken rule.
fn record(
    response: &mut pb::BatchCreateUsersResponse,
    position: usize,
    username: &str,
    err: &ServiceError,
) {
    response.errors.push(format!(
        "item {position} (username {}): {err}",
        crate::text::quoted(username)
    ));
    let entry = |field: &str, message: String| pb::BatchItemError {
        position: position as i64,
        last_position: position as i64,
        code: err.code() as i32,
        field: field.to_owned(),
        message,
    };
    match err {
        ServiceError::Invalid(invalid) => response.failures.extend(
            invalid
                .violations
                .iter()
                .map(|violation| entry(&violation.field, violation.description.clone())),
        ),
        ServiceError::AlreadyExists { field, .. } => {
            response.failures.push(entry(field, err.to_string()));
        }
        other => response.failures.push(entry("", other.to_string())),
    }
}

pub async fn run(
    service: &UserServiceImpl,
    mut stream: Streaming<pb::CreateUserRequest>,
    caller: &Caller,
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
                let status = crate::codec::as_caller_fault(status.code(), status.message())
                    .unwrap_or(status);
                // What was committed stays committed, and nothing more is: the items still
                // waiting for their chunk, and the one that broke the stream, are not
                // created, and the answer says so, if the client is still there to read it.
                let first = chunk.first().map_or(position, |(first, _)| *first);
                chunk.clear();
                position += 1;
                let why = format!("the request stream broke: {}", status.message());
                if !matches!(cutoff, Some((_, Cutoff::Failed(..)))) {
                    let at = cutoff.as_ref().map_or(first, |(at, _)| *at);
                    cutoff = Some((first.min(at), Cutoff::Failed(status.code(), why)));
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
                    if let Err(failed) = create_chunk(service, full, &mut response, caller).await {
                        cutoff = Some(failed);
                    }
                }
            }
        }
        position += 1;
    }
    if let Err(failed) = create_chunk(service, chunk, &mut response, caller).await {
        cutoff.get_or_insert(failed);
    }
    if let Some((first, why)) = cutoff
        && first < position
    {
        let (code, why) = match why {
            Cutoff::Count => (
                Code::ResourceExhausted,
                format!(
                    "one batch takes at most {} items; send the rest in another call",
                    service.max_batch_items
                ),
            ),
            Cutoff::ResponseSize => (
                Code::ResourceExhausted,
                format!(
                    "the answer would pass the {}-byte message limit; send the rest in another call",
                    service.max_message_bytes
                ),
            ),
            Cutoff::Failed(code, why) => (code, why),
        };
        let last = position - 1;
        response
            .errors
            .push(format!("items {first} to {last}: not created: {why}"));
        response.failures.push(pb::BatchItemError {
            position: first as i64,
            last_position: last as i64,
            code: code as i32,
            field: String::new(),
            message: format!("not created: {why}"),
        });
    }
    Ok(response)
}

/// Creates one chunk in one transaction. When that fails, nothing of the chunk exists, and
/// the error names the chunk's first position and why.
async fn create_chunk(
    service: &UserServiceImpl,
    chunk: Vec<(usize, pb::CreateUserRequest)>,
    response: &mut pb::BatchCreateUsersResponse,
    caller: &Caller,
) -> Result<(), (usize, Cutoff)> {
    let Some(first) = chunk.first().map(|(position, _)| *position) else {
        return Ok(());
    };
    write_chunk(service, chunk, response, caller)
        .await
        .map_err(|err| {
            let status = Status::from(err);
            (
                first,
                Cutoff::Failed(status.code(), status.message().to_owned()),
            )
        })
}

async fn write_chunk(
    service: &UserServiceImpl,
    chunk: Vec<(usize, pb::CreateUserRequest)>,
    response: &mut pb::BatchCreateUsersResponse,
    caller: &Caller,
) -> Result<(), ServiceError> {
    let mut errors = Vec::new();
    let mut usernames = HashMap::new();
    let mut hashing = JoinSet::new();
    for (position, request) in chunk {
        let username = request.username.clone();
        let admitted = parse_create(request, service.strength)
            .map_err(ServiceError::from)
            .and_then(|mut draft| {
                admit_new_user(caller, &mut draft)?;
                Ok(draft)
            });
        match admitted {
            Ok(draft) => {
                let hasher = service.hasher.clone();
                let actor = caller.actor();
                hashing.spawn(async move {
                    let hash = hasher.hash_credential(draft.credential.clone()).await;
                    hash.map(|hash| BatchItem {
                        position,
                        user: draft.with_hash(hash, actor),
                    })
                });
            }
            Err(refused) => errors.push((position, refused)),
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
            Ok(event) => response.users.push(user_to_pb(&event.user)),
            Err(err) => errors.push((position, ServiceError::from(err))),
        }
    }
    errors.sort_by_key(|(position, _)| *position);
    for (position, err) in errors {
        let username = usernames.get(&position).map_or("", String::as_str);
        record(response, position, username, &err);
    }
    Ok(())
}
