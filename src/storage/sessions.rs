//! Sessions: what a login starts and a logout, a password change or a reused refresh token
//! ends. The database holds each session, its refresh tokens (as digests, never the tokens)
//! and, per user, the moment before which tokens without a session stopped working. Every
//! server keeps what it read of them in a `SessionCache`, which a commit that ends sessions
//! clears at once here and, through `NOTIFY user_sessions`, on every other replica.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;
use uuid::Uuid;

use crate::domain::UserId;

/// The notification channel that tells every replica which sessions ended.
pub(super) const CHANNEL: &str = "user_sessions";

/// A session's id: the `sid` claim of the access tokens it issues.
pub type SessionId = Uuid;

/// A refresh token as stored: its SHA-256 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshDigest(pub [u8; 32]);

/// Bytes of randomness in a refresh token.
const REFRESH_BYTES: usize = 32;

impl RefreshDigest {
    fn of_bytes(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        RefreshDigest(sha2::Sha256::digest(bytes).into())
    }

    /// A new refresh token (32 random bytes, base64url), and the digest the database keeps.
    pub fn issue() -> Result<(String, Self), getrandom::Error> {
        use base64::Engine as _;
        let mut bytes = [0u8; REFRESH_BYTES];
        getrandom::fill(&mut bytes)?;
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Ok((text, Self::of_bytes(&bytes)))
    }

    /// The digest of a refresh token as a caller sent it; `None` when it is not shaped like
    /// one `issue` made.
    pub fn of_token(text: &str) -> Option<Self> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        (bytes.len() == REFRESH_BYTES).then(|| Self::of_bytes(&bytes))
    }
}

/// A session to start, with its first refresh token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: SessionId,
    pub user: UserId,
    pub refresh: RefreshDigest,
    pub created_at_ns: i64,
    pub expires_at_ns: i64,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current: it is used up, and `next` replaced it.
    Rotated {
        session: SessionId,
        user: UserId,
        expires_at_ns: i64,
    },
    /// The token had been used before: someone holds a copy, so its session ended now.
    Reused { session: SessionId },
    /// No such token, or its session already ended or expired.
    Invalid,
    /// The token is current but its user may not act (suspended, inactive, or deleted:
    /// `None`); it is not used up, so it works again once the user may.
    Inactive {
        user: UserId,
        status: Option<crate::domain::UserStatus>,
    },
}

/// Expired sessions removed by each login, at most: more than expire between two logins.
pub(super) const PRUNED_PER_LOGIN: i64 = 16;

/// A refresh token as the database holds it, with its session.
#[derive(Debug, Clone, Copy)]
pub struct Presented {
    pub session: SessionId,
    pub used: bool,
    pub user: UserId,
    pub expires_at_ns: i64,
    /// The user's status as stored (`None`: no such user any more).
    pub user_status: Option<crate::domain::UserStatus>,
}

/// Whether a refresh token as stored would rotate now: unused, its session not expired, its
/// user active. What introspection answers, by the rule `rotate` applies.
pub fn refresh_works(presented: &Presented, now_ns: i64) -> bool {
    !presented.used
        && presented.expires_at_ns > now_ns
        && presented.user_status == Some(crate::domain::UserStatus::Active)
}

/// What a backend writes for a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RotationWrite {
    /// Nothing: no such token.
    Nothing,
    /// The session ends, with its tokens (and other replicas hear of it).
    EndSession(SessionId),
    /// The token is used up, and the next one joins its session.
    Rotate(SessionId),
}

/// What presenting a refresh token does, given the token as read (`None`: no such token) at
/// `now_ns`: a token of an expired session ends it and is refused; a token used before ends
/// its session (someone holds a copy); a current one of a user who may not act is refused
/// and kept; any other current one is swapped for the next.
pub(super) fn rotate(found: Option<Presented>, now_ns: i64) -> (Rotation, RotationWrite) {
    let Some(token) = found else {
        return (Rotation::Invalid, RotationWrite::Nothing);
    };
    let session = token.session;
    if token.expires_at_ns <= now_ns {
        (Rotation::Invalid, RotationWrite::EndSession(session))
    } else if token.used {
        (
            Rotation::Reused { session },
            RotationWrite::EndSession(session),
        )
    } else if token.user_status != Some(crate::domain::UserStatus::Active) {
        let refused = Rotation::Inactive {
            user: token.user,
            status: token.user_status,
        };
        (refused, RotationWrite::Nothing)
    } else {
        let rotated = Rotation::Rotated {
            session,
            user: token.user,
            expires_at_ns: token.expires_at_ns,
        };
        (rotated, RotationWrite::Rotate(session))
    }
}

