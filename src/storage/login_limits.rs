//! Login limits kept in the database, so every replica counts the same guesses. Each limit is
//! a bucket (GCRA: one stored instant, the "theoretical arrival time") under a key of
//! (account, client address), where an empty side means "any": the account from one address,
//! the account from every address, and one address against every account. An attempt is
//! charged to each of its buckets before the password is checked, in one transaction that
//! holds their rows, so attempts sent in parallel to any number of replicas are each counted
//! once; a right password gives its charge back.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// Rows whose buckets have fully refilled, removed by each attempt at most.
pub(super) const PRUNED_PER_ATTEMPT: i64 = 16;

/// How many times the per-(account, address) allowance an account gets from all addresses
/// together, and an address gets against all accounts together.
pub const WIDER_ALLOWANCE: u32 = 10;

/// Attempts a period (a minute, an hour), sustained, in bursts of at most that many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginAllowance {
    count: NonZeroU32,
    period_ns: i64,
}

impl LoginAllowance {
    pub fn per_minute(count: NonZeroU32) -> Self {
        Self {
            count,
            period_ns: 60_000_000_000,
        }
    }

    pub fn per_hour(count: NonZeroU32) -> Self {
        Self {
            count,
            period_ns: 3_600_000_000_000,
        }
    }

    fn wider(self) -> Self {
        Self {
            count: self
                .count
                .saturating_mul(NonZeroU32::new(WIDER_ALLOWANCE).expect("non-zero")),
            ..self
        }
    }

    /// The time one attempt takes to refill.
    fn interval_ns(self) -> i64 {
        self.period_ns / i64::from(self.count.get())
    }

    /// How far ahead of now a bucket's instant may be and still admit one more attempt.
    fn tolerance_ns(self) -> i64 {
        self.interval_ns() * (i64::from(self.count.get()) - 1)
    }
}

/// What an attempt is: a password (or second-factor code) checked, or a recovery code sent.
/// Their buckets are kept apart, so mails asked for never use up anyone's sign-in attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    /// Three buckets: the account from this address at the allowance, the account from
    /// every address and the address against every account at ten times it.
    Login,
    /// Two: the account at the allowance (what its owner's inbox receives), and the address
    /// against every account at ten times it.
    Recovery,
}

/// One bucket's key: an account's username key, an address, or both. Stored as two texts,
/// empty for "any" (no username is empty, and no address prints as empty).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct BucketKey {
    pub account: String,
    pub address: String,
}

/// A bucket as stored: the instant at which it is full again, and the attempts charged and
/// not given back since it last was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Bucket {
    pub full_at_ns: i64,
    pub failures: i64,
}

/// One attempt: the account it names and where it comes from.
#[derive(Debug, Clone)]
pub struct LoginAttempt {
    pub kind: AttemptKind,
    pub account: String,
    pub address: Option<IpAddr>,
    pub allowance: LoginAllowance,
}

impl LoginAttempt {
    /// Its buckets in the order their rows are locked (sorted, so two attempts never wait on
    /// each other in a cycle), each with its allowance.
    pub(super) fn buckets(&self) -> Vec<(BucketKey, LoginAllowance)> {
        // A recovery's keys have a prefix no username or address has.
        let prefix = match self.kind {
            AttemptKind::Login => "",
            AttemptKind::Recovery => "recovery:",
        };
        let key = |account: &str, address: Option<IpAddr>| BucketKey {
            account: if account.is_empty() {
                String::new()
            } else {
                format!("{prefix}{account}")
            },
            address: address.map_or_else(String::new, |address| format!("{prefix}{address}")),
        };
        let mut buckets = match self.kind {
            AttemptKind::Login => vec![(key(&self.account, None), self.allowance.wider())],
            AttemptKind::Recovery => vec![(key(&self.account, None), self.allowance)],
        };
        if let Some(address) = self.address {
            if self.kind == AttemptKind::Login {
                buckets.push((key(&self.account, Some(address)), self.allowance));
            }
            buckets.push((key("", Some(address)), self.allowance.wider()));
        }
        buckets.sort_by(|a, b| a.0.cmp(&b.0));
        buckets
    }
}

