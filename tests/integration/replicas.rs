//! Several servers on one PostgreSQL database behave as one service: read-your-writes on
//! every replica, every replica's watchers see every replica's events in revision order,
//! revisions stay gap-free under concurrent writers, revoked tokens and ended sessions stop
//! working everywhere, and a replica rides out a database outage. These always run on PostgreSQL.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use user_service::domain::Role;
use user_service::pb::auth_service_client::AuthServiceClient;
use user_service::pb::user_service_client::UserServiceClient;
use user_service::pb::{
    ChangePasswordRequest, ClearLoginFailuresRequest, DeleteUserRequest, GetUserRequest,
    ListUsersRequest, LoginRequest, LogoutRequest, UpdateUserRequest, UserEvent, UserRole,
    UserStatus,
};

use crate::helpers::{
    Bearer, Client, Proxy, ServerProcess, TestDatabase, create, create_with_role, new_user,
};
use crate::watch::next_event;

/// A replica without a rate limit: these tests make hundreds of calls a second.
fn replica(database: &TestDatabase) -> ServerProcess {
    ServerProcess::start_with(database, &[], &["--rate-limit-per-second", "0"])
}

use crate::watch::everyone;

async fn client_as(server: &ServerProcess, token: &str) -> Client {
    UserServiceClient::with_interceptor(
        server.channel().await.unwrap(),
        Bearer::new(Some(token)).unwrap(),
    )
}

async fn events(stream: &mut tonic::Streaming<UserEvent>, count: usize) -> Vec<UserEvent> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        seen.push(next_event(stream).await);
    }
    seen
}

