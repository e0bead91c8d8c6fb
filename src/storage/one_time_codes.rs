//! Single-use codes that prove a user reads their email: account recovery and email
//! verification. Each user has at most one pending code per purpose, kept as a digest with
//! its expiry and the attempts it has left; issuing one also writes it to the outbox
//! (`deliveries`), which the team's mailer reads in order, by revision, as WatchUsers is read.

use crate::domain::UserId;

/// Wrong guesses a code survives; the last one voids it.
pub const ATTEMPTS: i64 = 5;

/// What a delivery is for: a code, or a notice to the owner (which has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Recovery = 1,
    Verification = 2,
    SecondFactorEnabled = 3,
    SecondFactorDisabled = 4,
    PasswordRecovered = 5,
}

impl Purpose {
    pub(super) fn from_i64(raw: i64) -> Option<Self> {
        match raw {
            1 => Some(Purpose::Recovery),
            2 => Some(Purpose::Verification),
            3 => Some(Purpose::SecondFactorEnabled),
            4 => Some(Purpose::SecondFactorDisabled),
            5 => Some(Purpose::PasswordRecovered),
            _ => None,
        }
    }

    /// Whether a delivery of this purpose carries a code that is kept pending (a notice is
    /// only delivered).
    pub(super) fn has_code(self) -> bool {
        match self {
            Purpose::Recovery | Purpose::Verification => true,
            Purpose::SecondFactorEnabled
            | Purpose::SecondFactorDisabled
            | Purpose::PasswordRecovered => false,
        }
    }
}

/// A code as stored: the SHA-256 digest of the user's id and the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeDigest(pub [u8; 32]);

/// A code to issue: its pending row and its delivery; a notice has its delivery only.
#[derive(Debug, Clone)]
pub struct IssuedCode {
    pub user: UserId,
    pub purpose: Purpose,
    pub digest: CodeDigest,
    /// Where the code is sent, and (for verification) the address it proves.
    pub email: String,
    pub username: String,
    /// The code itself, for the delivery only.
    pub code: String,
    pub expires_at_ns: i64,
}

/// A code waiting in the outbox for the mailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub revision: i64,
    pub purpose: Purpose,
    pub user: UserId,
    pub username: String,
    pub email: String,
    pub code: String,
    pub expires_at_ns: i64,
}

/// A pending code as read.
#[derive(Debug, Clone)]
pub(super) struct StoredCode {
    pub digest: Vec<u8>,
    pub email: String,
    pub expires_at_ns: i64,
    pub attempts_left: i64,
}

/// What presenting a code did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// The code was right and is used up; it was sent to this address.
    Accepted { email: String },
    /// No such code, expired, wrong, or out of attempts.
    Refused,
}

/// What a backend writes for a presented code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CodeWrite {
    Nothing,
    /// The code is used up, expired or out of attempts.
    Delete,
    /// One attempt fewer.
    Decrement,
}

fn same(stored: &[u8], presented: &[u8; 32]) -> bool {
    stored.len() == presented.len()
        && stored
            .iter()
            .zip(presented)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

/// Decides a presented code, given the pending one as read (`None`: there is none) at `now_ns`.
pub(super) fn redeem(
    found: Option<StoredCode>,
    presented: &CodeDigest,
    now_ns: i64,
) -> (Redeemed, CodeWrite) {
    let Some(code) = found else {
        return (Redeemed::Refused, CodeWrite::Nothing);
    };
    if code.expires_at_ns <= now_ns {
        return (Redeemed::Refused, CodeWrite::Delete);
    }
    if same(&code.digest, &presented.0) {
        return (Redeemed::Accepted { email: code.email }, CodeWrite::Delete);
    }
    if code.attempts_left <= 1 {
        (Redeemed::Refused, CodeWrite::Delete)
    } else {
        (Redeemed::Refused, CodeWrite::Decrement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(attempts_left: i64) -> StoredCode {
        StoredCode {
            digest: vec![7; 32],
            email: "ann@example.com".into(),
            expires_at_ns: 100,
            attempts_left,
        }
    }

    #[test]
    fn the_right_code_is_accepted_once_and_used_up() {
        let (redeemed, write) = redeem(Some(stored(5)), &CodeDigest([7; 32]), 10);
        assert_eq!(
            redeemed,
            Redeemed::Accepted {
                email: "ann@example.com".into()
            }
        );
        assert_eq!(write, CodeWrite::Delete);
    }

    #[test]
    fn a_wrong_code_costs_an_attempt_and_the_last_attempt_voids_it() {
        let wrong = CodeDigest([8; 32]);
        assert_eq!(
            redeem(Some(stored(5)), &wrong, 10),
            (Redeemed::Refused, CodeWrite::Decrement)
        );
        assert_eq!(
            redeem(Some(stored(1)), &wrong, 10),
            (Redeemed::Refused, CodeWrite::Delete)
        );
    }

    #[test]
    fn an_expired_or_missing_code_is_refused() {
        assert_eq!(
            redeem(Some(stored(5)), &CodeDigest([7; 32]), 100),
            (Redeemed::Refused, CodeWrite::Delete)
        );
        assert_eq!(
            redeem(None, &CodeDigest([7; 32]), 10),
            (Redeemed::Refused, CodeWrite::Nothing)
        );
    }
}