/// What charging an attempt decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// The password may be checked.
    Admitted,
    /// One of the buckets is empty: try again after this long. Nothing was charged.
    Refused { retry_after: Duration },
}

/// Charges one attempt to each bucket (as read, `None` when it has no row) at `now_ns`: the
/// decision, and the buckets to store when admitted. A refused attempt charges none of them,
/// so an address past its own allowance does not use up the account's.
pub(super) fn charge(
    found: &[(Option<Bucket>, LoginAllowance)],
    now_ns: i64,
) -> (Charge, Option<Vec<Bucket>>) {
    let mut wait_ns = 0;
    let mut charged = Vec::with_capacity(found.len());
    for &(bucket, allowance) in found {
        let bucket = bucket.unwrap_or_default();
        let (from, failures) = if bucket.full_at_ns <= now_ns {
            // Full again: a new run of failures starts.
            (now_ns, 0)
        } else {
            (bucket.full_at_ns, bucket.failures)
        };
        let ahead = from - now_ns;
        if ahead > allowance.tolerance_ns() {
            wait_ns = wait_ns.max(ahead - allowance.tolerance_ns());
        }
        charged.push(Bucket {
            full_at_ns: from.saturating_add(allowance.interval_ns()),
            failures: failures + 1,
        });
    }
    if wait_ns > 0 {
        let retry_after = Duration::from_nanos(u64::try_from(wait_ns).unwrap_or(u64::MAX));
        (Charge::Refused { retry_after }, None)
    } else {
        (Charge::Admitted, Some(charged))
    }
}

/// Gives an admitted attempt's charge back to a bucket (a right password): one attempt's
/// refill and one failure fewer. `None`: nothing to give back.
pub(super) fn refund(
    found: Option<Bucket>,
    allowance: LoginAllowance,
    now_ns: i64,
) -> Option<Bucket> {
    let bucket = found?;
    if bucket.full_at_ns <= now_ns {
        return None;
    }
    Some(Bucket {
        full_at_ns: (bucket.full_at_ns - allowance.interval_ns()).max(now_ns),
        failures: (bucket.failures - 1).max(0),
    })
}

