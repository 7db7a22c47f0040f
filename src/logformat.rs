//! The console log's text format: tracing-subscriber's `Full` format, with
//! the access log's line (one per request) written by a short path.
//!
//! Why: the generic formatter renders each field through `core::fmt` with
//! styling checks (`nu_ansi_term`, even with colours off), and the time
//! through a `Display` per component; callgrind put the access line at 16%
//! of the gate's instructions per small request. This path writes the same
//! bytes: `2026-11-30T23:09:13.661445Z  INFO access: client=10.0.0.1
//! method=GET path=/v2/ status=200 account="alice" ms=1` (values as `Full`
//! renders them: `%` fields as `Display`, strings quoted as `Debug`).
//! Everything else (other targets, colours on, events inside spans, a
//! clock outside 1970-9999) goes to `Full` itself. The access event's
//! fields are strings, `Display` values and integers; an error-typed field
//! would be written as its `Display` here (`Full` adds its sources).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::SystemTime as FullTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of the access log's events (`http::handle`).
pub const ACCESS: &str = "access";

/// `Full`, with a short path for [`ACCESS`] lines.
#[derive(Default)]
pub struct LineFormat {
    full: Format<Full, FullTime>,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // Last, the span check: no span prefix to write means the event
        // names no parent and none is current (`Full` writes them).
        let short = meta.target() == ACCESS
            && !writer.has_ansi_escapes()
            && meta.fields().field("message").is_none()
            && (event.is_root() || (event.is_contextual() && ctx.lookup_current().is_none()));
        let stamp = if short {
            timestamp(SystemTime::now())
        } else {
            None
        };
        let Some(stamp) = stamp else {
            return self.full.format_event(ctx, writer, event);
        };
        #[cfg(test)]
        tests::SHORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        writer.write_str(stamp.as_str())?;
        writer.write_str(level(meta.level()))?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = Fields {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// The level as `Full` pads it, between the spaces around it.
fn level(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => " ERROR ",
        Level::WARN => "  WARN ",
        Level::INFO => "  INFO ",
        Level::DEBUG => " DEBUG ",
        Level::TRACE => " TRACE ",
    }
}

/// `name=value` pairs separated by spaces, as `Full`'s visitor writes them.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !self.first {
            self.writer.write_char(' ')?;
        }
        self.first = false;
        let name = field.name();
        self.writer
            .write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.writer.write_char('=')
    }

    /// `name=digits`, as `Debug` writes integers.
    fn number(&mut self, field: &Field, value: impl itoa::Integer) {
        if self.result.is_ok() {
            let mut digits = itoa::Buffer::new();
            self.result = self
                .name(field)
                .and_then(|()| self.writer.write_str(digits.format(value)));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self
                .name(field)
                .and_then(|()| write!(self.writer, "{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| {
                // `Debug` leaves printable ASCII other than `"` and `\` as
                // it is: such a value (an account name) is quoted directly.
                if value
                    .bytes()
                    .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
                {
                    self.writer.write_char('"')?;
                    self.writer.write_str(value)?;
                    self.writer.write_char('"')
                } else {
                    write!(self.writer, "{value:?}")
                }
            });
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value);
    }
}

