//! The access log's lines, in the same text and JSON shapes as every other line, written by a
//! formatter of their own: there is one per call, and the general formatter's per-field
//! styling (and, for JSON, a map built per line) showed in the profile of a GetUser under
//! load. Every other event goes to the general formatter unchanged.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of the access log's lines.
pub const ACCESS_TARGET: &str = "user_service::access";

/// Formats access-log events itself, and hands every other event to `inner`.
pub struct AccessLines<F> {
    inner: F,
    json: bool,
}

impl<F> AccessLines<F> {
    pub fn text(inner: F) -> Self {
        Self { inner, json: false }
    }

    pub fn json(inner: F) -> Self {
        Self { inner, json: true }
    }
}

impl<S, N, F> FormatEvent<S, N> for AccessLines<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        // A terminal gets the general formatter's colours.
        if metadata.target() != ACCESS_TARGET || writer.has_ansi_escapes() {
            return self.inner.format_event(ctx, writer, event);
        }
        thread_local! {
            /// Where an access line is put together before it goes to the writer in one
            /// piece: written a piece at a time through the writer, the pieces showed in the
            /// profile of every logged call.
            static LINE: RefCell<String> = const { RefCell::new(String::new()) };
        }
        /// What a thread's line buffer keeps between lines.
        const KEPT_CAPACITY: usize = 4096;
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                self.access_line(&mut *line, event)?;
                let written = writer.write_str(&line);
                if line.capacity() > KEPT_CAPACITY {
                    *line = String::new();
                }
                written
            }
            // A value whose formatting logs a call of its own: written straight through.
            Err(_) => self.access_line(&mut writer, event),
        })
    }
}

impl<F> AccessLines<F> {
    /// The access line of `event`, written to `out`.
    fn access_line(&self, out: &mut impl fmt::Write, event: &Event<'_>) -> fmt::Result {
        let metadata = event.metadata();
        let now = SystemTime::now();
        if self.json {
            out.write_str("{\"timestamp\":\"")?;
            rfc3339_micros(now, out)?;
            out.write_str("\",\"level\":\"")?;
            out.write_str(metadata.level().as_str())?;
            out.write_str("\"")?;
            let mut fields = JsonFields {
                writer: &mut *out,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
            out.write_str(",\"target\":\"")?;
            out.write_str(metadata.target())?;
            out.write_str("\"}\n")
        } else {
            rfc3339_micros(now, out)?;
            out.write_char(' ')?;
            // Levels right-aligned in five columns, as the general formatter writes them.
            let level = metadata.level().as_str();
            out.write_str(&"     "[level.len()..])?;
            out.write_str(level)?;
            out.write_char(' ')?;
            out.write_str(metadata.target())?;
            out.write_str(": ")?;
            let mut fields = TextFields {
                writer: &mut *out,
                first: true,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
            writeln!(out)
        }
    }
}

/// `now` as humantime's RFC 3339 with microseconds writes it (`2026-12-02T00:18:02.696621Z`).
/// The part to the second is formatted once a second on each thread and kept; only the
/// microseconds are written per line.
fn rfc3339_micros(now: SystemTime, out: &mut impl fmt::Write) -> fmt::Result {
    thread_local! {
        /// The second last formatted on this thread, and its text `YYYY-MM-DDTHH:MM:SS`.
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let second = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(kept, text)| {
        if *kept != second {
            let whole = UNIX_EPOCH + std::time::Duration::from_secs(second);
            *text = humantime::format_rfc3339_seconds(whole).to_string();
            // Without the `Z`.
            text.pop();
            *kept = second;
        }
        out.write_str(text)
    })?;
    let mut digits = itoa::Buffer::new();
    let micros = digits.format(since_epoch.subsec_micros());
    out.write_str(&".000000"[..7 - micros.len()])?;
    out.write_str(micros)?;
    out.write_str("Z")
}

/// `message` first as it is, then ` name=value`: strings quoted and escaped, other values as
/// they display, with control characters escaped so that a value cannot start a line of its
/// own.
struct TextFields<'a, W> {
    writer: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<W: fmt::Write> TextFields<'_, W> {
    fn separate(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(' ')?;
        }
        if field.name() != "message" {
            self.writer.write_str(field.name())?;
            self.writer.write_char('=')?;
        }
        Ok(())
    }
}