/// The failures an account's bucket holds at `now_ns`: none once it has refilled.
pub(super) fn failures_of(found: Option<Bucket>, now_ns: i64) -> u64 {
    found
        .filter(|bucket| bucket.full_at_ns > now_ns)
        .map_or(0, |bucket| u64::try_from(bucket.failures).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn allowance(per_minute: u32) -> LoginAllowance {
        LoginAllowance::per_minute(NonZeroU32::new(per_minute).unwrap())
    }

    /// Charges `n` attempts at `now` to one bucket: how many were admitted, and the bucket.
    fn attempts(
        n: usize,
        per_minute: u32,
        now: i64,
        start: Option<Bucket>,
    ) -> (usize, Option<Bucket>) {
        let mut bucket = start;
        let mut admitted = 0;
        for _ in 0..n {
            if let (Charge::Admitted, Some(written)) =
                charge(&[(bucket, allowance(per_minute))], now)
            {
                admitted += 1;
                bucket = Some(written[0]);
            }
        }
        (admitted, bucket)
    }

    #[test]
    fn a_burst_is_admitted_up_to_the_allowance_and_then_refused_with_the_wait() {
        let (admitted, bucket) = attempts(25, 10, NOW, None);
        assert_eq!(admitted, 10);
        assert_eq!(bucket.unwrap().failures, 10);
        let (decision, written) = charge(&[(bucket, allowance(10))], NOW);
        assert_eq!(
            decision,
            Charge::Refused {
                retry_after: Duration::from_secs(6)
            },
            "one attempt refills in a tenth of a minute"
        );
        assert_eq!(written, None, "a refused attempt is not charged");
    }

    #[test]
    fn an_attempt_refills_after_its_interval_and_a_full_bucket_starts_counting_again() {
        let (_, bucket) = attempts(10, 10, NOW, None);
        let (admitted, _) = attempts(2, 10, NOW + 6_000_000_000, bucket);
        assert_eq!(admitted, 1, "one interval, one attempt");
        let (admitted, later) = attempts(1, 10, NOW + 61_000_000_000, bucket);
        assert_eq!(admitted, 1);
        assert_eq!(later.unwrap().failures, 1, "the earlier run was forgotten");
    }

    #[test]
    fn a_refused_bucket_charges_none_of_the_others() {
        let (_, empty) = attempts(10, 10, NOW, None);
        let (decision, written) = charge(&[(None, allowance(100)), (empty, allowance(10))], NOW);
        assert!(matches!(decision, Charge::Refused { .. }));
        assert_eq!(written, None);
    }

    #[test]
    fn a_right_password_gives_its_charge_back() {
        let (_, bucket) = attempts(3, 10, NOW, None);
        let refunded = refund(bucket, allowance(10), NOW).unwrap();
        assert_eq!(refunded.failures, 2);
        assert_eq!(refunded.full_at_ns, NOW + 12_000_000_000);
        assert_eq!(
            refund(Some(refunded), allowance(10), NOW + 60_000_000_000),
            None
        );
        assert_eq!(failures_of(bucket, NOW), 3);
        assert_eq!(failures_of(bucket, NOW + 60_000_000_000), 0, "refilled");
    }

    #[test]
    fn an_attempt_from_an_address_has_three_buckets_locked_in_one_order() {
        let attempt = LoginAttempt {
            kind: AttemptKind::Login,
            account: "owner".into(),
            address: Some("203.0.113.7".parse().unwrap()),
            allowance: allowance(10),
        };
        let buckets = attempt.buckets();
        let keys: Vec<(&str, &str)> = buckets
            .iter()
            .map(|(key, _)| (key.account.as_str(), key.address.as_str()))
            .collect();
        assert_eq!(
            keys,
            [("", "203.0.113.7"), ("owner", ""), ("owner", "203.0.113.7")]
        );
        assert_eq!(
            buckets[0].1,
            allowance(100),
            "an address against every account"
        );
        assert_eq!(
            buckets[1].1,
            allowance(100),
            "the account from every address"
        );
        assert_eq!(buckets[2].1, allowance(10));
        let unknown = LoginAttempt {
            address: None,
            ..attempt
        };
        assert_eq!(
            unknown.buckets().len(),
            1,
            "no address: the account's bucket alone"
        );
    }

    #[test]
    fn a_recovery_counts_per_account_and_per_address_apart_from_logins() {
        let attempt = LoginAttempt {
            kind: AttemptKind::Recovery,
            account: "owner".into(),
            address: Some("203.0.113.7".parse().unwrap()),
            allowance: LoginAllowance::per_hour(NonZeroU32::new(5).unwrap()),
        };
        let buckets = attempt.buckets();
        let keys: Vec<(&str, &str)> = buckets
            .iter()
            .map(|(key, _)| (key.account.as_str(), key.address.as_str()))
            .collect();
        assert_eq!(
            keys,
            [("", "recovery:203.0.113.7"), ("recovery:owner", "")],
            "no key a login's bucket has"
        );
        assert_eq!(
            buckets[1].1,
            LoginAllowance::per_hour(NonZeroU32::new(5).unwrap())
        );
        // Five an hour: the sixth waits twelve minutes.
        let allowance = LoginAllowance::per_hour(NonZeroU32::new(5).unwrap());
        let mut bucket = None;
        for _ in 0..5 {
            let (decision, written) = charge(&[(bucket, allowance)], NOW);
            assert_eq!(decision, Charge::Admitted);
            bucket = Some(written.unwrap()[0]);
        }
        assert_eq!(
            charge(&[(bucket, allowance)], NOW).0,
            Charge::Refused {
                retry_after: Duration::from_secs(12 * 60)
            }
        );
    }
}
