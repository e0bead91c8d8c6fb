//! Calls made with a bare HTTP/2 client, for what a tonic client would not send or would
//! answer itself (its own timer ends a call at the caller's deadline before the server's
//! answer arrives, so only a bare client sees what the server says).

use std::net::SocketAddr;

use bytes::Bytes;
use prost::Message;
use tokio::net::TcpStream;
use tonic::Status;

/// A protobuf message in gRPC's length-prefixed framing, uncompressed.
pub fn frame(message: &impl Message) -> Bytes {
    crate::helpers::grpc_frame(message).into()
}

/// Sends `body` to `path` with `headers` (besides the gRPC ones) and returns the status the
/// server ended the call with. With `end_stream` false the request stays open, as a client
/// that has more to send would leave it.
pub async fn call(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    end_stream: bool,
) -> Status {
    exchange(addr, path, headers, body, end_stream).await.0
}

/// As `call`, and also the answer's body (its length-prefixed messages, as sent).
pub async fn exchange(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    end_stream: bool,
) -> (Status, Vec<u8>) {
    let tcp = TcpStream::connect(addr).await.expect("the server accepts");
    let (client, connection) = h2::client::handshake(tcp)
        .await
        .expect("an HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("the connection is ready");
    let mut request = http::Request::post(format!("http://{addr}{path}")).header("te", "trailers");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        request = request.header("content-type", "application/grpc");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut send) = client
        .send_request(request.body(()).unwrap(), false)
        .expect("the request is sent");
    send.send_data(body, end_stream).expect("the body is sent");
    let response = response.await.expect("the server answers");
    // A trailers-only answer carries the status in its headers.
    if let Some(status) = Status::from_header_map(response.headers()) {
        return (status, Vec::new());
    }
    let mut body = response.into_body();
    let mut received = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.expect("the body arrives");
        let _ = body.flow_control().release_capacity(data.len());
        received.extend_from_slice(&data);
    }
    let trailers = body.trailers().await.expect("the trailers arrive");
    drop(send);
    let status = trailers
        .as_ref()
        .and_then(Status::from_header_map)
        .expect("the answer ends with a grpc-status");
    (status, received)
}

/// Starts a call, sends `body` without ending the request, then cancels it (RST_STREAM
/// CANCEL, as gRPC clients do) and closes the connection: a client that gave up mid-call.
pub async fn abandon(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: Bytes) {
    let tcp = TcpStream::connect(addr).await.expect("the server accepts");
    let (client, connection) = h2::client::handshake(tcp)
        .await
        .expect("an HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("the connection is ready");
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (_response, mut send) = client
        .send_request(request.body(()).unwrap(), false)
        .expect("the request is sent");
    send.send_data(body, false).expect("the body is sent");
    // Let the server start the call, then hang up.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    send.send_reset(h2::Reason::CANCEL);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    connection.abort();
}
