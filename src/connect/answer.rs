//! A gRPC answer as Connect's: a unary answer as the bare message (or an error as an HTTP
//! status and a JSON body), a stream as enveloped messages ending with an end-of-stream
//! envelope that carries the status and trailers.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use http_body::Frame;
use http_body_util::BodyExt as _;
use prost_reflect::MessageDescriptor;
use serde_json::{Map, Value, json};
use tonic::body::Body;
use tonic::{Code, Status};

use super::envelope::{END_STREAM, HEADER_BYTES, envelope, split_envelope};
use super::{Codec, Kind, code_name, encode_output, http_status};

/// A unary gRPC answer as Connect's.
pub async fn unary(
    response: http::Response<Body>,
    kind: Kind,
    output: &MessageDescriptor,
) -> http::Response<Body> {
    let (parts, body) = response.into_parts();
    // A trailers-only answer: the status is in the headers, and no message came.
    if let Some(status) = Status::from_header_map(&parts.headers) {
        let status = if status.code() == Code::Ok {
            Status::internal("the answer carried no message")
        } else {
            status
        };
        return error_response(&status, Some(&parts.headers));
    }
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(status) => return error_response(&status, Some(&parts.headers)),
    };
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    let status = Status::from_header_map(&trailers)
        .unwrap_or_else(|| Status::internal("the answer ended without a status"));
    if status.code() != Code::Ok {
        let mut response = error_response(&status, Some(&parts.headers));
        put_trailers(&trailers, response.headers_mut());
        return response;
    }
    let message = match split_envelope(&data) {
        Some((0, payload, [])) => encode_output(kind.codec, output, data.slice_ref(payload)),
        _ => Err(Status::internal(
            "the answer was not one uncompressed message",
        )),
    };
    let message = match message {
        Ok(message) => message,
        Err(status) => return error_response(&status, Some(&parts.headers)),
    };
    let mut response = http::Response::new(Body::new(http_body_util::Full::new(message)));
    let headers = response.headers_mut();
    copy_metadata(&parts.headers, headers);
    put_trailers(&trailers, headers);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kind.content_type()),
    );
    response
}

/// A server-streaming gRPC answer as Connect's: HTTP 200, the messages in envelopes, then
/// the end-of-stream envelope with the status.
pub fn stream(
    response: http::Response<Body>,
    kind: Kind,
    output: MessageDescriptor,
) -> http::Response<Body> {
    let (parts, body) = response.into_parts();
    let body = match Status::from_header_map(&parts.headers) {
        // Trailers-only: the stream ended before it began.
        Some(status) => StreamBody::Ending(end_of_stream(&status, &parts.headers)),
        None => StreamBody::new(body, kind, output),
    };
    let mut response = http::Response::new(Body::new(body));
    let headers = response.headers_mut();
    copy_metadata(&parts.headers, headers);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kind.content_type()),
    );
    response
}

/// A streaming call refused before it began: HTTP 200 and only the end-of-stream envelope.
pub fn stream_refusal(status: &Status, kind: Kind) -> http::Response<Body> {
    let end = end_of_stream(status, &HeaderMap::new());
    let mut response = http::Response::new(Body::new(http_body_util::Full::new(end)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kind.content_type()),
    );
    response
}

