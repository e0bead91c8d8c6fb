//! The connection: address, TLS, token, per-call timeout, retries of UNAVAILABLE, and the
//! exit code each failure maps to.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::pb;
use crate::pb::auth_service_client::AuthServiceClient;
use crate::pb::user_service_client::UserServiceClient;

/// Exit codes, one per failure class (documented in docs/userctl.md and `userctl --help`).
pub mod exit {
    pub const OK: u8 = 0;
    pub const OTHER: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const PERMISSION: u8 = 4;
    pub const UNAVAILABLE: u8 = 5;
}

/// A failure to report: what to print, and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: exit::USAGE,
            message: message.into(),
        }
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self {
            code: exit::OTHER,
            message: message.into(),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The canonical name of a gRPC code, as in `google.rpc.Code`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// How the connection was set up, for explaining a failure that happened below gRPC. One
/// process opens its connections one way, so it is set once, when the first is opened.
#[derive(Debug, Clone, Copy)]
struct Transport {
    tls: bool,
    client_certificate: bool,
}

static TRANSPORT: OnceLock<Transport> = OnceLock::new();

/// Errors from the connection carry what went wrong in their sources (rustls, hyper, io): the
/// one thing a person can act on, in their words.
fn transport_failure(status: &Status) -> Option<Failure> {
    let mut sources = Vec::new();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        sources.push(err);
        source = err.source();
    }
    let unavailable = |message: String| Failure {
        code: exit::UNAVAILABLE,
        message,
    };
    // tonic's client ends a call at its deadline itself, as CANCELLED "Timeout expired".
    if sources.iter().any(|err| err.is::<tonic::TimeoutExpired>()) {
        return Some(unavailable(
            "DEADLINE_EXCEEDED: the call did not finish within --timeout".into(),
        ));
    }
    if !sources
        .iter()
        .any(|err| err.is::<tonic::transport::Error>())
    {
        return None;
    }
    let detail = sources
        .last()
        .map(ToString::to_string)
        .unwrap_or_else(|| status.message().to_owned());
    let closed = [
        "broken pipe",
        "connection closed",
        "h2 protocol error",
        "connection reset",
    ]
    .iter()
    .any(|symptom| detail.contains(symptom) || status.message().contains(symptom));
    let transport = TRANSPORT.get().copied().unwrap_or(Transport {
        tls: false,
        client_certificate: false,
    });
    let message = if detail.contains("CaUsedAsEndEntity") {
        "the server's TLS certificate is a CA certificate (basicConstraints CA:TRUE, as a plain \
         `openssl req -x509` makes one), which TLS clients refuse as a server's own: make the \
         server a leaf certificate (CA:FALSE) naming the host in --addr, signed by the CA given \
         with --tls-ca or self-signed (docs/security.md, TLS, has a recipe)"
            .into()
    } else if detail.contains("NotValidForName") {
        format!(
            "the server's TLS certificate does not name the host in --addr ({detail}): connect by \
             a name or address in its subjectAltName"
        )
    } else if detail.contains("invalid peer certificate") {
        format!(
            "the server's TLS certificate was rejected ({detail}): it is not signed by the CA \
             given with --tls-ca, or does not name the host in --addr"
        )
    } else if detail.contains("InvalidContentType") || detail.contains("corrupt message") {
        "the server does not speak TLS: use an http:// address and leave out --tls-ca".into()
    } else if detail.contains("CertificateRequired") {
        "the server requires a client certificate (mutual TLS): give --tls-cert and --tls-key"
            .into()
    } else if (closed || detail.contains("fatal alert"))
        && transport.tls
        && transport.client_certificate
    {
        "the server closed the connection after the TLS handshake: it rejected the client \
         certificate (--tls-cert), which is not signed by a CA it trusts"
            .into()
    } else if closed && transport.tls {
        "the server closed the connection after the TLS handshake: it requires a client \
         certificate (mutual TLS): give --tls-cert and --tls-key"
            .into()
    } else if closed {
        format!(
            "the server closed the connection ({detail}): if it serves TLS, use an https:// \
             address and --tls-ca"
        )
    } else {
        format!("cannot reach the server: {detail}")
    };
    Some(unavailable(message))
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        if let Some(failure) = transport_failure(&status) {
            return failure;
        }
        let code = match status.code() {
            Code::NotFound => exit::NOT_FOUND,
            Code::Unauthenticated | Code::PermissionDenied => exit::PERMISSION,
            Code::Unavailable | Code::DeadlineExceeded => exit::UNAVAILABLE,
            _ => exit::OTHER,
        };
        let mut message = format!("{}: {}", code_name(status.code()), status.message());
        if status.code() == Code::Unauthenticated
            && status.message().contains("needs a bearer token")
        {
            message.push_str(
                ": give one with USERCTL_TOKEN (or --token), or sign in once with `userctl login`",
            );
        }
        Self { code, message }
    }
}

