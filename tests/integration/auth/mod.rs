//! Authentication and authorization through the real server, by concern: the access policy,
//! tokens, Login, limits, and the access log.

mod access_log;
mod imported;
pub mod keys;
mod limits;
pub mod login;
mod policy;
mod recovery;
mod sessions;
mod strength;
mod tokens;
mod totp;

use tonic::Code;
use user_service::pb::{
    CreateUserRequest, DeleteUserRequest, GetUserRequest, ListUsersRequest, UpdateUserRequest,
    WatchUsersRequest,
};

use crate::helpers::Client;
pub use crate::helpers::create_with_role;

/// One call, made to see which code it gets.
pub enum Op {
    Get(String),
    List,
    WatchAll,
    WatchOnly(String),
    Update(UpdateUserRequest),
    Delete(String),
    Create(CreateUserRequest),
    Batch(Vec<CreateUserRequest>),
    Sync(UpdateUserRequest),
}

pub async fn attempt(client: &mut Client, op: Op) -> Code {
    let code = |result: Result<(), tonic::Status>| result.err().map_or(Code::Ok, |s| s.code());
    match op {
        Op::Get(user_id) => code(client.get_user(GetUserRequest { user_id }).await.map(drop)),
        Op::List => code(
            client
                .list_users(ListUsersRequest::default())
                .await
                .map(drop),
        ),
        Op::WatchAll => {
            let request = WatchUsersRequest {
                include_all: true,
                ..Default::default()
            };
            code(client.watch_users(request).await.map(drop))
        }
        Op::WatchOnly(id) => {
            let request = WatchUsersRequest {
                user_ids: vec![id],
                ..Default::default()
            };
            code(client.watch_users(request).await.map(drop))
        }
        Op::Update(request) => code(client.update_user(request).await.map(drop)),
        Op::Delete(user_id) => code(
            client
                .delete_user(DeleteUserRequest {
                    user_id,
                    etag: None,
                })
                .await
                .map(drop),
        ),
        Op::Create(request) => code(client.create_user(request).await.map(drop)),
        Op::Batch(requests) => {
            let response = client
                .batch_create_users(tokio_stream::iter(requests))
                .await;
            code(response.map(drop))
        }
        Op::Sync(request) => {
            let mut replies = client
                .sync_users(tokio_stream::iter([request]))
                .await
                .expect("the sync stream opens")
                .into_inner();
            let reply = replies
                .message()
                .await
                .unwrap()
                .expect("one reply per update");
            reply
                .failure
                .map_or(Code::Ok, |failure| Code::from_i32(failure.code))
        }
    }
}

pub fn update(user_id: &str) -> UpdateUserRequest {
    UpdateUserRequest {
        user_id: user_id.into(),
        ..Default::default()
    }
}
