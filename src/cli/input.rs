//! Reading users from JSON Lines and CSV, one row at a time, never the whole file.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use prost_reflect::DynamicMessage;
use serde_json::Value;

use super::client::Failure;
use crate::pb;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

impl Format {
    /// The explicit format, else the file's extension (.jsonl, .ndjson, .json or .csv).
    pub fn of(path: &Path, explicit: Option<Format>) -> Result<Self, Failure> {
        if let Some(format) = explicit {
            return Ok(format);
        }
        match path.extension().and_then(|ext| ext.to_str()) {
            Some("jsonl" | "ndjson" | "json") => Ok(Format::Jsonl),
            Some("csv") => Ok(Format::Csv),
            _ => Err(Failure::usage(format!(
                "cannot tell the format of {} from its extension: pass --format jsonl or --format csv",
                path.display()
            ))),
        }
    }
}

/// A role a user can have: `admin`, `ADMIN`, `USER_ROLE_ADMIN` or its number (1-3). Flags and
/// file rows both read roles here, so they accept and refuse the same values.
pub fn role(raw: &str) -> Result<i32, String> {
    use pb::UserRole::{Admin, Moderator, User};
    enum_value(
        raw,
        "USER_ROLE_",
        [User, Admin, Moderator].map(|r| (r.as_str_name(), r as i32)),
    )
    .ok_or_else(|| format!("role {raw:?} is not user, admin or moderator"))
}

/// A status a user can be given or listed by: `active`, `SUSPENDED`, `USER_STATUS_INACTIVE`
/// or its number (1-3). DELETED is not one: deleted users are gone.
pub fn status(raw: &str) -> Result<i32, String> {
    use pb::UserStatus::{Active, Inactive, Suspended};
    enum_value(
        raw,
        "USER_STATUS_",
        [Active, Inactive, Suspended].map(|s| (s.as_str_name(), s as i32)),
    )
    .ok_or_else(|| format!("status {raw:?} is not active, inactive or suspended"))
}

fn enum_value<const N: usize>(raw: &str, prefix: &str, allowed: [(&str, i32); N]) -> Option<i32> {
    let upper = raw.to_ascii_uppercase();
    allowed
        .into_iter()
        .find(|(name, number)| {
            *name == upper
                || name.strip_prefix(prefix) == Some(&upper)
                || *raw == number.to_string()
        })
        .map(|(_, number)| number)
}

/// A flag's or a field's parser of an enum's names and numbers.
type EnumParser = fn(&str) -> Result<i32, String>;

/// One JSON Lines row as the schema's message `name`, read as proto3 JSON by prost-reflect
/// from the schema (either form of a field name; enum names or numbers), where a role or a
/// status may also be given short (`admin`, `suspended`), as on the command line. A key the
/// schema does not know is an error, not silently dropped.
fn from_json<M: prost::Message + Default>(line: &str, name: &str) -> Result<M, String> {
    let value: Value =
        serde_json::from_str(line).map_err(|err| format!("not valid JSON: {err}"))?;
    from_value(value, name)
}

fn from_value<M: prost::Message + Default>(mut value: Value, name: &str) -> Result<M, String> {
    let Value::Object(object) = &mut value else {
        return Err(format!("expected a JSON object, got {value}"));
    };
    for (key, parse) in [("role", role as EnumParser), ("status", status)] {
        if let Some(Value::String(text)) = object.get(key) {
            let number = parse(text)?;
            object.insert(key.to_owned(), Value::from(number));
        }
    }
    DynamicMessage::deserialize(crate::json::message(name), value)
        .map_err(|err| err.to_string())?
        .transcode_to::<M>()
        .map_err(|err| err.to_string())
}

/// One JSON Lines row as a CreateUserRequest: either that message, or an ExportedUser as
/// `userctl export` writes it (whose user is recreated with a new id and times).
pub fn create_from_json(line: &str) -> Result<pb::CreateUserRequest, String> {
    let value: Value =
        serde_json::from_str(line).map_err(|err| format!("not valid JSON: {err}"))?;
    if value.get("user").is_none() {
        return from_value(value, "userservice.CreateUserRequest");
    }
    let exported: pb::ExportedUser = from_value(value, "userservice.ExportedUser")?;
    let user = exported.user.unwrap_or_default();
    Ok(pb::CreateUserRequest {
        role: user.role,
        status: user.status,
        username: user.username,
        email: user.email,
        full_name: user.full_name,
        metadata: user.metadata,
        password_hash: exported.password_hash,
        password: String::new(),
    })
}

