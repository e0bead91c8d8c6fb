//! The password hasher, a service beside authentication: Argon2id on a bounded pool that uses
//! every core, off the async runtime.

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tracing::Instrument;

use crate::domain::{Credential, Password, PasswordHash, Scheme};
use crate::error::ServiceError;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Settings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Argon2Settings {
    /// The OWASP minimum recommendation for Argon2id.
    pub const OWASP_MINIMUM: Self = Self {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };

    /// Whether these settings are weaker than the OWASP minimum in any dimension.
    pub fn below_recommendation(&self) -> bool {
        self.memory_kib < Self::OWASP_MINIMUM.memory_kib
            || self.iterations < Self::OWASP_MINIMUM.iterations
    }
}

impl Default for Argon2Settings {
    fn default() -> Self {
        Self::OWASP_MINIMUM
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid Argon2 parameters: {0}")]
    Params(argon2::Error),
    #[error("password hashing failed: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("a password hashing thread failed")]
    Pool,
}

/// Hashes passwords with at most one job per core at a time, so a burst of sign-ups uses
/// every core without running out of memory (each job holds `memory_kib` of RAM). Login has a
/// share of its own (half the cores, at least one), so sign-ups and batch imports that fill
/// the pool never make a login wait behind them.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    pool: Arc<Pool>,
    login_pool: Arc<Pool>,
    stats: Arc<HashStats>,
}

/// What the hasher has done, for the metrics.
#[derive(Debug)]
pub struct HashStats {
    /// Jobs waiting for a core now.
    pub waiting: std::sync::atomic::AtomicUsize,
    /// The time each job took on its core: 1 ms to 8 s.
    pub hashing: crate::timing::Timings,
}

impl Default for HashStats {
    fn default() -> Self {
        Self {
            waiting: Default::default(),
            hashing: crate::timing::Timings::new(std::time::Duration::from_millis(1), 14),
        }
    }
}

/// Counts a job as waiting until dropped: when a thread takes it, or with it untaken.
struct WaitingJob(Arc<HashStats>);