/// What a session's row (its user and expiry; `None` when there is none) says at `now_ns`:
/// open until it expires, and never when it does not exist.
pub(super) fn session_known(found: Option<(UserId, i64)>, now_ns: i64) -> (Known, Option<UserId>) {
    match found {
        Some((user, expires_at_ns)) => (
            Known::Session {
                open: expires_at_ns > now_ns,
            },
            Some(user),
        ),
        None => (Known::Session { open: false }, None),
    }
}

/// What a token's holder must still have for the token to work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenBasis {
    /// A token issued by a session: the session must be open.
    Session(SessionId),
    /// A user's token without a session (minted elsewhere): it must be issued at or after
    /// the user's last password change or end of all sessions (`iat`, in seconds).
    IssuedAt { user: UserId, iat: u64 },
    /// A service key: it must not be revoked or expired.
    Key(crate::domain::KeyId),
}

impl TokenBasis {
    /// Whether a token with this basis still works, given what the database says: the
    /// session's state, or the user's cut-off (nanoseconds since the epoch).
    pub fn holds(&self, known: Known) -> bool {
        match (self, known) {
            (TokenBasis::Session(_) | TokenBasis::Key(_), Known::Session { open }) => open,
            (TokenBasis::IssuedAt { iat, .. }, Known::Cutoff(cutoff)) => cutoff.is_none_or(|ns| {
                i64::try_from(*iat)
                    .ok()
                    .and_then(|secs| secs.checked_mul(1_000_000_000))
                    .is_some_and(|issued_ns| issued_ns >= ns)
            }),
            _ => false,
        }
    }
}

/// What the database said about a `TokenBasis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// The session's state: open means neither ended nor expired. A session that does not
    /// exist is not open.
    Session { open: bool },
    /// The user's cut-off for tokens without a session, when there is one.
    Cutoff(Option<i64>),
}

/// Sessions' states and users' cut-offs as this server last read them. An entry stays until
/// a commit here or a notification from another replica says it changed, so steady traffic
/// costs a map lookup. Each change bumps a generation; a read that a change overtook is not
/// kept, so a stale answer never outlives the notification that should have removed it.
pub struct SessionCache {
    inner: Mutex<Entries>,
}

struct Entries {
    sessions: LruCache<SessionId, (UserId, bool)>,
    cutoffs: LruCache<UserId, Option<i64>>,
    generation: u64,
}

/// Entries of each kind kept; the least recently used go first.
const CAPACITY: usize = 100_000;

/// What changed, as a notification's payload says it: `s:<session>` or `u:<user>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Session(SessionId),
    /// Every session of the user, and their tokens without a session.
    User(UserId),
    /// A service key was revoked.
    Key(crate::domain::KeyId),
}

impl Ended {
    pub fn payload(self) -> String {
        match self {
            Ended::Session(id) => format!("s:{id}"),
            Ended::User(id) => format!("u:{id}"),
            Ended::Key(id) => format!("k:{id}"),
        }
    }

    pub fn parse(payload: &str) -> Option<Self> {
        let (kind, id) = payload.split_once(':')?;
        let id = Uuid::parse_str(id).ok()?;
        match kind {
            "s" => Some(Ended::Session(id)),
            "u" => Some(Ended::User(UserId::from_uuid(id))),
            "k" => Some(Ended::Key(id)),
            _ => None,
        }
    }
}

impl Default for SessionCache {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(CAPACITY).expect("non-zero");
        Self {
            inner: Mutex::new(Entries {
                sessions: LruCache::new(capacity),
                cutoffs: LruCache::new(capacity),
                generation: 0,
            }),
        }
    }
}

