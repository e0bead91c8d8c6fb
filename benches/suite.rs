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
use user_service::contract::tokens::{Jwt, JwtSettings};
use user_service::domain::{Actor, Email, FullName, Metadata, NewUser, Password, Role, Username};
use user_service::grpc::EventStream;
use user_service::pb::{
    self, user_service_server::UserService, user_service_server::UserServiceServer,
};
use user_service::storage::{BatchItem, StorageSettings, Store};

// The harness the integration tests use: each uses part of it.
#[allow(dead_code, unused_imports)]
#[path = "../tests/support/mod.rs"]
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
        .0
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

/// The ceiling: bare tonic, GetUser answered with a constant user, no storage, no layers.
struct Ceiling(pb::User);

#[tonic::async_trait]
impl UserService for Ceiling {
    async fn get_user(
        &self,
        _: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        Ok(Response::new(pb::GetUserResponse {
            user: Some(self.0.clone()),
        }))
    }
    async fn list_users(
        &self,
        _: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        // The load generator lists once to learn ids.
        Ok(Response::new(pb::ListUsersResponse {
            users: vec![self.0.clone()],
            ..Default::default()
        }))
    }
    async fn create_user(
        &self,
        _: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
    async fn lookup_user(
        &self,
        _: Request<pb::LookupUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
    async fn update_user(
        &self,
        _: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
    async fn delete_user(
        &self,
        _: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
    type WatchUsersStream = EventStream;
    async fn watch_users(
        &self,
        _: Request<pb::WatchUsersRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
    async fn batch_create_users(
        &self,
        _: Request<Streaming<pb::CreateUserRequest>>,
    ) -> Result<Response<pb::BatchCreateUsersResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
    type SyncUsersStream = EventStream;
    async fn sync_users(
        &self,
        _: Request<Streaming<pb::UpdateUserRequest>>,
    ) -> Result<Response<EventStream>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
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
                    metadata: Metadata::parse([("team".to_string(), "seed".to_string())]).unwrap(),
                    actor: Actor::Service("bench".into()),
                },
            })
            .collect();
        let outcomes = store.create_batch(items).await.unwrap();
        if made == 0 {
            // After the 11th-oldest user come the 10 oldest: the last page.
            let user = &outcomes[10.min(chunk - 1)].1.as_ref().unwrap().user;
            last_page = user_service::grpc::page_token::encode(
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
    ServerProcess::start_with(
        &TestDatabase::sqlite_file(database),
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
    let started = Instant::now();
    let server = server_process(database, &[]);
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
    if std::env::args().any(|arg| arg == SERVE_CEILING) {
        runtime.block_on(serve_ceiling_forever());
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
    if wanted("watch") {
        watch_fan_out(&mut suite).await;
    }
    if wanted("postgres") {
        postgres(&mut suite).await;
    }
    print_table(suite.rows);
}

/// h2load pinned to core 1, making GetUser calls to `url`; the caller says for how long (`-D`)
/// or how many (`-n`).
fn h2load_get_user(url: &str, body: &Path, token: &str) -> Command {
    let mut command = Command::new("taskset");
    command
        .args(["-c", "1", "h2load", "-c", "16", "-m", "32", "-t", "1"])
        .arg("-d")
        .arg(body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["-H", &format!("authorization: Bearer {token}")])
        .arg(format!("{url}/userservice.UserService/GetUser"));
    command
}

/// Runs h2load for `seconds` of GetUser calls: calls per second.
fn h2load(url: &str, body: &Path, token: &str, seconds: u64) -> f64 {
    let output = h2load_get_user(url, body, token)
        .args(["-D", &seconds.to_string()])
        .output()
        .expect("h2load runs");
    let text = String::from_utf8_lossy(&output.stdout);
    // "finished in 5.00s, 123456.78 req/s, ..."
    text.lines()
        .find_map(|line| line.strip_prefix("finished in "))
        .and_then(|rest| rest.split(", ").nth(1))
        .and_then(|rate| rate.trim_end_matches(" req/s").parse().ok())
        .unwrap_or_else(|| panic!("h2load printed no rate:\n{text}"))
}

/// Our server's flags in figures 1 and 1c: the limits no call reaches, metrics on, the access
/// log as given.
fn full_stack_flags(access_log: &str) -> Vec<&str> {
    let mut flags = UNREACHED_LIMITS.to_vec();
    flags.extend([
        "--access-log",
        access_log,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    flags
}

/// Starts the ceiling in a process of its own, run by `wrapper` when one is given: the process
/// and the address it serves on.
fn start_ceiling(wrapper: &[String]) -> (std::process::Child, String) {
    let mut ceiling = support::wrapped(wrapper, std::env::current_exe().unwrap())
        .arg(SERVE_CEILING)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the ceiling starts");
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(ceiling.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (ceiling, line.trim().to_owned())
}

/// valgrind running callgrind, counting into `out` and writing its own messages beside it.
fn callgrind(out: &Path) -> Vec<String> {
    vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
        format!("--log-file={}.log", out.display()),
    ]
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

/// Figure 1 (h2load): GetUser through the full stack (metrics on), with the access log on (to
/// a pipe) and off, against a bare tonic server answering a constant user, each in a process of its own
/// on core 0 while h2load, a far cheaper client than a tonic one, drives it from core 1.
/// Alternating, three rounds, medians.
async fn get_user_with_h2load(suite: &mut Suite) {
    println!("1. GetUser under h2load (server on core 0, h2load on core 1), median of 3 rounds");
    if !installed("h2load") || !installed("taskset") {
        println!(
            "   h2load or taskset is missing: install them (apt-get install nghttp2-client util-linux)"
        );
        row(
            &mut suite.rows,
            "GetUser full stack / ceiling (h2load)",
            "not measured: no h2load".into(),
            ">= 0.80",
            "NOT measured".into(),
        );
        return;
    }
    let token = token();
    let ours = |access_log: &str| {
        let server = ServerProcess::start_with(
            &TestDatabase::sqlite_file(&suite.small),
            &[("RUST_LOG", "info")],
            &full_stack_flags(access_log),
        );
        server.discard_log();
        pin_to_core_0(server.pid());
        server
    };
    let probe = ours("true");
    let user = one_user(probe.url()).await;
    drop(probe);
    let body = suite.dir.path().join("get_user.bin");
    std::fs::write(
        &body,
        grpc_frame(&pb::GetUserRequest {
            user_id: user.id.clone(),
        }),
    )
    .unwrap();
    let (mut ceiling, ceiling_url) = start_ceiling(&[]);
    pin_to_core_0(ceiling.id());
    let (mut full, mut off, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=3 {
        let server = ours("true");
        full.push(h2load(server.url(), &body, &token, 5));
        drop(server);
        let server = ours("false");
        off.push(h2load(server.url(), &body, &token, 5));
        drop(server);
        bare.push(h2load(&ceiling_url, &body, &token, 5));
        println!(
            "   round {round}: full stack {:.0}/s, access log off {:.0}/s, ceiling {:.0}/s",
            full[round - 1],
            off[round - 1],
            bare[round - 1]
        );
    }
    let _ = ceiling.kill();
    let _ = ceiling.wait();
    let (full, off, bare) = (median(full), median(off), median(bare));
    let r = full / bare;
    row(
        &mut suite.rows,
        "GetUser full stack / ceiling (h2load)",
        format!("{full:.0}/{bare:.0}/s = {r:.2}"),
        "(rate beside the instruction ratio)",
        "-".into(),
    );
    let r = off / bare;
    row(
        &mut suite.rows,
        "GetUser access log off / ceiling (h2load)",
        format!("{off:.0}/{bare:.0}/s = {r:.2}"),
        "(rate beside the instruction ratio)",
        "-".into(),
    );
    get_user_instructions(suite, &body, &token);
}

/// Calls made before callgrind's count starts, and then counted.
const WARM_UP_CALLS: u64 = 2_000;
const COUNTED_CALLS: u64 = 20_000;

/// Figure 1c (callgrind): the instructions one GetUser costs the server, ours with the access
/// log on and off and the ceiling, each run by valgrind's callgrind while h2load calls it. An
/// instruction count does not move with what else the machine runs, so it shows a change in
/// the cost of a call that the spread of figure 1's rates can hide; the rates stay the
/// figures that count, since a count weighs a cache miss like any other instruction.
fn get_user_instructions(suite: &mut Suite, body: &Path, token: &str) {
    println!("\n1c. GetUser instructions per call under callgrind (valgrind), h2load calling");
    if !installed("valgrind") || !installed("callgrind_control") {
        println!("   valgrind is missing: install it (apt-get install valgrind)");
        return;
    }
    let ours = |name: &str, access_log: &str| {
        let out = suite.dir.path().join(format!("{name}.callgrind"));
        let server = ServerProcess::start_wrapped(
            &callgrind(&out),
            &TestDatabase::sqlite_file(&suite.small),
            &[("RUST_LOG", "info")],
            &full_stack_flags(access_log),
        );
        server.discard_log();
        instructions_per_call(server.pid(), server.url(), body, token, &out)
    };
    let full = ours("full", "true");
    let off = ours("off", "false");
    let out = suite.dir.path().join("ceiling.callgrind");
    let (mut ceiling, url) = start_ceiling(&callgrind(&out));
    let bare = instructions_per_call(ceiling.id(), &url, body, token, &out);
    let _ = ceiling.kill();
    let _ = ceiling.wait();
    println!("   full stack {full:.0}, access log off {off:.0}, ceiling {bare:.0} per call");
    for (name, ours, target) in [
        (
            "GetUser instructions: ceiling / full stack (callgrind)",
            full,
            0.80,
        ),
        (
            "GetUser instructions: ceiling / access log off (callgrind)",
            off,
            0.85,
        ),
    ] {
        let ratio = bare / ours;
        row(
            &mut suite.rows,
            name,
            format!("{bare:.0}/{ours:.0} = {ratio:.2}"),
            &format!(">= {target:.2}"),
            verdict(ratio, target, true),
        );
    }
}

/// Instructions per call of the process `pid`, run by callgrind writing to `out`: counters are
/// dumped and zeroed after the warm-up calls, then dumped again after the counted ones.
fn instructions_per_call(pid: u32, url: &str, body: &Path, token: &str, out: &Path) -> f64 {
    let calls = |count: u64| {
        let done = h2load_get_user(url, body, token)
            .args(["-n", &count.to_string()])
            .output()
            .expect("h2load runs");
        let text = String::from_utf8_lossy(&done.stdout);
        assert!(
            text.contains(&format!("{count} succeeded")),
            "h2load's calls did not all succeed:\n{text}"
        );
    };
    let dump = |number: u32| -> String {
        let dumped = Command::new("callgrind_control")
            .args(["-d", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("callgrind_control runs");
        assert!(dumped.success(), "callgrind_control could not reach {pid}");
        // The file is complete once its totals are written.
        let file = PathBuf::from(format!("{}.{number}", out.display()));
        for _ in 0..600 {
            if let Ok(text) = std::fs::read_to_string(&file)
                && text.lines().any(|line| line.starts_with("totals:"))
            {
                return text;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("callgrind wrote no complete {}", file.display());
    };
    calls(WARM_UP_CALLS);
    dump(1);
    calls(COUNTED_CALLS);
    let counted = dump(2);
    let total: f64 = counted
        .lines()
        .find_map(|line| line.strip_prefix("totals: "))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .expect("callgrind's dump has its totals");
    total / COUNTED_CALLS as f64
}

/// The ceiling in a process of its own: its address on the first line of standard output.
async fn serve_ceiling_forever() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("http://{}", listener.local_addr().unwrap());
    let user = pb::User {
        id: "0192a3b4-c5d6-7e8f-9012-3456789abcde".into(),
        username: "ceiling".into(),
        email: "ceiling@example.com".into(),
        full_name: "Ceiling User".into(),
        role: pb::UserRole::User as i32,
        status: pb::UserStatus::Active as i32,
        etag: "1".into(),
        ..Default::default()
    };
    tonic::transport::Server::builder()
        .add_service(UserServiceServer::new(Ceiling(user)))
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await
        .unwrap();
}

/// Figure 1b (userctl bench): GetUser latency through the full stack under a tonic client in
/// this process. Its throughput is not a figure: that client saturates before the server does
/// (figure 1 measures throughput with h2load, and the ceiling with the same tool).
async fn get_user_latency(suite: &mut Suite) {
    println!("\n1b. GetUser latency under userctl bench (a tonic client, 32 callers)");
    let (server, addr) = in_process(settings(&suite.small, CHEAPEST)).await;
    let report = measure(&addr, load(Rpc::Get, 32, suite.run)).await;
    println!("   full stack: {}", report.summary());
    let _ = server.stop().await;
    row(
        &mut suite.rows,
        "GetUser latency p50 / p99 (userctl bench)",
        format!(
            "{:?} / {:?}",
            report.percentile(0.5),
            report.percentile(0.99)
        ),
        "(measured)",
        "-".into(),
    );
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

/// Figure 2: a ListUsers page at 1,000 and at 1,000,000 users, first and last page. Returns the
/// database of a million users for the last figures.
async fn list_users_at_a_million(suite: &mut Suite) -> PathBuf {
    println!("\n2. ListUsers, page of 10, at 1,000 and 1,000,000 users");
    let run = suite.run;
    let large = suite.dir.path().join("large.db");
    let seeding = Instant::now();
    let last_page = seed(&large, 1_000_000).await;
    println!(
        "   seeded 1,000,000 users through storage in {:.1}s",
        seeding.elapsed().as_secs_f64()
    );
    let (server, addr) = in_process(settings(&suite.small, CHEAPEST)).await;
    let at_small = measure(&addr, load(Rpc::List, 8, run)).await;
    println!("   1,000 users, first page:     {}", at_small.summary());
    let search_small = measure(&addr, search_load(run)).await;
    println!(
        "   1,000 users, query \"SEED1\":     {}",
        search_small.summary()
    );
    let _ = server.stop().await;
    let (server, addr) = in_process(settings(&large, CHEAPEST)).await;
    let at_large = measure(&addr, load(Rpc::List, 8, run)).await;
    println!("   1,000,000 users, first page: {}", at_large.summary());
    let search_large = measure(&addr, search_load(run)).await;
    println!(
        "   1,000,000 users, query \"SEED1\": {}",
        search_large.summary()
    );
    let last = measure(
        &addr,
        BenchArgs {
            page_token: last_page,
            ..load(Rpc::List, 8, run)
        },
    )
    .await;
    println!("   1,000,000 users, last page:  {}", last.summary());
    let _ = server.stop().await;
    let (large_p50, last_p50) = (at_large.percentile(0.5), last.percentile(0.5));
    flat_row(suite, "ListUsers", &at_large, &at_small);
    flat_row(
        suite,
        "ListUsers with a query,",
        &search_large,
        &search_small,
    );
    let tail = last_p50.as_secs_f64() / large_p50.as_secs_f64();
    row(
        &mut suite.rows,
        "ListUsers p50 last / first page at 1M",
        format!("{last_p50:?}/{large_p50:?} = {tail:.2}"),
        "as fast (<= 1.1)",
        verdict(tail, 1.1, false),
    );
    large
}

/// Figure 3: CreateUser and BatchCreateUsers against the hashing limit, and BatchCreateUsers with
/// the cheapest hashing.
async fn create_users(suite: &mut Suite) {
    println!("\n3. CreateUser and BatchCreateUsers");
    let cores = suite.cores;
    let hasher = PasswordHasher::new(Argon2Settings::default()).unwrap();
    let password = Password::parse("benchmark password".into()).unwrap();
    hasher.hash(password.clone()).await.unwrap();
    let timing = Instant::now();
    for _ in 0..10 {
        hasher.hash(password.clone()).await.unwrap();
    }
    let per_hash = timing.elapsed() / 10;
    let limit = cores as f64 / per_hash.as_secs_f64();
    println!(
        "   one default Argon2id hash (19456 KiB, t=2, p=1) takes {per_hash:?}: hashing limit = {cores} cores / that = {limit:.0}/s"
    );
    let owasp = suite.dir.path().join("owasp.db");
    let (server, addr) = in_process(settings(&owasp, Argon2Settings::default())).await;
    let creates = measure(&addr, load(Rpc::Create, cores * 8, Duration::from_secs(10))).await;
    println!("   CreateUser:       {}", creates.summary());
    let (_, batch_rate) = batch_create(&addr, 400).await;
    println!("   BatchCreateUsers: 400 users at {batch_rate:.0} users/s");
    let _ = server.stop().await;
    let r = creates.per_second() / limit;
    row(
        &mut suite.rows,
        "CreateUser / hashing limit (default Argon2)",
        format!("{:.0}/{limit:.0}/s = {r:.2}", creates.per_second()),
        ">= 0.85",
        verdict(r, 0.85, true),
    );
    let r = batch_rate / limit;
    row(
        &mut suite.rows,
        "BatchCreateUsers / hashing limit (default)",
        format!("{batch_rate:.0}/{limit:.0}/s = {r:.2}"),
        ">= 0.85",
        verdict(r, 0.85, true),
    );
    let cheap = suite.dir.path().join("cheap.db");
    let (server, addr) = in_process(settings(&cheap, CHEAPEST)).await;
    // Two streams at once, twice, each of 10,000 users (the server's default batch limit).
    let started = Instant::now();
    let mut created = 0.0;
    for _ in 0..2 {
        let (a, b) = tokio::join!(batch_create(&addr, 10_000), batch_create(&addr, 10_000));
        created += a.0 + b.0;
    }
    let cheap_rate = created / started.elapsed().as_secs_f64();
    let _ = server.stop().await;
    row(
        &mut suite.rows,
        "BatchCreateUsers, cheapest Argon2",
        format!("{cheap_rate:.0} users/s"),
        ">= 10000/s",
        verdict(cheap_rate, 10_000.0, true),
    );
    // Single writes, which group commit gathers: 64 callers, cheapest hashing, no access log,
    // the server in a process of its own (the two still share the cores).
    let single = suite.dir.path().join("single.db");
    let server = server_process(&single, &["--access-log", "false"]);
    let creates = measure(server.url(), load(Rpc::Create, 64, suite.run)).await;
    println!(
        "   CreateUser, 64 callers, cheapest Argon2, no access log: {}",
        creates.summary()
    );
    let updates = measure(server.url(), load(Rpc::Update, 64, suite.run)).await;
    println!(
        "   UpdateUser, 64 callers, no access log: {}",
        updates.summary()
    );
    drop(server);
    for (name, report) in [
        (
            "CreateUser, 64 callers, cheapest Argon2 (userctl bench)",
            &creates,
        ),
        ("UpdateUser, 64 callers (userctl bench)", &updates),
    ] {
        let rate = report.per_second();
        row(
            &mut suite.rows,
            name,
            format!("{rate:.0}/s"),
            ">= 10000/s",
            verdict(rate, 10_000.0, true),
        );
    }
}

/// Runs pgbench against `url` with these arguments: transactions per second.
fn pgbench(url: &str, args: &[&str]) -> f64 {
    let output = Command::new("pgbench")
        .args(args)
        .arg(url)
        .output()
        .expect("pgbench runs");
    let text = String::from_utf8_lossy(&output.stdout);
    // "tps = 27123.456789 (without initial connection time)"
    text.lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "pgbench printed no rate:\n{text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

/// Figure 5: PostgreSQL (TEST_DATABASE_URL, a database of its own per figure), each figure
/// beside the database's own ceiling, measured with pgbench in the same run, with as many
/// connections as the server's pool (16).
async fn postgres(suite: &mut Suite) {
    println!(
        "\n5. PostgreSQL: the service against the database's own ceilings (pgbench, 16 connections)"
    );
    if !installed("pgbench") || !installed("h2load") {
        println!(
            "   pgbench or h2load is missing: install them (apt-get install postgresql-contrib nghttp2-client)"
        );
        row(
            &mut suite.rows,
            "PostgreSQL figures",
            "not measured: no pgbench or h2load".into(),
            "-",
            "NOT measured".into(),
        );
        return;
    }
    let run = suite.run;
    let ceilings = TestDatabase::postgres();
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q"])
        .arg(ceilings.url())
        .output()
        .expect("pgbench runs");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let seconds = run.as_secs().to_string();
    let point_reads = pgbench(
        ceilings.url(),
        &[
            "-S", "-M", "prepared", "-c", "16", "-j", "1", "-T", &seconds,
        ],
    );
    let write_transactions = pgbench(
        ceilings.url(),
        &["-M", "prepared", "-c", "16", "-j", "1", "-T", &seconds],
    );
    drop(ceilings);
    println!(
        "   pgbench -S -M prepared -c 16: {point_reads:.0} tps; TPC-B -c 16: {write_transactions:.0} tps"
    );

    let small = Arc::new(TestDatabase::postgres());
    seed_url(small.url(), 1_000).await;
    let app = TestApp::start_with(small.clone(), settings_on(small.url(), CHEAPEST)).await;
    let addr = format!("http://{}", app.addr);
    let user = one_user(&addr).await;
    let body = suite.dir.path().join("get_user_postgres.bin");
    std::fs::write(
        &body,
        grpc_frame(&pb::GetUserRequest {
            user_id: user.id.clone(),
        }),
    )
    .unwrap();
    let reads = h2load(&addr, &body, &token(), run.as_secs());
    println!("   GetUser under h2load (-c 16 -m 32), full stack: {reads:.0}/s");
    let r = reads / point_reads;
    row(
        &mut suite.rows,
        "PG GetUser / pgbench -S (h2load)",
        format!("{reads:.0}/{point_reads:.0}/s = {r:.2}"),
        ">= 0.80",
        verdict(r, 0.8, true),
    );

    let creates = measure(&addr, load(Rpc::Create, 64, run)).await;
    println!(
        "   CreateUser, 64 callers (userctl bench): {}",
        creates.summary()
    );
    let r = creates.per_second() / write_transactions;
    row(
        &mut suite.rows,
        "PG CreateUser / pgbench TPC-B",
        format!(
            "{:.0}/{write_transactions:.0}/s = {r:.2}",
            creates.per_second()
        ),
        ">= 1.00",
        verdict(r, 1.0, true),
    );

    let started = Instant::now();
    let mut created = 0.0;
    for _ in 0..2 {
        let (a, b) = tokio::join!(batch_create(&addr, 10_000), batch_create(&addr, 10_000));
        created += a.0 + b.0;
    }
    let batch_rate = created / started.elapsed().as_secs_f64();
    println!("   BatchCreateUsers: {created:.0} users at {batch_rate:.0} users/s");
    row(
        &mut suite.rows,
        "PG BatchCreateUsers, cheapest Argon2",
        format!("{batch_rate:.0} users/s"),
        ">= 10000/s",
        verdict(batch_rate, 10_000.0, true),
    );

    // Cross-replica delivery: written through this replica, watched on a second one.
    let other = TestApp::start_with(small.clone(), settings_on(small.url(), CHEAPEST)).await;
    let delivery = cross_replica_delivery(&addr, &format!("http://{}", other.addr), 1_000).await;
    let p99 = delivery[delivery.len() * 99 / 100];
    println!(
        "   cross-replica watch delivery, 1,000 creates: p50 {:?}, p99 {p99:?}",
        delivery[delivery.len() / 2]
    );
    row(
        &mut suite.rows,
        "PG cross-replica watch delivery p99",
        format!("{p99:?}"),
        "< 50ms",
        verdict(p99.as_secs_f64(), 0.05, false),
    );
    let _ = other.stop().await;

    let at_small = measure(&addr, load(Rpc::List, 8, run)).await;
    println!(
        "   ListUsers, 1,000 users, first page:     {}",
        at_small.summary()
    );
    let search_small = measure(&addr, search_load(run)).await;
    println!(
        "   ListUsers, 1,000 users, query \"SEED1\":     {}",
        search_small.summary()
    );
    let _ = app.stop().await;
    let large = Arc::new(TestDatabase::postgres());
    let seeding = Instant::now();
    seed_url(large.url(), 1_000_000).await;
    println!(
        "   seeded 1,000,000 users through storage in {:.1}s",
        seeding.elapsed().as_secs_f64()
    );
    let app = TestApp::start_with(large.clone(), settings_on(large.url(), CHEAPEST)).await;
    let addr = format!("http://{}", app.addr);
    let at_large = measure(&addr, load(Rpc::List, 8, run)).await;
    println!(
        "   ListUsers, 1,000,000 users, first page: {}",
        at_large.summary()
    );
    let search_large = measure(&addr, search_load(run)).await;
    println!(
        "   ListUsers, 1,000,000 users, query \"SEED1\": {}",
        search_large.summary()
    );
    let _ = app.stop().await;
    flat_row(
        suite,
        "PG ListUsers with a query,",
        &search_large,
        &search_small,
    );
    flat_row(suite, "PG ListUsers", &at_large, &at_small);
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

/// Creates `count` users one after another through `writer` while a watcher on `watcher`
/// (another replica) receives them: each delay from the create's call to the event's
/// arrival, sorted.
async fn cross_replica_delivery(writer: &str, watcher: &str, count: usize) -> Vec<Duration> {
    let connect = |addr: &str| {
        let endpoint = tonic::transport::Endpoint::from_shared(addr.to_owned()).unwrap();
        async move { authorized(endpoint.connect().await.unwrap()) }
    };
    let mut events = connect(watcher)
        .await
        .watch_users(pb::WatchUsersRequest {
            user_ids: vec![],
            include_all: true,
            start_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let arrivals = tokio::spawn(async move {
        let mut arrived = std::collections::HashMap::new();
        while arrived.len() < count {
            let event = events.message().await.unwrap().unwrap();
            arrived.insert(event.user.unwrap().username, Instant::now());
        }
        arrived
    });
    let mut client = connect(writer).await;
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        let username = format!("delivered{i}");
        sent.push((username.clone(), Instant::now()));
        client
            .create_user(pb::CreateUserRequest {
                username: username.clone(),
                email: format!("{username}@example.com"),
                password: "benchmark password".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let arrived = arrivals.await.unwrap();
    let mut delays: Vec<Duration> = sent
        .into_iter()
        .map(|(username, at)| arrived[&username].duration_since(at))
        .collect();
    delays.sort();
    delays
}

/// Figure 4: WatchUsers fan-out against the real binary: completeness, delivery latency, and the
/// memory an idle watcher costs.
async fn watch_fan_out(suite: &mut Suite) {
    println!("\n4. WatchUsers fan-out against the real binary: 2,000 watchers, 1,000 updates");
    // Every watcher is the bench's one caller: its cap on open streams (16 by default) is
    // raised, since this figure measures fan-out, not the caps.
    let server = server_process(&suite.small, &["--max-open-streams-per-caller", "4000"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib();
    let args = BenchArgs {
        rpc: Rpc::Watch,
        concurrency: Some(2_000),
        connections: 8,
        duration: Duration::from_secs(60),
        page_token: String::new(),
        query: String::new(),
        page_size: 10,
        updates: 1_000,
        max_error_ratio: 0.01,
    };
    let report = bench::run(&target(server.url()), args)
        .await
        .expect("the watch load runs");
    println!("   {}", report.summary());
    let idle = hold_idle_watchers(&server, 2_000).await;
    let per_watcher = idle.saturating_sub(before) as f64 / 2_000.0;
    println!("   server RSS {before} KiB before, {idle} KiB holding 2,000 idle watchers");
    drop(server);
    let outcome = report.watch.clone().expect("a watch outcome");
    let all = outcome.complete_in_order == outcome.watchers;
    row(
        &mut suite.rows,
        "watchers with all 1,000 updates in order",
        format!("{} of {}", outcome.complete_in_order, outcome.watchers),
        "all",
        if all { "met".into() } else { "NOT met".into() },
    );
    let p99 = report.percentile(0.99);
    row(
        &mut suite.rows,
        "watch delivery latency p99",
        format!("{p99:?}"),
        "< 100ms",
        verdict(p99.as_secs_f64(), 0.1, false),
    );
    row(
        &mut suite.rows,
        "server memory per idle watcher",
        format!("{per_watcher:.1} KiB"),
        "< 24 KiB",
        verdict(per_watcher, 24.0, false),
    );
}

/// Figures 5-6: the real binary on a million users: start-up to SERVING, and memory once the read
/// cache is full.
async fn the_binary_on_a_million_users(suite: &mut Suite, large: &Path) {
    println!("\n5-6. The real binary on 1,000,000 users");
    let (server, startup) = time_to_serving(large).await;
    println!("   spawn to SERVING: {startup:?}");
    let touched = touch_users(server.url(), 200_000).await;
    println!("   read {touched} distinct users once each, so the read cache fills to its bound");
    let rss = server.rss_kib() as f64 / 1024.0;
    drop(server);
    row(
        &mut suite.rows,
        "server RSS with 1,000,000 users",
        format!("{rss:.1} MiB"),
        "< 150 MiB",
        verdict(rss, 150.0, false),
    );
    row(
        &mut suite.rows,
        "start-up to SERVING with 1,000,000 users",
        format!("{startup:?}"),
        "< 1s",
        verdict(startup.as_secs_f64(), 1.0, false),
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

/// Reads `count` distinct users once each (ids gathered by paging), 32 callers at a time.
async fn touch_users(addr: &str, count: usize) -> usize {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = authorized(channel.clone());
    let mut ids = Vec::with_capacity(count);
    let mut token = String::new();
    while ids.len() < count {
        let page = client
            .list_users(pb::ListUsersRequest {
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
    let readers: Vec<_> = (0..32)
        .map(|reader| {
            let ids = ids.clone();
            let mut client = authorized(channel.clone());
            tokio::spawn(async move {
                for id in ids.iter().skip(reader).step_by(32) {
                    client
                        .get_user(pb::GetUserRequest {
                            user_id: id.clone(),
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap();
    }
    ids.len()
}

/// Opens `count` watchers on the server and returns its RSS while they sit idle.
async fn hold_idle_watchers(server: &ServerProcess, count: usize) -> u64 {
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(
            tonic::transport::Endpoint::from_shared(server.url().to_owned())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    let mut streams = Vec::new();
    for watcher in 0..count {
        let mut client = authorized(channels[watcher % channels.len()].clone());
        let request = pb::WatchUsersRequest {
            include_all: true,
            ..Default::default()
        };
        streams.push(client.watch_users(request).await.unwrap().into_inner());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = server.rss_kib();
    drop(streams);
    rss
}
