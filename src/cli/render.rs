//! Output: readable records and tables, or canonical proto3 JSON (`-o json`).

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use prost_types::Timestamp;
use serde_json::{Map, Value, json};

use crate::pb;

/// RFC 3339 in UTC, with as many fraction digits as needed (0, 3, 6 or 9), as proto3 JSON
/// writes `google.protobuf.Timestamp`.
pub fn rfc3339(timestamp: &Timestamp) -> String {
    let seconds = u64::try_from(timestamp.seconds).unwrap_or(0);
    let nanos = u32::try_from(timestamp.nanos).unwrap_or(0);
    let time = UNIX_EPOCH + Duration::new(seconds, nanos);
    match nanos {
        0 => humantime::format_rfc3339_seconds(time).to_string(),
        n if n % 1_000_000 == 0 => humantime::format_rfc3339_millis(time).to_string(),
        n if n % 1_000 == 0 => humantime::format_rfc3339_micros(time).to_string(),
        _ => humantime::format_rfc3339_nanos(time).to_string(),
    }
}

fn role_name(role: i32) -> String {
    pb::UserRole::try_from(role).map_or_else(|_| role.to_string(), |r| r.as_str_name().into())
}

fn status_name(status: i32) -> String {
    pb::UserStatus::try_from(status).map_or_else(|_| status.to_string(), |s| s.as_str_name().into())
}

fn event_type_name(kind: i32) -> String {
    pb::EventType::try_from(kind).map_or_else(|_| kind.to_string(), |k| k.as_str_name().into())
}

/// Proto3 JSON leaves out fields that hold their default value.
fn put(object: &mut Map<String, Value>, key: &str, value: Value) {
    let default = match &value {
        Value::Null => true,
        Value::String(text) => text.is_empty(),
        Value::Bool(flag) => !flag,
        Value::Number(number) => number.as_f64() == Some(0.0),
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
    };
    if !default {
        object.insert(key.to_owned(), value);
    }
}

fn metadata_json(metadata: &BTreeMap<String, String>) -> Value {
    Value::Object(
        metadata
            .iter()
            .map(|(key, value)| (key.clone(), Value::String(value.clone())))
            .collect(),
    )
}

pub fn user_json(user: &pb::User) -> Value {
    let mut object = Map::new();
    put(&mut object, "id", json!(user.id));
    put(&mut object, "username", json!(user.username));
    put(&mut object, "email", json!(user.email));
    put(&mut object, "fullName", json!(user.full_name));
    if user.role != 0 {
        put(&mut object, "role", json!(role_name(user.role)));
    }
    if user.status != 0 {
        put(&mut object, "status", json!(status_name(user.status)));
    }
    if let Some(created) = &user.created_at {
        put(&mut object, "createdAt", json!(rfc3339(created)));
    }
    if let Some(updated) = &user.updated_at {
        put(&mut object, "updatedAt", json!(rfc3339(updated)));
    }
    put(&mut object, "metadata", metadata_json(&user.metadata));
    put(&mut object, "etag", json!(user.etag));
    Value::Object(object)
}

