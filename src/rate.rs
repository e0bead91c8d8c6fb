//! Whom a limit counts a call against, and the per-caller rate limit: one limiter, shared by
//! the rate-limit layer (authenticated calls), authentication (calls whose token is not
//! verified yet, by address) and SyncUsers (each message counts like a call).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use tower_governor::GovernorError;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;

use crate::caller::{Authenticated, Caller};
use crate::client_address::ClientAddress;
use crate::domain::UserId;

/// An authenticated caller's principal, or an anonymous caller's address (an IPv6 /64).
/// Made without allocating, since every call makes one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerKey {
    User(UserId),
    Service(Arc<str>),
    Key(uuid::Uuid),
    Address(IpAddr),
}

impl fmt::Display for CallerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallerKey::User(id) => write!(f, "user:{id}"),
            CallerKey::Service(name) => write!(f, "service:{name}"),
            CallerKey::Key(id) => write!(f, "key:{id}"),
            CallerKey::Address(ip) => write!(f, "ip:{ip}"),
        }
    }
}

impl CallerKey {
    /// The key of `caller`, whose call carries `extensions`; `None` when it is anonymous
    /// and its address is unknown.
    pub fn of(caller: &Caller, extensions: &http::Extensions) -> Option<Self> {
        match caller {
            Caller::User { id, .. } => Some(CallerKey::User(*id)),
            Caller::Service { name, .. } => Some(CallerKey::Service(name.clone())),
            Caller::Key { id, .. } => Some(CallerKey::Key(*id)),
            Caller::Anonymous => ClientAddress::key_of(extensions).map(CallerKey::Address),
        }
    }
}

/// The key of a call that authentication has passed, for tower_governor.
#[derive(Clone)]
pub struct KeyOfCall;

impl KeyExtractor for KeyOfCall {
    type Key = CallerKey;

    fn extract<T>(&self, request: &http::Request<T>) -> Result<CallerKey, GovernorError> {
        CallerKey::of(
            Authenticated::caller_of(request.extensions()),
            request.extensions(),
        )
        .ok_or(GovernorError::UnableToExtractKey)
    }
}

pub type Config = GovernorConfig<KeyOfCall, NoOpMiddleware>;

/// `per_second` calls per second sustained, bursts of `burst`, per caller; off when
/// `per_second` is 0.
#[derive(Clone)]
pub struct RateLimiter {
    config: Option<Arc<Config>>,
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let config = (per_second > 0).then(|| {
            let period = Duration::from_nanos(1_000_000_000 / u64::from(per_second));
            let config = GovernorConfigBuilder::default()
                .key_extractor(KeyOfCall)
                .period(period)
                .burst_size(burst.max(1))
                .finish()
                .expect("a non-zero period and burst make a valid rate limit");
            Arc::new(config)
        });
        Self { config }
    }

    /// The limit's configuration, for the layer; `None` when it is off.
    pub fn config(&self) -> Option<&Arc<Config>> {
        self.config.as_ref()
    }

    /// Counts one call (a SyncUsers message, say) against `key`; refused with how long to wait.
    pub fn check(&self, key: &CallerKey) -> Result<(), Duration> {
        let Some(config) = &self.config else {
            return Ok(());
        };
        config.limiter().check_key(key).map_err(|not_until| {
            use governor::clock::{Clock, DefaultClock};
            not_until.wait_time_from(DefaultClock::default().now())
        })
    }

    /// Drops the state of keys that are back to a full burst, so the key map stays bounded.
    pub fn forget_idle_keys(&self) {
        if let Some(config) = &self.config {
            config.limiter().retain_recent();
            config.limiter().shrink_to_fit();
        }
    }
}
