//! SyncUsers: one reply per inbound update, in order; a failed update is answered and the
//! stream goes on.

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::convert::{event_to_pb, user_to_pb};
use super::{EventStream, UserServiceImpl};
use crate::caller::Caller;
use crate::error::ServiceError;
use crate::pb;
use crate::storage::Updated;
use crate::streams::StreamPlace;

const CLIENT_BUFFER: usize = 64;
/// How long the status that ends a sync waits for a client that is not reading.
const LAST_WORD: std::time::Duration = std::time::Duration::from_secs(1);

fn failure(user_id: String, status: &Status) -> pb::UserEvent {
    pb::UserEvent {
        r#type: pb::EventType::Unspecified as i32,
        failure: Some(pb::SyncFailure {
            user_id,
            code: status.code() as i32,
            message: status.message().to_owned(),
        }),
        ..Default::default()
    }
}

/// Who opened a sync stream, and what counts it.
pub struct Opened {
    pub caller: Caller,
    /// When the caller's token expires.
    pub expires: Option<Instant>,
    /// What the caller's token needs to go on working (its session open).
    pub basis: Option<crate::storage::sessions::TokenBasis>,
    /// The stream's place under the caps, held until it ends.
    pub place: StreamPlace,
    /// What the rate limit counts each message against (none: an anonymous caller whose
    /// address is unknown).
    pub key: Option<crate::rate::CallerKey>,
}

pub fn start(
    service: UserServiceImpl,
    opened: Opened,
    mut inbound: Streaming<pb::UpdateUserRequest>,
) -> EventStream {
    let Opened {
        caller,
        expires,
        basis: token_basis,
        place,
        key,
    } = opened;
    let (replies, receiver) = mpsc::channel(CLIENT_BUFFER);
    let mut shutdown = service.shutdown.clone();
    let opened_as = caller.role();
    service.shutdown.clone().spawn(async move {
        let _place = place;
        // Why the stream ends early: its status.
        let last = loop {
            let message = tokio::select! {
                message = inbound.message() => message,
                () = replies.closed() => return,
                () = shutdown.triggered() => break Err(ServiceError::ShuttingDown(String::new()).into()),
            };
            let request = match message {
                Ok(Some(request)) => request,
                // The client is done sending: the replies are complete.
                Ok(None) => return,
                // A message that could not be decoded has no user_id; answer it all the same.
                // The stream cannot be read past it, so it ends there too.
                Err(status) => {
                    let status = crate::codec::as_caller_fault(status.code(), status.message())
                        .unwrap_or(status);
                    if send(&replies, &mut shutdown, failure(String::new(), &status)).await {
                        break Err(status);
                    }
                    return;
                }
            };
            let user_id = request.user_id.clone();
            // Each message counts against the caller's rate limit, like a call of its own.
            if let Some(key) = &key
                && let Err(wait) = service.streams.rate.check(key)
            {
                let status = ServiceError::ResourceExhausted(format!(
                    "rate limit exceeded: retry after {} s",
                    wait.as_secs().max(1)
                ));
                if send(&replies, &mut shutdown, failure(user_id, &status.into())).await {
                    continue;
                }
                return;
            }
            // Every message is judged against the caller as they stand now: a right that is
            // gone answers this message and ends the stream.
            let now = if until_passed(expires) {
                Err(super::watch::expired())
            } else {
                crate::auth::current(&caller, token_basis, &service.store).await
            };
            let caller = match now {
                Ok(caller) => caller,
                Err(err) => {
                    let status = Status::from(err);
                    if send(&replies, &mut shutdown, failure(user_id, &status)).await {
                        break Err(status);
                    }
                    return;
                }
            };
            let reply = match service.apply_update(&caller, request).await {
                Ok(Updated::Changed(event)) => event_to_pb(event, &caller),
                // Nothing changed, so there is no event: the user as stored.
                Ok(Updated::Unchanged(user)) => pb::UserEvent {
                    user: Some(user_to_pb(&user)),
                    ..Default::default()
                },
                // Refused because the caller lost the role the stream was opened with: the
                // stream ends with this answer.
                Err(err @ ServiceError::PermissionDenied(_)) if caller.role() != opened_as => {
                    let status = Status::from(err);
                    if send(&replies, &mut shutdown, failure(user_id, &status)).await {
                        break Err(status);
                    }
                    return;
                }
                Err(err) => failure(user_id, &Status::from(err)),
            };
            if !send(&replies, &mut shutdown, reply).await {
                return;
            }
        };
        // A client that stopped reading cannot take even this: do not wait on it for long.
        let _ = tokio::time::timeout(LAST_WORD, replies.send(last)).await;
    });
    Box::pin(ReceiverStream::new(receiver))
}

/// Queues a reply; false when the client is gone or shutdown began while it was not reading.
async fn send(
    replies: &mpsc::Sender<Result<pb::UserEvent, Status>>,
    shutdown: &mut crate::shutdown::Shutdown,
    reply: pb::UserEvent,
) -> bool {
    tokio::select! {
        sent = replies.send(Ok(reply)) => sent.is_ok(),
        () = shutdown.triggered() => false,
    }
}

fn until_passed(instant: Option<Instant>) -> bool {
    instant.is_some_and(|instant| instant <= Instant::now())
}
