//! The other ways in, on the gRPC port: Connect (JSON and binary) and gRPC-Web, from the
//! official Connect clients in Node and from plain HTTP/1.1 requests as curl sends them; CORS;
//! and the console's pages. Every protocol passes the same layers as gRPC.

use serde_json::{Value, json};
use user_service::domain::Role;

use crate::helpers::{HttpAnswer, ServerProcess, TestApp, TestDatabase, http1, run_node_tests};

const GET_USER: &str = "/userservice.UserService/GetUser";
const CREATE_USER: &str = "/userservice.UserService/CreateUser";

/// A Connect unary call with a JSON body, as curl would make it.
async fn connect_json(app: &TestApp, path: &str, token: Option<&str>, body: &Value) -> HttpAnswer {
    let body = body.to_string();
    let bearer = token.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer.as_str()));
    }
    http1(app.addr, "POST", path, &headers, body.as_bytes()).await
}

fn admin(app: &TestApp) -> String {
    app.token("web-admin", Role::Admin)
}

fn new_user_json(username: &str) -> Value {
    json!({
        "username": username,
        "email": format!("{username}@example.com"),
        "fullName": "Web Person",
        "password": "correct horse battery",
        "role": "USER_ROLE_MODERATOR",
        "metadata": {"team": "web"},
    })
}

#[tokio::test]
async fn a_json_call_answers_the_user_in_canonical_proto3_json_as_grpc_stores_it() {
    let app = TestApp::spawn().await;
    let token = admin(&app);

    let created = connect_json(&app, CREATE_USER, Some(&token), &new_user_json("json_ann")).await;

    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(created.header("content-type"), Some("application/json"));
    let user = &created.json()["user"];
    assert_eq!(user["username"], "json_ann");
    assert_eq!(user["fullName"], "Web Person", "lowerCamelCase names");
    assert_eq!(user["role"], "USER_ROLE_MODERATOR", "enums by name");
    assert_eq!(user["status"], "USER_STATUS_ACTIVE");
    assert_eq!(user["metadata"], json!({"team": "web"}));
    let id = user["id"].as_str().expect("an id");
    let stored = crate::helpers::get(&mut app.client().await, id).await;
    assert_eq!(user["etag"], stored.etag.as_str(), "the etag gRPC reads");

    let fetched = connect_json(&app, GET_USER, Some(&token), &json!({"userId": id})).await;
    assert_eq!(fetched.status, 200, "{}", fetched.text());
    assert_eq!(&fetched.json()["user"], user);
}

/// Each failure's status and body is in `snapshots/status_codes_connect.snap`; here, what a
/// Connect client reads from them.
#[tokio::test]
async fn a_connect_error_carries_its_codes_http_status_code_name_and_details() {
    let app = TestApp::spawn().await;
    let token = admin(&app);
    let bad_email =
        json!({"username": "bad_mail", "email": "nope", "password": "correct horse battery"});

    let answer = connect_json(&app, CREATE_USER, Some(&token), &bad_email).await;

    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let error = answer.json();
    assert_eq!(error["code"], "invalid_argument");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("email"),
        "{error}"
    );
    assert_eq!(
        error["details"][0]["type"], "google.rpc.BadRequest",
        "the field violations travel as details"
    );
}

#[tokio::test]
async fn the_rate_limit_refuses_connect_calls_with_retry_after_as_it_does_grpc() {
    let app = TestApp::spawn_with(|settings| {
        settings.limits.rate_limit_per_second = 1;
        settings.limits.rate_limit_burst = 1;
    })
    .await;
    let token = app.token("limited", Role::Admin);
    let body = json!({"userId": "00000000-0000-7000-8000-000000000000"});

    let first = connect_json(&app, GET_USER, Some(&token), &body).await;
    let second = connect_json(&app, GET_USER, Some(&token), &body).await;

    assert_eq!(first.status, 404, "{}", first.text());
    assert_eq!(second.status, 429, "{}", second.text());
    assert_eq!(second.json()["code"], "resource_exhausted");
    assert!(
        second
            .header("retry-after")
            .is_some_and(|secs| secs.parse::<u64>().is_ok()),
        "{:?}",
        second.headers
    );
}