/// A unary Connect error: the code's HTTP status, and a JSON body with the code, the
/// message and the details (`metadata` adds the answer's own headers, `retry-after` say).
pub fn error_response(status: &Status, metadata: Option<&HeaderMap>) -> http::Response<Body> {
    let body = serde_json::to_vec(&error_json(status)).expect("a JSON value writes");
    let mut response = http::Response::new(Body::new(http_body_util::Full::new(Bytes::from(body))));
    *response.status_mut() = http_status(status.code());
    let headers = response.headers_mut();
    if let Some(metadata) = metadata {
        copy_metadata(metadata, headers);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `{"code": …, "message": …, "details": [{"type": …, "value": …}]}`: the details are the
/// `google.rpc.Status` details gRPC sends, each by its type name and its bytes in base64.
fn error_json(status: &Status) -> Value {
    let mut error = Map::new();
    error.insert("code".into(), code_name(status.code()).into());
    if !status.message().is_empty() {
        error.insert("message".into(), status.message().into());
    }
    let details = <tonic_types::pb::Status as prost::Message>::decode(status.details())
        .map(|rpc_status| rpc_status.details)
        .unwrap_or_default();
    if !details.is_empty() {
        let details = details
            .iter()
            .map(|any| {
                json!({
                    "type": any.type_url.rsplit('/').next().unwrap_or_default(),
                    "value": base64::engine::general_purpose::STANDARD_NO_PAD.encode(&any.value),
                })
            })
            .collect();
        error.insert("details".into(), Value::Array(details));
    }
    Value::Object(error)
}

/// Headers that are the call's own metadata, not gRPC's framing.
fn is_metadata(name: &HeaderName) -> bool {
    !(name.as_str().starts_with("grpc-")
        || name == header::CONTENT_TYPE
        || name == header::CONTENT_LENGTH
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING)
}

fn copy_metadata(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if is_metadata(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Trailers of a unary answer, as headers prefixed with `trailer-`.
fn put_trailers(trailers: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in trailers {
        if !is_metadata(name) {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(format!("trailer-{name}").as_bytes()) {
            to.append(name, value.clone());
        }
    }
}

/// The end-of-stream envelope: the error unless the status is OK, and the trailers.
fn end_of_stream(status: &Status, trailers: &HeaderMap) -> Bytes {
    let mut end = Map::new();
    if status.code() != Code::Ok {
        end.insert("error".into(), error_json(status));
    }
    let mut metadata = Map::new();
    for (name, value) in trailers {
        if !is_metadata(name) {
            continue;
        }
        let values = metadata
            .entry(name.as_str())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let (Value::Array(values), Ok(value)) = (values, value.to_str()) {
            values.push(value.into());
        }
    }
    if !metadata.is_empty() {
        end.insert("metadata".into(), Value::Object(metadata));
    }
    let json = serde_json::to_vec(&Value::Object(end)).expect("a JSON value writes");
    let mut out = BytesMut::new();
    envelope(END_STREAM, &json, &mut out);
    out.freeze()
}

/// The gRPC frames of a stream as Connect envelopes, as they arrive.
enum StreamBody {
    Streaming {
        inner: Body,
        /// gRPC bytes not yet a whole frame.
        pending: BytesMut,
        codec: Codec,
        output: MessageDescriptor,
    },
    /// The end-of-stream envelope, still to send.
    Ending(Bytes),
    Done,
}

impl StreamBody {
    fn new(inner: Body, kind: Kind, output: MessageDescriptor) -> Self {
        Self::Streaming {
            inner,
            pending: BytesMut::new(),
            codec: kind.codec,
            output,
        }
    }
}

/// The whole frames in `pending`, as envelopes appended to `out`.
fn convert_frames(
    pending: &mut BytesMut,
    codec: Codec,
    output: &MessageDescriptor,
    out: &mut BytesMut,
) -> Result<(), Status> {
    while let Some((flags, payload, _)) = split_envelope(pending) {
        if flags != 0 {
            return Err(Status::internal("the answer sent a compressed message"));
        }
        let len = payload.len();
        let frame = pending.split_to(HEADER_BYTES + len).freeze();
        let message = encode_output(codec, output, frame.slice(HEADER_BYTES..))?;
        envelope(0, &message, out);
    }
    Ok(())
}

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        loop {
            let StreamBody::Streaming {
                inner,
                pending,
                codec,
                output,
            } = this
            else {
                return match std::mem::replace(this, StreamBody::Done) {
                    StreamBody::Ending(end) => Poll::Ready(Some(Ok(Frame::data(end)))),
                    _ => Poll::Ready(None),
                };
            };
            let frame = ready!(Pin::new(inner).poll_frame(cx));
            let mut out = BytesMut::new();
            let ended = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        pending.extend_from_slice(&data);
                        convert_frames(pending, *codec, output, &mut out)
                            .err()
                            .map(|status| (status, HeaderMap::new()))
                    }
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        let status = Status::from_header_map(&trailers).unwrap_or_else(|| {
                            Status::internal("the answer ended without a status")
                        });
                        Some((status, trailers))
                    }
                },
                Some(Err(status)) => Some((status, HeaderMap::new())),
                None => Some((
                    Status::internal("the answer ended without a status"),
                    HeaderMap::new(),
                )),
            };
            if let Some((status, trailers)) = ended {
                out.extend_from_slice(&end_of_stream(&status, &trailers));
                *this = StreamBody::Done;
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
            }
        }
    }
}
