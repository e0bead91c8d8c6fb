//! The grammar: filter text to a tree of restrictions (`field op value`), each token with the
//! byte offset a message points at. AIP-160's EBNF, less functions and global restrictions:
//!
//! ```text
//! filter      = [expression]
//! expression  = sequence {WS "AND" WS sequence}
//! sequence    = factor {WS factor}
//! factor      = term {WS "OR" WS term}
//! term        = ["NOT" WS | "-"] simple
//! simple      = "(" expression ")" | restriction
//! restriction = name ["." key] comparator value
//! ```
//!
//! A keyword is a whole word (`ORDER` is a name, not `OR`), and the whitespace after it may be
//! left out before a parenthesis, as in `NOT(role = ADMIN)`.
//!
//! Only `simple` recurses, once per parenthesis, and refuses to go deeper than `MAX_DEPTH`.
//! Every error past a point where the text could only mean one thing is a cut, so the message
//! names what was expected there rather than what some other branch wanted.

use winnow::Parser;
use winnow::ascii::{multispace0, multispace1};
use winnow::combinator::{alt, eof, not, opt, preceded};
use winnow::error::{ErrMode, ModalResult, ParserError};
use winnow::stream::{LocatingSlice, Location, Stream};
use winnow::token::{any, literal, one_of, take_till, take_while};

use super::MAX_DEPTH;
use super::ast::Op;

type Input<'i> = LocatingSlice<&'i str>;

type Parsed<T> = ModalResult<T, Problem>;

/// What is wrong with the text, at a byte offset into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    pub offset: usize,
    pub message: String,
}

impl Problem {
    pub(super) fn new(offset: usize, message: impl Into<String>) -> Self {
        Self {
            offset,
            message: message.into(),
        }
    }
}

impl ParserError<Input<'_>> for Problem {
    type Inner = Self;

    /// Only backtracking errors are made this way, and the grammar catches each of them and
    /// reports what it expected instead.
    fn from_input(input: &Input<'_>) -> Self {
        Problem::new(input.current_token_start(), "unexpected text")
    }

    fn into_inner(self) -> Result<Self, Self> {
        Ok(self)
    }
}

/// A problem no other branch of the grammar can get past.
fn cut(offset: usize, message: impl Into<String>) -> ErrMode<Problem> {
    ErrMode::Cut(Problem::new(offset, message))
}

/// A node of the tree, with the offset where its text starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    pub offset: usize,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NodeKind {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Restriction(Restriction),
}

/// `field[.key] comparator value`, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Restriction {
    pub field: Token,
    pub key: Option<Token>,
    pub comparator: Comparator,
    pub comparator_offset: usize,
    pub value: Token,
}

/// A name or a value: its text with quotes and escapes removed, and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub offset: usize,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Comparator {
    Op(Op),
    /// `:`
    Has,
}

impl Comparator {
    pub(super) fn symbol(self) -> &'static str {
        match self {
            Comparator::Op(op) => op.symbol(),
            Comparator::Has => ":",
        }
    }
}

/// Parses `text`; `None` when it is empty or all whitespace.
pub(super) fn parse(text: &str) -> Result<Option<Node>, Problem> {
    let mut input = LocatingSlice::new(text);
    filter(&mut input).map_err(|error| {
        // Only partial input reports `Incomplete`, and this input is complete.
        error
            .into_inner()
            .unwrap_or_else(|_| Problem::new(text.len(), "the filter ends too early"))
    })
}

fn filter(input: &mut Input<'_>) -> Parsed<Option<Node>> {
    skip_space(input)?;
    if input.eof_offset() == 0 {
        return Ok(None);
    }
    let tree = expression(input, 0)?;
    skip_space(input)?;
    match input.chars().next() {
        None => Ok(Some(tree)),
        Some(')') => Err(cut(input.current_token_start(), "')' has no matching '('")),
        Some(_) => Err(cut(
            input.current_token_start(),
            "expected AND, OR or whitespace before the next comparison, or the end of the filter",
        )),
    }
}

/// `sequence {WS "AND" WS sequence}`; `depth` is the number of open parentheses.
fn expression(input: &mut Input<'_>, depth: usize) -> Parsed<Node> {
    let offset = input.current_token_start();
    let mut operands = vec![sequence(input, depth)?];
    while next_keyword(input, "AND")? {
        operands.push(sequence(input, depth)?);
    }
    Ok(joined(offset, operands, NodeKind::And))
}

/// `factor {WS factor}`: comparisons side by side mean AND.
fn sequence(input: &mut Input<'_>, depth: usize) -> Parsed<Node> {
    let offset = input.current_token_start();
    let mut operands = vec![factor(input, depth)?];
    while next_factor(input)? {
        operands.push(factor(input, depth)?);
    }
    Ok(joined(offset, operands, NodeKind::And))
}

/// `term {WS "OR" WS term}`.
fn factor(input: &mut Input<'_>, depth: usize) -> Parsed<Node> {
    let offset = input.current_token_start();
    let mut operands = vec![term(input, depth)?];
    while next_keyword(input, "OR")? {
        operands.push(term(input, depth)?);
    }
    Ok(joined(offset, operands, NodeKind::Or))
}

