//! The benchmark suite behind `make bench`. It prints every figure beside its target and the
//! ratio; it asserts nothing about speed. Loads come from `userctl bench`'s generator
//! (in-process), over several HTTP/2 connections. Servers run in this process where
//! throughput is compared, and as the real binary in a child process where the server's own
//! memory and start-up are measured.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status, Streaming};
use user_service::auth::hasher::{Argon2Settings, PasswordHasher};
use user_service::cli::bench::{self, BenchArgs, Report, Rpc};
use user_service::cli::{Bearer, Target};
use user_service::config::Settings;
use user_service::domain::{Actor, Email, FullName, Metadata, NewUser, Password, Role, Username};
use user_service::grpc::EventStream;
use user_service::pb::{
    self, user_service_server::UserService, user_service_server::UserServiceServer,
};
use user_service::storage::{BatchItem, StorageSettings, Store};
use user_service::tokens::{Jwt, JwtSettings};

mod binary;
mod creates;
mod get_user;
mod issuer;
mod listing;
mod logins;
mod postgres;
mod ten_million;
mod watch;

use binary::the_binary_on_a_million_users;
use creates::create_users;
use get_user::{get_user_latency, get_user_with_h2load, serve_ceiling_forever};
use issuer::issuer;
use listing::list_users_at_a_million;
use logins::logins;
use postgres::postgres;
use ten_million::ten_million;
use watch::watch_fan_out;

// The harness the integration tests use: each uses part of it.
#[allow(dead_code, unused_imports)]
#[path = "../../tests/support/mod.rs"]
mod support;
use support::{ServerProcess, TEST_SECRET, TestApp, TestDatabase, grpc_frame};

const CHEAPEST: Argon2Settings = Argon2Settings {
    memory_kib: 8,
    iterations: 1,
    parallelism: 1,
};

/// One line of the final table.
struct Row {
    name: String,
    measured: String,
    target: String,
    verdict: String,
}

fn row(rows: &mut Vec<Row>, name: &str, measured: String, target: &str, verdict: String) {
    println!("  => {name}: {measured} (target {target}; {verdict})");
    rows.push(Row {
        name: name.into(),
        measured,
        target: target.into(),
        verdict,
    });
}

fn token() -> String {
    let settings = JwtSettings {
        secret: Some(TEST_SECRET.into()),
        token_ttl: Duration::from_secs(3600),
        ..Default::default()
    };
    Jwt::new(&settings)
        .unwrap()
        .mint("bench", Role::Admin, None)
        .unwrap()
        .0
}

fn target(addr: &str) -> Target {
    Target {
        addr: addr.into(),
        token: Some(token()),
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
        timeout: Duration::from_secs(30),
    }
}

fn load(rpc: Rpc, concurrency: usize, duration: Duration) -> BenchArgs {
    BenchArgs {
        rpc,
        concurrency: Some(concurrency),
        connections: 4,
        duration,
        page_token: String::new(),
        query: String::new(),
        page_size: 10,
        filter: String::new(),
        order_by: String::new(),
        ids: 100,
        updates: 0,
        max_error_ratio: 0.01,
    }
}

async fn measure(addr: &str, args: BenchArgs) -> Report {
    let report = bench::run(&target(addr), args)
        .await
        .expect("the load runs");
    if report.errors > 0 {
        println!("   (errors during the run: {})", report.summary());
    }
    report
}

fn settings(database: &Path, argon2: Argon2Settings) -> Settings {
    settings_on(&format!("sqlite://{}", database.display()), argon2)
}

fn settings_on(url: &str, argon2: Argon2Settings) -> Settings {
    let mut settings = Settings::default();
    settings.listener.addr = "127.0.0.1:0".parse().unwrap();
    settings.auth.argon2 = argon2;
    settings.storage.database_url = url.to_owned();
    settings.auth.jwt.secret = Some(TEST_SECRET.into());
    settings.limits.rate_limit_per_second = 1_000_000;
    settings.limits.rate_limit_burst = 1_000_000;
    settings.limits.max_batch_items = 1_000_000;
    settings.limits.max_concurrent_calls = 100_000;
    settings
}

/// Seeds `count` users straight through the storage layer with one shared password hash, so
/// seeding measures storage, not hashing. Returns a page token for the last page.
async fn seed(database: &Path, count: usize) -> String {
    seed_url(&format!("sqlite://{}", database.display()), count).await
}

