//! Every compressed answer says it is: under concurrent load on shared connections, with gzip
//! and zstd asked for by turns and watch streams cancelled mid-flight, each message the server
//! sends has the compressed flag set exactly when the answer's `grpc-encoding` names what the
//! caller accepted, and a message sent plain is a plain protobuf message, never compressed
//! bytes with the flag clear. Checked frame by frame with a bare HTTP/2 client, and through
//! grpcio's client (gRPC's C core); tonic's own client, compressing both ways, is
//! `server::gzip_and_zstd_are_accepted_and_used_for_responses_on_request`.

use std::net::SocketAddr;

use bytes::Bytes;
use prost::Message;
use tokio::net::TcpStream;
use user_service::pb::{self, GetUserRequest, ListUsersRequest, UpdateUserRequest};

use crate::helpers::{TestApp, create_many};
use crate::raw::frame;

const CONNECTIONS: usize = 4;
const CALLERS_PER_CONNECTION: usize = 16;
const CALLS_PER_CALLER: usize = 25;

/// What one answer was made of, as it came off the wire.
struct Answer {
    encoding: Option<String>,
    /// Each message: its compressed flag and its bytes.
    messages: Vec<(u8, Vec<u8>)>,
}

fn messages(body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = body;
    while rest.len() >= 5 {
        let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let Some(payload) = rest.get(5..5 + length) else {
            break;
        };
        out.push((rest[0], payload.to_vec()));
        rest = &rest[5 + length..];
    }
    out
}

/// Sends one call on `client` asking for `accept` and reads its answer; with `cancel_after`,
/// resets the stream after that many messages (a watcher that goes away).
async fn send(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    path: &str,
    bearer: &str,
    accept: &str,
    body: Bytes,
    cancel_after: Option<usize>,
) -> Answer {
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-accept-encoding", accept)
        .header("authorization", bearer)
        .body(())
        .unwrap();
    let mut ready = client
        .clone()
        .ready()
        .await
        .expect("the connection takes a call");
    let (response, mut sender) = ready.send_request(request, false).expect("sent");
    sender.send_data(body, true).expect("the body is sent");
    let response = response.await.expect("an answer");
    let encoding = response
        .headers()
        .get("grpc-encoding")
        .map(|value| value.to_str().unwrap().to_owned());
    let mut body = response.into_body();
    let mut received = Vec::new();
    while let Some(data) = body.data().await {
        let Ok(data) = data else { break };
        let _ = body.flow_control().release_capacity(data.len());
        received.extend_from_slice(&data);
        if let Some(limit) = cancel_after
            && messages(&received).len() >= limit
        {
            sender.send_reset(h2::Reason::CANCEL);
            break;
        }
    }
    Answer {
        encoding,
        messages: messages(&received),
    }
}

/// The checks, for one answer: the flag and the header agree, and plain bytes are protobuf.
fn check(path: &str, accept: &str, answer: &Answer, decodes: impl Fn(&[u8]) -> bool) {
    for (flag, payload) in &answer.messages {
        match flag {
            1 => assert_eq!(
                answer.encoding.as_deref(),
                Some(accept),
                "{path}: a compressed message, in an answer whose grpc-encoding is {:?}",
                answer.encoding
            ),
            // Compressed bytes with the flag clear would not decode as the answer's message.
            0 => assert!(
                decodes(payload),
                "{path}: a message with the compressed flag clear that is not plain protobuf: {:02x?}",
                &payload[..payload.len().min(8)]
            ),
            other => panic!("{path}: compressed flag {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compressed_message_under_load_and_cancellation_is_flagged_and_named() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let users = create_many(&mut admin, "squeezed", 20).await;
    let bearer = format!(
        "Bearer {}",
        app.token("squeezer", user_service::domain::Role::Admin)
    );
    let mut checked = 0usize;
    let mut compressed = 0usize;
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        let tcp = TcpStream::connect(app.addr).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        connections.push(client);
    }
    let mut callers = Vec::new();
    for (connection, client) in connections.iter().enumerate() {
        for caller in 0..CALLERS_PER_CONNECTION {
            let mut client = client.clone();
            let (addr, bearer) = (app.addr, bearer.clone());
            let users = users.clone();
            callers.push(tokio::spawn(async move {
                let mut counts = (0usize, 0usize);
                for call in 0..CALLS_PER_CALLER {
                    let accept = if (connection + caller + call) % 2 == 0 {
                        "gzip"
                    } else {
                        "zstd"
                    };
                    let user = &users[(caller + call) % users.len()];
                    let (path, body, cancel_after): (&str, Bytes, Option<usize>) = match call % 4 {
                        0 => (
                            "/userservice.UserService/GetUser",
                            frame(&GetUserRequest {
                                user_id: user.id.clone(),
                            }),
                            None,
                        ),
                        1 => (
                            "/userservice.UserService/UpdateUser",
                            frame(&UpdateUserRequest {
                                user_id: user.id.clone(),
                                full_name: Some(format!("Squeezed {connection} {caller} {call}")),
                                ..Default::default()
                            }),
                            None,
                        ),
                        2 => (
                            "/userservice.UserService/ListUsers",
                            frame(&ListUsersRequest {
                                page_size: 10,
                                ..Default::default()
                            }),
                            None,
                        ),
                        _ => (
                            "/userservice.UserService/WatchUsers",
                            frame(&pb::WatchUsersRequest {
                                include_all: true,
                                start_revision: 1,
                                ..Default::default()
                            }),
                            Some(5),
                        ),
                    };
                    let answer =
                        send(&mut client, addr, path, &bearer, accept, body, cancel_after).await;
                    let decodes = |bytes: &[u8]| match call % 4 {
                        0 => pb::GetUserResponse::decode(bytes).is_ok_and(|r| r.user.is_some()),
                        1 => pb::UpdateUserResponse::decode(bytes).is_ok_and(|r| r.user.is_some()),
                        2 => {
                            pb::ListUsersResponse::decode(bytes).is_ok_and(|r| !r.users.is_empty())
                        }
                        _ => pb::UserEvent::decode(bytes).is_ok_and(|e| e.revision > 0),
                    };
                    check(path, accept, &answer, decodes);
                    counts.0 += answer.messages.len();
                    counts.1 += answer
                        .messages
                        .iter()
                        .filter(|(flag, _)| *flag == 1)
                        .count();
                }
                counts
            }));
        }
    }
    for caller in callers {
        let (messages, flagged) = caller.await.expect("every answer checks out");
        checked += messages;
        compressed += flagged;
    }
    println!("{checked} messages checked, {compressed} of them compressed");
    assert!(
        checked >= CONNECTIONS * CALLERS_PER_CONNECTION * CALLS_PER_CALLER,
        "every call answered"
    );
    assert_eq!(compressed, checked, "every answer is compressed as asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_reads_every_compressed_answer_as_protobuf() {
    let has_grpcio = std::process::Command::new("python3")
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        has_grpcio,
        "Python's grpcio is missing: make test installs it (python3 -m pip install grpcio)"
    );
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let users = create_many(&mut admin, "grpcio", 10).await;
    let token = app.token("grpcio-client", user_service::domain::Role::Admin);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/compat/grpcio_compression.py"
    );
    let mut command = std::process::Command::new("python3");
    command
        .arg(script)
        .arg(app.addr.to_string())
        .arg(token)
        .args(users.iter().map(|user| user.id.clone()));
    let output = tokio::task::spawn_blocking(move || command.output().expect("python3 runs"))
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    println!("{said}");
    assert!(
        output.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains(" 0 not plain protobuf"), "{said}");
}
