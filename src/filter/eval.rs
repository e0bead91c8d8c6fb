//! Whether a user satisfies a filter. Runs once per user a listing scans, so it compares
//! folded text as it goes rather than allocating the folded copy of each field.

use super::ast::{Expr, Op, Test, TextTest, fold_ascii, fold_unicode};
use crate::domain::User;

impl Expr {
    pub(super) fn matches(&self, user: &User) -> bool {
        match self {
            Expr::And(operands) => operands.iter().all(|operand| operand.matches(user)),
            Expr::Or(operands) => operands.iter().any(|operand| operand.matches(user)),
            Expr::Not(operand) => !operand.matches(user),
            Expr::Test(test) => test.matches(user),
        }
    }
}

impl Test {
    fn matches(&self, user: &User) -> bool {
        match self {
            Test::Username(test) => test.holds(fold_ascii(user.username.as_str())),
            Test::Email(test) => test.holds(fold_unicode(user.email.as_str())),
            Test::FullName(test) => test.holds(fold_unicode(user.full_name.as_str())),
            Test::Metadata(key, test) => match user.metadata.entries().get(key) {
                Some(value) => test.holds(value.chars()),
                None => test.holds_for_missing(),
            },
            Test::MetadataHas(key) => user.metadata.entries().contains_key(key),
            Test::Role(equality, role) => equality.holds(user.role == *role),
            Test::Status(equality, status) => equality.holds(user.status == *status),
            Test::CreatedAt(op, nanos) => op.holds(user.created_at_ns.cmp(nanos)),
            Test::UpdatedAt(op, nanos) => op.holds(user.updated_at_ns.cmp(nanos)),
            Test::EmailVerified(equality, verified) => {
                equality.holds(user.email_verified == *verified)
            }
        }
    }
}

impl TextTest {
    /// `text` is the field, already in the form the value was folded to.
    fn holds(&self, text: impl Iterator<Item = char>) -> bool {
        match self {
            TextTest::Compare(op, value) => op.holds(text.cmp(value.chars())),
            TextTest::Prefix(equality, prefix) => equality.holds(starts_with(text, prefix)),
        }
    }

    /// A missing metadata entry is equal to nothing and has no order, so only the negative
    /// tests hold: `NOT metadata.k = "v"` and `metadata.k != "v"` agree.
    fn holds_for_missing(&self) -> bool {
        match self {
            TextTest::Compare(op, _) => *op == Op::Ne,
            TextTest::Prefix(equality, _) => equality.holds(false),
        }
    }
}

fn starts_with(mut text: impl Iterator<Item = char>, prefix: &str) -> bool {
    prefix.chars().all(|expected| text.next() == Some(expected))
}