/// One operand stays itself; more become one node of `kind`.
fn joined(offset: usize, operands: Vec<Node>, kind: fn(Vec<Node>) -> NodeKind) -> Node {
    match <[Node; 1]>::try_from(operands) {
        Ok([only]) => only,
        Err(operands) => Node {
            offset,
            kind: kind(operands),
        },
    }
}

/// Consumes whitespace, `keyword` and any whitespace after it, when they come next.
fn next_keyword(input: &mut Input<'_>, word: &'static str) -> Parsed<bool> {
    opt((multispace1, keyword(word), multispace0))
        .map(|found| found.is_some())
        .parse_next(input)
}

/// Consumes the whitespace before another factor of a sequence, when one comes next: not
/// `AND` (the expression's), not `)` (the group's end), not the end of the text.
fn next_factor(input: &mut Input<'_>) -> Parsed<bool> {
    opt((
        multispace1,
        not(alt((keyword("AND").void(), ")".void(), eof.void()))),
    ))
    .map(|found| found.is_some())
    .parse_next(input)
}

/// `word` as a whole word: `ORDER` does not start with the keyword `OR`.
fn keyword<'i>(word: &'static str) -> impl Parser<Input<'i>, (), ErrMode<Problem>> {
    (literal(word), not(one_of(is_word_char))).void()
}

/// `["NOT" WS | "-"] simple`.
fn term(input: &mut Input<'_>, depth: usize) -> Parsed<Node> {
    let offset = input.current_token_start();
    let negated = opt(alt(((keyword("NOT"), multispace0).void(), "-".void())))
        .parse_next(input)?
        .is_some();
    let operand = simple(input, depth)?;
    Ok(if negated {
        Node {
            offset,
            kind: NodeKind::Not(Box::new(operand)),
        }
    } else {
        operand
    })
}

/// `"(" expression ")" | restriction`.
fn simple(input: &mut Input<'_>, depth: usize) -> Parsed<Node> {
    let offset = input.current_token_start();
    if !opt('(').map(|open| open.is_some()).parse_next(input)? {
        return restriction(input);
    }
    if depth >= MAX_DEPTH {
        return Err(cut(
            offset,
            format!("parentheses nest more than {MAX_DEPTH} levels deep"),
        ));
    }
    skip_space(input)?;
    let inner = expression(input, depth + 1)?;
    skip_space(input)?;
    if opt(')').parse_next(input)?.is_none() {
        return Err(cut(
            input.current_token_start(),
            "expected ')' to close the group, or AND or OR to go on with it",
        ));
    }
    Ok(inner)
}

/// `name ["." key] comparator value`.
fn restriction(input: &mut Input<'_>) -> Parsed<Node> {
    let offset = input.current_token_start();
    let field = field_name(input)?;
    let key = opt(preceded('.', metadata_key)).parse_next(input)?;
    skip_space(input)?;
    let comparator_offset = input.current_token_start();
    let comparator = comparator(input, &field)?;
    skip_space(input)?;
    let value = value(input, comparator)?;
    Ok(Node {
        offset,
        kind: NodeKind::Restriction(Restriction {
            field,
            key,
            comparator,
            comparator_offset,
            value,
        }),
    })
}

fn field_name(input: &mut Input<'_>) -> Parsed<Token> {
    let offset = input.current_token_start();
    let name: Option<&str> = opt(take_while(1.., |c: char| {
        c.is_ascii_alphanumeric() || c == '_'
    }))
    .parse_next(input)?;
    match name {
        Some(keyword @ ("AND" | "OR")) => Err(cut(
            offset,
            format!("{keyword} needs a comparison on each side"),
        )),
        Some("NOT") => Err(cut(
            offset,
            "NOT negates one comparison or one parenthesized group; to negate a negation, \
             write NOT (NOT ...)",
        )),
        Some(name) => Ok(Token {
            offset,
            text: name.to_owned(),
        }),
        None => Err(cut(offset, expected_comparison(input))),
    }
}

/// Says what stands where a comparison should start.
fn expected_comparison(input: &Input<'_>) -> String {
    match input.chars().next() {
        None => "expected a comparison such as username = \"ann\", or '(', but the filter ends"
            .to_owned(),
        Some(found) => format!(
            "expected a comparison such as username = \"ann\", or '(', found {}",
            crate::text::quoted(&found.to_string())
        ),
    }
}

/// A quoted string, or a run of the characters a metadata key may hold.
fn metadata_key(input: &mut Input<'_>) -> Parsed<Token> {
    let offset = input.current_token_start();
    let key = alt((
        quoted,
        take_while(1.., |c: char| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
        })
        .map(str::to_owned),
    ))
    .parse_next(input);
    match key {
        Ok(text) => Ok(Token { offset, text }),
        Err(ErrMode::Backtrack(_)) => Err(cut(
            offset,
            "expected a metadata key after 'metadata.': letters, digits, '_', '.', '-', or a \
             quoted string",
        )),
        Err(other) => Err(other),
    }
}

