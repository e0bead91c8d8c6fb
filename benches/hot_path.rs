//! GetUser through the full middleware stack (access log, JWT auth, rate limit with a high
//! limit, load shedding), with the access log on and off. Prints figures; asserts nothing.
//!
//! The access log writes real formatted lines (to a sink) when on, so the figure includes
//! the cost of formatting them.

use std::time::{Duration, Instant};

use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use user_service::config::Settings;
use user_service::domain::Role;
use user_service::password::Argon2Settings;
use user_service::pb::user_service_client::UserServiceClient;
use user_service::pb::{CreateUserRequest, GetUserRequest};
use user_service::startup::Application;

const USERS: usize = 1_000;
const CONNECTIONS: usize = 4;
const CONCURRENCY: usize = 32;
const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 2;

struct Figures {
    calls_per_second: f64,
    p50_us: u32,
    p99_us: u32,
}

fn settings(database: &std::path::Path, access_log: bool) -> Settings {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        access_log,
        ..Settings::default()
    };
    settings.storage.database_url = format!("sqlite://{}", database.display());
    settings.argon2 = Argon2Settings {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    settings.jwt.secret = Some(b"a-benchmark-secret-that-is-long-enough".to_vec());
    settings.rate_limit_per_second = 1_000_000;
    settings.rate_limit_burst = 1_000_000;
    settings
}

async fn measure(database: &std::path::Path, access_log: bool, seed: bool) -> Figures {
    let app = Application::build(settings(database, access_log))
        .await
        .unwrap();
    let addr = app.local_addr();
    let (token, _) = app.jwt().mint("bench", Role::Admin, None).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));

    let bearer: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel: Channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        channels.push(channel);
    }
    let client = |channel: Channel| {
        let bearer = bearer.clone();
        UserServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        })
    };

    let mut admin = client(channels[0].clone());
    if seed {
        let requests = (0..USERS).map(|i| CreateUserRequest {
            username: format!("bench{i}"),
            email: format!("bench{i}@example.com"),
            full_name: format!("Bench User {i}"),
            password: "benchmark password".into(),
            role: 0,
            metadata: [("team".to_string(), "bench".to_string())].into(),
        });
        let response = admin
            .batch_create_users(tokio_stream::iter(requests.collect::<Vec<_>>()))
            .await
            .unwrap()
            .into_inner();
        assert!(response.errors.is_empty(), "{:?}", response.errors);
    }
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_users(user_service::pb::ListUsersRequest {
                page_size: 100,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.users.into_iter().map(|user| user.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let ids = std::sync::Arc::new(ids);

    let started = Instant::now();
    let deadline = started + ROUND;
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let mut client = client(channels[worker % CONNECTIONS].clone());
            let ids = ids.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut next = worker * 7919;
                while Instant::now() < deadline {
                    next = (next * 31 + 17) % ids.len();
                    let call = Instant::now();
                    client
                        .get_user(GetUserRequest {
                            user_id: ids[next].clone(),
                        })
                        .await
                        .expect("GetUser succeeds");
                    latencies.push(u32::try_from(call.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let figures = Figures {
        calls_per_second: latencies.len() as f64 / elapsed,
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
    };
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    figures
}

fn main() {
    // Access log lines are formatted for real and thrown away.
    tracing_subscriber::fmt()
        .with_env_filter("user_service::access=info")
        .with_writer(std::io::sink)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("bench.db");
    println!(
        "GetUser through the full stack: {USERS} users, {CONNECTIONS} connections, {CONCURRENCY} concurrent callers, {ROUNDS} rounds of {}s each (best round shown)",
        ROUND.as_secs()
    );
    println!("(users are seeded through BatchCreateUsers with the cheapest Argon2 settings)");
    println!(
        "{:<16} {:>12} {:>10} {:>10}",
        "access log", "calls/s", "p50 µs", "p99 µs"
    );
    let mut best: [Option<Figures>; 2] = [None, None];
    for round in 0..ROUNDS {
        for (slot, access_log) in [true, false].into_iter().enumerate() {
            let figures = runtime.block_on(measure(&database, access_log, round == 0 && slot == 0));
            if best[slot]
                .as_ref()
                .is_none_or(|b| figures.calls_per_second > b.calls_per_second)
            {
                best[slot] = Some(figures);
            }
        }
    }
    for (label, figures) in ["on", "off"].iter().zip(&best) {
        let f = figures.as_ref().unwrap();
        println!(
            "{label:<16} {:>12.0} {:>10} {:>10}",
            f.calls_per_second, f.p50_us, f.p99_us
        );
    }
    let (on, off) = (best[0].as_ref().unwrap(), best[1].as_ref().unwrap());
    println!(
        "access log on/off throughput ratio: {:.3}",
        on.calls_per_second / off.calls_per_second
    );
}
