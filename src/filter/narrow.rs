//! What an index could do with a filter: the top-level conjuncts that are one positive
//! comparison on an indexed field.

use super::ast::{Equality, Expr, Op, Test, TextTest};
use crate::domain::{Role, UserStatus};

/// A condition every user a filter matches satisfies, in a form an index can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Narrow {
    Status(UserStatus),
    Role(Role),
    /// Nanoseconds since the Unix epoch.
    CreatedAt(Bound<i64>),
    /// Nanoseconds since the Unix epoch.
    UpdatedAt(Bound<i64>),
    /// The username's key form (`Username::key`: ASCII letters lower-cased).
    Username(Bound<String>),
}

/// How a field relates to a value: the field is equal to it, less than it, ..., or starts
/// with it (`Prefix`, for `Narrow::Username` only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound<T> {
    Eq(T),
    Lt(T),
    Le(T),
    Gt(T),
    Ge(T),
    Prefix(T),
}

impl<T> Bound<T> {
    /// The same relation to `f(value)`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Bound<U> {
        match self {
            Bound::Eq(value) => Bound::Eq(f(value)),
            Bound::Lt(value) => Bound::Lt(f(value)),
            Bound::Le(value) => Bound::Le(f(value)),
            Bound::Gt(value) => Bound::Gt(f(value)),
            Bound::Ge(value) => Bound::Ge(f(value)),
            Bound::Prefix(value) => Bound::Prefix(f(value)),
        }
    }

    /// `None` for `!=`, which no range of an index serves.
    fn of(op: Op, value: T) -> Option<Self> {
        match op {
            Op::Eq => Some(Bound::Eq(value)),
            Op::Lt => Some(Bound::Lt(value)),
            Op::Le => Some(Bound::Le(value)),
            Op::Gt => Some(Bound::Gt(value)),
            Op::Ge => Some(Bound::Ge(value)),
            Op::Ne => None,
        }
    }
}

impl Expr {
    pub(super) fn narrow(&self) -> Option<Narrow> {
        let Expr::Test(test) = self else {
            return None;
        };
        match test {
            Test::Status(Equality::Eq, status) => Some(Narrow::Status(*status)),
            Test::Role(Equality::Eq, role) => Some(Narrow::Role(*role)),
            Test::CreatedAt(op, nanos) => Bound::of(*op, *nanos).map(Narrow::CreatedAt),
            Test::UpdatedAt(op, nanos) => Bound::of(*op, *nanos).map(Narrow::UpdatedAt),
            Test::Username(TextTest::Compare(op, value)) => {
                Bound::of(*op, value.clone()).map(Narrow::Username)
            }
            Test::Username(TextTest::Prefix(Equality::Eq, prefix)) => {
                Some(Narrow::Username(Bound::Prefix(prefix.clone())))
            }
            Test::Status(Equality::Ne, _)
            | Test::Role(Equality::Ne, _)
            | Test::Username(TextTest::Prefix(Equality::Ne, _))
            | Test::Email(_)
            | Test::FullName(_)
            | Test::Metadata(..)
            | Test::MetadataHas(_)
            | Test::EmailVerified(..) => None,
        }
    }
}
