//! ListUsers with a `filter` or an `order_by`: parsing both, the page tokens bound to them,
//! and the page.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tonic::Response;
use uuid::Uuid;

use super::page_token::TokenSeal;
use super::{LIST_HEADROOM, UserServiceImpl, fit_page, invalid, page_token};
use crate::domain::{FieldViolation, UserId};
use crate::error::ServiceError;
use crate::filter::Filter;
use crate::pb;
use crate::storage::filtered::{FilteredQuery, Order, OrderField, OrderKey};

/// The filter, or `None` for none; a refusal names the position and the rule.
pub fn parse_filter(text: &str) -> Result<Option<Filter>, FieldViolation> {
    Filter::parse(text).map_err(|err| FieldViolation::new("filter", err.to_string()))
}

/// AIP-132 `order_by`: `FIELD` or `FIELD asc|desc`, FIELD one of created_at, updated_at,
/// username; `None` when empty.
pub fn parse_order_by(text: &str) -> Result<Option<Order>, FieldViolation> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let refused = || {
        FieldViolation::new(
            "order_by",
            format!(
                "must be created_at, updated_at or username, optionally followed by asc or desc (one field), got {}",
                crate::text::quoted(text)
            ),
        )
    };
    let (field, descending) = match words.as_slice() {
        [] => return Ok(None),
        [field] => (*field, false),
        [field, direction] if direction.eq_ignore_ascii_case("asc") => (*field, false),
        [field, direction] if direction.eq_ignore_ascii_case("desc") => (*field, true),
        _ => return Err(refused()),
    };
    let field = match field {
        "created_at" => OrderField::CreatedAt,
        "updated_at" => OrderField::UpdatedAt,
        "username" => OrderField::Username,
        _ => return Err(refused()),
    };
    Ok(Some(Order { field, descending }))
}

const VERSION: &str = "f1";

/// What a token is bound to: the filter as written canonically, the order and the legacy
/// filters, as a short digest.
fn binding(query: &FilteredQuery) -> String {
    let filter = query
        .filter
        .as_ref()
        .map(|filter| filter.canonical())
        .unwrap_or_default();
    let text = format!(
        "{filter}\n{:?}\n{:?}\n{:?}",
        query.order, query.status, query.role
    );
    URL_SAFE_NO_PAD.encode(&Sha256::digest(text.as_bytes())[..12])
}

fn encode(seal: &TokenSeal, key: &OrderKey, query: &FilteredQuery) -> String {
    let key = match key {
        OrderKey::Time { ns, id } => format!("t{ns}.{}", id.as_uuid().simple()),
        OrderKey::Name(name) => format!("n{}", URL_SAFE_NO_PAD.encode(name)),
    };
    seal.seal(&format!("{VERSION}:{}:{key}", binding(query)))
}

fn decode(
    seal: &TokenSeal,
    token: &str,
    query: &FilteredQuery,
) -> Result<OrderKey, FieldViolation> {
    let malformed = || {
        FieldViolation::new(
            "page_token",
            "must be a next_page_token returned by ListUsers with the same filter and order_by, unchanged",
        )
    };
    let text = seal.open(token).ok_or_else(malformed)?;
    let parts: Vec<&str> = text.splitn(3, ':').collect();
    let [VERSION, bound, key] = parts.as_slice() else {
        return Err(malformed());
    };
    if *bound != binding(query) {
        return Err(FieldViolation::new(
            "page_token",
            "was issued for a different filter, order_by, status_filter or role_filter: repeat those of the first page",
        ));
    }
    let key = if let Some(time) = key.strip_prefix('t') {
        let (ns, id) = time.split_once('.').ok_or_else(malformed)?;
        OrderKey::Time {
            ns: ns.parse().map_err(|_| malformed())?,
            id: UserId::from_uuid(Uuid::try_parse(id).map_err(|_| malformed())?),
        }
    } else if let Some(name) = key.strip_prefix('n') {
        let name = page_token::text_of(name).ok_or_else(malformed)?;
        OrderKey::Name(name)
    } else {
        return Err(malformed());
    };
    let fits_order = matches!(
        (&key, query.order.field),
        (OrderKey::Name(_), OrderField::Username)
            | (
                OrderKey::Time { .. },
                OrderField::CreatedAt | OrderField::UpdatedAt
            )
    );
    if fits_order {
        Ok(key)
    } else {
        Err(malformed())
    }
}