impl From<tonic::transport::Error> for Failure {
    fn from(err: tonic::transport::Error) -> Self {
        Self {
            code: exit::UNAVAILABLE,
            message: format!("cannot reach the server: {err}"),
        }
    }
}

/// Sends `authorization: Bearer <token>` when there is a token.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// Fails when the token holds characters a header value cannot.
    pub fn new(token: Option<&str>) -> Result<Self, InvalidToken> {
        token
            .map(|token| format!("Bearer {token}").parse().map_err(|_| InvalidToken))
            .transpose()
            .map(Self)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the token holds characters a header cannot")]
pub struct InvalidToken;

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Users = UserServiceClient<InterceptedService<Channel, Bearer>>;

/// How to reach the server.
#[derive(Clone)]
pub struct Target {
    pub addr: String,
    pub token: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub timeout: Duration,
}

pub struct Connection {
    channel: Channel,
    bearer: Bearer,
    pub timeout: Duration,
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path)
        .map_err(|err| Failure::usage(format!("cannot read {}: {err}", path.display())))
}

impl Connection {
    /// Connects lazily: the first call dials, and a dropped connection is dialled again.
    pub fn open(target: &Target) -> Result<Self, Failure> {
        let tls = target.tls_ca.is_some() || target.tls_cert.is_some();
        let addr = if target.addr.contains("://") {
            target.addr.clone()
        } else if tls {
            format!("https://{}", target.addr)
        } else {
            format!("http://{}", target.addr)
        };
        let mut endpoint = Endpoint::from_shared(addr.clone())
            .map_err(|_| Failure::usage(format!("{addr:?} is not a server address")))?
            .connect_timeout(target.timeout)
            .tcp_nodelay(true);
        if tls || addr.starts_with("https://") {
            let mut config = ClientTlsConfig::new();
            if let Some(ca) = &target.tls_ca {
                config = config.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&target.tls_cert, &target.tls_key) {
                (Some(cert), Some(key)) => {
                    config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                (None, None) => {}
                _ => return Err(Failure::usage("--tls-cert and --tls-key go together")),
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|err| Failure::usage(err.to_string()))?;
        }
        let _ = TRANSPORT.set(Transport {
            tls: tls || addr.starts_with("https://"),
            client_certificate: target.tls_cert.is_some(),
        });
        let bearer = Bearer::new(target.token.as_deref())
            .map_err(|_| Failure::usage("the token has characters a header cannot hold"))?;
        Ok(Self {
            channel: endpoint.connect_lazy(),
            bearer,
            timeout: target.timeout,
        })
    }

    pub fn users(&self) -> Users {
        UserServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
            .max_decoding_message_size(64 * 1024 * 1024)
    }

    pub fn auth(&self) -> AuthServiceClient<InterceptedService<Channel, Bearer>> {
        AuthServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A unary request with the call timeout.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }
}

/// Waits between attempts: 100 ms doubling, with jitter, to at most `cap`, forever.
pub fn backoff(cap: Duration) -> impl Iterator<Item = Duration> {
    // The jitter adds up to the delay again: doubling from 100 ms to half the cap, plus up to
    // as much at random, stays within the cap.
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100).min(cap / 2))
        .with_max_delay(cap / 2)
        .with_jitter()
        .with_jitter_seed(jitter_seed())
        .without_max_times()
        .build()
        .map(move |delay| delay.min(cap))
}

/// A seed of its own for each process, so that clients cut off together do not come back
/// together (backon's built-in seed, without its `std` feature, is a constant).
fn jitter_seed() -> u64 {
    let mut seed = [0u8; 8];
    // Without the system's randomness, the time still tells processes apart.
    if getrandom::fill(&mut seed).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return now.as_nanos() as u64 ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(seed)
}

/// Repeats a call that is safe to repeat while it fails with UNAVAILABLE, with backoff,
/// five attempts at most, waiting no longer in all than `budget` (the call's --timeout, so a
/// command against a stopped server answers in about that time). Every other outcome is
/// final.
pub async fn retrying<T, F, Fut>(budget: Duration, call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(3))
        .with_jitter()
        .with_jitter_seed(jitter_seed())
        .with_total_delay(Some(budget))
        .with_max_times(4);
    call.retry(policy)
        .when(|status: &Status| status.code() == Code::Unavailable)
        .await
}

