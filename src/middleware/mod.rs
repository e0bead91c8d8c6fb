//! The tower layers calls pass through, one concern each, in the architecture diagram's
//! order (outermost first): the client's address (which starts the call's state) ->
//! connection activity -> the protocol (gRPC-Web and Connect turned into gRPC, with CORS when
//! origins are named; the console served) -> the request watched (a broken client stream) ->
//! trace span -> access log -> gRPC metrics ->
//! deadline -> content type -> decode fault; then, for the user and auth services only, load
//! shedding -> authentication -> rate limit -> the services. Health checks and reflection skip
//! the second group. Shedding comes before authentication so that calls with bad tokens are
//! shed like any other. `startup` assembles the stack, in one place.

pub mod access_log;
pub mod activity;
pub mod auth;
pub mod call_end;
pub mod client_address;
pub mod content_type;
pub mod deadline;
pub mod decode_fault;
pub mod grpc_metrics;
pub mod load_shed;
pub mod protocols;
pub mod rate_limit;
pub mod trace_span;

use tonic::Status;

pub use access_log::AccessLogLayer;
pub use activity::ActivityLayer;
pub use auth::AuthLayer;
pub use call_end::RequestWatchLayer;
pub use client_address::ClientAddressLayer;
pub use content_type::ContentTypeLayer;
pub use deadline::DeadlineLayer;
pub use decode_fault::DecodeFaultLayer;
pub use grpc_metrics::GrpcMetricsLayer;
pub use load_shed::ShedLayer;
pub use protocols::ProtocolLayer;
pub use rate_limit::RateLimitLayer;
pub use trace_span::TraceSpanLayer;

type Response = http::Response<tonic::body::Body>;

/// Why a layer answered a call itself instead of passing it on, left on the response for the
/// metrics (`user_service_refused_calls_total{reason}`) in the outermost layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal(pub &'static str);

/// A refusal response: the status, marked with its reason.
fn refusal_response(status: Status, reason: &'static str) -> Response {
    let mut response = status_response(status);
    response.extensions_mut().insert(Refusal(reason));
    response
}

/// A complete gRPC error response (trailers-only: HTTP 200 with `grpc-status` in the headers).
fn status_response(status: Status) -> Response {
    status.into_http()
}