pub fn event_json(event: &pb::UserEvent) -> Value {
    let mut object = Map::new();
    put(&mut object, "eventId", json!(event.event_id));
    if event.r#type != 0 {
        put(&mut object, "type", json!(event_type_name(event.r#type)));
    }
    if let Some(user) = &event.user {
        object.insert("user".into(), user_json(user));
    }
    if let Some(timestamp) = &event.timestamp {
        put(&mut object, "timestamp", json!(rfc3339(timestamp)));
    }
    // int64 is a string in proto3 JSON.
    if event.revision != 0 {
        put(&mut object, "revision", json!(event.revision.to_string()));
    }
    if let Some(failure) = &event.failure {
        let mut inner = Map::new();
        put(&mut inner, "userId", json!(failure.user_id));
        put(&mut inner, "code", json!(failure.code));
        put(&mut inner, "message", json!(failure.message));
        object.insert("failure".into(), Value::Object(inner));
    }
    Value::Object(object)
}

pub fn list_json(response: &pb::ListUsersResponse) -> Value {
    let mut object = Map::new();
    put(
        &mut object,
        "users",
        Value::Array(response.users.iter().map(user_json).collect()),
    );
    put(
        &mut object,
        "nextPageToken",
        json!(response.next_page_token),
    );
    put(&mut object, "totalCount", json!(response.total_count));
    Value::Object(object)
}

/// RFC 3339 to the second, for people.
fn short_time(timestamp: Option<&Timestamp>) -> String {
    timestamp
        .map(|timestamp| {
            rfc3339(&Timestamp {
                seconds: timestamp.seconds,
                nanos: 0,
            })
        })
        .unwrap_or_default()
}

fn short_enum(name: String, prefix: &str) -> String {
    name.strip_prefix(prefix).map(str::to_owned).unwrap_or(name)
}

/// A user as `field  value` lines.
pub fn user_record(user: &pb::User) -> String {
    let metadata = user
        .metadata
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = [
        ("id", user.id.clone()),
        ("username", user.username.clone()),
        ("email", user.email.clone()),
        ("full_name", user.full_name.clone()),
        ("role", short_enum(role_name(user.role), "USER_ROLE_")),
        (
            "status",
            short_enum(status_name(user.status), "USER_STATUS_"),
        ),
        ("created_at", short_time(user.created_at.as_ref())),
        ("updated_at", short_time(user.updated_at.as_ref())),
        ("etag", user.etag.clone()),
        ("metadata", metadata),
    ];
    rows.iter()
        .map(|(field, value)| format!("{field:<11} {value}\n"))
        .collect()
}

/// The columns of a user table, with the widest value each can hold, so that rows line up
/// across pages without holding them all: an id is 36 characters, a username at most 30, and
/// the email, whose length varies most, comes last.
const COLUMNS: [(&str, usize); 6] = [
    ("ID", 36),
    ("USERNAME", crate::domain::limits::USERNAME_MAX_CHARS),
    ("ROLE", 9),
    ("STATUS", 9),
    ("CREATED", 20),
    ("EMAIL", 0),
];

fn table_line(cells: [&str; 6]) -> String {
    let mut text = String::new();
    for (cell, (_, width)) in cells.iter().zip(COLUMNS) {
        text.push_str(&format!("{cell:<width$}  "));
    }
    text.truncate(text.trim_end().len());
    text.push('\n');
    text
}

/// The header of a user table.
pub fn user_table_header() -> String {
    table_line(COLUMNS.map(|(name, _)| name))
}

/// Users as table rows, aligned with `user_table_header`.
pub fn user_table_rows(users: &[pb::User]) -> String {
    users
        .iter()
        .map(|user| {
            let role = short_enum(role_name(user.role), "USER_ROLE_");
            let status = short_enum(status_name(user.status), "USER_STATUS_");
            let created = short_time(user.created_at.as_ref());
            table_line([
                &user.id,
                &user.username,
                &role,
                &status,
                &created,
                &user.email,
            ])
        })
        .collect()
}

/// One event as a line: revision, type, user id and username.
pub fn event_line(event: &pb::UserEvent) -> String {
    let user = event.user.as_ref();
    format!(
        "{} {} {} {}",
        event.revision,
        short_enum(event_type_name(event.r#type), "EVENT_TYPE_"),
        user.map_or("", |user| user.id.as_str()),
        user.map_or("", |user| user.username.as_str()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_only_the_fraction_digits_needed() {
        let at = |seconds, nanos| rfc3339(&Timestamp { seconds, nanos });
        assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_731_000_000, 120_000_000), "2024-11-07T17:20:00.120Z");
        assert_eq!(
            at(1_731_000_000, 123_456_789),
            "2024-11-07T17:20:00.123456789Z"
        );
    }

    #[test]
    fn user_json_uses_camel_case_enum_names_and_leaves_defaults_out() {
        let user = pb::User {
            id: "id-1".into(),
            full_name: "Ann".into(),
            role: pb::UserRole::Admin as i32,
            ..Default::default()
        };
        assert_eq!(
            user_json(&user),
            json!({"id": "id-1", "fullName": "Ann", "role": "USER_ROLE_ADMIN"})
        );
    }

    #[test]
    fn revisions_are_strings_in_event_json() {
        let event = pb::UserEvent {
            revision: 42,
            r#type: pb::EventType::Created as i32,
            ..Default::default()
        };
        assert_eq!(
            event_json(&event),
            json!({"type": "EVENT_TYPE_CREATED", "revision": "42"})
        );
    }
}
