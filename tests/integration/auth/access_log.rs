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

#[tokio::test]
async fn no_key_secret_code_or_recovery_code_reaches_the_log() {
    use user_service::domain::Role;
    use user_service::pb::auth_service_client::AuthServiceClient;
    use user_service::pb::{
        CompleteRecoveryRequest, CreateServiceKeyRequest, ListUsersRequest, StartRecoveryRequest,
        UserRole, WatchDeliveriesRequest,
    };

    let database = crate::helpers::TestDatabase::new();
    let server =
        crate::helpers::ServerProcess::start_with(&database, &[("RUST_LOG", "debug")], &[]);
    let mut client = server.client().await.unwrap();
    crate::helpers::create(&mut client, "logged_owner").await;
    let admin = server.token("test-admin", Role::Admin);
    let mut auth = AuthServiceClient::with_interceptor(
        server.channel().await.unwrap(),
        crate::helpers::Bearer::new(Some(&admin)).unwrap(),
    );
    let key = auth
        .create_service_key(CreateServiceKeyRequest {
            name: "logged-key".into(),
            role: UserRole::Admin as i32,
            expires_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut with_key = AuthServiceClient::with_interceptor(
        server.channel().await.unwrap(),
        crate::helpers::Bearer::new(Some(&key.secret)).unwrap(),
    );
    let mut deliveries = with_key
        .watch_deliveries(WatchDeliveriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut anonymous = AuthServiceClient::new(server.channel().await.unwrap());
    anonymous
        .start_recovery(StartRecoveryRequest {
            login: "logged_owner".into(),
        })
        .await
        .unwrap();
    let code = deliveries.message().await.unwrap().unwrap().code;
    anonymous
        .complete_recovery(CompleteRecoveryRequest {
            login: "logged_owner".into(),
            code: code.clone(),
            new_password: "a logged new passphrase".into(),
        })
        .await
        .unwrap();
    let mut keyed = user_service::pb::user_service_client::UserServiceClient::with_interceptor(
        server.channel().await.unwrap(),
        crate::helpers::Bearer::new(Some(&key.secret)).unwrap(),
    );
    keyed.list_users(ListUsersRequest::default()).await.unwrap();

    server.wait_for_log("\"method\":\"/userservice.UserService/ListUsers\"");
    let all = server.log.lock().unwrap().join("\n");
    // After `usk_`, the 32 hex digits of the id and `_` (the random part's base64url may hold
    // `_` too).
    let random_part = &key.secret["usk_".len() + 32 + 1..];
    assert_eq!(random_part.len(), 43);
    assert!(
        !all.contains(random_part),
        "a service key's secret reached the log"
    );
    assert!(!all.contains(&code), "a recovery code reached the log");
    assert!(
        !all.contains("a logged new passphrase"),
        "a new password reached the log"
    );
    let key_id = key.key.unwrap().id;
    assert!(
        all.contains(&format!("\"principal\":\"key:{key_id}\"")),
        "the key's calls are logged under its id"
    );
}
