//! What was acknowledged survives a restart and `kill -9`, and the event log resumes across it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use user_service::pb::user_service_client::UserServiceClient;
use user_service::pb::{
    DeleteUserRequest, EventType, GetUserRequest, ListUsersRequest, UpdateUserRequest,
    WatchUsersRequest,
};

use user_service::auth::jwt::{Jwt, JwtSettings};
use user_service::domain::Role;

use crate::helpers::{Bearer, Client, TEST_SECRET, TestApp, create, create_many};
use crate::watch::next_event;

#[tokio::test]
async fn everything_committed_is_there_after_a_restart_and_a_watch_replays_across_it() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let kept = create(&mut client, "keeper").await;
    let changed = client
        .update_user(UpdateUserRequest {
            user_id: kept.id.clone(),
            full_name: Some("Kept".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let dropped = create(&mut client, "dropper").await;
    client
        .delete_user(DeleteUserRequest {
            user_id: dropped.id,
            etag: None,
        })
        .await
        .unwrap();
    drop(client);

    let app = app.restart().await;
    let mut client = app.client().await;

    let fetched = client
        .get_user(GetUserRequest {
            user_id: kept.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(fetched, changed, "the user is exactly as acknowledged");
    let listed = client
        .list_users(ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_count, 1, "the deleted user stays deleted");

    let mut events = client
        .watch_users(WatchUsersRequest {
            user_ids: vec![],
            include_all: true,
            start_revision: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let after_restart = create(&mut client, "newcomer").await;
    let expected = [
        (1, EventType::Created),
        (2, EventType::Updated),
        (3, EventType::Created),
        (4, EventType::Deleted),
        (5, EventType::Created),
    ];
    for (revision, kind) in expected {
        let event = next_event(&mut events).await;
        assert_eq!(
            (event.revision, event.r#type),
            (revision, kind as i32),
            "{event:?}"
        );
    }
    assert_eq!(
        after_restart.etag, "5",
        "revisions continue across the restart"
    );
}

/// The server binary, started on port 0; its address is read from its log.
pub struct ServerProcess {
    pub child: Child,
    addr: String,
    /// Every log line so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    pub fn start(database: &std::path::Path) -> Self {
        Self::launch(database, Some(TEST_SECRET))
    }

    /// Starts the binary as `make run` would: with no key configured.
    pub fn start_without_key(database: &std::path::Path) -> Self {
        Self::launch(database, None)
    }

    fn launch(database: &std::path::Path, secret: Option<&str>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_user-service"));
        command
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
            .arg("--database-url")
            .arg(format!("sqlite://{}", database.display()))
            .env("RUST_LOG", "info")
            .env_remove("USER_SERVICE_JWT_SECRET")
            .stderr(Stdio::piped());
        if let Some(secret) = secret {
            command.env("USER_SERVICE_JWT_SECRET", secret);
        }
        let mut child = command.spawn().expect("the server binary starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.expect("the log is readable");
            if let Some(rest) = line.split("\"local_addr\":\"").nth(1) {
                addr = rest.split('"').next().map(str::to_owned);
            }
            seen.push(line);
            if addr.is_some() {
                break;
            }
        }
        let addr = addr.expect("the server logs the address it serves on");
        // Keep reading, so the server never blocks on a full pipe, and keep what it says.
        let log = Arc::new(Mutex::new(seen));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            addr: format!("http://{addr}"),
            log,
        }
    }
}

impl ServerProcess {
    /// An admin client; the process shares the tests' secret.
    pub async fn channel(&self) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        tonic::transport::Endpoint::from_shared(self.addr.clone())?
            .connect()
            .await
    }

    pub async fn client(&self) -> Result<Client, tonic::transport::Error> {
        let channel = self.channel().await?;
        let jwt = Jwt::new(&JwtSettings {
            secret: Some(TEST_SECRET.as_bytes().to_vec()),
            token_ttl: Duration::from_secs(600),
            ..JwtSettings::default()
        })
        .expect("the test secret is valid")
        .0;
        let (token, _) = jwt.mint("test-admin", Role::Admin, None).unwrap();
        Ok(UserServiceClient::with_interceptor(
            channel,
            Bearer::new(Some(&token)).unwrap(),
        ))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_dash_nine() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("users.db");
    let mut server = ServerProcess::start(&database);
    let mut client = server.client().await.unwrap();
    let created = create_many(&mut client, "durable", 50).await;
    let last = create(&mut client, "lastword").await;

    server.child.kill().expect("SIGKILL is delivered");
    server.child.wait().unwrap();
    drop(client);

    let server = ServerProcess::start(&database);
    let mut client = server.client().await.unwrap();
    for user in created.iter().chain([&last]) {
        let fetched = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_user(GetUserRequest {
                user_id: user.id.clone(),
            }),
        )
        .await
        .unwrap()
        .unwrap_or_else(|status| panic!("{} was lost: {status:?}", user.username));
        assert_eq!(fetched.into_inner().user.as_ref(), Some(user));
    }
}

#[tokio::test]
async fn storage_is_created_on_first_start_in_a_folder_that_does_not_exist() {
    let app = TestApp::spawn().await;
    assert!(
        app.database.exists(),
        "{} was created",
        app.database.display()
    );
}
