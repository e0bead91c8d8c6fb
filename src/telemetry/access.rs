//! The access log's lines, in the same text and JSON shapes as every other line, written by a
//! formatter of their own: there is one per call, and the general formatter's per-field
//! styling (and, for JSON, a map built per line) showed in the profile of a GetUser under
//! load. Every other event goes to the general formatter unchanged.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

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
        let now = humantime::format_rfc3339_micros(SystemTime::now());
        if self.json {
            write!(writer, "{{\"timestamp\":\"{now}\",\"level\":\"")?;
            writer.write_str(metadata.level().as_str())?;
            writer.write_char('"')?;
            let mut fields = JsonFields {
                writer: &mut writer,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
            writer.write_str(",\"target\":\"")?;
            writer.write_str(metadata.target())?;
            writer.write_str("\"}\n")
        } else {
            write!(writer, "{now} ")?;
            // Levels right-aligned in five columns, as the general formatter writes them.
            let level = metadata.level().as_str();
            writer.write_str(&"     "[level.len()..])?;
            writer.write_str(level)?;
            writer.write_char(' ')?;
            writer.write_str(metadata.target())?;
            writer.write_str(": ")?;
            let mut fields = TextFields {
                writer: &mut writer,
                first: true,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
            writeln!(writer)
        }
    }
}

/// `message` first as it is, then ` name=value`: strings quoted and escaped, other values as
/// they display, with control characters escaped so that a value cannot start a line of its
/// own.
struct TextFields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl TextFields<'_, '_> {
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

impl Visit for TextFields<'_, '_> {
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
struct JsonFields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl JsonFields<'_, '_> {
    fn name(&mut self, field: &Field) -> fmt::Result {
        write!(self.writer, ",\"{}\":", field.name())
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
        write: impl FnOnce(&mut JsonEscaped<&mut Writer<'_>>) -> fmt::Result,
    ) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| {
                self.writer.write_char('"')?;
                write(&mut JsonEscaped(&mut *self.writer))?;
                self.writer.write_char('"')
            });
        }
    }
}

impl Visit for JsonFields<'_, '_> {
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

impl<W: fmt::Write> fmt::Write for JsonEscaped<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
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
