//! Who made a change: the principal the event log records beside each event.

use std::fmt;

use super::UserId;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Actor {
    /// Not recorded: events written before actors were.
    #[default]
    Unknown,
    /// A caller without a token (sign-up).
    Anonymous,
    /// A stored user, by id.
    User(UserId),
    /// A service, by the name its token gives.
    Service(String),
    /// A service key, by its id.
    Key(uuid::Uuid),
}

impl Actor {
    /// The stored form: `user:ID`, `service:NAME`, `key:ID`, `anonymous`, or empty when
    /// unknown.
    pub fn encode(&self) -> String {
        match self {
            Actor::Unknown => String::new(),
            other => other.to_string(),
        }
    }

    /// Reads the stored form back; anything unreadable is `Unknown`.
    pub fn decode(stored: &str) -> Self {
        match stored.split_once(':') {
            Some(("user", id)) => uuid::Uuid::try_parse(id)
                .map(|id| Actor::User(UserId::from_uuid(id)))
                .unwrap_or_default(),
            Some(("service", name)) => Actor::Service(name.to_owned()),
            Some(("key", id)) => uuid::Uuid::try_parse(id)
                .map(Actor::Key)
                .unwrap_or_default(),
            _ if stored == "anonymous" => Actor::Anonymous,
            _ => Actor::Unknown,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Unknown => f.write_str("-"),
            Actor::Anonymous => f.write_str("anonymous"),
            Actor::User(id) => write!(f, "user:{id}"),
            Actor::Service(name) => write!(f, "service:{name}"),
            Actor::Key(id) => write!(f, "key:{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_actor_reads_back_as_stored() {
        for actor in [
            Actor::Unknown,
            Actor::Anonymous,
            Actor::User(UserId::new()),
            Actor::Service("billing:eu".into()),
            Actor::Key(uuid::Uuid::now_v7()),
        ] {
            assert_eq!(Actor::decode(&actor.encode()), actor);
        }
        assert_eq!(Actor::decode("user:not-a-uuid"), Actor::Unknown);
    }
}