/// `seed` on the database at `url`.
async fn seed_url(url: &str, count: usize) -> String {
    let store = Store::open(&StorageSettings {
        database_url: url.to_owned(),
        ..StorageSettings::default()
    })
    .await
    .unwrap();
    let hasher = PasswordHasher::new(CHEAPEST).unwrap();
    let hash = hasher
        .hash(Password::parse("seeded password".into()).unwrap())
        .await
        .unwrap();
    let mut last_page = String::new();
    let mut made = 0;
    while made < count {
        let chunk = (count - made).min(10_000);
        let items = (made..made + chunk)
            .map(|i| BatchItem {
                position: i,
                user: NewUser {
                    username: Username::parse(format!("seed{i}")).unwrap(),
                    email: Email::parse(format!("seed{i}@example.com")).unwrap(),
                    full_name: FullName::parse(format!("Seeded User {i}")).unwrap(),
                    password_hash: hash.clone(),
                    role: Role::User,
                    status: user_service::domain::UserStatus::Active,
                    metadata: Metadata::parse([("team".to_string(), "seed".to_string())]).unwrap(),
                    actor: Actor::Service("bench".into()),
                },
            })
            .collect();
        let outcomes = store.create_batch(items).await.unwrap();
        if made == 0 {
            // After the 11th-oldest user come the 10 oldest: the last page.
            let user = &outcomes[10.min(chunk - 1)].1.as_ref().unwrap().user;
            // The server seals its tokens under the key kept in the database: this one.
            let key = store
                .server_secret(user_service::storage::server_secrets::PAGE_TOKENS, [0; 32])
                .await
                .unwrap();
            last_page = user_service::grpc::page_token::encode(
                &user_service::grpc::page_token::TokenSeal::new(&key),
                user_service::storage::Cursor {
                    created_at_ns: user.created_at_ns,
                    id: user.id,
                },
                user_service::grpc::page_token::Filters {
                    status: None,
                    role: None,
                },
            );
        }
        made += chunk;
    }
    store.close().await.unwrap();
    last_page
}

/// A rate limit and a concurrency cap that no figure's calls reach.
const UNREACHED_LIMITS: [&str; 6] = [
    "--rate-limit-per-second",
    "1000000",
    "--rate-limit-burst",
    "1000000",
    "--max-concurrent-calls",
    "100000",
];

/// The real binary, as the tests start it, with limits that keep out of a benchmark's way,
/// and these flags besides.
fn server_process(database: &Path, flags: &[&str]) -> ServerProcess {
    server_process_on(&TestDatabase::sqlite_file(database), flags)
}

/// `server_process` on any database.
fn server_process_on(database: &TestDatabase, flags: &[&str]) -> ServerProcess {
    ServerProcess::start_with(
        database,
        &[("RUST_LOG", "warn,user_service::startup=info")],
        &[&["--argon2-memory-kib", "8"], &UNREACHED_LIMITS[..], flags].concat(),
    )
}

/// The full server in this process, as the tests start it, with these settings.
async fn in_process(settings: Settings) -> (TestApp, String) {
    let database = Path::new(
        settings
            .storage
            .database_url
            .trim_start_matches("sqlite://"),
    );
    let app = TestApp::start_with(Arc::new(TestDatabase::sqlite_file(database)), settings).await;
    let addr = format!("http://{}", app.addr);
    (app, addr)
}

/// Time from spawning the server to its first SERVING health answer.
async fn time_to_serving(database: &Path) -> (ServerProcess, Duration) {
    time_to_serving_on(&TestDatabase::sqlite_file(database)).await
}