/// A Connect streaming request body: one envelope of JSON.
fn envelope(message: &Value) -> Vec<u8> {
    let json = message.to_string();
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(json.len()).unwrap().to_be_bytes());
    body.extend_from_slice(json.as_bytes());
    body
}

/// The envelopes of a Connect streaming answer: flags and JSON.
fn envelopes(mut body: &[u8]) -> Vec<(u8, Value)> {
    let mut found = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let json = serde_json::from_slice(&body[5..5 + len]).expect("JSON in each envelope");
        found.push((body[0], json));
        body = &body[5 + len..];
    }
    assert!(body.is_empty(), "nothing after the last envelope");
    found
}

#[tokio::test]
async fn a_connect_stream_sends_events_then_an_end_envelope_with_the_status() {
    let app = TestApp::spawn().await;
    let token = admin(&app);
    let user = crate::helpers::create(&mut app.client().await, "streamed").await;
    let bearer = format!("Bearer {token}");

    let answer = http1(
        app.addr,
        "POST",
        "/userservice.UserService/WatchUsers",
        &[
            ("content-type", "application/connect+json"),
            ("authorization", &bearer),
            ("connect-timeout-ms", "300"),
        ],
        &envelope(&json!({"includeAll": true, "startRevision": "1"})),
    )
    .await;

    assert_eq!(
        answer.status, 200,
        "a stream's status travels in its end envelope"
    );
    assert_eq!(
        answer.header("content-type"),
        Some("application/connect+json")
    );
    let found = envelopes(&answer.body);
    let (flags, event) = &found[0];
    assert_eq!(*flags, 0);
    assert_eq!(event["type"], "EVENT_TYPE_CREATED");
    assert_eq!(event["user"]["id"], user.id.as_str());
    let (flags, end) = found.last().unwrap();
    assert_eq!(*flags, 2, "the last envelope ends the stream");
    assert_eq!(end["error"]["code"], "deadline_exceeded", "{end}");
}

#[tokio::test]
async fn http1_requests_in_no_protocol_of_ours_get_a_plain_refusal() {
    let app = TestApp::spawn().await;

    let other = http1(app.addr, "GET", "/other", &[], b"").await;
    let grpc = http1(
        app.addr,
        "POST",
        GET_USER,
        &[("content-type", "application/grpc")],
        b"",
    )
    .await;

    assert_eq!(other.status, 415);
    assert!(other.text().contains("Connect"), "{}", other.text());
    assert_eq!(grpc.status, 415);
    assert!(grpc.text().contains("gRPC needs HTTP/2"), "{}", grpc.text());
}

async fn preflight(app: &TestApp, origin: &str) -> HttpAnswer {
    http1(
        app.addr,
        "OPTIONS",
        GET_USER,
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization,content-type,connect-protocol-version",
            ),
        ],
        b"",
    )
    .await
}

