//! OpenTelemetry traces, through the real server binary: calls that carry a W3C `traceparent`
//! are exported over OTLP/gRPC, to a collector run inside the test, as server spans that
//! continue the caller's trace, with storage and hashing work as their children; the access
//! log line carries the trace id.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};
use user_service::pb::GetUserRequest;

use crate::helpers::{ServerProcess, TestDatabase, new_user};

/// An OTLP trace receiver: keeps every span it is sent, and the resources they came with.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ResourceSpans>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = self.received.lock().unwrap();
        received.extend(request.into_inner().resource_spans);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves on a free port; the endpoint to give the server.
    async fn start() -> (Self, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Self::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, format!("http://{addr}"))
    }

    fn spans(&self) -> Vec<Span> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .flat_map(|scope| scope.spans.clone())
            .collect()
    }

    /// The spans of trace `trace_id` once one of them is named `name`, waiting up to ten
    /// seconds for the server to export it.
    async fn trace(&self, trace_id: &[u8], name: &str) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let spans: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|span| span.trace_id == trace_id)
                .collect();
            if spans.iter().any(|span| span.name == name) {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no span {name:?} exported in trace {}; spans received: {:?}",
                hex(trace_id),
                self.spans()
                    .iter()
                    .map(|span| (&span.name, hex(&span.trace_id)))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref()?.value.as_ref())
}

fn text(value: &str) -> Value {
    Value::StringValue(value.to_owned())
}