/// `time_to_serving` on any database.
async fn time_to_serving_on(database: &TestDatabase) -> (ServerProcess, Duration) {
    let started = Instant::now();
    let server = server_process_on(database, &[]);
    let endpoint = tonic::transport::Endpoint::from_shared(server.url().to_owned()).unwrap();
    loop {
        if let Ok(channel) = endpoint.connect().await {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let request = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            if let Ok(response) = health.check(request).await
                && response.into_inner().status == 1
            {
                return (server, started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn verdict(value: f64, limit: f64, higher_is_better: bool) -> String {
    let met = if higher_is_better {
        value >= limit
    } else {
        value <= limit
    };
    if met { "met".into() } else { "NOT met".into() }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut args = std::env::args().skip_while(|arg| arg != SERVE_CEILING);
    if args.next().is_some() {
        let user = args.next().expect("the ceiling is given its user's file");
        runtime.block_on(serve_ceiling_forever(Path::new(&user)));
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter("user_service::access=info")
        .with_writer(std::io::sink)
        .init();
    // `cargo bench --bench suite -- WORD` runs only the figures whose name holds WORD.
    let only = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .unwrap_or_default();
    runtime.block_on(suite(&only));
}

/// The argument that makes this binary serve the ceiling, in a process of its own.
const SERVE_CEILING: &str = "--serve-ceiling";

/// What the figures share: where their databases live, and the table they add rows to.
struct Suite {
    dir: tempfile::TempDir,
    cores: usize,
    run: Duration,
    rows: Vec<Row>,
    /// 1,000 seeded users.
    small: PathBuf,
}

async fn suite(only: &str) {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.db");
    seed(&small, 1_000).await;
    let mut suite = Suite {
        dir,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        run: Duration::from_secs(5),
        rows: Vec::new(),
        small,
    };
    println!(
        "user-service benchmarks on {} cores (load generator and server share them)",
        suite.cores
    );
    println!(
        "Data is seeded through the storage layer where the API would only measure hashing.\n"
    );
    let wanted = |name: &str| only.is_empty() || name.contains(only);
    if wanted("get") {
        get_user_with_h2load(&mut suite).await;
        get_user_latency(&mut suite).await;
    }
    if wanted("list") || wanted("binary") {
        let large = list_users_at_a_million(&mut suite).await;
        if wanted("binary") {
            the_binary_on_a_million_users(&mut suite, &large).await;
        }
    }
    if wanted("create") {
        create_users(&mut suite).await;
    }
    if wanted("login") {
        logins(&mut suite).await;
    }
    if wanted("watch") {
        watch_fan_out(&mut suite).await;
    }
    if wanted("postgres") {
        postgres(&mut suite).await;
    }
    if wanted("ten") {
        ten_million(&mut suite).await;
    }
    if wanted("issuer") {
        issuer(&mut suite).await;
    }
    print_table(suite.rows);
}

/// Whether `tool` is on the path (it answers `--version`).
fn installed(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// Pins every thread of process `pid` to core 0.
fn pin_to_core_0(pid: u32) {
    let pinned = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("taskset runs");
    assert!(pinned.success(), "taskset could not pin process {pid}");
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The first user a listing shows, for the ceiling to answer with.
async fn one_user(addr: &str) -> pb::User {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    authorized(channel)
        .list_users(pb::ListUsersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .users
        .remove(0)
}

/// A ListUsers page with a query that matches 111 of 1,000 seeded users and 111,111 of
/// 1,000,000.
fn search_load(run: Duration) -> BenchArgs {
    BenchArgs {
        query: "SEED1".into(),
        ..load(Rpc::List, 8, run)
    }
}

/// The row for a page that must cost the same at a million users as at a thousand: p50 at
/// 1M / p50 at 1k, at most 1.5.
fn flat_row(suite: &mut Suite, what: &str, at_large: &Report, at_small: &Report) {
    let (large, small) = (at_large.percentile(0.5), at_small.percentile(0.5));
    let growth = large.as_secs_f64() / small.as_secs_f64();
    row(
        &mut suite.rows,
        &format!("{what} p50 at 1M / at 1k users"),
        format!("{large:?}/{small:?} = {growth:.2}"),
        "<= 1.5",
        verdict(growth, 1.5, false),
    );
}

fn print_table(rows: Vec<Row>) {
    println!(
        "\n{:<44} {:>32} {:>17}  verdict",
        "figure", "measured", "target"
    );
    for Row {
        name,
        measured,
        target,
        verdict,
    } in rows
    {
        println!("{name:<44} {measured:>32} {target:>17}  {verdict}");
    }
}

fn authorized(
    channel: tonic::transport::Channel,
) -> pb::user_service_client::UserServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
> {
    pb::user_service_client::UserServiceClient::with_interceptor(
        channel,
        Bearer::new(Some(&token())).unwrap(),
    )
}

/// Streams `count` new users through one BatchCreateUsers call: (users created, users per
/// second).
async fn batch_create(addr: &str, count: usize) -> (f64, f64) {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = authorized(channel);
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("{}_{call}", std::process::id());
    let started = Instant::now();
    let requests = (0..count).map(move |i| pb::CreateUserRequest {
        username: format!("batch{tag}_{i}"),
        email: format!("batch{tag}_{i}@example.com"),
        full_name: "Batch User".into(),
        password: "benchmark password".into(),
        role: 0,
        metadata: Default::default(),
        password_hash: String::new(),
        status: 0,
    });
    let response = client
        .batch_create_users(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    if let Some(error) = response.errors.first() {
        println!("   (batch errors, first: {error})");
    }
    let created = response.users.len() as f64;
    (created, created / started.elapsed().as_secs_f64())
}
