//! A Connect request body as the one gRPC message it carries: read whole (up to a limit) when
//! the service reads it, unwrapped from its envelope when the call streams, transcoded from
//! JSON when it is JSON, and framed as gRPC frames a message; and the envelopes of streams
//! both ways. A body that breaks a rule is an error the service's decoding reports as the
//! call's status.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http_body::Frame;
use prost_reflect::MessageDescriptor;
use tonic::Status;
use tonic::body::Body;

use super::{Codec, Kind};
use crate::whole_body::{self, BodyLimits};

/// The envelope's header: one byte of flags, four of length (big-endian), as in gRPC.
pub const HEADER_BYTES: usize = 5;
/// Flags of a Connect envelope.
pub const COMPRESSED: u8 = 0x01;
pub const END_STREAM: u8 = 0x02;

/// A Connect request body as the one gRPC frame it means, read and transcoded only when the
/// service reads it.
pub struct RequestBody(Option<BoxFuture<'static, Result<Bytes, Status>>>);

impl RequestBody {
    pub fn new(body: Body, kind: Kind, input: MessageDescriptor, limits: BodyLimits) -> Self {
        Self(Some(Box::pin(async move {
            // A stream's message comes in an envelope, whose header the limit allows for.
            let read = whole_body::read(body, limits.plus(HEADER_BYTES)).await?;
            message(&read, kind, &input).map(|message| grpc_frame(&message))
        })))
    }

    /// A body that fails with `status` when read.
    pub fn refused(status: Status) -> Self {
        Self(Some(Box::pin(std::future::ready(Err(status)))))
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let Some(message) = &mut this.0 else {
            return Poll::Ready(None);
        };
        let message = ready!(message.as_mut().poll(cx));
        this.0 = None;
        Poll::Ready(Some(message.map(Frame::data)))
    }
}

/// The protobuf bytes of the one message a request body carries.
fn message(body: &[u8], kind: Kind, input: &MessageDescriptor) -> Result<Vec<u8>, Status> {
    let payload = if kind.streaming {
        only_envelope(body)?
    } else {
        body
    };
    match kind.codec {
        Codec::Proto => Ok(payload.to_vec()),
        Codec::Json => {
            // An empty unary body is the empty message, as Connect allows.
            let json = if payload.is_empty() { b"{}" } else { payload };
            crate::json::to_protobuf(input, json).map_err(|err| {
                Status::invalid_argument(format!(
                    "the request body is not a {} in JSON: {err}",
                    input.full_name()
                ))
            })
        }
    }
}

/// The payload of a streaming request's envelope: a server-streaming call sends exactly one.
fn only_envelope(body: &[u8]) -> Result<&[u8], Status> {
    let Some((flags, payload, rest)) = split_envelope(body) else {
        return Err(Status::invalid_argument(
            "the request body is not one whole Connect envelope (5-byte header, then the message)",
        ));
    };
    if flags & COMPRESSED != 0 {
        return Err(Status::unimplemented(
            "compressed messages are not supported: send them uncompressed",
        ));
    }
    if flags != 0 || !rest.is_empty() {
        return Err(Status::invalid_argument(
            "a server-streaming call sends one request message and nothing after it",
        ));
    }
    Ok(payload)
}

/// The flags, payload and the rest after the first envelope in `bytes`, when it is whole.
pub fn split_envelope(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&flags, rest) = bytes.split_first()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    (len <= rest.len()).then(|| (flags, &rest[..len], &rest[len..]))
}

/// `payload` in an envelope with `flags`.
pub fn envelope(flags: u8, payload: &[u8], into: &mut BytesMut) {
    into.reserve(HEADER_BYTES + payload.len());
    into.put_u8(flags);
    into.put_u32(u32::try_from(payload.len()).expect("a message under 4 GiB"));
    into.put_slice(payload);
}

fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = BytesMut::new();
    envelope(0, message, &mut frame);
    frame.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(codec: Codec, streaming: bool) -> Kind {
        Kind { codec, streaming }
    }

    fn input() -> MessageDescriptor {
        crate::json::message("userservice.GetUserRequest")
    }

    #[test]
    fn a_json_body_becomes_the_protobuf_message_it_names() {
        let bytes = message(br#"{"userId":"abc"}"#, kind(Codec::Json, false), &input()).unwrap();
        let decoded: crate::pb::GetUserRequest = prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.user_id, "abc");
    }

    #[test]
    fn an_empty_json_body_is_the_empty_message() {
        assert_eq!(
            message(b"", kind(Codec::Json, false), &input()).unwrap(),
            b""
        );
    }

    #[test]
    fn json_that_does_not_fit_the_message_is_an_invalid_argument_naming_the_type() {
        for body in [&b"{"[..], br#"{"user_id":1}"#, br#"{"nope":"x"}"#] {
            let status = message(body, kind(Codec::Json, false), &input()).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{body:?}");
        }
        let status = message(br#"{"nope":"x"}"#, kind(Codec::Json, false), &input()).unwrap_err();
        assert!(
            status.message().contains("userservice.GetUserRequest"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_streaming_request_carries_exactly_one_uncompressed_envelope() {
        let mut one = BytesMut::new();
        envelope(0, br#"{"userId":"abc"}"#, &mut one);
        assert!(message(&one, kind(Codec::Json, true), &input()).is_ok());

        let mut two = one.clone();
        envelope(0, b"{}", &mut two);
        let mut compressed = BytesMut::new();
        envelope(COMPRESSED, b"{}", &mut compressed);
        for (body, code) in [
            (&two[..], tonic::Code::InvalidArgument),
            (&one[..one.len() - 1], tonic::Code::InvalidArgument),
            (&compressed[..], tonic::Code::Unimplemented),
        ] {
            let status = message(body, kind(Codec::Json, true), &input()).unwrap_err();
            assert_eq!(status.code(), code, "{body:?}");
        }
    }
}
