//! Failures that stay silent: a database link that holds connections open and forwards
//! nothing (a blackhole), and start-up while no writable database answers. These always run
//! on PostgreSQL, through a proxy the test owns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use user_service::pb::{GetUserRequest, UpdateUserRequest};

use crate::helpers::{Client, Proxy, ServerProcess, TestDatabase, create};
use crate::replicas::health;
use crate::watch::{everyone, next_event};

/// Flags for a replica that these tests drive hard.
const UNLIMITED: [&str; 2] = ["--rate-limit-per-second", "0"];
/// The deadline each write on the cut-off replica carries.
const WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// How late after its caller's deadline another replica's watcher may see a commit and still
/// count it as made before the deadline (the watcher's own delay).
const SEEN_SLACK: Duration = Duration::from_millis(500);

/// Waits for health to report `wanted`, returning how long that took.
async fn until_status(
    stream: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
    wanted: ServingStatus,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let status =
            tokio::time::timeout(within.saturating_sub(started.elapsed()), stream.message())
                .await
                .unwrap_or_else(|_| panic!("health reports {wanted:?} within {within:?}"))
                .expect("the health watch stays open")
                .expect("the health watch stays open")
                .status;
        if status == wanted as i32 {
            return started.elapsed();
        }
    }
}

/// A write the cut-off replica's writer was told failed: the name it tried to set and when
/// its caller's deadline passed.
struct Refused {
    full_name: String,
    deadline: Instant,
    code: Code,
}

