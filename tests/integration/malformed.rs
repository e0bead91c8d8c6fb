//! Malformed gRPC framing sent with a bare HTTP/2 client to every method: each call gets a
//! gRPC status, the server keeps serving, and no data changes.

use tonic::Code;
use user_service::domain::Role;
use user_service::pb::ListUsersRequest;

use crate::helpers::{TestApp, create};
use crate::raw;

const METHODS: [&str; 16] = [
    "/userservice.UserService/CreateUser",
    "/userservice.UserService/GetUser",
    "/userservice.UserService/LookupUser",
    "/userservice.UserService/UpdateUser",
    "/userservice.UserService/DeleteUser",
    "/userservice.UserService/ListUsers",
    "/userservice.UserService/WatchUsers",
    "/userservice.UserService/BatchCreateUsers",
    "/userservice.UserService/SyncUsers",
    "/userservice.AuthService/Login",
    "/userservice.AuthService/Refresh",
    "/userservice.AuthService/Logout",
    "/userservice.AuthService/EndSessions",
    "/userservice.AuthService/ChangePassword",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

const LIMIT: usize = 64 * 1024;

/// What is wrong, the request body, and headers besides the usual ones.
type Case = (&'static str, Vec<u8>, Vec<(&'static str, &'static str)>);

#[tokio::test]
async fn malformed_frames_get_a_status_and_change_nothing() {
    let app = TestApp::spawn_with(|settings| settings.max_message_bytes = LIMIT).await;
    let mut admin = app.client().await;
    create(&mut admin, "bystander").await;
    let count = || async {
        app.client()
            .await
            .list_users(ListUsersRequest::default())
            .await
            .expect("the server keeps serving")
            .into_inner()
            .total_count
    };
    let before = count().await;
    let bearer = format!("Bearer {}", app.token("fuzzer", Role::Admin));
    let too_long = (u32::try_from(LIMIT).unwrap() + 1).to_be_bytes();
    let cases: Vec<Case> = vec![
        ("a truncated length prefix", vec![0, 0, 0], vec![]),
        (
            "a length past the limit",
            [&[0u8][..], &too_long, &[1, 2, 3]].concat(),
            vec![],
        ),
        (
            "the compressed flag without grpc-encoding",
            vec![1, 0, 0, 0, 2, 0xaa, 0xbb],
            vec![],
        ),
        (
            "the compressed flag with an unknown grpc-encoding",
            vec![1, 0, 0, 0, 2, 0xaa, 0xbb],
            vec![("grpc-encoding", "bogus")],
        ),
        (
            "bytes that are no protobuf",
            vec![0, 0, 0, 0, 3, 0xff, 0xff, 0xff],
            vec![],
        ),
        (
            "a stream that ends mid-message",
            vec![0, 0, 0, 0, 10, 1, 2, 3],
            vec![],
        ),
        (
            "the wrong content-type",
            vec![0, 0, 0, 0, 0],
            vec![("content-type", "text/plain")],
        ),
    ];
    for method in METHODS {
        for (case, body, extra) in &cases {
            let mut headers = vec![("authorization", bearer.as_str())];
            headers.extend(extra.iter().copied());
            let (status, answer) = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                raw::exchange(app.addr, method, &headers, body.clone().into(), true),
            )
            .await
            .unwrap_or_else(|_| panic!("{method}, {case}: no answer"));
            // Undecodable messages get INTERNAL from tonic's codec, as from grpc-go's; the rest
            // say what was wrong. None is taken as a request. BatchCreateUsers and SyncUsers
            // answer a broken message in their replies, as they answer any failed item.
            if status.code() == Code::Ok {
                assert!(
                    reports_a_failure(method, &answer),
                    "{method}, {case}: OK without a failure reported"
                );
            }
            assert_ne!(status.code(), Code::Unknown, "{method}, {case}: {status:?}");
        }
    }
    assert_eq!(count().await, before, "no data changed");
}

/// Whether a streaming method's OK answer reports that the malformed message failed.
fn reports_a_failure(method: &str, answer: &[u8]) -> bool {
    use prost::Message;
    let Some(message) = answer.get(5..) else {
        return false;
    };
    match method {
        "/userservice.UserService/BatchCreateUsers" => {
            user_service::pb::BatchCreateUsersResponse::decode(message)
                .is_ok_and(|response| response.users.is_empty() && !response.errors.is_empty())
        }
        "/userservice.UserService/SyncUsers" => {
            user_service::pb::UserEvent::decode(message).is_ok_and(|reply| reply.failure.is_some())
        }
        _ => false,
    }
}