#[tokio::test]
async fn cors_lets_a_named_origin_call_and_no_other() {
    let allowed = "https://admin.example.com";
    let app = TestApp::spawn_with(|settings| {
        settings.web.cors_allow_origins = vec![allowed.parse().unwrap()];
    })
    .await;
    let closed = TestApp::spawn().await;

    let yes = preflight(&app, allowed).await;
    let no = preflight(&app, "https://evil.example.com").await;
    let off = preflight(&closed, allowed).await;

    assert_eq!(
        yes.header("access-control-allow-origin"),
        Some(allowed),
        "{:?}",
        yes.headers
    );
    let allowed_headers = yes
        .header("access-control-allow-headers")
        .unwrap_or_default();
    for header in ["authorization", "content-type", "connect-protocol-version"] {
        assert!(
            allowed_headers.contains(header),
            "{header} in {allowed_headers}"
        );
    }
    assert_eq!(
        no.header("access-control-allow-origin"),
        None,
        "{:?}",
        no.headers
    );
    assert_eq!(
        off.header("access-control-allow-origin"),
        None,
        "CORS is off unless asked for"
    );

    let call = http1(
        app.addr,
        "POST",
        GET_USER,
        &[("origin", allowed), ("content-type", "application/json")],
        b"{}",
    )
    .await;
    assert_eq!(call.header("access-control-allow-origin"), Some(allowed));
    let exposed = call
        .header("access-control-expose-headers")
        .unwrap_or_default();
    for header in ["grpc-status", "grpc-message", "retry-after"] {
        assert!(exposed.contains(header), "{header} in {exposed}");
    }
}

#[tokio::test]
async fn the_console_is_served_with_its_security_policy_and_can_be_turned_off() {
    let app = TestApp::spawn().await;
    let off = TestApp::spawn_with(|settings| settings.web.console = false).await;

    let page = http1(app.addr, "GET", "/console/", &[], b"").await;
    let home = http1(app.addr, "GET", "/", &[], b"").await;
    let server = http1(app.addr, "GET", "/console/server.json", &[], b"").await;
    let gone = http1(off.addr, "GET", "/console/", &[], b"").await;

    assert_eq!(page.status, 200);
    assert!(page.text().contains("app.js"), "the page loads its script");
    let policy = page.header("content-security-policy").expect("a policy");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert_eq!(
        (home.status, home.header("location")),
        (303, Some("/console/"))
    );
    assert_eq!(
        server.json(),
        json!({"developmentKey": false}),
        "the tests' key is configured"
    );
    assert_eq!(gone.status, 415, "with --console false there is no console");
}

#[tokio::test]
async fn the_access_log_names_the_protocol_of_each_call() {
    let database = TestDatabase::new();
    let server = ServerProcess::start(&database);
    let addr = server.addr();
    let token = server.token("logged", Role::Admin);
    let bearer = format!("Bearer {token}");

    let answer = http1(
        addr,
        "POST",
        GET_USER,
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        b"{\"userId\":\"00000000-0000-7000-8000-000000000000\"}",
    )
    .await;

    assert_eq!(answer.status, 404);
    let line = server.wait_for_log("\"protocol\":\"connect+json\"");
    assert!(
        line.contains("GetUser") && line.contains("NotFound"),
        "{line}"
    );
}

#[tokio::test]
async fn the_official_connect_clients_pass_over_connect_json_binary_and_grpc_web() {
    // The suite logs in a dozen times from one address.
    let app = TestApp::spawn_with(|settings| {
        settings.auth.login_attempts_per_minute = std::num::NonZeroU32::new(1000).unwrap();
    })
    .await;
    let descriptors = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(descriptors.path(), user_service::pb::FILE_DESCRIPTOR_SET).unwrap();
    let env = [
        ("USER_SERVICE_URL", format!("http://{}", app.addr)),
        ("USER_SERVICE_ADMIN_TOKEN", admin(&app)),
        (
            "USER_SERVICE_DESCRIPTORS",
            descriptors.path().display().to_string(),
        ),
    ];

    // 17 tests for each of the three transports.
    run_node_tests(
        "connect.test.mjs",
        env.map(|(k, v)| (k.to_owned(), v)).into(),
        51,
    )
    .await;
}

/// The bytes of a gRPC-Web text body: base64 pieces, each padded where it ends.
fn from_base64_pieces(mut text: &str) -> Vec<u8> {
    use base64::Engine as _;
    let mut bytes = Vec::new();
    while !text.is_empty() {
        let end = text.find('=').map_or(text.len(), |at| {
            at + text[at..].chars().take_while(|c| *c == '=').count()
        });
        let piece = base64::engine::general_purpose::STANDARD
            .decode(&text[..end])
            .expect("base64");
        bytes.extend(piece);
        text = &text[end..];
    }
    bytes
}

