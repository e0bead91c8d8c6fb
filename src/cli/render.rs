//! Output: readable records and tables, or canonical proto3 JSON (`-o json`).

use std::time::{Duration, UNIX_EPOCH};

use prost_types::Timestamp;
use serde_json::Value;

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

/// A message as canonical proto3 JSON (see `json::to_value`).
pub fn to_json(message: &impl prost::Message, name: &str) -> Value {
    crate::json::to_value(&crate::json::message(name), &message.encode_to_vec())
        .expect("a message decodes as its own type")
}

pub fn user_json(user: &pb::User) -> Value {
    to_json(user, "userservice.User")
}

pub fn event_json(event: &pb::UserEvent) -> Value {
    to_json(event, "userservice.UserEvent")
}

pub fn list_json(response: &pb::ListUsersResponse) -> Value {
    to_json(response, "userservice.ListUsersResponse")
}

/// Service keys as a table for people: one line each, never a secret (none is listed).
pub fn keys_table(keys: &[pb::ServiceKey]) -> String {
    let mut table = format!(
        "{:<36}  {:<24}  {:<20}  {:<20}  {:<20}  {}\n",
        "ID", "NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED"
    );
    for key in keys {
        let or_never = |time: Option<&Timestamp>| match time {
            Some(_) => short_time(time),
            None => "never".to_owned(),
        };
        table.push_str(&format!(
            "{:<36}  {:<24}  {:<20}  {:<20}  {:<20}  {}\n",
            key.id,
            key.name,
            role_name(key.role),
            short_time(key.created_at.as_ref()),
            or_never(key.expires_at.as_ref()),
            or_never(key.last_used_at.as_ref()),
        ));
    }
    table
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
    ("USERNAME", crate::contract::USERNAME_MAX_CHARS),
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
    if user.is_none() && event.failure.is_none() && event.r#type == 0 {
        // A progress notice: every change up to this revision has been considered.
        return format!("{} PROGRESS", event.revision);
    }
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
    use serde_json::json;

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
    fn fields_come_in_schema_order_and_map_entries_by_key() {
        let user = pb::User {
            id: "id-1".into(),
            username: "ann".into(),
            etag: "7".into(),
            metadata: [("zeta", "1"), ("alpha", "2"), ("mid", "3")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Default::default()
        };
        let text = user_json(&user).to_string();
        assert_eq!(
            text,
            r#"{"id":"id-1","username":"ann","metadata":{"alpha":"2","mid":"3","zeta":"1"},"etag":"7"}"#
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