impl<W: fmt::Write> Visit for TextFields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.separate(field).and_then(|()| {
                if field.name() == "message" {
                    NoControl(&mut *self.writer).write_str(value)
                } else {
                    write!(self.writer, "{value:?}")
                }
            });
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.result.is_ok() {
            self.result = self
                .separate(field)
                .and_then(|()| self.writer.write_str(itoa::Buffer::new().format(value)));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self
                .separate(field)
                .and_then(|()| write!(NoControl(&mut *self.writer), "{value:?}"));
        }
    }
}

/// `,"name":value` for each field: numbers and booleans as they are, everything else as a
/// JSON string.
struct JsonFields<'a, W> {
    writer: &'a mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> JsonFields<'_, W> {
    fn name(&mut self, field: &Field) -> fmt::Result {
        self.writer.write_str(",\"")?;
        self.writer.write_str(field.name())?;
        self.writer.write_str("\":")
    }

    /// A number or a boolean, as it is.
    fn bare(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| self.writer.write_str(value));
        }
    }

    /// A JSON string: what `write` writes, escaped.
    fn string(
        &mut self,
        field: &Field,
        write: impl FnOnce(&mut JsonEscaped<&mut W>) -> fmt::Result,
    ) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| {
                self.writer.write_str("\"")?;
                write(&mut JsonEscaped(&mut *self.writer))?;
                self.writer.write_str("\"")
            });
        }
    }
}

impl<W: fmt::Write> Visit for JsonFields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // Straight to the escaper: formatting machinery for a plain string showed in the
        // profile of every logged call.
        self.string(field, |out| out.write_str(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.bare(field, itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.bare(field, itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.bare(field, if value { "true" } else { "false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.string(field, |out| write!(out, "{value:?}"));
    }
}

/// Writes what it is given as the inside of a JSON string.
struct JsonEscaped<W>(W);

/// Whether any byte of `text` is to be escaped in a JSON string: a quote, a backslash or a
/// control character. Eight bytes at a time, since almost no text has one: a byte at a time
/// showed in the profile of every logged call. (A word with a byte below `n` is found by
/// `(word - n·ONES) & !word & HIGHS`; an equal byte, as a zero byte of `word ^ byte·ONES`.)
fn needs_escaping(text: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = ONES * 0x80;
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let mut words = text.chunks_exact(8);
    for chunk in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_le_bytes(bytes);
        let found = below(word, 0x20)
            | below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1);
        if found != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
}

impl<W: fmt::Write> fmt::Write for JsonEscaped<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if !needs_escaping(text.as_bytes()) {
            return self.0.write_str(text);
        }
        let mut plain = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escaped = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&text[plain..at])?;
            if escaped.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escaped)?;
            }
            plain = at + 1;
        }
        self.0.write_str(&text[plain..])
    }
}

/// Writes what it is given with control characters escaped as `\u{..}`.
struct NoControl<W>(W);

