//! ListUsers filters: the part of Google AIP-160 this service supports, parsed into a
//! `Filter` that matches users, prints itself in one canonical form and tells an index which
//! of its conjuncts it could use.
//!
//! The language, by example:
//!
//! ```text
//! status = ACTIVE AND role != USER_ROLE_ADMIN
//! username = "ann*" OR email = ann@example.com
//! created_at >= "2024-01-01T00:00:00Z" -metadata:team
//! NOT (metadata.team = "core" OR email_verified = false)
//! ```
//!
//! - `AND`, `OR` and whitespace join comparisons; whitespace means `AND`. As AIP-160 says, `OR`
//!   binds tighter than `AND`: `a AND b OR c` is `a AND (b OR c)`.
//! - `NOT x` and `-x` negate one comparison or one parenthesized group.
//! - `username`, `email` and `full_name` compare without letter case; a value ending in `*`
//!   with `=` (or `!=`) asks whether the field starts (or does not start) with what comes
//!   before the `*`.
//! - `metadata.KEY` compares the value of one entry, letter case included; a user without
//!   the entry satisfies only `!=`. `metadata:KEY` and `metadata.KEY:*` ask whether it exists.
//! - `role` and `status` take `=` and `!=` with a name such as `ADMIN` or `USER_STATUS_ACTIVE`;
//!   `created_at` and `updated_at` take an RFC 3339 timestamp; `email_verified` takes
//!   `true` or `false`.
//!
//! The text is parsed in two steps: `syntax` turns it into a tree that keeps where each token
//! stood, and `meaning` checks that tree against the fields of a user. Messages therefore point
//! at the token that is wrong, whichever step finds the problem.

mod ast;
mod canonical;
mod eval;
mod meaning;
mod narrow;
mod syntax;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::domain::User;

pub use narrow::{Bound, Narrow};

/// The longest filter text, in bytes. Bounds the work one request can ask of the parser.
pub const MAX_TEXT_BYTES: usize = 2_048;

/// The deepest nesting of parentheses. The parser recurses once per level, so this also
/// bounds its stack, whatever the text.
pub const MAX_DEPTH: usize = 32;

/// The most comparisons one filter may hold. Bounds the work of matching each user.
pub const MAX_COMPARISONS: usize = 64;

/// A parsed filter: a condition on users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    expr: ast::Expr,
}

/// Why a filter text was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// 1-based character offset of the problem in the text (one past the last character when
    /// the text ends too early).
    pub position: usize,
    /// What is wrong and what is allowed, for the caller.
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.position, self.message)
    }
}

impl std::error::Error for FilterError {}

impl FilterError {
    /// Turns a problem at a byte offset of `text` into one at a character position.
    fn at(text: &str, problem: syntax::Problem) -> Self {
        let before = text.get(..problem.offset).unwrap_or(text);
        Self {
            position: before.chars().count() + 1,
            message: problem.message,
        }
    }
}

impl Filter {
    /// Parses a filter. Empty or all-whitespace text is no filter at all: `Ok(None)`.
    pub fn parse(text: &str) -> Result<Option<Filter>, FilterError> {
        check_length(text)?;
        check_characters(text)?;
        let Some(tree) = syntax::parse(text).map_err(|problem| FilterError::at(text, problem))?
        else {
            return Ok(None);
        };
        let expr = meaning::resolve(tree).map_err(|problem| FilterError::at(text, problem))?;
        let filter = Filter { expr };
        filter.check_canonical_length()?;
        Ok(Some(filter))
    }

    /// Whether `user` satisfies the filter.
    pub fn matches(&self, user: &User) -> bool {
        self.expr.matches(user)
    }

    /// The filter in one standard spelling: single spaces, `AND` and `OR` spelled out,
    /// string values quoted and in the case they are compared in, names upper case,
    /// timestamps in UTC. Filters that differ only in those respects print the same, so a
    /// page token can be bound to it; the text parses back to an equal `Filter`.
    ///
    /// For example `username="Ann*"  status=user_status_active` prints as
    /// `username = "ann*" AND status = ACTIVE`.
    pub fn canonical(&self) -> String {
        self.expr.to_string()
    }

    /// One entry per top-level `AND` conjunct, in order: `Some` when the conjunct is a single
    /// comparison an index could serve (see `Narrow`), `None` otherwise. A user the filter
    /// matches satisfies every `Some` entry, so a store may read only the users one of them
    /// selects, and must still call `matches` on each.
    pub fn narrowing(&self) -> Vec<Option<Narrow>> {
        self.expr
            .conjuncts()
            .iter()
            .map(|expr| expr.narrow())
            .collect()
    }

    /// A filter near the length limit can print longer than it was written (`a=b` becomes
    /// `a = "b"`, and lower-casing can lengthen a letter); refusing it keeps the promise that
    /// the canonical text parses back.
    fn check_canonical_length(&self) -> Result<(), FilterError> {
        let length = self.canonical().len();
        if length > MAX_TEXT_BYTES {
            return Err(FilterError {
                position: 1,
                message: format!(
                    "the filter is too long: written out in canonical form it takes {length} \
                     bytes, and at most {MAX_TEXT_BYTES} are allowed"
                ),
            });
        }
        Ok(())
    }
}

/// Refuses text over `MAX_TEXT_BYTES`, pointing at the first character past the limit.
fn check_length(text: &str) -> Result<(), FilterError> {
    if text.len() <= MAX_TEXT_BYTES {
        return Ok(());
    }
    let fitting = text
        .char_indices()
        .take_while(|(start, c)| start + c.len_utf8() <= MAX_TEXT_BYTES)
        .count();
    Err(FilterError {
        position: fitting + 1,
        message: format!(
            "the filter is too long: {} bytes, and at most {MAX_TEXT_BYTES} are allowed",
            text.len()
        ),
    })
}

/// No stored text holds a control character, and databases refuse a NUL in a query: a
/// filter with one is refused where it stands, on every backend alike.
fn check_characters(text: &str) -> Result<(), FilterError> {
    match text
        .chars()
        .position(|c| c.is_control() && !c.is_whitespace())
    {
        Some(at) => Err(FilterError {
            position: at + 1,
            message: "a control character (such as NUL) is not allowed in a filter: no stored value holds one".into(),
        }),
        None => Ok(()),
    }
}
