//! From syntax to meaning: each restriction checked against the field it names (which
//! operators it takes, what its values look like), values put in the form they are compared
//! in, and the comparisons counted.

use prost_types::Timestamp;

use super::MAX_COMPARISONS;
use super::ast::{Equality, Expr, Op, Test, TextTest, fold_ascii, fold_unicode};
use super::syntax::{Comparator, Node, NodeKind, Problem, Restriction, Token};
use crate::domain::{Role, UserStatus};
use crate::text::quoted;

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// The fields a filter may name, for messages.
const FIELDS: &str = "username, email, full_name, role, status, created_at, updated_at, \
                      email_verified or metadata.KEY";

/// Checks the tree and builds the filter it means.
pub(super) fn resolve(tree: Node) -> Result<Expr, Problem> {
    Resolver { comparisons: 0 }.expr(tree)
}

struct Resolver {
    comparisons: usize,
}

impl Resolver {
    /// Visits restrictions in the order they are written, so the one that breaks the limit
    /// is the one the message points at.
    fn expr(&mut self, node: Node) -> Result<Expr, Problem> {
        match node.kind {
            NodeKind::And(nodes) => Ok(Expr::all(self.exprs(nodes)?)),
            NodeKind::Or(nodes) => Ok(Expr::any(self.exprs(nodes)?)),
            NodeKind::Not(inner) => Ok(Expr::Not(Box::new(self.expr(*inner)?))),
            NodeKind::Restriction(restriction) => {
                self.count(node.offset)?;
                Ok(Expr::Test(test(restriction)?))
            }
        }
    }

    fn exprs(&mut self, nodes: Vec<Node>) -> Result<Vec<Expr>, Problem> {
        nodes.into_iter().map(|node| self.expr(node)).collect()
    }

    fn count(&mut self, offset: usize) -> Result<(), Problem> {
        self.comparisons += 1;
        if self.comparisons > MAX_COMPARISONS {
            return Err(Problem::new(
                offset,
                format!("a filter may hold at most {MAX_COMPARISONS} comparisons"),
            ));
        }
        Ok(())
    }
}

fn test(restriction: Restriction) -> Result<Test, Problem> {
    let Restriction {
        field,
        key,
        comparator,
        comparator_offset,
        value,
    } = restriction;
    let operator = Operator {
        field: &field.text,
        comparator,
        offset: comparator_offset,
    };
    match (field.text.as_str(), key) {
        ("metadata", Some(key)) => metadata_entry(key, operator, value),
        ("metadata", None) => metadata_presence(operator, value),
        (_, Some(_)) => Err(Problem::new(
            field.offset,
            format!(
                "{} has no sub-fields: only metadata does, as metadata.KEY",
                quoted(&field.text)
            ),
        )),
        ("username", None) => Ok(Test::Username(text_test(operator, &value, |text| {
            fold_ascii(text).collect()
        })?)),
        ("email", None) => Ok(Test::Email(text_test(operator, &value, |text| {
            fold_unicode(text).collect()
        })?)),
        ("full_name", None) => Ok(Test::FullName(text_test(operator, &value, |text| {
            fold_unicode(text).collect()
        })?)),
        ("role", None) => Ok(Test::Role(operator.equality()?, role(&value)?)),
        ("status", None) => Ok(Test::Status(operator.equality()?, status(&value)?)),
        ("created_at", None) => Ok(Test::CreatedAt(operator.ordering()?, timestamp(&value)?)),
        ("updated_at", None) => Ok(Test::UpdatedAt(operator.ordering()?, timestamp(&value)?)),
        ("email_verified", None) => Ok(Test::EmailVerified(operator.equality()?, boolean(&value)?)),
        (unknown, None) => Err(Problem::new(
            field.offset,
            format!("unknown field {}: filter on {FIELDS}", quoted(unknown)),
        )),
    }
}

/// The comparator of a restriction, with what a message about it needs.
#[derive(Clone, Copy)]
struct Operator<'a> {
    field: &'a str,
    comparator: Comparator,
    offset: usize,
}

impl Operator<'_> {
    /// Any of `= != < <= > >=`.
    fn ordering(self) -> Result<Op, Problem> {
        match self.comparator {
            Comparator::Op(op) => Ok(op),
            Comparator::Has => Err(Problem::new(
                self.offset,
                format!(
                    "':' (has) applies only to metadata; compare {} with =, !=, <, <=, > or >=",
                    self.field
                ),
            )),
        }
    }

    /// `=` or `!=`.
    fn equality(self) -> Result<Equality, Problem> {
        let equality = match self.comparator {
            Comparator::Op(op) => op.equality(),
            Comparator::Has => None,
        };
        equality.ok_or_else(|| {
            Problem::new(
                self.offset,
                format!(
                    "{} takes only = and !=, not '{}'",
                    self.field,
                    self.comparator.symbol()
                ),
            )
        })
    }
}

/// A comparison of a text field; `fold` puts the value in the field's comparison form.
fn text_test(
    operator: Operator<'_>,
    value: &Token,
    fold: impl Fn(&str) -> String,
) -> Result<TextTest, Problem> {
    let op = operator.ordering()?;
    match prefix_pattern(value)? {
        None => Ok(TextTest::Compare(op, fold(&value.text))),
        Some(prefix) => {
            let equality = op.equality().ok_or_else(|| {
                Problem::new(
                    value.offset,
                    format!(
                        "a value ending in '*' is a prefix match, which takes = or !=, not '{}'",
                        op.symbol()
                    ),
                )
            })?;
            Ok(TextTest::Prefix(equality, fold(prefix)))
        }
    }
}

