//! Words for people: a count with its noun in the right number, an error with its causes, a
//! caller's value as a message may repeat it.

use std::fmt::Write as _;

/// The most characters of a caller's value a message repeats.
pub const ECHO_MAX_CHARS: usize = 64;

/// A caller's value as a message (a `grpc-message`, a log line) may repeat it: control
/// characters, quotes and backslashes escaped, and cut after `ECHO_MAX_CHARS` characters with
/// a mark that says how much was left out. A message stays short and on one line whatever
/// the caller sent (a 1 MB id would otherwise come back as a 1 MB header, past what clients
/// accept).
pub fn echo(value: &str) -> String {
    let mut shown = String::with_capacity(value.len().min(ECHO_MAX_CHARS + 32));
    let mut chars = value.chars();
    for c in chars.by_ref().take(ECHO_MAX_CHARS) {
        shown.extend(c.escape_debug());
    }
    let left = chars.count();
    if left > 0 {
        let _ = write!(shown, "...(cut: {left} more characters)");
    }
    shown
}

/// `echo`, in double quotes.
pub fn quoted(value: &str) -> String {
    format!("\"{}\"", echo(value))
}

/// `1 row`, `2 rows`.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The error and every source under it, for a log line or a message.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{count, echo, quoted};

    #[test]
    fn an_echoed_value_is_short_and_on_one_line() {
        assert_eq!(echo("alice"), "alice");
        assert_eq!(quoted("x\ny\"z"), "\"x\\ny\\\"z\"");
        let long = "a".repeat(1_000_000);
        let shown = echo(&long);
        assert_eq!(
            shown,
            format!("{}...(cut: 999936 more characters)", "a".repeat(64))
        );
        assert!(!echo("\u{0}\r\t\u{1b}").chars().any(char::is_control));
    }

    #[test]
    fn one_thing_is_singular_and_any_other_count_plural() {
        assert_eq!(count(1u64, "row", "rows"), "1 row");
        assert_eq!(count(0u64, "row", "rows"), "0 rows");
        assert_eq!(count(2u64, "row", "rows"), "2 rows");
    }
}
