//! A checked filter: every comparison names a real field, with an operator and a value that
//! field allows, and values already in the form they are compared in.

use std::cmp::Ordering;

use crate::domain::{Role, UserStatus};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expr {
    /// At least two operands, none of them an `And` (see `Expr::all`).
    And(Vec<Expr>),
    /// At least two operands, none of them an `Or` (see `Expr::any`).
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Test(Test),
}

impl Expr {
    /// The conjunction of `operands`, with nested conjunctions spliced in: `a AND (b AND c)`
    /// and `a AND b AND c` are one filter, and must print and narrow alike.
    pub(super) fn all(operands: Vec<Expr>) -> Expr {
        Self::joined(operands, Expr::And, |expr| match expr {
            Expr::And(inner) => Ok(inner),
            other => Err(other),
        })
    }

    /// The disjunction of `operands`, with nested disjunctions spliced in.
    pub(super) fn any(operands: Vec<Expr>) -> Expr {
        Self::joined(operands, Expr::Or, |expr| match expr {
            Expr::Or(inner) => Ok(inner),
            other => Err(other),
        })
    }

    /// `split` gives the operands of an expression of the same kind, or the expression back.
    fn joined(
        operands: Vec<Expr>,
        join: fn(Vec<Expr>) -> Expr,
        split: fn(Expr) -> Result<Vec<Expr>, Expr>,
    ) -> Expr {
        let mut flat = Vec::with_capacity(operands.len());
        for operand in operands {
            match split(operand) {
                Ok(inner) => flat.extend(inner),
                Err(single) => flat.push(single),
            }
        }
        match <[Expr; 1]>::try_from(flat) {
            Ok([only]) => only,
            Err(flat) => join(flat),
        }
    }

    /// The top-level conjuncts: the operands of an `And`, or the expression itself.
    pub(super) fn conjuncts(&self) -> &[Expr] {
        match self {
            Expr::And(operands) => operands,
            other => std::slice::from_ref(other),
        }
    }
}

/// One comparison against one field of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Test {
    /// Compared in `fold_ascii` form, like `Username::key`.
    Username(TextTest),
    /// Compared in `fold_unicode` form.
    Email(TextTest),
    /// Compared in `fold_unicode` form.
    FullName(TextTest),
    /// The entry with this key, compared as it is.
    Metadata(String, TextTest),
    /// The user has an entry with this key.
    MetadataHas(String),
    Role(Equality, Role),
    Status(Equality, UserStatus),
    /// Nanoseconds since the Unix epoch.
    CreatedAt(Op, i64),
    /// Nanoseconds since the Unix epoch.
    UpdatedAt(Op, i64),
    EmailVerified(Equality, bool),
}

/// How a text field is compared with a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TextTest {
    /// In code-point order, which is also the byte order of the UTF-8 text.
    Compare(Op, String),
    /// `=` with `value*`: starts with; `!=`: does not.
    Prefix(Equality, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    pub(super) fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    /// Whether a field that compares `ordering` to the value satisfies the operator.
    pub(super) fn holds(self, ordering: Ordering) -> bool {
        match self {
            Op::Eq => ordering.is_eq(),
            Op::Ne => ordering.is_ne(),
            Op::Lt => ordering.is_lt(),
            Op::Le => ordering.is_le(),
            Op::Gt => ordering.is_gt(),
            Op::Ge => ordering.is_ge(),
        }
    }

    /// `=` and `!=` as an `Equality`; `None` for the orderings.
    pub(super) fn equality(self) -> Option<Equality> {
        match self {
            Op::Eq => Some(Equality::Eq),
            Op::Ne => Some(Equality::Ne),
            Op::Lt | Op::Le | Op::Gt | Op::Ge => None,
        }
    }
}

/// The operators of fields that have no order: `=` and `!=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Equality {
    Eq,
    Ne,
}

impl Equality {
    pub(super) fn symbol(self) -> &'static str {
        match self {
            Equality::Eq => "=",
            Equality::Ne => "!=",
        }
    }

    /// Whether a field for which the question "equal?" has the answer `equal` satisfies the
    /// operator.
    pub(super) fn holds(self, equal: bool) -> bool {
        match self {
            Equality::Eq => equal,
            Equality::Ne => !equal,
        }
    }
}

/// The comparison form of a username: ASCII letters lower-cased, as `Username::key` does (a
/// username is ASCII, and the index holds that key).
pub(super) fn fold_ascii(text: &str) -> impl Iterator<Item = char> + '_ {
    text.chars().map(|c| c.to_ascii_lowercase())
}

/// The comparison form of an email or a full name: every letter lower-cased, one character at
/// a time. `str::to_lowercase` would agree except for a final Greek sigma, which it lowers by
/// its context; folding each character alone keeps "starts with" consistent, since the
/// folded prefix of a text is then always a prefix of the folded text.
pub(super) fn fold_unicode(text: &str) -> impl Iterator<Item = char> + '_ {
    text.chars().flat_map(char::to_lowercase)
}