/// `Some(prefix)` for a value ending in its only `*`; `None` for a value without one.
fn prefix_pattern(value: &Token) -> Result<Option<&str>, Problem> {
    let Some(star) = value.text.find('*') else {
        return Ok(None);
    };
    if star + 1 == value.text.len() {
        return Ok(value.text.get(..star));
    }
    Err(Problem::new(
        value.offset,
        format!(
            "'*' may only end a value, as a prefix match such as \"ann*\"; got {}",
            quoted(&value.text)
        ),
    ))
}

/// `metadata.KEY op value`, or `metadata.KEY:*`.
fn metadata_entry(key: Token, operator: Operator<'_>, value: Token) -> Result<Test, Problem> {
    let key = metadata_key(key)?;
    if operator.comparator == Comparator::Has {
        if value.text != "*" {
            return Err(Problem::new(
                value.offset,
                "metadata.KEY:* asks whether the entry exists; to compare its value use =, !=, \
                 <, <=, > or >=",
            ));
        }
        return Ok(Test::MetadataHas(key));
    }
    Ok(Test::Metadata(
        key,
        text_test(operator, &value, str::to_owned)?,
    ))
}

/// `metadata:KEY`.
fn metadata_presence(operator: Operator<'_>, key: Token) -> Result<Test, Problem> {
    if operator.comparator != Comparator::Has {
        return Err(Problem::new(
            operator.offset,
            "compare one metadata entry as metadata.KEY, or ask whether it exists with \
             metadata:KEY",
        ));
    }
    Ok(Test::MetadataHas(metadata_key(key)?))
}

fn metadata_key(key: Token) -> Result<String, Problem> {
    if key.text.is_empty() {
        return Err(Problem::new(key.offset, "a metadata key must not be empty"));
    }
    Ok(key.text)
}

/// `ADMIN` or `USER_ROLE_ADMIN`, in any letter case.
fn role(value: &Token) -> Result<Role, Problem> {
    let name = strip_prefix_ignoring_case(&value.text, "USER_ROLE_");
    if let Some(role) = Role::ALL
        .into_iter()
        .find(|role| role.name().eq_ignore_ascii_case(name))
    {
        return Ok(role);
    }
    let names = Role::ALL.map(|role| role.name().to_ascii_uppercase());
    Err(Problem::new(
        value.offset,
        format!(
            "role must be one of {} (or the same with USER_ROLE_ in front); got {}",
            names.join(", "),
            quoted(&value.text)
        ),
    ))
}

/// `ACTIVE` or `USER_STATUS_ACTIVE`, in any letter case.
fn status(value: &Token) -> Result<UserStatus, Problem> {
    let name = strip_prefix_ignoring_case(&value.text, "USER_STATUS_");
    if let Some(status) = UserStatus::ALL
        .into_iter()
        .find(|status| status.name().eq_ignore_ascii_case(name))
    {
        return Ok(status);
    }
    let names = UserStatus::ALL.map(|status| status.name().to_ascii_uppercase());
    Err(Problem::new(
        value.offset,
        format!(
            "status must be one of {} (or the same with USER_STATUS_ in front); got {}",
            names.join(", "),
            quoted(&value.text)
        ),
    ))
}

fn strip_prefix_ignoring_case<'a>(text: &'a str, prefix: &str) -> &'a str {
    match (text.get(..prefix.len()), text.get(prefix.len()..)) {
        (Some(head), Some(rest)) if head.eq_ignore_ascii_case(prefix) => rest,
        _ => text,
    }
}

fn boolean(value: &Token) -> Result<bool, Problem> {
    if value.text.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.text.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(Problem::new(
            value.offset,
            format!(
                "email_verified must be true or false; got {}",
                quoted(&value.text)
            ),
        ))
    }
}

/// An RFC 3339 timestamp (as protobuf's JSON mapping reads it) as nanoseconds since the
/// epoch, the unit users are stored in.
fn timestamp(value: &Token) -> Result<i64, Problem> {
    let parsed: Timestamp = value.text.parse().map_err(|_| {
        Problem::new(
            value.offset,
            format!(
                "expected an RFC 3339 timestamp such as \"2024-01-01T00:00:00Z\"; got {}",
                quoted(&value.text)
            ),
        )
    })?;
    parsed
        .seconds
        .checked_mul(NANOS_PER_SECOND)
        .and_then(|nanos| nanos.checked_add(i64::from(parsed.nanos)))
        .ok_or_else(|| {
            Problem::new(
                value.offset,
                format!(
                    "{} is out of range: timestamps from {} to {} can be compared",
                    quoted(&value.text),
                    timestamp_text(i64::MIN),
                    timestamp_text(i64::MAX)
                ),
            )
        })
}

/// Nanoseconds since the epoch in RFC 3339, UTC, as `timestamp` reads it back.
pub(super) fn timestamp_text(nanos: i64) -> String {
    Timestamp {
        seconds: nanos.div_euclid(NANOS_PER_SECOND),
        // In 0..1e9 by construction, so it fits.
        nanos: nanos.rem_euclid(NANOS_PER_SECOND) as i32,
    }
    .to_string()
}