/// A server exporting spans to `endpoint` in batches every `batch_ms` milliseconds.
fn traced_server(database: &TestDatabase, endpoint: &str, batch_ms: u64) -> ServerProcess {
    ServerProcess::start_with(
        database,
        &[
            ("USER_SERVICE_OTLP_ENDPOINT", endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", &batch_ms.to_string()),
        ],
        &[],
    )
}

fn traced<T>(message: T, traceparent: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
}

const CREATE: &str = "userservice.UserService/CreateUser";
const GET: &str = "userservice.UserService/GetUser";

#[tokio::test]
async fn a_call_with_a_traceparent_is_exported_as_a_child_of_the_callers_span() {
    let (collector, endpoint) = Collector::start().await;
    let database = TestDatabase::new();
    let server = traced_server(&database, &endpoint, 50);
    let mut client = server.client().await.unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";

    client
        .create_user(traced(
            new_user("traced"),
            &format!("00-{trace_id}-{caller_span}-01"),
        ))
        .await
        .expect("the user is created");

    let spans = collector.trace(&unhex(trace_id), CREATE).await;
    let call = spans.iter().find(|span| span.name == CREATE).unwrap();
    assert_eq!(
        hex(&call.parent_span_id),
        caller_span,
        "the caller's span is the parent"
    );
    assert_eq!(call.kind, SpanKind::Server as i32, "a server span");
    assert_eq!(attribute(call, "rpc.system"), Some(&text("grpc")));
    assert_eq!(
        attribute(call, "rpc.service"),
        Some(&text("userservice.UserService"))
    );
    assert_eq!(attribute(call, "rpc.method"), Some(&text("CreateUser")));
    assert_eq!(
        attribute(call, "rpc.grpc.status_code"),
        Some(&Value::IntValue(0)),
        "OK"
    );
    // The children end before the call does, so they were exported with it or before it.
    for child in ["hash_password", "create_user"] {
        let span = spans
            .iter()
            .find(|span| span.name == child)
            .unwrap_or_else(|| panic!("no {child} span in the call's trace: {spans:?}"));
        assert_eq!(
            span.parent_span_id, call.span_id,
            "{child} is a child of the call's span"
        );
    }
    let storage = spans
        .iter()
        .find(|span| span.name == "create_user")
        .unwrap();
    assert_eq!(
        attribute(storage, "db.system.name"),
        Some(&text(if database.url().starts_with("postgres") {
            "postgresql"
        } else {
            "sqlite"
        }))
    );
    let resources = collector.received.lock().unwrap().clone();
    let service_name = resources[0]
        .resource
        .as_ref()
        .and_then(|resource| {
            resource
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name")
        })
        .and_then(|kv| kv.value.as_ref()?.value.clone());
    assert_eq!(service_name, Some(text("user-service")));

    let line = server.wait_for_log(&format!("\"method\":\"/{CREATE}\""));
    assert!(
        line.contains(&format!("\"trace_id\":\"{trace_id}\"")),
        "the access log line carries the trace id: {line}"
    );
}

#[tokio::test]
async fn a_failed_call_is_exported_with_its_status_code() {
    let (collector, endpoint) = Collector::start().await;
    let database = TestDatabase::new();
    let server = traced_server(&database, &endpoint, 50);
    let mut client = server.client().await.unwrap();
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let unknown = uuid::Uuid::now_v7().to_string();

    let status = client
        .get_user(traced(
            GetUserRequest { user_id: unknown },
            &format!("00-{trace_id}-b7ad6b7169203331-01"),
        ))
        .await
        .expect_err("no such user");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let spans = collector.trace(&unhex(trace_id), GET).await;
    let call = spans.iter().find(|span| span.name == GET).unwrap();
    assert_eq!(
        attribute(call, "rpc.grpc.status_code"),
        Some(&Value::IntValue(Code::NotFound as i64))
    );
    // NOT_FOUND is the caller's doing: the span is not marked as the server's error.
    let status = call.status.clone().unwrap_or_default();
    assert_ne!(status.code, StatusCode::Error as i32, "{status:?}");
}

#[tokio::test]
async fn a_call_without_a_traceparent_starts_a_trace_of_its_own() {
    let (collector, endpoint) = Collector::start().await;
    let database = TestDatabase::new();
    let server = traced_server(&database, &endpoint, 50);
    let mut client = server.client().await.unwrap();

    client
        .create_user(new_user("untraced"))
        .await
        .expect("the user is created");

    let line = server.wait_for_log(&format!("\"method\":\"/{CREATE}\""));
    let trace_id = line
        .split("\"trace_id\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("the access log line has a trace id: {line}"));
    let spans = collector.trace(&unhex(trace_id), CREATE).await;
    let call = spans.iter().find(|span| span.name == CREATE).unwrap();
    assert!(call.parent_span_id.is_empty(), "a root span: {call:?}");
}

#[tokio::test]
async fn without_an_endpoint_the_log_line_still_carries_the_callers_trace_id() {
    let database = TestDatabase::new();
    let server = ServerProcess::start(&database);
    let mut client = server.client().await.unwrap();
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";

    client
        .create_user(traced(
            new_user("logged"),
            &format!("00-{trace_id}-00f067aa0ba902b7-01"),
        ))
        .await
        .expect("the user is created");

    let line = server.wait_for_log(&format!("\"method\":\"/{CREATE}\""));
    assert!(
        line.contains(&format!("\"trace_id\":\"{trace_id}\"")),
        "{line}"
    );
}

#[tokio::test]
async fn spans_still_held_at_shutdown_are_exported_before_the_server_exits() {
    let (collector, endpoint) = Collector::start().await;
    let database = TestDatabase::new();
    // Batches every ten minutes: only the flush at shutdown can send this call's span.
    let mut server = traced_server(&database, &endpoint, 600_000);
    let mut client = server.client().await.unwrap();
    let trace_id = "6bf92f3577b34da6a3ce929d0e0e4736";
    client
        .create_user(traced(
            new_user("flushed"),
            &format!("00-{trace_id}-00f067aa0ba902b7-01"),
        ))
        .await
        .expect("the user is created");
    drop(client);
    assert!(
        collector.spans().is_empty(),
        "nothing is exported before the batch is due"
    );

    let exited = server.terminate(Duration::from_secs(30)).await;

    assert!(exited.success(), "{exited:?}");
    let exported = collector.spans();
    assert!(
        exported
            .iter()
            .any(|span| span.name == CREATE && hex(&span.trace_id) == trace_id),
        "the call's span was sent at shutdown: {exported:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_cannot_be_reached_is_logged_once_not_silently() {
    // A port nothing listens on: bound, then closed.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let database = TestDatabase::new();
    let server = traced_server(&database, &endpoint, 50);
    let mut client = server.client().await.unwrap();
    for _ in 0..3 {
        client
            .get_user(traced(
                GetUserRequest {
                    user_id: uuid::Uuid::now_v7().to_string(),
                },
                "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-01",
            ))
            .await
            .expect_err("no such user");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let said = server.wait_for_log("cannot export trace spans");
    assert!(
        said.contains(&endpoint),
        "the line names the endpoint: {said}"
    );
    assert_eq!(
        server.logged("cannot export trace spans").len(),
        1,
        "once, not once per batch"
    );
}

/// The names of the spans under the call of trace `trace_id` named `call`, sorted.
async fn work_of(collector: &Collector, trace_id: &str, call: &str) -> Vec<String> {
    let mut names: Vec<String> = collector
        .trace(&unhex(trace_id), call)
        .await
        .into_iter()
        .filter(|span| span.name != call)
        .map(|span| span.name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_code_for_an_unknown_name_costs_the_same_work_as_a_wrong_code_for_a_known_one() {
    use user_service::pb::auth_service_client::AuthServiceClient;
    use user_service::pb::{CompleteRecoveryRequest, VerifyEmailRequest};
    let (collector, endpoint) = Collector::start().await;
    let database = TestDatabase::new();
    let server = traced_server(&database, &endpoint, 50);
    let mut client = server.client().await.unwrap();
    client.create_user(new_user("known_name")).await.unwrap();
    let mut auth = AuthServiceClient::new(server.channel().await.unwrap());
    let mut seen = Vec::new();
    for (n, login) in ["known_name", "unknown_name"].into_iter().enumerate() {
        let recovery = format!("0af7651916cd43dd8448eb211c8031a{n}");
        let refused = auth
            .complete_recovery(traced(
                CompleteRecoveryRequest {
                    login: login.into(),
                    code: "aaaaa-aaaaa".into(),
                    new_password: "a long new passphrase".into(),
                },
                &format!("00-{recovery}-b7ad6b7169203331-01"),
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        let verify = format!("0af7651916cd43dd8448eb211c8031b{n}");
        let refused = auth
            .verify_email(traced(
                VerifyEmailRequest {
                    login: login.into(),
                    code: "aaaaa-aaaaa".into(),
                },
                &format!("00-{verify}-b7ad6b7169203331-01"),
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        seen.push((
            work_of(
                &collector,
                &recovery,
                "userservice.AuthService/CompleteRecovery",
            )
            .await,
            work_of(&collector, &verify, "userservice.AuthService/VerifyEmail").await,
        ));
    }
    assert!(
        seen[0].0.iter().any(|name| name == "redeem_code"),
        "{:?}",
        seen[0]
    );
    assert_eq!(
        seen[0], seen[1],
        "known, then unknown: the same storage work"
    );
}

/// Whether each `verify_password` span of the call named `call` in trace `trace_id` ran at
/// the server's own cost.
async fn verifications_of(collector: &Collector, trace_id: &str, call: &str) -> Vec<bool> {
    collector
        .trace(&unhex(trace_id), call)
        .await
        .iter()
        .filter(|span| span.name == "verify_password")
        .map(|span| match attribute(span, "at_server_cost") {
            Some(Value::BoolValue(at_cost)) => *at_cost,
            other => panic!("a verification says what it cost: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_wrong_password_for_a_cheaper_imported_hash_costs_a_verification_at_the_servers_cost() {
    use user_service::pb::LoginRequest;
    use user_service::pb::auth_service_client::AuthServiceClient;
    let (collector, endpoint) = Collector::start().await;
    let database = TestDatabase::new();
    let server = traced_server(&database, &endpoint, 50);
    let mut client = server.client().await.unwrap();
    client.create_user(new_user("native")).await.unwrap();
    client
        .create_user(user_service::pb::CreateUserRequest {
            password: String::new(),
            password_hash: bcrypt::hash("the imported password", 4).unwrap(),
            ..new_user("imported")
        })
        .await
        .unwrap();
    let mut auth = AuthServiceClient::new(server.channel().await.unwrap());
    let mut seen = Vec::new();
    for (n, username) in ["native", "imported"].into_iter().enumerate() {
        let trace_id = format!("0af7651916cd43dd8448eb211c8031c{n}");
        let refused = auth
            .login(traced(
                LoginRequest {
                    username: username.into(),
                    password: "a wrong password".into(),
                    ..Default::default()
                },
                &format!("00-{trace_id}-b7ad6b7169203331-01"),
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        seen.push(verifications_of(&collector, &trace_id, "userservice.AuthService/Login").await);
    }
    assert_eq!(seen[0], [true], "a native hash is verified once, at cost");
    assert!(
        seen[1].contains(&false) && seen[1].contains(&true),
        "the cheap import is verified, then the server's cost is paid: {:?}",
        seen[1]
    );
}