#[tokio::test]
async fn a_read_on_either_replica_reflects_a_write_acknowledged_by_the_other() {
    let database = TestDatabase::postgres();
    let (a, b) = (replica(&database), replica(&database));
    let mut clients = [a.client().await.unwrap(), b.client().await.unwrap()];

    for round in 0..200 {
        let (writer, reader) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
        let created = create(&mut clients[writer], &format!("ryw{round}")).await;
        let read = clients[reader]
            .get_user(GetUserRequest {
                user_id: created.id.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("round {round}: the other replica: {status:?}"))
            .into_inner()
            .user;
        assert_eq!(read.as_ref(), Some(&created), "round {round}");

        let renamed = clients[reader]
            .update_user(UpdateUserRequest {
                user_id: created.id.clone(),
                full_name: Some(format!("Renamed {round}")),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("round {round}: updating on the other: {status:?}"))
            .into_inner()
            .user
            .unwrap();
        let read = clients[writer]
            .get_user(GetUserRequest {
                user_id: created.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .user;
        assert_eq!(read.as_ref(), Some(&renamed), "round {round}: the update");
    }
    let listed = clients[1]
        .list_users(ListUsersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_count, 200, "the count on the other replica");
    assert_eq!(
        listed.users[0].username, "ryw199",
        "the newest, written by the other"
    );
}

#[tokio::test]
async fn both_replicas_watchers_see_every_replicas_events_in_order_without_gaps() {
    let database = TestDatabase::postgres();
    let (a, b) = (replica(&database), replica(&database));
    let (mut on_a, mut on_b) = (a.client().await.unwrap(), b.client().await.unwrap());
    let mut watch_a = on_a.watch_users(everyone(1)).await.unwrap().into_inner();
    let mut watch_b = on_b.watch_users(everyone(1)).await.unwrap().into_inner();

    // Both replicas take writes at the same time, several callers each.
    const PER_CALLER: usize = 25;
    let mut writers = Vec::new();
    for (replica, client) in [(0, &on_a), (1, &on_b)] {
        for caller in 0..4 {
            let mut client = client.clone();
            writers.push(tokio::spawn(async move {
                let mut revisions = Vec::new();
                for i in 0..PER_CALLER {
                    let name = format!("r{replica}c{caller}n{i}");
                    let created = create(&mut client, &name).await;
                    revisions.push(created.etag.parse::<i64>().unwrap());
                }
                revisions
            }));
        }
    }
    let mut acknowledged = BTreeSet::new();
    for writer in writers {
        for revision in writer.await.unwrap() {
            assert!(
                acknowledged.insert(revision),
                "revision {revision} given twice"
            );
        }
    }
    let total = 8 * PER_CALLER;
    assert_eq!(
        acknowledged,
        (1..=total as i64).collect(),
        "every write got the next revision: none skipped, none shared"
    );

    let seen_a = events(&mut watch_a, total).await;
    let seen_b = events(&mut watch_b, total).await;
    let revisions: Vec<i64> = seen_a.iter().map(|event| event.revision).collect();
    assert_eq!(
        revisions,
        (1..=total as i64).collect::<Vec<_>>(),
        "replica A's watcher"
    );
    assert_eq!(
        seen_a, seen_b,
        "both watchers saw the same events, in the same order"
    );
}

#[tokio::test]
async fn a_watch_resumed_on_the_other_replica_continues_exactly() {
    let database = TestDatabase::postgres();
    let (a, b) = (replica(&database), replica(&database));
    let (mut on_a, mut on_b) = (a.client().await.unwrap(), b.client().await.unwrap());
    let mut watch = on_a.watch_users(everyone(1)).await.unwrap().into_inner();
    for i in 0..5 {
        create(&mut on_a, &format!("first{i}")).await;
    }
    let seen = events(&mut watch, 3).await;
    drop(watch);
    for i in 0..5 {
        create(&mut on_b, &format!("second{i}")).await;
    }

    let resume_from = seen.last().unwrap().revision + 1;
    let mut resumed = on_b
        .watch_users(everyone(resume_from))
        .await
        .unwrap()
        .into_inner();
    let rest = events(&mut resumed, 7).await;
    let revisions: Vec<i64> = rest.iter().map(|event| event.revision).collect();
    assert_eq!(revisions, (4..=10).collect::<Vec<_>>());
}

/// Calls `call` on the other replica until it fails with `code`, and returns how long after
/// `acknowledged` that came; fails the test if it takes a second or more. (Another answer
/// may come first: a deleted user's own record is NOT_FOUND a moment before the replica
/// applies the deletion to the token's user.)
async fn refused_within_a_second<F, Fut>(acknowledged: Instant, code: Code, mut call: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>>,
{
    loop {
        let answer = call().await;
        if answer.as_ref().is_err_and(|status| status.code() == code) {
            return acknowledged.elapsed();
        }
        assert!(
            acknowledged.elapsed() < Duration::from_secs(1),
            "the token still works on the other replica 1 s after the change: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn a_suspended_demoted_or_deleted_users_token_stops_working_on_the_other_replica() {
    let database = TestDatabase::postgres();
    let (a, b) = (replica(&database), replica(&database));
    let mut admin_a = a.client().await.unwrap();
    let mut taken = Vec::new();

    // Suspended: UNAUTHENTICATED.
    let ann = create(&mut admin_a, "ann").await;
    let mut ann_on_b = client_as(&b, &b.token(&ann.id, Role::User)).await;
    let own = GetUserRequest {
        user_id: ann.id.clone(),
    };
    ann_on_b
        .get_user(own.clone())
        .await
        .expect("the token works before");
    admin_a
        .update_user(UpdateUserRequest {
            user_id: ann.id.clone(),
            status: Some(UserStatus::Suspended as i32),
            ..Default::default()
        })
        .await
        .unwrap();
    let took = refused_within_a_second(Instant::now(), Code::Unauthenticated, || {
        let (mut client, request) = (ann_on_b.clone(), own.clone());
        async move { client.get_user(request).await.map(drop) }
    })
    .await;
    taken.push(("suspended", took));

    // Demoted from admin: listing users is no longer allowed.
    let boss = create_with_role(&mut admin_a, "boss", UserRole::Admin).await;
    let mut boss_on_b = client_as(&b, &b.token(&boss, Role::Admin)).await;
    let list = ListUsersRequest::default();
    boss_on_b
        .list_users(list.clone())
        .await
        .expect("an admin lists");
    admin_a
        .update_user(UpdateUserRequest {
            user_id: boss.clone(),
            role: Some(UserRole::User as i32),
            ..Default::default()
        })
        .await
        .unwrap();
    let took = refused_within_a_second(Instant::now(), Code::PermissionDenied, || {
        let (mut client, request) = (boss_on_b.clone(), list.clone());
        async move { client.list_users(request).await.map(drop) }
    })
    .await;
    taken.push(("demoted", took));

    // Deleted: UNAUTHENTICATED.
    let cleo = create(&mut admin_a, "cleo").await;
    let mut cleo_on_b = client_as(&b, &b.token(&cleo.id, Role::User)).await;
    let own = GetUserRequest {
        user_id: cleo.id.clone(),
    };
    cleo_on_b
        .get_user(own.clone())
        .await
        .expect("the token works before");
    admin_a
        .delete_user(DeleteUserRequest {
            user_id: cleo.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let took = refused_within_a_second(Instant::now(), Code::Unauthenticated, || {
        let (mut client, request) = (cleo_on_b.clone(), own.clone());
        async move { client.get_user(request).await.map(drop) }
    })
    .await;
    taken.push(("deleted", took));
    println!("refused on the other replica after the change was acknowledged: {taken:?}");
}

#[tokio::test]
async fn a_session_ended_on_one_replica_stops_working_on_the_other() {
    let database = TestDatabase::postgres();
    let (a, b) = (replica(&database), replica(&database));
    let mut admin_a = a.client().await.unwrap();
    let mut taken = Vec::new();
    let dora = create(&mut admin_a, "dora").await;
    let own = GetUserRequest {
        user_id: dora.id.clone(),
    };
    let login = || async {
        AuthServiceClient::new(a.channel().await.unwrap())
            .login(LoginRequest {
                username: "dora".into(),
                password: "correct horse battery".into(),
                ..Default::default()
            })
            .await
            .expect("login on replica A")
            .into_inner()
    };

    // Logout on A.
    let session = login().await;
    let mut on_b = client_as(&b, &session.access_token).await;
    on_b.get_user(own.clone())
        .await
        .expect("the token works on B");
    AuthServiceClient::with_interceptor(
        a.channel().await.unwrap(),
        Bearer::new(Some(&session.access_token)).unwrap(),
    )
    .logout(LogoutRequest {})
    .await
    .expect("logout on A");
    let took = refused_within_a_second(Instant::now(), Code::Unauthenticated, || {
        let (mut client, request) = (on_b.clone(), own.clone());
        async move { client.get_user(request).await.map(drop) }
    })
    .await;
    taken.push(("logout", took));

    // A password change on A, for a session and for a token without one.
    let session = login().await;
    let mut on_b = client_as(&b, &session.access_token).await;
    let mut minted_on_b = client_as(&b, &b.token(&dora.id, Role::User)).await;
    on_b.get_user(own.clone())
        .await
        .expect("the token works on B");
    minted_on_b
        .get_user(own.clone())
        .await
        .expect("the minted token works on B");
    AuthServiceClient::with_interceptor(
        a.channel().await.unwrap(),
        Bearer::new(Some(&session.access_token)).unwrap(),
    )
    .change_password(ChangePasswordRequest {
        current_password: "correct horse battery".into(),
        new_password: "something else entirely".into(),
        ..Default::default()
    })
    .await
    .expect("a password change on A");
    let changed = Instant::now();
    for (what, client) in [
        ("password change", &on_b),
        ("password change, minted", &minted_on_b),
    ] {
        let took = refused_within_a_second(changed, Code::Unauthenticated, || {
            let (mut client, request) = (client.clone(), own.clone());
            async move { client.get_user(request).await.map(drop) }
        })
        .await;
        taken.push((what, took));
    }
    println!("refused on the other replica after the session ended: {taken:?}");
}

#[tokio::test]
async fn replicas_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let database = TestDatabase::postgres();
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let url = database.url().to_owned();
            std::thread::spawn(move || ServerProcess::start_on_url(&url, &[]))
        })
        .collect();
    let servers: Vec<ServerProcess> = starts.into_iter().map(|s| s.join().unwrap()).collect();
    let applied = servers
        .iter()
        .filter(|server| !server.logged("applied database migration").is_empty())
        .count();
    assert_eq!(
        applied, 1,
        "one replica applied the migrations, the others found them done"
    );
    drop(servers);

    database.postgres_exec("UPDATE schema_version SET version = 99");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_user-service"))
        .args(["--listen", "127.0.0.1:0", "--database-url", database.url()])
        .env("USER_SERVICE_JWT_SECRET", crate::helpers::TEST_SECRET)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("schema is version 99, newer than this server knows"),
        "{stderr}"
    );
}

/// The server's health, as a watch of every change.
pub async fn health(
    server: &ServerProcess,
) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    HealthClient::new(server.channel().await.unwrap())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn next_status(
    stream: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
    within: Duration,
) -> i32 {
    tokio::time::timeout(within, stream.message())
        .await
        .expect("health changes in time")
        .unwrap()
        .unwrap()
        .status
}

// The proxy runs on the test's runtime while the harness blocks reading the server's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_the_database_answers_unavailable_and_recovers_by_itself() {
    let database = TestDatabase::postgres();
    let proxy = Proxy::start(database.postgres_addr()).await;
    let cut_off = ServerProcess::start_on_url(
        &database.url_through(proxy.port),
        &[
            "--database-connect-timeout-secs",
            "1",
            "--rate-limit-per-second",
            "0",
        ],
    );
    let other = replica(&database);
    let mut client = cut_off.client().await.unwrap();
    let mut other_client = other.client().await.unwrap();
    let before = create(&mut client, "before").await;
    let mut watch = client.watch_users(everyone(1)).await.unwrap().into_inner();
    assert_eq!(next_event(&mut watch).await.revision, 1);
    let mut health = health(&cut_off).await;
    assert_eq!(
        next_status(&mut health, Duration::from_secs(5)).await,
        ServingStatus::Serving as i32
    );

    proxy.cut();
    let started = Instant::now();
    assert_eq!(
        next_status(&mut health, Duration::from_secs(5)).await,
        ServingStatus::NotServing as i32,
        "health turns NOT_SERVING"
    );
    println!("NOT_SERVING {:?} after the cut", started.elapsed());
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the watch ends in time")
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        ended
            .message()
            .contains("resume the watch with start_revision 2"),
        "{}",
        ended.message()
    );
    let mut deadline = tonic::Request::new(GetUserRequest {
        user_id: before.id.clone(),
    });
    deadline.set_timeout(Duration::from_secs(3));
    let call = Instant::now();
    let refused = client.get_user(deadline).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        call.elapsed() < Duration::from_secs(3),
        "answered before the deadline"
    );
    let refused = client.create_user(new_user("during")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // Meanwhile the other replica writes; the cut-off one must not miss it.
    let during = create(&mut other_client, "whileout").await;

    proxy.restore();
    assert_eq!(
        next_status(&mut health, Duration::from_secs(10)).await,
        ServingStatus::Serving as i32,
        "health recovers by itself"
    );
    let fetched = client
        .get_user(GetUserRequest {
            user_id: during.id.clone(),
        })
        .await
        .expect("calls work again")
        .into_inner()
        .user;
    assert_eq!(fetched, Some(during.clone()));
    let mut resumed = client.watch_users(everyone(2)).await.unwrap().into_inner();
    let event = next_event(&mut resumed).await;
    assert_eq!(event.revision, 2, "the resumed watch misses nothing");
    assert_eq!(event.user, Some(during));
    let fetched = client
        .get_user(GetUserRequest {
            user_id: before.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .user;
    assert_eq!(
        fetched,
        Some(before),
        "what was acknowledged before the outage is there"
    );
}

/// `count` wrong passwords for `username` sent all at once, alternately to each replica, from
/// one address or (through the trusted proxy 127.0.0.1) each from its own: the codes they got.
async fn guesses_across(
    replicas: [&ServerProcess; 2],
    username: &str,
    count: usize,
    spread: bool,
) -> Vec<Code> {
    let channels = [
        replicas[0].channel().await.unwrap(),
        replicas[1].channel().await.unwrap(),
    ];
    let guesses = (0..count).map(|i| {
        let mut client = AuthServiceClient::new(channels[i % 2].clone());
        let mut request = tonic::Request::new(LoginRequest {
            username: username.into(),
            password: format!("guess number {i}"),
            ..Default::default()
        });
        if spread {
            let address = format!("198.51.100.{}", i % 250 + 1);
            request
                .metadata_mut()
                .insert("x-forwarded-for", address.parse().unwrap());
        }
        async move {
            client
                .login(request)
                .await
                .map_or_else(|status| status.code(), |_| Code::Ok)
        }
    });
    futures_util::future::join_all(guesses).await
}

#[tokio::test]
async fn wrong_passwords_sent_in_parallel_to_two_replicas_are_each_counted_once() {
    let database = TestDatabase::postgres();
    // Each of 100 addresses guesses once: the account-wide limit (200 a minute) counts them all.
    let limits = [
        "--rate-limit-per-second",
        "0",
        "--login-attempts-per-minute",
        "20",
        "--trusted-proxy",
        "127.0.0.1",
    ];
    let (a, b) = (
        ServerProcess::start_with(&database, &[], &limits),
        ServerProcess::start_with(&database, &[], &limits),
    );
    let owner = create(&mut a.client().await.unwrap(), "besieged").await;

    let codes = guesses_across([&a, &b], "besieged", 100, true).await;
    assert!(
        codes.iter().all(|code| *code == Code::Unauthenticated),
        "every guess was checked: {codes:?}"
    );
    let admin = a.token("test-admin", Role::Admin);
    let mut auth = AuthServiceClient::with_interceptor(
        b.channel().await.unwrap(),
        Bearer::new(Some(&admin)).unwrap(),
    );
    let failures = auth
        .clear_login_failures(ClearLoginFailuresRequest {
            user_id: owner.id.clone(),
        })
        .await
        .expect("an admin clears the failures on the other replica")
        .into_inner()
        .failures;
    assert_eq!(failures, 100, "both replicas' guesses, each counted once");
}

#[tokio::test]
async fn the_login_limit_bites_at_the_same_count_on_two_replicas_as_on_one() {
    let database = TestDatabase::postgres();
    let limits = [
        "--rate-limit-per-second",
        "0",
        "--login-attempts-per-minute",
        "10",
    ];
    let (a, b) = (
        ServerProcess::start_with(&database, &[], &limits),
        ServerProcess::start_with(&database, &[], &limits),
    );
    create(&mut a.client().await.unwrap(), "guarded").await;

    let started = Instant::now();
    let codes = guesses_across([&a, &b], "guarded", 40, false).await;
    // One attempt refills every six seconds; on a slow machine a few may have.
    let refilled = usize::try_from(started.elapsed().as_secs() / 6).unwrap();
    let checked = codes
        .iter()
        .filter(|code| **code == Code::Unauthenticated)
        .count();
    let limited = codes
        .iter()
        .filter(|code| **code == Code::ResourceExhausted)
        .count();
    assert_eq!(checked + limited, 40, "only checked or limited: {codes:?}");
    assert!(
        (10..=10 + refilled).contains(&checked),
        "ten attempts from this address, however many replicas share them (plus {refilled} refilled): {checked} were checked"
    );
}

#[tokio::test]
async fn a_key_revoked_on_one_replica_is_refused_on_the_other_within_a_second() {
    use user_service::pb::{CreateServiceKeyRequest, RevokeServiceKeyRequest};
    let database = TestDatabase::postgres();
    let (a, b) = (replica(&database), replica(&database));
    let admin = a.token("test-admin", Role::Admin);
    let mut admin_a = AuthServiceClient::with_interceptor(
        a.channel().await.unwrap(),
        Bearer::new(Some(&admin)).unwrap(),
    );
    let created = admin_a
        .create_service_key(CreateServiceKeyRequest {
            name: "everywhere".into(),
            role: UserRole::Admin as i32,
            expires_at: None,
        })
        .await
        .expect("an admin creates a key on A")
        .into_inner();
    let mut on_b = client_as(&b, &created.secret).await;
    on_b.list_users(ListUsersRequest::default())
        .await
        .expect("the key works on B, which verified it and keeps it");

    admin_a
        .revoke_service_key(RevokeServiceKeyRequest {
            key_id: created.key.unwrap().id,
        })
        .await
        .expect("revoked on A");
    let revoked = Instant::now();
    loop {
        match on_b.list_users(ListUsersRequest::default()).await {
            Err(status) if status.code() == Code::Unauthenticated => break,
            answer => assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "B still accepts the key a second after A revoked it: {answer:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("B refused the revoked key after {:?}", revoked.elapsed());
}

#[tokio::test]
async fn a_code_asked_for_on_one_replica_is_delivered_by_the_other() {
    use user_service::pb::{StartRecoveryRequest, WatchDeliveriesRequest};
    let database = TestDatabase::postgres();
    let (a, b) = (replica(&database), replica(&database));
    let user = create(&mut a.client().await.unwrap(), "two_sided").await;
    let mailer = b.token("mailer", Role::Admin);
    let mut deliveries = AuthServiceClient::with_interceptor(
        b.channel().await.unwrap(),
        Bearer::new(Some(&mailer)).unwrap(),
    )
    .watch_deliveries(WatchDeliveriesRequest::default())
    .await
    .expect("the mailer reads deliveries on B")
    .into_inner();
    AuthServiceClient::new(a.channel().await.unwrap())
        .start_recovery(StartRecoveryRequest {
            login: "two_sided".into(),
        })
        .await
        .expect("asked on A");
    let delivery = tokio::time::timeout(Duration::from_secs(5), deliveries.message())
        .await
        .expect("B delivers within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.user_id, user.id);
}

async fn login_on(server: &ServerProcess, username: &str) -> String {
    AuthServiceClient::new(server.channel().await.unwrap())
        .login(LoginRequest {
            username: username.into(),
            password: "correct horse battery".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .access_token
}

#[tokio::test]
async fn a_rotation_started_on_one_replica_is_published_by_both_and_signs_on_both_from_its_instant()
{
    use user_service::pb::RotateSigningKeyRequest;

    use crate::oidc::{jwks_at, kid_of};
    const AHEAD: &str = "3s";
    let database = TestDatabase::postgres();
    let args = [
        "--rate-limit-per-second",
        "0",
        "--signing-key-publish-ahead",
        AHEAD,
    ];
    let (a, b) = (
        ServerProcess::start_with(&database, &[], &args),
        ServerProcess::start_with(&database, &[], &args),
    );
    let user = create(&mut a.client().await.unwrap(), "rotating").await;
    let (old_a, old_b) = (
        login_on(&a, "rotating").await,
        login_on(&b, "rotating").await,
    );
    let old = kid_of(&old_a);
    assert_eq!(
        kid_of(&old_b),
        old,
        "both replicas sign with the key in the database"
    );

    let keys = AuthServiceClient::with_interceptor(
        a.channel().await.unwrap(),
        Bearer::new(Some(&a.token("test-admin", Role::Admin))).unwrap(),
    )
    .rotate_signing_key(RotateSigningKeyRequest {})
    .await
    .unwrap()
    .into_inner()
    .keys;
    let next = keys
        .iter()
        .find(|key| key.state == "next")
        .expect("a next key");
    let at = next.activates_at.unwrap();
    let activates = std::time::UNIX_EPOCH
        + Duration::new(
            u64::try_from(at.seconds).unwrap(),
            u32::try_from(at.nanos).unwrap(),
        );
    // B reads the new key on its next pass (a quarter of the publish-ahead), well before it signs.
    let published_by_b = loop {
        if jwks_at(b.addr()).await.find(&next.kid).is_some() {
            break std::time::SystemTime::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        published_by_b < activates,
        "B publishes the key before it signs"
    );
    assert_eq!(
        kid_of(&login_on(&b, "rotating").await),
        old,
        "not signing before its instant"
    );

    let wait = activates
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(300)).await;
    for (name, server) in [("A", &a), ("B", &b)] {
        assert_eq!(
            kid_of(&login_on(server, "rotating").await),
            next.kid,
            "{name} signs with the new key"
        );
        for old_token in [&old_a, &old_b] {
            client_as(server, old_token)
                .await
                .get_user(GetUserRequest {
                    user_id: user.id.clone(),
                })
                .await
                .unwrap_or_else(|status| {
                    panic!("{name}: an old key's token still works: {status:?}")
                });
        }
    }
}
