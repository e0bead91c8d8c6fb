//! A request body read whole, up to a limit, before the call is served. Over HTTP/1.1 a call
//! refused without reading its body (authentication refuses so) leaves the connection unable
//! to carry the next request: gRPC-Web and Connect bodies there are read first. What went
//! wrong reading is kept, and given when the service reads the body, so the refusal comes
//! after authentication and the rate limit, as the service's own decoding error would.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt as _;
use tonic::Status;
use tonic::body::Body;

/// A body already read: its bytes, or why there are none.
pub struct ReadBody(Option<Result<Bytes, Status>>);

impl ReadBody {
    pub fn new(read: Result<Bytes, Status>) -> Self {
        Self(Some(read))
    }

    /// `body`, read whole, up to `max_bytes`.
    pub async fn read(body: Body, max_bytes: usize) -> Self {
        Self::new(read(body, max_bytes).await.map(BytesMut::freeze))
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

/// The whole of `body`, up to `max_bytes`.
pub async fn read(mut body: Body, max_bytes: usize) -> Result<BytesMut, Status> {
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
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
