//! Second factors as stored: per user, the sealed TOTP secret (sealing is the auth layer's;
//! storage keeps bytes), whether it is confirmed, and the last step a code was accepted for;
//! and the digests of the user's unused recovery codes. Each code is accepted once: a step
//! only after the last accepted one, a recovery code by deleting its row.

/// A user's second factor as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondFactor {
    pub sealed: Vec<u8>,
    /// Confirmed with a first code: Login asks for codes.
    pub confirmed: bool,
    /// The last step a code was accepted for (0: none yet).
    pub last_step: i64,
}

/// Whether a new secret may replace what is stored: a pending one may be replaced, a
/// confirmed one must be disabled first.
pub(super) fn may_enroll(found: Option<&SecondFactor>) -> bool {
    found.is_none_or(|factor| !factor.confirmed)
}

/// Whether a pending secret is confirmed by a code valid for `step`.
pub(super) fn may_confirm(found: Option<&SecondFactor>) -> bool {
    found.is_some_and(|factor| !factor.confirmed)
}

/// Whether a code valid for `step` is accepted: only for a confirmed factor, and only for a
/// step after the last accepted one, so no code works twice.
pub(super) fn accepts_step(found: Option<&SecondFactor>, step: i64) -> bool {
    found.is_some_and(|factor| factor.confirmed && step > factor.last_step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factor(confirmed: bool, last_step: i64) -> SecondFactor {
        SecondFactor {
            sealed: vec![1],
            confirmed,
            last_step,
        }
    }

    #[test]
    fn a_pending_secret_may_be_replaced_and_a_confirmed_one_may_not() {
        assert!(may_enroll(None));
        assert!(may_enroll(Some(&factor(false, 0))));
        assert!(!may_enroll(Some(&factor(true, 0))));
        assert!(may_confirm(Some(&factor(false, 0))));
        assert!(!may_confirm(Some(&factor(true, 0))));
        assert!(!may_confirm(None));
    }

    #[test]
    fn a_step_is_accepted_once_and_never_an_earlier_one() {
        assert!(accepts_step(Some(&factor(true, 10)), 11));
        assert!(!accepts_step(Some(&factor(true, 11)), 11), "a replay");
        assert!(!accepts_step(Some(&factor(true, 11)), 10), "an older code");
        assert!(
            !accepts_step(Some(&factor(false, 0)), 11),
            "not confirmed yet"
        );
        assert!(!accepts_step(None, 11));
    }
}