/// Where `login` keeps the token: `$USERCTL_CONFIG_DIR`, else `$XDG_CONFIG_HOME/userctl`,
/// else `~/.config/userctl`.
pub fn token_file() -> Option<PathBuf> {
    let dir = std::env::var_os("USERCTL_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CONFIG_HOME").map(|dir| PathBuf::from(dir).join("userctl"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config").join("userctl"))
        })?;
    Some(dir.join("token"))
}

pub fn stored_token() -> Option<String> {
    read_stored(&token_file()?)
}

/// Where `login` keeps the refresh token, beside the access token.
fn refresh_file() -> Option<PathBuf> {
    Some(token_file()?.with_file_name("refresh"))
}

fn read_stored(path: &Path) -> Option<String> {
    let token = std::fs::read_to_string(path).ok()?;
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// Stores a login: its access token and, when it has one, its refresh token.
pub fn store_login(access_token: &str, refresh_token: &str) -> Result<PathBuf, Failure> {
    let path = store_token(access_token)?;
    if let Some(refresh) = refresh_file() {
        if refresh_token.is_empty() {
            let _ = std::fs::remove_file(&refresh);
        } else {
            write_private(&refresh, refresh_token)?;
        }
    }
    Ok(path)
}

/// Removes the stored login: whether there was one.
pub fn forget_login() -> bool {
    let mut removed = false;
    for path in [token_file(), refresh_file()].into_iter().flatten() {
        removed |= std::fs::remove_file(path).is_ok();
    }
    removed
}

/// Whether a JWT's `exp` has passed, or passes within half a minute (read without checking
/// the signature: only the server can judge that). A token that cannot be read counts as
/// current, and the server says what is wrong with it.
pub fn expires_soon(token: &str) -> bool {
    use base64::Engine;
    let exp = token
        .split('.')
        .nth(1)
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
        })
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .and_then(|claims| claims.get("exp")?.as_u64());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    exp.is_some_and(|exp| exp <= now + 30)
}

/// The stored login's access token, refreshed first when it has expired and a refresh token
/// is stored (the new tokens are stored in place of the old). `None` when nothing is stored.
pub async fn stored_login(target: &Target) -> Result<Option<String>, Failure> {
    let Some(token) = stored_token() else {
        return Ok(None);
    };
    let refresh = refresh_file().and_then(|path| read_stored(&path));
    let Some(refresh_token) = refresh.filter(|_| expires_soon(&token)) else {
        return Ok(Some(token));
    };
    let anonymous = Target {
        token: None,
        ..target.clone()
    };
    let connection = Connection::open(&anonymous)?;
    let refreshed = connection
        .auth()
        .refresh(connection.request(pb::RefreshRequest { refresh_token }))
        .await;
    match refreshed {
        Ok(response) => {
            let response = response.into_inner();
            store_login(&response.access_token, &response.refresh_token)?;
            Ok(Some(response.access_token))
        }
        // The session ended or expired: the call goes on with the old token, and its refusal
        // says to log in again.
        Err(status) if status.code() == Code::Unauthenticated => Ok(Some(token)),
        Err(status) => Err(status.into()),
    }
}

/// Writes the token readable by its owner only (mode 0600).
fn store_token(token: &str) -> Result<PathBuf, Failure> {
    let path = token_file()
        .ok_or_else(|| Failure::other("no config directory: set HOME or USERCTL_CONFIG_DIR"))?;
    write_private(&path, token)?;
    Ok(path)
}

/// Writes a secret readable by its owner only (mode 0600).
fn write_private(path: &Path, token: &str) -> Result<(), Failure> {
    use std::io::Write;
    let fail = |err: std::io::Error| {
        Failure::other(format!(
            "cannot store the token in {}: {err}",
            path.display()
        ))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options.open(path).map_err(fail)?;
        // An existing file keeps its old mode on open: set it explicitly.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(fail)?;
        file.write_all(token.as_bytes()).map_err(fail)?;
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path).map_err(fail)?;
        file.write_all(token.as_bytes()).map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::backoff;

    #[test]
    fn reconnect_delays_stay_within_their_cap_and_differ_between_clients() {
        let cap = Duration::from_secs(5);
        let first: Vec<Duration> = backoff(cap).take(40).collect();
        assert!(first.iter().all(|delay| *delay <= cap), "{first:?}");
        assert!(first[0] >= Duration::from_millis(100), "{first:?}");
        let second: Vec<Duration> = backoff(cap).take(40).collect();
        assert_ne!(first, second, "two clients draw different delays");
    }
}