impl WaitingJob {
    fn enter(stats: Arc<HashStats>) -> Self {
        stats
            .waiting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for WaitingJob {
    fn drop(&mut self) {
        self.0
            .waiting
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run hashing jobs from one queue, in order. A thread takes the next job as soon
/// as it finishes one: under a burst, jobs follow each other without a thread being woken
/// for each. The threads end when the last handle to the queue is dropped.
struct Pool {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Pool {
    fn start(name: &str, threads: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || {
                    loop {
                        // One thread waits on the queue at a time; the others wait for it.
                        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(error = %err, "cannot start a password hashing thread");
            }
        }
        Self { jobs }
    }

    fn submit(&self, job: Job) -> Result<(), HashError> {
        self.jobs.send(job).map_err(|_| HashError::Pool)
    }
}

impl PasswordHasher {
    pub fn new(settings: Argon2Settings) -> Result<Self, HashError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(HashError::Params)?;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Self {
            params,
            pool: Arc::new(Pool::start("argon2", cores)),
            login_pool: Arc::new(Pool::start("argon2-login", cores.div_ceil(2))),
            stats: Arc::default(),
        })
    }

    pub fn stats(&self) -> Arc<HashStats> {
        self.stats.clone()
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Runs one Argon2 job on `pool`, in turn. A job whose caller gave up before its turn
    /// (a deadline, a dropped call) is skipped.
    async fn run<R: Send + 'static>(
        &self,
        pool: &Pool,
        job: impl FnOnce(Argon2<'static>) -> R + Send + 'static,
    ) -> Result<R, HashError> {
        let argon2 = self.argon2();
        let stats = self.stats.clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        // Counted as waiting until a thread takes it (or it is dropped untaken).
        let waiting = WaitingJob::enter(stats.clone());
        pool.submit(Box::new(move || {
            drop(waiting);
            if reply.is_closed() {
                return;
            }
            let started = std::time::Instant::now();
            let done = job(argon2);
            stats.hashing.record(started.elapsed());
            let _ = reply.send(done);
        }))?;
        answer.await.map_err(|_| HashError::Pool)
    }

    pub async fn hash(&self, password: Password) -> Result<PasswordHash, HashError> {
        self.run(&self.pool, move |argon2| {
            argon2
                .hash_password(password.expose().as_bytes())
                .map(|hash| PasswordHash::from_phc(hash.to_string()))
                .map_err(HashError::Hash)
        })
        .instrument(span("hash_password", None))
        .await?
    }

    /// The hash to store for a new user's credential: a password hashed here, or an imported
    /// hash as it is.
    pub async fn hash_credential(&self, credential: Credential) -> Result<PasswordHash, HashError> {
        match credential {
            Credential::Password(password) => self.hash(password).await,
            Credential::Imported(hash) => Ok(hash),
        }
    }

    /// Whether `hash` is weaker than what this server makes now: another algorithm or version,
    /// or less memory, fewer iterations or fewer lanes in any one of them. A hash that does
    /// not parse is not judged (it never verifies either).
    pub fn is_weaker(&self, hash: &PasswordHash) -> bool {
        if hash.scheme() != Some(Scheme::Argon2id) {
            // Another algorithm (an import), whatever its costs.
            return hash.scheme().is_some();
        }
        let Ok(parsed) = argon2::password_hash::phc::PasswordHash::new(hash.as_phc()) else {
            return false;
        };
        if parsed.version != Some(Version::V0x13 as u32) {
            return true;
        }
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        params.m_cost() < self.params.m_cost()
            || params.t_cost() < self.params.t_cost()
            || params.p_cost() < self.params.p_cost()
    }

    /// Whether `password` matches `hash`, for a login: on Login's own share of the cores. A
    /// malformed stored hash never matches.
    pub async fn verify(&self, password: Password, hash: PasswordHash) -> Result<bool, HashError> {
        let at_server_cost = !self.is_weaker(&hash);
        self.run(&self.login_pool, move |argon2| {
            let password = password.expose().as_bytes();
            let phc = || argon2::password_hash::phc::PasswordHash::new(hash.as_phc());
            match hash.scheme() {
                Some(Scheme::Argon2id | Scheme::Argon2i) => {
                    argon2.verify_password(password, hash.as_phc()).is_ok()
                }
                Some(Scheme::Bcrypt) => bcrypt::verify(password, hash.as_phc()).unwrap_or(false),
                Some(Scheme::Scrypt) => phc().is_ok_and(|parsed| {
                    scrypt::Scrypt::new()
                        .verify_password(password, &parsed)
                        .is_ok()
                }),
                Some(Scheme::Pbkdf2Sha256) => phc().is_ok_and(|parsed| {
                    pbkdf2::Pbkdf2::SHA256
                        .verify_password(password, &parsed)
                        .is_ok()
                }),
                None => false,
            }
        })
        .instrument(span("verify_password", Some(at_server_cost)))
        .await
    }
}

/// A trace span for one hash or verification, its wait for a core included (disabled unless
/// traces are exported); a verification says whether its hash costs what the server's own do.
fn span(operation: &'static str, at_server_cost: Option<bool>) -> tracing::Span {
    tracing::debug_span!(
        target: crate::telemetry::SPAN_TARGET,
        "password",
        otel.name = operation,
        at_server_cost
    )
}

impl From<HashError> for ServiceError {
    fn from(err: HashError) -> Self {
        ServiceError::Internal(Box::new(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_is_weaker_when_any_cost_is_lower_than_the_servers() {
        let cheap = PasswordHasher::new(CHEAP).unwrap();
        let stronger = PasswordHasher::new(Argon2Settings {
            memory_kib: 128,
            ..CHEAP
        })
        .unwrap();
        let password = Password::parse("a long enough password".into()).unwrap();
        let made_cheap = cheap.hash(password.clone()).await.unwrap();
        let made_stronger = stronger.hash(password).await.unwrap();
        assert!(stronger.is_weaker(&made_cheap), "less memory");
        assert!(!stronger.is_weaker(&made_stronger), "the server's own");
        assert!(!cheap.is_weaker(&made_stronger), "stronger is not weaker");
        let argon2i = PasswordHash::from_phc(
            "$argon2i$v=19$m=65536,t=3,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG".into(),
        );
        assert!(cheap.is_weaker(&argon2i), "another algorithm");
        assert!(!cheap.is_weaker(&PasswordHash::from_phc("not a hash".into())));
    }

    pub(super) const CHEAP: Argon2Settings = Argon2Settings {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[tokio::test]
    async fn a_hash_is_argon2id_in_phc_format_and_verifies_only_its_password() {
        let hasher = PasswordHasher::new(CHEAP).unwrap();
        let password = Password::parse("correct horse".into()).unwrap();
        let hash = hasher.hash(password.clone()).await.unwrap();
        assert!(hash.as_phc().starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(hasher.verify(password, hash.clone()).await.unwrap());
        let wrong = Password::parse("battery staple".into()).unwrap();
        assert!(!hasher.verify(wrong, hash).await.unwrap());
    }

    #[tokio::test]
    async fn a_hash_never_appears_in_debug_output() {
        let hasher = PasswordHasher::new(CHEAP).unwrap();
        let hash = hasher
            .hash(Password::parse("correct horse".into()).unwrap())
            .await
            .unwrap();
        let shown = format!("{hash:?}");
        assert!(!shown.contains("argon2"), "{shown}");
    }

    #[tokio::test]
    async fn a_login_is_not_kept_waiting_by_hashing_that_fills_the_pool() {
        let hasher = PasswordHasher::new(CHEAP).unwrap();
        let password = Password::parse("correct horse".into()).unwrap();
        let hash = hasher.hash(password.clone()).await.unwrap();
        // Every thread of the pool busy with sign-ups and imports, until `release` drops.
        let (release, busy) = std::sync::mpsc::channel::<()>();
        let busy = Arc::new(std::sync::Mutex::new(busy));
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        for _ in 0..cores {
            let busy = busy.clone();
            hasher
                .pool
                .submit(Box::new(move || {
                    let _ = busy.lock().unwrap().recv();
                }))
                .unwrap();
        }

        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            hasher.hash(password.clone()),
        )
        .await;
        assert!(waiting.is_err(), "a sign-up waits for a free core");
        let login = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            hasher.verify(password, hash),
        )
        .await
        .expect("a login does not wait behind them");
        assert!(login.unwrap());
        drop(release);
    }

    #[test]
    fn settings_below_the_owasp_minimum_are_flagged() {
        assert!(CHEAP.below_recommendation());
        assert!(!Argon2Settings::default().below_recommendation());
    }
}

#[cfg(test)]
mod imported {
    use argon2::password_hash::PasswordHasher as _;

    use super::*;

    const SECRET: &str = "an imported password";
    const SALT: &[u8] = b"sixteen byte slt";

    /// The same password hashed by each algorithm an import may bring, with cheap costs.
    fn made_elsewhere() -> Vec<(Scheme, String)> {
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        );
        let scrypt = scrypt::Scrypt::new_with_params(scrypt::Params::new(4, 8, 1).unwrap());
        let pbkdf2 = pbkdf2::Pbkdf2::new(
            pbkdf2::Algorithm::Pbkdf2Sha256,
            pbkdf2::Params::new(1000).unwrap(),
        );
        vec![
            (
                Scheme::Argon2i,
                argon2i
                    .hash_password_with_salt(SECRET.as_bytes(), SALT)
                    .unwrap()
                    .to_string(),
            ),
            (
                Scheme::Scrypt,
                scrypt
                    .hash_password_with_salt(SECRET.as_bytes(), SALT)
                    .unwrap()
                    .to_string(),
            ),
            (
                Scheme::Pbkdf2Sha256,
                pbkdf2
                    .hash_password_with_salt(SECRET.as_bytes(), SALT)
                    .unwrap()
                    .to_string(),
            ),
            (Scheme::Bcrypt, bcrypt::hash(SECRET, 4).unwrap()),
        ]
    }

    #[tokio::test]
    async fn an_imported_hash_of_each_algorithm_verifies_its_password_only_and_counts_as_weaker() {
        let hasher = PasswordHasher::new(super::tests::CHEAP).unwrap();
        for (scheme, made) in made_elsewhere() {
            let hash = PasswordHash::import(made)
                .unwrap_or_else(|violation| panic!("{scheme:?} is importable: {violation:?}"));
            assert_eq!(hash.scheme(), Some(scheme));
            let right = Password::parse(SECRET.into()).unwrap();
            let wrong = Password::parse("another long password".into()).unwrap();
            assert!(
                hasher.verify(right, hash.clone()).await.unwrap(),
                "{scheme:?}"
            );
            assert!(
                !hasher.verify(wrong, hash.clone()).await.unwrap(),
                "{scheme:?}"
            );
            assert!(hasher.is_weaker(&hash), "{scheme:?} is upgraded at login");
        }
    }

    #[test]
    fn malformed_or_unsupported_hashes_are_refused_naming_the_field() {
        for raw in [
            "",
            "plain text",
            "$md5$c2FsdA$aGFzaA",
            "$1$salt$hash",
            "$argon2id$v=19$m=1,t=1,p=1$c2l4dGVlbiBieXRlIHNsdA$aGFzaGhhc2hoYXNo",
            "$argon2id$v=19$m=64,t=1,p=1",
            "$pbkdf2-sha256$i=1000$c2FsdA",
            "$scrypt$ln=4,r=8,p=1$$",
            "$2b$04$short",
            "$2b$xx$abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyza",
        ] {
            let violation =
                PasswordHash::import(raw.into()).expect_err(&format!("{raw:?} is refused"));
            assert_eq!(violation.field, "password_hash", "{raw:?}");
            let secret_part = raw.rsplit('$').next().unwrap_or_default();
            assert!(
                secret_part.len() < 6 || !violation.description.contains(secret_part),
                "the message does not quote the hash: {}",
                violation.description
            );
        }
    }
}
