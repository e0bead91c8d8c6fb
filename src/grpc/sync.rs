//! SyncUsers: one reply per inbound update, in order; a failed update is answered and the
//! stream goes on.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::convert::{event_to_pb, user_to_pb};
use super::{EventStream, UserServiceImpl};
use crate::auth::Caller;
use crate::error::ServiceError;
use crate::pb;
use crate::storage::Updated;

const CLIENT_BUFFER: usize = 64;

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

pub fn start(
    service: UserServiceImpl,
    caller: Caller,
    mut inbound: Streaming<pb::UpdateUserRequest>,
) -> EventStream {
    let (replies, receiver) = mpsc::channel(CLIENT_BUFFER);
    let mut shutdown = service.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                message = inbound.message() => message,
                () = replies.closed() => return,
                () = shutdown.triggered() => {
                    let err = ServiceError::ShuttingDown(String::new());
                    let _ = replies.send(Err(err.into())).await;
                    return;
                }
            };
            let reply = match message {
                Ok(Some(request)) => {
                    let user_id = request.user_id.clone();
                    match service.apply_update(&caller, request).await {
                        Ok(Updated::Changed(event)) => event_to_pb(event),
                        // Nothing changed, so there is no event: the user as stored.
                        Ok(Updated::Unchanged(user)) => pb::UserEvent {
                            user: Some(user_to_pb(user)),
                            ..Default::default()
                        },
                        Err(err) => failure(user_id, &Status::from(err)),
                    }
                }
                // The client is done sending: the replies are complete.
                Ok(None) => return,
                // A message that could not be decoded has no user_id; answer it all the same.
                Err(status) => failure(String::new(), &status),
            };
            if replies.send(Ok(reply)).await.is_err() {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}