#[tokio::test]
async fn grpc_web_text_is_answered_in_base64_and_a_body_not_in_base64_is_the_callers_fault() {
    use base64::Engine as _;
    let app = TestApp::spawn().await;
    let user = crate::helpers::create(&mut app.client().await, "texted").await;
    let bearer = format!("Bearer {}", admin(&app));
    let request = crate::helpers::grpc_frame(&user_service::pb::GetUserRequest {
        user_id: user.id.clone(),
    });
    let headers = [
        ("content-type", "application/grpc-web-text"),
        ("accept", "application/grpc-web-text"),
        ("authorization", bearer.as_str()),
    ];

    let answer = http1(
        app.addr,
        "POST",
        GET_USER,
        &headers,
        base64::engine::general_purpose::STANDARD
            .encode(&request)
            .as_bytes(),
    )
    .await;
    let garbled = http1(app.addr, "POST", GET_USER, &headers, b"*not base64*").await;

    assert_eq!(answer.status, 200);
    let body = from_base64_pieces(&answer.text());
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    assert_eq!(body[0], 0, "a message frame first");
    let response: user_service::pb::GetUserResponse =
        prost::Message::decode(&body[5..5 + len]).unwrap();
    assert_eq!(response.user.unwrap().id, user.id);
    let trailers = String::from_utf8_lossy(&body[5 + len + 5..]).to_lowercase();
    assert_eq!(body[5 + len], 0x80, "then the trailers frame");
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    assert_eq!(
        garbled.header("grpc-status"),
        Some("3"),
        "{:?}",
        garbled.headers
    );
}

/// An HTTP/1.1 request on an open connection, and its answer's status, read to the end of
/// its body (which the server sends with a length).
async fn on_connection(stream: &mut tokio::net::TcpStream, path: &str, body: &str) -> u16 {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    let (mut status, mut length) = (0, 0);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(rest) = line.strip_prefix("http/1.1 ") {
            status = rest[..3].parse().unwrap();
        }
        if let Some(value) = line.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
    }
    let mut rest = vec![0; length];
    reader.read_exact(&mut rest).await.unwrap();
    status
}

#[tokio::test]
async fn an_http1_connection_carries_the_next_call_after_one_refused_unread() {
    let app = TestApp::spawn().await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let body = r#"{"userId":"00000000-0000-7000-8000-000000000000"}"#;

    // Authentication refuses the first call without the service reading its body.
    let refused = on_connection(&mut stream, GET_USER, body).await;
    let again = on_connection(&mut stream, GET_USER, body).await;

    assert_eq!(refused, 401);
    assert_eq!(again, 401, "the same connection answered a second call");
}

#[tokio::test]
async fn a_body_over_the_message_limit_is_resource_exhausted_in_every_protocol() {
    let app = TestApp::spawn_with(|settings| settings.limits.max_message_bytes = 1024).await;
    let bearer = format!("Bearer {}", admin(&app));
    let long_id = "x".repeat(2000);
    let json = json!({"userId": long_id}).to_string();
    let frame = crate::helpers::grpc_frame(&user_service::pb::GetUserRequest { user_id: long_id });

    let connect = http1(
        app.addr,
        "POST",
        GET_USER,
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        json.as_bytes(),
    )
    .await;
    let web = http1(
        app.addr,
        "POST",
        GET_USER,
        &[
            ("content-type", "application/grpc-web+proto"),
            ("authorization", &bearer),
        ],
        &frame,
    )
    .await;

    assert_eq!(
        connect.json()["code"],
        "resource_exhausted",
        "{}",
        connect.text()
    );
    assert_eq!(web.header("grpc-status"), Some("8"), "{:?}", web.headers);
}
