//! The canonical text of a filter (see `Filter::canonical`). It must parse back to the same
//! `Expr`, so it only ever writes what the grammar reads, and adds no parentheses the written
//! filter did not need: `a AND (b OR c)` prints as `a AND b OR c`, which AIP-160 reads the
//! same way. The printed text is then never nested deeper than the text it came from, and
//! stays within `MAX_DEPTH`.

use std::fmt;

use super::ast::{Expr, Test, TextTest};
use super::meaning::timestamp_text;

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // An operand of AND is never an AND (`Expr::all` splices them in), and an OR
            // binds tighter than AND without parentheses.
            Expr::And(operands) => write_joined(f, operands, " AND ", |_| false),
            Expr::Or(operands) => write_joined(f, operands, " OR ", |operand| {
                matches!(operand, Expr::And(_))
            }),
            Expr::Not(operand) => match operand.as_ref() {
                Expr::Test(test) => write!(f, "NOT {test}"),
                group => write!(f, "NOT ({group})"),
            },
            Expr::Test(test) => test.fmt(f),
        }
    }
}

fn write_joined(
    f: &mut fmt::Formatter<'_>,
    operands: &[Expr],
    separator: &str,
    needs_parentheses: fn(&Expr) -> bool,
) -> fmt::Result {
    for (index, operand) in operands.iter().enumerate() {
        if index > 0 {
            f.write_str(separator)?;
        }
        if needs_parentheses(operand) {
            write!(f, "({operand})")?;
        } else {
            write!(f, "{operand}")?;
        }
    }
    Ok(())
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Test::Username(test) => write!(f, "username {test}"),
            Test::Email(test) => write!(f, "email {test}"),
            Test::FullName(test) => write!(f, "full_name {test}"),
            Test::Metadata(key, test) => write!(f, "metadata.{} {test}", Key(key)),
            Test::MetadataHas(key) => write!(f, "metadata:{}", Key(key)),
            Test::Role(equality, role) => write!(
                f,
                "role {} {}",
                equality.symbol(),
                role.name().to_ascii_uppercase()
            ),
            Test::Status(equality, status) => write!(
                f,
                "status {} {}",
                equality.symbol(),
                status.name().to_ascii_uppercase()
            ),
            Test::CreatedAt(op, nanos) => {
                write!(
                    f,
                    "created_at {} \"{}\"",
                    op.symbol(),
                    timestamp_text(*nanos)
                )
            }
            Test::UpdatedAt(op, nanos) => {
                write!(
                    f,
                    "updated_at {} \"{}\"",
                    op.symbol(),
                    timestamp_text(*nanos)
                )
            }
            Test::EmailVerified(equality, verified) => {
                write!(f, "email_verified {} {verified}", equality.symbol())
            }
        }
    }
}

impl fmt::Display for TextTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextTest::Compare(op, value) => write!(f, "{} {}", op.symbol(), Quoted(value, "")),
            TextTest::Prefix(equality, prefix) => {
                write!(f, "{} {}", equality.symbol(), Quoted(prefix, "*"))
            }
        }
    }
}

/// A metadata key: bare when the grammar reads it back bare, quoted otherwise.
struct Key<'a>(&'a str);

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bare = !self.0.is_empty()
            && !matches!(self.0, "AND" | "OR" | "NOT")
            && self
                .0
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if bare {
            f.write_str(self.0)
        } else {
            Quoted(self.0, "").fmt(f)
        }
    }
}

/// Text in double quotes with `"` and `\` escaped, and `suffix` before the closing quote.
struct Quoted<'a>(&'a str, &'static str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            if matches!(c, '"' | '\\') {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        write!(f, "{}\"", self.1)
    }
}
