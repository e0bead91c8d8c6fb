//! The one harness the integration tests and the benchmarks share (`benches/suite/`
//! includes this file): `TestApp`, the real server started in-process through the production
//! start-up code on port 0, and `ServerProcess`, the real binary as a child process; both
//! with clients to talk to them.

mod database;
mod http;
mod node;
mod proxy;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use database::{Backend, TestDatabase, backend};
pub use http::{HttpAnswer, http1};
pub use node::run_node_tests;
pub use proxy::Proxy;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use user_service::auth::hasher::Argon2Settings;
pub use user_service::cli::Bearer;
use user_service::config::Settings;
use user_service::domain::Role;
use user_service::pb::user_service_client::UserServiceClient;
use user_service::pb::{self, CreateUserRequest};
use user_service::startup::{Application, StartupError};
use user_service::tokens::{Jwt, JwtSettings};

/// Hashing this cheap keeps tests fast; production defaults are the OWASP minimum.
pub const CHEAP_ARGON2: Argon2Settings = Argon2Settings {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

/// The HS256 secret test servers use, so tests can mint their own tokens.
pub const TEST_SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

pub type Client = UserServiceClient<InterceptedService<Channel, Bearer>>;

/// The tests' second-factor key: TOTP secrets are sealed with it.
pub const SECOND_FACTOR_KEY: &str = "test-second-factor-key-of-32-bytes-or-more";

pub fn test_settings(database: &TestDatabase) -> Settings {
    let mut settings = Settings::default();
    settings.listener.addr = "127.0.0.1:0".parse().unwrap();
    settings.storage.database_url = database.url().to_owned();
    settings.auth.argon2 = CHEAP_ARGON2;
    settings.shutdown.grace = Duration::from_secs(5);
    settings.shutdown.drain = Duration::ZERO;
    settings.health.check_interval = Duration::from_millis(100);
    settings.auth.jwt.secret = Some(TEST_SECRET.as_bytes().to_vec());
    settings.auth.jwt.token_ttl = Duration::from_secs(600);
    settings.auth.second_factor_key = Some(SECOND_FACTOR_KEY.as_bytes().to_vec());
    settings.limits.rate_limit_per_second = 0;
    // Most tests use short, common passwords; the strength tests ask for the rule.
    settings.auth.password_min_strength = 0;
    settings
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when the settings ask for it.
    pub metrics_addr: Option<SocketAddr>,
    /// Kept for as long as the app (and its restarts) need it.
    pub database: Arc<TestDatabase>,
    pub jwt: Arc<Jwt>,
    settings: Settings,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), StartupError>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts on a fresh database of the suite's backend.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_on(Arc::new(TestDatabase::new()), adjust).await
    }

    /// Starts on `database` (another server may be serving it too).
    pub async fn spawn_on(database: Arc<TestDatabase>, adjust: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = test_settings(&database);
        adjust(&mut settings);
        Self::start_with(database, settings).await
    }

    /// Starts on `database` with exactly these settings.
    pub async fn start_with(database: Arc<TestDatabase>, settings: Settings) -> Self {
        let app = Application::build(settings.clone())
            .await
            .expect("the server starts");
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr();
        let jwt = app.jwt();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            metrics_addr,
            database,
            jwt,
            settings,
            stop: Some(stop),
            server,
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.addr)).expect("a valid address")
    }

    pub async fn channel(&self) -> Channel {
        self.endpoint()
            .connect()
            .await
            .expect("the client connects")
    }

    /// A token this server accepts, for `subject` (a user id or a service name).
    pub fn token(&self, subject: &str, role: Role) -> String {
        self.jwt
            .mint(subject, role, None)
            .expect("the test secret signs")
            .0
    }

    /// A client acting as an admin service, which may do everything.
    pub async fn client(&self) -> Client {
        self.client_on(self.channel().await)
    }

    pub fn client_on(&self, channel: Channel) -> Client {
        let token = self.token("test-admin", Role::Admin);
        UserServiceClient::with_interceptor(channel, Bearer::new(Some(&token)).unwrap())
    }

    /// A client that sends `token`, or no token at all.
    pub async fn client_with(&self, token: Option<&str>) -> Client {
        UserServiceClient::with_interceptor(self.channel().await, Bearer::new(token).unwrap())
    }

    /// Tells the server to shut down, as SIGTERM would, without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Begins a graceful shutdown and returns the server's result once it has stopped.
    pub async fn stop(mut self) -> (Result<(), StartupError>, Self) {
        self.begin_stop();
        let result = (&mut self.server)
            .await
            .expect("the server task does not panic");
        (result, self)
    }

    /// Stops gracefully, then starts a new server on the same database.
    pub async fn restart(self) -> Self {
        let (result, old) = self.stop().await;
        result.expect("the server stops cleanly");
        // The same address, so clients that reconnect find the new server.
        let mut settings = old.settings.clone();
        settings.listener.addr = old.addr;
        Self::start_with(old.database.clone(), settings).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A message in gRPC's length-prefixed framing, uncompressed: what a bare HTTP/2 client
/// (a raw test, h2load) sends.
pub fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut framed = Vec::with_capacity(body.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

pub fn new_user(username: &str) -> CreateUserRequest {
    CreateUserRequest {
        username: username.to_owned(),
        email: format!("{}@example.com", username.to_lowercase()),
        full_name: format!("{username} Tester"),
        password: "correct horse battery".to_owned(),
        role: 0,
        metadata: Default::default(),
        password_hash: String::new(),
        status: 0,
    }
}

pub async fn create(client: &mut Client, username: &str) -> pb::User {
    create_request(client, new_user(username)).await
}

/// The user with `id`, as GetUser answers.
pub async fn get(client: &mut Client, id: &str) -> pb::User {
    client
        .get_user(pb::GetUserRequest {
            user_id: id.to_owned(),
        })
        .await
        .expect("GetUser answers")
        .into_inner()
        .user
        .expect("GetUser returns the user")
}

/// The user after `request`, as UpdateUser answers.
pub async fn update(client: &mut Client, request: pb::UpdateUserRequest) -> pb::User {
    client
        .update_user(request)
        .await
        .expect("UpdateUser answers")
        .into_inner()
        .user
        .expect("UpdateUser returns the user")
}

/// Creates a user with `role` and returns its id.
pub async fn create_with_role(client: &mut Client, name: &str, role: pb::UserRole) -> String {
    let request = CreateUserRequest {
        role: role as i32,
        ..new_user(name)
    };
    create_request(client, request).await.id
}

/// The user `request` creates, as CreateUser answers.
pub async fn create_request(client: &mut Client, request: CreateUserRequest) -> pb::User {
    let username = request.username.clone();
    client
        .create_user(request)
        .await
        .unwrap_or_else(|status| panic!("creating {username} failed: {status:?}"))
        .into_inner()
        .user
        .expect("CreateUserResponse carries the user")
}

/// Creates `count` users named `{prefix}{i}` through BatchCreateUsers.
pub async fn create_many(client: &mut Client, prefix: &str, count: usize) -> Vec<pb::User> {
    let requests: Vec<_> = (0..count)
        .map(|i| new_user(&format!("{prefix}{i}")))
        .collect();
    let response = client
        .batch_create_users(tokio_stream::iter(requests))
        .await
        .expect("the batch is accepted")
        .into_inner();
    assert!(
        response.errors.is_empty(),
        "batch errors: {:?}",
        response.errors
    );
    response.users
}

/// A command that runs `program`, through `wrapper` (a program and its arguments) when one is
/// given.
pub fn wrapped<S: AsRef<OsStr>>(wrapper: &[S], program: impl AsRef<OsStr>) -> Command {
    match wrapper.split_first() {
        Some((runner, args)) => {
            let mut command = Command::new(runner);
            command.args(args).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// The server binary, started on port 0; its address is read from its log.
pub struct ServerProcess {
    pub child: Child,
    addr: String,
    /// Every log line so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Whether new lines are kept (a benchmark's millions of access-log lines are not).
    keep_log: Arc<std::sync::atomic::AtomicBool>,
}

impl ServerProcess {
    pub fn start(database: &TestDatabase) -> Self {
        Self::launch(database.url(), Some(TEST_SECRET), &[], &[])
    }

    /// Starts the binary as `make run` would: with no key of any kind configured.
    pub fn start_without_key(database: &TestDatabase) -> Self {
        Self::launch(database.url(), None, &[], &[])
    }

    /// Starts the binary with these `USER_SERVICE_*` variables set.
    pub fn start_with_env(database: &TestDatabase, env: &[(&str, &str)]) -> Self {
        Self::launch(database.url(), Some(TEST_SECRET), env, &[])
    }

    /// Starts the binary with these variables set (`RUST_LOG` too) and these flags besides the
    /// harness's own.
    pub fn start_with(database: &TestDatabase, env: &[(&str, &str)], args: &[&str]) -> Self {
        Self::launch(database.url(), Some(TEST_SECRET), env, args)
    }

    /// Starts the binary as `start_with` does, run by `wrapper` (a program and its arguments,
    /// such as valgrind's), which must keep the binary's process id and its standard error.
    pub fn start_wrapped<S: AsRef<OsStr>>(
        wrapper: &[S],
        database: &TestDatabase,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        Self::launch_with(wrapper, database.url(), Some(TEST_SECRET), env, args)
    }

    /// Starts the binary on the database at `url` (through a `Proxy`, say).
    pub fn start_on_url(url: &str, args: &[&str]) -> Self {
        Self::launch(url, Some(TEST_SECRET), &[], args)
    }

    fn launch(
        database_url: &str,
        secret: Option<&str>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        Self::launch_with::<&str>(&[], database_url, secret, env, args)
    }

    fn launch_with<S: AsRef<OsStr>>(
        wrapper: &[S],
        database_url: &str,
        secret: Option<&str>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        let mut command = wrapped(wrapper, env!("CARGO_BIN_EXE_user-service"));
        command
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--database-url", database_url])
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped());
        // The server reads its settings from USER_SERVICE_* too: none of the caller's apply.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("USER_SERVICE_") {
                command.env_remove(name);
            }
        }
        // Cheap hashing and no drain by default, as variables so that flags can override them.
        command
            .env("USER_SERVICE_ARGON2_MEMORY_KIB", "64")
            .env("USER_SERVICE_ARGON2_ITERATIONS", "1")
            .env("USER_SERVICE_SHUTDOWN_DRAIN_SECS", "0")
            // Tests use short, common passwords.
            .env("USER_SERVICE_PASSWORD_MIN_STRENGTH", "0");
        // Without keys, as `make run`: no secret, no second-factor key, no key-encryption key.
        if let Some(secret) = secret {
            command
                .env("USER_SERVICE_JWT_SECRET", secret)
                .env("USER_SERVICE_SECOND_FACTOR_KEY", SECOND_FACTOR_KEY);
        }
        command.envs(env.iter().copied());
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
        let keep_log = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (kept, keep) = (log.clone(), keep_log.clone());
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if keep.load(std::sync::atomic::Ordering::Relaxed) {
                    kept.lock().unwrap().push(line);
                }
            }
        });
        Self {
            child,
            addr: format!("http://{addr}"),
            log,
            keep_log,
        }
    }
}