impl UserServiceImpl {
    /// ListUsers with a filter or an order_by.
    pub(super) async fn list_filtered(
        &self,
        request: &pb::ListUsersRequest,
        filters: page_token::Filters,
        limit: usize,
        (filter, order): (Option<Filter>, Option<Order>),
    ) -> Result<Response<pb::ListUsersResponse>, ServiceError> {
        let mut query = FilteredQuery {
            order: order.unwrap_or(Order::NEWEST),
            filter: filter.map(Arc::new),
            status: filters.status,
            role: filters.role,
            after: None,
            limit,
        };
        if !request.page_token.is_empty() {
            query.after =
                Some(decode(&self.page_tokens, &request.page_token, &query).map_err(invalid)?);
        }
        let order = query.order;
        let page = self.store.list_filtered(query.clone()).await?;
        let budget = self.max_message_bytes.saturating_sub(LIST_HEADROOM);
        let positioned = page
            .users
            .into_iter()
            .map(|user| (order.key_of(&user), user));
        let (users, cut) = fit_page(budget, positioned);
        Ok(Response::new(pb::ListUsersResponse {
            users,
            next_page_token: cut
                .or(page.next)
                .map(|key| encode(&self.page_tokens, &key, &query))
                .unwrap_or_default(),
            total_count: i32::try_from(page.total).unwrap_or(i32::MAX),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(filter: &str, order: &str) -> FilteredQuery {
        FilteredQuery {
            order: parse_order_by(order).unwrap().unwrap_or(Order::NEWEST),
            filter: parse_filter(filter).unwrap().map(Arc::new),
            status: None,
            role: None,
            after: None,
            limit: 10,
        }
    }

    #[test]
    fn order_by_takes_one_field_and_a_direction() {
        assert_eq!(parse_order_by(""), Ok(None));
        assert_eq!(
            parse_order_by("  username   DESC "),
            Ok(Some(Order {
                field: OrderField::Username,
                descending: true
            }))
        );
        assert_eq!(
            parse_order_by("updated_at"),
            Ok(Some(Order {
                field: OrderField::UpdatedAt,
                descending: false
            }))
        );
        for refused in [
            "email",
            "username sideways",
            "username, created_at",
            "created_at desc x",
        ] {
            let err = parse_order_by(refused).unwrap_err();
            assert_eq!(err.field, "order_by", "{refused}");
        }
    }

    fn seal() -> TokenSeal {
        TokenSeal::new(&[7; 32])
    }

    #[test]
    fn a_token_is_bound_to_its_filter_and_order_but_not_to_spelling() {
        let key = OrderKey::Name("ann".into());
        let token = encode(&seal(), &key, &query("username = \"A*\"", "username"));
        assert_eq!(
            decode(&seal(), &token, &query("username=\"a*\"", "username asc")),
            Ok(key)
        );
        for (filter, order) in [
            ("username = \"b*\"", "username"),
            ("username = \"a*\"", "username desc"),
        ] {
            let err = decode(&seal(), &token, &query(filter, order)).unwrap_err();
            assert!(
                err.description.contains("different"),
                "{filter} {order}: {err}"
            );
        }
        let time = OrderKey::Time {
            ns: -5,
            id: UserId::new(),
        };
        let token = encode(&seal(), &time, &query("", "created_at"));
        assert_eq!(decode(&seal(), &token, &query("", "created_at")), Ok(time));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_is_refused_as_a_token(token in "\\PC{0,120}") {
            proptest::prop_assert!(decode(&seal(), &token, &query("", "username")).is_err());
        }
    }
}