fn comparator(input: &mut Input<'_>, field: &Token) -> Parsed<Comparator> {
    let offset = input.current_token_start();
    let found = opt(alt((
        "<=".value(Comparator::Op(Op::Le)),
        ">=".value(Comparator::Op(Op::Ge)),
        "!=".value(Comparator::Op(Op::Ne)),
        "<".value(Comparator::Op(Op::Lt)),
        ">".value(Comparator::Op(Op::Gt)),
        "=".value(Comparator::Op(Op::Eq)),
        ":".value(Comparator::Has),
    )))
    .parse_next(input)?;
    found.ok_or_else(|| {
        cut(
            offset,
            format!(
                "expected an operator (=, !=, <, <=, >, >= or :) after {}",
                crate::text::quoted(&field.text)
            ),
        )
    })
}

/// A quoted string, or a bare word that is not a keyword.
fn value(input: &mut Input<'_>, comparator: Comparator) -> Parsed<Token> {
    let offset = input.current_token_start();
    let found = alt((quoted, bare_word)).parse_next(input);
    match found {
        Ok(text) => Ok(Token { offset, text }),
        Err(ErrMode::Backtrack(_)) => Err(cut(
            offset,
            format!("expected a value after '{}'", comparator.symbol()),
        )),
        Err(other) => Err(other),
    }
}

/// Letters, digits and `_ . - @ *`. A keyword is refused: `a = AND` is more likely a value
/// left out than a value.
fn bare_word(input: &mut Input<'_>) -> Parsed<String> {
    let offset = input.current_token_start();
    let word: &str = take_while(1.., is_word_char).parse_next(input)?;
    if matches!(word, "AND" | "OR" | "NOT") {
        return Err(cut(
            offset,
            format!("{word} is a keyword; to compare with the word itself, quote it: \"{word}\""),
        ));
    }
    Ok(word.to_owned())
}

/// The characters of a bare value, and those that make a keyword part of a longer word.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '@' | '*')
}

/// `"..."` with `\"` and `\\` as the only escapes. Backtracks unless it starts with `"`.
fn quoted(input: &mut Input<'_>) -> Parsed<String> {
    let open = input.current_token_start();
    '"'.parse_next(input)?;
    let mut text = String::new();
    loop {
        let chunk: &str = take_till(0.., ['"', '\\']).parse_next(input)?;
        text.push_str(chunk);
        let mark = input.current_token_start();
        match opt(any).parse_next(input)? {
            Some('"') => return Ok(text),
            Some('\\') => text.push(escaped(input, mark)?),
            _ => return Err(cut(open, "this quoted value has no closing '\"'")),
        }
    }
}

/// The character after a `\` at `mark`.
fn escaped(input: &mut Input<'_>, mark: usize) -> Parsed<char> {
    match opt(any).parse_next(input)? {
        Some(c @ ('"' | '\\')) => Ok(c),
        Some(other) => Err(cut(
            mark,
            format!(
                "unknown escape {}: inside quotes only \\\" and \\\\ are escapes",
                crate::text::quoted(&format!("\\{other}"))
            ),
        )),
        None => Err(cut(mark, "the filter ends inside a quoted value")),
    }
}

fn skip_space(input: &mut Input<'_>) -> Parsed<()> {
    multispace0.void().parse_next(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restriction_count(node: &Node) -> usize {
        match &node.kind {
            NodeKind::And(nodes) | NodeKind::Or(nodes) => nodes.iter().map(restriction_count).sum(),
            NodeKind::Not(inner) => restriction_count(inner),
            NodeKind::Restriction(_) => 1,
        }
    }

    #[test]
    fn a_sequence_and_or_nest_as_aip_160_says() {
        let tree = parse("a=1 b=2 OR c=3 AND d=4").unwrap().unwrap();
        let NodeKind::And(parts) = &tree.kind else {
            panic!("expected AND at the top, got {tree:?}");
        };
        assert_eq!(parts.len(), 2, "AND splits the text in two sequences");
        let NodeKind::And(sequence) = &parts[0].kind else {
            panic!("the first sequence is an implicit AND, got {:?}", parts[0]);
        };
        assert!(
            matches!(sequence[1].kind, NodeKind::Or(_)),
            "OR binds tighter than the sequence"
        );
        assert_eq!(restriction_count(&tree), 4);
    }

    #[test]
    fn tokens_keep_their_byte_offsets() {
        let tree = parse("a=\"é\" AND x:\"y\"").unwrap().unwrap();
        let NodeKind::And(parts) = tree.kind else {
            panic!("expected AND");
        };
        let NodeKind::Restriction(second) = &parts[1].kind else {
            panic!("expected a restriction");
        };
        assert_eq!(
            parts[1].offset, 11,
            "the second restriction starts after AND"
        );
        assert_eq!(second.field.offset, 11);
        assert_eq!(second.comparator_offset, 12);
        assert_eq!(second.value.offset, 13);
        assert_eq!(second.value.text, "y");
    }
}