/// The `metadata` column of a CSV row: a JSON object of strings.
fn metadata_object(text: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    serde_json::from_str(text)
        .map_err(|err| format!("metadata must be a JSON object of strings: {err}"))
}

/// One JSON Lines row as an UpdateUserRequest; only the keys present are set.
pub fn update_from_json(line: &str) -> Result<pb::UpdateUserRequest, String> {
    let request: pb::UpdateUserRequest = from_json(line, "userservice.UpdateUserRequest")?;
    if request.user_id.is_empty() {
        return Err("user_id is missing".into());
    }
    Ok(request)
}

/// A row read from the file: its line number, bytes read so far, and the request or why
/// it could not be read.
pub struct Row<T> {
    pub line: u64,
    pub bytes_read: u64,
    pub parsed: Result<T, String>,
}

/// Rows of a JSON Lines file, skipping blank lines.
pub fn json_lines<T>(
    path: &Path,
    parse: fn(&str) -> Result<T, String>,
) -> Result<impl Iterator<Item = Row<T>> + use<T>, Failure> {
    let file = File::open(path)
        .map_err(|err| Failure::usage(format!("cannot read {}: {err}", path.display())))?;
    let mut bytes_read = 0;
    Ok(BufReader::new(file)
        .lines()
        .enumerate()
        .filter_map(move |(index, line)| {
            let line_number = index as u64 + 1;
            let parsed = match line {
                Ok(line) => {
                    bytes_read += line.len() as u64 + 1;
                    if line.trim().is_empty() {
                        return None;
                    }
                    parse(&line)
                }
                Err(err) => Err(format!("unreadable line: {err}")),
            };
            Some(Row {
                line: line_number,
                bytes_read,
                parsed,
            })
        }))
}

/// The CSV columns besides `meta.KEY`.
const KNOWN_COLUMNS: [&str; 9] = [
    "username",
    "email",
    "full_name",
    "fullName",
    "password",
    "password_hash",
    "role",
    "status",
    "metadata",
];

/// Columns an export writes that a new user cannot take over: they get an id and times of
/// their own, and prove their email again.
const SKIPPED_COLUMNS: [&str; 4] = ["id", "created_at", "updated_at", "email_verified"];

/// Rows of a CSV file with a header: username, email, full_name, password (or
/// password_hash, an existing hash to import), role, and any
/// `meta.KEY` column as metadata.
pub fn csv_rows(
    path: &Path,
) -> Result<impl Iterator<Item = Row<pb::CreateUserRequest>> + use<>, Failure> {
    let file = File::open(path)
        .map_err(|err| Failure::usage(format!("cannot read {}: {err}", path.display())))?;
    csv_from(file, path)
}

