//! One database per test, on the backend the suite runs on.
//!
//! `TEST_BACKEND=postgres` runs the suite on PostgreSQL (`make test` runs it once per
//! backend); the default is SQLite. PostgreSQL is found at `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test gets its own database, created
//! here and dropped when the test ends, so parallel tests and repeated runs never collide.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use tempfile::TempDir;

pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backend named by `TEST_BACKEND` (`sqlite` unless it says `postgres`).
pub fn backend() -> Backend {
    match std::env::var("TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("TEST_BACKEND={other:?}: use sqlite or postgres"),
    }
}

/// The server that test databases are created on.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned())
}

pub struct TestDatabase {
    url: String,
    kind: Kind,
}

enum Kind {
    Sqlite {
        _dir: Option<TempDir>,
        path: PathBuf,
    },
    Postgres {
        name: String,
    },
}

impl TestDatabase {
    /// A fresh database on the suite's backend.
    pub fn new() -> Self {
        match backend() {
            Backend::Sqlite => Self::sqlite(),
            Backend::Postgres => Self::postgres(),
        }
    }

    /// A SQLite file in a folder of its own that does not exist yet.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("data").join("users.db");
        Self {
            url: format!("sqlite://{}", path.display()),
            kind: Kind::Sqlite {
                _dir: Some(dir),
                path,
            },
        }
    }

    /// The SQLite file at `path`, which the caller keeps (benchmarks reuse seeded files).
    pub fn sqlite_file(path: &Path) -> Self {
        Self {
            url: format!("sqlite://{}", path.display()),
            kind: Kind::Sqlite {
                _dir: None,
                path: path.to_owned(),
            },
        }
    }

    /// An empty PostgreSQL database of its own.
    pub fn postgres() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "user_service_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            uuid::Uuid::now_v7().simple()
        );
        admin(&format!("CREATE DATABASE {name}"));
        let mut config: tokio_postgres::Config = admin_url().parse().expect("a valid URL");
        config.dbname(&name);
        Self {
            url: url_of(&config),
            kind: Kind::Postgres { name },
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// PostgreSQL's address, for a proxy in front of it.
    pub fn postgres_addr(&self) -> std::net::SocketAddr {
        let config: tokio_postgres::Config = self.url.parse().expect("a PostgreSQL URL");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => panic!("TEST_DATABASE_URL must name a TCP host for the fault tests"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .ok()
            .and_then(|mut addrs| addrs.next())
            .expect("PostgreSQL's host resolves")
    }

    /// This database's URL, reached through `port` on the loopback (a `Proxy`).
    pub fn url_through(&self, port: u16) -> String {
        let mut config: tokio_postgres::Config = self.url.parse().expect("a PostgreSQL URL");
        config.host("127.0.0.1").port(port);
        url_of(&config)
    }

    /// Runs `sql` in this PostgreSQL database.
    pub fn postgres_exec(&self, sql: &str) {
        run(&self.url, sql);
    }

    /// The SQLite file; for tests about SQLite itself.
    pub fn sqlite_path(&self) -> &Path {
        match &self.kind {
            Kind::Sqlite { path, .. } => path,
            Kind::Postgres { .. } => panic!("this test needs a SQLite database"),
        }
    }
}

impl Default for TestDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Kind::Postgres { name } = &self.kind {
            // FORCE ends the connections a server that was killed left behind.
            admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// `postgres://user@host:port/name` for a parsed configuration (the tests' servers trust
/// local connections; a password in TEST_DATABASE_URL is carried over).
fn url_of(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().last() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().last().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let password = config
        .get_password()
        .map(|password| format!(":{}", String::from_utf8_lossy(password)))
        .unwrap_or_default();
    let name = config.get_dbname().unwrap_or("postgres");
    format!("postgres://{user}{password}@{host}:{port}/{name}")
}

/// Runs one statement on the admin database, from a thread of its own (callers may be on an
/// async runtime or not). Panics with one line that says how to fix an unreachable server.
pub fn admin(sql: &str) {
    run(&admin_url(), sql);
}

fn run(url: &str, sql: &str) {
    let statement = sql.to_owned();
    let url = url.to_owned();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|err| (true, err))?;
            tokio::spawn(connection);
            client
                .batch_execute(&statement)
                .await
                .map_err(|err| (false, err))
        })
    })
    .join()
    .expect("the admin thread does not panic");
    match outcome {
        Ok(()) => {}
        Err((true, err)) => panic!(
            "PostgreSQL is unreachable at {} ({err}): the tests need PostgreSQL; start it, or set TEST_DATABASE_URL=postgres://USER@HOST:PORT/DATABASE",
            admin_url()
        ),
        Err((false, err)) => panic!("{sql}: {err}"),
    }
}