impl ServerProcess {
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .trim_start_matches("http://")
            .parse()
            .expect("the logged address parses")
    }

    pub async fn channel(&self) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        tonic::transport::Endpoint::from_shared(self.addr.clone())?
            .connect()
            .await
    }

    /// A token the process accepts: it shares the tests' secret.
    pub fn token(&self, subject: &str, role: Role) -> String {
        let jwt = Jwt::new(&JwtSettings {
            secret: Some(TEST_SECRET.as_bytes().to_vec()),
            token_ttl: Duration::from_secs(600),
            ..JwtSettings::default()
        })
        .expect("the test secret is valid");
        jwt.mint(subject, role, None).unwrap().0
    }

    /// An admin client.
    pub async fn client(&self) -> Result<Client, tonic::transport::Error> {
        let channel = self.channel().await?;
        let token = self.token("test-admin", Role::Admin);
        Ok(UserServiceClient::with_interceptor(
            channel,
            Bearer::new(Some(&token)).unwrap(),
        ))
    }

    /// Reads the log from here on without keeping it: the server still writes every line to
    /// its pipe, as in production.
    pub fn discard_log(&self) {
        self.keep_log
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit, polling without
    /// blocking the runtime, so that the test's clients answer the server's GOAWAY meanwhile.
    pub async fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM could not be sent");
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "the server is still running {limit:?} after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The server's resident memory, in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The address as a URL, for clients that take one.
    pub fn url(&self) -> &str {
        &self.addr
    }

    /// The log lines so far that contain `text`.
    pub fn logged(&self, text: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|line| line.contains(text))
            .cloned()
            .collect()
    }

    /// The first log line containing `text`, waiting up to five seconds for it.
    pub fn wait_for_log(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match self.logged(text).into_iter().next() {
                Some(line) => return line,
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                None => panic!(
                    "no log line contains {text:?}; the log:\n{}",
                    self.log.lock().unwrap().join("\n")
                ),
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