impl<W: fmt::Write> fmt::Write for NoControl<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Control characters are C0 (below 0x20), DEL, and C1 (0xC2 0x80..=0x9F in UTF-8):
        // without any of those bytes, the text goes out as it is.
        if !text.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2) {
            return self.0.write_str(text);
        }
        let mut plain = 0;
        for (at, c) in text.char_indices() {
            if c.is_control() {
                self.0.write_str(&text[plain..at])?;
                write!(self.0, "{}", c.escape_unicode())?;
                plain = at + c.len_utf8();
            }
        }
        self.0.write_str(&text[plain..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::format::JsonFields as GeneralJsonFields;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// What `emit` logs through `layer`, with each line's timestamp (what starts with the
    /// year) replaced by `T`.
    fn logged<L>(layer: L, emit: &dyn Fn(), captured: &Captured) -> String
    where
        L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync,
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| match line.find("20") {
                Some(at) => {
                    let time = "2026-12-02T00:18:02.696621Z".len();
                    format!("{}T{}", &line[..at], &line[at + time..])
                }
                // The rest of a line that a value broke open.
                None => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The lines the general formatter and ours write for what `emit` logs.
    fn both(json: bool, emit: impl Fn()) -> (String, String) {
        let (general, ours) = (Captured::default(), Captured::default());
        let layer = |captured: &Captured| {
            tracing_subscriber::fmt::layer()
                .with_writer(captured.clone())
                .with_ansi(false)
        };
        let format = tracing_subscriber::fmt::format();
        if json {
            let format = format.json().flatten_event(true);
            (
                logged(
                    layer(&general)
                        .event_format(format.clone())
                        .fmt_fields(GeneralJsonFields::new()),
                    &emit,
                    &general,
                ),
                logged(
                    layer(&ours)
                        .event_format(AccessLines::json(format))
                        .fmt_fields(GeneralJsonFields::new()),
                    &emit,
                    &ours,
                ),
            )
        } else {
            (
                logged(
                    layer(&general).event_format(format.clone()),
                    &emit,
                    &general,
                ),
                logged(
                    layer(&ours).event_format(AccessLines::text(format)),
                    &emit,
                    &ours,
                ),
            )
        }
    }

    fn a_call() {
        let peer = tracing::field::display("127.0.0.1:4000");
        let principal = tracing::field::display("service:bench");
        let trace_id = Some(tracing::field::display("4bf92f3577b34da6a3ce929d0e0e4736"));
        tracing::info!(target: "user_service::access", method = "/userservice.UserService/GetUser", peer, principal, code = ?tonic::Code::NotFound, micros = 42_u64, trace_id, "call");
    }

    #[test]
    fn an_access_line_in_text_reads_as_the_general_formatter_writes_it() {
        let (general, ours) = both(false, a_call);
        assert_eq!(ours, general);
        assert!(ours.contains("code=NotFound micros=42 trace_id="), "{ours}");
    }

    #[test]
    fn an_access_line_in_json_reads_as_the_general_formatter_writes_it() {
        let (general, ours) = both(true, a_call);
        assert_eq!(ours, general);
        assert!(ours.contains(r#""code":"NotFound","micros":42"#), "{ours}");
    }

    #[test]
    fn escaping_is_needed_exactly_when_a_byte_asks_for_it() {
        let naive = |text: &[u8]| {
            text.iter()
                .any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
        };
        // Every byte value at every place of a word and of the tail, among plain bytes and
        // bytes on either side of the ones that count.
        for len in [1, 7, 8, 9, 16, 17] {
            for at in 0..len {
                for byte in 0..=255u8 {
                    for fill in [b'a', 0x21, 0x1f + 1, 0x23, 0x5b, 0x5d, 0xff, 0x80] {
                        let mut text = vec![fill; len];
                        text[at] = byte;
                        assert_eq!(needs_escaping(&text), naive(&text), "{text:?}");
                    }
                }
            }
        }
        assert!(!needs_escaping(b""));
    }

    #[test]
    fn timestamps_read_as_humantime_writes_them() {
        let start = UNIX_EPOCH + std::time::Duration::from_micros(1_764_634_682_000_001);
        // Within one second (from the kept text), across seconds, days and years, and
        // back in time.
        for micros in [
            0,
            5,
            999_999,
            1_000_000,
            86_400_000_000,
            29_000_000_000_000,
            1,
        ] {
            let now = start + std::time::Duration::from_micros(micros);
            let mut ours = String::new();
            rfc3339_micros(now, &mut ours).unwrap();
            assert_eq!(ours, humantime::format_rfc3339_micros(now).to_string());
        }
    }

    #[test]
    fn other_events_are_left_to_the_general_formatter() {
        let other = || tracing::warn!(answer = 42, "something else");
        assert_eq!(both(false, other).0, both(false, other).1);
        assert_eq!(both(true, other).0, both(true, other).1);
    }

    #[test]
    fn quotes_and_control_characters_cannot_break_a_line_open() {
        let hostile = || {
            let principal = tracing::field::display("service:a\"b\nc");
            tracing::info!(target: "user_service::access", method = "/a\"b", principal, "call");
        };
        let (_, text) = both(false, hostile);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(r#"method="/a\"b" principal=service:a"b\u{a}c"#),
            "{text}"
        );
        let (_, json) = both(true, hostile);
        let line: serde_json::Value = serde_json::from_str(&json).expect("one JSON line");
        assert_eq!(line["principal"], "service:a\"b\nc");
        assert_eq!(line["method"], "/a\"b");
    }
}
