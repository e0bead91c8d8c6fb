//! Signing keys as stored (`signing_keys`), and every decision about them, for both backends.
//!
//! A key's row holds its id (`kid`), algorithm, public JWK, its private key sealed under the
//! key-encryption key, when it was published and when it starts signing (`activates_at`).
//! Its state follows from those instants and the rows beside it, the same on every replica
//! that reads the same rows:
//!
//! - **next**: published, not signing yet (`activates_at` is ahead);
//! - **active**: the latest key whose `activates_at` has passed: it signs;
//! - **retired**: a later key has activated; still published, for the tokens it signed;
//! - **removed**: retired for longer than a token lives; its row is deleted.
//!
//! So every replica switches to a new key at the instant written in its row, not when it
//! happens to look, and a verifier that refreshed its JWKS at most `publish_ahead` ago
//! already holds the key before it signs anything.

use std::time::Duration;

/// A key as stored. Instants are nanoseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    /// `ES256` or `EdDSA`.
    pub algorithm: String,
    /// The public key as a JWK (JSON), without `kid`, `use` or `alg`.
    pub public_jwk: String,
    /// The private key (PKCS #8 DER), sealed with `kid` as associated data.
    pub sealed: Vec<u8>,
    pub created_at_ns: i64,
    pub activates_at_ns: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Next,
    Active,
    /// Since the instant the key after it activated.
    Retired {
        since_ns: i64,
    },
}

impl KeyState {
    pub fn name(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retired { .. } => "retired",
        }
    }
}

/// How keys rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// How long a new key is published before it signs (`--signing-key-publish-ahead`).
    pub publish_ahead: Duration,
    /// How long a key signs before the next one takes over (`--signing-key-rotation`).
    pub rotation: Duration,
    /// How long a retired key stays published: the longest a token it signed is accepted.
    pub retain: Duration,
}

impl RotationPolicy {
    pub const DEFAULT_PUBLISH_AHEAD: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_ROTATION: Duration = Duration::from_secs(30 * 24 * 3600);
}

fn ns(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

/// Each key's state at `now_ns`, in the order given (any order); removed keys are left out.
/// `keys` sorted by `activates_at` decides which of the passed ones is the latest.
pub fn states(keys: &[StoredKey], now_ns: i64) -> Vec<(&StoredKey, KeyState)> {
    let mut passed: Vec<&StoredKey> = keys
        .iter()
        .filter(|key| key.activates_at_ns <= now_ns)
        .collect();
    passed.sort_by(|a, b| (a.activates_at_ns, &a.kid).cmp(&(b.activates_at_ns, &b.kid)));
    keys.iter()
        .map(|key| {
            if key.activates_at_ns > now_ns {
                return (key, KeyState::Next);
            }
            let at = passed
                .iter()
                .position(|other| other.kid == key.kid)
                .expect("a passed key is among the passed");
            match passed.get(at + 1) {
                None => (key, KeyState::Active),
                Some(successor) => (
                    key,
                    KeyState::Retired {
                        since_ns: successor.activates_at_ns,
                    },
                ),
            }
        })
        .collect()
}

/// What one pass over the keys changes: a key to add (starting to sign at the instant
/// given), and keys to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPlan {
    pub add_activating_at_ns: Option<i64>,
    pub remove: Vec<String>,
}

impl KeyPlan {
    pub fn is_empty(&self) -> bool {
        self.add_activating_at_ns.is_none() && self.remove.is_empty()
    }
}