/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` in a fixed buffer.
struct Stamp([u8; 27]);

impl Stamp {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// The time as `Full` writes it (RFC 3339, UTC, microseconds); `None`
/// before 1970 or after 9999, which `Full` handles its own way.
fn timestamp(now: SystemTime) -> Option<Stamp> {
    let since = now.duration_since(UNIX_EPOCH).ok()?;
    let secs = since.as_secs();
    let (year, month, day) = civil_date(secs / 86_400);
    if year > 9999 {
        return None;
    }
    let of_day = secs % 86_400;
    let mut s = Stamp(*b"0000-00-00T00:00:00.000000Z");
    put(&mut s.0[0..4], year);
    put(&mut s.0[5..7], month);
    put(&mut s.0[8..10], day);
    put(&mut s.0[11..13], of_day / 3600);
    put(&mut s.0[14..16], of_day / 60 % 60);
    put(&mut s.0[17..19], of_day % 60);
    put(&mut s.0[20..26], u64::from(since.subsec_micros()));
    Some(s)
}

/// Writes `n` as decimal digits filling `out` (zero-padded on the left).
fn put(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// (year, month, day) of the day `days` after 1970-01-01, proleptic
/// Gregorian (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tracing_subscriber::fmt::MakeWriter;

    /// Lines the short path wrote. Tests run in parallel: the ones that
    /// read it hold `SERIAL`.
    pub(super) static SHORT: AtomicUsize = AtomicUsize::new(0);
    static SERIAL: Mutex<()> = Mutex::new(());

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// What one subscriber writes for the events `emit` sends.
    fn written(short: bool, ansi: bool, emit: impl Fn()) -> String {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(ansi)
            .with_max_level(Level::TRACE);
        if short {
            tracing::subscriber::with_default(
                builder.event_format(LineFormat::default()).finish(),
                &emit,
            );
        } else {
            tracing::subscriber::with_default(builder.finish(), &emit);
        }
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    /// Drops the 27-byte timestamp of each line (the two runs differ there).
    fn untimed(text: &str) -> Vec<String> {
        text.lines().map(|l| l[27..].to_string()).collect()
    }

    fn events() {
        let ip = crate::iptext::IpText::new("10.20.3.4".parse().unwrap());
        let method = http::Method::GET;
        tracing::info!(
            target: "access",
            client = %ip,
            method = %method,
            path = %"/v2/team/app/manifests/latest",
            status = 200u16,
            account = "mo\"zart",
            ms = 12u64,
        );
        tracing::warn!(target: "access", client = %ip, account = "-", delta = -3i64, ok = true);
        tracing::info!(target: "access", "with a message {}", 1);
        tracing::info!(target: "registry_gate::other", port = 5000u16, "listening");
        tracing::error!(target: "access", r#type = "x", who = "J\u{e9}r\u{f4}me\t\\ ok");
        tracing::debug!(target: "access", empty = "", odd = "o'brien {a}<b>~ `x` #1");
        let span = tracing::info_span!("conn", peer = 7u64);
        span.in_scope(|| tracing::info!(target: "access", status = 200u16));
        tracing::info!(target: "access", parent: &span, status = 201u16);
    }

    #[test]
    fn access_lines_are_byte_for_byte_what_full_writes() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let before = SHORT.load(Ordering::Relaxed);
        let mine = written(true, false, events);
        // The four access events without a message or a span took the
        // short path; the message, the other target and the span ones not.
        assert_eq!(SHORT.load(Ordering::Relaxed) - before, 4);
        let full = written(false, false, events);
        assert_eq!(untimed(&mine), untimed(&full));
        assert_eq!(mine.lines().count(), 8);
        assert!(mine.contains("conn{peer=7}: access: status=200"), "{mine}");
        assert!(mine.contains("conn{peer=7}: access: status=201"), "{mine}");
        assert!(
            mine.contains("  INFO access: client=10.20.3.4 method=GET"),
            "{mine}"
        );
    }

    #[test]
    fn with_colours_every_line_is_full() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let before = SHORT.load(Ordering::Relaxed);
        let mine = written(true, true, events);
        assert_eq!(SHORT.load(Ordering::Relaxed), before);
        let full = written(false, true, events);
        assert_eq!(mine.lines().count(), 8);
        // ANSI timestamps are wrapped in escapes: compare from the level on.
        let tail = |t: &str| -> Vec<String> {
            t.lines()
                .map(|l| l.split_once('Z').unwrap().1.to_string())
                .collect()
        };
        assert_eq!(tail(&mine), tail(&full));
    }

    #[test]
    fn timestamps_match_the_full_formatter() {
        use tracing_subscriber::fmt::time::FormatTime;
        // The full formatter reads the clock itself: compare known instants
        // through its public `Display` of the same conversion instead.
        let cases = [
            (0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, "2000-02-29T00:00:00.000000Z"),
            (1_796_080_153, "2026-11-30T23:09:13.000000Z"),
            (4_107_542_399, "2100-02-28T23:59:59.000000Z"),
            (253_402_300_799, "9999-12-31T23:59:59.000000Z"),
        ];
        for (secs, want) in cases {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(timestamp(t).unwrap().as_str(), want, "{secs}");
        }
        let t = UNIX_EPOCH + Duration::new(1_796_080_153, 661_445_999);
        assert_eq!(
            timestamp(t).unwrap().as_str(),
            "2026-11-30T23:09:13.661445Z"
        );
        assert!(timestamp(UNIX_EPOCH + Duration::from_secs(253_402_300_800)).is_none());
        assert!(timestamp(UNIX_EPOCH - Duration::from_secs(1)).is_none());
        // Every day over 400 years against a slow, obvious count.
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for days in 0..146_097u64 {
            assert_eq!(civil_date(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            d += 1;
            if d > len[(m - 1) as usize] {
                (d, m) = (1, m + 1);
                if m > 12 {
                    (m, y) = (1, y + 1);
                }
            }
        }
        // And the present against the full formatter's own clock reading.
        let before = timestamp(SystemTime::now()).unwrap();
        let mut text = String::new();
        FullTime.format_time(&mut Writer::new(&mut text)).unwrap();
        let after = timestamp(SystemTime::now()).unwrap();
        let second = |s: &str| s[..19].to_string();
        assert!(
            [second(before.as_str()), second(after.as_str())].contains(&second(&text)),
            "{text} vs {}",
            before.as_str()
        );
    }
}
