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
    let app = TestApp::spawn_with(|settings| settings.limits.max_message_bytes = LIMIT).await;
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
            // None is taken as a request, and none is answered as the server's fault.
            // BatchCreateUsers and SyncUsers answer a broken message in their replies, as they
            // answer any failed item.
            if status.code() == Code::Ok {
                assert!(
                    reports_a_failure(method, &answer),
                    "{method}, {case}: OK without a failure reported"
                );
            }
            // INTERNAL only where gRPC's compression spec requires it: a compressed flag
            // without an encoding.
            if !case.contains("compressed flag") {
                assert!(
                    !matches!(status.code(), Code::Unknown | Code::Internal),
                    "{method}, {case}: {status:?}"
                );
            }
            assert_ne!(status.code(), Code::Unknown, "{method}, {case}: {status:?}");
            // The caller's undecodable bytes are the caller's fault, and say so.
            let expected = match *case {
                "bytes that are no protobuf" | "a stream that ends mid-message" => {
                    Some(Code::InvalidArgument)
                }
                // --max-message-bytes is the user and auth services' limit; health keeps
                // tonic's 4 MiB, past which this body is only cut short.
                "a length past the limit" if !method.starts_with("/grpc.health") => {
                    Some(Code::ResourceExhausted)
                }
                _ => None,
            };
            if let Some(expected) = expected
                && status.code() != Code::Ok
            {
                assert_eq!(status.code(), expected, "{method}, {case}: {status:?}");
            }
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

/// A small deterministic generator (xorshift): the same mutations on every run.
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `message` with one mutation: a flipped byte, a byte set to 0xff, an inserted byte, a
    /// dropped byte, a truncation, or a run of invalid UTF-8 where a string was.
    fn mutate(&mut self, message: &[u8]) -> Vec<u8> {
        let mut bytes = message.to_vec();
        let at = self.below(bytes.len());
        match self.below(6) {
            0 if !bytes.is_empty() => bytes[at] ^= 1 << self.below(8),
            1 if !bytes.is_empty() => bytes[at] = 0xff,
            2 => bytes.insert(at, self.next() as u8),
            3 if !bytes.is_empty() => {
                bytes.remove(at);
            }
            4 => bytes.truncate(at),
            _ => {
                if let Some(start) = bytes.iter().position(|b| b.is_ascii_alphabetic()) {
                    let end = (start + 3).min(bytes.len());
                    bytes[start..end].fill(0xc3);
                }
            }
        }
        bytes
    }
}