/// The one decision of rotation, made in the database's transaction on its clock: with no
/// key, one that signs at once (nothing can have cached an older set); with no next key, one
/// when the active key's time is nearly up (`publish_ahead` before it ends), or at once when
/// `asked` (`RotateSigningKey`), signing `publish_ahead` from now at the earliest; and every
/// retired key whose tokens have all expired, removed.
pub fn plan(keys: &[StoredKey], now_ns: i64, policy: RotationPolicy, asked: bool) -> KeyPlan {
    let states = states(keys, now_ns);
    let remove = states
        .iter()
        .filter_map(|(key, state)| match state {
            KeyState::Retired { since_ns }
                if since_ns.saturating_add(ns(policy.retain)) <= now_ns =>
            {
                Some(key.kid.clone())
            }
            _ => None,
        })
        .collect();
    let has_next = states.iter().any(|(_, state)| *state == KeyState::Next);
    let active = states
        .iter()
        .find(|(_, state)| *state == KeyState::Active)
        .map(|(key, _)| *key);
    let earliest = now_ns.saturating_add(ns(policy.publish_ahead));
    let add_activating_at_ns = match active {
        None if !has_next => Some(now_ns),
        _ if has_next => None,
        None => None,
        Some(active) => {
            let scheduled = active.activates_at_ns.saturating_add(ns(policy.rotation));
            if asked {
                Some(earliest)
            } else if scheduled <= earliest {
                Some(scheduled.max(earliest))
            } else {
                None
            }
        }
    };
    KeyPlan {
        add_activating_at_ns,
        remove,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000_000;

    fn key(kid: &str, activates_at_ns: i64) -> StoredKey {
        StoredKey {
            kid: kid.into(),
            algorithm: "ES256".into(),
            public_jwk: "{}".into(),
            sealed: Vec::new(),
            created_at_ns: activates_at_ns - 24 * HOUR,
            activates_at_ns,
        }
    }

    fn policy() -> RotationPolicy {
        RotationPolicy {
            publish_ahead: Duration::from_secs(24 * 3600),
            rotation: Duration::from_secs(30 * 24 * 3600),
            retain: Duration::from_secs(3600),
        }
    }

    fn named(keys: &[StoredKey], now: i64) -> Vec<(String, &'static str)> {
        states(keys, now)
            .into_iter()
            .map(|(key, state)| (key.kid.clone(), state.name()))
            .collect()
    }

    #[test]
    fn the_latest_passed_key_signs_later_ones_wait_earlier_ones_are_retired() {
        let keys = [key("a", 0), key("b", 10 * HOUR), key("c", 20 * HOUR)];
        assert_eq!(
            named(&keys, 15 * HOUR),
            [
                ("a".into(), "retired"),
                ("b".into(), "active"),
                ("c".into(), "next")
            ]
        );
        assert_eq!(
            states(&keys, 15 * HOUR)[0].1,
            KeyState::Retired {
                since_ns: 10 * HOUR
            },
            "retired when the next one activated"
        );
        assert_eq!(
            named(&keys, 20 * HOUR)[2],
            ("c".into(), "active"),
            "at the instant"
        );
    }

    #[test]
    fn rotation_decisions() {
        let day = 24 * HOUR;
        let cases: [(&str, Vec<StoredKey>, i64, bool, KeyPlan); 7] = [
            (
                "no key: one that signs at once",
                vec![],
                5,
                false,
                KeyPlan {
                    add_activating_at_ns: Some(5),
                    remove: vec![],
                },
            ),
            (
                "an active key with time left: nothing",
                vec![key("a", 0)],
                day,
                false,
                KeyPlan::default(),
            ),
            (
                "a day before the active key's 30 days end: the next, signing at the end",
                vec![key("a", 0)],
                29 * day,
                false,
                KeyPlan {
                    add_activating_at_ns: Some(30 * day),
                    remove: vec![],
                },
            ),
            (
                "overdue (the service was down): the next, a full publish-ahead from now",
                vec![key("a", 0)],
                40 * day,
                false,
                KeyPlan {
                    add_activating_at_ns: Some(41 * day),
                    remove: vec![],
                },
            ),
            (
                "asked: the next, a publish-ahead from now",
                vec![key("a", 0)],
                day,
                true,
                KeyPlan {
                    add_activating_at_ns: Some(2 * day),
                    remove: vec![],
                },
            ),
            (
                "asked with a next key waiting: nothing more",
                vec![key("a", 0), key("b", 2 * day)],
                day,
                true,
                KeyPlan::default(),
            ),
            (
                "a key retired for longer than a token lives: removed",
                vec![key("a", 0), key("b", day)],
                day + HOUR,
                false,
                KeyPlan {
                    add_activating_at_ns: None,
                    remove: vec!["a".into()],
                },
            ),
        ];
        for (what, keys, now, asked, expected) in cases {
            assert_eq!(plan(&keys, now, policy(), asked), expected, "{what}");
        }
        let retired_recently = [key("a", 0), key("b", day)];
        assert!(
            plan(&retired_recently, day + HOUR - 1, policy(), false).is_empty(),
            "kept while a token it signed may live"
        );
    }
}
