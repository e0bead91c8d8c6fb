//! The protobuf codec the generated services use: prost, with small per-call buffers.
//!
//! tonic's default codec gives every call an 8 KiB encode and an 8 KiB decode buffer, held for
//! as long as a stream stays open: 16 KiB per watcher before anything else. Our messages are a
//! few hundred bytes, so 1 KiB buffers suffice; a larger message grows its buffer as needed.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial encode/decode buffer per call.
const BUFFER_BYTES: usize = 1024;
/// Encoded bytes a stream may buffer before it yields to the runtime (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

#[derive(Debug, Clone)]
pub struct CompactCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CompactCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

impl<T, U> Codec for CompactCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

/// tonic's words for a request it could not decode (prost's error follows them).
const UNDECODABLE: &str = "failed to decode Protobuf message: ";
/// tonic's words for a request body that ended inside a message.
const CUT_SHORT: &str = "Unexpected EOF decoding stream.";
/// tonic's words for a compressed request that does not decompress.
const CORRUPT: &str = "Error decompressing: ";
/// tonic-web's words for a gRPC-Web request body it could not decode (text that is not
/// base64); its reason follows them.
const WEB_UNDECODABLE: &str = "tonic-web: ";
/// tonic's words for a request over `max_decoding_message_size`.
const TOO_LARGE: &str = "Error, decoded message length too large: ";
/// tonic's words for a frame whose flag is neither 0 nor 1 (a gRPC-Web trailers frame, 0x80,
/// sent by a client is one).
const UNKNOWN_FLAG: &str = "protocol error: received message with invalid compression flag: ";

/// The caller's fault, as the caller should hear it, when `status` is tonic's answer to a
/// request it could not read: an undecodable body, one cut short, one that does not decompress,
/// a frame whose flag is no flag, or a gRPC-Web text body that is not base64 (tonic says
/// INTERNAL; the bytes were the caller's, so INVALID_ARGUMENT, naming the field where the
/// decoder does), or one over the size limit (tonic says OUT_OF_RANGE; gRPC's code for a
/// message over the limit is RESOURCE_EXHAUSTED). `None` for every other status: a
/// compressed flag without an encoding stays INTERNAL, as gRPC's compression spec requires.
pub fn as_caller_fault(code: tonic::Code, message: &str) -> Option<tonic::Status> {
    match code {
        tonic::Code::Internal => {
            let why = message
                .strip_prefix(UNDECODABLE)
                .or_else(|| (message == CUT_SHORT).then_some("the body ended inside a message"))
                .or_else(|| message.strip_prefix(CORRUPT))
                .or_else(|| message.strip_prefix(WEB_UNDECODABLE))
                .or_else(|| {
                    message
                        .strip_prefix(UNKNOWN_FLAG)
                        .map(|_| "a frame's flag is neither 0 (a message) nor 1 (compressed)")
                })?;
            Some(tonic::Status::invalid_argument(format!(
                "the request could not be decoded: {}",
                crate::text::echo(why)
            )))
        }
        tonic::Code::OutOfRange => message.strip_prefix(TOO_LARGE).map(|size| {
            tonic::Status::resource_exhausted(format!(
                "the request is larger than this server accepts (--max-message-bytes): {size}"
            ))
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::as_caller_fault;

    #[test]
    fn requests_tonic_could_not_read_are_the_callers_fault() {
        let not_base64 = as_caller_fault(Code::Internal, "tonic-web: Invalid symbol 42, offset 0.")
            .expect("a gRPC-Web text body that is not base64 is the caller's fault");
        assert_eq!(not_base64.code(), Code::InvalidArgument);

        let undecodable = as_caller_fault(
            Code::Internal,
            "failed to decode Protobuf message: CreateUserRequest.email: invalid string value: data is not UTF-8 encoded",
        )
        .expect("an undecodable body is the caller's fault");
        assert_eq!(undecodable.code(), Code::InvalidArgument);
        assert!(
            undecodable.message().contains("CreateUserRequest.email"),
            "{undecodable:?}"
        );

        let large = as_caller_fault(
            Code::OutOfRange,
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        )
        .expect("an over-size body is the caller's fault");
        assert_eq!(large.code(), Code::ResourceExhausted);
        assert!(large.message().contains("found 5000000 bytes"), "{large:?}");

        let trailers_frame = as_caller_fault(
            Code::Internal,
            "protocol error: received message with invalid compression flag: 128 (valid flags are 0 and 1), while sending request",
        )
        .expect("a frame flag that is no flag is the caller's fault");
        assert_eq!(trailers_frame.code(), Code::InvalidArgument);
        assert!(
            as_caller_fault(
                Code::Internal,
                "protocol error: received message with compressed-flag but no grpc-encoding was specified"
            )
            .is_none(),
            "compressed without an encoding stays INTERNAL"
        );

        assert!(as_caller_fault(Code::Internal, "internal error").is_none());
        assert!(
            as_caller_fault(Code::OutOfRange, "start_revision 3 is no longer retained").is_none()
        );
    }
}