#[tokio::test]
async fn mutated_bodies_of_every_method_are_the_callers_fault_never_the_servers() {
    use prost::Message;
    use user_service::pb;

    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let user = create(&mut admin, "mutated").await;
    let bearer = format!("Bearer {}", app.token("fuzzer", Role::Admin));
    let valid: Vec<(&str, Vec<u8>)> = vec![
        (
            METHODS[0],
            crate::helpers::new_user("mutant").encode_to_vec(),
        ),
        (
            METHODS[1],
            pb::GetUserRequest {
                user_id: user.id.clone(),
            }
            .encode_to_vec(),
        ),
        (
            METHODS[2],
            pb::LookupUserRequest {
                key: Some(pb::lookup_user_request::Key::Username("mutated".into())),
            }
            .encode_to_vec(),
        ),
        (
            METHODS[3],
            pb::UpdateUserRequest {
                user_id: user.id.clone(),
                full_name: Some("Changed Name".into()),
                metadata: [("team".to_owned(), "blue".to_owned())].into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            METHODS[4],
            pb::DeleteUserRequest {
                user_id: uuid::Uuid::nil().to_string(),
                etag: Some("7".into()),
            }
            .encode_to_vec(),
        ),
        (
            METHODS[5],
            pb::ListUsersRequest {
                page_size: 5,
                query: "mut".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            METHODS[9],
            pb::LoginRequest {
                username: "mutated".into(),
                password: "not the password".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            METHODS[10],
            pb::RefreshRequest {
                refresh_token: "not-a-token".into(),
            }
            .encode_to_vec(),
        ),
        (
            METHODS[12],
            pb::EndSessionsRequest {
                user_id: uuid::Uuid::nil().to_string(),
            }
            .encode_to_vec(),
        ),
        (
            METHODS[13],
            pb::ChangePasswordRequest {
                user_id: uuid::Uuid::nil().to_string(),
                current_password: "old password".into(),
                new_password: "a new password".into(),
            }
            .encode_to_vec(),
        ),
        (
            METHODS[14],
            tonic_health::pb::HealthCheckRequest {
                service: "userservice.UserService".into(),
            }
            .encode_to_vec(),
        ),
    ];
    let mut mutator = Mutator(0x9e37_79b9_7f4a_7c15);
    let mut codes = std::collections::BTreeMap::new();
    for (method, message) in &valid {
        for _ in 0..60 {
            let mutated = mutator.mutate(message);
            let body = [&[0u8][..], &(mutated.len() as u32).to_be_bytes(), &mutated].concat();
            let (status, _) = raw::exchange(
                app.addr,
                method,
                &[("authorization", bearer.as_str())],
                body.into(),
                true,
            )
            .await;
            assert!(
                !matches!(status.code(), Code::Internal | Code::Unknown),
                "{method}, body {mutated:?}: {status:?}"
            );
            if status.message().contains("could not be decoded") {
                assert_eq!(status.code(), Code::InvalidArgument, "{method}: {status:?}");
            }
            assert!(
                !status.message().chars().any(char::is_control),
                "{method}: a control character in {:?}",
                status.message()
            );
            *codes.entry(format!("{:?}", status.code())).or_insert(0) += 1;
        }
    }
    println!("mutated bodies answered: {codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_body_is_logged_as_the_callers_fault_not_a_server_failure() {
    let database = crate::helpers::TestDatabase::new();
    let server = crate::helpers::ServerProcess::start(&database);
    let bearer = format!("Bearer {}", server.token("fuzzer", Role::Admin));
    let (status, _) = raw::exchange(
        server.addr(),
        "/userservice.UserService/CreateUser",
        &[("authorization", bearer.as_str())],
        vec![0, 0, 0, 0, 3, 0xff, 0xff, 0xff].into(),
        true,
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let line = server.wait_for_log("/userservice.UserService/CreateUser");
    assert!(line.contains("InvalidArgument"), "{line}");
    assert!(
        line.contains("\"level\":\"INFO\""),
        "a client error, not a WARN: {line}"
    );
}

/// Sends `head` and `body` over HTTP/1.1 and reads what comes back until the server closes.
async fn http1(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    // A server may close on bytes it cannot frame before its answer is read: the log says
    // what it made of them.
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The one access line of `method`: the caller's fault, logged at INFO, and no WARN or ERROR
/// logged once the server was serving.
fn logged_as_the_callers_fault(server: &crate::helpers::ServerProcess, method: &str) {
    let line = server.wait_for_log(&format!("\"method\":\"{method}\""));
    assert!(line.contains("\"code\":\"InvalidArgument\""), "{line}");
    assert!(line.contains("\"level\":\"INFO\""), "{line}");
    let log = server.log.lock().unwrap().clone();
    let serving = log
        .iter()
        .position(|line| line.contains("\"message\":\"serving\""))
        .expect("the server logged that it serves");
    let faults: Vec<&String> = log[serving..]
        .iter()
        .filter(|line| line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(
        faults.is_empty(),
        "a client's bytes were logged as a server fault: {faults:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_size_that_overflows_is_the_callers_fault() {
    for content_type in ["application/json", "application/grpc-web+proto"] {
        let database = crate::helpers::TestDatabase::new();
        let server = crate::helpers::ServerProcess::start(&database);
        let head = format!(
            "POST /userservice.UserService/GetUser HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n",
            server.addr(),
            server.token("fuzzer", Role::Admin)
        );
        let answer = http1(server.addr(), &head, b"FFFFFFFFFFFFFFFFFFFF\r\n").await;
        if !answer.is_empty() {
            assert!(
                answer.contains("invalid_argument") || answer.contains("grpc-status: 3"),
                "{content_type}: {answer}"
            );
        }
        logged_as_the_callers_fault(&server, "/userservice.UserService/GetUser");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_web_frame_flag_that_is_neither_message_nor_compressed_is_invalid_argument() {
    let database = crate::helpers::TestDatabase::new();
    let server = crate::helpers::ServerProcess::start(&database);
    let head = format!(
        "POST /userservice.UserService/GetUser HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/grpc-web+proto\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
        server.addr(),
        server.token("fuzzer", Role::Admin)
    );
    let answer = http1(server.addr(), &head, &[0x80, 0, 0, 0, 0]).await;
    assert!(answer.contains("grpc-status: 3"), "{answer}");
    assert!(
        answer.contains("flag"),
        "the message names the rule: {answer}"
    );
    logged_as_the_callers_fault(&server, "/userservice.UserService/GetUser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_text_that_is_not_base64_is_invalid_argument() {
    let database = crate::helpers::TestDatabase::new();
    let server = crate::helpers::ServerProcess::start(&database);
    let body = b"!!!! not base64 !!!!";
    let head = format!(
        "POST /userservice.UserService/GetUser HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/grpc-web-text\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.addr(),
        server.token("fuzzer", Role::Admin),
        body.len()
    );
    let answer = http1(server.addr(), &head, body).await;
    assert!(!answer.is_empty(), "the caller hears why");
    logged_as_the_callers_fault(&server, "/userservice.UserService/GetUser");
}