impl SessionCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the cache knows of `basis`, if anything.
    pub fn get(&self, basis: &TokenBasis) -> Option<Known> {
        let mut entries = self.entries();
        match basis {
            // Keys' states are kept beside sessions': both ids are random v7 UUIDs.
            TokenBasis::Session(id) | TokenBasis::Key(id) => entries
                .sessions
                .get(id)
                .map(|&(_, open)| Known::Session { open }),
            TokenBasis::IssuedAt { user, .. } => {
                entries.cutoffs.get(user).copied().map(Known::Cutoff)
            }
        }
    }

    /// The generation to pass to `fill` for a read that starts now.
    pub fn generation(&self) -> u64 {
        self.entries().generation
    }

    /// Keeps what a read that started at `generation` found, unless a change came since.
    pub fn fill(&self, basis: &TokenBasis, user: Option<UserId>, known: Known, generation: u64) {
        let mut entries = self.entries();
        if entries.generation != generation {
            return;
        }
        match (basis, known) {
            (TokenBasis::Session(id) | TokenBasis::Key(id), Known::Session { open }) => {
                // A session that does not exist has no user; it cannot be opened later, so
                // it is remembered as closed under a nil user.
                let user = user.unwrap_or_else(|| UserId::from_uuid(Uuid::nil()));
                entries.sessions.put(*id, (user, open));
            }
            (TokenBasis::IssuedAt { user, .. }, Known::Cutoff(cutoff)) => {
                entries.cutoffs.put(*user, cutoff);
            }
            _ => {}
        }
    }

    /// Forgets what `ended` changed, so the next check reads the database again.
    pub fn forget(&self, ended: Ended) {
        let mut entries = self.entries();
        entries.generation += 1;
        match ended {
            Ended::Session(id) | Ended::Key(id) => {
                entries.sessions.pop(&id);
            }
            Ended::User(user) => {
                entries.cutoffs.pop(&user);
                let theirs: Vec<SessionId> = entries
                    .sessions
                    .iter()
                    .filter(|(_, (owner, _))| *owner == user)
                    .map(|(id, _)| *id)
                    .collect();
                for id in theirs {
                    entries.sessions.pop(&id);
                }
            }
        }
    }

    /// Forgets everything: notifications may have been missed (a lost connection).
    pub fn clear(&self) {
        let mut entries = self.entries();
        entries.generation += 1;
        entries.sessions.clear();
        entries.cutoffs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_without_a_session_works_only_from_its_users_cutoff_on() {
        let user = UserId::new();
        let at = |iat| TokenBasis::IssuedAt { user, iat };
        let cutoff = Known::Cutoff(Some(1_700_000_000_500_000_000));
        assert!(at(1_700_000_001).holds(cutoff));
        assert!(
            !at(1_700_000_000).holds(cutoff),
            "issued in the second before"
        );
        assert!(at(1).holds(Known::Cutoff(None)));
    }

    #[test]
    fn a_read_overtaken_by_a_change_is_not_kept() {
        let cache = SessionCache::default();
        let session = Uuid::now_v7();
        let basis = TokenBasis::Session(session);
        let user = UserId::new();
        let generation = cache.generation();
        cache.forget(Ended::Session(session));
        cache.fill(
            &basis,
            Some(user),
            Known::Session { open: true },
            generation,
        );
        assert_eq!(cache.get(&basis), None);

        cache.fill(
            &basis,
            Some(user),
            Known::Session { open: true },
            cache.generation(),
        );
        assert_eq!(cache.get(&basis), Some(Known::Session { open: true }));
        cache.forget(Ended::User(user));
        assert_eq!(
            cache.get(&basis),
            None,
            "ending a user's sessions forgets each"
        );
    }

    #[test]
    fn payloads_round_trip() {
        let ended = [
            Ended::Session(Uuid::now_v7()),
            Ended::User(UserId::new()),
            Ended::Key(Uuid::now_v7()),
        ];
        for ended in ended {
            assert_eq!(Ended::parse(&ended.payload()), Some(ended));
        }
        assert_eq!(Ended::parse("x:1"), None);
    }
}