/// Renames one user over and over on `client`, each call with `WRITE_DEADLINE`, until
/// `stop`; returns the writes it was told failed.
async fn write_until(
    mut client: Client,
    user_id: String,
    tag: &'static str,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> Vec<Refused> {
    let mut refused = Vec::new();
    let mut attempt = 0u64;
    while !stop.load(Ordering::Relaxed) {
        attempt += 1;
        let full_name = format!("{tag} {attempt}");
        let mut request = tonic::Request::new(UpdateUserRequest {
            user_id: user_id.clone(),
            full_name: Some(full_name.clone()),
            ..Default::default()
        });
        request.set_timeout(WRITE_DEADLINE);
        let deadline = Instant::now() + WRITE_DEADLINE;
        match client.update_user(request).await {
            Ok(_) => {
                done.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => {
                // CANCELLED: the client's own timer on the same deadline fired first.
                assert!(
                    matches!(
                        status.code(),
                        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                    ),
                    "a write during the outage fails as retryable: {status:?}"
                );
                refused.push(Refused {
                    full_name,
                    deadline,
                    code: status.code(),
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    refused
}

/// Writes made per second by a writer over `window`.
async fn rate(done: &AtomicU64, window: Duration) -> f64 {
    let before = done.load(Ordering::Relaxed);
    tokio::time::sleep(window).await;
    (done.load(Ordering::Relaxed) - before) as f64 / window.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_database_link_goes_silent_fails_fast_and_never_stops_the_other() {
    // Arrange: replica A reaches PostgreSQL through a proxy; B directly. Writers on both.
    let database = TestDatabase::postgres();
    let proxy = Proxy::start(database.postgres_addr()).await;
    let silent = ServerProcess::start_on_url(&database.url_through(proxy.port), &UNLIMITED);
    let other = ServerProcess::start_with(&database, &[], &UNLIMITED);
    let mut silent_client = silent.client().await.unwrap();
    let mut other_client = other.client().await.unwrap();
    let on_silent = create(&mut silent_client, "onsilent").await;
    let on_other = create(&mut other_client, "onother").await;

    // Every commit, as the healthy replica sees it, with when it was seen.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut all = other_client
        .watch_users(everyone(1))
        .await
        .unwrap()
        .into_inner();
    let recorder = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = all.next().await {
                if let Some(user) = event.user {
                    seen.lock().unwrap().insert(user.full_name, Instant::now());
                }
            }
        })
    };
    let mut watch = silent_client
        .watch_users(everyone(1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_event(&mut watch).await.revision, 1);
    let mut health = health(&silent).await;
    until_status(&mut health, ServingStatus::Serving, Duration::from_secs(5)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (silent_done, other_done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let silent_writer = tokio::spawn(write_until(
        silent.client().await.unwrap(),
        on_silent.id.clone(),
        "silent",
        stop.clone(),
        silent_done.clone(),
    ));
    let other_writer = tokio::spawn(write_until(
        other.client().await.unwrap(),
        on_other.id.clone(),
        "other",
        stop.clone(),
        other_done.clone(),
    ));
    let before = rate(&other_done, Duration::from_secs(2)).await;
    assert!(
        silent_done.load(Ordering::Relaxed) > 0,
        "the writer on the proxied replica writes before the fault"
    );

    // Act: the link goes silent.
    proxy.blackhole();
    let cut = Instant::now();

    // Assert: health tells the truth within 3 s.
    let turned = until_status(
        &mut health,
        ServingStatus::NotServing,
        Duration::from_secs(3),
    )
    .await;
    println!("NOT_SERVING {turned:?} after the link went silent");

    // A call without a deadline fails within the operation bound (5 s), not forever.
    let call = Instant::now();
    let refused = silent_client
        .get_user(GetUserRequest {
            user_id: on_other.id.clone(),
        })
        .await
        .expect_err("a read through a silent link fails");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let took = call.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "answered within the bound: {took:?}"
    );
    println!("a read without a deadline answered UNAVAILABLE after {took:?}");

    // The watch ends UNAVAILABLE, naming where to resume (after the events it still had).
    let ended = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the watch ends UNAVAILABLE, not cleanly"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the watch ends in time");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    let resume_from: i64 = ended
        .message()
        .rsplit("start_revision ")
        .next()
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("the watch names its resume point: {}", ended.message()));

    // The healthy replica keeps writing: its rate from 5 s after the fault on.
    let settle = Duration::from_secs(5).saturating_sub(cut.elapsed());
    tokio::time::sleep(settle).await;
    let during = rate(&other_done, Duration::from_secs(3)).await;
    println!(
        "the other replica's writes: {before:.0}/s before, {during:.0}/s 5-8 s into the fault ({:.2})",
        during / before
    );
    assert!(
        during >= 0.8 * before,
        "the other replica keeps at least 80% of its write rate: {before:.0}/s before, {during:.0}/s during"
    );

    // Heal.
    proxy.restore();
    let back = until_status(&mut health, ServingStatus::Serving, Duration::from_secs(15)).await;
    println!("SERVING again {back:?} after the heal");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let refused_writes = silent_writer.await.unwrap();
    other_writer.await.unwrap();
    assert!(
        !refused_writes.is_empty(),
        "the writer on the silent replica saw failures"
    );
    // Let any commit still in flight reach the watcher, then stop recording.
    tokio::time::sleep(Duration::from_secs(2)).await;
    recorder.abort();

    // Nothing a caller was told failed was committed after its deadline.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let mut late = Vec::new();
    let mut committed_anyway = 0;
    for write in &refused_writes {
        if let Some(at) = seen.get(&write.full_name) {
            committed_anyway += 1;
            if *at > write.deadline + SEEN_SLACK {
                late.push(format!(
                    "{:?} ({:?}) seen {:?} after its deadline",
                    write.full_name,
                    write.code,
                    *at - write.deadline
                ));
            }
        }
    }
    println!(
        "{} writes told they failed; {committed_anyway} of them committed before their deadline passed",
        refused_writes.len()
    );
    assert!(
        late.is_empty(),
        "committed after the caller's deadline: {late:?}"
    );

    // A watch resumed where the ended one said continues exactly.
    let mut resumed = silent_client
        .watch_users(everyone(resume_from))
        .await
        .unwrap()
        .into_inner();
    let first = next_event(&mut resumed).await;
    assert_eq!(
        first.revision, resume_from,
        "the resumed watch starts where it was told"
    );
    let second = next_event(&mut resumed).await;
    assert_eq!(second.revision, resume_from + 1, "and misses nothing after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_waits_for_a_writable_database_saying_why_and_serves_once_one_answers() {
    // Arrange: the only database the URL reaches refuses writes, as a standby does.
    let database = TestDatabase::postgres();
    let read_only = format!(
        "{}{}options=-c%20default_transaction_read_only%3Don",
        database.url(),
        if database.url().contains('?') {
            '&'
        } else {
            '?'
        }
    );
    let waiting = ServerProcess::start_on_url(&read_only, &UNLIMITED);

    // Assert: it stays up, says why in one line per try, and health says NOT_SERVING.
    let said = waiting.wait_for_log("the database is not ready");
    assert!(said.contains("read-only"), "the line says why: {said}");
    let mut health = HealthClient::new(waiting.channel().await.unwrap());
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers while waiting")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::NotServing as i32);
    assert!(
        waiting.logged("CREATE TABLE").is_empty(),
        "no driver error is logged raw"
    );

    // Through a proxy that is down, then up: the server comes up by itself.
    let proxy = Proxy::start(database.postgres_addr()).await;
    proxy.cut();
    let server = ServerProcess::start_on_url(&database.url_through(proxy.port), &UNLIMITED);
    server.wait_for_log("the database is not ready");
    proxy.restore();
    let mut client = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Ok(mut client) = server.client().await
                && client
                    .get_user(GetUserRequest {
                        user_id: uuid::Uuid::nil().to_string(),
                    })
                    .await
                    .is_err_and(|status| status.code() == Code::NotFound)
            {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the server serves once the database answers");
    create(&mut client, "afterwait").await;
}

/// Runs the server on `setting` until it gives up on the database; what it wrote to stderr.
fn refused_output(setting: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_user-service"))
        .args(["--listen", "127.0.0.1:0", "--database-url", setting])
        .args(["--database-startup-wait-secs", "1"])
        .env("USER_SERVICE_JWT_SECRET", crate::helpers::TEST_SECRET)
        .env("RUST_LOG", "debug")
        .output()
        .expect("the server binary runs");
    assert!(
        !output.status.success(),
        "{setting:?} does not start a server"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn no_refusal_of_a_database_setting_prints_its_password() {
    for setting in [
        // Parsed, but nothing listens there: start-up retries, then gives up.
        "host=127.0.0.1 port=1 user=app password=s3cret dbname=users",
        "postgres://app:s3cret@127.0.0.1:1/users",
        "postgresql://127.0.0.1:1/users?user=app&password=s3cret",
        // Not parsed at all.
        "host=127.0.0.1 password='s3cret dbname=users",
        "postgres://app:s3cret@127.0.0.1:notaport/users",
        "mysql://app:s3cret@127.0.0.1/users",
    ] {
        let said = refused_output(setting);
        assert!(
            !said.contains("s3cret"),
            "{setting:?} was refused as:\n{said}"
        );
        assert!(
            !said.trim().is_empty(),
            "{setting:?} is refused with a reason"
        );
    }
}
