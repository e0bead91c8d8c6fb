//! A request body read whole, up to a limit, before the call is served. Over HTTP/1.1 a call
//! refused without reading its body (authentication refuses so) leaves the connection unable
//! to carry the next request: gRPC-Web and Connect bodies there are read first. What went
//! wrong reading is kept, and given when the service reads the body, so the refusal comes
//! after authentication and the rate limit, as the service's own decoding error would. A
//! body has `--request-body-timeout` to arrive whole: one that stops halfway holds its
//! connection no longer.

use std::error::Error as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt as _;
use tonic::Status;
use tonic::body::Body;

/// How much of a request body is read, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

impl BodyLimits {
    /// The same time, `extra` bytes more (a frame or envelope header).
    pub fn plus(self, extra: usize) -> Self {
        Self {
            max_bytes: self.max_bytes + extra,
            ..self
        }
    }
}

/// The refusal of a body that did not arrive in time.
pub fn too_slow(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the request body did not arrive within {} of its start (--request-body-timeout): send \
         the whole message at once",
        humantime::format_duration(timeout)
    ))
}

/// tonic's words for an error of an HTTP/2 stream (a reset, the connection closing).
const H2_ERROR: &str = "h2 protocol error: ";

/// A request body's read error as the caller should hear it: bytes that break HTTP/1.1's
/// framing (a chunk size that is no number, or overflows) are the caller's fault,
/// INVALID_ARGUMENT; every other error is kept.
pub fn as_heard(error: Status) -> Status {
    match malformed_framing(&error) {
        Some(framing) => Status::invalid_argument(format!(
            "the request body could not be read: {}",
            crate::text::echo(&framing.to_string())
        )),
        None => error,
    }
}

/// Whether a request body's read error is its connection ending, so no one hears the answer:
/// HTTP/2's stream errors, and HTTP/1.1's connection closing or ending inside the body. A
/// refusal made here (too large, too slow, not decodable) has no transport error under it,
/// and bytes that break the framing are the caller's, heard as `as_heard` says.
pub fn connection_ended(error: &Status) -> bool {
    error.message().starts_with(H2_ERROR)
        || (error.source().is_some() && malformed_framing(error).is_none())
}

/// The I/O error under `error` that says the bytes were not HTTP/1.1's framing (hyper's body
/// decoder says so with these kinds; an ended connection is `UnexpectedEof` and the like).
fn malformed_framing(error: &Status) -> Option<&std::io::Error> {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            )
            .then_some(io);
        }
        source = cause.source();
    }
    None
}

/// A body already read: its bytes, or why there are none.
pub struct ReadBody(Option<Result<Bytes, Status>>);

impl ReadBody {
    pub fn new(read: Result<Bytes, Status>) -> Self {
        Self(Some(read))
    }

    /// `body`, read whole, within `limits`.
    pub async fn read(body: Body, limits: BodyLimits) -> Self {
        Self::new(read(body, limits).await.map(BytesMut::freeze))
    }
}

impl http_body::Body for ReadBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Poll::Ready(self.get_mut().0.take().map(|read| read.map(Frame::data)))
    }
}

/// The whole of `body`, within `limits`.
pub async fn read(body: Body, limits: BodyLimits) -> Result<BytesMut, Status> {
    tokio::time::timeout(limits.timeout, read_all(body, limits.max_bytes))
        .await
        .unwrap_or_else(|_| Err(too_slow(limits.timeout)))
}

async fn read_all(mut body: Body, max_bytes: usize) -> Result<BytesMut, Status> {
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(as_heard)?.into_data() else {
            continue;
        };
        if read.len() + data.len() > max_bytes {
            return Err(Status::resource_exhausted(format!(
                "the request is larger than this server accepts (--max-message-bytes): more \
                 than {max_bytes} bytes"
            )));
        }
        read.extend_from_slice(&data);
    }
    Ok(read)
}
