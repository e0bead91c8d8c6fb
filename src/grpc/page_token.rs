//! Opaque ListUsers page tokens: where the last page ended, and the filters it was made for.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::domain::{FieldViolation, Role, UserId, UserStatus};
use crate::storage::Cursor;

const VERSION: &str = "v1";

/// The filters a token is bound to; a token used with other filters is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filters {
    pub status: Option<UserStatus>,
    pub role: Option<Role>,
}

fn number<T: Copy + Into<i32>>(value: Option<T>) -> i32 {
    value.map_or(0, Into::into)
}

impl From<UserStatus> for i32 {
    fn from(status: UserStatus) -> Self {
        status as i32
    }
}

impl From<Role> for i32 {
    fn from(role: Role) -> Self {
        role as i32
    }
}

/// The text inside a base64url token (every token of this service is one), or `None` when
/// it is not base64url of UTF-8.
pub fn text_of(token: &str) -> Option<String> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

pub fn encode(cursor: Cursor, filters: Filters) -> String {
    let text = format!(
        "{VERSION}:{}:{}:{}:{}",
        cursor.created_at_ns,
        cursor.id.as_uuid().simple(),
        number(filters.status),
        number(filters.role),
    );
    URL_SAFE_NO_PAD.encode(text)
}

pub fn decode(token: &str, filters: Filters) -> Result<Cursor, FieldViolation> {
    let malformed = || {
        FieldViolation::new(
            "page_token",
            "must be a next_page_token returned by ListUsers, unchanged",
        )
    };
    let text = text_of(token).ok_or_else(malformed)?;
    let parts: Vec<&str> = text.split(':').collect();
    let [version, created_at, id, status, role] = parts.as_slice() else {
        return Err(malformed());
    };
    if *version != VERSION {
        return Err(malformed());
    }
    let cursor = Cursor {
        created_at_ns: created_at.parse().map_err(|_| malformed())?,
        id: Uuid::try_parse(id)
            .map(UserId::from_uuid)
            .map_err(|_| malformed())?,
    };
    let same_filters = status.parse::<i32>().ok() == Some(number(filters.status))
        && role.parse::<i32>().ok() == Some(number(filters.role));
    if !same_filters {
        return Err(FieldViolation::new(
            "page_token",
            "was issued for different status_filter or role_filter values: repeat the filters of the first page",
        ));
    }
    Ok(cursor)
}

/// Search pages (ListUsers with a query) have their own tokens: the last key shown, bound to
/// the filters and to the query.
const SEARCH_VERSION: &str = "s1";

pub fn encode_search(after_key: &str, filters: Filters, prefix: &str) -> String {
    let text = format!(
        "{SEARCH_VERSION}:{}:{}:{}:{}",
        number(filters.status),
        number(filters.role),
        URL_SAFE_NO_PAD.encode(prefix),
        URL_SAFE_NO_PAD.encode(after_key),
    );
    URL_SAFE_NO_PAD.encode(text)
}

/// The last key the previous search page showed.
pub fn decode_search(
    token: &str,
    filters: Filters,
    prefix: &str,
) -> Result<String, FieldViolation> {
    let malformed = || {
        FieldViolation::new(
            "page_token",
            "must be a next_page_token returned by ListUsers with the same query, unchanged",
        )
    };
    let text = text_of(token).ok_or_else(malformed)?;
    let parts: Vec<&str> = text.split(':').collect();
    let [version, status, role, query, key] = parts.as_slice() else {
        return Err(malformed());
    };
    if *version != SEARCH_VERSION {
        return Err(malformed());
    }
    let (Some(query), Some(key)) = (text_of(query), text_of(key)) else {
        return Err(malformed());
    };
    let same = status.parse::<i32>().ok() == Some(number(filters.status))
        && role.parse::<i32>().ok() == Some(number(filters.role))
        && query == prefix;
    if !same {
        return Err(FieldViolation::new(
            "page_token",
            "was issued for a different query, status_filter or role_filter: repeat those of the first page",
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Filters = Filters {
        status: None,
        role: None,
    };

    fn cursor() -> Cursor {
        Cursor {
            created_at_ns: 1_700_000_000_000_000_001,
            id: UserId::new(),
        }
    }

    #[test]
    fn a_token_decodes_to_the_cursor_it_was_made_from() {
        let cursor = cursor();
        assert_eq!(decode(&encode(cursor, NONE), NONE), Ok(cursor));
    }

    #[test]
    fn a_token_used_with_other_filters_is_refused() {
        let token = encode(cursor(), NONE);
        let other = Filters {
            status: Some(UserStatus::Active),
            role: None,
        };
        let err = decode(&token, other).unwrap_err();
        assert!(err.description.contains("different"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn any_cursor_round_trips_through_its_token(created_at_ns: i64, id: u128) {
            let cursor = Cursor {
                created_at_ns,
                id: UserId::from_uuid(Uuid::from_u128(id)),
            };
            proptest::prop_assert_eq!(decode(&encode(cursor, NONE), NONE), Ok(cursor));
        }

        #[test]
        fn arbitrary_text_is_refused_as_a_token(token in "\\PC{0,200}") {
            proptest::prop_assert!(decode(&token, NONE).is_err());
        }
    }

    #[test]
    fn a_search_token_is_bound_to_its_query_and_filters() {
        let token = encode_search("ann@example.com", NONE, "an");
        assert_eq!(
            decode_search(&token, NONE, "an"),
            Ok("ann@example.com".to_owned())
        );
        assert!(decode_search(&token, NONE, "a").is_err());
        assert!(decode(&token, NONE).is_err(), "not a listing's token");
        let listing = encode(cursor(), NONE);
        assert!(decode_search(&listing, NONE, "an").is_err());
    }

    #[test]
    fn garbage_tokens_are_refused() {
        for token in ["", "x", "djE6", &URL_SAFE_NO_PAD.encode("v2:1:2:0:0")] {
            assert!(decode(token, NONE).is_err(), "{token:?} was accepted");
        }
    }
}
