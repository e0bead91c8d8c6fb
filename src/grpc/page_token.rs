//! Opaque ListUsers page tokens: where the last page ended, and the filters it was made for,
//! signed (`TokenSeal`) as every page and resume token of this service is.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
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

/// Signs the text of page and resume tokens with HMAC-SHA256 under a key every replica shares
/// (`storage::server_secrets::PAGE_TOKENS`, kept in the database), so the only tokens a
/// server takes back are ones a server of this deployment wrote: `base64url(text).tag`, the
/// tag the first 128 bits of the MAC.
#[derive(Clone)]
pub struct TokenSeal {
    key: Arc<[u8]>,
}

/// Bytes of the MAC a token carries.
const TAG_BYTES: usize = 16;

impl TokenSeal {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.into() }
    }

    fn mac(&self, body: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(body.as_bytes());
        mac
    }

    /// The token for `text`.
    pub fn seal(&self, text: &str) -> String {
        let body = URL_SAFE_NO_PAD.encode(text);
        let tag = self.mac(&body).finalize().into_bytes();
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES]))
    }

    /// The text of a token this deployment sealed, or `None` for any other text.
    pub fn open(&self, token: &str) -> Option<String> {
        let (body, tag) = token.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if tag.len() != TAG_BYTES {
            return None;
        }
        self.mac(body).verify_truncated_left(&tag).ok()?;
        text_of(body)
    }
}

/// The text inside base64url (what every token of this service is built from), or `None`
/// when it is not base64url of UTF-8.
pub fn text_of(token: &str) -> Option<String> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

pub fn encode(seal: &TokenSeal, cursor: Cursor, filters: Filters) -> String {
    let text = format!(
        "{VERSION}:{}:{}:{}:{}",
        cursor.created_at_ns,
        cursor.id.as_uuid().simple(),
        number(filters.status),
        number(filters.role),
    );
    seal.seal(&text)
}

pub fn decode(seal: &TokenSeal, token: &str, filters: Filters) -> Result<Cursor, FieldViolation> {
    let malformed = || {
        FieldViolation::new(
            "page_token",
            "must be a next_page_token returned by ListUsers, unchanged",
        )
    };
    let text = seal.open(token).ok_or_else(malformed)?;
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

pub fn encode_search(seal: &TokenSeal, after_key: &str, filters: Filters, prefix: &str) -> String {
    let text = format!(
        "{SEARCH_VERSION}:{}:{}:{}:{}",
        number(filters.status),
        number(filters.role),
        URL_SAFE_NO_PAD.encode(prefix),
        URL_SAFE_NO_PAD.encode(after_key),
    );
    seal.seal(&text)
}

/// The last key the previous search page showed.
pub fn decode_search(
    seal: &TokenSeal,
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
    let text = seal.open(token).ok_or_else(malformed)?;
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

    fn seal() -> TokenSeal {
        TokenSeal::new(&[7; 32])
    }

    fn cursor() -> Cursor {
        Cursor {
            created_at_ns: 1_700_000_000_000_000_001,
            id: UserId::new(),
        }
    }

    #[test]
    fn a_token_decodes_to_the_cursor_it_was_made_from() {
        let cursor = cursor();
        assert_eq!(
            decode(&seal(), &encode(&seal(), cursor, NONE), NONE),
            Ok(cursor)
        );
    }

    #[test]
    fn a_token_used_with_other_filters_is_refused() {
        let token = encode(&seal(), cursor(), NONE);
        let other = Filters {
            status: Some(UserStatus::Active),
            role: None,
        };
        let err = decode(&seal(), &token, other).unwrap_err();
        assert!(err.description.contains("different"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn any_cursor_round_trips_through_its_token(created_at_ns: i64, id: u128) {
            let cursor = Cursor {
                created_at_ns,
                id: UserId::from_uuid(Uuid::from_u128(id)),
            };
            proptest::prop_assert_eq!(decode(&seal(), &encode(&seal(), cursor, NONE), NONE), Ok(cursor));
        }

        #[test]
        fn arbitrary_text_is_refused_as_a_token(token in "\\PC{0,200}") {
            proptest::prop_assert!(decode(&seal(), &token, NONE).is_err());
        }
    }

    #[test]
    fn a_search_token_is_bound_to_its_query_and_filters() {
        let seal = seal();
        let token = encode_search(&seal, "ann@example.com", NONE, "an");
        assert_eq!(
            decode_search(&seal, &token, NONE, "an"),
            Ok("ann@example.com".to_owned())
        );
        assert!(decode_search(&seal, &token, NONE, "a").is_err());
        assert!(
            decode(&seal, &token, NONE).is_err(),
            "not a listing's token"
        );
        let listing = encode(&seal, cursor(), NONE);
        assert!(decode_search(&seal, &listing, NONE, "an").is_err());
    }

    #[test]
    fn garbage_tokens_are_refused() {
        for token in ["", "x", "djE6", &URL_SAFE_NO_PAD.encode("v2:1:2:0:0")] {
            assert!(
                decode(&seal(), token, NONE).is_err(),
                "{token:?} was accepted"
            );
        }
    }

    #[test]
    fn a_token_is_taken_back_only_as_this_deployment_sealed_it() {
        let seal = seal();
        let cursor = cursor();
        let token = encode(&seal, cursor, NONE);
        let (body, _) = token.split_once('.').unwrap();
        let unsigned = body.to_owned();
        let other_key = encode(&TokenSeal::new(&[8; 32]), cursor, NONE);
        let text = text_of(body).unwrap();
        let moved = text.replacen(&cursor.created_at_ns.to_string(), "1", 1);
        let forged = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(moved),
            token.split_once('.').unwrap().1
        );
        for (what, token) in [
            ("without its tag", unsigned),
            ("sealed under another key", other_key),
            ("with its cursor changed", forged),
        ] {
            let refused = decode(&seal, &token, NONE).unwrap_err();
            assert!(
                refused.description.contains("unchanged"),
                "{what}: {refused}"
            );
        }
    }
}
