//! The access log: one line per call, with its code, and nothing secret.

use tonic::Code;
use user_service::pb::GetUserRequest;

use crate::helpers::create_many;

#[tokio::test]
async fn the_access_log_records_the_grpc_code_of_a_failed_call() {
    let database = crate::helpers::TestDatabase::new();
    let server = crate::helpers::ServerProcess::start(&database);
    let mut client = server.client().await.unwrap();
    let missing = "0192a3b4-0000-7000-8000-000000000000".to_string();
    let status = client
        .get_user(GetUserRequest { user_id: missing })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    create_many(&mut client, "logged", 1).await;

    let line = server.wait_for_log("\"method\":\"/userservice.UserService/GetUser\"");
    assert!(line.contains("\"code\":\"NotFound\""), "{line}");
    assert!(
        line.contains("\"principal\":\"service:test-admin\""),
        "{line}"
    );
    assert!(line.contains("\"peer\":\"127.0.0.1:"), "{line}");
    assert!(line.contains("\"micros\":"), "{line}");
    let all = server.log.lock().unwrap().join("\n");
    assert!(
        !all.contains(crate::helpers::TEST_SECRET),
        "a secret reached the log"
    );
    assert!(!all.contains("correct horse"), "a password reached the log");
    assert!(!all.contains("$argon2"), "a password hash reached the log");
    assert!(!all.contains("Bearer "), "a token reached the log");
}

#[tokio::test]
async fn every_line_of_the_calls_before_sigterm_is_written_before_the_server_exits() {
    let database = crate::helpers::TestDatabase::new();
    // No rate limit: the calls come as fast as the client makes them.
    let mut server = crate::helpers::ServerProcess::start_with(
        &database,
        &[],
        &["--rate-limit-per-second", "0"],
    );
    let mut client = server.client().await.unwrap();
    let calls = 300;
    for n in 0..calls {
        let missing = format!("0192a3b4-0000-7000-8000-{n:012}");
        let status = client
            .get_user(GetUserRequest { user_id: missing })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    // The server stops at once: the last lines are still waiting to be written.
    let exited = server.terminate(std::time::Duration::from_secs(5)).await;
    drop(client);
    assert!(exited.success(), "{exited:?}");
    server.wait_for_log("\"message\":\"stopped\"");
    let logged = server.logged("\"method\":\"/userservice.UserService/GetUser\"");
    assert_eq!(logged.len(), calls, "access lines were lost at the stop");
}
