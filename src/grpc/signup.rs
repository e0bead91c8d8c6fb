//! Anonymous sign-up's own limit: accounts a client address may create, counted apart from
//! its calls in general, since each one costs a password hash and a row.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::client_address::ClientAddress;
use crate::error::ServiceError;

pub struct SignupLimit {
    by_address: DefaultKeyedRateLimiter<IpAddr>,
}

impl SignupLimit {
    /// `per_hour` sign-ups an hour per address, in bursts of at most that many.
    pub fn new(per_hour: NonZeroU32) -> Self {
        Self {
            by_address: RateLimiter::keyed(Quota::per_hour(per_hour)),
        }
    }

    /// Counts one sign-up from the request's client address.
    pub fn check(&self, extensions: &http::Extensions) -> Result<(), ServiceError> {
        let Some(address) = ClientAddress::key_of(extensions) else {
            return Ok(());
        };
        let now = DefaultClock::default().now();
        self.by_address
            .check_key(&address)
            .map_err(|not_until| ServiceError::TooMany {
                what: "too many sign-ups from this address",
                retry_after: not_until.wait_time_from(now),
            })
    }

    /// Forgets addresses whose limit has fully recovered, so the map stays bounded.
    pub fn forget_idle_keys(&self) {
        self.by_address.retain_recent();
        self.by_address.shrink_to_fit();
    }
}