/// Rows of CSV read from `input`; `path` names it in messages.
pub fn csv_from<R: std::io::Read + 'static>(
    input: R,
    path: &Path,
) -> Result<impl Iterator<Item = Row<pb::CreateUserRequest>> + use<R>, Failure> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(input);
    let headers = reader
        .headers()
        .map_err(|err| {
            Failure::usage(format!(
                "cannot read the CSV header of {}: {err}",
                path.display()
            ))
        })?
        .clone();
    // A column nobody reads is a mistake in the whole file, not in each row.
    if let Some(unknown) = headers.iter().find(|name| {
        !(KNOWN_COLUMNS.contains(name)
            || SKIPPED_COLUMNS.contains(name)
            || name.strip_prefix("meta.").is_some_and(|k| !k.is_empty()))
    }) {
        return Err(Failure::usage(format!(
            "{}: unknown CSV column {unknown:?}: the columns are {} and meta.KEY",
            path.display(),
            KNOWN_COLUMNS.join(", ")
        )));
    }
    let mut records = reader.into_records();
    Ok(std::iter::from_fn(move || {
        let record = records.next()?;
        let (line, bytes_read) = match &record {
            Ok(record) => record
                .position()
                .map_or((0, 0), |position| (position.line(), position.byte())),
            Err(err) => err
                .position()
                .map_or((0, 0), |position| (position.line(), position.byte())),
        };
        let parsed = record
            .map_err(|err| format!("unreadable CSV row: {err}"))
            .and_then(|record| {
                let mut request = pb::CreateUserRequest::default();
                for (name, value) in headers.iter().zip(record.iter()) {
                    match name {
                        "username" => request.username = value.to_owned(),
                        "email" => request.email = value.to_owned(),
                        "full_name" | "fullName" => request.full_name = value.to_owned(),
                        "password" => request.password = value.to_owned(),
                        "password_hash" => request.password_hash = value.to_owned(),
                        "role" if value.is_empty() => {}
                        "role" => request.role = role(value)?,
                        "status" if value.is_empty() => {}
                        "status" => request.status = status(value)?,
                        "metadata" if value.is_empty() => {}
                        "metadata" => request.metadata.extend(metadata_object(value)?),
                        skipped if SKIPPED_COLUMNS.contains(&skipped) => {}
                        // Checked against KNOWN_COLUMNS above: any other is meta.KEY.
                        other => {
                            if let Some(key) = other.strip_prefix("meta.")
                                && !value.is_empty()
                            {
                                request.metadata.insert(key.to_owned(), value.to_owned());
                            }
                        }
                    }
                }
                Ok(request)
            });
        Some(Row {
            line,
            bytes_read,
            parsed,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_statuses_are_read_by_short_name_full_name_or_number() {
        assert_eq!(role("admin"), Ok(2));
        assert_eq!(role("USER_ROLE_MODERATOR"), Ok(3));
        assert_eq!(role("1"), Ok(1));
        assert!(role("root").is_err());
        assert_eq!(status("suspended"), Ok(3));
    }

    #[test]
    fn values_no_user_can_have_are_refused_by_name_and_number() {
        for bad in ["unspecified", "USER_ROLE_UNSPECIFIED", "0", "4"] {
            assert!(role(bad).is_err(), "role {bad:?}");
        }
        for bad in [
            "deleted",
            "USER_STATUS_DELETED",
            "unspecified",
            "0",
            "4",
            "bogus",
        ] {
            assert!(status(bad).is_err(), "status {bad:?}");
        }
    }

    #[test]
    fn an_import_row_may_carry_a_password_hash_instead_of_a_password() {
        let csv = "username,email,password_hash\nann,ann@example.com,$2b$04$hash\n";
        let rows: Vec<_> = csv_from(std::io::Cursor::new(csv), Path::new("users.csv"))
            .unwrap()
            .collect();
        let request = rows[0].parsed.as_ref().unwrap();
        assert_eq!(request.password_hash, "$2b$04$hash");
        assert_eq!(request.password, "");
        let json = create_from_json(r#"{"username":"bo","passwordHash":"$2b$04$hash"}"#).unwrap();
        assert_eq!(json.password_hash, "$2b$04$hash");
    }

    #[test]
    fn a_json_row_takes_snake_or_camel_case_keys() {
        let request = create_from_json(
            r#"{"username":"ann","fullName":"Ann","role":"admin","metadata":{"team":"core"}}"#,
        )
        .unwrap();
        assert_eq!(request.full_name, "Ann");
        assert_eq!(request.role, 2);
        assert_eq!(
            request.metadata.get("team").map(String::as_str),
            Some("core")
        );
        assert!(create_from_json("[1]").is_err());
        assert!(create_from_json("{").is_err());
    }

    #[test]
    fn an_update_row_sets_only_the_keys_it_has() {
        let request = update_from_json(r#"{"user_id":"u1","status":"suspended"}"#).unwrap();
        assert_eq!(request.status, Some(3));
        assert_eq!(request.username, None);
        assert!(
            update_from_json(r#"{"username":"x"}"#).is_err(),
            "user_id is required"
        );
    }
}
